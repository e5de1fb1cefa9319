#!/usr/bin/env bash
# Embedding throughput, side by side in one run: Troupe's candle backend vs
# sentence-transformers (PyTorch, CPU) on the same inputs — chunk mixes of ~16, ~128 and
# ~256 tokens at batch sizes 1, 8 and 32 — with each process's peak RSS.
# Needs a Python with sentence-transformers: TROUPE_REF_PYTHON (default
# ~/.cache/ref-venv/bin/python; created with `pip install sentence-transformers`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${TROUPE_REF_PYTHON:-$HOME/.cache/ref-venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/scripts/fetch-model.sh" >/dev/null
export TROUPE_MODEL_DIR="$root/models/all-MiniLM-L6-v2" TROUPE_BENCH_INPUTS="$work/inputs.json"
"$py" "$root/scripts/bench_embeddings.py" inputs "$work/inputs.json"
(cd "$root" && cargo bench --locked --workspace --bench throughput --no-run -q)
bench=$(cd "$root" && cargo bench --locked --workspace --bench throughput --no-run 2>&1 | grep -o '/[^ )]*throughput-[0-9a-f]*' | tail -1)
/usr/bin/time -f '{"engine": "troupe", "peak_rss_kb": %M}' -o "$work/troupe.rss" "$bench" > "$work/troupe.jsonl"
/usr/bin/time -f '{"engine": "sentence-transformers", "peak_rss_kb": %M}' -o "$work/st.rss" "$py" "$root/scripts/bench_embeddings.py" run "$work/inputs.json" > "$work/st.jsonl"
"$py" "$root/scripts/bench_embeddings.py" report "$work/troupe.jsonl" "$work/st.jsonl" "$work/troupe.rss" "$work/st.rss"
