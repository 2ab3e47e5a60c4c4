//! sente-bench: the `sente-load` load tool and the peer servers it compares sente-rs with.
//!
//! * [`scenario`]: `rr`, `fanout`, `idle`, `storm` over WebSocket and long-polling.
//! * [`peers`]: raw-ws (the floor), socketioxide, sente-rs (plus socket.io for Node in
//!   `bench/peers/socketio-node/`), all run as child processes by [`server::Server`].
//! * [`suite`]: `all` (every scenario against every peer, alternating) and `smoke`.
//! * [`cluster`]: fan-out over 1, 2, 3 server processes sharing a Redis or NATS backplane.
//! * [`tap`]: counts a cluster's pub/sub messages and bytes.
//! * [`knee`]: the highest fan-out rate each target sustains, raising the rate step by step.
//! * [`callgrind`]: the servers' instruction counts (`--callgrind`), repeatable on a noisy
//!   machine.
//! * [`report`] and [`charts`]: JSON, markdown and PNG output.
//!
//! All traffic goes to loopback addresses; every loop is bounded in time.

pub mod ajax;
pub mod callgrind;
pub mod charts;
pub mod client;
pub mod cluster;
pub mod knee;
pub mod net;
pub mod peers;
pub mod procfs;
pub mod report;
pub mod scenario;
pub mod server;
pub mod stats;
pub mod suite;
pub mod tap;
pub mod wire;
pub mod ws;

/// Boxed error used throughout the tool.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Result with a [`BoxError`].
pub type Res<T> = Result<T, BoxError>;

/// An error from a message.
pub fn err(msg: impl Into<String>) -> BoxError {
    msg.into().into()
}
