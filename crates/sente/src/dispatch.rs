//! The one dispatch path: every event, from a WebSocket, an Ajax POST or the server itself
//! (`chsk/uidport-*`), reaches the application's [`Dispatch`] implementation (a
//! [`Router`](crate::Router), an [`EventStream`](crate::EventStream), or your own), registered
//! on the builder before the server serves anything, and scheduled by its [`Concurrency`].
//!
//! A WebSocket connection runs its events' handlers on its own task ([`InlineRunner`]); the
//! events of Ajax POSTs and of the server go through a small queue per client, run by a task
//! that exists only while that client has events. Every queue is bounded: a client whose
//! handlers fall behind is the only one that waits (its WebSocket stops reading; its Ajax POSTs
//! get `429`), never the others.

use crate::handle::ServerHandle;
use crate::msg::EventMsg;
use crate::registry::SystemEvent;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sente_proto::ClientId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// The span of one connection (`sente.conn`, info, target `sente::ws` or `sente::ajax`): uid,
/// client id, transport and packer; never the CSRF token or payloads.
pub(crate) fn conn_span(
    uid: &sente_proto::Uid,
    client_id: &ClientId,
    transport: sente_proto::Transport,
    packer: &str,
) -> tracing::Span {
    // A span's target is part of its static call site: one call site per transport.
    macro_rules! span {
        ($target:literal) => {
            tracing::info_span!(
                target: $target,
                "sente.conn",
                uid = %uid,
                client_id = %client_id,
                transport = transport.as_str(),
                packer = packer
            )
        };
    }
    match transport {
        sente_proto::Transport::Ws => span!("sente::ws"),
        sente_proto::Transport::Ajax => span!("sente::ajax"),
    }
}

/// Runs the handler of one event in its span (`sente.event`, debug, target `sente::dispatch`:
/// the event id, uid, client id and transport; never the payload). Without a subscriber that
/// wants it, the handler's future is returned as is.
fn traced(h: &Arc<dyn Dispatch>, mut msg: EventMsg) -> BoxFuture<'static, ()> {
    let span = tracing::debug_span!(
        "sente.event",
        id = %msg.id(),
        uid = %msg.uid,
        client_id = %msg.client_id,
        transport = msg.transport.as_str()
    );
    let fut = match msg.claim.take() {
        None => h.dispatch(msg),
        // A retried request's copy runs only if the cluster says nobody ran it.
        Some(claim) => {
            let h = h.clone();
            async move {
                match claim.decide().await {
                    None => h.dispatch(msg).await,
                    Some(outcome) => crate::idem::answer_elsewhere(msg, outcome),
                }
            }
            .boxed()
        }
    };
    if span.is_disabled() {
        fut
    } else {
        tracing::Instrument::instrument(fut, span).boxed()
    }
}

/// Handles the events of every client: implemented by [`Router`](crate::Router) and by the
/// sender side of an [`EventStream`](crate::EventStream); implement it to plug in your own
/// dispatch. Registered with [`Builder::handler`](crate::Builder::handler).
pub trait Dispatch: Send + Sync + 'static {
    /// Handles one event. The future runs on the client's WebSocket task, on its Ajax queue's
    /// task, or in a task of its own, per [`Dispatch::concurrency`].
    fn dispatch(&self, msg: EventMsg) -> BoxFuture<'static, ()>;

    /// Whether this event would be handled at all. An event that is not handled and asks for no
    /// reply is not scheduled (an idle client costs no queue). Default: every event.
    fn handles(&self, msg: &EventMsg) -> bool {
        let _ = msg;
        true
    }

    /// How events are scheduled (default [`Concurrency::PerClient`] with a 1 s
    /// [`Budget`]).
    fn concurrency(&self) -> Concurrency {
        Concurrency::default()
    }
}

