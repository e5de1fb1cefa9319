#!/usr/bin/env bash
# Builds the Lambda bundle that infra/aws deploys (its ArtifactKey):
# dist/troupe-lambda.zip with `bootstrap` (troupe-lambda, cross-built by cargo-lambda
# with zig against an old glibc, so it runs on provided.al2023), spin.toml, the
# function components and the embedding model, laid out as TROUPE_MANIFEST and
# TROUPE_MODEL_DIR in the template expect (/var/task/...).
# To run a bundle under cargo-lambda's emulator (the test the workspace binary passes
# in CI): unzip it to DIR, then
#   TROUPE_LAMBDA_BUNDLE=DIR cargo test --release --workspace --test lambda -- bootstrap
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./scripts/build-functions.sh
TROUPE_MODEL_DIR="$root/models/all-MiniLM-L6-v2" ./scripts/fetch-model.sh >/dev/null
./scripts/setup-scale-out.sh
venv="${TROUPE_PY_ENV:-$HOME/.cache/troupe-tools/py}"
target="${CARGO_TARGET_DIR:-$root/target}"
PATH="$venv/bin:$PATH" cargo lambda build --release --locked --x86-64 -p troupe-lambda \
  --lambda-dir "$target/lambda"
bootstrap="$target/lambda/troupe-lambda/bootstrap"

# Amazon Linux 2023 ships glibc 2.34: a newer symbol would fail at cold start.
newest=$(objdump -T "$bootstrap" | { grep -o 'GLIBC_[0-9.]*' || true; } | sort -uV | tail -1)
newest="${newest:-GLIBC_2.0}"
if [ "$(printf '%s\n' "$newest" GLIBC_2.34 | sort -V | tail -1)" != GLIBC_2.34 ]; then
  echo "package-lambda: $bootstrap needs $newest, newer than provided.al2023's GLIBC_2.34" >&2
  exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/functions/dist" "$stage/models"
cp "$bootstrap" "$stage/bootstrap"
cp spin.toml "$stage/"
# Only the components the manifest names (functions/dist may hold stale ones).
for wasm in $(grep -o 'functions/dist/[A-Za-z0-9_-]*\.wasm' spin.toml | sort -u); do
  cp "$wasm" "$stage/functions/dist/"
done
cp -r models/all-MiniLM-L6-v2 "$stage/models/"
# Lambda's limit is 250 MB unzipped.
size=$(du -sm "$stage" | cut -f1)
if [ "$size" -gt 250 ]; then
  echo "package-lambda: the bundle is $size MB unzipped, over Lambda's 250 MB" >&2
  exit 1
fi
mkdir -p dist
rm -f dist/troupe-lambda.zip
(cd "$stage" && python3 -m zipfile -c "$root/dist/troupe-lambda.zip" bootstrap spin.toml functions models)
echo "dist/troupe-lambda.zip: $size MB unzipped (bootstrap needs up to $newest)"
