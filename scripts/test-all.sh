#!/usr/bin/env bash
# Runs every test suite: Rust (unit, integration, conformance), the JS client, the WASM client in
# headless Chromium, and the browser end-to-end tests of the demo. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

bash scripts/install-deps.sh

echo "==> cargo test (workspace)"
cargo test --workspace --all-targets
cargo test --workspace --doc

echo "==> WASM client conformance in headless Chromium (+ size budget)"
bash scripts/test-wasm-client.sh

echo "==> JS client tests (against a real sente-rs server)"
bash scripts/test-js-client.sh

echo "==> browser end-to-end tests"
cargo build -p chat
# sente-test-server: the WASM page's server; sente-dev-page-server: e2e/dev-page (tests/dev-page.test.mjs);
# sente-cluster-node: the cluster nodes and round-robin proxy of tests/wasm-cluster.test.mjs.
cargo build -p sente-test-kit --bin sente-test-server --bin sente-dev-page-server --bin sente-cluster-node
# The WASM client's browser build, loaded by e2e/wasm-page/index.html (e2e/tests/wasm.test.mjs).
cargo build -p sente-client --target wasm32-unknown-unknown --profile wasm --example browser
wasm-bindgen --target web --out-dir e2e/wasm-page/pkg \
  "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/wasm/examples/browser.wasm"
(cd e2e && npm test)
# The WASM client's cluster test again over NATS (npm test ran it over Redis).
(cd e2e && SENTE_CLUSTER_ENGINE=nats node --test tests/wasm-cluster.test.mjs)
