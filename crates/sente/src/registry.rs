//! The connection registry: the sans-IO server [`Core`], split into [`Shards`] by uid (each
//! behind its own lock, with its own timer task), its clock, the execution of what the core decides (deliveries, closes, poll answers), the cluster's
//! connected uids, what arrives from the backplane, and the drop counters.
//!
//! With a cluster backplane, `chsk/uidport-*` events are decided by the backplane
//! ([`Backplane::uidport`]: once for the cluster), in order, by one task; and with its Ajax
//! mailboxes ([`Backplane::mailbox`]), held polls are answered from the mailbox (the wake
//! tasks below).
//!
//! Locks: an operation on one uid locks its shard ([`Registry::with_core`]); a broadcast, a
//! push to several uids and a cluster-numbered message visit the shards in index order, each
//! locked before the previous one is let go ([`Registry::with_shards`], see [`Shards`]). What
//! a shard decides is executed while it is locked (so successive flushes of a uid are never
//! reordered), which may take the presence lock and the connected-uids watch: those never take
//! a shard.

use crate::meters::Meters;
use crate::outbox::Outbox;
use crate::request::ChskRequest;
use sente_proto::backplane::{
    Backplane, BackplaneMsg, BoxFuture, Mailbox, NodeId, PresenceView, UidportDecision,
};
use sente_proto::s2c::{RequestBook, RequestError};
use sente_proto::server::{
    Action, ConnId, Core, CoreConfig, CoreEvent, PollAnswer, PushBatch, ServerLimits, Shards,
    Transport, WakeDone,
};
use sente_proto::{ClientId, Event, Packer, Uid, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

/// Where a server-to-client request's answer goes (see [`crate::s2c`]).
pub(crate) type RequestWaiter = oneshot::Sender<Result<Value, RequestError>>;

/// How a node starts serving (`join_wait`: see [`Registry::joined`]) and how
/// [`ServerHandle::shutdown`] closes clients (the rest).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lifecycle {
    pub(crate) join_wait: Duration,
    pub(crate) drain: Duration,
    pub(crate) stagger: Duration,
    pub(crate) timeout: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            join_wait: Duration::from_secs(10),
            drain: Duration::from_secs(5),
            stagger: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The uids with at least one connection (Sente's `connected-uids`), with the grace periods of
/// spec 7.4: a uid stays for `ms_allow_reconnect_before_close_*` after its last connection ends.
/// With a cluster backplane, the uids connected to any node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectedUids {
    /// Uids with a WebSocket client.
    pub ws: HashSet<Uid>,
    /// Uids with an Ajax client that has long-polled (a handshake alone does not count).
    pub ajax: HashSet<Uid>,
    /// The union.
    pub any: HashSet<Uid>,
}

/// The server's counters and gauges, for this node ([`ServerHandle::stats`](crate::ServerHandle::stats)):
/// what it dropped (each drop is also logged with `tracing::warn!`), its open connections,
/// the events in and out, the reply latencies and the refused requests. Cheap to read (atomics).
/// Fed by the same calls as the metrics (see [`crate::metrics`]): `ws_connections` and
/// `ajax_polls` are `sente_connections`, `events_in` and `events_out` are
/// `sente_events_received_total` and `sente_events_sent_total` summed over their labels,
/// `replies` counts what `sente_reply_seconds` counts, and the drops are
/// `sente_dropped_events_total` and `sente_slow_consumer_disconnects_total{cause="queue-full"}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// WebSocket connections open now.
    pub ws_connections: usize,
    /// Ajax long-polls held now (an Ajax client between two polls is not counted).
    pub ajax_polls: usize,
    /// Events received from clients (WebSocket frames and Ajax POSTs carrying an event).
    pub events_in: u64,
    /// Events sent to clients: pushed events, counted once per client (a broadcast to 10
    /// clients counts 10), and replies.
    pub events_out: u64,
    /// Replies sent (to events that asked for one), with the time from the event's arrival to
    /// its reply.
    pub replies: crate::meters::LatencyHistogram,
    /// Refused requests and unreadable messages, for every reason (the guard's CSRF, Origin,
    /// Host, `reject_fn`, `authorized_fn`; bad input; limits; shutting down): the count of
    /// `sente_rejections_total`. The refused admissions (guard, missing client id, unknown
    /// packer) are also kept in [`ServerHandle::recent_rejections`](crate::ServerHandle::recent_rejections).
    pub rejected_requests: u64,
    /// Server-synthesized events (uidport) dropped because their client's queue was full.
    pub dropped_system_events: u64,
    /// Pushed events dropped because a batch could not be packed within the message limit.
    pub dropped_push_events: u64,
    /// Clients dropped because too many pushes were waiting for them (a WebSocket whose send
    /// queue overflowed, or a client over `max_pending_events_per_client` in the core).
    pub dropped_clients: u64,
}

/// The per-connection context kept by the core (returned with uidport events).
#[derive(Clone, Debug)]
pub(crate) struct ConnCtx {
    pub(crate) request: Arc<ChskRequest>,
    pub(crate) transport: Transport,
    /// The packer the connection handshook with (an Ajax client's POSTs use it).
    pub(crate) packer: Arc<dyn Packer>,
}

