#!/usr/bin/env bash
# The console's first load (BENCHMARKS.md): `troupe up` with the repository's
# spin.toml and the model on a fresh data directory, BENCH_CONSOLE_DOCS (20) small
# documents uploaded and indexed (a full first page), then BENCH_CONSOLE_ROUNDS (7)
# loads of http://…/ in headless Chromium, each in a fresh browser context (empty
# cache): bytes transferred and time to interactive, medians as JSON
# (scripts/bench_console.py). Needs what `make build` and `make browser-tools` install;
# TROUPE_BIN measures another binary instead of building this checkout's.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
docs="${BENCH_CONSOLE_DOCS:-20}"
rounds="${BENCH_CONSOLE_ROUNDS:-7}"
"$root/scripts/setup-browser.sh"
. "$root/scripts/bench-lib.sh"
troupe_build
python="${TROUPE_BROWSER_ENV:-$HOME/.cache/troupe-tools/browser}/bin/python"
work="$(mktemp -d)"
pid=
trap '[ -z "$pid" ] || kill $pid 2>/dev/null; rm -rf "$work"' EXIT
port=$(free_port)
TROUPE_LOG=warn troupe_up "$work/up.log" --data-dir "$work/data" --listen "127.0.0.1:$port" \
  --manifest "$root/spin.toml" --model-dir "$root/models/all-MiniLM-L6-v2"
url="http://127.0.0.1:$port"
python3 - "$url" "$docs" <<'PY'
import json, sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
ids = []
for i in range(n):
    body = f"Document {i} of the console benchmark: glaciers, rivers and volcanoes, note {i}.\n".encode()
    req = urllib.request.Request(f"{url}/v1/documents?name=note-{i:02d}.txt", data=body, method="POST",
                                 headers={"content-type": "text/plain"})
    ids.append(json.load(urllib.request.urlopen(req))["id"])
deadline = time.time() + 300
for i in ids:
    while json.load(urllib.request.urlopen(f"{url}/v1/documents/{i}"))["status"] not in ("indexed", "failed"):
        assert time.time() < deadline, "documents not indexed within 300 s"
        time.sleep(0.2)
PY
"$python" "$root/scripts/bench_console.py" "$url/" "$rounds"
