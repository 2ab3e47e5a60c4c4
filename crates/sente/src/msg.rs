//! What handlers receive: [`EventMsg`] and its [`Reply`].

use crate::handle::ServerHandle;
use crate::outbox::{Out, Outbox};
use crate::registry::ReplyOwed;
use crate::request::ChskRequest;
use sente_proto::server::{Transport, message};
use sente_proto::{ClientId, Event, EventId, Uid, Value};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// One event from a client (or synthesized by the server: `chsk/uidport-open`,
/// `chsk/uidport-close`, `chsk/ws-ping`, `chsk/bad-event`, `chsk/bad-package`). Sente's server
/// event-msg, with its `send-fn` and `connected-uids` as [`EventMsg::server`].
#[derive(Debug)]
#[non_exhaustive]
pub struct EventMsg {
    /// The event (`[:chsk/bad-event payload]` for an invalid payload).
    pub event: Event,
    /// The uid of the connection (fixed for the connection's lifetime).
    pub uid: Uid,
    /// The client id.
    pub client_id: ClientId,
    /// The transport the event came over.
    pub transport: Transport,
    /// Present when the client asked for a reply (Sente's `?reply-fn`).
    pub reply: Option<Reply>,
    /// The request id of a request the client may retry ([`crate::idem`]).
    pub(crate) idem: Option<String>,
    /// The cluster's say on a retried request's copy, asked before it runs ([`crate::idem`]);
    /// boxed, as it is rare: every event moves through the dispatch path several times.
    pub(crate) claim: Option<Box<crate::claim::Claiming>>,
    pub(crate) request: Arc<ChskRequest>,
    pub(crate) server: ServerHandle,
}

impl EventMsg {
    /// The event id.
    pub fn id(&self) -> &EventId {
        self.event.id()
    }

    /// The event data (`nil` when absent).
    pub fn data_value(&self) -> &Value {
        self.event.data()
    }

    /// The event data deserialized into `T` (serde, through the edn value model), read in
    /// place: the payload is not copied first.
    pub fn data<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, sente_proto::edn::Error> {
        sente_proto::edn::from_value_ref(self.event.data())
    }

    /// The server: push to users, close them, watch who is connected (Sente's `send-fn` and
    /// `connected-uids` of the event-msg).
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// The request behind the message: for WebSocket messages the upgrade request; for an
    /// Ajax client's `chsk/uidport-open` and `chsk/uidport-close`, the request that made the
    /// client known to this server (its handshake, or a poll that landed here first).
    pub fn request(&self) -> &ChskRequest {
        &self.request
    }

    /// A shared handle to the request.
    pub fn request_arc(&self) -> Arc<ChskRequest> {
        self.request.clone()
    }

    /// Takes the reply handle, if the client asked for a reply.
    pub fn take_reply(&mut self) -> Option<Reply> {
        self.reply.take()
    }

    /// Replies, if the client asked for a reply; returns whether a reply was sent.
    pub fn reply(&mut self, value: impl Into<Value>) -> bool {
        self.reply.take().is_some_and(|r| r.send(value))
    }
}

/// The reply handle of an event that asked for one. [`Reply::send`] consumes it, so a reply is
/// sent at most once, on both transports.
///
/// WebSocket: the reply `[value cb-id]` is queued on the connection after the pushes queued
/// before it, so it never overtakes them. Ajax: it is the POST's response. Dropping a `Reply`
/// without sending answers an Ajax POST `[:chsk/timeout nil]` at once (under a
/// [`Router`](crate::Router): once the handler returns; Sente waits for `lp_timeout_ms`); on
/// WebSocket the client's own timeout applies.
///
/// A [`Router`](crate::Router) handler that returns an error or panics while its reply is
/// still unanswered answers it `:chsk/error` (see [`Router::on_error`](crate::Router::on_error)).
#[derive(Debug)]
pub struct Reply {
    inner: ReplyInner,
}

#[derive(Debug)]
enum ReplyInner {
    Ws {
        outbox: Arc<Outbox>,
        cb: Value,
        /// When the event arrived (the connection's task records the reply's latency).
        since: std::time::Instant,
        /// Counted by a draining shutdown until the reply is queued (or dropped).
        _owed: ReplyOwed,
    },
    Ajax {
        tx: oneshot::Sender<Value>,
        _owed: ReplyOwed,
    },
    /// Shared with a [`ReplyGuard`], which answers it `:chsk/error` if the handler fails.
    Guarded(Arc<Mutex<Option<ReplyInner>>>),
    /// The first copy of a request the client may retry: its answer goes to every copy.
    Shared(Box<dyn SharedReply>),
}

