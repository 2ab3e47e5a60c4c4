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
use tokio::sync::mpsc;

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

    /// How events are scheduled (default [`Concurrency::PerClient`]).
    fn concurrency(&self) -> Concurrency {
        Concurrency::PerClient
    }
}

/// How handlers run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Concurrency {
    /// The events of one client run one after the other, in arrival order; different clients
    /// run concurrently. The default. A WebSocket connection runs its own events' handlers in
    /// its task (no hand-off to another task); Ajax and server events run in a per-client task.
    #[default]
    PerClient,
    /// Every event runs after the previous one finished, whatever its client (Sente's default
    /// go-loop), through one queue of `recv_buf` events.
    Sequential,
    /// Every event runs in its own task, with no order (Sente's `:simple-auto-threading?`).
    Concurrent,
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
            .map_or(Concurrency::PerClient, |h| h.concurrency());
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

    /// The handler for `msg`, if `msg` has anything to run.
    fn handler_for(&self, msg: &EventMsg) -> Option<Arc<dyn Dispatch>> {
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
        let h = self.handler_for(&msg)?;
        match self.concurrency {
            Concurrency::PerClient => Some(h.dispatch(msg)),
            Concurrency::Concurrent => {
                tokio::spawn(h.dispatch(msg));
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
        let Some(h) = self.handler_for(&msg) else {
            return Ok(());
        };
        match self.concurrency {
            Concurrency::Concurrent => {
                tokio::spawn(h.dispatch(msg));
                Ok(())
            }
            Concurrency::Sequential => match &self.sequential {
                Some(tx) => tx.try_send(msg).map_err(|_| Busy),
                None => Ok(()),
            },
            Concurrency::PerClient => {
                let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(q) = queues.get_mut(&msg.client_id) {
                    if q.len() >= CLIENT_BACKLOG {
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
            request: ev.ctx.request,
            server: self.server.clone(),
        };
        if self.submit(msg).is_err() {
            self.server.registry().count_dropped_system();
            tracing::warn!("client's event queue full: server event dropped");
        }
    }

    /// A runner for one WebSocket connection.
    pub(crate) fn inline(self: &Arc<Self>) -> InlineRunner {
        InlineRunner {
            dispatcher: self.clone(),
            running: None,
            backlog: VecDeque::new(),
        }
    }
}

/// Runs one client's queued events in order, then ends.
async fn run_client(d: Arc<Dispatcher>, h: Arc<dyn Dispatch>, first: EventMsg) {
    let cid = first.client_id.clone();
    h.dispatch(first).await;
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
            Some(msg) => h.dispatch(msg).await,
            None => return,
        }
    }
}

/// Runs the sequential queue's events one at a time.
async fn run_sequential(d: std::sync::Weak<Dispatcher>, mut rx: mpsc::Receiver<EventMsg>) {
    while let Some(msg) = rx.recv().await {
        let Some(h) = d.upgrade().and_then(|d| d.handler()) else {
            return;
        };
        h.dispatch(msg).await;
    }
}

/// The handlers of one WebSocket connection's events, run by the connection's own task: one at
/// a time in read order, with up to [`CLIENT_BACKLOG`] events waiting. This saves the task
/// hand-offs of a queue. Whatever is still running or waiting when the connection ends goes on
/// in a task of its own, so no event that was read is dropped.
pub(crate) struct InlineRunner {
    dispatcher: Arc<Dispatcher>,
    running: Option<BoxFuture<'static, ()>>,
    backlog: VecDeque<EventMsg>,
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
    fn begin(&self, msg: EventMsg) -> Option<BoxFuture<'static, ()>> {
        let mut fut = self.dispatcher.start(msg)?;
        (&mut fut).now_or_never().is_none().then_some(fut)
    }

    /// Drives the running handler; ready once it finished and the next one (if any) started.
    pub(crate) fn poll_progress(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(fut) = self.running.as_mut() else {
            return Poll::Ready(());
        };
        if fut.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
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
        let d = self.dispatcher.clone();
        rt.spawn(async move {
            if let Some(f) = running {
                f.await;
            }
            for msg in backlog {
                if let Some(f) = d.start(msg) {
                    f.await;
                }
            }
        });
    }
}
