#!/usr/bin/env bash
# Runs a command with the CUDA toolkit the `cuda` build needs, installed from PyPI
# (scripts/cuda-requirements.txt) into a virtual environment on first use:
#
#   scripts/cuda-env.sh cargo build --release --features troupe-cli/cuda
#
# No GPU and no driver are needed to build. The wheels put a toolkit under
# site-packages/nvidia/cu13 (bin/nvcc, include, nvvm, lib/*.so.N); next to the venv this
# script lays out a CUDA root that candle's and cudarc's build scripts understand:
#
#   root/{bin,include,nvvm,lib}  the wheels' directories
#   root/lib64/libX.so.N         the shared libraries the binary loads (the image copies these)
#   root/lib64/libX.so           the names the linker looks for
#   root/lib64/stubs/libcuda.so  the driver API, for linking only (soname libcuda.so.1,
#                                every function returns CUDA_ERROR_STUB_LIBRARY); at run
#                                time the NVIDIA driver provides the real libcuda.so.1
#
# and exports CUDA_ROOT, CUDA_PATH, CUDA_HOME, NVCC, PATH, CUDA_COMPUTE_CAP (default
# 90: H100/H200; 80 A100, 86 A10G, 89 L4/L40S) and CUDAFORGE_THREADS (candle's kernel
# build runs one nvcc at a time unless told; default: every core). The binary needs
# NVIDIA driver >= 580 (CUDA 13) and root/lib64 on the library path. Idempotent;
# TROUPE_CUDA_TOOLS moves it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="${TROUPE_CUDA_TOOLS:-$HOME/.cache/troupe-tools/cuda}"
venv="$tools/venv"
root="$tools/root"
want="$here/cuda-requirements.txt"
stamp="$root/.troupe-requirements"

# The shared libraries candle links: cudart (its kernels), cuBLAS, cuBLASLt, cuRAND and
# NVRTC (cudarc), and NVRTC's builtins, which NVRTC opens itself.
runtime_libs=(libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10
  libnvrtc.so.13 libnvrtc-builtins.so.13.0)

lay_out() {
  rm -rf "$venv" "$root"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$want"
  local cu
  cu="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
  mkdir -p "$root/lib64/stubs"
  for d in bin include nvvm lib; do
    ln -s "$cu/$d" "$root/$d"
  done
  local lib
  for lib in "${runtime_libs[@]}"; do
    ln -s "$cu/lib/$lib" "$root/lib64/$lib"
    case "$lib" in
      *builtins*) ;;
      *) ln -s "$lib" "$root/lib64/${lib%.so.*}.so" ;;
    esac
  done
  # Every cu* name cuda.h mentions (the versioned ones its macros map to included);
  # extra names cost nothing, a missing one would fail the link.
  grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$cu/include/cuda.h" | sort -u |
    sed 's/.*/int &(void) { return 34; }/' >"$root/lib64/stubs/libcuda.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib64/stubs/libcuda.so" \
    "$root/lib64/stubs/libcuda.c"
  cp "$want" "$stamp"
}

if [ ! -x "$root/bin/nvcc" ] || ! cmp -s "$want" "$stamp"; then
  lay_out >&2
fi

export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
export NVCC="$root/bin/nvcc"
export PATH="$root/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
exec "$@"
