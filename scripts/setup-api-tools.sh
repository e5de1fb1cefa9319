#!/usr/bin/env bash
# Installs Schemathesis and an OpenAPI validator (scripts/api-test-requirements.txt)
# into ~/.cache/troupe-tools/api (TROUPE_API_PY_ENV), for the API description's tests.
# Idempotent; prints nothing when already done.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/python-env.sh" "${TROUPE_API_PY_ENV:-$HOME/.cache/troupe-tools/api}" \
  "$root/scripts/api-test-requirements.txt" >/dev/null