pub(crate) type Responder = oneshot::Sender<PollAnswer>;
pub(crate) type ServerCore = Core<Arc<Outbox>, Responder, ConnCtx>;

/// A `chsk/uidport-*` event the core produced, for the dispatcher.
pub(crate) struct SystemEvent {
    pub(crate) event: Event,
    pub(crate) uid: Uid,
    pub(crate) client_id: ClientId,
    pub(crate) ctx: ConnCtx,
}

/// Receives the core's `chsk/uidport-*` events (called with the core locked: must not block).
pub(crate) type SystemSink = Box<dyn Fn(SystemEvent) + Send + Sync>;

/// Receives what the backplane brings of server-to-client requests (`Request`,
/// `RequestAnswers`, `RequestReply`): installed when the server is built (see
/// [`crate::s2c`]); must not block.
pub(crate) type RequestSink = Box<dyn Fn(BackplaneMsg) + Send + Sync>;

/// The timer task of one shard: woken when an earlier deadline than the one it sleeps to is
/// added.
struct ShardTimer {
    driver: Arc<Notify>,
    /// The deadline the task sleeps to (stored under the shard's lock).
    armed: AtomicU64,
}

pub(crate) struct Registry {
    cores: Shards<Arc<Outbox>, Responder, ConnCtx>,
    /// One per shard.
    timers: Box<[ShardTimer]>,
    limits: ServerLimits,
    /// See [`Registry::mailbox_ttl`].
    mailbox_ttl: Duration,
    /// Cluster resume ([`CoreConfig::cluster_resume`]): every shard keeps the cluster's
    /// sequence.
    cluster_resume: bool,
    start: Instant,
    node: NodeId,
    backplane: Arc<dyn Backplane>,
    presence: Mutex<PresenceView>,
    connected: watch::Sender<ConnectedUids>,
    system: OnceLock<SystemSink>,
    requests_sink: OnceLock<RequestSink>,
    /// WebSocket connections, held polls and POSTs in flight (what a shutdown waits for).
    live: AtomicUsize,
    idle: Notify,
    closing: AtomicBool,
    /// Replies handlers still owe (what the drain phase of a shutdown waits for).
    replies: AtomicUsize,
    replies_done: Notify,
    /// Set once a shutdown is complete (then every request is refused, POSTs too).
    stopped: AtomicBool,
    on_shutdown: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    /// How long the node waits for its backplane to join, and how [`Registry::shutdown`]
    /// paces its phases (the builder's `join_wait`, `drain_timeout` and `shutdown_*`).
    lifecycle: Lifecycle,
    /// `true` once this node serves new clients (see [`Registry::joined`]).
    serving: watch::Sender<bool>,
    /// The backplane's Ajax mailboxes (a cluster without sticky sessions).
    mailbox: Option<Arc<dyn Mailbox>>,
    /// Uidport events waiting for the backplane's cluster-wide decision, in order. Unbounded
    /// here: each entry is an operation in the backplane's own bounded queue (over its bound a
    /// decision resolves at once), so this holds no more than that queue.
    decisions: mpsc::UnboundedSender<PendingUidport>,
    /// The context of uidport-close events fired for nodes that died.
    cluster_ctx: ConnCtx,
    me: Weak<Registry>,
    rt: tokio::runtime::Handle,
    dropped_system: AtomicU64,
    dropped_push: AtomicU64,
    dropped_clients: AtomicU64,
    /// The node-local meters ([`Stats`], the admin page), fed by [`crate::metrics`].
    meters: Arc<Meters>,
    /// What connections and requests record into, per transport and packer.
    conn_metrics: crate::metrics::ConnMetricsCache,
    /// The most events queued for one WebSocket so far.
    pending_max: AtomicUsize,
    /// `sente_batch_size` of WebSocket and Ajax batches.
    batch_sizes: (::metrics::Histogram, ::metrics::Histogram),
    /// Server-to-client requests waiting for answers ([`crate::s2c`]), each with the channel
    /// its `request` call waits on.
    pub(crate) requests: Mutex<RequestBook<RequestWaiter>>,
    /// This node's requests whose other nodes' answers are awaited ([`crate::s2c`]): by id,
    /// where each answering node's list goes.
    pub(crate) remote_requests: Mutex<std::collections::HashMap<u64, RemoteWaiter>>,
    /// The last id given to such a request.
    pub(crate) remote_seq: AtomicU64,
    /// How many answers of each client this node forwarded to the node that asked
    /// ([`crate::s2c`]), this second.
    pub(crate) forwards: Mutex<sente_proto::s2c::ForwardBudget>,
    /// The request-id tags of the nodes seen in the cluster (by their presence): one per node
    /// that ever published one while this node ran.
    node_tags: Mutex<HashSet<u32>>,
}

