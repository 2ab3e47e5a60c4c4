//! The [`Server`] handle, its shared state, the timer task and the [`EventStream`].

use crate::backplane::{Backplane, BackplaneMsg, LocalBackplane};
use crate::config::{Builder, CsrfFn, PredFn, RejectFn, RespFn, UserIdFn, ValueFn};
use crate::msg::EventMsg;
use crate::request::ChskRequest;
use crate::router::Router;
use crate::security::AllowedOrigins;
use crate::ws::Outbox;
use futures_util::task::AtomicWaker;
use sente_proto::server::{
    Action, Core, CoreEvent, PollAnswer, ServerLimits, Transport, estimate_event_size,
};
use sente_proto::{Event, EventId, Packer, Uid, Value, ids};
use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

pub use sente_proto::server::SendError;

/// The uids with at least one connection (Sente's `connected-uids`), with the grace periods of
/// spec 7.4: a uid stays for `ms_allow_reconnect_before_close_*` after its last connection ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectedUids {
    /// Uids with a WebSocket client.
    pub ws: HashSet<Uid>,
    /// Uids with an Ajax client that has long-polled (a handshake alone does not count).
    pub ajax: HashSet<Uid>,
    /// The union.
    pub any: HashSet<Uid>,
}

/// Counters of what the server dropped (each drop is also logged with `tracing::warn!`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Server-synthesized events (uidport) dropped because the event stream was full.
    pub dropped_system_events: u64,
    /// Pushed events dropped because a batch could not be packed within the message limit.
    pub dropped_push_events: u64,
    /// Clients dropped because too many pushes were waiting for them.
    pub dropped_clients: u64,
}

/// The per-connection context kept by the core (returned with uidport events).
#[derive(Clone, Debug)]
pub(crate) struct ConnCtx {
    pub(crate) request: Arc<ChskRequest>,
    pub(crate) transport: Transport,
}

pub(crate) type Responder = oneshot::Sender<PollAnswer>;
pub(crate) type ServerCore = Core<Arc<Outbox>, Responder, ConnCtx>;

/// Server-synthesized events waiting for the [`EventStream`] (they never block the server).
#[derive(Debug, Default)]
pub(crate) struct SystemQueue {
    q: Mutex<VecDeque<EventMsg>>,
    waker: AtomicWaker,
}

impl SystemQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<EventMsg>> {
        self.q
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The events of all clients, in arrival order per connection (Sente's `ch-recv`).
///
/// Bounded (`recv_buf`, default 1 000). Overflow policy: backpressure. When it is full, a
/// WebSocket connection stops reading until there is room (so TCP pushes back on that client) and
/// an Ajax POST waits; nothing is dropped. Server-synthesized `chsk/uidport-*` events never block
/// the server: beyond `recv_buf` of them waiting, they are dropped, counted in [`Stats`] and
/// logged with `tracing::warn!`.
///
/// Once a [`Router`] runs the stream (with [`Concurrency::PerClient`](crate::Concurrency), the
/// default, or `Concurrent`), WebSocket events no longer pass through it: each connection runs
/// the router's handlers itself, and stops reading while 64 of its events wait behind a running
/// handler. Ajax events and the server's own events still come through the stream.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<EventMsg>,
    system: Arc<SystemQueue>,
    server: Weak<Inner>,
}

impl futures_util::Stream for EventStream {
    type Item = EventMsg;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EventMsg>> {
        if let Some(m) = self.system.lock().pop_front() {
            return Poll::Ready(Some(m));
        }
        self.system.waker.register(cx.waker());
        if let Some(m) = self.system.lock().pop_front() {
            return Poll::Ready(Some(m));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => Poll::Ready(self.system.lock().pop_front()),
            other => other,
        }
    }
}

impl EventStream {
    /// The next event (`None` once the server and all its connections are gone).
    pub async fn recv(&mut self) -> Option<EventMsg> {
        futures_util::StreamExt::next(self).await
    }

