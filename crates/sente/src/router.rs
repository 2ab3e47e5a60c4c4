//! Dispatching events to handlers by event id (Sente's `start-server-chsk-router!`).

use crate::dispatch::{Concurrency, Dispatch};
use crate::msg::EventMsg;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sente_proto::{ClientId, EventId, InvalidEventId};
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

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
#[non_exhaustive]
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
#[non_exhaustive]
pub struct EventInfo {
    /// The event id.
    pub id: sente_proto::EventId,
    /// The uid.
    pub uid: sente_proto::Uid,
    /// The client.
    pub client_id: ClientId,
}

/// A handler: an async function of the event (`Fn(EventMsg) -> impl Future`), or of the event
/// and the router's state (`Fn(EventMsg, S) -> impl Future`, see [`Router::with_state`]). Its
/// future's output is `()` or a `Result<(), E>` ([`HandlerResult`]). `T` tells the two apart.
pub trait Handler<T, S>: Send + Sync + 'static {
    /// Runs the handler.
    fn call(&self, msg: EventMsg, state: &S) -> BoxFuture<'static, Result<(), BoxError>>;
}

/// Marks a handler of the event only ([`Handler`]).
#[derive(Debug)]
pub enum EventOnly {}

/// Marks a handler of the event and the router's state ([`Handler`]).
#[derive(Debug)]
pub enum EventAndState {}

impl<F, Fut, R, S> Handler<EventOnly, S> for F
where
    F: Fn(EventMsg) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: HandlerResult,
{
    fn call(&self, msg: EventMsg, _state: &S) -> BoxFuture<'static, Result<(), BoxError>> {
        let fut = self(msg);
        async move { fut.await.into_result() }.boxed()
    }
}

impl<F, Fut, R, S> Handler<EventAndState, S> for F
where
    F: Fn(EventMsg, S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: HandlerResult,
    S: Clone,
{
    fn call(&self, msg: EventMsg, state: &S) -> BoxFuture<'static, Result<(), BoxError>> {
        let fut = self(msg, state.clone());
        async move { fut.await.into_result() }.boxed()
    }
}

type HandlerFn<S> =
    Arc<dyn Fn(EventMsg, &S) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;
type ErrorFn = Arc<dyn Fn(HandlerError, EventInfo) + Send + Sync>;

fn erase<T, S, H: Handler<T, S>>(h: H) -> HandlerFn<S> {
    Arc::new(move |msg, state| h.call(msg, state))
}

/// A handler registered for an id, with that id: a failing handler's [`EventInfo`] takes it
/// from here, so an event that runs without failing costs no copy of its id.
struct Route<S> {
    id: EventId,
    run: HandlerFn<S>,
}

/// Where a failing handler's event id comes from: its route, or (the fallback) the event.
enum IdOf<S> {
    Route(Arc<Route<S>>),
    Event(EventId),
}

impl<S> IdOf<S> {
    fn into_id(self) -> EventId {
        match self {
            IdOf::Route(r) => r.id.clone(),
            IdOf::Event(id) => id,
        }
    }
}

/// Routes events to handlers by event id (Sente's `start-server-chsk-router!`). Register it with
/// [`Builder::handler`](crate::Builder::handler): WebSocket and Ajax events reach it alike.
///
/// ```
/// use sente::{EventMsg, Router};
///
/// #[derive(Clone)]
/// struct App {
///     greeting: &'static str,
/// }
///
/// let router = Router::with_state(App { greeting: "hello" })
///     .on("my-app/echo", |mut msg: EventMsg| async move {
///         let data = msg.data_value().clone();
///         msg.reply(data);
///     })
///     .on("my-app/greet", |mut msg: EventMsg, app: App| async move {
///         msg.reply(app.greeting);
///     })
///     .fallback(|msg: EventMsg| async move {
///         tracing::debug!(id = %msg.id(), "unhandled event");
///     });
/// # let _ = router;
/// ```
#[must_use]
pub struct Router<S = ()> {
    /// By event id. Clients only look ids up (they cannot add one), so a fast hasher is safe.
    handlers: HashMap<EventId, Arc<Route<S>>, foldhash::fast::RandomState>,
    fallback: Option<HandlerFn<S>>,
    on_error: Option<ErrorFn>,
    concurrency: Concurrency,
    state: S,
}

impl<S: Clone> Clone for Router<S> {
    fn clone(&self) -> Self {
        Router {
            handlers: self.handlers.clone(),
            fallback: self.fallback.clone(),
            on_error: self.on_error.clone(),
            concurrency: self.concurrency,
            state: self.state.clone(),
        }
    }
}

impl Default for Router<()> {
    fn default() -> Self {
        Router::with_state(())
    }
}

