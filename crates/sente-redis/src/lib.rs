//! A [`Backplane`] over Redis pub/sub for sente-rs: run several `sente::Server` nodes as one
//! cluster. Any node's `send`, `send_many`, `broadcast`, `flush` and `close_uid` reach the
//! clients of every node, and `connected_uids()` is the cluster's.
//!
//! ```no_run
//! use std::sync::Arc;
//! use sente_redis::{RedisBackplane, RedisConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let backplane = RedisBackplane::start(RedisConfig::new("redis://127.0.0.1:6379/"))?;
//! let server = sente::Server::builder()
//!     .backplane(Arc::new(backplane.clone()))
//!     .build()?;
//! // Serve `server` as usual; `backplane.health()` tells whether Redis is reachable.
//! # let _ = server;
//! # Ok(())
//! # }
//! ```
//!
//! # Channel, keys, encoding
//!
//! - **One channel per cluster**: `<cluster>:backplane` ([`RedisConfig::cluster`], default
//!   `sente`, so `sente:backplane`). Every node `SUBSCRIBE`s to it once and `PUBLISH`es every
//!   frame to it.
//! - **No keys**: nothing is stored in Redis. Presence lives in each node's memory and is rebuilt
//!   from heartbeats and snapshots, so a Redis restart loses nothing that matters.
//! - **Encoding**: each payload is one frame of
//!   [`sente_proto::backplane::codec`]: a version byte (1), the publishing instance's
//!   64-bit origin id, a kind byte and a compact body; events travel as their edn text
//!   (msgpack for events holding raw bytes). Unknown kinds are skipped and unknown versions
//!   refused (counted in [`Health::codec_errors`]), so two releases can share a cluster during a
//!   rolling deploy.
//!
//! # Ordering and delivery
//!
//! A node's frames go out through one connection, in publish order (batched into pipelines),
//! and Redis delivers a channel's messages to each subscriber in that order, so every node sees
//! another node's pushes in `send` order per uid (in fact in total order per publishing node).
//! A node's own pushes are applied to its own clients at once, without the round trip through
//! Redis (its own frames coming back are recognized by their origin and ignored), so its local
//! clients are served even while Redis is down.
//!
//! `publish` never blocks: frames go into a bounded queue ([`RedisConfig::queue`], default
//! 65 536 frames) drained by a task. When the queue is full (Redis down for long, or slower than
//! the application), the frame is **dropped**, counted in [`Health::dropped`] and logged with
//! `tracing::warn!` (at most once a second). While Redis is unreachable the queue keeps what
//! was published and the task retries the head of the queue after reconnecting; a batch whose
//! `PUBLISH` failed mid-way may then reach other nodes twice (rare: only when a connection dies
//! between Redis executing and answering the pipeline).
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
//! node). See [`sente_proto::backplane::cluster`] for the protocol. While this node is cut from
//! Redis it hears nobody, so after the expiry it shows its own uids only, until it reconnects.
//!
//! # Failures
//!
//! Both connections (publish and subscribe) reconnect by themselves with exponential backoff
//! (100 ms to 5 s, [`RedisConfig::reconnect`]); outages are logged with `tracing` (warn when
//! lost, info when back) and visible in [`RedisBackplane::health`]. Nothing here panics. The
//! backplane's tasks stop when the last clone of the [`RedisBackplane`] is dropped.

mod shell;

pub use sente_proto::backplane::cluster::ClusterConfig;
pub use shell::Health;

use futures_util::StreamExt;
use sente_proto::backplane::{Backplane, BackplaneMsg, BackplaneSink};
use shell::{Backoff, Shared, Side};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Most frames sent in one pipeline.
const BATCH: usize = 256;

/// How to reach Redis and how the cluster behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The Redis URL (`redis://host:port/db`, `rediss://` needs the `redis` crate's TLS
    /// features).
    pub url: String,
    /// The cluster name: the channel is `<cluster>:backplane`. Default `sente`.
    pub cluster: String,
    /// Capacity of the publish queue, in frames. Default 65 536.
    pub queue: usize,
    /// Reconnect backoff: first and largest delay. Default 100 ms and 5 s.
    pub reconnect: (Duration, Duration),
    /// Heartbeats, expiry and decoding limits.
    pub presence: ClusterConfig,
}

impl RedisConfig {
    /// The defaults, with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            cluster: "sente".to_owned(),
            queue: 65_536,
            reconnect: (Duration::from_millis(100), Duration::from_secs(5)),
            presence: ClusterConfig::default(),
        }
    }

    /// Sets [`RedisConfig::cluster`].
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// Sets [`RedisConfig::queue`].
    pub fn queue(mut self, frames: usize) -> Self {
        self.queue = frames.max(1);
        self
    }

    /// Sets [`RedisConfig::reconnect`].
    pub fn reconnect(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect = (min, max.max(min));
        self
    }

    /// Sets [`RedisConfig::presence`].
    pub fn presence(mut self, cfg: ClusterConfig) -> Self {
        self.presence = cfg;
        self
    }

    /// The pub/sub channel.
    pub fn channel(&self) -> String {
        format!("{}:backplane", self.cluster)
    }
}