    /// Lets WebSocket connections run `router`'s handlers themselves (the first router wins).
    pub(crate) fn attach(&self, router: &Arc<Router>) {
        if let Some(inner) = self.server.upgrade() {
            let _ = inner.router.set(router.clone());
        }
    }
}

pub(crate) struct Inner {
    pub(crate) user_id_fn: UserIdFn,
    pub(crate) csrf_token_fn: Option<CsrfFn>,
    pub(crate) allowed_origins: AllowedOrigins,
    pub(crate) authorized_fn: Option<PredFn>,
    pub(crate) unauthorized_fn: RespFn,
    pub(crate) bad_csrf_fn: RespFn,
    pub(crate) bad_origin_fn: RespFn,
    pub(crate) reject_fn: Option<RejectFn>,
    pub(crate) handshake_data_fn: ValueFn,
    pub(crate) ws_kalive_ms: Option<u64>,
    pub(crate) ws_ping_timeout_ms: Option<u64>,
    pub(crate) lp_timeout_ms: u64,
    pub(crate) packer: Arc<dyn Packer>,
    limits: ServerLimits,
    recv_buf: usize,
    core: Mutex<ServerCore>,
    start: Instant,
    driver: Arc<Notify>,
    armed: AtomicU64,
    pub(crate) events_tx: mpsc::Sender<EventMsg>,
    /// The router attached by [`Router::run`], whose handlers WebSocket connections run.
    pub(crate) router: OnceLock<Arc<Router>>,
    system: Arc<SystemQueue>,
    connected: watch::Sender<ConnectedUids>,
    backplane: Arc<dyn Backplane>,
    pub(crate) pending_replies: Mutex<HashMap<sente_proto::ClientId, usize>>,
    /// One instance per packer name, so a batch is packed once per packer (the pack cache of a
    /// batch is keyed by packer instance).
    packers: Mutex<Vec<Arc<dyn Packer>>>,
    dropped_system: AtomicU64,
    dropped_push: AtomicU64,
    dropped_clients: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.driver.notify_one();
    }
}

/// A reserved `chsk/*` event (server-synthesized).
pub(crate) fn reserved_event(id: &'static str, data: Value) -> Event {
    let id = EventId::new(id).unwrap_or_else(|_| unreachable!("reserved ids are valid"));
    Event::new(id, data)
}

impl Inner {
    /// The packer named `name`: the default one, or a shared instance from `packer::by_name`.
    pub(crate) fn packer_named(&self, name: &str) -> Option<Arc<dyn Packer>> {
        if name == self.packer.name() {
            return Some(self.packer.clone());
        }
        let mut cache = self
            .packers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = cache.iter().find(|p| p.name() == name) {
            return Some(p.clone());
        }
        let p = sente_proto::packer::by_name(name)?;
        if p.name() != name {
            return Some(p); // names that differ from the packer's own name are not cached
        }
        cache.push(p.clone());
        Some(p)
    }

