//! The client state map (spec 8.3), the events the client synthesizes (`chsk/state`,
//! `chsk/handshake`) and request errors.

use super::config::Kind;
use crate::envelope::EnvelopeError;
use crate::event::{Event, Uid, ids};
use crate::packer::PackError;
use sente_edn::{Map, Value};
use std::fmt;

/// Why the connection closed (Sente's `:last-close :reason`, plus `rejected`).
///
/// [`as_str`](Self::as_str) gives Sente's keyword name, which is what the `chsk/state` event
/// carries on the wire; the machine also uses it as the WebSocket close-frame reason when it
/// closes a socket itself (`ws-error`, `ws-ping-timeout`, `downgrading-ws-to-ajax`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// `:clean`: WebSocket close code 1000.
    Clean,
    /// `:unexpected`: another WebSocket close, an Ajax error.
    Unexpected,
    /// `:requested-disconnect`: [`disconnect`](super::ClientMachine::disconnect) was called.
    RequestedDisconnect,
    /// `:requested-reconnect`: [`reconnect`](super::ClientMachine::reconnect) was called.
    RequestedReconnect,
    /// `:downgrading-ws-to-ajax`: [`Kind::Auto`] fell back to Ajax.
    DowngradingWsToAjax,
    /// `:ws-ping-timeout`: the server did not answer the keepalive ping in time.
    WsPingTimeout,
    /// `:ws-error`: a WebSocket send failed.
    WsError,
    /// `:rejected` (sente-rs): the server refused the handshake with this HTTP status (401, 403).
    /// Retried slowly (see `rejected_retry_ms`).
    Rejected {
        /// The HTTP status.
        status: u16,
    },
}

impl CloseReason {
    /// The keyword name Sente uses (`clean`, `unexpected`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Clean => "clean",
            CloseReason::Unexpected => "unexpected",
            CloseReason::RequestedDisconnect => "requested-disconnect",
            CloseReason::RequestedReconnect => "requested-reconnect",
            CloseReason::DowngradingWsToAjax => "downgrading-ws-to-ajax",
            CloseReason::WsPingTimeout => "ws-ping-timeout",
            CloseReason::WsError => "ws-error",
            CloseReason::Rejected { .. } => "rejected",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Rejected { status } => write!(f, "rejected (HTTP {status})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// `:last-ws-error`: the last WebSocket error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsErrorInfo {
    /// When (Unix ms).
    pub udt: u64,
    /// What happened, as reported by the shell.
    pub message: String,
    /// The HTTP status when the upgrade was answered with something other than 101 (native
    /// shells only; browsers do not expose it).
    pub status: Option<u16>,
    /// Whether TLS failed, e.g. the server's certificate is not trusted (native shells only).
    pub tls: bool,
}

/// `:last-ajax-error` (sente-rs): the last Ajax long-poll that failed without a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AjaxErrorInfo {
    /// When (Unix ms).
    pub udt: u64,
    /// What happened ([`HttpFailure::Tls`] when the server's certificate is not trusted).
    pub failure: HttpFailure,
}

/// `:last-ws-close`: the last WebSocket close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsCloseInfo {
    /// When (Unix ms).
    pub udt: u64,
    /// The close code (1006 when the connection failed without a close frame).
    pub code: u16,
    /// The close reason text.
    pub reason: String,
    /// Whether the close was clean (code 1000 / `wasClean`).
    pub clean: bool,
}

/// `:last-close`: the last time the connection closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    /// When (Unix ms).
    pub udt: u64,
    /// Why.
    pub reason: CloseReason,
}

/// The client state map (Sente's `state` atom, spec 8.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// `:type`: the configured [`Kind`] until the first handshake, then the transport in use
    /// ([`Kind::Ws`] or [`Kind::Ajax`]).
    pub kind: Kind,
    /// `:open?`: a handshake was received and the connection has not closed since.
    pub open: bool,
    /// `:ever-opened?`.
    pub ever_opened: bool,
    /// `:uid`: the user id from the last handshake.
    pub uid: Option<Uid>,
    /// `:handshake-data` from the last handshake.
    pub handshake_data: Option<Value>,
    /// `:last-ws-error`.
    pub last_ws_error: Option<WsErrorInfo>,
    /// `:last-ws-close`.
    pub last_ws_close: Option<WsCloseInfo>,
    /// `:last-ajax-error` (sente-rs): the last Ajax long-poll failure without a response.
    pub last_ajax_error: Option<AjaxErrorInfo>,
    /// `:last-close`: set when an open connection closes, and on a rejected handshake.
    pub last_close: Option<CloseInfo>,
    /// `:udt-next-reconnect`: when the next reconnect attempt is due (Unix ms).
    pub udt_next_reconnect: Option<u64>,
    /// `:recovered?` (sente-rs resume extension): after a reconnect, whether every push missed
    /// while disconnected was delivered (`true`), or some may be lost (`false`: refetch what
    /// matters). `None` on the first connection, or with a server that does not resume.
    pub recovered: Option<bool>,
}

