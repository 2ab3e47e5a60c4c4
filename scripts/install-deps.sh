#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine. Idempotent: skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN_VERSION=0.2.130 # must equal the `wasm-bindgen` crate pinned in Cargo.toml

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "==> installing Debian's chromium and chromium-driver"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# Debian's nginx: e2e/tests/cluster.test.mjs runs the demo as three nodes behind it (own ports, pid
# file and temp paths; a running system nginx does not matter).
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  echo "==> installing Debian's nginx"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "==> adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if ! wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION"; then
  echo "==> installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (about 2 minutes)"
  cargo install -q wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

# Redis and NATS servers: the process-level cluster tests
# (crates/sente-test-kit/tests/cluster_processes.rs, clients/js/test/cluster.test.js) start
# their own on free ports (and restart them), so the binaries must be there.
if ! command -v redis-server >/dev/null || ! { command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ]; }; then
  echo "==> installing Debian's redis-server and nats-server"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server nats-server >/dev/null
fi

for dir in clients/js e2e; do
  if [ -f "$dir/package.json" ]; then
    echo "==> npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
