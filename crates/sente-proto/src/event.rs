//! Events (`[ev-id ?data]`), event ids, user ids and client ids.

use sente_edn::{Keyword, Value};
use std::fmt;
use std::sync::Arc;

/// Ids of the events Sente reserves (namespace `chsk`).
pub mod ids {
    /// `[:chsk/handshake [uid nil handshake-data first?]]` (client side).
    pub const HANDSHAKE: &str = "chsk/handshake";
    /// `[:chsk/state [old new open-changed?]]` (client side).
    pub const STATE: &str = "chsk/state";
    /// Keepalive ping (server -> client bare keyword; client -> server `[:chsk/ws-ping]`).
    pub const WS_PING: &str = "chsk/ws-ping";
    /// Client answer to a server ping.
    pub const WS_PONG: &str = "chsk/ws-pong";
    /// Synthesized by the server when a uid gets its first connection.
    pub const UIDPORT_OPEN: &str = "chsk/uidport-open";
    /// Synthesized by the server when a uid loses its last connection.
    pub const UIDPORT_CLOSE: &str = "chsk/uidport-close";
    /// Wraps a received payload that is not a valid event.
    pub const BAD_EVENT: &str = "chsk/bad-event";
    /// Wraps a received frame that could not be unpacked (sente-rs; Sente <= 1.20 had it too).
    pub const BAD_PACKAGE: &str = "chsk/bad-package";
    /// Server-side command: `send(uid, [:chsk/close])` closes every connection of the uid.
    pub const CLOSE: &str = "chsk/close";
    /// Ajax POST answer when no reply was asked for.
    pub const DUMMY_CB_200: &str = "chsk/dummy-cb-200";
    /// Ajax poll expiry / server-side reply timeout; client-side request timeout.
    pub const TIMEOUT: &str = "chsk/timeout";
    /// Client-side: request made while the connection is closed.
    pub const CLOSED: &str = "chsk/closed";
    /// Client-side: the request failed (transport error).
    pub const ERROR: &str = "chsk/error";
    /// Wraps received events when `wrap-recv-evs?` is on (Sente <= 1.17 default).
    pub const RECV: &str = "chsk/recv";
    /// Resume extension: `[:chsk/seq n]`, the sequence number of the next batch's last event.
    pub const SEQ: &str = "chsk/seq";
    /// Requests extension: `[:chsk/req [id [ev-id data]]]`, a request from the server.
    pub const REQ: &str = "chsk/req";
    /// Requests extension: `[:chsk/rep [id reply]]` (or `[id nil reason]`), a client's answer.
    pub const REP: &str = "chsk/rep";
    /// Large-payload extension: `[:chsk/large {:id id :size n}]`, an event to fetch by HTTP.
    pub const LARGE: &str = "chsk/large";
    /// Large-payload extension (client side): `[:chsk/large-failed {:id id :size n :reason r}]`,
    /// an offloaded event that could not be fetched.
    pub const LARGE_FAILED: &str = "chsk/large-failed";
    /// `:sente/nil-uid`: the uid of anonymous clients.
    pub const NIL_UID: &str = "sente/nil-uid";
    /// `:sente/all-users-without-uid`: send target for every anonymous client.
    pub const ALL_USERS_WITHOUT_UID: &str = "sente/all-users-without-uid";
}

/// Whether `text` is a valid event id literal (`ns/name`, an optional leading `:`, no ASCII
/// whitespace), usable in constants: what [`event_id!`](crate::event_id) checks at compile
/// time. [`EventId::new`] also refuses non-ASCII whitespace.
#[doc(hidden)]
pub const fn valid_id_literal(text: &str) -> bool {
    let b = text.as_bytes();
    let start = if !b.is_empty() && b[0] == b':' { 1 } else { 0 };
    let mut slash = None;
    let mut i = start;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            return false;
        }
        if b[i] == b'/' && slash.is_none() {
            slash = Some(i);
        }
        i += 1;
    }
    match slash {
        Some(i) => i > start && i + 1 < b.len(),
        None => false,
    }
}