impl State {
    /// The initial state for a client of this kind.
    pub fn new(kind: Kind) -> Self {
        State {
            kind,
            open: false,
            ever_opened: false,
            uid: None,
            handshake_data: None,
            last_ws_error: None,
            last_ws_close: None,
            last_ajax_error: None,
            last_close: None,
            udt_next_reconnect: None,
            recovered: None,
        }
    }

    /// The state as Sente's edn map (`{:type :ws, :open? true, ...}`); absent keys are
    /// omitted.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        let kw = Value::kw;
        m.insert(kw("type"), kw(self.kind.as_str()));
        m.insert(kw("open?"), Value::Bool(self.open));
        m.insert(kw("ever-opened?"), Value::Bool(self.ever_opened));
        if let Some(uid) = &self.uid {
            m.insert(kw("uid"), uid.to_value());
        }
        if let Some(hd) = &self.handshake_data {
            m.insert(kw("handshake-data"), hd.clone());
        }
        if let Some(e) = &self.last_ws_error {
            let mut em = Map::new();
            em.insert(kw("udt"), udt_value(e.udt));
            em.insert(kw("ev"), Value::Str(e.message.clone()));
            if let Some(status) = e.status {
                em.insert(kw("status"), Value::Int(i64::from(status)));
            }
            if e.tls {
                em.insert(kw("tls?"), Value::Bool(true));
            }
            m.insert(kw("last-ws-error"), Value::Map(em));
        }
        if let Some(e) = &self.last_ajax_error {
            let mut em = Map::new();
            em.insert(kw("udt"), udt_value(e.udt));
            em.insert(kw("ev"), Value::Str(e.failure.to_string()));
            if matches!(e.failure, HttpFailure::Tls(_)) {
                em.insert(kw("tls?"), Value::Bool(true));
            }
            m.insert(kw("last-ajax-error"), Value::Map(em));
        }
        if let Some(c) = &self.last_ws_close {
            let mut cm = Map::new();
            cm.insert(kw("udt"), udt_value(c.udt));
            cm.insert(kw("code"), Value::Int(i64::from(c.code)));
            cm.insert(kw("reason"), Value::Str(c.reason.clone()));
            cm.insert(kw("clean?"), Value::Bool(c.clean));
            m.insert(kw("last-ws-close"), Value::Map(cm));
        }
        if let Some(c) = &self.last_close {
            let mut cm = Map::new();
            cm.insert(kw("udt"), udt_value(c.udt));
            cm.insert(kw("reason"), kw(c.reason.as_str()));
            if let CloseReason::Rejected { status } = c.reason {
                cm.insert(kw("status"), Value::Int(i64::from(status)));
            }
            m.insert(kw("last-close"), Value::Map(cm));
        }
        if let Some(t) = self.udt_next_reconnect {
            m.insert(kw("udt-next-reconnect"), udt_value(t));
        }
        if let Some(r) = self.recovered {
            m.insert(kw("recovered?"), Value::Bool(r));
        }
        Value::Map(m)
    }
}

fn udt_value(udt: u64) -> Value {
    Value::Int(i64::try_from(udt).unwrap_or(i64::MAX))
}

/// One `chsk/state` change: `[:chsk/state [old new open-changed?]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// The state before.
    pub old: State,
    /// The state after.
    pub new: State,
}

impl StateChange {
    /// Whether `open` flipped.
    pub fn open_changed(&self) -> bool {
        self.old.open != self.new.open
    }

    /// The connection just opened.
    pub fn opened(&self) -> bool {
        !self.old.open && self.new.open
    }

