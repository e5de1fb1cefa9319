"""The million-vector search benchmark's data set and peers (scripts/bench-vectors-1m.sh).

    python bench_vectors_1m.py generate DIR   # DIR/base.f32, queries.f32, truth.i32, meta.json
    python bench_vectors_1m.py faiss DIR      # faiss IndexFlatIP over the same vectors
    python bench_vectors_1m.py pgvector DIR N # Postgres + pgvector HNSW over the first N

The vectors are 384-d unit vectors shaped like sentence embeddings: topic centres that
share a common direction (pairwise cosine ~0.1, as all-MiniLM-L6-v2's embeddings of
unrelated texts), topic sizes on a long tail, and members at cosine ~0.75 from their
centre. Queries are drawn the same way (near a topic, never a stored vector). Files are
raw little-endian float32 / int32, row after row, so the Rust bench reads them as is.
Each peer prints one JSON line of results.
"""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

DIMS = 384
K = 10
SEED = 16


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def base(dir, n=None):
    meta = json.load(open(os.path.join(dir, "meta.json")))
    total = meta["n"] + meta["extra"]
    m = np.memmap(os.path.join(dir, "base.f32"), dtype="<f4", mode="r", shape=(total, DIMS))
    return meta, m[: (n or meta["n"])]


def queries(dir):
    q = np.fromfile(os.path.join(dir, "queries.f32"), dtype="<f4")
    return q.reshape(-1, DIMS)


def generate(dir, n=1_000_000, extra=20_000, nq=200, topics=2000):
    os.makedirs(dir, exist_ok=True)
    rng = np.random.default_rng(SEED)
    common = rng.standard_normal(DIMS)
    common /= np.linalg.norm(common)
    centres = 0.35 * common + rng.standard_normal((topics, DIMS)) / np.sqrt(DIMS)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, topics + 1) ** 0.8
    weights /= weights.sum()
    sigma = 0.045  # member-to-centre cosine ~0.75 in 384 dimensions

    def draw(count):
        t = rng.choice(topics, size=count, p=weights)
        v = centres[t] + sigma * rng.standard_normal((count, DIMS))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v.astype("<f4")

    with open(os.path.join(dir, "base.f32"), "wb") as f:
        left = n + extra
        while left:
            step = min(left, 100_000)
            draw(step).tofile(f)
            left -= step
    draw(nq).tofile(os.path.join(dir, "queries.f32"))
    json.dump({"n": n, "extra": extra, "queries": nq, "dims": DIMS, "seed": SEED},
              open(os.path.join(dir, "meta.json"), "w"))
    truth(dir).astype("<i4").tofile(os.path.join(dir, "truth.i32"))


def truth(dir, n=None, k=K):
    """Exact top k per query over the first n rows: f32 scores pick 100 candidates
    per query, f64 scores of those decide (ties: lower row first)."""
    _, b = base(dir, n)
    q = queries(dir)
    cand_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    cand_i = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, len(b), 100_000):
        block = np.asarray(b[start:start + 100_000])
        s = q @ block.T
        top = np.argpartition(-s, 99, axis=1)[:, :100]
        cand_s = np.concatenate([cand_s, np.take_along_axis(s, top, 1)], axis=1)
        cand_i = np.concatenate([cand_i, top + start], axis=1)
        keep = np.argpartition(-cand_s, 99, axis=1)[:, :100]
        cand_s = np.take_along_axis(cand_s, keep, 1)
        cand_i = np.take_along_axis(cand_i, keep, 1)
    out = np.zeros((len(q), k), dtype=np.int64)
    for j in range(len(q)):
        ids = np.sort(cand_i[j])
        exact = np.asarray(b[ids], dtype=np.float64) @ q[j].astype(np.float64)
        order = np.lexsort((ids, -exact))[:k]
        out[j] = ids[order]
    return out


def recall(found, want):
    return float(np.mean([len(set(f) & set(w)) / len(w) for f, w in zip(found, want)]))


def percentiles(times):
    t = np.sort(np.array(times)) * 1e3
    return float(np.percentile(t, 50)), float(np.percentile(t, 99))


