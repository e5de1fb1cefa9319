"""Helper for bench-events.sh (stdlib only): what `GET /v1/events` watchers cost a host.

1. DOCS documents ingested with nobody watching: the host's CPU time (utime + stime of
   /proc/<pid>/stat) and RSS (VmRSS) over the ingest.
2. WATCHERS streams opened (RSS with them open and idle), then DOCS more documents
   ingested while they watch: every watcher must see every event of the ingest, in the
   order of a replay from the stream's start (`Last-Event-ID`), none twice.
Prints one JSON object: RSS growth per watcher, and the added CPU.

usage: bench_events.py BASE_URL PID WATCHERS DOCS
"""

import json
import random
import socket
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

BASE, PID, WATCHERS, DOCS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
HOST, PORT = urlparse(BASE).hostname, urlparse(BASE).port
import os  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
WORDS = ("river mountain engine harvest orbit signal lantern copper meadow glacier canyon violin "
         "harbor thunder pepper marble falcon compass garden silver bridge desert rocket pencil").split()


def cpu():
    fields = open(f"/proc/{PID}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib():
    for line in open(f"/proc/{PID}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Watcher(threading.Thread):
    """One stream over a raw socket: the frame ids it saw, in order."""

    def __init__(self, last=None):
        super().__init__(daemon=True)
        self.ids, self.ready, self.head = [], threading.Event(), None
        self.sock = socket.create_connection((HOST, PORT))
        extra = f"Last-Event-ID: {last}\r\n" if last is not None else ""
        self.sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())

    def run(self):
        f = self.sock.makefile("rb")
        status = f.readline()
        if b" 200 " not in status:
            raise SystemExit(f"stream refused: {status!r}")
        frame_id, event = None, None
        for raw in f:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("id: "):
                frame_id = line[4:]
            elif line.startswith("event: "):
                event = line[7:]
            elif line == "" and frame_id is not None:
                if event == "ready":
                    self.head = frame_id
                    self.ready.set()
                else:
                    self.ids.append(frame_id)
                    self.ready.set()
                frame_id, event = None, None

    def close(self):
        self.sock.close()


def upload(i, rng_seed):
    rng = random.Random(rng_seed)
    text = "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(40))
    req = urllib.request.Request(f"{BASE}/v1/documents?name=doc-{rng_seed}-{i}.txt", data=text.encode(),
                                 method="POST", headers={"content-type": "text/plain"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["id"]


def settled(ids):
    """Waits until every document is indexed or failed."""
    left = set(ids)
    deadline = time.time() + 900
    while left and time.time() < deadline:
        for doc in list(left):
            with urllib.request.urlopen(f"{BASE}/v1/documents/{doc}", timeout=30) as r:
                if json.loads(r.read())["status"] in ("indexed", "failed"):
                    left.discard(doc)
        time.sleep(0.5)
    if left:
        raise SystemExit(f"{len(left)} documents did not settle")


def ingest(seed):
    c0, r0, t0 = cpu(), rss_kib(), time.time()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: upload(i, seed), range(DOCS)))
    settled(ids)
    return {"wall_s": round(time.time() - t0, 1), "cpu_s": round(cpu() - c0, 2),
            "rss_kib_before": r0, "rss_kib_after": rss_kib()}


quiet = ingest(1)
before_watchers = rss_kib()
watchers = [Watcher() for _ in range(WATCHERS)]
for w in watchers:
    w.start()
for w in watchers:
    if not w.ready.wait(30):
        raise SystemExit("a watcher got no ready frame")
heads = {w.head for w in watchers}
time.sleep(2)
with_watchers_idle = rss_kib()
watched = ingest(2)
# The ground truth: a replay from the earliest head the watchers started at.
time.sleep(2)
replay = Watcher(last=min(heads, key=int))
replay.start()
time.sleep(3)
truth = replay.ids
deadline = time.time() + 60
while time.time() < deadline and any(w.ids != [i for i in truth if int(i) > int(w.head)] for w in watchers):
    time.sleep(0.5)
complete = sum(w.ids == [i for i in truth if int(i) > int(w.head)] for w in watchers)
for w in watchers + [replay]:
    w.close()
print(json.dumps({
    "watchers": WATCHERS,
    "documents_per_ingest": DOCS,
    "events_in_watched_ingest": len(truth),
    "watchers_that_saw_every_event_in_order": complete,
    "rss_growth_with_watchers_open_kib": with_watchers_idle - before_watchers,
    "rss_growth_per_watcher_kib": round((with_watchers_idle - before_watchers) / WATCHERS, 1),
    "ingest_without_watchers": quiet,
    "ingest_with_watchers": watched,
    "cpu_added_by_watchers_s": round(watched["cpu_s"] - quiet["cpu_s"], 2),
    "cpu_ratio_with_over_without": round(watched["cpu_s"] / quiet["cpu_s"], 3),
}, indent=2))