/// Opens [`Registry::joined`] once the backplane has joined, or `join_wait` after the server
/// was built (then without the cluster, logged). Polls the backplane every 5 ms: one task, for
/// the few milliseconds a join takes.
async fn watch_join(me: Weak<Registry>) {
    loop {
        let Some(r) = me.upgrade() else { return };
        let joined = r.backplane.joined();
        if joined || r.start.elapsed() >= r.lifecycle.join_wait {
            if !joined {
                tracing::warn!(
                    join_wait = ?r.lifecycle.join_wait,
                    "the backplane has not connected yet: serving clients without the cluster \
                     (pushes from other nodes reach them once it connects)"
                );
            }
            r.serving.send_replace(true);
            return;
        }
        drop(r);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Where the answers of other nodes to one of this node's requests go: the answering node,
/// and its clients' answers.
pub(crate) type RemoteWaiter =
    mpsc::UnboundedSender<(NodeId, Vec<(ClientId, Result<Value, RequestError>)>)>;

impl Drop for Registry {
    fn drop(&mut self) {
        for t in &self.timers {
            t.driver.notify_one();
        }
    }
}

impl Registry {
    /// A registry around `shards` new cores (at least one); starts their timer tasks and
    /// subscribes to the backplane.
    pub(crate) fn start(
        cfg: CoreConfig,
        shards: usize,
        backplane: Arc<dyn Backplane>,
        packer: Arc<dyn Packer>,
        meters: Arc<Meters>,
        lifecycle: Lifecycle,
    ) -> Arc<Registry> {
        let mailbox = backplane.mailbox();
        let cluster_resume = backplane.sequenced() && cfg.replay.enabled;
        let cfg = cfg
            .ajax_mailbox(mailbox.is_some())
            .cluster_resume(cluster_resume);
        let (decisions, pending) = mpsc::unbounded_channel();
        let cluster_ctx = ConnCtx {
            request: Arc::new(ChskRequest::new(
                http::Request::new(()).into_parts().0,
                crate::params::Params::default(),
                None,
                std::collections::BTreeSet::new(),
            )),
            transport: Transport::Ws,
            packer,
        };
        let cores = Shards::new(&cfg, shards, |_| uuid::Uuid::new_v4().as_u64_pair().0);
        let timers = (0..cores.len())
            .map(|_| ShardTimer {
                driver: Arc::new(Notify::new()),
                armed: AtomicU64::new(u64::MAX),
            })
            .collect();
        let mailbox_ttl = Duration::from_millis(
            cfg.lp_timeout_ms
                .saturating_add(cfg.ms_allow_reconnect_before_close_ajax)
                .saturating_add(1000),
        );
        let node = NodeId(uuid::Uuid::new_v4().as_u64_pair().0);
        // `join_wait` zero: served at once, as documented (no wait, no warning).
        let joined_now = backplane.joined() || lifecycle.join_wait.is_zero();
        let registry = Arc::new_cyclic(|me| Registry {
            limits: cfg.limits.clone(),
            cores,
            timers,
            mailbox_ttl,
            cluster_resume,
            start: Instant::now(),
            node,
            backplane,
            presence: Mutex::new(PresenceView::new()),
            connected: watch::Sender::new(ConnectedUids::default()),
            system: OnceLock::new(),
            requests_sink: OnceLock::new(),
            live: AtomicUsize::new(0),
            idle: Notify::new(),
            closing: AtomicBool::new(false),
            replies: AtomicUsize::new(0),
            replies_done: Notify::new(),
            stopped: AtomicBool::new(false),
            on_shutdown: Mutex::new(Vec::new()),
            lifecycle,
            serving: watch::Sender::new(joined_now),
            mailbox,
            decisions,
            cluster_ctx,
            me: me.clone(),
            rt: tokio::runtime::Handle::current(),
            dropped_system: AtomicU64::new(0),
            dropped_push: AtomicU64::new(0),
            dropped_clients: AtomicU64::new(0),
            meters,
            conn_metrics: crate::metrics::ConnMetricsCache::default(),
            pending_max: AtomicUsize::new(0),
            batch_sizes: (
                crate::metrics::batch_sizes(Transport::Ws),
                crate::metrics::batch_sizes(Transport::Ajax),
            ),
            requests: Mutex::new(RequestBook::tagged(sente_proto::s2c::node_tag(node.0))),
            remote_requests: Mutex::default(),
            remote_seq: AtomicU64::new(0),
            forwards: Mutex::default(),
            node_tags: Mutex::default(),
        });
        let weak = Arc::downgrade(&registry);
        let from_backplane = weak.clone();
        registry.backplane.subscribe(Arc::new(move |msg| {
            if let Some(r) = from_backplane.upgrade() {
                r.apply(msg);
            }
        }));
        tokio::spawn(run_uidport_decisions(weak.clone(), pending));
        if !joined_now {
            tokio::spawn(watch_join(weak.clone()));
        }
        for (i, t) in registry.timers.iter().enumerate() {
            tokio::spawn(run_timers(weak.clone(), i, t.driver.clone()));
        }
        registry
    }

    /// The Ajax mailboxes, in a cluster that has them.
    pub(crate) fn mailbox(&self) -> Option<&Arc<dyn Mailbox>> {
        self.mailbox.as_ref()
    }

    /// How long an Ajax client stays registered in the mailboxes after its last request: a
    /// poll's hold plus the Ajax grace period, plus 1 s.
    pub(crate) fn mailbox_ttl(&self) -> Duration {
        self.mailbox_ttl
    }

    /// Mailbox mode: answers the held poll `conn` from the client's mailbox (in a task).
    pub(crate) fn wake(&self, uid: Uid, cid: ClientId, conn: ConnId) {
        let (Some(mb), Some(r)) = (self.mailbox.clone(), self.me.upgrade()) else {
            return;
        };
        self.rt.spawn(async move {
            let Some(mut responder) =
                r.with_core(&uid, |c, _| c.take_poll_for_wake(&uid, &cid, conn))
            else {
                return;
            };
            let max_events = r.limits.message.max_batch_len.max(1);
            let max_bytes = r.limits.message.max_message_bytes / 2;
            loop {
                let taken = mb.take(&uid, &cid, max_events, max_bytes).await;
                let done = r.with_core(&uid, |c, now| {
                    c.wake_done_taken(&uid, &cid, conn, responder, taken, now)
                });
                match done {
                    WakeDone::Done => return,
                    WakeDone::Again(again) => responder = again,
                    WakeDone::PutBack(b) => {
                        mb.put_back(&uid, &cid, b.events().to_vec()).await;
                        return;
                    }
                }
            }
        });
    }

    /// Where the core's `chsk/uidport-*` events go (set once, when the server is built).
    pub(crate) fn set_system_sink(&self, sink: SystemSink) {
        let _ = self.system.set(sink);
    }

    /// Where the backplane's server-to-client request messages go (set once, when the server
    /// is built).
    pub(crate) fn set_request_sink(&self, sink: RequestSink) {
        let _ = self.requests_sink.set(sink);
    }

    /// The runtime the server runs on (for tasks started from backplane callbacks).
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// Runs `f` when the server shuts down (the dispatcher lets go of the handlers there).
    pub(crate) fn on_shutdown(&self, f: Box<dyn FnOnce() + Send>) {
        self.on_shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(f);
    }

    pub(crate) fn backplane(&self) -> &Arc<dyn Backplane> {
        &self.backplane
    }

    pub(crate) fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// Milliseconds since the server started (the core's clock).
    pub(crate) fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The instant of a core time.
    pub(crate) fn instant(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Runs `f` on the shard of `uid` (`f` must touch that uid only), then executes what it
    /// asked for while still holding the shard, so deliveries of successive flushes can never
    /// be reordered.
    pub(crate) fn with_core<R>(&self, uid: &Uid, f: impl FnOnce(&mut ServerCore, u64) -> R) -> R {
        self.with_shard(self.cores.index(uid), f)
    }

    /// [`Registry::with_core`] on shard `i`.
    fn with_shard<R>(&self, i: usize, f: impl FnOnce(&mut ServerCore, u64) -> R) -> R {
        let now = self.now();
        let mut core = self.cores.lock(i);
        let r = f(&mut core, now);
        self.execute(&mut core, now);
        self.release(i, core);
        r
    }

    /// Lets go of shard `i`, waking its timer task if the shard's next deadline is now earlier
    /// than the one it sleeps to.
    fn release(&self, i: usize, core: MutexGuard<'_, ServerCore>) {
        let next = core.next_deadline().unwrap_or(u64::MAX);
        drop(core);
        let timer = &self.timers[i];
        if next < timer.armed.load(Ordering::Acquire) {
            timer.driver.notify_one();
        }
    }

    /// Runs `f(shard index, core, now)` on every shard, in index order, each shard locked
    /// before the previous one is let go (and its decisions executed there), so such calls
    /// reach every shard in one order (a broadcast, or a message every shard must see in the
    /// same order as the others), and follow each other through the shards like a pipeline.
    fn with_shards(&self, mut f: impl FnMut(usize, &mut ServerCore, u64)) {
        let now = self.now();
        let mut held: Option<(usize, MutexGuard<'_, ServerCore>)> = None;
        for i in 0..self.cores.len() {
            let mut core = self.cores.lock(i);
            if let Some((j, prev)) = held.take() {
                self.release(j, prev);
            }
            f(i, &mut core, now);
            self.execute(&mut core, now);
            held = Some((i, core));
        }
        if let Some((j, prev)) = held {
            self.release(j, prev);
        }
    }

    fn execute(&self, core: &mut ServerCore, now: u64) {
        // `sente_batch_size` counts a batch once, however many clients it goes to (a batch
        // flushed to several uids at once is one `Arc`, delivered in consecutive actions).
        let mut last_batch: *const PushBatch = std::ptr::null();
        let mut sample = |b: &Arc<PushBatch>, h: &::metrics::Histogram| {
            if !std::ptr::eq(Arc::as_ptr(b), last_batch) {
                last_batch = Arc::as_ptr(b);
                h.record(b.len() as f64);
            }
        };
        let mut actions = core.take_actions();
        for action in actions.drain(..) {
            match action {
                Action::WsDeliver { conn, batch, seq } => {
                    sample(&batch, &self.batch_sizes.0);
                    conn.push_batch(batch, seq);
                }
                // Draining: a WebSocket closes after the replies its handlers still owe.
                Action::WsClose { conn, reason } if self.is_closing() => {
                    conn.push_close_after_replies(reason);
                }
                Action::WsClose { conn, reason } => conn.push_close(reason),
                Action::AjaxAnswer {
                    uid,
                    client_id,
                    conn,
                    responder,
                    answer,
                } => {
                    if let Some(b) = answer.batch() {
                        sample(b, &self.batch_sizes.1);
                    }
                    match responder.send(answer) {
                        // The lease of a batch is marked delivered by the request once its
                        // answer is made (`ajax::get`), and confirmed by the client's next poll.
                        Ok(()) => {}
                        Err(answer) => {
                            match (&self.mailbox, answer) {
                                (Some(mb), PollAnswer::Batch(b)) => {
                                    // Back to the mailbox, for the client's next poll.
                                    core.handle_poll_ended(&uid, &client_id, conn, now);
                                    let (mb, events) = (mb.clone(), b.events().to_vec());
                                    self.rt.spawn(async move {
                                        mb.put_back(&uid, &client_id, events).await;
                                    });
                                }
                                (_, answer) => {
                                    core.handle_poll_undeliverable(
                                        &uid, &client_id, conn, answer, now,
                                    );
                                }
                            }
                        }
                    }
                }
                Action::AjaxWake {
                    uid,
                    client_id,
                    conn,
                } => self.wake(uid, client_id, conn),
            }
        }
        core.recycle_actions(actions);
        for ev in core.take_events() {
            match ev {
                CoreEvent::Presence { uid, ws, ajax } => {
                    self.set_presence(self.node, &uid, ws, ajax);
                    self.backplane.publish(BackplaneMsg::Presence {
                        node: self.node,
                        uid,
                        ws,
                        ajax,
                    });
                }
                CoreEvent::UidportOpen {
                    uid,
                    client_id,
                    ctx,
                } => self.uidport(true, uid, client_id, ctx),
                CoreEvent::UidportClose {
                    uid,
                    client_id,
                    ctx,
                } => self.uidport(false, uid, client_id, ctx),
                CoreEvent::ClientDropped {
                    uid,
                    client_id,
                    transport,
                } => {
                    self.count_dropped_client(transport);
                    tracing::warn!(%uid, %client_id, transport = transport.as_str(),
                        "client dropped: too many pushes waiting for it");
                }
            }
        }
    }

    /// This node's first connection of `uid` opened (or its last closed): fired here, or
    /// after the backplane's cluster-wide decision.
    fn uidport(&self, open: bool, uid: Uid, client_id: ClientId, ctx: ConnCtx) {
        match self.backplane.uidport(self.node, &uid, open) {
            None => self.system_event(open, uid, client_id, ctx),
            Some(decision) => {
                let _ = self.decisions.send(PendingUidport {
                    decision,
                    open,
                    uid,
                    client_id,
                    ctx,
                });
            }
        }
    }

    fn system_event(&self, open: bool, uid: Uid, client_id: ClientId, ctx: ConnCtx) {
        tracing::debug!(%uid, %client_id, open, "uidport");
        if let Some(sink) = self.system.get() {
            sink(SystemEvent {
                event: Event::uidport(open, &uid),
                uid,
                client_id,
                ctx,
            });
        }
    }

    /// This node's id in the cluster.
    pub(crate) fn node(&self) -> NodeId {
        self.node
    }

    /// The other nodes that have `uid` (a cluster's presence).
    pub(crate) fn nodes_elsewhere(&self, uid: &Uid) -> Vec<NodeId> {
        self.presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .nodes_elsewhere(uid, self.node)
    }

    /// Whether a node other than this one has `uid` (a cluster's presence).
    pub(crate) fn elsewhere(&self, uid: &Uid) -> bool {
        self.presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elsewhere(uid, self.node)
    }

    /// Whether a node of request-id tag `tag` ([`sente_proto::s2c::node_tag`]) published its
    /// presence (of any uid) since this node started.
    pub(crate) fn knows_tag(&self, tag: u32) -> bool {
        self.node_tags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&tag)
    }

    /// Records a node's presence of `uid` and updates the connected uids.
    fn set_presence(&self, node: NodeId, uid: &Uid, ws: bool, ajax: bool) {
        let tag = sente_proto::s2c::node_tag(node.0);
        if !self.knows_tag(tag) {
            self.node_tags
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(tag);
        }
        let (ws, ajax) = self
            .presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(node, uid, ws, ajax);
        self.connected.send_if_modified(|c| {
            let a = set(&mut c.ws, uid, ws);
            let b = set(&mut c.ajax, uid, ajax);
            let d = set(&mut c.any, uid, ws || ajax);
            a | b | d
        });
    }

    /// Applies a message from the backplane to this node's connections.
    pub(crate) fn apply(&self, msg: BackplaneMsg) {
        match msg {
            // Every shard checks the number (they all keep the cluster's sequence); the shards
            // of the message's uids apply it.
            BackplaneMsg::Sequenced { epoch, seq, msg } => {
                let parts = self.parts(&msg);
                self.with_shards(|i, c, now| {
                    if c.sequenced(epoch, seq).apply() {
                        apply_push(c, &msg, parts.of(i), Some(seq), now);
                    }
                });
            }
            msg @ (BackplaneMsg::Push { .. }
            | BackplaneMsg::PushMany { .. }
            | BackplaneMsg::Broadcast { .. }
            | BackplaneMsg::PushClient { .. }
            | BackplaneMsg::Flush { .. }
            | BackplaneMsg::CloseUid { .. }) => match self.parts(&msg) {
                // With cluster resume, a push without a number is seen by every shard (it makes
                // older positions unresumable, as on one core).
                Parts::One(i) if !self.cluster_resume => {
                    self.with_shard(i, |c, now| apply_push(c, &msg, None, None, now));
                }
                parts => self.with_shards(|i, c, now| {
                    if self.cluster_resume || parts.has(i) {
                        apply_push(c, &msg, parts.of(i), None, now);
                    }
                }),
            },
            BackplaneMsg::Presence {
                node,
                uid,
                ws,
                ajax,
            } if node != self.node => self.set_presence(node, &uid, ws, ajax),
            BackplaneMsg::UidportClose { uid } => {
                let cid = ClientId::new("sente-cluster").ok();
                if let Some(cid) = cid {
                    self.system_event(false, uid, cid, self.cluster_ctx.clone());
                }
            }
            BackplaneMsg::Epoch { epoch } => self.with_shards(|_, c, _| c.set_cluster_epoch(epoch)),
            BackplaneMsg::AjaxWake { uids: None } => self.with_shards(|_, c, _| c.wake_ajax(None)),
            BackplaneMsg::AjaxWake { uids: Some(uids) } => {
                let parts = self.cores.partition(uids.iter());
                self.with_shards(|i, c, _| {
                    if !parts[i].is_empty() {
                        let mine: Vec<Uid> = parts[i].iter().map(|u| (*u).clone()).collect();
                        c.wake_ajax(Some(&mine));
                    }
                });
            }
            msg @ (BackplaneMsg::Request { .. }
            | BackplaneMsg::RequestAnswers { .. }
            | BackplaneMsg::RequestReply { .. }) => {
                if let Some(sink) = self.requests_sink.get() {
                    sink(msg);
                }
            }
            _ => {}
        }
    }

    /// Which shards a push, flush or close concerns.
    fn parts<'a>(&self, msg: &'a BackplaneMsg) -> Parts<'a> {
        match msg {
            BackplaneMsg::Push { uid, .. }
            | BackplaneMsg::PushClient { uid, .. }
            | BackplaneMsg::Flush { uid }
            | BackplaneMsg::CloseUid { uid } => Parts::One(self.cores.index(uid)),
            BackplaneMsg::PushMany { uids, .. } => match self.cores.len() {
                1 => Parts::One(0),
                _ => Parts::Some(self.cores.partition(uids.iter())),
            },
            _ => Parts::All,
        }
    }

    pub(crate) fn connected_uids(&self) -> watch::Receiver<ConnectedUids> {
        self.connected.subscribe()
    }

    pub(crate) fn count_dropped_push(&self, e: &sente_proto::PackError, events: usize) {
        self.dropped_push
            .fetch_add(events as u64, Ordering::Relaxed);
        crate::metrics::dropped_events("push", events as u64);
        tracing::warn!(error = %e, events, "pushed batch could not be packed; dropped");
    }

    pub(crate) fn count_dropped_system(&self) {
        self.dropped_system.fetch_add(1, Ordering::Relaxed);
        crate::metrics::dropped_events("system", 1);
    }

    /// A client dropped because too many pushes were waiting for it.
    pub(crate) fn count_dropped_client(&self, transport: Transport) {
        self.dropped_clients.fetch_add(1, Ordering::Relaxed);
        crate::metrics::slow_consumer(transport, "queue-full");
    }

    /// A WebSocket's send queue reached `n` events: a new high-water mark is reported.
    pub(crate) fn pending_sends(&self, n: usize) {
        if n > self.pending_max.load(Ordering::Relaxed)
            && self.pending_max.fetch_max(n, Ordering::Relaxed) < n
        {
            crate::metrics::pending_max(n);
        }
    }

    pub(crate) fn meters(&self) -> &Arc<Meters> {
        &self.meters
    }

    /// The metric handles of a connection or request over `transport` with `packer`.
    pub(crate) fn conn_metrics(
        &self,
        transport: Transport,
        packer: &'static str,
    ) -> crate::metrics::ConnMetrics {
        self.conn_metrics.get(transport, packer, &self.meters)
    }

    pub(crate) fn stats(&self) -> Stats {
        let m = &self.meters;
        Stats {
            ws_connections: m.ws_connections(),
            ajax_polls: m.ajax_polls(),
            events_in: m.events_in_total(),
            events_out: m.events_out_total(),
            replies: m.latency(),
            rejected_requests: m.rejected_total(),
            dropped_system_events: self.dropped_system.load(Ordering::Relaxed),
            dropped_push_events: self.dropped_push.load(Ordering::Relaxed),
            dropped_clients: self.dropped_clients.load(Ordering::Relaxed),
        }
    }

    /// Whether this node serves new clients: its backplane has joined the cluster
    /// ([`Backplane::joined`]), or `join_wait` has passed since the server was built (it then
    /// serves without the cluster, as during an outage, and says so once). Until then new
    /// clients' requests are held (see [`Registry::wait_joined`]): a client served before
    /// would miss the pushes of the other nodes.
    pub(crate) fn joined(&self) -> bool {
        *self.serving.borrow()
    }

    /// Resolves once [`Registry::joined`] (at most `join_wait` after the server was built).
    pub(crate) async fn wait_joined(&self) {
        let mut rx = self.serving.subscribe();
        let _ = rx.wait_for(|serving| *serving).await;
    }

    /// Whether the server is shutting down (new handshakes and polls are refused).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Whether the shutdown is complete (every request is refused).
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Counts a connection or request in progress until the guard is dropped.
    pub(crate) fn live(self: &Arc<Self>) -> LiveGuard {
        self.live.fetch_add(1, Ordering::AcqRel);
        LiveGuard(self.clone())
    }

    /// Counts a reply a handler owes (on this node, and on the WebSocket `outbox` it goes to)
    /// until the guard is dropped (the reply was sent, or given up).
    pub(crate) fn reply_owed(self: &Arc<Self>, outbox: Option<&Arc<Outbox>>) -> ReplyOwed {
        self.replies.fetch_add(1, Ordering::AcqRel);
        if let Some(o) = outbox {
            o.owe();
        }
        ReplyOwed {
            registry: self.clone(),
            outbox: outbox.cloned(),
        }
    }

    /// Drains and stops this node, in phases (each logged at info, and `sente_drain_phase`),
    /// paced by its [`Lifecycle`] `t`:
    ///
    /// 1. Draining: new handshakes and polls are refused `503` (with `Retry-After`), while the
    ///    clients already here are served as before (their WebSocket events and Ajax POSTs are
    ///    handled and answered); waits until every reply owed by a handler was sent, at most
    ///    `t.drain`.
    /// 2. Closing clients: every uid is flushed (what is buffered is sent), then its clients
    ///    are let go (spread over `t.stagger`): a WebSocket is closed after its queued pushes
    ///    and replies; a held Ajax poll is answered empty, so the client polls again elsewhere.
    /// 3. Waiting for every connection and request to end, at most `t.timeout` from the start.
    /// 4. Stopped: every request is refused `503` and the handlers are let go.
    pub(crate) async fn shutdown(&self) {
        let t = self.lifecycle;
        if self.closing.swap(true, Ordering::AcqRel) {
            self.wait_idle(t.timeout).await;
            return;
        }
        let started = Instant::now();
        let deadline = started + t.timeout;
        crate::metrics::drain_phase(1);
        tracing::info!(
            replies = self.replies.load(Ordering::Acquire),
            live = self.live.load(Ordering::Acquire),
            "shutdown: draining (new handshakes and polls refused, in-flight replies finishing)"
        );
        self.wait_replies(t.drain.min(t.timeout)).await;
        let mut uids: Vec<Uid> = Vec::new();
        for i in 0..self.cores.len() {
            uids.extend(self.cores.lock(i).uids().cloned());
        }
        crate::metrics::drain_phase(2);
        tracing::info!(
            uids = uids.len(),
            replies = self.replies.load(Ordering::Acquire),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shutdown: closing clients"
        );
        // Evenly over the stagger, in steps at least 10 ms apart (several uids per step when
        // there are more uids than steps).
        const MIN_STEP: Duration = Duration::from_millis(10);
        let max_steps = (t.stagger.as_millis() / MIN_STEP.as_millis()).max(1) as usize;
        let steps = uids.len().clamp(1, max_steps);
        let per_step = uids.len().div_ceil(steps).max(1);
        let step = t.stagger / u32::try_from(steps).unwrap_or(u32::MAX);
        let first = Instant::now();
        for (i, chunk) in uids.chunks(per_step).enumerate() {
            if i > 0 {
                tokio::time::sleep_until(first + step * u32::try_from(i).unwrap_or(u32::MAX)).await;
            }
            for (i, part) in self.cores.partition(chunk).iter().enumerate() {
                if !part.is_empty() {
                    self.with_shard(i, |c, now| {
                        for uid in part {
                            c.release_uid(uid, now);
                        }
                    });
                }
            }
        }
        crate::metrics::drain_phase(3);
        tracing::info!(
            live = self.live.load(Ordering::Acquire),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shutdown: waiting for connections to end"
        );
        self.wait_idle(deadline.saturating_duration_since(Instant::now()))
            .await;
        self.stopped.store(true, Ordering::Release);
        crate::metrics::drain_phase(4);
        tracing::info!(
            live = self.live.load(Ordering::Acquire),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shutdown: stopped"
        );
        let hooks = std::mem::take(
            &mut *self
                .on_shutdown
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for f in hooks {
            f();
        }
        for t in &self.timers {
            t.driver.notify_one();
        }
    }

    async fn wait_idle(&self, timeout: Duration) {
        wait_zero(&self.live, &self.idle, timeout).await;
    }

    async fn wait_replies(&self, timeout: Duration) {
        wait_zero(&self.replies, &self.replies_done, timeout).await;
    }
}

/// Waits until `count` is zero (`zero` is notified when it gets there), at most `timeout`.
async fn wait_zero(count: &AtomicUsize, zero: &Notify, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        loop {
            let notified = zero.notified();
            if count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    })
    .await;
}

/// A connection or request in progress (see [`Registry::live`]).
pub(crate) struct LiveGuard(Arc<Registry>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A reply a handler owes (see [`Registry::reply_owed`]).
pub(crate) struct ReplyOwed {
    registry: Arc<Registry>,
    outbox: Option<Arc<Outbox>>,
}

impl std::fmt::Debug for ReplyOwed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyOwed")
    }
}

