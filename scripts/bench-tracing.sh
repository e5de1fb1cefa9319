#!/usr/bin/env bash
# The cost of tracing (BENCHMARKS.md): the pipeline bench (scripts/bench_pipeline.py:
# 20 single documents, then a folder of 100 uploaded at once) run back to back against
# `troupe up` with tracing off (no OTLP endpoint) and on (sampler always_on, every span
# exported over OTLP/HTTP to a local receiver), `ROUNDS` times each, alternating.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release/troupe"
rounds="${ROUNDS:-2}"
work="$(mktemp -d)"
"$root/scripts/fetch-model.sh" >/dev/null
"$root/scripts/build-functions.sh"
(cd "$root" && cargo build --release --locked --workspace --all-targets -q)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$work"' EXIT

run() { # mode round
  local mode=$1 round=$2 port sink dir="$work/$1-$2" env=()
  mkdir -p "$dir"
  port=$(free_port)
  if [ "$mode" = on ]; then
    sink=$(free_port)
    python3 "$root/scripts/otlp_sink.py" "$sink" "$dir/sink.json" & local sink_pid=$!
    pids+=("$sink_pid")
    env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink" OTEL_TRACES_SAMPLER=always_on)
  fi
  env "${env[@]}" TROUPE_LOG=warn \
    "$bin" up --data-dir "$dir/data" --listen "127.0.0.1:$port" --manifest "$root/spin.toml" \
    --model-dir "$root/models/all-MiniLM-L6-v2" --allow-private-outbound > "$dir/up.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 600); do grep -q "listening" "$dir/up.log" && break; sleep 0.1; done
  python3 "$root/scripts/bench_pipeline.py" "http://127.0.0.1:$port" "$dir/data" "$bin" "$pid" > "$dir/result.json"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [ "$mode" = on ]; then kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true; fi
  echo "$dir/result.json"
}

results=()
for r in $(seq 1 "$rounds"); do
  for mode in off on; do results+=("$mode:$(run "$mode" "$r")"); done
done
python3 - "${results[@]}" <<'PY'
import json, sys, os, statistics
rows = {"off": [], "on": []}
for arg in sys.argv[1:]:
    mode, path = arg.split(":", 1)
    r = json.load(open(path))
    sink = os.path.join(os.path.dirname(path), "sink.json")
    r["exported"] = json.load(open(sink)) if os.path.exists(sink) else None
    rows[mode].append(r)
def mean(mode, f):
    return statistics.mean(f(r) for r in rows[mode])
out = {}
for mode in rows:
    out[mode] = {
        "ingest_tokens_per_s": round(mean(mode, lambda r: r["ingest_tokens_per_s"])),
        "folder_wall_s": round(mean(mode, lambda r: r["folder_of_100"]["wall_s"]), 2),
        "single_doc_p50_ms": round(mean(mode, lambda r: r["single_doc_latency_ms"]["p50"])),
        "runs": [r["ingest_tokens_per_s"] for r in rows[mode]],
        "exported": [r["exported"] for r in rows[mode]],
    }
out["throughput_on_over_off"] = round(out["on"]["ingest_tokens_per_s"] / out["off"]["ingest_tokens_per_s"], 3)
print(json.dumps(out, indent=2))
PY
