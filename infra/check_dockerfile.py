"""Checks the Dockerfile without a Docker daemon: it parses (BuildKit's own parser,
PyPI `dockerfile`), every script it runs exists and is executable, every package it
builds is in the workspace with the features it asks for, and what each image target
(a stage no other stage builds on or copies from: `cpu`, the default, and `cuda`) runs is
copied into it or into a stage it is built FROM."""

import json
import pathlib
import re
import subprocess
import sys

import dockerfile

root = pathlib.Path(__file__).resolve().parent.parent
path = root / "Dockerfile"
problems = []
commands = dockerfile.parse_file(str(path))

meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--locked"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
)
packages = {p["name"]: set(p["features"]) for p in meta["packages"]}
# Features named in the header's example builds (`--build-arg FEATURES=x`).
features = set(re.findall(r"FEATURES=(\w+)", path.read_text()))

stages = [c for c in commands if c.cmd == "FROM"]
if len(stages) < 2:
    problems.append("expected a build stage and a runtime stage")
for c in commands:
    where = f"Dockerfile:{c.start_line}"
    if c.cmd == "RUN":
        for script in re.findall(r"\./(scripts/[\w.-]+)", c.value[0]):
            f = root / script
            if not f.is_file() or not f.stat().st_mode & 0o111:
                problems.append(f"{where}: {script} is missing or not executable")
        for pkg in re.findall(r"-p ([\w-]+)", c.value[0]):
            if pkg not in packages:
                problems.append(f"{where}: no workspace package {pkg}")
            elif not features <= packages[pkg]:
                problems.append(f"{where}: {pkg} lacks features {sorted(features - packages[pkg])}")
    if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
        for src in c.value[:-1]:
            if not (root / src).exists():
                problems.append(f"{where}: COPY source {src} does not exist")

# Each stage's instructions, and the stage it is built FROM when that is an earlier stage.
names = [c.value[2] if len(c.value) > 2 else None for c in stages]
bodies = []
for i, c in enumerate(stages):
    end = commands.index(stages[i + 1]) if i + 1 < len(stages) else len(commands)
    bodies.append(commands[commands.index(c) + 1:end])
parent = {i: names.index(c.value[0]) for i, c in enumerate(stages) if c.value[0] in names}
used = set(parent.values()) | {
    names.index(f.split("=", 1)[1]) for c in commands if c.cmd == "COPY"
    for f in c.flags if f.startswith("--from=") and f.split("=", 1)[1] in names
}
targets = [i for i in range(len(stages)) if i not in used]
if len(stages) - 1 not in targets:
    problems.append("the last stage (the default target) is not an image")
for t in targets:
    chain = [t]
    while chain[-1] in parent:
        chain.append(parent[chain[-1]])
    body = [c for i in reversed(chain) for c in bodies[i]]
    label = f"stage {names[t] or t}"
    copied = [c.value[-1] for c in body if c.cmd == "COPY"]
    entry = [c.value for c in body if c.cmd == "ENTRYPOINT"][-1:]
    if not entry or not any(copied_to.endswith("/" + entry[0][0]) for copied_to in copied):
        problems.append(f"{label}: ENTRYPOINT {entry} is not a file copied into it")
    cmd = [c.value for c in body if c.cmd == "CMD"][-1:]
    for arg in (cmd[0] if cmd else []):
        if arg.startswith("/app/") and not any(arg.startswith(d.rstrip("/") + "/") for d in copied):
            problems.append(f"{label}: CMD argument {arg} is not under a copied folder")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"Dockerfile: {len(commands)} instructions, {len(stages)} stages, images {[names[t] for t in targets]} ok")