    pub(crate) fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// Milliseconds since the server started (the core's clock).
    pub(crate) fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub(crate) fn instant(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Runs `f` on the core, then executes what it asked for while still holding the core, so
    /// deliveries of successive flushes can never be reordered.
    pub(crate) fn with_core<R>(&self, f: impl FnOnce(&mut ServerCore, u64) -> R) -> R {
        let now = self.now();
        let mut core = self
            .core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = f(&mut core, now);
        self.execute(&mut core, now);
        let next = core.next_deadline().unwrap_or(u64::MAX);
        drop(core);
        if next < self.armed.load(Ordering::Acquire) {
            self.driver.notify_one();
        }
        r
    }

    fn execute(&self, core: &mut ServerCore, now: u64) {
        for action in core.take_actions() {
            match action {
                Action::WsDeliver { conn, batch } => {
                    conn.push_batch(batch);
                }
                Action::WsClose { conn, reason } => conn.push_close(reason),
                Action::AjaxAnswer {
                    uid,
                    client_id,
                    conn,
                    responder,
                    answer,
                } => {
                    if let Err(answer) = responder.send(answer) {
                        core.handle_poll_undeliverable(&uid, &client_id, conn, answer, now);
                    }
                }
            }
        }
        for ev in core.take_events() {
            match ev {
                CoreEvent::Presence { uid, ws, ajax } => {
                    self.connected.send_modify(|c| {
                        set(&mut c.ws, &uid, ws);
                        set(&mut c.ajax, &uid, ajax);
                        set(&mut c.any, &uid, ws || ajax);
                    });
                }
                CoreEvent::UidportOpen {
                    uid,
                    client_id,
                    ctx,
                } => {
                    tracing::debug!(%uid, %client_id, "uidport open");
                    self.system_event(ids::UIDPORT_OPEN, uid, client_id, ctx);
                }
                CoreEvent::UidportClose {
                    uid,
                    client_id,
                    ctx,
                } => {
                    tracing::debug!(%uid, %client_id, "uidport close");
                    self.system_event(ids::UIDPORT_CLOSE, uid, client_id, ctx);
                }
                CoreEvent::ClientDropped {
                    uid,
                    client_id,
                    transport,
                } => {
                    self.dropped_clients.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%uid, %client_id, transport = transport.as_str(),
                        "client dropped: too many pushes waiting for it");
                }
            }
        }
    }

    fn system_event(
        &self,
        id: &'static str,
        uid: Uid,
        client_id: sente_proto::ClientId,
        ctx: ConnCtx,
    ) {
        let msg = EventMsg {
            event: reserved_event(id, uid.to_value()),
            uid,
            client_id,
            transport: ctx.transport,
            reply: None,
            request: ctx.request,
        };
        let mut q = self.system.lock();
        if q.len() >= self.recv_buf {
            drop(q);
            self.dropped_system.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(event = id, "event stream full: server event dropped");
            return;
        }
        q.push_back(msg);
        drop(q);
        self.system.waker.wake();
    }

    pub(crate) fn count_dropped_push(&self, e: &sente_proto::PackError, events: usize) {
        self.dropped_push
            .fetch_add(events as u64, Ordering::Relaxed);
        tracing::warn!(error = %e, events, "pushed batch could not be packed; dropped");
    }

    /// Applies a message from the backplane to this node's connections.
    pub(crate) fn apply(&self, msg: BackplaneMsg) {
        match msg {
            BackplaneMsg::Push {
                uid,
                event,
                estimate,
                flush,
            } => {
                self.with_core(|c, now| c.send(&uid, &event, estimate, flush, now));
            }
            BackplaneMsg::PushMany {
                uids,
                event,
                estimate,
                flush,
            } => {
                self.with_core(|c, now| c.send_many(uids.iter(), &event, estimate, flush, now));
            }
            BackplaneMsg::CloseUid { uid } => self.with_core(|c, now| c.close_uid(&uid, now)),
        }
    }
}

fn set(s: &mut HashSet<Uid>, uid: &Uid, member: bool) {
    if member {
        if !s.contains(uid) {
            s.insert(uid.clone());
        }
    } else {
        s.remove(uid);
    }
}

