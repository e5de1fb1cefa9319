#!/usr/bin/env bash
# Runs every cargo-fuzz target (nightly; CI stays on stable and replays the kept
# crashes as tests instead). Installs cargo-fuzz when missing.
#
#   scripts/fuzz.sh                 # each target for FUZZ_RUNS (1 000 000) runs or FUZZ_SECONDS (1800)
#   scripts/fuzz.sh html manifest   # only these targets
#
# Crashes land in <crate>/fuzz/artifacts/<target>/; copy each into the target's
# regressions folder (below, and in FUZZING.md), which `make test` replays on stable,
# and fix it. Every target runs without a sanitizer (`-s none`): the code is safe Rust,
# and AddressSanitizer's slowdown turns the extractors' per-document budgets into false
# timeouts (FUZZING.md).
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
# the inputs kept for each target (seeds and past crashes), which start its corpus
declare -A seeds=(
  [pdf]=functions/text/tests/fuzz-regressions/pdf [html]=functions/text/tests/fuzz-regressions/html
  [markdown]=functions/text/tests/fuzz-regressions/markdown [chunk]=functions/text/tests/fuzz-regressions/chunk
  [cloudevent]=crates/core/tests/fuzz-regressions/cloudevent
  [s3_notification]=fuzz/regressions/s3_notification [manifest]=fuzz/regressions/manifest
  [lambda_http]=fuzz/regressions/lambda_http
)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pdf html markdown chunk cloudevent s3_notification manifest lambda_http)
for t in "${targets[@]}"; do
  d="${dir[$t]:?unknown target $t}"
  corpus="$root/$d/fuzz/corpus/$t"
  mkdir -p "$corpus"
  if [ -n "${seeds[$t]:-}" ]; then cp -n "$root/${seeds[$t]}"/* "$corpus/" 2>/dev/null || true; fi
  if [ "$t" = manifest ]; then cp -n "$root/spin.toml" "$corpus/" 2>/dev/null || true; fi
  if [ "$t" = s3_notification ] || [ "$t" = lambda_http ]; then
    cp -n "$root"/crates/lambda/tests/fixtures/*.json "$corpus/" 2>/dev/null || true
  fi
  echo "== $t ($d)"
  (cd "$root/$d" && CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/troupe-fuzz-target}/${d//\//-}" \
    cargo +nightly fuzz run -s none "$t" "$corpus" -- \
      -runs="$runs" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
done