/// Why a backplane could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a Redis URL.
    Url(redis::RedisError),
    /// Not called within a tokio runtime.
    NoRuntime,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Url(e) => write!(f, "invalid Redis URL: {e}"),
            Error::NoRuntime => f.write_str("RedisBackplane::start needs a tokio runtime"),
        }
    }
}

impl std::error::Error for Error {}

/// A [`Backplane`] over Redis pub/sub (see the crate docs). Cheap to clone; one instance per
/// server node.
#[derive(Clone)]
pub struct RedisBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    channel: String,
    _stop: watch::Sender<()>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("channel", &self.inner.channel)
            .field("origin", &self.inner.shared.origin)
            .finish_non_exhaustive()
    }
}

impl RedisBackplane {
    /// Starts the backplane's tasks (publisher, subscriber, timer) on the current tokio
    /// runtime. It connects in the background, so Redis need not be up yet; see
    /// [`RedisBackplane::wait_connected`].
    #[allow(clippy::needless_pass_by_value)] // a config is built for this call
    pub fn start(config: RedisConfig) -> Result<RedisBackplane, Error> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let client = redis::Client::open(config.url.as_str()).map_err(Error::Url)?;
        let (shared, rx) = Shared::new("redis", config.presence.clone(), config.queue);
        let (stop, stop_rx) = watch::channel(());
        let channel = config.channel();
        handle.spawn(run_publisher(
            client.clone(),
            channel.clone(),
            shared.clone(),
            rx,
            stop_rx.clone(),
            config.reconnect,
        ));
        handle.spawn(run_subscriber(
            client,
            channel.clone(),
            shared.clone(),
            stop_rx.clone(),
            config.reconnect,
        ));
        handle.spawn(shell::run_timer(shared.clone(), stop_rx));
        Ok(RedisBackplane {
            inner: Arc::new(Inner {
                shared,
                channel,
                _stop: stop,
            }),
        })
    }

    /// The connection state and counters.
    pub fn health(&self) -> Health {
        self.inner.shared.health()
    }

    /// Waits until both connections are up; false after `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.inner.shared.wait_connected(timeout).await
    }

    /// This instance's origin id (in every frame it publishes).
    pub fn origin(&self) -> u64 {
        self.inner.shared.origin
    }

    /// The pub/sub channel.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }
}

impl Backplane for RedisBackplane {
    fn publish(&self, msg: BackplaneMsg) {
        self.inner.shared.publish(msg);
    }

    fn subscribe(&self, sink: BackplaneSink) {
        let _ = self.inner.shared.sink.set(sink);
    }
}

async fn connect(
    client: &redis::Client,
    shared: &Shared,
    stop: &mut watch::Receiver<()>,
    backoff: &mut Backoff,
) -> Option<redis::aio::MultiplexedConnection> {
    loop {
        match client.get_multiplexed_async_connection().await {
            Ok(c) => {
                backoff.reset();
                shared.set_up(Side::Publisher, true, None);
                return Some(c);
            }
            Err(e) => {
                shared.set_up(Side::Publisher, false, Some(e.to_string()));
                if !backoff.wait(stop).await {
                    return None;
                }
            }
        }
    }
}

async fn run_publisher(
    client: redis::Client,
    channel: String,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut stop: watch::Receiver<()>,
    (min, max): (Duration, Duration),
) {
    let mut backoff = Backoff::new(min, max);
    let mut conn = None;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    loop {
        if batch.is_empty() {
            tokio::select! {
                got = rx.recv_many(&mut batch, BATCH) => if got == 0 { return },
                _ = stop.changed() => return,
            }
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&client, &shared, &mut stop, &mut backoff).await {
                Some(c) => conn.insert(c),
                None => return,
            },
        };
        let mut pipe = redis::pipe();
        for frame in &batch {
            pipe.publish(&channel, frame.as_slice()).ignore();
        }
        let sent: Result<(), redis::RedisError> = tokio::select! {
            r = pipe.query_async(c) => r,
            _ = stop.changed() => return,
        };
        match sent {
            Ok(()) => {
                let bytes: usize = batch.iter().map(Vec::len).sum();
                shared
                    .published
                    .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                shared
                    .published_bytes
                    .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
                batch.clear();
            }
            Err(e) => {
                // Keep the batch and retry it on a new connection.
                shared.set_up(Side::Publisher, false, Some(e.to_string()));
                conn = None;
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
        }
    }
}

async fn run_subscriber(
    client: redis::Client,
    channel: String,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<()>,
    (min, max): (Duration, Duration),
) {
    let mut backoff = Backoff::new(min, max);
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            r = subscribed => r,
            _ = stop.changed() => return,
        };
        match pubsub {
            Ok(pubsub) => {
                backoff.reset();
                shared.set_up(Side::Subscriber, true, None);
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        m = messages.next() => match m {
                            Some(m) => shared.receive(m.get_payload_bytes()),
                            None => break,
                        },
                        _ = stop.changed() => return,
                    }
                }
                shared.set_up(
                    Side::Subscriber,
                    false,
                    Some("subscription connection closed".to_owned()),
                );
            }
            Err(e) => shared.set_up(Side::Subscriber, false, Some(e.to_string())),
        }
        if !backoff.wait(&mut stop).await {
            return;
        }
    }
}
