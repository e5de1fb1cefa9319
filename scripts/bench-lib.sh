# Sourced by the bench scripts that run `troupe up`: `troupe_build` fetches the model,
# builds the functions and this checkout's binary (unless TROUPE_BIN names another
# one, e.g. an older build for a before/after) and sets `bin`; `troupe_up LOG ARGS…`
# starts `troupe up ARGS…` in the background, logging to LOG, sets `pid` and waits
# until it listens. Needs `root` set to the repository.

troupe_build() {
  "$root/scripts/fetch-model.sh" >/dev/null
  "$root/scripts/build-functions.sh"
  if [ -z "${TROUPE_BIN:-}" ]; then
    (cd "$root" && cargo build --release --locked --workspace --all-targets -q)
  fi
  bin="${TROUPE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/troupe}"
}

troupe_up() {
  local log="$1"
  shift
  "$bin" up "$@" > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do grep -qs "listening" "$log" && break; sleep 0.1; done
  grep -qs "listening" "$log" || { cat "$log" >&2; exit 1; }
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
