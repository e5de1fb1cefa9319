"""Pipeline benchmark against a running `troupe up` (stdlib only).

1. Latency, one-page documents one at a time: `troupe ingest FILE`'s own clock, from
   the upload to the `indexed` event on its live event stream.
2. A folder of 100 one-page documents ingested with `troupe ingest FOLDER` (four
   uploads in flight): the wall time from the first upload to the last `indexed`, and
   the CPU time each part of `troupe up` spent meanwhile (per thread from
   /proc/PID/task, per function from the host's `troupe_invocation_cpu_seconds_total`).
3. Right after it, the worker's raw throughput on the same chunks: their texts (read
   from the data directory) sent to /v1/embeddings in batches from several threads, as
   fast as it goes (two passes).

Pipeline efficiency = end-to-end ingest tokens/s (the chunks' tokens over the folder's
wall time) ÷ the worker's raw tokens/s on those chunks. Steps 2 and 3 run ROUNDS
times (env `PIPELINE_ROUNDS`, 3), each on a new folder: a VM's speed drifts by a
quarter within minutes, so each round's ingest is compared with the raw passes next
to it, and the median round is reported with every round's numbers.

usage: bench_pipeline.py BASE_URL DATA_DIR TROUPE_BIN TROUPE_PID
"""

import concurrent.futures
import json
import os
import random
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

BASE, DATA, BIN, PID = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
TICK = os.sysconf("SC_CLK_TCK")
WORDS = (
    "river mountain engine harvest orbit signal lantern copper meadow glacier canyon violin "
    "harbor thunder pepper marble falcon compass garden silver bridge desert rocket pencil "
    "winter island forest candle mirror planet ribbon anchor museum tunnel crystal saddle "
    "village lemon shadow comet feather ladder quartz voyage kettle beacon velvet prairie"
).split()


def page(rng, n):
    """About one page: n sentences of 8–16 words, in paragraphs of five."""
    sentences = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 16))]
        sentences.append(" ".join(words).capitalize() + ".")
    paras = [" ".join(sentences[i : i + 5]) for i in range(0, n, 5)]
    return "\n\n".join(paras).encode()


