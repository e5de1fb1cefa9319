#!/usr/bin/env bash
# Usage: scripts/python-env.sh VENV REQUIREMENTS
# Makes the virtual environment VENV hold exactly what REQUIREMENTS pins (PyPI), once:
# it reinstalls only when the requirements file changed. Prints VENV's python.
set -euo pipefail
venv="$1" want="$2"
stamp="$venv/.troupe-requirements"
if ! { [ -x "$venv/bin/python" ] && cmp -s "$want" "$stamp"; }; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$want" >&2
  cp "$want" "$stamp"
fi
echo "$venv/bin/python"
