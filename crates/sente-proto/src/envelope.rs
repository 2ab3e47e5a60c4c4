//! The message envelope `[payload cb-id]` (Sente >= 1.21, spec 2.1), its older forms, and the
//! reserved payloads of spec section 3 as named constructors and parsed enums.

use crate::event::{Event, Uid, ids};
use crate::limits::Limits;
use crate::packer::{PackError, Packed, Packer, UnpackError};
use sente_edn::Value;

/// One message: `[payload cb]`. `cb` is `None` when the wire has `nil` (or `false`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The payload: an event, a batch, a reply value or a reserved keyword.
    pub payload: Value,
    /// The callback id: a 6-hex string on WebSocket, the `:ajax` marker (or `0` from Sente
    /// 1.18-1.20) on Ajax POSTs; echoed back verbatim in WebSocket replies.
    pub cb: Option<Value>,
}

/// Why a value is not a usable envelope.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The bytes could not be unpacked.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The unpacked value cannot be destructured as `[payload cb]` (a map, a number, ...).
    #[error("envelope is not a vector: {0}")]
    NotIndexable(String),
}

impl Envelope {
    /// `[payload nil]`.
    pub fn new(payload: Value) -> Self {
        Envelope { payload, cb: None }
    }

    /// `[payload cb]`.
    pub fn with_cb(payload: Value, cb: Value) -> Self {
        Envelope {
            payload,
            cb: cb.is_truthy().then_some(cb),
        }
    }

    /// Destructures `[payload cb]` positionally, as Sente does: extra elements are ignored, a
    /// one-element vector has no cb (Sente 1.18-1.20), `nil` gives a `nil` payload, and a string
    /// is indexed by characters (`"hello"` is payload `\h` with cb `\e`, as in Sente).
    pub fn from_value(value: Value) -> Result<Self, EnvelopeError> {
        match value {
            Value::Nil => Ok(Envelope::new(Value::Nil)),
            Value::Vector(items) | Value::List(items) => {
                let mut it = items.into_iter();
                let payload = it.next().unwrap_or(Value::Nil);
                let cb = it.next().unwrap_or(Value::Nil);
                Ok(Envelope::with_cb(payload, cb))
            }
            Value::Str(s) => {
                let mut chars = s.chars();
                let payload = chars.next().map_or(Value::Nil, Value::Char);
                let cb = chars.next().map_or(Value::Nil, Value::Char);
                Ok(Envelope::with_cb(payload, cb))
            }
            other => Err(EnvelopeError::NotIndexable(other.to_string())),
        }
    }

    /// The wire value `[payload cb]` (always two elements).
    pub fn to_value(&self) -> Value {
        Value::Vector(vec![
            self.payload.clone(),
            self.cb.clone().unwrap_or(Value::Nil),
        ])
    }

    /// The wire value, consuming the envelope.
    pub fn into_value(self) -> Value {
        Value::Vector(vec![self.payload, self.cb.unwrap_or(Value::Nil)])
    }

    /// Packs the envelope with `packer`.
    pub fn pack(&self, packer: &dyn Packer) -> Result<Packed, PackError> {
        packer.pack(&self.to_value())
    }

    /// Packs the envelope with `packer`, consuming it: no copy of the payload is made.
    pub fn into_packed(self, packer: &dyn Packer) -> Result<Packed, PackError> {
        packer.pack_envelope(self.payload, self.cb.unwrap_or(Value::Nil))
    }

    /// Unpacks and destructures one message. With a text packer, Sente <= 1.17's prefixed form
    /// is accepted too: `+<[payload cb]>` or `-<payload>` (spec 2.3).
    pub fn unpack(
        packer: &dyn Packer,
        input: &[u8],
        limits: &Limits,
    ) -> Result<Self, EnvelopeError> {
        if !packer.is_binary() {
            match input.first() {
                Some(b'+') => return Envelope::from_value(packer.unpack(&input[1..], limits)?),
                Some(b'-') => return Ok(Envelope::new(packer.unpack(&input[1..], limits)?)),
                _ => {}
            }
        }
        Envelope::from_value(packer.unpack(input, limits)?)
    }