/// How handlers run.
///
/// The default, [`Concurrency::PerClient`] with [`Budget::default`], is what users of Sente and
/// Socket.IO expect from a chat-like app: a client's events start in the order they arrived,
/// and a quick handler (most of them: they reply or push and return) finishes before the next
/// event of that client starts, so replies and side effects keep the client's order. A handler
/// that takes longer than the budget (default 1 s: waiting on a slow service, or never
/// replying) stops holding that client's later events: it goes on in a task of its own and the
/// next event starts, so one slow request does not stall the client's unrelated ones until its
/// timeout. Choose [`Concurrency::PerClientSerial`] when every event of a client must wait for
/// the previous one to finish, however long it takes.
///
/// Why a time budget rather than an order per (client, event id): with one queue per event id,
/// a handler that never answers would still hold every later event with the same id (every
/// `chat/send` of that tab), and events of different ids that a client sends in order (save,
/// then load) could be handled in the other order. The budget keeps the client's order in the
/// common case and bounds the wait in the bad one, at the cost of one timer per handler that
/// does not finish at its first poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Concurrency {
    /// The events of one client start in arrival order, each once the previous one finished or
    /// ran past the [`Budget`]; different clients run concurrently. The default, with
    /// [`Budget::default`] (1 s, at most 16 handlers per client past it). A WebSocket
    /// connection runs its own events' handlers in its task (no hand-off to another task);
    /// Ajax and server events run in a per-client task; a handler past its budget moves to a
    /// task of its own.
    PerClient(Budget),
    /// The events of one client run strictly one after the other, in arrival order, each
    /// waiting for the previous handler to finish however long it takes (a handler that never
    /// finishes holds the client's later events until its own timeout, or forever); different
    /// clients run concurrently. For apps whose handlers must never overlap per client.
    PerClientSerial,
    /// Every event runs after the previous one finished, whatever its client (Sente's default
    /// go-loop), through one queue of `recv_buf` events.
    Sequential,
    /// Every event runs in its own task, with no order (Sente's `:simple-auto-threading?`).
    Concurrent,
}

impl Default for Concurrency {
    /// [`Concurrency::PerClient`] with [`Budget::default`].
    fn default() -> Self {
        Concurrency::PerClient(Budget::default())
    }
}

impl Concurrency {
    /// [`Concurrency::PerClient`] with `time` as the budget of one handler (and the default
    /// [`Budget::max_detached`]).
    pub fn per_client(time: std::time::Duration) -> Self {
        Concurrency::PerClient(Budget {
            time,
            ..Budget::default()
        })
    }

    fn budget(self) -> Option<Budget> {
        match self {
            Concurrency::PerClient(b) => Some(b),
            _ => None,
        }
    }
}

/// How long one handler may hold its client's later events under [`Concurrency::PerClient`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Budget {
    /// A handler still running this long after it started no longer holds the client's next
    /// events: it goes on in a task of its own (nothing is cancelled) and the next event
    /// starts. Default 1 s.
    pub time: std::time::Duration,
    /// At most this many handlers of one client go on past their budget at once (default 16).
    /// When that many are still running, the client's next events wait for the running
    /// handler to finish, as with [`Concurrency::PerClientSerial`]: a client sending slow
    /// requests in a loop cannot start unbounded work.
    pub max_detached: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            time: std::time::Duration::from_secs(1),
            max_detached: 16,
        }
    }
}

impl Budget {
    /// A budget of `time` per handler, at most `max_detached` handlers per client past it.
    pub fn new(time: std::time::Duration, max_detached: usize) -> Self {
        Budget { time, max_detached }
    }
}

/// How many events of one client may wait behind its running handler: a WebSocket stops
/// reading (TCP then pushes back on the client), an Ajax POST gets `429`.
pub(crate) const CLIENT_BACKLOG: usize = 64;

/// The handler's events could not be queued: the client's queue (or the sequential queue) is
/// full.
#[derive(Debug)]
pub(crate) struct Busy;

