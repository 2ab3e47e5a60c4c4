//! What handlers receive: [`EventMsg`] and its [`Reply`].

use crate::handle::ServerHandle;
use crate::outbox::{Out, Outbox};
use crate::request::ChskRequest;
use sente_proto::server::{Transport, message};
use sente_proto::{ClientId, Event, EventId, Uid, Value};
use std::sync::Arc;
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

    /// The request behind the message (for WebSocket messages: the upgrade request).
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
/// without sending answers an Ajax POST `[:chsk/timeout nil]` at once (Sente waits for
/// `lp_timeout_ms`); on WebSocket the client's own timeout applies.
#[derive(Debug)]
pub struct Reply {
    inner: ReplyInner,
}

#[derive(Debug)]
enum ReplyInner {
    Ws { outbox: Arc<Outbox>, cb: Value },
    Ajax { tx: oneshot::Sender<Value> },
}

impl Reply {
    pub(crate) fn ws(outbox: Arc<Outbox>, cb: Value) -> Self {
        Reply {
            inner: ReplyInner::Ws { outbox, cb },
        }
    }

    pub(crate) fn ajax(tx: oneshot::Sender<Value>) -> Self {
        Reply {
            inner: ReplyInner::Ajax { tx },
        }
    }

    /// Sends the reply. Returns `false` when the connection or request is already gone.
    pub fn send(self, value: impl Into<Value>) -> bool {
        match self.inner {
            ReplyInner::Ws { outbox, cb } => {
                outbox.push_reply(Out::Reply(Box::new(message::ws_reply(value.into(), cb))))
            }
            ReplyInner::Ajax { tx } => tx.send(value.into()).is_ok(),
        }
    }

    /// Whether this reply goes over a WebSocket.
    pub fn is_ws(&self) -> bool {
        matches!(self.inner, ReplyInner::Ws { .. })
    }
}