    /// Whether this is an Ajax POST that asks for a reply (any truthy cb, Sente's rule).
    pub fn wants_reply(&self) -> bool {
        self.cb.is_some()
    }
}

/// Server -> client messages (spec 3), as named constructors.
pub mod server_msg {
    use super::{Envelope, Event, Uid, Value, ids};

    /// `[[:chsk/handshake [uid nil handshake-data]] nil]` (Sente >= 1.21 always sends 3 elements).
    pub fn handshake(uid: &Uid, handshake_data: Value) -> Envelope {
        let data = Value::Vector(vec![uid.to_value(), Value::Nil, handshake_data]);
        Envelope::new(Event::reserved(ids::HANDSHAKE, Some(data)).into_value())
    }

    /// The handshake of a resuming client: a fourth element `{:epoch .. :seq .. :recovered ..}`
    /// (see [`crate::server::replay`]).
    pub fn handshake_resume(
        uid: &Uid,
        handshake_data: Value,
        resume: &crate::server::replay::ResumeInfo,
    ) -> Envelope {
        handshake_ext(uid, handshake_data, Some(resume), false)
    }

    /// The handshake of a client of the extensions: a fourth element, the map of
    /// [`ResumeInfo::to_value`](crate::server::replay::ResumeInfo::to_value) when it resumes,
    /// holding `:idem true` when the server dedupes its requests ([`crate::idem`]). Without
    /// either, the plain 3-element handshake.
    pub fn handshake_ext(
        uid: &Uid,
        handshake_data: Value,
        resume: Option<&crate::server::replay::ResumeInfo>,
        idem: bool,
    ) -> Envelope {
        let mut extra = match resume.map(crate::server::replay::ResumeInfo::to_value) {
            Some(Value::Map(m)) => m,
            _ if !idem => return handshake(uid, handshake_data),
            _ => crate::Map::new(),
        };
        if idem {
            extra.insert(Value::kw(crate::idem::ACK_KEY), Value::Bool(true));
        }
        let data = Value::Vector(vec![
            uid.to_value(),
            Value::Nil,
            handshake_data,
            Value::Map(extra),
        ]);
        Envelope::new(Event::reserved(ids::HANDSHAKE, Some(data)).into_value())
    }

    /// `[:chsk/seq n]`: the sequence number of the next batch's last event (resume extension).
    pub fn seq_marker(seq: u64) -> Envelope {
        Envelope::new(crate::server::replay::seq_marker(seq))
    }

    /// `[:chsk/ws-ping nil]`: the server's keepalive ping (a bare keyword payload).
    pub fn ws_ping() -> Envelope {
        Envelope::new(Value::kw(ids::WS_PING))
    }

    /// `["pong" cb]`: the automatic answer to a client ping.
    pub fn pong(cb: Value) -> Envelope {
        Envelope {
            payload: Value::Str("pong".to_owned()),
            cb: Some(cb),
        }
    }

    /// `[[ev1 ev2 ...] nil]`: a batch of pushed events.
    pub fn push_batch(events: impl IntoIterator<Item = Event>) -> Envelope {
        Envelope::new(Value::Vector(
            events.into_iter().map(Event::into_value).collect(),
        ))
    }

    /// `[reply cb]`: a WebSocket reply.
    pub fn ws_reply(reply: Value, cb: Value) -> Envelope {
        Envelope {
            payload: reply,
            cb: Some(cb),
        }
    }

    /// `[reply nil]`: an Ajax POST reply (correlated by the HTTP exchange).
    pub fn ajax_reply(reply: Value) -> Envelope {
        Envelope::new(reply)
    }

    /// `[:chsk/dummy-cb-200 nil]`: Ajax POST answer when no reply was asked for.
    pub fn dummy_cb_200() -> Envelope {
        Envelope::new(Value::kw(ids::DUMMY_CB_200))
    }

    /// `[:chsk/timeout nil]`: long-poll expiry, or an Ajax reply that did not come in time.
    pub fn timeout() -> Envelope {
        Envelope::new(Value::kw(ids::TIMEOUT))
    }
}

/// Client -> server messages (spec 3), as named constructors.
pub mod client_msg {
    use super::{Envelope, Event, Value, ids};

