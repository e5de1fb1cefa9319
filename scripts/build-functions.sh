#!/usr/bin/env bash
# Builds every function component (wasm32-wasip2) and copies them to functions/dist/.
# Idempotent: cargo rebuilds only what changed. Honours FUNCTIONS_TARGET_DIR.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${FUNCTIONS_TARGET_DIR:-$root/functions/target}"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cd "$root/functions"
CARGO_TARGET_DIR="$target" cargo build --release --locked --quiet
mkdir -p "$root/functions/dist"
for wasm in "$target"/wasm32-wasip2/release/*.wasm; do
  cp -p "$wasm" "$root/functions/dist/"
done
