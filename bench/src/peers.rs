//! The peer servers the load tool compares (run with `sente-load serve <peer>`).
//!
//! Each does the same work: echo `demo/echo` / `echo` requests with a reply, and on a
//! `fanout` control request push `rate` timestamped events per second to every connected
//! client for `ms` milliseconds. The socket.io 4.8 peer for Node lives in
//! `bench/peers/socketio-node/`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

#[path = "../peers/raw_ws.rs"]
pub mod raw_ws;
#[path = "../peers/sente_rs.rs"]
pub mod sente_rs;
#[path = "../peers/socketioxide.rs"]
pub mod socketioxide;

/// A cluster backplane a peer joins (`sente-load serve <peer> --backplane ...`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Backplane {
    /// Redis pub/sub: `sente-redis` for sente-rs, `socketioxide-redis` for socketioxide.
    Redis,
    /// NATS: `sente-nats` (sente-rs only; socketioxide has no NATS adapter).
    Nats,
}

impl Backplane {
    /// Name used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backplane::Redis => "redis",
            Backplane::Nats => "nats",
        }
    }

    /// The engine's default URL on this machine.
    pub fn default_url(self) -> &'static str {
        match self {
            Backplane::Redis => "redis://127.0.0.1:6379/",
            Backplane::Nats => "nats://127.0.0.1:4222",
        }
    }

    /// The engine's server process name (`/proc/<pid>/comm`), for its CPU time.
    pub fn engine_comm(self) -> &'static str {
        match self {
            Backplane::Redis => "redis-server",
            Backplane::Nats => "nats-server",
        }
    }
}

/// How a peer joins a cluster: the engine, its URL and the cluster's name (the channel or
/// subject prefix, so that concurrent runs and stale nodes of earlier runs never mix).
#[derive(Debug, Clone)]
pub struct ClusterCfg {
    /// The backplane.
    pub backplane: Backplane,
    /// The engine's URL.
    pub url: String,
    /// The cluster name (sente: `cluster`; socketioxide-redis: the channel prefix).
    pub name: String,
    /// sente-rs only: keep the Ajax mailboxes (the default of both sente backplanes); off for
    /// a WebSocket-only deployment.
    pub mailbox: bool,
}

/// The push loop's parameters, as the `fanout` control request carries them.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct FanoutCfg {
    /// Request id (raw-ws protocol only).
    #[serde(default)]
    pub id: u64,
    /// Pushes per second to every client.
    pub rate: u32,
    /// How long the loop runs, in milliseconds.
    pub ms: u64,
    /// Size of each event's data object.
    #[serde(default = "default_bytes")]
    pub bytes: usize,
    /// sente-rs only: push through the server's send buffer (Sente's batching window,
    /// `send-buf-ms-*`) instead of flushing every push at once. The other peers have no window.
    #[serde(default)]
    pub buffered: bool,
}

fn default_bytes() -> usize {
    100
}

impl FanoutCfg {
    /// The JSON object the control request carries.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"rate\":{},\"ms\":{},\"bytes\":{},\"buffered\":{}}}",
            self.rate, self.ms, self.bytes, self.buffered
        )
    }

    /// The loop's ticker (first tick immediately) and its end. Rate and duration are clamped
    /// (1..=10 000 Hz, at most 10 minutes) so that every loop stops by itself.
    ///
    /// Missed ticks burst: a loop that falls behind (a slow tick, or periods shorter than the
    /// timer's 1 ms resolution) pushes the due ticks back to back, so every peer tries to push
    /// `rate` events a second (the Node peer does the same). A loop that cannot keep up pushes
    /// fewer events inside the measured window, which the delivered share shows; `Delay` or
    /// `Skip` would instead lower the rate silently.
    pub fn ticker(&self) -> (Interval, Instant) {
        let rate = self.rate.clamp(1, 10_000);
        let ms = self.ms.min(600_000);
        let mut t = tokio::time::interval(Duration::from_secs(1) / rate);
        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
        (t, Instant::now() + Duration::from_millis(ms))
    }
}

/// Prints the `LISTENING <addr>` line the load tool waits for.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "LISTENING {addr}");
    let _ = out.flush();
}
