"""Checks the Dockerfile without a Docker daemon: it parses (BuildKit's own parser,
PyPI `dockerfile`), every script it runs exists and is executable, every package it
builds is in the workspace with the features it asks for, and what the final stage
runs is copied into it."""

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

final = commands[commands.index(stages[-1]):]
copied = [c.value[-1] for c in final if c.cmd == "COPY"]
entry = [c.value for c in final if c.cmd == "ENTRYPOINT"]
if not entry or not any(copied_to.endswith("/" + entry[0][0]) for copied_to in copied):
    problems.append(f"the final stage's ENTRYPOINT {entry} is not a file copied into it")
cmd = [c.value for c in final if c.cmd == "CMD"]
for arg in (cmd[0] if cmd else []):
    if arg.startswith("/app/") and not any(arg.startswith(d.rstrip("/") + "/") for d in copied):
        problems.append(f"CMD argument {arg} is not under a copied folder")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"Dockerfile: {len(commands)} instructions, {len(stages)} stages ok")
