#!/usr/bin/env bash
# Installs what the scale-out tests and checks run: moto's S3/SQS server, a real
# Postgres with pgvector (PyPI `pgserver`), cfn-lint and a Kubernetes schema checker,
# into one virtual environment. Idempotent; prints nothing when already done.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${TROUPE_PY_ENV:-$HOME/.cache/troupe-tools/py}"
want="$root/scripts/scale-out-requirements.txt"
stamp="$venv/.troupe-requirements"
if [ -x "$venv/bin/python" ] && cmp -s "$want" "$stamp"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$want"
cp "$want" "$stamp"
