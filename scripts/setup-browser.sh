#!/usr/bin/env bash
# Installs what the console's browser test and benchmark run: Debian's chromium (when
# /usr/bin/chromium is missing) and a virtual environment with Playwright and axe-core
# (scripts/browser-requirements.txt). Playwright drives that chromium; it never
# downloads a browser of its own. Idempotent; prints nothing when already done.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x /usr/bin/chromium ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
"$root/scripts/python-env.sh" "${TROUPE_BROWSER_ENV:-$HOME/.cache/troupe-tools/browser}" \
  "$root/scripts/browser-requirements.txt" >/dev/null
