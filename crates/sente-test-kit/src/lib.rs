//! Conformance kit for sente-rs (not published): a test server with a small demo app, and named
//! scenarios that every client (the Rust client natively and in wasm, the JS client) and every
//! server adapter must pass, for each transport and packer.
//!
//! - [`TestServer`] runs the `sente` server on `127.0.0.1:0` behind a [`Proxy`] that can refuse
//!   WebSocket upgrades and cut connections (server restarts), served by one [`Adapter`]: axum
//!   by default, or hyper, actix-web (`sente-actix`), poem ([`TestServer::spawn_on`]).
//! - [`scenarios`] lists the scenarios; [`run_matrix`] runs them for a [`ClientFactory`] over a
//!   [`Matrix`] of adapters x transports x packers; failures name client, adapter, transport,
//!   packer and scenario.
//! - Clients outside this process (node, a browser) use the `sente-test-server` binary, which
//!   starts a [`TestServer`] and prints its URL as one JSON line.
//! - Cluster tests across processes use the `sente-cluster-node` binary: one `sente` node over
//!   a Redis or NATS backplane with a control API (pushes acknowledged by the backplane,
//!   health, connected uids, held polls), or a round-robin proxy ([`Proxy::round_robin`]) in
//!   front of several nodes (`tests/cluster_processes.rs`, `clients/js/test/cluster.test.js`).
//!
//! ```no_run
//! use sente_test_kit::{Matrix, RustClient, run_matrix};
//! use std::sync::Arc;
//!
//! # async fn demo() -> Result<(), sente_test_kit::Failed> {
//! let report = run_matrix(Arc::new(RustClient), &Matrix::default()).await;
//! report.check()?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod example_check;
mod proxy;
pub mod raw;
pub mod replay;
mod rust_client;
mod scenario;
mod server;

pub use example_check::check_echo_example;
pub use proxy::Proxy;
pub use rust_client::RustClient;
pub use scenario::{
    BoxFut, ClientFactory, ClientSpec, ClientUnderTest, Combo, Ctx, Failed, Failure, Matrix,
    OPEN_TIMEOUT, REQUEST_TIMEOUT, Report, Scenario, run_matrix, run_one, scenarios, state_get,
    wait_event,
};
pub use server::{Adapter, CSRF_TOKEN, ServerLog, ServerOptions, TestServer, cors};

/// The Rust code of the README, compiled as doc tests so the getting-started guide stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// `n` bytes of varied ASCII text (`a`..`z`, byte `i` is `'a' + 7i mod 26`): the payload of the
/// large-push tests, which a truncated or reordered body cannot pass for (the JS tests build
/// the same text).
pub fn large_text(n: usize) -> String {
    (0..n)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect()
}