    /// `[[:chsk/ws-pong] nil]`: answer to a server ping.
    pub fn ws_pong() -> Envelope {
        Envelope::new(Event::reserved(ids::WS_PONG, None).into_value())
    }

    /// `[[:chsk/ws-ping] cb]`: the client's keepalive ping; the server answers `"pong"`.
    pub fn ws_ping(cb: &str) -> Envelope {
        Envelope::with_cb(
            Event::reserved(ids::WS_PING, None).into_value(),
            Value::from(cb),
        )
    }

    /// `[event cb]`: an event, asking for a reply when `cb` is given (a 6-hex id on WebSocket).
    pub fn event(event: Event, cb: Option<&str>) -> Envelope {
        Envelope::with_cb(event.into_value(), cb.map_or(Value::Nil, Value::from))
    }

    /// `[event :ajax]` or `[event nil]`: an Ajax POST body.
    pub fn ajax_event(event: Event, wants_reply: bool) -> Envelope {
        let cb = if wants_reply {
            Value::kw("ajax")
        } else {
            Value::Nil
        };
        Envelope::with_cb(event.into_value(), cb)
    }
}

/// What the server received from a client, classified (spec 3 and 5.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMsg {
    /// `[[:chsk/ws-ping] cb]` with a cb: answer `["pong" cb]`, then deliver `[:chsk/ws-ping]`
    /// with no reply. (Without a cb it is delivered as a plain event and gets no pong.)
    Ping {
        /// The callback id to echo.
        cb: Value,
    },
    /// A valid event, asking for a reply when `cb` is set.
    Event {
        /// The event.
        event: Event,
        /// The callback id (WebSocket) or Ajax marker.
        cb: Option<Value>,
    },
    /// A payload that is not a valid event: delivered as `[:chsk/bad-event payload]`, with a
    /// reply when `cb` is set.
    BadEvent {
        /// The original payload.
        payload: Value,
        /// The callback id or Ajax marker.
        cb: Option<Value>,
    },
}

impl ClientMsg {
    /// Classifies an envelope received by the server.
    pub fn classify(envelope: Envelope) -> Self {
        let Envelope { payload, cb } = envelope;
        match Event::from_value(payload) {
            Ok(event) => {
                if event.id().as_str() == ids::WS_PING
                    && !event.has_data()
                    && let Some(cb) = cb
                {
                    return ClientMsg::Ping { cb };
                }
                ClientMsg::Event { event, cb }
            }
            Err(payload) => ClientMsg::BadEvent { payload, cb },
        }
    }

    /// The event handlers see: the event itself, `[:chsk/ws-ping]` for a ping, or
    /// `[:chsk/bad-event payload]`.
    pub fn into_event(self) -> (Event, Option<Value>) {
        match self {
            ClientMsg::Ping { .. } => (Event::reserved(ids::WS_PING, None), None),
            ClientMsg::Event { event, cb } => {
                // A pong never carries a reply.
                let cb = if event.id().as_str() == ids::WS_PONG {
                    None
                } else {
                    cb
                };
                (event, cb)
            }
            ClientMsg::BadEvent { payload, cb } => (Event::bad_event(payload), cb),
        }
    }
}

/// What a client received from the server over a WebSocket or an Ajax poll, classified.
/// Non-exhaustive: protocol extensions add kinds of messages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMsg {
    /// `[:chsk/handshake [uid nil handshake-data]]` (2 or 3 data elements accepted).
    Handshake {
        /// The server-resolved uid.
        uid: Uid,
        /// The app's handshake data (`nil` if none).
        data: Value,
        /// The resume extension's answer (a fourth element; see [`crate::server::replay`]).
        resume: Option<crate::server::replay::ResumeInfo>,
        /// The server dedupes this client's retried requests ([`crate::idem`]).
        idem: bool,
    },
    /// `[:chsk/seq n]` (resume extension): the next batch's last event has sequence number `n`.
    Seq(u64),
    /// The server's keepalive ping (bare `:chsk/ws-ping`).
    Ping,
    /// A batch of pushed events, in order.
    Batch(Vec<Event>),
    /// A batch whose first element is the marker `[:chsk/seq n]` (resume extension, an Ajax
    /// poll answer; see [`crate::server::replay`]): the events that follow it, the last one
    /// numbered `seq`.
    NumberedBatch {
        /// The sequence number of the last event.
        seq: u64,
        /// The events, in order.
        events: Vec<Event>,
    },
    /// A reply (WebSocket): `[value cb]`; the client's ping gets `"pong"` here.
    Reply {
        /// The callback id it answers.
        cb: Value,
        /// The reply value.
        value: Value,
    },
    /// `:chsk/timeout` on an Ajax poll: nothing to deliver, poll again.
    PollTimeout,
    /// A payload that fits none of the above (e.g. a batch with an invalid or `chsk/*` event);
    /// clients report it and carry on.
    Invalid(Value),
}

