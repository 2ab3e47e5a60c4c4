#!/usr/bin/env bash
# The JS client's tests: the type check of its declarations (tsc --noEmit over a typed usage
# example), unit tests, the client state machine against a real sente-rs server, the
# conformance scenarios of the Rust test kit (same names; the list comes from the kit, so a
# scenario missing in JS fails) over ws, ajax and auto, the replays of recorded real-Sente
# transcripts (the test kit's `sente-replay-server`), then the package as users get it (npm pack,
# install the tarball, import it, type-check against it) and the size budget of the core.
# The servers are the test kit's `sente-test-server`: default, WS-refusing, 16 KiB-limited,
# origin-restricted, unit-test and small-replay-window servers plus a control endpoint.
# test/cluster.test.js starts three `sente-cluster-node` processes over a redis-server of its
# own, behind that binary's round-robin proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p sente-test-kit --bin sente-test-server --bin sente-replay-server --bin sente-cluster-node
target="${CARGO_TARGET_DIR:-target}"
# test/replay.test.js starts one sente-replay-server per recorded transcript case.
replay_bin="$(cd "$target/debug" && pwd)/sente-replay-server"
cluster_bin="$(cd "$target/debug" && pwd)/sente-cluster-node"
coproc SRV { exec "$target/debug/sente-test-server"; }
trap 'kill "$SRV_PID" 2>/dev/null || true' EXIT
IFS= read -r line <&"${SRV[0]}"
field() { node -e 'const v = JSON.parse(process.argv[1])[process.argv[2]]; console.log(typeof v == "string" ? v : JSON.stringify(v ?? ""))' "$line" "$1"; }
echo "sente-test-server: $line"
scenarios="$(field scenarios)"
if [[ "$scenarios" != \[* || "$scenarios" == "[]" ]]; then
  echo "sente-test-server printed no scenario list" >&2
  exit 1
fi
cd clients/js
[[ -x node_modules/.bin/tsc ]] || npm ci --no-audit --no-fund
npm run -s typecheck
SENTE_URL="$(field url)" SENTE_CSRF_TOKEN="$(field csrf_token)" \
  SENTE_REFUSE_WS_URL="$(field refuse_ws_url)" SENTE_SMALL_URL="$(field small_url)" \
  SENTE_ORIGIN_URL="$(field origin_url)" SENTE_CONTROL_URL="$(field control_url)" \
  SENTE_UNIT_URL="$(field unit_url)" SENTE_WINDOW_URL="$(field window_url)" \
  SENTE_SCENARIOS="$scenarios" \
  SENTE_REPLAY_SERVER="$replay_bin" SENTE_CLUSTER_NODE="$cluster_bin" \
  npm test
# The cluster tests again over NATS (npm test ran them over Redis).
SENTE_CLUSTER_NODE="$cluster_bin" SENTE_CLUSTER_ENGINE=nats \
  node --test test/cluster.test.js
npm run -s pack-check
node tools/size.js --budget 7168
