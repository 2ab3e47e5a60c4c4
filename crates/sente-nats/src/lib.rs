//! A [`Backplane`] over NATS (core pub/sub) for sente-rs: run several `sente::Server` nodes as
//! one cluster. Any node's `send`, `send_many`, `broadcast`, `flush` and `close_uid` reach the
//! clients of every node, and `connected_uids()` is the cluster's.
//!
//! ```no_run
//! use std::sync::Arc;
//! use sente_nats::{NatsBackplane, NatsConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let backplane = NatsBackplane::start(NatsConfig::new("nats://127.0.0.1:4222"))?;
//! let server = sente::Server::builder()
//!     .backplane(Arc::new(backplane.clone()))
//!     .build()?;
//! // Serve `server` as usual; `backplane.health()` tells whether NATS is reachable.
//! # let _ = server;
//! # Ok(())
//! # }
//! ```
//!
//! # Subject, encoding
//!
//! - **One subject per cluster**: `<cluster>.backplane` ([`NatsConfig::cluster`], default
//!   `sente`, so `sente.backplane`; the name must be a valid subject token: no spaces, dots or
//!   wildcards). Every node subscribes to it once and publishes every frame to it. Core NATS
//!   only: nothing is stored (no JetStream stream or key-value bucket), presence lives in each
//!   node's memory and is rebuilt from heartbeats and snapshots.
//! - The client connects with `no_echo`, so the server never sends a node its own frames.
//! - **Encoding**: each message is one frame of [`sente_proto::backplane::codec`]: a version
//!   byte (1), the publishing instance's 64-bit origin id, a kind byte and a compact body;
//!   events travel as their edn text (msgpack for events holding raw bytes). Unknown kinds are
//!   skipped and unknown versions refused (counted in [`Health::codec_errors`]), so two
//!   releases can share a cluster during a rolling deploy. A frame must fit the server's
//!   `max_payload` (1 MiB by default); a larger one is dropped and counted.
//!
//! # Ordering and delivery
//!
//! A node's frames go out through one connection in publish order, and NATS delivers one
//! publisher's messages on a subject to each subscriber in that order, so every node sees
//! another node's pushes in `send` order per uid (in fact in total order per publishing node).
//! A node's own pushes are applied to its own clients at once, without the round trip through
//! NATS, so its local clients are served even while NATS is down.
//!
//! `publish` never blocks: frames go into a bounded queue ([`NatsConfig::queue`], default
//! 65 536 frames) drained by a task into the NATS client (which buffers while reconnecting).
//! When the queue is full, the frame is **dropped**, counted in [`Health::dropped`] and logged
//! with `tracing::warn!` (at most once a second). A subscriber that falls behind the server
//! loses messages as NATS's slow-consumer rule says (logged); presence then resynchronizes
//! through heartbeats.
//!
//! # Presence and expiry
//!
//! Each node publishes its presence changes, and a heartbeat every
//! [`ClusterConfig::heartbeat`] (1 s) with the count and hash of its present uids. A node that
//! is silent for [`ClusterConfig::expiry`] (5 s) is expired: this node delivers
//! `Presence { node, uid, ws: false, ajax: false }` for each of its uids, so they leave
//! `connected_uids()` within the expiry plus one tick (a quarter heartbeat). A node whose view
//! mismatches a heartbeat (it joined late, or missed frames during an outage) asks for a
//! snapshot and catches up; a node that comes back is not counted twice (presence is keyed by
//! node). See [`sente_proto::backplane::cluster`] for the protocol.
//!
//! # Failures
//!
//! The `async-nats` client reconnects by itself (forever, with our backoff: 100 ms doubling to
//! 5 s, [`NatsConfig::reconnect`]) and resubscribes; outages are logged with `tracing` (warn
//! when lost, info when back) and visible in [`NatsBackplane::health`]. Nothing here panics.
//! The backplane's tasks and connection end when the last clone of the [`NatsBackplane`] is
//! dropped.

mod shell;

pub use sente_proto::backplane::cluster::ClusterConfig;
pub use shell::Health;

use futures_util::StreamExt;
use sente_proto::backplane::{Backplane, BackplaneMsg, BackplaneSink};
use shell::{Backoff, Shared, Side};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How to reach NATS and how the cluster behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NatsConfig {
    /// The server URL(s), comma separated (`nats://host:port`).
    pub url: String,
    /// The cluster name: the subject is `<cluster>.backplane`. Default `sente`.
    pub cluster: String,
    /// Capacity of the publish queue, in frames. Default 65 536.
    pub queue: usize,
    /// Reconnect backoff: first and largest delay. Default 100 ms and 5 s.
    pub reconnect: (Duration, Duration),
    /// Heartbeats, expiry and decoding limits.
    pub presence: ClusterConfig,
}

impl NatsConfig {
    /// The defaults, with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            cluster: "sente".to_owned(),
            queue: 65_536,
            reconnect: (Duration::from_millis(100), Duration::from_secs(5)),
            presence: ClusterConfig::default(),
        }
    }

    /// Sets [`NatsConfig::cluster`].
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// Sets [`NatsConfig::queue`].
    pub fn queue(mut self, frames: usize) -> Self {
        self.queue = frames.max(1);
        self
    }

    /// Sets [`NatsConfig::reconnect`].
    pub fn reconnect(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect = (min, max.max(min));
        self
    }

    /// Sets [`NatsConfig::presence`].
    pub fn presence(mut self, cfg: ClusterConfig) -> Self {
        self.presence = cfg;
        self
    }

    /// The subject.
    pub fn subject(&self) -> String {
        format!("{}.backplane", self.cluster)
    }
}

