//! The IO-independent part of the shell: the bounded publish queue, the local sink, the
//! cluster view behind a lock, the timer, health and counters. (The same file is in
//! `sente-redis`; backplane crates depend on `sente-proto` only.)

use sente_proto::backplane::cluster::{Cluster, ClusterConfig, Output};
use sente_proto::backplane::codec;
use sente_proto::backplane::{BackplaneMsg, BackplaneSink};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

/// The state of a backplane's connections, and its counters (what the backplane's `health()`
/// returns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Both the publishing and the subscribing connection are up.
    pub connected: bool,
    /// The last connection error, and when it happened.
    pub last_error: Option<(SystemTime, String)>,
    /// How many times a connection was lost (or could not be made) after being up or at start.
    pub outages: u64,
    /// Other nodes heard from within the expiry.
    pub peers: usize,
    /// Payloads published.
    pub published: u64,
    /// Bytes published (payloads only, without the pub/sub protocol's framing).
    pub published_bytes: u64,
    /// Payloads received (this node's own included, where the server echoes them).
    pub received: u64,
    /// Payloads dropped because the publish queue was full.
    pub dropped: u64,
    /// Payloads that could not be decoded (another release's version, corrupt) or messages
    /// that could not be encoded.
    pub codec_errors: u64,
    /// Payloads of kinds this release does not know, skipped.
    pub skipped: u64,
    /// Remote nodes expired for silence.
    pub expired_nodes: u64,
}

pub(crate) struct Shared {
    pub(crate) name: &'static str,
    pub(crate) origin: u64,
    pub(crate) cluster: Mutex<Cluster>,
    pub(crate) sink: OnceLock<BackplaneSink>,
    start: Instant,
    tx: mpsc::Sender<Vec<u8>>,
    state: Mutex<State>,
    pub(crate) published: AtomicU64,
    pub(crate) published_bytes: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    codec_errors: AtomicU64,
    skipped: AtomicU64,
    expired: AtomicU64,
    last_drop_warn: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct State {
    publisher: bool,
    subscriber: bool,
    last_error: Option<(SystemTime, String)>,
    outages: u64,
    down_since: Option<Instant>,
}

/// Which connection a health update is about.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Side {
    Publisher,
    Subscriber,
}