async fn driver(weak: Weak<Inner>, notify: Arc<Notify>) {
    loop {
        let deadline = {
            let Some(inner) = weak.upgrade() else { return };
            let next = inner.with_core(|c, now| {
                c.poll(now);
                let next = c.next_deadline().unwrap_or(u64::MAX);
                // Stored under the core's lock: whoever adds an earlier deadline afterwards
                // sees it and wakes us.
                inner.armed.store(next, Ordering::Release);
                next
            });
            (next != u64::MAX).then(|| inner.instant(next))
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

/// A running Sente server: a cheap, clonable handle. Mount its service with
/// [`Server::router`] (axum) or [`Server::service_at`] (any tower / hyper stack).
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("packer", &self.inner.packer.name())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A builder with Sente's defaults (spec 7.1) and secure checks on.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn start(b: Builder) -> (Server, EventStream) {
        let (events_tx, rx) = mpsc::channel(b.recv_buf);
        let system = Arc::new(SystemQueue::default());
        let notify = Arc::new(Notify::new());
        let backplane: Arc<dyn Backplane> = b
            .backplane
            .unwrap_or_else(|| Arc::new(LocalBackplane::new()));
        let inner = Arc::new(Inner {
            user_id_fn: b.user_id_fn,
            csrf_token_fn: b.csrf_token_fn,
            allowed_origins: b.allowed_origins,
            authorized_fn: b.authorized_fn,
            unauthorized_fn: b.unauthorized_fn,
            bad_csrf_fn: b.bad_csrf_fn,
            bad_origin_fn: b.bad_origin_fn,
            reject_fn: b.reject_fn,
            handshake_data_fn: b.handshake_data_fn,
            ws_kalive_ms: b.ws_kalive_ms,
            ws_ping_timeout_ms: b.ws_ping_timeout_ms,
            lp_timeout_ms: b.core.lp_timeout_ms,
            packer: b.packer.unwrap_or_else(|| unreachable!("checked by build")),
            limits: b.core.limits.clone(),
            recv_buf: b.recv_buf,
            core: Mutex::new(Core::new(b.core)),
            start: Instant::now(),
            driver: notify.clone(),
            armed: AtomicU64::new(u64::MAX),
            events_tx,
            router: OnceLock::new(),
            system: system.clone(),
            connected: watch::Sender::new(ConnectedUids::default()),
            backplane: backplane.clone(),
            pending_replies: Mutex::new(HashMap::new()),
            packers: Mutex::new(Vec::new()),
            dropped_system: AtomicU64::new(0),
            dropped_push: AtomicU64::new(0),
            dropped_clients: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        let from_backplane = weak.clone();
        backplane.subscribe(Arc::new(move |msg| {
            if let Some(inner) = from_backplane.upgrade() {
                inner.apply(msg);
            }
        }));
        tokio::spawn(driver(weak.clone(), notify));
        (
            Server { inner },
            EventStream {
                rx,
                system,
                server: weak,
            },
        )
    }

    fn prepare(&self, event: &Event) -> Result<usize, SendError> {
        if event.id().is_reserved() {
            return Err(SendError::Reserved(event.id().clone()));
        }
        let limit = self.inner.limits.message.max_message_bytes;
        let estimate = estimate_event_size(event, limit);
        if estimate > limit {
            return Err(SendError::TooLarge { estimate, limit });
        }
        Ok(estimate)
    }

    fn push(&self, uid: &Uid, event: Event, flush: bool) -> Result<(), SendError> {
        if event.id().as_str() == ids::CLOSE {
            if flush {
                self.flush(uid);
            }
            self.close_uid(uid);
            return Ok(());
        }
        let estimate = self.prepare(&event)?;
        self.inner.backplane.publish(BackplaneMsg::Push {
            uid: uid.clone(),
            event: Arc::new(event),
            estimate,
            flush,
        });
        Ok(())
    }

    /// Pushes `event` to every client of `uid` (Sente's `send-fn`), batched with the other
    /// pushes to that uid within `send_buf_ms_ws` / `send_buf_ms_ajax`. Pushes reach each client
    /// in the order of the calls, across batches and flushes. `Uid::AllWithoutUid` reaches every
    /// anonymous client. `[:chsk/close]` closes the uid's connections (see [`Server::close_uid`]).
    ///
    /// Errors: a reserved `chsk/*` event, or an event over the message size limit.
    pub fn send(&self, uid: &Uid, event: Event) -> Result<(), SendError> {
        self.push(uid, event, false)
    }

    /// Like [`Server::send`], then sends the uid's buffered pushes at once (`{:flush? true}`).
    pub fn send_flush(&self, uid: &Uid, event: Event) -> Result<(), SendError> {
        self.push(uid, event, true)
    }

    /// Pushes one event to every uid of `uids` (their batching windows apply), in the order of
    /// the calls per uid like [`Server::send`]. The event is shared, and uids whose batches hold
    /// the same events are flushed together, so a broadcast is packed once per packer rather than
    /// once per uid or client. One backplane message carries all the uids.
    ///
    /// Errors: as [`Server::send`] (nothing is sent). A `[:chsk/close]` event closes every uid.
    pub fn send_many<'a>(
        &self,
        uids: impl IntoIterator<Item = &'a Uid>,
        event: Event,
    ) -> Result<(), SendError> {
        self.push_many(uids, event, false)
    }

    /// Like [`Server::send_many`], then sends each uid's buffered pushes at once
    /// (`{:flush? true}` for every uid). Still packed once per distinct batch and packer: the
    /// uids with nothing else buffered share one batch.
    pub fn send_many_flush<'a>(
        &self,
        uids: impl IntoIterator<Item = &'a Uid>,
        event: Event,
    ) -> Result<(), SendError> {
        self.push_many(uids, event, true)
    }

    /// Pushes one event to every connected uid (`connected_uids().any`), like
    /// [`Server::send_many`]. Sente has no broadcast primitive; this is its idiom, made cheap.
    pub fn broadcast(&self, event: Event) -> Result<(), SendError> {
        self.broadcast_with(event, false)
    }

    /// [`Server::broadcast`] with a flush, like [`Server::send_many_flush`].
    pub fn broadcast_flush(&self, event: Event) -> Result<(), SendError> {
        self.broadcast_with(event, true)
    }

    fn broadcast_with(&self, event: Event, flush: bool) -> Result<(), SendError> {
        let uids: Vec<Uid> = self.inner.connected.borrow().any.iter().cloned().collect();
        self.push_many(&uids, event, flush)
    }

    fn push_many<'a>(
        &self,
        uids: impl IntoIterator<Item = &'a Uid>,
        event: Event,
        flush: bool,
    ) -> Result<(), SendError> {
        if event.id().as_str() == ids::CLOSE {
            for uid in uids {
                self.push(uid, event.clone(), flush)?;
            }
            return Ok(());
        }
        let estimate = self.prepare(&event)?;
        let uids: Arc<[Uid]> = uids.into_iter().cloned().collect();
        if uids.is_empty() {
            return Ok(());
        }
        self.inner.backplane.publish(BackplaneMsg::PushMany {
            uids,
            event: Arc::new(event),
            estimate,
            flush,
        });
        Ok(())
    }

    /// Sends what is buffered for `uid` now.
    pub fn flush(&self, uid: &Uid) {
        self.inner.with_core(|c, now| c.flush(uid, now));
    }

    /// Closes every connection of `uid` (Sente's `send-fn uid [:chsk/close]`) after what is
    /// already queued for them: WebSockets get close code 1000; a held Ajax poll is answered
    /// `410 Gone`, so the client reconnects with a new handshake. Clients come back (this is a
    /// kick, not a ban: refuse them in `authorized_fn` to keep them out).
    pub fn close_uid(&self, uid: &Uid) {
        self.inner
            .backplane
            .publish(BackplaneMsg::CloseUid { uid: uid.clone() });
    }

    /// The connected uids, as a watch channel updated on every change.
    pub fn connected_uids(&self) -> watch::Receiver<ConnectedUids> {
        self.inner.connected.subscribe()
    }

    /// The limits in force.
    pub fn limits(&self) -> &ServerLimits {
        &self.inner.limits
    }

    /// The default packer (for connections without a `packer` parameter).
    pub fn packer(&self) -> &Arc<dyn Packer> {
        &self.inner.packer
    }

    /// What the server dropped so far.
    pub fn stats(&self) -> Stats {
        Stats {
            dropped_system_events: self.inner.dropped_system.load(Ordering::Relaxed),
            dropped_push_events: self.inner.dropped_push.load(Ordering::Relaxed),
            dropped_clients: self.inner.dropped_clients.load(Ordering::Relaxed),
        }
    }
}