/// A reply that answers more than its own request: the first copy of a request id a client
/// may retry ([`crate::idem`]), whose outcome also answers the copies waiting for it and is kept
/// for later ones.
pub(crate) trait SharedReply: std::fmt::Debug + Send + Sync {
    /// Answers every copy with `outcome` (`None`: no reply) and keeps it; whether a copy was
    /// answered.
    fn settle(&mut self, outcome: Option<Value>) -> bool;
    /// The request was refused before it ran: its id is forgotten, so a retry runs it.
    fn forget(self: Box<Self>);
    /// Whether the copy that runs came over a WebSocket.
    fn is_ws(&self) -> bool;
}

impl ReplyInner {
    fn send(self, value: Value) -> bool {
        match self {
            ReplyInner::Ws {
                outbox,
                cb,
                since,
                _owed: owed,
            } => {
                let sent = outbox.push_reply(Out::Reply(
                    Box::new(message::ws_reply(value, cb)),
                    Some(since),
                ));
                // Settled after the reply is queued: a draining close goes after it.
                drop(owed);
                sent
            }
            ReplyInner::Ajax { tx, _owed: owed } => {
                let sent = tx.send(value).is_ok();
                drop(owed);
                sent
            }
            ReplyInner::Guarded(slot) => take(&slot).is_some_and(|r| r.send(value)),
            ReplyInner::Shared(mut d) => d.settle(Some(value)),
        }
    }

    fn is_ws(&self) -> bool {
        match self {
            ReplyInner::Ws { .. } => true,
            ReplyInner::Ajax { .. } => false,
            ReplyInner::Guarded(slot) => slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_some_and(ReplyInner::is_ws),
            ReplyInner::Shared(d) => d.is_ws(),
        }
    }
}

fn take(slot: &Mutex<Option<ReplyInner>>) -> Option<ReplyInner> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// Answers a reply `:chsk/error` when the handler that holds it fails before replying: what a
/// Sente client's callback takes for an error (`cb-error?`), and what our clients report as
/// `RequestError::Error` (Rust) or a `SenteError` with code `"error"` (JS). Dropped without
/// [`ReplyGuard::fail`], it does nothing.
#[derive(Debug)]
pub(crate) struct ReplyGuard(Arc<Mutex<Option<ReplyInner>>>);

impl ReplyGuard {
    /// Answers the reply `:chsk/error` if nobody answered it yet; returns whether it did.
    pub(crate) fn fail(self) -> bool {
        take(&self.0).is_some_and(|r| r.send(Value::kw(sente_proto::event::ids::ERROR)))
    }
}

impl Reply {
    pub(crate) fn ws(
        outbox: Arc<Outbox>,
        cb: Value,
        since: std::time::Instant,
        owed: ReplyOwed,
    ) -> Self {
        Reply {
            inner: ReplyInner::Ws {
                outbox,
                cb,
                since,
                _owed: owed,
            },
        }
    }

    pub(crate) fn shared(d: Box<dyn SharedReply>) -> Self {
        Reply {
            inner: ReplyInner::Shared(d),
        }
    }

    pub(crate) fn ajax(tx: oneshot::Sender<Value>, owed: ReplyOwed) -> Self {
        Reply {
            inner: ReplyInner::Ajax { tx, _owed: owed },
        }
    }

    /// Sends the reply. Returns `false` when the connection or request is already gone (or
    /// the reply was already answered `:chsk/error` because its handler failed).
    pub fn send(self, value: impl Into<Value>) -> bool {
        self.inner.send(value.into())
    }

    /// The event of this reply was refused before it ran: a retried request's id is forgotten
    /// ([`crate::idem`]); any other reply is dropped.
    pub(crate) fn forget(self) {
        if let ReplyInner::Shared(d) = self.inner {
            d.forget();
        }
    }

    /// Whether this reply goes over a WebSocket.
    pub fn is_ws(&self) -> bool {
        self.inner.is_ws()
    }

    /// Shares this reply with a guard that answers it `:chsk/error` if the handler fails.
    pub(crate) fn guard(&mut self) -> ReplyGuard {
        if let ReplyInner::Guarded(slot) = &self.inner {
            return ReplyGuard(slot.clone());
        }
        let slot = Arc::new(Mutex::new(None));
        let inner = std::mem::replace(&mut self.inner, ReplyInner::Guarded(slot.clone()));
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(inner);
        ReplyGuard(slot)
    }
}
