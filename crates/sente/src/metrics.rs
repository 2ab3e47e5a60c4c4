//! Metrics and tracing of the server: the tables of every metric and of the tracing targets
//! are below (also `crates/sente/METRICS.md` in the repository).
//!
//! Every metric goes through the [`metrics`](https://docs.rs/metrics) facade: install any
//! recorder (Prometheus, StatsD, OpenTelemetry...) **before** building the server, and the
//! server reports to it; without a recorder, recording costs a branch. With the `prometheus`
//! feature, `prometheus()` installs a Prometheus recorder and `Prometheus::service()` is the
//! route that serves its text format, for the application to mount (the server opens no
//! listener of its own):
//!
//! ```ignore
//! // Cargo.toml: sente = { version = "0.1", features = ["prometheus"] }
//! let metrics = sente::metrics::prometheus()?; // before Server::builder()...build()
//! let app = server.router("/chsk").route_service("/metrics", metrics.service());
//! ```
//!
//! [`ServerHandle::stats`](crate::ServerHandle::stats) and the [`admin`](crate::admin) page
//! read the same counts, for this node: each instrumentation point makes one call here, which
//! records into the facade and into the node's atomics (`sente_connections`,
//! `sente_events_received_total`, `sente_events_sent_total`, `sente_reply_seconds`,
//! `sente_rejections_total` summed over their labels; `sente_dropped_events_total` and
//! `sente_slow_consumer_disconnects_total{cause="queue-full"}`): one count, two views.
#![doc = ""]
#![doc = include_str!("../METRICS.md")]

use crate::meters::{Gauge, Meters, RejectedRequest};
use ::metrics::{Counter, Histogram, counter, gauge, histogram};
use sente_proto::Transport;
use std::sync::Arc;
use std::time::Instant;

/// The metric names (see the table above).
pub mod names {
    /// Counter: handshakes answered (connections opened), by `transport`.
    pub const HANDSHAKES: &str = "sente_handshakes_total";
    /// Gauge: open WebSockets (`transport="ws"`) and held long-polls (`transport="ajax"`).
    pub const CONNECTIONS: &str = "sente_connections";
    /// Counter: refused requests and unreadable messages, by `reason` and `detail`.
    pub const REJECTIONS: &str = "sente_rejections_total";
    /// Counter: events from clients, by `transport` and `packer`.
    pub const EVENTS_IN: &str = "sente_events_received_total";
    /// Counter: events to clients (pushes and replies), by `transport` and `packer`.
    pub const EVENTS_OUT: &str = "sente_events_sent_total";
    /// Counter: bytes of the messages from clients, by `transport` and `packer`.
    pub const BYTES_IN: &str = "sente_received_bytes_total";
    /// Counter: bytes of the messages to clients, by `transport` and `packer`.
    pub const BYTES_OUT: &str = "sente_sent_bytes_total";
    /// Histogram: events per pushed batch (once per batch, however many clients it reaches),
    /// by `transport`.
    pub const BATCH_SIZE: &str = "sente_batch_size";
    /// Histogram: seconds from an event's arrival to its reply, by `transport`.
    pub const REPLY_SECONDS: &str = "sente_reply_seconds";
    /// Histogram: the most events queued at once for a WebSocket, per connection (recorded when
    /// it closes).
    pub const PENDING_SENDS: &str = "sente_pending_sends";
    /// Gauge: the most events ever queued for one WebSocket (high-water mark).
    pub const PENDING_SENDS_MAX: &str = "sente_pending_sends_max";
    /// Gauge: the drain phase of a server shutting down (0 serving, 1 draining in-flight
    /// replies, 2 closing clients, 3 waiting for connections to end, 4 stopped).
    pub const DRAIN_PHASE: &str = "sente_drain_phase";
    /// Counter: clients dropped for being too slow, by `transport` and `cause`.
    pub const SLOW_CONSUMERS: &str = "sente_slow_consumer_disconnects_total";
    /// Counter: events the server dropped, by `kind` (`push`, `system`).
    pub const DROPPED_EVENTS: &str = "sente_dropped_events_total";
    /// Counter: large events stored to be fetched by HTTP ([`crate::large`]), once per event.
    pub const LARGE_OFFLOADED: &str = "sente_large_offloaded_total";
    /// Counter: their estimated bytes.
    pub const LARGE_OFFLOADED_BYTES: &str = "sente_large_offloaded_bytes_total";
    /// Counter: large events sent inline because the store was full.
    pub const LARGE_INLINE: &str = "sente_large_inline_total";
    /// Counter: fetches of offloaded events, by `result` (`ok`, `unknown`, `forbidden`,
    /// `fetched`).
    pub const LARGE_FETCHES: &str = "sente_large_fetches_total";
    /// Counter: handshakes of clients resuming from a position whose missed pushes were
    /// replayed (`recovered: true`), by `transport`.
    pub const REPLAY_HITS: &str = "sente_replay_hits_total";
    /// Counter: handshakes of clients resuming from a position the replay log no longer covers
    /// (`recovered: false`), by `transport`.
    pub const REPLAY_MISSES: &str = "sente_replay_misses_total";
}