impl Drop for ReplyOwed {
    fn drop(&mut self) {
        if let Some(o) = &self.outbox {
            o.settle();
        }
        if self.registry.replies.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.registry.replies_done.notify_waiters();
        }
    }
}

/// Which shards a backplane message concerns (see [`Registry::parts`]).
enum Parts<'a> {
    /// The shard of its one uid.
    One(usize),
    /// Its uids, by shard.
    Some(Vec<Vec<&'a Uid>>),
    /// Every shard (a broadcast).
    All,
}

impl<'a> Parts<'a> {
    /// Whether shard `i` has anything to apply.
    fn has(&self, i: usize) -> bool {
        match self {
            Parts::One(j) => *j == i,
            Parts::Some(p) => !p[i].is_empty(),
            Parts::All => true,
        }
    }

    /// What shard `i` applies: `None` for the message as it is, or the uids of the message
    /// that live in the shard (possibly none: a push then only counts in the shard's view of
    /// the cluster sequence).
    fn of(&self, i: usize) -> Option<&[&'a Uid]> {
        match self {
            Parts::One(j) if *j != i => Some(&[]),
            Parts::Some(p) => Some(&p[i]),
            _ => None,
        }
    }
}

/// Applies a push, flush or close to a shard, numbered `seq` by the cluster (or not). With
/// `only`, to those uids of the message only (the shard's part of it; none: the shard just
/// counted the number).
fn apply_push(
    c: &mut ServerCore,
    msg: &BackplaneMsg,
    only: Option<&[&Uid]>,
    seq: Option<u64>,
    now: u64,
) {
    if let Some(uids) = only {
        if let BackplaneMsg::Push {
            event,
            estimate,
            flush,
            ..
        }
        | BackplaneMsg::PushMany {
            event,
            estimate,
            flush,
            ..
        } = msg
        {
            c.send_many_seq(uids.iter().copied(), event, *estimate, *flush, now, seq);
        }
        return;
    }
    match msg {
        BackplaneMsg::Push {
            uid,
            event,
            estimate,
            flush,
        } => c.send_many_seq(std::iter::once(uid), event, *estimate, *flush, now, seq),
        BackplaneMsg::PushMany {
            uids,
            event,
            estimate,
            flush,
        } => c.send_many_seq(uids.iter(), event, *estimate, *flush, now, seq),
        BackplaneMsg::Broadcast {
            event,
            estimate,
            flush,
        } => c.broadcast_seq(event, *estimate, *flush, now, seq),
        BackplaneMsg::PushClient {
            uid,
            client_id,
            event,
            estimate,
        } => {
            c.send_to_client_seq(uid, client_id, event, *estimate, now, seq);
        }
        BackplaneMsg::Flush { uid } => c.flush(uid, now),
        BackplaneMsg::CloseUid { uid } => c.close_uid(uid, now),
        _ => {}
    }
}