/// Why a backplane could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The cluster name makes an invalid subject.
    Subject(String),
    /// Not called within a tokio runtime.
    NoRuntime,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Subject(s) => write!(f, "invalid NATS subject {s:?}"),
            Error::NoRuntime => f.write_str("NatsBackplane::start needs a tokio runtime"),
        }
    }
}

impl std::error::Error for Error {}

/// A [`Backplane`] over NATS (see the crate docs). Cheap to clone; one instance per server
/// node.
#[derive(Clone)]
pub struct NatsBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    subject: String,
    _stop: watch::Sender<()>,
}

impl std::fmt::Debug for NatsBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackplane")
            .field("subject", &self.inner.subject)
            .field("origin", &self.inner.shared.origin)
            .finish_non_exhaustive()
    }
}

impl NatsBackplane {
    /// Starts the backplane's tasks (connection, publisher, subscriber, timer) on the current
    /// tokio runtime. It connects in the background, so NATS need not be up yet; see
    /// [`NatsBackplane::wait_connected`].
    #[allow(clippy::needless_pass_by_value)] // a config is built for this call
    pub fn start(config: NatsConfig) -> Result<NatsBackplane, Error> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let subject = config.subject();
        if subject.is_empty()
            || subject
                .chars()
                .any(|c| c.is_whitespace() || c == '*' || c == '>')
            || subject.split('.').any(str::is_empty)
        {
            return Err(Error::Subject(subject));
        }
        let (shared, rx) = Shared::new("nats", config.presence.clone(), config.queue);
        let (stop, stop_rx) = watch::channel(());
        handle.spawn(run(
            config.url.clone(),
            subject.clone(),
            shared.clone(),
            rx,
            stop_rx.clone(),
            config.reconnect,
        ));
        handle.spawn(shell::run_timer(shared.clone(), stop_rx));
        Ok(NatsBackplane {
            inner: Arc::new(Inner {
                shared,
                subject,
                _stop: stop,
            }),
        })
    }

    /// The connection state and counters.
    pub fn health(&self) -> Health {
        self.inner.shared.health()
    }

    /// Waits until the connection is up; false after `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.inner.shared.wait_connected(timeout).await
    }

    /// This instance's origin id (in every frame it publishes).
    pub fn origin(&self) -> u64 {
        self.inner.shared.origin
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }
}

impl Backplane for NatsBackplane {
    fn publish(&self, msg: BackplaneMsg) {
        self.inner.shared.publish(msg);
    }

    fn subscribe(&self, sink: BackplaneSink) {
        let _ = self.inner.shared.sink.set(sink);
    }
}

fn set_connected(shared: &Shared, up: bool, error: Option<&str>) {
    shared.set_up(Side::Publisher, up, error.map(str::to_owned));
    shared.set_up(Side::Subscriber, up, error.map(str::to_owned));
}

/// Connects (retrying), then runs the publisher, the subscriber and a state watcher until
/// `stop` fires.
async fn run(
    url: String,
    subject: String,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut stop: watch::Receiver<()>,
    (min, max): (Duration, Duration),
) {
    let mut backoff = Backoff::new(min, max);
    let client = loop {
        let attempt = tokio::select! {
            r = options(&shared, min, max).connect(url.as_str()) => r,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok(c) => break c,
            Err(e) => {
                set_connected(&shared, false, Some(&e.to_string()));
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
        }
    };
    let subscriber = loop {
        let attempt = tokio::select! {
            r = client.subscribe(subject.clone()) => r,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok(s) => break s,
            Err(e) => {
                shared.record_error(format!("subscribe: {e}"));
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
        }
    };
    let recv = {
        let shared = shared.clone();
        let mut subscriber = subscriber;
        async move {
            while let Some(m) = subscriber.next().await {
                shared.receive(&m.payload);
            }
        }
    };
    let watch_state = {
        let shared = shared.clone();
        let client = client.clone();
        async move {
            // The events above report changes; this catches the initial connection too.
            let mut was = None;
            loop {
                let up = client.connection_state() == async_nats::connection::State::Connected;
                if was != Some(up) {
                    set_connected(&shared, up, None);
                    was = Some(up);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let send = {
        let shared = shared.clone();
        let client = client.clone();
        async move {
            while let Some(frame) = rx.recv().await {
                let len = frame.len() as u64;
                match client.publish(subject.clone(), frame.into()).await {
                    Ok(()) => {
                        shared
                            .published
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        shared
                            .published_bytes
                            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => shared.record_error(format!("publish: {e}")),
                }
            }
        }
    };
    tokio::select! {
        () = recv => {}
        () = watch_state => {}
        () = send => {}
        _ = stop.changed() => {}
    }
}

/// The client's options (a fresh value per connection attempt: `connect` consumes them).
fn options(shared: &Arc<Shared>, min: Duration, max: Duration) -> async_nats::ConnectOptions {
    let events = shared.clone();
    async_nats::ConnectOptions::new()
        .name("sente-backplane")
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| {
            let exp = u32::try_from(attempts.min(16)).unwrap_or(16);
            min.saturating_mul(2u32.saturating_pow(exp)).min(max)
        })
        .event_callback(move |event| {
            let shared = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => set_connected(&shared, true, None),
                    async_nats::Event::Disconnected => {
                        set_connected(&shared, false, Some("disconnected from NATS"));
                    }
                    async_nats::Event::SlowConsumer(sid) => shared.record_error(format!(
                        "slow consumer (subscription {sid}): NATS dropped messages"
                    )),
                    async_nats::Event::ServerError(e) => {
                        shared.record_error(format!("server error: {e}"));
                    }
                    async_nats::Event::ClientError(e) => {
                        shared.record_error(format!("client error: {e}"));
                    }
                    other => tracing::debug!(backplane = "nats", event = %other, "nats event"),
                }
            }
        })
}
