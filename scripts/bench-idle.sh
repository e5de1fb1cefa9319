#!/usr/bin/env bash
# Idle cost (BENCHMARKS.md, issue 16): `troupe up` with the repository's spin.toml and
# the model, started on a fresh data directory and left alone for IDLE_SECONDS (60)
# after start-up (SETTLE_SECONDS, 10, for start-up work to finish): CPU time from
# /proc/<pid>/stat over that wall time, as a share of one core, with each thread's
# wakeups; then single-document latency (upload → `indexed` webhook). The same again
# with the manifest's cron trigger (the sweeper, every 5 s by design) removed, which
# gives the schedule's share (BENCH_IDLE_NO_CRON=0 skips it). Prints JSON
# (scripts/bench_idle.py).
# Needs python3 (stdlib only) and what `make build` needs; TROUPE_BIN measures another
# binary (an older build, for a before/after) instead of building this checkout's.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
idle="${IDLE_SECONDS:-60}"
settle="${SETTLE_SECONDS:-10}"
. "$root/scripts/bench-lib.sh"
troupe_build
work="$(mktemp -d)"
pid=
trap '[ -z "$pid" ] || kill $pid 2>/dev/null; rm -rf "$work"' EXIT

# The manifest without its [[trigger.cron]] tables (sources made absolute, as it moves).
python3 - "$root/spin.toml" "$work/no-cron.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r'\[\[trigger\.cron\]\]\n(?:(?!\[).*\n)*', '', text)
root = sys.argv[1].rsplit("/", 1)[0]
text = re.sub(r'^source = "(?!/)', f'source = "{root}/', text, flags=re.M)
open(sys.argv[2], "w").write(text)
PY

measure() { # label manifest
  local port hooks dir="$work/$1"
  port=$(free_port); hooks=$(free_port)
  TROUPE_VARIABLE_WEBHOOK_URLS="http://127.0.0.1:$hooks/hooks" TROUPE_VARIABLE_WEBHOOK_SECRET=bench-secret TROUPE_LOG=warn \
    "$bin" up --data-dir "$dir/data" --listen "127.0.0.1:$port" --manifest "$2" \
    --model-dir "$root/models/all-MiniLM-L6-v2" --allow-private-outbound > "$work/$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do grep -q "listening" "$work/$1.log" && break; sleep 0.1; done
  grep -q "listening" "$work/$1.log" || { cat "$work/$1.log" >&2; exit 1; }
  sleep "$settle"
  python3 "$root/scripts/bench_idle.py" "http://127.0.0.1:$port" "$hooks" "$pid" "$idle" "$1"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  pid=
}

echo "["
measure spin.toml "$root/spin.toml"
if [ "${BENCH_IDLE_NO_CRON:-1}" = 1 ]; then
  echo ","
  measure "spin.toml without the cron trigger" "$work/no-cron.toml"
fi
echo "]"
