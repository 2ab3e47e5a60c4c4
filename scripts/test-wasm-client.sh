#!/usr/bin/env bash
# Runs the wasm32 client's conformance scenarios in headless Chromium (wasm-bindgen-test +
# Debian's chromedriver) against `sente-test-server --cors`, then reports the size of the
# optimized browser build.
set -euo pipefail
cd "$(dirname "$0")/.."

export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-900}"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER:-wasm-bindgen-test-runner}"
export PATH="$HOME/.cargo/bin:$PATH"

cargo build -q -p sente-test-kit --bin sente-test-server --bin sente-replay-server
target="${CARGO_TARGET_DIR:-target}"
out_server="$(mktemp)"
err_server="$(mktemp)"
out_replay="$(mktemp)"
fifo="$(mktemp -u)"
mkfifo "$fifo"
# The server runs until its stdin closes; keep it open on a fifo we own.
"$target/debug/sente-test-server" --cors < "$fifo" > "$out_server" 2> "$err_server" &
server_pid=$!
exec 3> "$fifo"
cleanup() { exec 3>&- || true; kill "$server_pid" 2>/dev/null || true; rm -f "$fifo" "$out_server" "$err_server" "$out_replay"; }
trap cleanup EXIT

for _ in $(seq 100); do
  [ -s "$out_server" ] && break
  sleep 0.1
done
line="$(head -n1 "$out_server")"
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$line" "$1"; }
export SENTE_TEST_URL="$(field url)"
export SENTE_TEST_REFUSE_WS_URL="$(field refuse_ws_url)"
export SENTE_TEST_SMALL_URL="$(field small_url)"
export SENTE_TEST_CONTROL_URL="$(field control_url)"
export SENTE_TEST_UNIT_URL="$(field unit_url)"
echo "test servers: $line"

# The transcript replays (tests/wasm/replay.rs) start their replays through a control server.
replay_fifo="$(mktemp -u)"
mkfifo "$replay_fifo"
"$target/debug/sente-replay-server" --control < "$replay_fifo" > "$out_replay" &
replay_pid=$!
exec 4> "$replay_fifo"
cleanup() {
  exec 3>&- 4>&- || true
  kill "$server_pid" "$replay_pid" 2>/dev/null || true
  rm -f "$fifo" "$replay_fifo" "$out_server" "$err_server" "$out_replay"
}
for _ in $(seq 100); do
  [ -s "$out_replay" ] && break
  sleep 0.1
done
SENTE_REPLAY_CONTROL_URL="$(python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["control_url"])' < "$out_replay")"
export SENTE_REPLAY_CONTROL_URL
echo "replay control server: $SENTE_REPLAY_CONTROL_URL"

(cd crates/sente-client && cargo test -p sente-client --target wasm32-unknown-unknown --test wasm "$@")

# Size budget of the optimized browser build (examples/browser.rs, cdylib).
cargo build -q -p sente-client --target wasm32-unknown-unknown --profile wasm --example browser
out="$(mktemp -d)"
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir "$out" "$target/wasm32-unknown-unknown/wasm/examples/browser.wasm"
size=$(stat -c %s "$out/browser_bg.wasm")
gz=$(gzip -9 -c "$out/browser_bg.wasm" | wc -c)
echo "wasm size: ${size} bytes (${gz} bytes gzipped), budget 400000 bytes"
rm -rf "$out"
[ "$size" -le 400000 ] || { echo "wasm build over budget"; exit 1; }