/// Schedules events onto the application's [`Dispatch`].
pub(crate) struct Dispatcher {
    handler: RwLock<Option<Arc<dyn Dispatch>>>,
    concurrency: Concurrency,
    /// Per client: the events waiting behind its running Ajax/server event (present while its
    /// task runs).
    queues: Mutex<HashMap<ClientId, VecDeque<EventMsg>>>,
    sequential: Option<mpsc::Sender<EventMsg>>,
    /// Per client: its handlers running past their [`Budget`] in tasks of their own (present
    /// while there are any).
    detached: Mutex<HashMap<ClientId, usize>>,
    /// The dedupe window of idempotent client requests ([`crate::idem`]), and the cluster's
    /// when the backplane has one.
    idem: Arc<crate::idem::Window>,
    cluster_idem: Option<crate::claim::ClusterIdem>,
    server: ServerHandle,
}

impl Dispatcher {
    /// A dispatcher for `handler` (none: events are dropped, replies time out). `recv_buf`
    /// bounds the sequential queue.
    pub(crate) fn new(
        handler: Option<Arc<dyn Dispatch>>,
        recv_buf: usize,
        server: ServerHandle,
    ) -> Arc<Self> {
        let concurrency = handler
            .as_ref()
            .map_or(Concurrency::default(), |h| h.concurrency());
        let (sequential, rx) = if concurrency == Concurrency::Sequential {
            let (tx, rx) = mpsc::channel(recv_buf.max(1));
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let this = Arc::new(Dispatcher {
            handler: RwLock::new(handler),
            concurrency,
            queues: Mutex::new(HashMap::new()),
            sequential,
            detached: Mutex::new(HashMap::new()),
            idem: crate::idem::Window::new(server.registry().limits().idem.clone()),
            cluster_idem: server.registry().backplane().idem().map(|store| {
                let ttl = server.registry().limits().idem.max_age_ms;
                crate::claim::ClusterIdem {
                    store,
                    ttl: Duration::from_millis(ttl),
                }
            }),
            server,
        });
        if let Some(rx) = rx {
            tokio::spawn(run_sequential(Arc::downgrade(&this), rx));
        }
        this
    }

    pub(crate) fn server(&self) -> &ServerHandle {
        &self.server
    }

    fn handler(&self) -> Option<Arc<dyn Dispatch>> {
        self.handler
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Lets go of the handler (at shutdown): what it captured is released.
    pub(crate) fn release(&self) {
        self.handler
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// A retried request's copies run once ([`crate::idem::admit`]).
    fn admit(&self, msg: EventMsg) -> Option<EventMsg> {
        let now = self.server.registry().now();
        crate::idem::admit(&self.idem, self.cluster_idem.as_ref(), now, msg)
    }

    /// The handler for `msg`, if `msg` has anything to run.
    fn handler_for(&self, msg: &EventMsg) -> Option<Arc<dyn Dispatch>> {
        if msg.id().as_str() == sente_proto::ids::REP {
            // A client's answer to a server request: never the application's.
            crate::s2c::answer(self.server.registry(), msg);
            return None;
        }
        let h = self.handler()?;
        if msg.reply.is_none() && !h.handles(msg) {
            tracing::debug!(id = %msg.id(), "no handler for event");
            return None;
        }
        Some(h)
    }

    /// The work of one event for a WebSocket connection's task: the handler itself
    /// (`PerClient`), the wait for room in the sequential queue (`Sequential`), or nothing
    /// (`Concurrent`: spawned here).
    fn start(&self, msg: EventMsg) -> Option<BoxFuture<'static, ()>> {
        let msg = self.admit(msg)?;
        let h = self.handler_for(&msg)?;
        match self.concurrency {
            Concurrency::PerClient(_) | Concurrency::PerClientSerial => Some(traced(&h, msg)),
            Concurrency::Concurrent => {
                tokio::spawn(traced(&h, msg));
                None
            }
            Concurrency::Sequential => {
                let tx = self.sequential.clone()?;
                Some(
                    async move {
                        let _ = tx.send(msg).await;
                    }
                    .boxed(),
                )
            }
        }
    }

    /// Queues an event that no connection task runs (an Ajax POST's, or the server's own).
    /// `Err(Busy)` when the client already has [`CLIENT_BACKLOG`] events waiting (or the
    /// sequential queue is full): only that client is refused.
    pub(crate) fn submit(self: &Arc<Self>, msg: EventMsg) -> Result<(), Busy> {
        let Some(msg) = self.admit(msg) else {
            return Ok(());
        };
        let Some(h) = self.handler_for(&msg) else {
            return Ok(());
        };
        match self.concurrency {
            Concurrency::Concurrent => {
                tokio::spawn(traced(&h, msg));
                Ok(())
            }
            Concurrency::Sequential => match &self.sequential {
                Some(tx) => tx.try_send(msg).map_err(|e| {
                    crate::idem::refused(e.into_inner());
                    Busy
                }),
                None => Ok(()),
            },
            Concurrency::PerClient(_) | Concurrency::PerClientSerial => {
                let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(q) = queues.get_mut(&msg.client_id) {
                    if q.len() >= CLIENT_BACKLOG {
                        drop(queues);
                        crate::idem::refused(msg);
                        return Err(Busy);
                    }
                    q.push_back(msg);
                    return Ok(());
                }
                queues.insert(msg.client_id.clone(), VecDeque::new());
                drop(queues);
                tokio::spawn(run_client(self.clone(), h, msg));
                Ok(())
            }
        }
    }

    /// A `chsk/uidport-*` event from the registry (called with the registry locked: never
    /// waits). Dropped, counted and logged when its client's queue is full.
    pub(crate) fn system(self: &Arc<Self>, ev: SystemEvent) {
        let msg = EventMsg {
            event: ev.event,
            uid: ev.uid,
            client_id: ev.client_id,
            transport: ev.ctx.transport,
            reply: None,
            idem: None,
            claim: None,
            request: ev.ctx.request,
            server: self.server.clone(),
        };
        if self.submit(msg).is_err() {
            self.server.registry().count_dropped_system();
            tracing::warn!("client's event queue full: server event dropped");
        }
    }

    /// A runner for the WebSocket connection of `client`.
    pub(crate) fn inline(self: &Arc<Self>, client: ClientId) -> InlineRunner {
        InlineRunner {
            dispatcher: self.clone(),
            client,
            running: None,
            backlog: VecDeque::new(),
        }
    }
}

/// Runs one client's queued events in order, then ends.
async fn run_client(d: Arc<Dispatcher>, h: Arc<dyn Dispatch>, first: EventMsg) {
    let cid = first.client_id.clone();
    d.clone().run_budgeted(&cid, traced(&h, first)).await;
    loop {
        let next = {
            let mut queues = d.queues.lock().unwrap_or_else(PoisonError::into_inner);
            let next = queues.get_mut(&cid).and_then(VecDeque::pop_front);
            if next.is_none() {
                queues.remove(&cid);
            }
            next
        };
        match next {
            Some(msg) => d.clone().run_budgeted(&cid, traced(&h, msg)).await,
            None => return,
        }
    }
}

impl Dispatcher {
    /// Runs a handler of `client` until it finishes or, under [`Concurrency::PerClient`], until
    /// its budget is spent and it could be moved to a task of its own.
    async fn run_budgeted(self: Arc<Self>, client: &ClientId, mut fut: BoxFuture<'static, ()>) {
        let Some(budget) = self.concurrency.budget() else {
            return fut.await;
        };
        if (&mut fut).now_or_never().is_some() {
            return;
        }
        tokio::select! {
            () = &mut fut => {}
            () = tokio::time::sleep(budget.time) => {
                if let Err(fut) = self.detach(client, fut) {
                    fut.await;
                }
            }
        }
    }

    /// Moves a handler past its budget to a task of its own, unless `client` already has
    /// [`Budget::max_detached`] there (`Err`: the caller keeps waiting for it).
    fn detach(
        self: &Arc<Self>,
        client: &ClientId,
        fut: BoxFuture<'static, ()>,
    ) -> Result<(), BoxFuture<'static, ()>> {
        let max = self.concurrency.budget().map_or(0, |b| b.max_detached);
        {
            let mut detached = self.detached.lock().unwrap_or_else(PoisonError::into_inner);
            let n = detached.entry(client.clone()).or_insert(0);
            if *n >= max {
                if *n == 0 {
                    detached.remove(client);
                }
                tracing::debug!(%client, "handler past its budget: the client's next events wait (max_detached reached)");
                return Err(fut);
            }
            *n += 1;
        }
        tracing::debug!(%client, "handler past its budget: goes on in a task of its own");
        let (d, client) = (self.clone(), client.clone());
        tokio::spawn(async move {
            fut.await;
            let mut detached = d.detached.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = detached.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    detached.remove(&client);
                }
            }
        });
        Ok(())
    }
}