fn set(s: &mut HashSet<Uid>, uid: &Uid, member: bool) -> bool {
    if member {
        if s.contains(uid) {
            false
        } else {
            s.insert(uid.clone())
        }
    } else {
        s.remove(uid)
    }
}

/// A uidport event waiting for the backplane's decision.
pub(crate) struct PendingUidport {
    decision: BoxFuture<UidportDecision>,
    open: bool,
    uid: Uid,
    client_id: ClientId,
    ctx: ConnCtx,
}

/// Fires the uidport events the backplane decided, in the order they were asked for.
async fn run_uidport_decisions(
    weak: Weak<Registry>,
    mut pending: mpsc::UnboundedReceiver<PendingUidport>,
) {
    while let Some(p) = pending.recv().await {
        let d = p.decision.await;
        let Some(r) = weak.upgrade() else { return };
        if d.close_stale {
            r.system_event(false, p.uid.clone(), p.client_id.clone(), p.ctx.clone());
        }
        if d.fire {
            r.system_event(p.open, p.uid, p.client_id, p.ctx);
        }
    }
}

/// The timers of shard `shard`: sleeps until its next deadline (or a wake-up), then polls it.
async fn run_timers(weak: Weak<Registry>, shard: usize, notify: Arc<Notify>) {
    loop {
        let deadline = {
            let Some(r) = weak.upgrade() else { return };
            let next = r.with_shard(shard, |c, now| {
                c.poll(now);
                let next = c.next_deadline().unwrap_or(u64::MAX);
                // Stored under the shard's lock: whoever adds an earlier deadline afterwards
                // sees it and wakes us.
                r.timers[shard].armed.store(next, Ordering::Release);
                next
            });
            (next != u64::MAX).then(|| r.instant(next))
        };
        match deadline {
            Some(d) => {
                tokio::select! {
                    () = tokio::time::sleep_until(d) => {}
                    () = notify.notified() => {}
                }
            }
            None => notify.notified().await,
        }
    }
}
