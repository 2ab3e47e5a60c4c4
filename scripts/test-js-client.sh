#!/usr/bin/env bash
# The JS client's tests: unit tests, then the conformance scenarios against a real sente-rs
# server (the test kit's `sente-test-server`, CSRF token tok-123) over WebSocket and Ajax.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p sente-test-kit --bin sente-test-server
target="${CARGO_TARGET_DIR:-target}"
coproc SRV { exec "$target/debug/sente-test-server"; }
trap 'kill "$SRV_PID" 2>/dev/null || true' EXIT
IFS= read -r line <&"${SRV[0]}"
url=$(node -e 'console.log(JSON.parse(process.argv[1]).url)' "$line")
token=$(node -e 'console.log(JSON.parse(process.argv[1]).csrf_token)' "$line")
echo "sente-test-server at $url"
cd clients/js
SENTE_URL="$url" SENTE_CSRF_TOKEN="$token" npm test
