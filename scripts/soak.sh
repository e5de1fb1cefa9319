#!/usr/bin/env bash
# Kill soak (BENCHMARKS.md): the pipeline indexes a mixed corpus (txt, md, html, pdf;
# every fifth document several embedding jobs long) while it is SIGKILLed at random
# moments and restarted — `troupe up` on the embedded backends, `troupe serve` and
# `troupe worker` in turn on S3 + SQS + Postgres (moto and pgserver, started by the
# test harness). After the kills every document must be indexed with the chunk count
# of a clean run, with as many vectors, no duplicate trail entries, webhooks or search
# hits, nothing in flight or dead-lettered. Prints the time to recover after each kill.
#
# Settings (environment): TROUPE_SOAK_DOCS (200), TROUPE_SOAK_KILLS (20 per backend),
# TROUPE_SOAK_BACKENDS (local,aws), TROUPE_SOAK_KILL_MIN_MS / _MAX_MS (1000 / 6000),
# TROUPE_SOAK_LONG_WORDS (8000), TROUPE_SOAK_SEED (2026). The output is also kept
# in ${TMPDIR:-/tmp}/troupe-soak-<time>.log.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./scripts/fetch-model.sh >/dev/null
./scripts/build-functions.sh
./scripts/setup-scale-out.sh
cargo build --release --locked --workspace --all-targets -q
log="${TMPDIR:-/tmp}/troupe-soak-$(date -u +%Y%m%dT%H%M%SZ).log"
cargo test --release --locked --workspace --test all -- --ignored --exact kills::soak --nocapture 2>&1 \
  | tee "$log"
echo "log: $log"