def faiss_peer(dir):
    import faiss

    _, b = base(dir)
    q = queries(dir)
    want = np.fromfile(os.path.join(dir, "truth.i32"), dtype="<i4").reshape(len(q), K)
    before = rss_bytes()
    index = faiss.IndexFlatIP(DIMS)
    t = time.perf_counter()
    # Read in blocks, not through the memory map, whose pages would count as RSS.
    for start in range(0, len(b), 100_000):
        count = min(100_000, len(b) - start) * DIMS
        index.add(np.fromfile(os.path.join(dir, "base.f32"), dtype="<f4", count=count,
                              offset=start * DIMS * 4).reshape(-1, DIMS))
    load_s = time.perf_counter() - t
    index_rss = rss_bytes() - before
    faiss.omp_set_num_threads(2)
    index.search(q[:2], K)  # warm
    times, found = [], []
    for j in range(len(q)):
        t = time.perf_counter()
        _, ids = index.search(q[j:j + 1], K)
        times.append(time.perf_counter() - t)
        found.append(ids[0])
    p50, p99 = percentiles(times)
    # QPS with 2 threads, one query per call (as a server answers requests).
    faiss.omp_set_num_threads(1)
    done = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + 20

    def client(seed):
        r = np.random.default_rng(seed)
        while time.perf_counter() < stop:
            j = r.integers(len(q))
            index.search(q[j:j + 1], K)
            with lock:
                done[0] += 1

    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(s,)) for s in range(2)]
    [th.start() for th in threads]
    [th.join() for th in threads]
    qps = done[0] / (time.perf_counter() - t)
    # Batched (every query in one call, BLAS over 2 threads): faiss at its best.
    faiss.omp_set_num_threads(2)
    t = time.perf_counter()
    index.search(q, K)
    batched_qps = len(q) / (time.perf_counter() - t)
    print(json.dumps({
        "peer": "faiss IndexFlatIP", "faiss": faiss.__version__, "n": len(b),
        "load_s": round(load_s, 2), "index_rss_mib": round(index_rss / 2**20),
        "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
        "qps_2_threads": round(qps, 1), "qps_batched_2_threads": round(batched_qps, 1),
        "recall_at_10": recall(found, want),
    }), flush=True)


def pgvector_peer(dir, n):
    import psycopg

    here = os.path.dirname(os.path.abspath(__file__))
    server = subprocess.Popen([sys.executable, os.path.join(here, "test_servers.py"), "postgres"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline().split()
        url = line[1]
        _, b = base(dir, n)
        q = queries(dir)
        want = truth(dir, n)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS vector")
            c.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({DIMS}) NOT NULL)")
            t = time.perf_counter()
            with c.cursor().copy("COPY items (id, embedding) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8)
                row = np.dtype([("fields", ">i2"), ("idlen", ">i4"), ("id", ">i4"), ("vlen", ">i4"),
                                ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", DIMS)])
                for start in range(0, len(b), 50_000):
                    block = np.asarray(b[start:start + 50_000])
                    rows = np.zeros(len(block), dtype=row)
                    rows["fields"], rows["idlen"], rows["vlen"] = 2, 4, 4 + 4 * DIMS
                    rows["id"] = np.arange(start, start + len(block))
                    rows["dim"] = DIMS
                    rows["v"] = block
                    copy.write(rows.tobytes())
                copy.write(b"\xff\xff")
            copy_s = time.perf_counter() - t
            c.execute("SET maintenance_work_mem = '6GB'")
            c.execute("SET max_parallel_maintenance_workers = 1")  # + the leader: 2 cores
            t = time.perf_counter()
            c.execute("CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops)")
            build_s = time.perf_counter() - t
            results = []
            for ef in (40, 100):
                c.execute(f"SET hnsw.ef_search = {ef}")
                times, found = [], []
                for j in range(len(q)):
                    vec = "[" + ",".join(f"{x:.8g}" for x in q[j]) + "]"
                    t = time.perf_counter()
                    rows = c.execute("SELECT id FROM items ORDER BY embedding <=> %s::vector LIMIT 10",
                                     (vec,)).fetchall()
                    times.append(time.perf_counter() - t)
                    found.append([r[0] for r in rows])
                p50, p99 = percentiles(times)
                results.append({"ef_search": ef, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
                                "recall_at_10": recall(found, want)})
            print(json.dumps({
                "peer": "pgvector HNSW (m=16, ef_construction=64, cosine)", "n": len(b),
                "copy_s": round(copy_s, 1), "index_build_s": round(build_s, 1), "searches": results,
            }), flush=True)
    finally:
        server.stdin.close()
        server.wait()


if __name__ == "__main__":
    what, dir = sys.argv[1], sys.argv[2]
    if what == "generate":
        generate(dir)
    elif what == "faiss":
        faiss_peer(dir)
    elif what == "pgvector":
        pgvector_peer(dir, int(sys.argv[3]))
    else:
        sys.exit(f"unknown command {what}")