def call(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(BASE + path, data=body, method=method, headers={"content-type": ctype})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def ingest(*paths):
    """Runs `troupe ingest`; (its ids, its own clock in seconds: first upload to last indexed)."""
    out = subprocess.run([BIN, "ingest", "--url", BASE, "--concurrency", "4", *paths],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"troupe ingest failed: {out.stderr}")
    took = re.search(r"indexed in ([0-9.]+) s", out.stderr)
    ids = [line.split("\t")[0] for line in out.stdout.splitlines()]
    return ids, float(took.group(1))


def threads():
    """CPU seconds per thread of `troupe up`, by thread id: (name, seconds)."""
    out = {}
    for tid in os.listdir(f"/proc/{PID}/task"):
        try:
            with open(f"/proc/{PID}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def function_cpu():
    """troupe_invocation_cpu_seconds_total per component."""
    with urllib.request.urlopen(BASE + "/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r'^troupe_invocation_cpu_seconds_total\{component="([^"]+)",trigger="[^"]+"\} ([0-9.e+-]+)$', text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def split(before, after, f_before, f_after, client, wall):
    """Where the CPU went during the folder, in seconds and as shares of two cores' wall."""
    groups = {}
    for tid, (name, secs) in after.items():
        spent = secs - before.get(tid, (name, 0.0))[1]
        if name.startswith("troupe-infer") or name == "troupe-embed":
            g = "model"
        elif name.startswith("troupe-sqlite"):
            g = "sqlite_writer"
        else:
            g = "host_threads"
        groups[g] = groups.get(g, 0.0) + spent
    funcs = {c: f_after.get(c, 0.0) - f_before.get(c, 0.0) for c in f_after}
    extraction = funcs.get("extract", 0.0)
    others = sum(v for c, v in funcs.items() if c != "extract")
    host = groups.get("host_threads", 0.0) - extraction - others
    cores = (os.cpu_count() or 1) * wall
    parts = {
        "model": groups.get("model", 0.0),
        "extraction": extraction,
        "other_functions": others,
        "host": host,
        "sqlite_writer": groups.get("sqlite_writer", 0.0),
        "client": client,
    }
    parts["idle"] = max(0.0, cores - sum(parts.values()))
    return {
        "seconds": {k: round(v, 3) for k, v in parts.items()},
        "share": {k: round(v / cores, 3) for k, v in parts.items()},
        "functions_s": {k: round(v, 3) for k, v in sorted(funcs.items())},
    }


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))]


rng = random.Random(42)
work = tempfile.mkdtemp()


def write(name, body):
    path = os.path.join(work, name)
    with open(path, "wb") as f:
        f.write(body)
    return path


# Warm-up: compiles nothing (the cache is warm) but loads every component path once.
ingest(write("warmup.txt", page(rng, 20)))

single = []
for n in range(20):
    single.append(ingest(write(f"single-{n}.txt", page(rng, 25)))[1])

def embed(batch):
    return call("POST", "/v1/embeddings", json.dumps({"input": batch, "model": "all-MiniLM-L6-v2"}).encode())["usage"]["prompt_tokens"]


def round_(n):
    """One folder of 100 new documents, then the raw passes on its chunks."""
    folder_dir = os.path.join(work, f"folder-{n}")
    os.mkdir(folder_dir)
    for i in range(100):
        with open(os.path.join(folder_dir, f"folder-{i:03}.txt"), "wb") as f:
            f.write(page(rng, 25))
    t_before, f_before = threads(), function_cpu()
    c_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    ids, wall = ingest(folder_dir)
    c_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    t_after, f_after = threads(), function_cpu()
    client = (c_after.ru_utime + c_after.ru_stime) - (c_before.ru_utime + c_before.ru_stime)
    cpu = split(t_before, t_after, f_before, f_after, client, wall)

    db = sqlite3.connect(f"{DATA}/troupe.db")
    marks = ",".join("?" * len(ids))
    texts = [r[0] for r in db.execute(f"SELECT text FROM chunk_vectors WHERE document IN ({marks})", ids)]
    db.close()
    batches = [texts[i : i + 32] for i in range(0, len(texts), 32)]
    raws = []
    for _ in range(2):
        t1 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            tokens = sum(pool.map(embed, batches))
        raws.append(tokens / (time.perf_counter() - t1))
    ingest_tps, raw_tps = tokens / wall, sum(raws) / len(raws)
    return {
        "wall_s": round(wall, 2),
        "chunks": len(texts),
        "tokens": tokens,
        "cpu": cpu,
        "ingest_tokens_per_s": round(ingest_tps),
        "worker_raw_tokens_per_s": round(raw_tps),
        "worker_raw_passes": [round(r) for r in raws],
        "pipeline_efficiency": round(ingest_tps / raw_tps, 3),
    }


rounds = [round_(n) for n in range(int(os.environ.get("PIPELINE_ROUNDS", "3")))]
median = sorted(rounds, key=lambda r: r["pipeline_efficiency"])[len(rounds) // 2]
print(json.dumps({
    "single_doc_latency_ms": {"p50": round(pct(single, 0.5) * 1e3), "p99": round(pct(single, 0.99) * 1e3), "n": len(single)},
    # The median round; every round below.
    "folder_of_100": {k: median[k] for k in ("wall_s", "chunks", "tokens", "cpu")},
    "ingest_tokens_per_s": median["ingest_tokens_per_s"],
    "worker_raw_tokens_per_s": median["worker_raw_tokens_per_s"],
    "pipeline_efficiency": median["pipeline_efficiency"],
    "rounds": [
        {k: r[k] for k in ("wall_s", "ingest_tokens_per_s", "worker_raw_passes", "pipeline_efficiency")}
        | {"cpu_s": r["cpu"]["seconds"]}
        for r in rounds
    ],
}, indent=2))
