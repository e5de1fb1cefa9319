#!/usr/bin/env bash
# `GET /v1/events` at scale (BENCHMARKS.md, issue 15): `troupe up` with the repository's
# spin.toml and the model on a fresh data directory; DOCS (50) documents ingested with
# nobody watching, then WATCHERS (200) streams opened and DOCS more ingested while they
# watch. Reports whether every watcher saw every event, the host's RSS growth with the
# watchers open and the CPU they added (scripts/bench_events.py, stdlib only).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/bench-lib.sh"
troupe_build
work="$(mktemp -d)"
pid=
trap '[ -z "$pid" ] || kill $pid 2>/dev/null; rm -rf "$work"' EXIT
port=$(free_port)
TROUPE_LOG=warn troupe_up "$work/troupe.log" --data-dir "$work/data" --listen "127.0.0.1:$port" \
  --manifest "$root/spin.toml" --model-dir "$root/models/all-MiniLM-L6-v2"
python3 "$root/scripts/bench_events.py" "http://127.0.0.1:$port" "$pid" "${WATCHERS:-200}" "${DOCS:-50}"
