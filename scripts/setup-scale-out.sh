#!/usr/bin/env bash
# Installs what the scale-out tests and checks run: moto's S3/SQS server, a real
# Postgres with pgvector (PyPI `pgserver`), cfn-lint and a Kubernetes schema checker,
# into one virtual environment. Idempotent; prints nothing when already done.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/python-env.sh" "${TROUPE_PY_ENV:-$HOME/.cache/troupe-tools/py}" \
  "$root/scripts/scale-out-requirements.txt" >/dev/null