    /// The connection just closed.
    pub fn closed(&self) -> bool {
        self.old.open && !self.new.open
    }

    /// The connection just opened for the first time (the wiki's recommended "ready" signal).
    pub fn first_open(&self) -> bool {
        self.opened() && !self.old.ever_opened
    }

    /// Sente's event: `[:chsk/state [old new open-changed?]]`, where `new` carries the transient
    /// keys `:open-changed?`, `:opened?`, `:closed?`, `:first-open?` when `open` flipped.
    pub fn to_event(&self) -> Event {
        let mut new = self.new.to_value();
        if self.open_changed()
            && let Value::Map(m) = &mut new
        {
            m.insert(Value::kw("open-changed?"), Value::Bool(true));
            if self.opened() {
                m.insert(Value::kw("opened?"), Value::Bool(true));
                if self.first_open() {
                    m.insert(Value::kw("first-open?"), Value::Bool(true));
                }
            } else {
                m.insert(Value::kw("closed?"), Value::Bool(true));
            }
        }
        let data = Value::Vector(vec![
            self.old.to_value(),
            new,
            Value::Bool(self.open_changed()),
        ]);
        Event::reserved(ids::STATE, Some(data))
    }
}

/// A handshake, as the app sees it: `[:chsk/handshake [uid nil handshake-data first?]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// The server-resolved user id.
    pub uid: Uid,
    /// The server's handshake data (`nil` if none).
    pub data: Value,
    /// Whether this is the first handshake of this client.
    pub first: bool,
}

impl Handshake {
    /// Sente's 4-element client-side event.
    pub fn to_event(&self) -> Event {
        let data = Value::Vector(vec![
            self.uid.to_value(),
            Value::Nil,
            self.data.clone(),
            Value::Bool(self.first),
        ]);
        Event::reserved(ids::HANDSHAKE, Some(data))
    }
}

/// What the client delivers to the app, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The state changed (`chsk/state`).
    State(Box<StateChange>),
    /// A handshake arrived (`chsk/handshake`); follows the `State` change that opened.
    Handshake(Handshake),
    /// An event the server pushed.
    Push(Event),
    /// The server pinged (`[:chsk/ws-ping]`; the pong is already sent).
    WsPing,
    /// A push the server offloaded over HTTP ([`crate::large`]) could not be fetched: it is
    /// lost to this client, in its place in the stream (`[:chsk/large-failed {..}]`).
    LargeFailed(LargeFailure),
}

/// An offloaded push that could not be fetched ([`ClientEvent::LargeFailed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LargeFailure {
    /// The server's id of the event.
    pub id: String,
    /// Its size as the server announced it (estimated bytes).
    pub size: u64,
    /// Why: the HTTP status and body, the transport failure, or an unreadable body.
    pub reason: String,
}

impl ClientEvent {
    /// The event in Sente's form, as a client router would see it.
    pub fn to_event(&self) -> Event {
        match self {
            ClientEvent::State(change) => change.to_event(),
            ClientEvent::Handshake(h) => h.to_event(),
            ClientEvent::Push(ev) => ev.clone(),
            ClientEvent::WsPing => Event::reserved(ids::WS_PING, None),
            ClientEvent::LargeFailed(f) => crate::large::failed_event(&f.id, f.size, &f.reason),
        }
    }
}

/// Why a request got no reply (Sente's `:chsk/closed`, `:chsk/timeout`, `:chsk/error`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// `:chsk/closed`: the connection was not open, so nothing was sent.
    #[error("connection is closed (chsk/closed)")]
    Closed,
    /// `:chsk/timeout`: no reply within the timeout (local timer or the server's Ajax timeout).
    #[error("request timed out (chsk/timeout)")]
    Timeout,
    /// `:chsk/error`: the transport failed, or the server's handler did
    /// ([`RequestFailure::HandlerFailed`]); the [`RequestFailure`] says how.
    #[error("request failed (chsk/error): {0}")]
    Error(#[source] RequestFailure),
    /// The reply arrived but could not be converted to the requested type (typed requests).
    #[error("reply could not be decoded: {0}")]
    Decode(#[source] sente_edn::Error),
}

impl RequestError {
    /// Sente's keyword for this error (`chsk/closed`, `chsk/timeout`, `chsk/error`); a decode
    /// failure maps to `chsk/error`.
    pub fn sente_id(&self) -> &'static str {
        match self {
            RequestError::Closed => ids::CLOSED,
            RequestError::Timeout => ids::TIMEOUT,
            RequestError::Error(_) | RequestError::Decode(_) => ids::ERROR,
        }
    }
}

