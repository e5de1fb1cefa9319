#!/usr/bin/env bash
# HTTP hello component: `troupe up` vs `wasmtime serve` (wasmtime-cli 48.0.8, the same
# wasmtime as ours), same component, same wrk load, one after the other in one run.
# Prints a markdown table; BENCHMARKS.md records it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
tools="${TROUPE_TOOLS_DIR:-$HOME/.cache/troupe-tools}"
duration="${BENCH_DURATION:-10s}"
connections="${BENCH_CONNECTIONS:-16}"
wasm="$root/functions/dist/hello.wasm"

# Needs curl; installs what else it runs when missing: wasmtime-cli 48.0.8 (cargo, into
# $tools) and wrk (apt-get, Debian/Ubuntu as root; elsewhere install it yourself).
command -v curl >/dev/null || { echo "bench-http: needs curl" >&2; exit 1; }
[ -x "$tools/bin/wasmtime" ] || cargo install wasmtime-cli --version 48.0.8 --locked --root "$tools"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } \
  || { echo "bench-http: needs wrk (https://github.com/wg/wrk; Debian: apt-get install wrk)" >&2; exit 1; }
[ -f "$wasm" ] || "$root/scripts/build-functions.sh"
[ -x "$target/release/troupe" ] || cargo build --release --locked --workspace --all-targets

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/spin.toml" <<TOML
spin_manifest_version = 2
[application]
name = "bench"
[[trigger.http]]
route = "/..."
component = "hello"
[component.hello]
source = "$wasm"
[component.hello.tool.troupe]
max_concurrency = 64
TOML

wait_up() { for _ in $(seq 100); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "server at $1 did not start" >&2; exit 1; }

load() { # name url
  wrk -t1 -c"$connections" -d"$duration" --latency "$2" > "$work/$1.txt"
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/$1.txt")
  echo "$1 $rps $p99"
}

TROUPE_LOG=warn "$target/release/troupe" up --no-embeddings --data-dir "$work/data" --listen 127.0.0.1:18181 --manifest "$work/spin.toml" >/dev/null &
wait_up http://127.0.0.1:18181/hello
troupe=$(load troupe http://127.0.0.1:18181/hello)
kill %1; wait %1 2>/dev/null || true

"$tools/bin/wasmtime" serve -Scli --addr 127.0.0.1:18182 "$wasm" >/dev/null 2>&1 &
wait_up http://127.0.0.1:18182/hello
wasmtime=$(load wasmtime http://127.0.0.1:18182/hello)

read -r _ t_rps t_p99 <<<"$troupe"
read -r _ w_rps w_p99 <<<"$wasmtime"
echo "| server | requests/s | p99 |"
echo "|---|---:|---:|"
echo "| troupe up | $t_rps | $t_p99 |"
echo "| wasmtime serve 48.0.8 | $w_rps | $w_p99 |"
echo "| ratio troupe / wasmtime | $(awk -v a="$t_rps" -v b="$w_rps" 'BEGIN {printf "%.2f×", a/b}') | |"
