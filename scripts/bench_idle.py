"""Helper for bench-idle.sh (stdlib only): what a `troupe up` left alone costs, then how
fast it answers a document.

1. Idle: the process's CPU time (utime + stime from /proc/<pid>/stat) over IDLE seconds
   of wall time, as a share of one core; per thread name, CPU time and wakeups
   (context switches from /proc/<pid>/task/*/status), which name what still wakes.
2. Single-document latency: a warm-up document (the first after the idle spell), then
   20 one-page documents one at a time, upload → `indexed` webhook (received here, so
   nothing polls the server).

usage: bench_idle.py BASE_URL WEBHOOK_PORT PID IDLE_SECONDS [LABEL]
Prints one JSON object.
"""

import collections
import http.server
import json
import os
import random
import sys
import threading
import time
import urllib.request

BASE, HOOK_PORT, PID, IDLE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
LABEL = sys.argv[5] if len(sys.argv) > 5 else ""
TICK = os.sysconf("SC_CLK_TCK")
WORDS = (
    "river mountain engine harvest orbit signal lantern copper meadow glacier canyon violin "
    "harbor thunder pepper marble falcon compass garden silver bridge desert rocket pencil"
).split()


def cpu_seconds(stat_path):
    """utime + stime of a /proc stat file, in seconds (the name may hold spaces)."""
    fields = open(stat_path).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def threads():
    """{tid: (name, cpu seconds, context switches)} of every thread of PID."""
    out = {}
    for tid in os.listdir(f"/proc/{PID}/task"):
        base = f"/proc/{PID}/task/{tid}"
        try:
            name = open(f"{base}/comm").read().strip()
            switches = sum(
                int(line.split()[1])
                for line in open(f"{base}/status")
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
            )
            out[tid] = (name, cpu_seconds(f"{base}/stat"), switches)
        except FileNotFoundError:
            pass  # the thread ended meanwhile
    return out


def idle_cost():
    t0, cpu0, th0 = time.monotonic(), cpu_seconds(f"/proc/{PID}/stat"), threads()
    time.sleep(IDLE)
    t1, cpu1, th1 = time.monotonic(), cpu_seconds(f"/proc/{PID}/stat"), threads()
    wall = t1 - t0
    by_name = collections.defaultdict(lambda: [0.0, 0])
    for tid, (name, cpu, switches) in th1.items():
        _, cpu_before, switches_before = th0.get(tid, (name, 0.0, 0))
        by_name[name][0] += cpu - cpu_before
        by_name[name][1] += switches - switches_before
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu1 - cpu0, 3),
        "core_percent": round(100 * (cpu1 - cpu0) / wall, 3),
        "threads": len(th1),
        "by_thread": {
            name: {"cpu_ms": round(cpu * 1e3), "wakeups_per_s": round(switches / wall, 2)}
            for name, (cpu, switches) in sorted(by_name.items(), key=lambda kv: -kv[1][1])
            if switches or cpu
        },
    }


class Hooks(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with LOCK:
            SETTLED[body["document_id"]] = (time.perf_counter(), body["type"])
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


SETTLED, LOCK = {}, threading.Lock()


def page(rng, n):
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "." for _ in range(n)]
    return "\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, n, 5)).encode()


def one_document(rng, name):
    """Seconds from the upload of a one-page document to its `indexed` webhook."""
    started = time.perf_counter()
    req = urllib.request.Request(f"{BASE}/v1/documents?name={name}", data=page(rng, 25), method="POST",
                                 headers={"content-type": "text/plain"})
    with urllib.request.urlopen(req, timeout=60) as r:
        doc = json.loads(r.read())["id"]
    deadline = started + 120
    while time.perf_counter() < deadline:
        with LOCK:
            if doc in SETTLED:
                at, kind = SETTLED[doc]
                if kind != "troupe.document.indexed.v1":
                    raise SystemExit(f"document {doc} ended {kind}")
                return at - started
        time.sleep(0.002)
    raise SystemExit(f"document {doc} did not settle in 120 s (is its webhook reaching this script?)")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))]


idle = idle_cost()
server = http.server.ThreadingHTTPServer(("127.0.0.1", HOOK_PORT), Hooks)
threading.Thread(target=server.serve_forever, daemon=True).start()
rng = random.Random(42)
first = one_document(rng, "first-after-idle.txt")
single = [one_document(rng, f"single-{n}.txt") for n in range(20)]
print(json.dumps({
    "label": LABEL,
    "idle": idle,
    "first_document_after_idle_ms": round(first * 1e3),
    "single_doc_latency_ms": {
        "p50": round(pct(single, 0.5) * 1e3),
        "p99": round(pct(single, 0.99) * 1e3),
        "mean": round(sum(single) / len(single) * 1e3),
        "n": len(single),
    },
}, indent=2))