impl From<RequestFailure> for RequestError {
    fn from(failure: RequestFailure) -> Self {
        RequestError::Error(failure)
    }
}

/// How a request failed at the transport level ([`RequestError::Error`], Sente's
/// `:chsk/error`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestFailure {
    /// The request could not be packed, or is larger than the limit; nothing was sent.
    #[error("cannot pack the request: {0}")]
    Pack(#[source] PackError),
    /// The WebSocket closed (or the client disconnected) before the reply arrived.
    #[error("connection lost before the reply arrived")]
    ConnectionLost,
    /// The Ajax POST produced no response.
    #[error("Ajax POST failed: {0}")]
    Http(#[source] HttpFailure),
    /// The Ajax POST was answered with a non-2xx HTTP status.
    #[error("Ajax POST answered HTTP {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The response body (lossily decoded as UTF-8).
        body: String,
    },
    /// The Ajax POST was answered 2xx with an empty body.
    #[error("Ajax POST answered with an empty body")]
    EmptyResponse,
    /// The reply could not be unpacked.
    #[error("cannot unpack the reply: {0}")]
    Unpack(#[source] EnvelopeError),
    /// The server answered `:chsk/error`: its handler failed (returned an error or panicked)
    /// before replying. The server keeps the details (its log, `Router::on_error`).
    #[error("the server's handler failed (it answered chsk/error)")]
    HandlerFailed,
}

/// Why a fire-and-forget send was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is not open (and the queue is off, full, or the client was
    /// disconnected on purpose).
    #[error("connection is closed (chsk/closed)")]
    Closed,
    /// The event could not be packed, or is larger than the limit
    /// ([`PackError::TooLarge`]).
    #[error("cannot pack the event: {0}")]
    Pack(#[from] PackError),
}

/// Why an HTTP request produced no response (reported by the shell through
/// [`ClientMachine::handle_http_failure`](super::ClientMachine::handle_http_failure); requests see it as [`RequestFailure::Http`]).
///
/// The variant is the kind of failure; the text, where there is one, is the platform's
/// description, for logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpFailure {
    /// The request's `timeout_ms` passed.
    #[error("timed out")]
    Timeout,
    /// No connection could be made: refused, DNS failure.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The TLS handshake failed, e.g. the server's certificate is not trusted (native shell).
    #[error("TLS error: {0}")]
    Tls(String),
    /// The shell could not build the request (an invalid URL or header).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The response body was larger than the limit (a little over
    /// [`Limits::max_message_bytes`](crate::Limits::max_message_bytes)).
    #[error("response body over the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The connection failed during the exchange (reset, closed early), or the platform
    /// reported a network error without saying more (a browser `fetch` rejection).
    #[error("network error: {0}")]
    Network(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_change_event_carries_transient_keys() {
        let old = State::new(Kind::Ws);
        let mut new = old.clone();
        new.open = true;
        new.ever_opened = true;
        new.uid = Some(Uid::from("u1"));
        let ch = StateChange { old, new };
        assert!(ch.first_open());
        let ev = ch.to_event();
        assert_eq!(ev.id().as_str(), "chsk/state");
        let items = ev.data().as_seq().unwrap();
        let m = items[1].as_map().unwrap();
        assert_eq!(m.get_kw("first-open?"), Some(&Value::Bool(true)));
        assert_eq!(m.get_kw("opened?"), Some(&Value::Bool(true)));
        assert_eq!(m.get_kw("uid"), Some(&Value::from("u1")));
        assert_eq!(items[2], Value::Bool(true));
        assert!(items[0].as_map().unwrap().get_kw("opened?").is_none());
    }

    #[test]
    fn handshake_event_has_four_elements() {
        let h = Handshake {
            uid: Uid::Nil,
            data: Value::Nil,
            first: true,
        };
        let ev = h.to_event();
        assert_eq!(
            ev.data(),
            &Value::Vector(vec![
                Value::kw("sente/nil-uid"),
                Value::Nil,
                Value::Nil,
                Value::Bool(true)
            ])
        );
    }
}
