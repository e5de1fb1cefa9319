#!/usr/bin/env bash
# Runs every cargo-fuzz target (nightly; CI stays on stable and replays the kept
# crashes as tests instead). Installs cargo-fuzz when missing.
#
#   scripts/fuzz.sh                 # each target for FUZZ_RUNS (1 000 000) runs or FUZZ_SECONDS (1800)
#   scripts/fuzz.sh html manifest   # only these targets
#
# Crashes land in <crate>/fuzz/artifacts/<target>/; copy each into the target's
# regressions folder (listed in FUZZING.md) and fix it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
runs="${FUZZ_RUNS:-1000000}"
seconds="${FUZZ_SECONDS:-1800}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# target → the folder holding its fuzz/ crate, and its seed inputs
declare -A dir=(
  [pdf]=functions/text [html]=functions/text [markdown]=functions/text [chunk]=functions/text
  [cloudevent]=crates/core
  [s3_notification]=. [manifest]=. [lambda_http]=.
)
declare -A seeds=(
  [pdf]=tests/fixtures/pipeline [html]=tests/fixtures/pipeline [markdown]=tests/fixtures/pipeline
  [s3_notification]=crates/lambda/tests/fixtures [lambda_http]=crates/lambda/tests/fixtures
)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pdf html markdown chunk cloudevent s3_notification manifest lambda_http)
for t in "${targets[@]}"; do
  d="${dir[$t]:?unknown target $t}"
  corpus="$root/$d/fuzz/corpus/$t"
  mkdir -p "$corpus"
  if [ -n "${seeds[$t]:-}" ]; then cp -n "$root/${seeds[$t]}"/* "$corpus/" 2>/dev/null || true; fi
  if [ "$t" = manifest ]; then cp -n "$root/spin.toml" "$corpus/" 2>/dev/null || true; fi
  echo "== $t ($d)"
  (cd "$root/$d" && CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/troupe-fuzz-target}/${d//\//-}" \
    cargo +nightly fuzz run -s none "$t" "$corpus" -- \
      -runs="$runs" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
done