/// Why a request was refused, as the two labels of `sente_rejections_total`: `reason` (the
/// class) and `detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// A guard check ([`crate::Rejection`]).
    Guard(crate::Rejection),
    /// A page whose origin is not allowed asked for CORS (preflight or `client.js`).
    CorsOrigin,
    MissingClientId,
    UnknownPacker,
    TooManyFields,
    BadHandshake,
    BodyReadError,
    PackerMismatch,
    BadPackage,
    ConnectionLimit,
    HeadTooLarge,
    BodyTooLarge,
    BodyReadTimeout,
    MessageTooLarge,
    QueueFull,
    PendingReplies,
    ShuttingDown,
    NoUpgrade,
    /// A `chsk/rep` for no request waiting for that client, or malformed.
    RequestReply,
}

impl Why {
    /// `(reason, detail)`.
    pub(crate) fn labels(self) -> (&'static str, &'static str) {
        use crate::Rejection as R;
        match self {
            Why::Guard(R::Csrf) => ("csrf", "csrf"),
            Why::Guard(R::Origin) => ("origin", "origin"),
            Why::CorsOrigin => ("origin", "cors-origin"),
            Why::Guard(R::Unauthorized) => ("auth", "unauthorized"),
            Why::Guard(R::RejectFn) => ("auth", "reject-fn"),
            Why::Guard(R::Host) => ("host", "host"),
            Why::MissingClientId => ("bad-input", "missing-client-id"),
            Why::UnknownPacker => ("bad-input", "unknown-packer"),
            Why::TooManyFields => ("bad-input", "too-many-fields"),
            Why::BadHandshake => ("bad-input", "bad-websocket-handshake"),
            Why::BodyReadError => ("bad-input", "body-read-error"),
            Why::PackerMismatch => ("bad-input", "packer-mismatch"),
            Why::BadPackage => ("bad-input", "bad-package"),
            Why::ConnectionLimit => ("limits", "connection-limit"),
            Why::HeadTooLarge => ("limits", "head-too-large"),
            Why::BodyTooLarge => ("limits", "body-too-large"),
            Why::BodyReadTimeout => ("limits", "body-read-timeout"),
            Why::MessageTooLarge => ("limits", "message-too-large"),
            Why::QueueFull => ("limits", "event-queue-full"),
            Why::PendingReplies => ("limits", "pending-replies"),
            Why::ShuttingDown => ("unavailable", "shutting-down"),
            Why::NoUpgrade => ("unavailable", "no-upgrade-support"),
            Why::RequestReply => ("bad-input", "unexpected-request-reply"),
        }
    }