/// Runs the sequential queue's events one at a time.
async fn run_sequential(d: std::sync::Weak<Dispatcher>, mut rx: mpsc::Receiver<EventMsg>) {
    while let Some(msg) = rx.recv().await {
        let Some(h) = d.upgrade().and_then(|d| d.handler()) else {
            return;
        };
        traced(&h, msg).await;
    }
}

/// The handlers of one WebSocket connection's events, run by the connection's own task: one at
/// a time in read order (a handler past its [`Budget`] moves to a task of its own), with up to
/// [`CLIENT_BACKLOG`] events waiting. This saves the task hand-offs of a queue. Whatever is
/// still running or waiting when the connection ends goes on in a task of its own, so no event
/// that was read is dropped.
pub(crate) struct InlineRunner {
    dispatcher: Arc<Dispatcher>,
    client: ClientId,
    running: Option<Running>,
    backlog: VecDeque<EventMsg>,
}

/// A handler the connection's task runs, with the end of its budget.
struct Running {
    fut: BoxFuture<'static, ()>,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl InlineRunner {
    /// Whether another event may be read.
    pub(crate) fn has_room(&self) -> bool {
        self.backlog.len() < CLIENT_BACKLOG
    }

    /// Whether a handler is running (poll [`InlineRunner::poll_progress`]).
    pub(crate) fn is_busy(&self) -> bool {
        self.running.is_some()
    }