/// Why an event id was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid event id {text:?}: an event id is a namespaced keyword such as `my-app/some-req`")]
pub struct InvalidEventId {
    /// The text that was given.
    pub text: String,
}

/// A validated event id: a keyword with a namespace, e.g. `:my-app/some-req`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Keyword);

impl EventId {
    /// Parses `ns/name` (a leading `:` is accepted and dropped).
    pub fn new(text: &str) -> Result<Self, InvalidEventId> {
        let bare = text.strip_prefix(':').unwrap_or(text);
        Self::from_keyword(Keyword::new(bare))
    }

    /// An id from a literal known when the code is written, such as `"my-app/notice"`: panics
    /// at the caller's line, with the reason, if `text` is not a valid id. Use [`EventId::new`]
    /// for input; the [`event_id!`](crate::event_id) macro checks a literal at compile time.
    #[track_caller]
    pub fn from_static(text: &'static str) -> Self {
        match Self::new(text) {
            Ok(id) => id,
            Err(e) => panic!("{e}"),
        }
    }

    /// Validates a keyword as an event id.
    pub fn from_keyword(kw: Keyword) -> Result<Self, InvalidEventId> {
        if Self::is_valid(&kw) {
            Ok(EventId(kw))
        } else {
            Err(InvalidEventId {
                text: kw.as_str().to_owned(),
            })
        }
    }

    /// Whether `kw` is a valid event id: `ns/name`, both parts non-empty, no whitespace.
    fn is_valid(kw: &Keyword) -> bool {
        let text = kw.as_str();
        // One pass: the first `/` (neither first nor last: both parts non-empty), and whether
        // the id is ASCII without whitespace (`\t` to `\r`, the space); any other id is tested
        // per character.
        let (mut slash, mut ascii_clean) = (None, true);
        for (i, &b) in text.as_bytes().iter().enumerate() {
            if b == b'/' && slash.is_none() {
                slash = Some(i);
            }
            ascii_clean &= b.is_ascii() && !matches!(b, b' ' | b'\t'..=b'\r');
        }
        slash.is_some_and(|i| i > 0 && i + 1 < text.len())
            && (ascii_clean || !text.chars().any(char::is_whitespace))
    }

    /// An id from a constant known to be valid (the reserved ids in [`ids`]).
    pub(crate) fn reserved(text: &'static str) -> Self {
        EventId(Keyword::new(text))
    }

    /// `ns/name` without the colon.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        self.0.namespace().unwrap_or_default()
    }

    /// The name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// The keyword.
    pub fn keyword(&self) -> &Keyword {
        &self.0
    }

    /// Whether the id is in Sente's reserved `chsk` namespace.
    pub fn is_reserved(&self) -> bool {
        self.namespace() == "chsk"
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ":{}", self.as_str())
    }
}

impl std::str::FromStr for EventId {
    type Err = InvalidEventId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventId::new(s)
    }
}

impl TryFrom<&str> for EventId {
    type Error = InvalidEventId;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        EventId::new(s)
    }
}

/// An event: `[ev-id]` or `[ev-id data]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    id: EventId,
    /// `None` for the one-element form `[ev-id]`.
    data: Option<Value>,
}

impl Event {
    /// `[id data]`.
    pub fn new(id: EventId, data: impl Into<Value>) -> Self {
        Event {
            id,
            data: Some(data.into()),
        }
    }

    /// `[id]`, with no data slot.
    pub fn bare(id: EventId) -> Self {
        Event { id, data: None }
    }

    /// `[id data]` with `data` converted from any serde type (struct fields become keywords).
    pub fn typed<T: serde::Serialize + ?Sized>(
        id: EventId,
        data: &T,
    ) -> Result<Self, sente_edn::Error> {
        Ok(Event::new(id, sente_edn::to_value(data)?))
    }

    /// A reserved `chsk/*` event (crate-internal constructor).
    pub(crate) fn reserved(id: &'static str, data: Option<Value>) -> Self {
        Event {
            id: EventId::reserved(id),
            data,
        }
    }

