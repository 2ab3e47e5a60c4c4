//! Dispatching events to handlers by event id (Sente's `start-server-chsk-router!`).

use crate::msg::EventMsg;
use crate::server::EventStream;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sente_proto::ClientId;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A boxed error returned by a handler.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler may return: `()` or `Result<(), E>`.
pub trait HandlerResult {
    /// Converts into a result.
    fn into_result(self) -> Result<(), BoxError>;
}

impl HandlerResult for () {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> HandlerResult for Result<(), E> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// Why a handler failed.
#[derive(Debug)]
pub enum HandlerError {
    /// The handler returned an error.
    Failed(BoxError),
    /// The handler panicked (the message of the panic).
    Panicked(String),
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::Failed(e) => write!(f, "handler failed: {e}"),
            HandlerError::Panicked(m) => write!(f, "handler panicked: {m}"),
        }
    }
}

impl std::error::Error for HandlerError {}

/// Which event a failed handler was handling.
#[derive(Clone, Debug)]
pub struct EventInfo {
    /// The event id.
    pub id: sente_proto::EventId,
    /// The uid.
    pub uid: sente_proto::Uid,
    /// The client.
    pub client_id: ClientId,
}

/// How handlers run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Concurrency {
    /// The events of one client run one after the other, in arrival order; different clients
    /// run concurrently. The default. A WebSocket connection runs its own events' handlers in
    /// its task (no hand-off to another task); Ajax events run in a per-client worker task.
    #[default]
    PerClient,
    /// Every event runs after the previous one finished (Sente's default go-loop).
    Sequential,
    /// Every event runs in its own task, with no order (Sente's `:simple-auto-threading?`),
    /// spawned by the connection that read it.
    Concurrent,
}

type HandlerFn = Arc<dyn Fn(EventMsg) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;
type ErrorFn = Arc<dyn Fn(HandlerError, EventInfo) + Send + Sync>;