    /// Takes an event read from the connection.
    pub(crate) fn offer(&mut self, msg: EventMsg) {
        if self.running.is_some() {
            self.backlog.push_back(msg);
        } else {
            self.running = self.begin(msg);
        }
    }

    /// Starts an event's work, polled once at once (most handlers finish there); `None` when
    /// nothing is left to run.
    fn begin(&self, msg: EventMsg) -> Option<Running> {
        let mut fut = self.dispatcher.start(msg)?;
        if (&mut fut).now_or_never().is_some() {
            return None;
        }
        let deadline = self
            .dispatcher
            .concurrency
            .budget()
            .map(|b| Box::pin(tokio::time::sleep(b.time)));
        Some(Running { fut, deadline })
    }

    /// Drives the running handler; ready once it finished (or moved to a task of its own past
    /// its budget) and the next one (if any) started.
    pub(crate) fn poll_progress(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(r) = self.running.as_mut() else {
            return Poll::Ready(());
        };
        if r.fut.as_mut().poll(cx).is_pending() {
            let Some(deadline) = r.deadline.as_mut() else {
                return Poll::Pending;
            };
            if deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let Some(r) = self.running.take() else {
                return Poll::Pending;
            };
            if let Err(fut) = self.dispatcher.detach(&self.client, r.fut) {
                // The client has its most handlers past their budget: wait for this one.
                self.running = Some(Running {
                    fut,
                    deadline: None,
                });
                return Poll::Pending;
            }
        }
        self.running = None;
        while self.running.is_none() {
            let Some(msg) = self.backlog.pop_front() else {
                break;
            };
            self.running = self.begin(msg);
        }
        Poll::Ready(())
    }
}

impl Drop for InlineRunner {
    fn drop(&mut self) {
        let (running, backlog) = (self.running.take(), std::mem::take(&mut self.backlog));
        if running.is_none() && backlog.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                events = backlog.len(),
                "no runtime: events of a closed connection dropped"
            );
            return;
        };
        let (d, client) = (self.dispatcher.clone(), self.client.clone());
        rt.spawn(async move {
            if let Some(r) = running {
                d.clone().run_budgeted(&client, r.fut).await;
            }
            for msg in backlog {
                if let Some(f) = d.start(msg) {
                    d.clone().run_budgeted(&client, f).await;
                }
            }
        });
    }
}
