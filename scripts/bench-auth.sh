#!/usr/bin/env bash
# Added latency of authentication per request: `GET /v1/documents/{id}` (the api
# component reading a document record) under the same wrk load, in one run, with no
# auth, with an API key, and with an OIDC token (RS256; verified once, then remembered).
# BENCH_CONNECTIONS=1 measures latency without queueing; the default 16 loads the host.
# Two `troupe up` (no model): one without keys (auth off), one with a key and an OIDC
# issuer served on loopback from static files (python3 -m http.server), the token signed
# with openssl. Installs wrk from Debian if missing. Prints a markdown table;
# BENCHMARKS.md records it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
duration="${BENCH_DURATION:-10s}"
connections="${BENCH_CONNECTIONS:-16}"
troupe="$target/release/troupe"

# Needs curl, openssl, xxd and python3; installs wrk (apt-get, Debian/Ubuntu as root)
# when it is missing.
for tool in curl openssl xxd python3; do
  command -v "$tool" >/dev/null || { echo "bench-auth: needs $tool (Debian: apt-get install $tool)" >&2; exit 1; }
done
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } \
  || { echo "bench-auth: needs wrk (https://github.com/wg/wrk; Debian: apt-get install wrk)" >&2; exit 1; }
[ -f "$root/functions/dist/api.wasm" ] || "$root/scripts/build-functions.sh"
[ -x "$troupe" ] || cargo build --release --locked --workspace --all-targets

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

wait_up() { for _ in $(seq 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "server at $1 did not start" >&2; exit 1; }
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# The issuer: a key pair, its JWKS and discovery document, served as files.
issuer_port=18290
issuer="http://127.0.0.1:$issuer_port"
mkdir -p "$work/issuer/.well-known"
openssl genrsa -out "$work/key.pem" 2048 2>/dev/null
n=$(openssl rsa -in "$work/key.pem" -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
printf '{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":"bench","n":"%s","e":"AQAB"}]}' "$n" > "$work/issuer/jwks"
printf '{"issuer":"%s","jwks_uri":"%s/jwks"}' "$issuer" "$issuer" > "$work/issuer/.well-known/openid-configuration"
python3 -m http.server "$issuer_port" --bind 127.0.0.1 --directory "$work/issuer" >/dev/null 2>&1 &
wait_up "$issuer/jwks"
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
payload=$(printf '{"iss":"%s","sub":"bench","aud":"troupe-bench","exp":%d,"tenant":"bench","scope":"read"}' \
  "$issuer" $(( $(date +%s) + 3600 )) | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$work/key.pem" -binary | b64url)
jwt="$header.$payload.$signature"

start() { # name port flags…
  local name=$1 port=$2; shift 2
  # Without a model the extract stage waits and warns: its log goes to a file.
  TROUPE_LOG=warn "$troupe" up --no-embeddings --data-dir "$work/$name" --listen "127.0.0.1:$port" \
    --manifest "$root/spin.toml" "$@" >/dev/null 2>"$work/$name.log" &
  wait_up "http://127.0.0.1:$port/health"
}
upload() { # base [authorization header]
  curl -fsS -X POST "$1/v1/documents?name=bench.txt" -H 'content-type: text/plain' ${2:+-H "$2"} \
    --data-binary 'A short document for the authentication benchmark.' | json_field id
}
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

key=$("$troupe" keys create --data-dir "$work/auth" --tenant bench --scope write --json | json_field key)
start open 18291
start auth 18292 --oidc-issuer "$issuer" --oidc-audience troupe-bench
open_doc="http://127.0.0.1:18291/v1/documents/$(upload http://127.0.0.1:18291)"
auth_doc="http://127.0.0.1:18292/v1/documents/$(upload http://127.0.0.1:18292 "authorization: Bearer $key")"
# Each is answered 200 before it is measured (the token's keys fetched once here).
curl -fsS -o /dev/null "$open_doc"
curl -fsS -o /dev/null -H "authorization: Bearer $key" "$auth_doc"
curl -fsS -o /dev/null -H "authorization: Bearer $jwt" "$auth_doc"

load() { # name url [header]
  wrk -t1 -c"$connections" -d"$duration" --latency ${3:+-H "$3"} "$2" > "$work/$1.txt"
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$work/$1.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/$1.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/$1.txt")
  [ -z "$non2xx" ] || { echo "$1: $non2xx answers were not 2xx" >&2; exit 1; }
  echo "| $1 | $rps | $p50 | $p99 |"
}
echo "| credential | requests/s | p50 | p99 |"
echo "|---|---:|---:|---:|"
load "none (auth off)" "$open_doc"
load "API key" "$auth_doc" "authorization: Bearer $key"
load "OIDC JWT (RS256, remembered)" "$auth_doc" "authorization: Bearer $jwt"