/// Routes events to handlers by event id.
///
/// ```no_run
/// # async fn demo(events: sente::EventStream) {
/// use sente::{EventMsg, Router};
/// let router = Router::new()
///     .on("my-app/echo", |mut msg: EventMsg| async move {
///         let data = msg.data_value().clone();
///         msg.reply(data);
///     })
///     .fallback(|msg: EventMsg| async move {
///         tracing::debug!(id = %msg.id(), "unhandled event");
///     });
/// router.run(events).await;
/// # }
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct Router {
    handlers: HashMap<String, HandlerFn>,
    fallback: Option<HandlerFn>,
    on_error: Option<ErrorFn>,
    concurrency: Concurrency,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.handlers.keys().collect();
        ids.sort();
        f.debug_struct("Router")
            .field("ids", &ids)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

fn boxed<F, Fut, R>(f: F) -> HandlerFn
where
    F: Fn(EventMsg) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: HandlerResult,
{
    Arc::new(move |msg| {
        let fut = f(msg);
        async move { fut.await.into_result() }.boxed()
    })
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Router::default()
    }

    /// Handles event id `id` (`"ns/name"`, a leading `:` is accepted) with an async function.
    pub fn on<F, Fut, R>(mut self, id: &str, handler: F) -> Self
    where
        F: Fn(EventMsg) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult,
    {
        let id = id.strip_prefix(':').unwrap_or(id).to_owned();
        self.handlers.insert(id, boxed(handler));
        self
    }

    /// Handles every event without a handler of its own (including `chsk/*` events).
    pub fn fallback<F, Fut, R>(mut self, handler: F) -> Self
    where
        F: Fn(EventMsg) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult,
    {
        self.fallback = Some(boxed(handler));
        self
    }

    /// Called when a handler returns an error or panics (default: a `tracing::error!`).
    pub fn on_error(mut self, f: impl Fn(HandlerError, EventInfo) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(f));
        self
    }

    /// How handlers run (default [`Concurrency::PerClient`]).
    pub fn concurrency(mut self, c: Concurrency) -> Self {
        self.concurrency = c;
        self
    }

    /// The handler of an event: its own or the fallback.
    fn handler(&self, msg: &EventMsg) -> Option<&HandlerFn> {
        self.handlers
            .get(msg.id().as_str())
            .or(self.fallback.as_ref())
    }

    /// Whether an event has a handler (its own or the fallback).
    fn handles(&self, msg: &EventMsg) -> bool {
        self.handler(msg).is_some()
    }

    /// Runs one event through its handler.
    pub async fn dispatch(&self, msg: EventMsg) {
        let Some(handler) = self.handler(&msg).cloned() else {
            tracing::debug!(id = %msg.id(), "no handler for event");
            return;
        };
        self.run_handler(&handler, msg).await;
    }

    /// Runs `handler` on `msg`, catching its error or panic.
    async fn run_handler(&self, handler: &HandlerFn, msg: EventMsg) {
        let info = EventInfo {
            id: msg.id().clone(),
            uid: msg.uid.clone(),
            client_id: msg.client_id.clone(),
        };
        let result = AssertUnwindSafe(handler(msg)).catch_unwind().await;
        let err = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => HandlerError::Failed(e),
            Err(panic) => HandlerError::Panicked(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".to_owned()),
            ),
        };
        if let Some(f) = &self.on_error {
            if std::panic::catch_unwind(AssertUnwindSafe(|| f(err, info.clone()))).is_err() {
                tracing::error!(id = %info.id, "error handler panicked");
            }
        } else {
            tracing::error!(id = %info.id, uid = %info.uid, client_id = %info.client_id, error = %err, "event handler error");
        }
    }

    /// Spawns [`Router::run`] on the current tokio runtime.
    pub fn spawn(self, events: EventStream) -> JoinHandle<()> {
        let this = Arc::new(self);
        this.attach(&events);
        tokio::spawn(run_loop(this, events))
    }

    /// Handles every event of the stream until it ends.
    ///
    /// With [`Concurrency::PerClient`] (the default) or [`Concurrency::Concurrent`], the router
    /// also attaches itself to the stream's server: from then on each WebSocket connection runs
    /// the handlers of its own events in its own task (per-client order is the connection's
    /// read order), instead of passing them through the stream and a worker task. Ajax events
    /// and server-synthesized `chsk/uidport-*` events still come through the stream. Attach
    /// before serving (as [`Router::spawn`] does) so that no client has events on both paths.
    pub async fn run(self, events: EventStream) {
        let this = Arc::new(self);
        this.attach(&events);
        run_loop(this, events).await;
    }

    /// Lets the stream's server run this router's handlers on WebSocket connection tasks.
    fn attach(self: &Arc<Self>, events: &EventStream) {
        if self.concurrency != Concurrency::Sequential {
            events.attach(self);
        }
    }
}

/// [`Router::run`]'s loop over the events that come through the stream.
async fn run_loop(this: Arc<Router>, mut events: EventStream) {
    let mut workers: HashMap<ClientId, (mpsc::Sender<EventMsg>, JoinHandle<()>)> = HashMap::new();
    let mut seen = 0u32;
    while let Some(msg) = events.recv().await {
        match this.concurrency {
            Concurrency::Sequential => this.dispatch(msg).await,
            Concurrency::Concurrent => {
                let r = this.clone();
                tokio::spawn(async move { r.dispatch(msg).await });
            }
            // An event without a handler and without a reply to answer has nothing to run
            // (e.g. `chsk/uidport-open` when the app does not handle it): no worker, so an
            // idle client costs no queue.
            Concurrency::PerClient if msg.reply.is_none() && !this.handles(&msg) => {
                tracing::debug!(id = %msg.id(), "no handler for event");
            }
            Concurrency::PerClient => {
                seen = seen.wrapping_add(1);
                if seen % 1024 == 0 {
                    workers.retain(|_, (_, h)| !h.is_finished());
                }
                let mut msg = msg;
                loop {
                    let key = msg.client_id.clone();
                    let prev = match workers.remove(&key) {
                        Some((tx, h)) => match tx.send(msg).await {
                            Ok(()) => {
                                workers.insert(key, (tx, h));
                                break;
                            }
                            Err(mpsc::error::SendError(m)) => {
                                msg = m;
                                Some(h)
                            }
                        },
                        None => None,
                    };
                    let (tx, rx) = mpsc::channel(64);
                    let h = tokio::spawn(worker(this.clone(), rx, prev));
                    workers.insert(key, (tx, h));
                }
            }
        }
    }
}

