#!/usr/bin/env bash
# `GET /v1/events` at scale (BENCHMARKS.md, issue 15): `troupe up` with the repository's
# spin.toml and the model on a fresh data directory; DOCS (50) documents ingested with
# nobody watching, then WATCHERS (200) streams opened and DOCS more ingested while they
# watch. Reports whether every watcher saw every event, the host's RSS growth with the
# watchers open and the CPU they added (scripts/bench_events.py, stdlib only).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/fetch-model.sh" >/dev/null
"$root/scripts/build-functions.sh"
if [ -z "${TROUPE_BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked --workspace --all-targets -q)
fi
bin="${TROUPE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/troupe}"
work="$(mktemp -d)"
pid=
trap '[ -z "$pid" ] || kill $pid 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TROUPE_LOG=warn "$bin" up --data-dir "$work/data" --listen "127.0.0.1:$port" --manifest "$root/spin.toml" \
  --model-dir "$root/models/all-MiniLM-L6-v2" > "$work/troupe.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -qs "listening" "$work/troupe.log" && break; sleep 0.1; done
grep -q "listening" "$work/troupe.log" || { cat "$work/troupe.log" >&2; exit 1; }
python3 "$root/scripts/bench_events.py" "http://127.0.0.1:$port" "$pid" "${WATCHERS:-200}" "${DOCS:-50}"