impl ServerMsg {
    /// Classifies an envelope received by a client.
    pub fn classify(envelope: Envelope) -> Self {
        let Envelope { payload, cb } = envelope;
        if let Some(cb) = cb {
            return ServerMsg::Reply { cb, value: payload };
        }
        if payload.is_kw(ids::WS_PING) {
            return ServerMsg::Ping;
        }
        if payload.is_kw(ids::TIMEOUT) {
            return ServerMsg::PollTimeout;
        }
        let Value::Vector(items) = payload else {
            return ServerMsg::Invalid(payload);
        };
        if items.first().is_some_and(|v| v.is_kw(ids::HANDSHAKE)) {
            if let Some(Value::Vector(data)) = items.get(1)
                && (2..=4).contains(&data.len())
            {
                let uid = Uid::from_value(data[0].clone());
                let hd = data.get(2).cloned().unwrap_or(Value::Nil);
                let resume = data
                    .get(3)
                    .and_then(crate::server::replay::ResumeInfo::from_value);
                let idem = crate::idem::acknowledged(data.get(3));
                return ServerMsg::Handshake {
                    uid,
                    data: hd,
                    resume,
                    idem,
                };
            }
            return ServerMsg::Invalid(Value::Vector(items));
        }
        if items.first().is_some_and(|v| v.is_kw(ids::SEQ)) {
            return match seq_number(&items) {
                Some(n) => ServerMsg::Seq(n),
                None => ServerMsg::Invalid(Value::Vector(items)),
            };
        }
        let seq = match items.first() {
            Some(Value::Vector(m)) if m.first().is_some_and(|v| v.is_kw(ids::SEQ)) => {
                match seq_number(m) {
                    Some(n) => Some(n),
                    None => return ServerMsg::Invalid(Value::Vector(items)),
                }
            }
            _ => None,
        };
        let mut events = Vec::with_capacity(items.len());
        for item in &items[usize::from(seq.is_some())..] {
            match Event::from_value(item.clone()) {
                // A server request (the `req` extension) and a large event's reference (the
                // `large` extension) travel in a batch too.
                Ok(ev)
                    if !ev.id().is_reserved()
                        || ev.id().as_str() == ids::REQ
                        || ev.id().as_str() == ids::LARGE =>
                {
                    events.push(ev);
                }
                _ => return ServerMsg::Invalid(Value::Vector(items)),
            }
        }
        match seq {
            Some(seq) => ServerMsg::NumberedBatch { seq, events },
            None => ServerMsg::Batch(events),
        }
    }
}

/// The number of a marker's items `[:chsk/seq n]` (`n` a non-negative integer).
fn seq_number(items: &[Value]) -> Option<u64> {
    match items {
        [_, Value::Int(n)] => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// The answer to an Ajax POST, classified by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostReply {
    /// `:chsk/dummy-cb-200`: accepted, no reply asked for.
    Ack,
    /// `:chsk/timeout`: the server's handler did not reply in time.
    Timeout,
    /// The reply value.
    Reply(Value),
}

impl PostReply {
    /// Classifies the payload of a POST response envelope.
    pub fn classify(envelope: Envelope) -> Self {
        match envelope.payload {
            p if p.is_kw(ids::DUMMY_CB_200) => PostReply::Ack,
            p if p.is_kw(ids::TIMEOUT) => PostReply::Timeout,
            p => PostReply::Reply(p),
        }
    }
}