impl<S> std::fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.handlers.keys().map(EventId::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("Router")
            .field("ids", &ids)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl Router<()> {
    /// An empty router without state.
    pub fn new() -> Self {
        Router::default()
    }
}

impl<S: Clone + Send + Sync + 'static> Router<S> {
    /// An empty router whose handlers may take `state` as their second argument (cloned for
    /// each event: put shared data behind an `Arc`).
    pub fn with_state(state: S) -> Self {
        Router {
            handlers: HashMap::default(),
            fallback: None,
            on_error: None,
            concurrency: Concurrency::default(),
            state,
        }
    }

    /// Handles event id `id` (`"ns/name"`, a leading `:` is accepted).
    ///
    /// # Panics
    ///
    /// If `id` is not a valid event id (at the caller's line, with the reason): ids are written
    /// in the code. [`Router::try_on`] returns the error instead.
    #[track_caller]
    pub fn on<T, H: Handler<T, S>>(self, id: &str, handler: H) -> Self {
        match self.try_on(id, handler) {
            Ok(r) => r,
            Err(e) => panic!("Router::on: {e}"),
        }
    }

    /// [`Router::on`], refusing an invalid id with an error.
    pub fn try_on<T, H: Handler<T, S>>(
        mut self,
        id: &str,
        handler: H,
    ) -> Result<Self, InvalidEventId> {
        let id = EventId::new(id)?;
        let route = Route {
            id: id.clone(),
            run: erase(handler),
        };
        self.handlers.insert(id, Arc::new(route));
        Ok(self)
    }

    /// Handles every event without a handler of its own (including `chsk/*` events).
    pub fn fallback<T, H: Handler<T, S>>(mut self, handler: H) -> Self {
        self.fallback = Some(erase(handler));
        self
    }

    /// Called when a handler returns an error or panics (default: a `tracing::error!`).
    ///
    /// Either way, when the event asked for a reply and the handler did not answer it, the
    /// client is answered `:chsk/error` at once instead of waiting for its timeout: a Sente
    /// client's callback gets `:chsk/error` (`cb-error?` is true), our Rust clients
    /// `RequestError::Error(RequestFailure::HandlerFailed)`, the JS client a `SenteError` with
    /// code `"error"`. The error itself stays on the server (it may hold internals): only this
    /// function and the log see it.
    pub fn on_error(mut self, f: impl Fn(HandlerError, EventInfo) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(f));
        self
    }

    /// How handlers run (default [`Concurrency::PerClient`] with a 1 s [`Budget`](crate::Budget):
    /// a client's events start in order, and a handler running past 1 s no longer holds the
    /// client's next events).
    pub fn concurrency(mut self, c: Concurrency) -> Self {
        self.concurrency = c;
        self
    }

    /// The handler of an event (its own or the fallback) and where its id is kept.
    fn handler(&self, msg: &EventMsg) -> Option<(HandlerFn<S>, IdOf<S>)> {
        match self.handlers.get(msg.id()) {
            Some(r) => Some((r.run.clone(), IdOf::Route(r.clone()))),
            None => Some((self.fallback.clone()?, IdOf::Event(msg.id().clone()))),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Dispatch for Router<S> {
    fn dispatch(&self, msg: EventMsg) -> BoxFuture<'static, ()> {
        let Some((handler, id)) = self.handler(&msg) else {
            // Without a handler a requested reply is dropped: an Ajax POST gets
            // `[:chsk/timeout nil]` at once, a WebSocket client times out.
            tracing::debug!(id = %msg.id(), "no handler for event");
            return async {}.boxed();
        };
        let (uid, client_id) = (msg.uid.clone(), msg.client_id.clone());
        let state = self.state.clone();
        let on_error = self.on_error.clone();
        let mut msg = msg;
        let guard = msg.reply.as_mut().map(crate::msg::Reply::guard);
        async move {
            // The call itself runs inside `catch_unwind` too: a handler that panics before its
            // first `.await` is reported like one that panics later.
            let run = AssertUnwindSafe(async move { handler(msg, &state).await }).catch_unwind();
            let err = match run.await {
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
            let info = EventInfo {
                id: id.into_id(),
                uid,
                client_id,
            };
            if guard.is_some_and(crate::msg::ReplyGuard::fail) {
                tracing::debug!(id = %info.id, "handler failed: its reply answered chsk/error");
            }
            report(on_error.as_ref(), err, &info);
        }
        .boxed()
    }

    fn handles(&self, msg: &EventMsg) -> bool {
        self.handlers.contains_key(msg.id()) || self.fallback.is_some()
    }

    fn concurrency(&self) -> Concurrency {
        self.concurrency
    }
}

fn report(on_error: Option<&ErrorFn>, err: HandlerError, info: &EventInfo) {
    if let Some(f) = on_error {
        if std::panic::catch_unwind(AssertUnwindSafe(|| f(err, info.clone()))).is_err() {
            tracing::error!(id = %info.id, "error handler panicked");
        }
    } else {
        tracing::error!(id = %info.id, uid = %info.uid, client_id = %info.client_id, error = %err, "event handler error");
    }
}
