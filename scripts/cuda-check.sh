#!/usr/bin/env bash
# `make cuda-check`: builds `troupe` with --features troupe-cli/cuda on a machine
# without a GPU, with the toolkit scripts/cuda-env.sh installs from PyPI, into its own
# target directory so the CPU build is never disturbed; then starts the binary once
# (`troupe --version`) against the toolkit's libraries and the link stub standing in
# for the driver, which proves every library it needs is there with every symbol.
#
#   TROUPE_CUDA_TARGET_DIR  target directory (default ~/.cache/troupe-cuda-target)
#   CUDA_COMPUTE_CAP        GPU generation the kernels are built for (default 90)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -z "${TROUPE_CUDA_ENV:-}" ]; then
  export TROUPE_CUDA_ENV=1
  exec "$here/cuda-env.sh" "$0" "$@"
fi
cd "$here/.."
export CARGO_TARGET_DIR="${TROUPE_CUDA_TARGET_DIR:-$HOME/.cache/troupe-cuda-target}"

start=$(date +%s)
cargo build --release --locked -p troupe-cli --features troupe-cli/cuda
took=$(($(date +%s) - start))

stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
ln -s "$CUDA_ROOT/lib64/stubs/libcuda.so" "$stub/libcuda.so.1"
LD_LIBRARY_PATH="$stub:$CUDA_ROOT/lib64" "$CARGO_TARGET_DIR/release/troupe" --version
echo "cuda-check: troupe built with cuda for compute capability $CUDA_COMPUTE_CAP in ${took}s ($(nproc) cores): $CARGO_TARGET_DIR/release/troupe"