/// Runs one client's events in order; exits after a while without events.
async fn worker(
    router: Arc<Router>,
    mut rx: mpsc::Receiver<EventMsg>,
    prev: Option<JoinHandle<()>>,
) {
    if let Some(prev) = prev {
        let _ = prev.await;
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(m)) => router.dispatch(m).await,
            Ok(None) => return,
            Err(_) => {
                rx.close();
                while let Some(m) = rx.recv().await {
                    router.dispatch(m).await;
                }
                return;
            }
        }
    }
}

/// How many events of one WebSocket connection may wait behind its running handler before the
/// connection stops reading (TCP then pushes back on the client).
pub(crate) const INLINE_BACKLOG: usize = 64;

/// The handlers of one WebSocket connection's events, run by the connection's own task when a
/// router is attached ([`Router::run`]): one at a time in read order ([`Concurrency::PerClient`])
/// or each in a task of its own ([`Concurrency::Concurrent`]). This saves the two task hand-offs
/// of the stream and of a per-client worker. Whatever is still running or waiting when the
/// connection ends goes on in a task of its own, so no event that was read is dropped.
#[derive(Default)]
pub(crate) struct InlineRunner {
    router: Option<Arc<Router>>,
    running: Option<BoxFuture<'static, ()>>,
    backlog: VecDeque<EventMsg>,
}

impl InlineRunner {
    /// Whether another event may be read.
    pub(crate) fn has_room(&self) -> bool {
        self.backlog.len() < INLINE_BACKLOG
    }

    /// Whether a handler is running (poll [`InlineRunner::poll_progress`]).
    pub(crate) fn is_busy(&self) -> bool {
        self.running.is_some()
    }

    /// Takes an event for `router`'s handlers.
    pub(crate) fn offer(&mut self, router: &Arc<Router>, msg: EventMsg) {
        let router = self.router.get_or_insert_with(|| router.clone());
        if router.concurrency == Concurrency::Concurrent {
            let r = router.clone();
            tokio::spawn(async move { r.dispatch(msg).await });
        } else if self.running.is_some() {
            self.backlog.push_back(msg);
        } else {
            self.running = start(router, msg);
        }
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
        if let Some(router) = &self.router {
            while self.running.is_none() {
                let Some(msg) = self.backlog.pop_front() else {
                    break;
                };
                self.running = start(router, msg);
            }
        }
        Poll::Ready(())
    }
}

/// Starts an event's handler: polled once at once (most handlers finish there); `None` when
/// nothing is left to run.
fn start(router: &Arc<Router>, msg: EventMsg) -> Option<BoxFuture<'static, ()>> {
    let Some(handler) = router.handler(&msg).cloned() else {
        // Without a handler a requested reply is dropped (on WebSocket the client times out).
        tracing::debug!(id = %msg.id(), "no handler for event");
        return None;
    };
    let r = router.clone();
    let mut fut = async move { r.run_handler(&handler, msg).await }.boxed();
    (&mut fut).now_or_never().is_none().then_some(fut)
}

impl Drop for InlineRunner {
    fn drop(&mut self) {
        let (running, backlog) = (self.running.take(), std::mem::take(&mut self.backlog));
        let (Some(router), true) = (self.router.take(), running.is_some() || !backlog.is_empty())
        else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                events = backlog.len(),
                "no runtime: events of a closed connection dropped"
            );
            return;
        };
        rt.spawn(async move {
            if let Some(f) = running {
                f.await;
            }
            for msg in backlog {
                router.dispatch(msg).await;
            }
        });
    }
}
