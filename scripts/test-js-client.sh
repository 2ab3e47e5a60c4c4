#!/usr/bin/env bash
# The JS client's tests: unit tests, then the conformance scenarios of the Rust test kit (same
# names) against real sente-rs servers (the test kit's `sente-test-server`: default, WS-refusing,
# 16 KiB-limited and origin-restricted servers plus a control endpoint) over ws, ajax and auto,
# and the replays of recorded real-Sente transcripts (the test kit's `sente-replay-server`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p sente-test-kit --bin sente-test-server --bin sente-replay-server
target="${CARGO_TARGET_DIR:-target}"
# test/replay.test.js starts one sente-replay-server per recorded transcript case.
replay_bin="$(cd "$target/debug" && pwd)/sente-replay-server"
coproc SRV { exec "$target/debug/sente-test-server"; }
trap 'kill "$SRV_PID" 2>/dev/null || true' EXIT
IFS= read -r line <&"${SRV[0]}"
field() { node -e 'console.log(JSON.parse(process.argv[1])[process.argv[2]] ?? "")' "$line" "$1"; }
echo "sente-test-server: $line"
cd clients/js
SENTE_URL="$(field url)" SENTE_CSRF_TOKEN="$(field csrf_token)" \
  SENTE_REFUSE_WS_URL="$(field refuse_ws_url)" SENTE_SMALL_URL="$(field small_url)" \
  SENTE_ORIGIN_URL="$(field origin_url)" SENTE_CONTROL_URL="$(field control_url)" \
  SENTE_REPLAY_SERVER="$replay_bin" \
  npm test