    /// `[:chsk/uidport-open uid]` (`open`) or `[:chsk/uidport-close uid]`: the server's
    /// presence events.
    pub fn uidport(open: bool, uid: &Uid) -> Self {
        let id = if open {
            ids::UIDPORT_OPEN
        } else {
            ids::UIDPORT_CLOSE
        };
        Event::reserved(id, Some(uid.to_value()))
    }

    /// `[:chsk/bad-package data]`: how a message that could not be unpacked reaches handlers
    /// (`data`: the text of a text frame, or the length of a binary one).
    pub fn bad_package(data: Value) -> Self {
        Event::reserved(ids::BAD_PACKAGE, Some(data))
    }

    /// `[:chsk/bad-event original]`: how an invalid payload reaches handlers.
    pub fn bad_event(original: Value) -> Self {
        Event::reserved(ids::BAD_EVENT, Some(original))
    }

    /// The id.
    pub fn id(&self) -> &EventId {
        &self.id
    }

    /// The data (`nil` when absent).
    pub fn data(&self) -> &Value {
        const NIL: &Value = &Value::Nil;
        self.data.as_ref().unwrap_or(NIL)
    }

    /// Whether the event has a data slot (`[id data]` rather than `[id]`).
    pub fn has_data(&self) -> bool {
        self.data.is_some()
    }

    /// The data converted to a serde type.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, sente_edn::Error> {
        sente_edn::from_value(self.data().clone())
    }

    /// Consumes the event into its id and data.
    pub fn into_parts(self) -> (EventId, Value) {
        (self.id, self.data.unwrap_or(Value::Nil))
    }

    /// The wire form: `[id]` or `[id data]`.
    pub fn to_value(&self) -> Value {
        let mut v = Vec::with_capacity(2);
        v.push(Value::Keyword(self.id.0.clone()));
        if let Some(d) = &self.data {
            v.push(d.clone());
        }
        Value::Vector(v)
    }

    /// The wire form, consuming the event.
    pub fn into_value(self) -> Value {
        let mut v = Vec::with_capacity(2);
        v.push(Value::Keyword(self.id.0));
        if let Some(d) = self.data {
            v.push(d);
        }
        Value::Vector(v)
    }

    /// Validates a received value as an event (Sente's rule: a vector of 1 or 2 elements whose
    /// first element is a namespaced keyword). On failure the original value is returned, ready
    /// for [`Event::bad_event`].
    pub fn from_value(value: Value) -> Result<Self, Value> {
        let Value::Vector(items) = value else {
            return Err(value);
        };
        if !(1..=2).contains(&items.len()) {
            return Err(Value::Vector(items));
        }
        if !matches!(&items[0], Value::Keyword(kw) if EventId::is_valid(kw)) {
            return Err(Value::Vector(items));
        }
        let mut it = items.into_iter();
        let Some(Value::Keyword(kw)) = it.next() else {
            unreachable!("checked above")
        };
        Ok(Event {
            id: EventId(kw),
            data: it.next(),
        })
    }
}

impl fmt::Display for Event {
    /// The edn form, e.g. `[:my-app/req {:n 42}]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_value(), f)
    }
}

/// A user id, computed by the server from the request. One uid may have many clients (tabs,
/// devices); the server pushes to a uid, reaching all of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Uid {
    /// `:sente/nil-uid`: every client without a user id shares it. Sending to it reaches every
    /// anonymous client (Sente's `:sente/all-users-without-uid`).
    Nil,
    /// A user id: any value; a string is typical. Shared, so that a uid costs no allocation to
    /// copy: the server copies it into every push, poll answer and timer of its clients.
    Id(Arc<Value>),
}

impl Uid {
    /// Send target for every client without a user id (same as [`Uid::Nil`]).
    #[allow(non_upper_case_globals)]
    pub const AllWithoutUid: Uid = Uid::Nil;

