#!/usr/bin/env bash
# Search at a million chunks (BENCHMARKS.md, issue 16 item 3): the embedded store's
# exact search against faiss' exact IndexFlatIP on the same 1M vectors and queries, in
# one run, and Postgres + pgvector with an HNSW index.
#
# Installs its Python peers (scripts/bench-vectors-requirements.txt: numpy, faiss-cpu,
# psycopg, pgserver) into TROUPE_BENCH_VECTORS_PY_ENV (default
# ~/.cache/troupe-tools/bench-vectors), generates the vectors once into
# TROUPE_BENCH_VECTORS_DIR (default ~/.cache/troupe-bench/vectors-1m; ~1.6 GB, plus
# ~2.4 GB of SQLite data directory), and prints one JSON line per store.
# TROUPE_BENCH_PGVECTOR_N: how many vectors pgvector indexes (default: all 1M; 0
# skips it; the HNSW build takes ~15+ min on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="$("$root/scripts/python-env.sh" "${TROUPE_BENCH_VECTORS_PY_ENV:-$HOME/.cache/troupe-tools/bench-vectors}" \
  "$root/scripts/bench-vectors-requirements.txt")"
export TROUPE_BENCH_VECTORS_DIR="${TROUPE_BENCH_VECTORS_DIR:-$HOME/.cache/troupe-bench/vectors-1m}"
if [ ! -f "$TROUPE_BENCH_VECTORS_DIR/truth.i32" ]; then
  echo "generating the vectors into $TROUPE_BENCH_VECTORS_DIR" >&2
  "$py" scripts/bench_vectors_1m.py generate "$TROUPE_BENCH_VECTORS_DIR"
fi
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB" >&2
cargo bench --locked -p troupe-local --bench vectors_1m -- build
cargo bench --locked -p troupe-local --bench vectors_1m
"$py" scripts/bench_vectors_1m.py faiss "$TROUPE_BENCH_VECTORS_DIR"
pg_n="${TROUPE_BENCH_PGVECTOR_N:-1000000}"
if [ "$pg_n" != 0 ]; then
  "$py" scripts/bench_vectors_1m.py pgvector "$TROUPE_BENCH_VECTORS_DIR" "$pg_n"
fi
