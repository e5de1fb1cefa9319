"""Pipeline benchmark against a running `troupe up` (stdlib only).

1. Latency, one-page documents one at a time: upload → `indexed` webhook.
2. A folder of 100 one-page documents uploaded together: per-document upload → indexed
   latency, and the wall time from the first upload to the last `indexed`.
3. The worker's raw throughput on the same chunks: their texts (read from the data
   directory) sent to /v1/embeddings in batches from several threads, as fast as it goes.

Pipeline efficiency = end-to-end ingest tokens/s (the chunks' tokens over the folder's
wall time) ÷ the worker's raw tokens/s on those chunks.

Completion is observed through the pipeline's own webhooks (`notify`, on a receiver
here), not by polling, so the measurement takes no CPU from the pipeline.

usage: bench_pipeline.py BASE_URL DATA_DIR WEBHOOK_PORT
"""

import concurrent.futures
import http.server
import json
import random
import sqlite3
import sys
import threading
import time
import urllib.request

BASE, DATA, HOOK_PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
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


def upload(name, body):
    return call("POST", f"/v1/documents?name={name}", body, "text/plain")["id"]


class Hooks(http.server.BaseHTTPRequestHandler):
    """Receives the pipeline's webhooks: a document is done when its webhook arrives,
    so nothing polls the server while it works."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with SETTLED_LOCK:
            SETTLED[body["document_id"]] = (time.perf_counter(), body["type"])
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


SETTLED, SETTLED_LOCK = {}, threading.Lock()
server = http.server.ThreadingHTTPServer(("127.0.0.1", HOOK_PORT), Hooks)
threading.Thread(target=server.serve_forever, daemon=True).start()


def wait(ids, started):
    """Waits for each id's webhook; returns {id: seconds from its upload to indexed}."""
    deadline = time.perf_counter() + 900
    while time.perf_counter() < deadline:
        with SETTLED_LOCK:
            if all(i in SETTLED for i in ids):
                break
        time.sleep(0.005)
    out = {}
    for i in ids:
        at, kind = SETTLED.get(i, (None, None))
        if kind != "troupe.document.indexed.v1":
            raise SystemExit(f"document {i} did not end indexed: {kind}")
        out[i] = at - started[i]
    return out


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))]


rng = random.Random(42)
# Warm-up: compiles nothing (the cache is warm) but loads every component path once.
w = upload("warmup.txt", page(rng, 20))
wait([w], {w: time.perf_counter()})

single = []
for n in range(20):
    t = time.perf_counter()
    i = upload(f"single-{n}.txt", page(rng, 25))
    single.append(wait([i], {i: t})[i])

docs = [(f"folder-{n:03}.txt", page(rng, 25)) for n in range(100)]
started, ids = {}, []
t0 = time.perf_counter()
for name, body in docs:
    t = time.perf_counter()
    i = upload(name, body)
    started[i] = t
    ids.append(i)
uploads_s = time.perf_counter() - t0
folder = wait(ids, started)
wall = time.perf_counter() - t0

db = sqlite3.connect(f"{DATA}/troupe.db")
marks = ",".join("?" * len(ids))
texts = [r[0] for r in db.execute(f"SELECT text FROM chunk_vectors WHERE document IN ({marks})", ids)]


def embed(batch):
    return call("POST", "/v1/embeddings", json.dumps({"input": batch, "model": "all-MiniLM-L6-v2"}).encode())["usage"]["prompt_tokens"]


batches = [texts[i : i + 32] for i in range(0, len(texts), 32)]
raws = []
for _ in range(3):  # the machine is noisy: the mean of three passes
    t1 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        tokens = sum(pool.map(embed, batches))
    raws.append(tokens / (time.perf_counter() - t1))

ingest_tps, raw_tps = tokens / wall, sum(raws) / len(raws)
print(json.dumps({
    "single_doc_latency_ms": {"p50": round(pct(single, 0.5) * 1e3), "p99": round(pct(single, 0.99) * 1e3), "n": len(single)},
    "folder_of_100": {
        "latency_ms": {"p50": round(pct(list(folder.values()), 0.5) * 1e3), "p99": round(pct(list(folder.values()), 0.99) * 1e3)},
        "wall_s": round(wall, 2),
        "uploads_s": round(uploads_s, 2),
        "chunks": len(texts),
        "tokens": tokens,
    },
    "ingest_tokens_per_s": round(ingest_tps),
    "worker_raw_tokens_per_s": round(raw_tps),
    "worker_raw_passes": [round(r) for r in raws],
    "pipeline_efficiency": round(ingest_tps / raw_tps, 3),
}, indent=2))