    /// From a value: `nil`, `false`, `:sente/nil-uid` and `:sente/all-users-without-uid` map to
    /// [`Uid::Nil`].
    pub fn from_value(value: Value) -> Self {
        match value {
            Value::Nil | Value::Bool(false) => Uid::Nil,
            v if v.is_kw(ids::NIL_UID) || v.is_kw(ids::ALL_USERS_WITHOUT_UID) => Uid::Nil,
            v => Uid::Id(Arc::new(v)),
        }
    }

    /// The wire form (`:sente/nil-uid` for [`Uid::Nil`]).
    pub fn to_value(&self) -> Value {
        match self {
            Uid::Nil => Value::kw(ids::NIL_UID),
            Uid::Id(v) => Value::clone(v),
        }
    }

    /// The uid as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Uid::Id(v) => match &**v {
                Value::Str(s) => Some(s),
                _ => None,
            },
            Uid::Nil => None,
        }
    }

    /// Whether this is the anonymous uid.
    pub fn is_nil(&self) -> bool {
        matches!(self, Uid::Nil)
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => f.write_str(s),
            None => fmt::Display::fmt(&self.to_value(), f),
        }
    }
}

impl From<&str> for Uid {
    fn from(s: &str) -> Self {
        Uid::Id(Arc::new(Value::Str(s.to_owned())))
    }
}
impl From<String> for Uid {
    fn from(s: String) -> Self {
        Uid::Id(Arc::new(Value::Str(s)))
    }
}
impl From<i64> for Uid {
    fn from(n: i64) -> Self {
        Uid::Id(Arc::new(Value::Int(n)))
    }
}
impl<T: Into<Uid>> From<Option<T>> for Uid {
    fn from(v: Option<T>) -> Self {
        v.map_or(Uid::Nil, Into::into)
    }
}

/// Why a client id was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("client id must be a non-blank string of at most {max} bytes")]
pub struct InvalidClientId {
    /// The maximum length.
    pub max: usize,
}

/// A client id: an opaque non-blank string chosen by the client (one per tab; a UUID v4 by
/// default). Client-chosen and unauthenticated: never derive authorization from it.
///
/// Cheap to clone (shared text): a connection's id is held in several places for its lifetime.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(std::sync::Arc<str>);

impl ClientId {
    /// Longest accepted client id, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates a client id.
    pub fn new(text: impl Into<String>) -> Result<Self, InvalidClientId> {
        // A `String` becomes shared text by a copy, as a `&str` does.
        text.into().parse()
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Validates a borrowed client id (`"c1".parse::<ClientId>()`), copying it once (into its
/// shared text); [`ClientId::new`] takes anything that makes a `String`.
impl std::str::FromStr for ClientId {
    type Err = InvalidClientId;

    fn from_str(text: &str) -> Result<Self, InvalidClientId> {
        if text.trim().is_empty() || text.len() > Self::MAX_LEN {
            return Err(InvalidClientId { max: Self::MAX_LEN });
        }
        Ok(ClientId(text.into()))
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-byte test of ASCII ids agrees with the per-character rule for every character
    /// (ASCII and the non-ASCII whitespace), anywhere in the id.
    #[test]
    fn event_id_whitespace_rule() {
        let reference = |t: &str| {
            let kw = Keyword::new(t);
            kw.namespace().is_some_and(|ns| !ns.is_empty())
                && !kw.name().is_empty()
                && !t.chars().any(char::is_whitespace)
        };
        let chars = (0u32..0x3100).filter_map(char::from_u32);
        for c in chars {
            for t in [format!("a{c}/b"), format!("a/b{c}"), format!("{c}a/b")] {
                assert_eq!(EventId::is_valid(&Keyword::new(&t)), reference(&t), "{t:?}");
            }
        }
        for t in [
            "a//b",
            "//",
            "a/b/c",
            "/",
            "/a/b",
            "a/b/",
            "",
            "ns/na me",
            "ns/x\u{a0}",
        ] {
            assert_eq!(EventId::is_valid(&Keyword::new(t)), reference(t), "{t:?}");
        }
        assert!(!EventId::is_valid(&Keyword::new("a/")));
        assert!(!EventId::is_valid(&Keyword::new("/b")));
        assert!(!EventId::is_valid(&Keyword::new("ab")));
    }
}
