#!/usr/bin/env bash
# Pipeline benchmark (BENCHMARKS.md): upload → indexed latency and pipeline efficiency
# (end-to-end ingest tokens/s of `troupe ingest` on a folder of 100 ÷ the worker's raw
# tokens/s on the same chunks) with the CPU split, against `troupe up` running the
# repository's spin.toml on a fresh data directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release/troupe"
work="$(mktemp -d)"
"$root/scripts/fetch-model.sh" >/dev/null
"$root/scripts/build-functions.sh"
(cd "$root" && cargo build --release --locked --workspace --all-targets -q)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
TROUPE_LOG=warn "$bin" up --data-dir "$work/data" --listen "127.0.0.1:$port" --manifest "$root/spin.toml" \
  --model-dir "$root/models/all-MiniLM-L6-v2" --allow-private-outbound > "$work/up.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do grep -q "listening" "$work/up.log" && break; sleep 0.1; done
python3 "$root/scripts/bench_pipeline.py" "http://127.0.0.1:$port" "$work/data" "$bin" "$pid"
