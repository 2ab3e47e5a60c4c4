//! Dispatching events to handlers by event id (Sente's `start-server-chsk-router!`).

use crate::msg::EventMsg;
use crate::server::EventStream;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sente_proto::ClientId;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
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
    /// run concurrently. The default.
    #[default]
    PerClient,
    /// Every event runs after the previous one finished (Sente's default go-loop).
    Sequential,
    /// Every event runs in its own task, with no order (Sente's `:simple-auto-threading?`).
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

    /// Whether an event has a handler (its own or the fallback).
    fn handles(&self, msg: &EventMsg) -> bool {
        self.fallback.is_some() || self.handlers.contains_key(msg.id().as_str())
    }

    /// Runs one event through its handler.
    pub async fn dispatch(&self, msg: EventMsg) {
        let handler = self
            .handlers
            .get(msg.id().as_str())
            .or(self.fallback.as_ref())
            .cloned();
        let Some(handler) = handler else {
            tracing::debug!(id = %msg.id(), "no handler for event");
            return;
        };
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
        tokio::spawn(self.run(events))
    }

    /// Handles every event of the stream until it ends.
    pub async fn run(self, mut events: EventStream) {
        let this = Arc::new(self);
        let mut workers: HashMap<ClientId, (mpsc::Sender<EventMsg>, JoinHandle<()>)> =
            HashMap::new();
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