    /// Counts one rejection, in `sente_rejections_total` and the node's
    /// [`Stats::rejected_requests`](crate::Stats::rejected_requests); `noted` (a refused
    /// admission, redacted) goes to the recent-rejections ring.
    pub(crate) fn count(self, node: &Meters, noted: Option<RejectedRequest>) {
        let (reason, detail) = self.labels();
        counter!(names::REJECTIONS, "reason" => reason, "detail" => detail).increment(1);
        node.rejected(noted);
    }

    /// The reason kept in the recent-rejections ring ([`RejectedRequest::reason`]).
    pub(crate) fn ring_reason(self) -> &'static str {
        match self {
            Why::Guard(r) => r.as_str(),
            Why::MissingClientId => "missing client-id",
            Why::UnknownPacker => "unknown packer",
            other => other.labels().1,
        }
    }
}

/// A connection (or a client's Ajax request) opened: counted by transport.
pub(crate) fn handshake(transport: Transport) {
    counter!(names::HANDSHAKES, "transport" => transport.as_str()).increment(1);
}

/// An open WebSocket or a held long-poll, counted until dropped in `sente_connections` and in
/// the node's [`Stats::ws_connections`](crate::Stats::ws_connections) /
/// [`Stats::ajax_polls`](crate::Stats::ajax_polls).
pub(crate) struct Open(ConnMetrics, #[allow(dead_code)] Gauge);

impl Open {
    /// Counts one open connection (or held poll) of `m`'s transport until dropped.
    pub(crate) fn new(m: &ConnMetrics) -> Open {
        m.connections.increment(1.0);
        let held = match m.transport {
            Transport::Ws => m.node.ws_open(),
            Transport::Ajax => m.node.ajax_poll(),
        };
        Open(m.clone(), held)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.decrement(1.0);
    }
}

/// A handshake that asked to resume: a client with a position counts as a replay hit
/// (`recovered: true`) or miss; a first connection (no position yet) counts as neither.
pub(crate) fn resumed(
    transport: Transport,
    asked: &sente_proto::server::replay::Resume,
    answer: Option<&sente_proto::server::replay::ResumeInfo>,
) {
    use sente_proto::server::replay::Resume;
    if let (Resume::From(_), Some(info)) = (asked, answer) {
        let name = if info.recovered {
            names::REPLAY_HITS
        } else {
            names::REPLAY_MISSES
        };
        counter!(name, "transport" => transport.as_str()).increment(1);
    }
}

/// A client dropped for being slow: `cause` is `queue-full` or `write-timeout`.
pub(crate) fn slow_consumer(transport: Transport, cause: &'static str) {
    counter!(names::SLOW_CONSUMERS, "transport" => transport.as_str(), "cause" => cause)
        .increment(1);
}

/// Events dropped by the server: `kind` is `push` or `system`.
pub(crate) fn dropped_events(kind: &'static str, n: u64) {
    counter!(names::DROPPED_EVENTS, "kind" => kind).increment(n);
}

/// What one offload did (`sente_large_offloaded_total`, `..._bytes_total`, `sente_large_inline_total`).
pub(crate) fn large_offloaded(c: sente_proto::large::OffloadCounts) {
    if c.stored > 0 {
        counter!(names::LARGE_OFFLOADED).increment(c.stored);
        counter!(names::LARGE_OFFLOADED_BYTES).increment(c.stored_bytes);
    }
    if c.inline > 0 {
        counter!(names::LARGE_INLINE).increment(c.inline);
    }
}

/// A fetch of an offloaded event, by result (`sente_large_fetches_total`).
pub(crate) fn large_fetch(result: &'static str) {
    counter!(names::LARGE_FETCHES, "result" => result).increment(1);
}

/// The `sente_batch_size` histogram of a transport.
pub(crate) fn batch_sizes(transport: Transport) -> Histogram {
    histogram!(names::BATCH_SIZE, "transport" => transport.as_str())
}

/// The drain phase of a server shutting down (`sente_drain_phase`).
pub(crate) fn drain_phase(phase: u8) {
    gauge!(names::DRAIN_PHASE).set(f64::from(phase));
}

/// A new high-water mark of one WebSocket's send queue.
pub(crate) fn pending_max(n: usize) {
    gauge!(names::PENDING_SENDS_MAX).set(n as f64);
}

/// The handles a connection (or an Ajax request) records into, registered once per server,
/// transport and packer ([`ConnMetricsCache`]): recording is then an atomic add (or nothing,
/// without a recorder), and a connection holds one pointer. Events in and out and reply
/// latencies go to both sinks at once: the `metrics` facade and the node's [`Meters`] (read by
/// [`ServerHandle::stats`](crate::ServerHandle::stats) and the admin page).
#[derive(Clone)]
pub(crate) struct ConnMetrics(Arc<Handles>);

impl std::ops::Deref for ConnMetrics {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// A server's [`ConnMetrics`], one per transport and packer, each registered with the recorder
/// on first use (so install the recorder before the server serves: see the module docs).
#[derive(Default)]
pub(crate) struct ConnMetricsCache(std::sync::Mutex<Vec<(Transport, &'static str, ConnMetrics)>>);

impl ConnMetricsCache {
    /// The handles of `transport` and `packer`.
    pub(crate) fn get(
        &self,
        transport: Transport,
        packer: &'static str,
        node: &Arc<Meters>,
    ) -> ConnMetrics {
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((.., m)) = all.iter().find(|(t, p, _)| *t == transport && *p == packer) {
            return m.clone();
        }
        let m = ConnMetrics(Arc::new(Handles::new(transport, packer, node)));
        all.push((transport, packer, m.clone()));
        m
    }
}

/// The handles behind a [`ConnMetrics`].
pub(crate) struct Handles {
    events_in: Counter,
    events_out: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) pending: Histogram,
    reply: Histogram,
    /// `sente_connections` of the transport.
    connections: metrics::Gauge,
    transport: Transport,
    node: Arc<Meters>,
}

impl Handles {
    fn new(transport: Transport, packer: &'static str, node: &Arc<Meters>) -> Self {
        let t = transport.as_str();
        Handles {
            node: node.clone(),
            events_in: counter!(names::EVENTS_IN, "transport" => t, "packer" => packer),
            events_out: counter!(names::EVENTS_OUT, "transport" => t, "packer" => packer),
            bytes_in: counter!(names::BYTES_IN, "transport" => t, "packer" => packer),
            bytes_out: counter!(names::BYTES_OUT, "transport" => t, "packer" => packer),
            pending: histogram!(names::PENDING_SENDS),
            reply: histogram!(names::REPLY_SECONDS, "transport" => t),
            connections: gauge!(names::CONNECTIONS, "transport" => t),
            transport,
        }
    }
}

impl ConnMetrics {
    /// An event arrived from the client.
    pub(crate) fn event_in(&self) {
        self.events_in.increment(1);
        self.node.event_in();
    }

    /// A pushed batch of `events` goes out.
    pub(crate) fn batch_sent(&self, events: usize) {
        self.events_out.increment(events as u64);
        self.node.events_out(events);
    }

    /// A reply goes out to the client, `since` its event arrived: one event out, and its
    /// latency measured once, recorded in `sente_reply_seconds` and the node's histogram.
    pub(crate) fn replied(&self, since: Instant) {
        let took = since.elapsed();
        self.events_out.increment(1);
        self.node.events_out(1);
        self.reply.record(took.as_secs_f64());
        self.node.reply(took);
    }

    /// A timer for the reply of an event arriving now.
    pub(crate) fn reply_timer(&self) -> ReplyTimer {
        ReplyTimer {
            since: Instant::now(),
            conn: self.clone(),
        }
    }
}

/// When an event that asked for a reply arrived (recorded by [`ConnMetrics::replied`] when
/// the reply goes out in the POST's response).
#[derive(Debug)]
pub(crate) struct ReplyTimer {
    since: Instant,
    conn: ConnMetrics,
}

impl ReplyTimer {
    pub(crate) fn done(&self) {
        self.conn.replied(self.since);
    }
}

impl std::fmt::Debug for ConnMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnMetrics").finish_non_exhaustive()
    }
}

#[cfg(feature = "prometheus")]
pub use prom::{Prometheus, PrometheusError, PrometheusService, prometheus, prometheus_handler};

#[cfg(feature = "prometheus")]
mod prom {
    use super::names;
    use bytes::Bytes;
    use http::{HeaderValue, Request, Response, header};
    use http_body_util::Full;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
    use std::convert::Infallible;
    use std::sync::{Mutex, PoisonError};
    use std::task::{Context, Poll};
    use std::time::Duration;

    /// Why [`prometheus`] failed: another recorder is installed, or the exporter refused its
    /// settings.
    pub type PrometheusError = metrics_exporter_prometheus::BuildError;

    /// How often the recorder's upkeep runs (drains histogram samples when nobody scrapes).
    const UPKEEP: Duration = Duration::from_secs(5);

    const SECONDS: &[f64] = &[
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    const COUNTS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

    static INSTALLED: Mutex<Option<Prometheus>> = Mutex::new(None);

    /// The process's Prometheus recorder, installed by [`prometheus`].
    #[derive(Clone, Debug)]
    pub struct Prometheus {
        handle: PrometheusHandle,
    }

    /// Installs a Prometheus recorder as the process's global `metrics` recorder, with
    /// histogram buckets for sente's histograms (and a thread that runs its upkeep every 5 s);
    /// a second call returns the same recorder. Call it before building the server.
    ///
    /// Errors: another `metrics` recorder is already installed.
    pub fn prometheus() -> Result<Prometheus, PrometheusError> {
        let mut slot = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = &*slot {
            return Ok(p.clone());
        }
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(names::REPLY_SECONDS.into()), SECONDS)?
            .set_buckets_for_metric(
                Matcher::Full("sente_backplane_publish_seconds".into()),
                SECONDS,
            )?
            .set_buckets_for_metric(Matcher::Full(names::BATCH_SIZE.into()), COUNTS)?
            .set_buckets_for_metric(Matcher::Full(names::PENDING_SENDS.into()), COUNTS)?
            .install_recorder()?;
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("sente-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                }
            });
        let p = Prometheus { handle };
        *slot = Some(p.clone());
        Ok(p)
    }

    /// [`prometheus`], then [`Prometheus::service`]: the route to mount (`GET` answers the
    /// text format).
    pub fn prometheus_handler() -> Result<PrometheusService, PrometheusError> {
        Ok(prometheus()?.service())
    }

    impl Prometheus {
        /// The current values in Prometheus' text format.
        pub fn render(&self) -> String {
            self.handle.render()
        }

        /// The exporter's handle.
        pub fn handle(&self) -> &PrometheusHandle {
            &self.handle
        }

        /// A tower service answering every request with [`Prometheus::render`]: mount it in
        /// axum with `Router::route_service("/metrics", ..)`, or serve it with hyper through
        /// `hyper_util::service::TowerToHyperService`.
        pub fn service(&self) -> PrometheusService {
            PrometheusService {
                handle: self.handle.clone(),
            }
        }
    }

    /// The route that serves the metrics ([`Prometheus::service`]).
    #[derive(Clone, Debug)]
    pub struct PrometheusService {
        handle: PrometheusHandle,
    }

    impl<B> tower_service::Service<Request<B>> for PrometheusService {
        // `Full<Bytes>` is `crate::ChskBody`; named here so that this module needs nothing
        // from `response` (which counts its rejections here).
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<B>) -> Self::Future {
            let get = req.method() == http::Method::GET || req.method() == http::Method::HEAD;
            let body = if get {
                Bytes::from(self.handle.render())
            } else {
                Bytes::from_static(b"Method not allowed")
            };
            let mut r = Response::new(Full::new(body));
            if !get {
                *r.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
            }
            let kind = if get {
                "text/plain; version=0.0.4; charset=utf-8"
            } else {
                "text/plain; charset=utf-8"
            };
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            std::future::ready(Ok(r))
        }
    }
}