impl Shared {
    pub(crate) fn new(
        name: &'static str,
        cfg: ClusterConfig,
        queue: usize,
    ) -> (Arc<Shared>, mpsc::Receiver<Vec<u8>>) {
        let origin = uuid::Uuid::new_v4().as_u64_pair().0;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let shared = Arc::new(Shared {
            name,
            origin,
            cluster: Mutex::new(Cluster::new(origin, cfg)),
            sink: OnceLock::new(),
            start: Instant::now(),
            tx,
            state: Mutex::new(State {
                down_since: Some(Instant::now()),
                ..State::default()
            }),
            published: AtomicU64::new(0),
            published_bytes: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            codec_errors: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            last_drop_warn: Mutex::new(None),
        });
        (shared, rx)
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Backplane::publish`: this node's own presence is recorded and published (never
    /// delivered back); everything else is delivered to the local sink at once and published
    /// for the other nodes.
    pub(crate) fn publish(&self, msg: BackplaneMsg) {
        if matches!(msg, BackplaneMsg::Presence { .. }) {
            // Under the cluster lock, so snapshots and presence changes keep their order.
            let mut cluster = self.cluster();
            match cluster.publish(&msg) {
                Ok(bytes) => self.enqueue(bytes),
                Err(e) => self.codec_error(&e),
            }
            return;
        }
        match codec::encode_msg(self.origin, &msg) {
            Ok(bytes) => self.enqueue(bytes),
            Err(e) => self.codec_error(&e),
        }
        if let Some(sink) = self.sink.get() {
            sink(msg);
        }
    }

    fn enqueue(&self, bytes: Vec<u8>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(bytes) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let mut last = self
                .last_drop_warn
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                *last = Some(Instant::now());
                tracing::warn!(
                    backplane = self.name,
                    dropped,
                    "backplane publish queue full: message dropped"
                );
            }
        }
    }

    fn codec_error(&self, e: &codec::CodecError) {
        self.codec_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(backplane = self.name, error = %e, "backplane message dropped");
    }

    /// A payload arrived from the pub/sub connection.
    pub(crate) fn receive(&self, payload: &[u8]) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let now = self.now();
        let out = self.cluster().receive(payload, now);
        self.run(out);
    }

    /// The timer: heartbeats and expiry.
    pub(crate) fn tick(&self) {
        let now = self.now();
        let out = self.cluster().tick(now);
        self.run(out);
    }

    /// Executes what the cluster view asked for, with its lock released.
    fn run(&self, out: Output) {
        for bytes in out.publish {
            self.enqueue(bytes);
        }
        if let Some(e) = out.error {
            self.codec_error(&e);
        }
        if let Some(kind) = out.skipped {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                backplane = self.name,
                kind,
                "unknown backplane frame kind skipped"
            );
        }
        for (origin, node, uids) in out.expired {
            self.expired.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                backplane = self.name,
                origin,
                node = ?node,
                uids,
                "backplane node silent past the expiry: its uids leave the connected uids"
            );
        }
        if let Some(sink) = self.sink.get() {
            for msg in out.deliver {
                sink(msg);
            }
        }
    }

    /// Records a connection coming up or going down (and logs the transitions).
    #[allow(clippy::needless_pass_by_value)]
    pub(crate) fn set_up(&self, side: Side, up: bool, error: Option<String>) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let was = s.publisher && s.subscriber;
        let flag = match side {
            Side::Publisher => &mut s.publisher,
            Side::Subscriber => &mut s.subscriber,
        };
        let changed = *flag != up;
        *flag = up;
        if let Some(e) = &error {
            s.last_error = Some((SystemTime::now(), e.clone()));
        }
        let is = s.publisher && s.subscriber;
        if was && !is {
            s.outages += 1;
            s.down_since = Some(Instant::now());
            tracing::warn!(
                backplane = self.name,
                ?side,
                error = error.as_deref(),
                "backplane connection lost; reconnecting (local clients are still served)"
            );
        } else if !was && is {
            let outage = s.down_since.take().map(|t| t.elapsed());
            tracing::info!(backplane = self.name, ?outage, "backplane connected");
        } else if changed && !up {
            tracing::debug!(
                backplane = self.name,
                ?side,
                error = error.as_deref(),
                "backplane connection down"
            );
        } else if !up && error.is_some() {
            tracing::debug!(
                backplane = self.name,
                ?side,
                error = error.as_deref(),
                "backplane reconnect failed"
            );
        }
    }

    /// Records an error that does not change the connection state (logged at warn, or at debug
    /// while reconnecting).
    #[allow(dead_code)]
    pub(crate) fn record_error(&self, error: String) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.publisher && s.subscriber {
            tracing::warn!(backplane = self.name, %error, "backplane error");
        } else {
            tracing::debug!(backplane = self.name, %error, "backplane error while reconnecting");
        }
        s.last_error = Some((SystemTime::now(), error));
    }

    pub(crate) fn health(&self) -> Health {
        let peers = self.cluster().peers();
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Health {
            connected: s.publisher && s.subscriber,
            last_error: s.last_error.clone(),
            outages: s.outages,
            peers,
            published: self.published.load(Ordering::Relaxed),
            published_bytes: self.published_bytes.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            codec_errors: self.codec_errors.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            expired_nodes: self.expired.load(Ordering::Relaxed),
        }
    }

    /// Waits until both connections are up, or `timeout`.
    pub(crate) async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.health().connected {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Runs the timer until `stop` is dropped.
pub(crate) async fn run_timer(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let every = {
        let c = shared.cluster();
        (c.config().heartbeat / 4).max(Duration::from_millis(10))
    };
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => shared.tick(),
            _ = stop.changed() => return,
        }
    }
}

/// Exponential backoff between reconnect attempts.
pub(crate) struct Backoff {
    next: Duration,
    #[allow(dead_code)]
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    #[allow(dead_code)]
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    /// Sleeps for the next delay; false when `stop` fired meanwhile.
    pub(crate) async fn wait(&mut self, stop: &mut watch::Receiver<()>) -> bool {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = stop.changed() => false,
        }
    }
}
