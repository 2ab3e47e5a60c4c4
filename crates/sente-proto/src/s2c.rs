//! Server-to-client requests (a negotiated extension of the Sente protocol): the server asks
//! each client of a uid a question and gets each one's answer. A plain Sente client never
//! announces the extension, so it never receives a request (it counts as
//! [`RequestError::Unsupported`] in the server's result).
//!
//! # Wire
//!
//! - A client that handles requests adds `req` to the `ext` query parameter (comma-separated
//!   extension names) of its WebSocket upgrade and of every Ajax GET.
//! - The server pushes `[:chsk/req [id [ev-id data]]]` to that client alone; `id` is an integer
//!   chosen by the server.
//! - The client answers with the event `[:chsk/rep [id reply]]` (a plain send, no callback), or
//!   `[:chsk/rep [id nil "reason"]]` when it cannot answer (no handler for `ev-id`: reason
//!   `"no-handler"`). The server accepts an answer only from the client the request went to,
//!   for a request still waiting; any other answer is refused and counted.
//!
//! [`RequestBook`] is the server's sans-IO book of waiting requests, bounded per client.
//!
//! # In a cluster
//!
//! A request id names the node that asked: its upper bits are the node's tag
//! ([`node_tag`], [`id_tag`]) and its lower [`ID_SEQ_BITS`] bits number it on that node; ids
//! stay below 2^53, so a JavaScript client reads them exactly. An answer that reaches a node
//! not holding its request (an Ajax POST lands on any node) is forwarded to the node its id
//! names, within a per-client budget ([`ForwardBudget`]), and judged there.

use crate::event::{ClientId, Event, EventId, Uid, ids};
use sente_edn::Value;
use std::collections::HashMap;

/// The extension's name in the `ext` query parameter.
pub const EXTENSION: &str = "req";

/// The reason a client gives when it has no handler for a request's event.
pub const NO_HANDLER: &str = "no-handler";

/// Longest reason text kept from a client's error answer.
const MAX_REASON_LEN: usize = 256;

/// Why one client gave no answer to a server request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The client did not announce the extension (a plain Sente client, or one without
    /// request handlers): it was not asked.
    #[error("the client does not handle server requests")]
    Unsupported,
    /// No answer within the timeout.
    #[error("no answer within the timeout")]
    Timeout,
    /// The client was gone, or went away before answering.
    #[error("the client is not connected")]
    Closed,
    /// The client already has as many requests waiting as allowed
    /// ([`RequestConfig::max_outstanding_per_client`]).
    #[error("too many requests waiting for this client (limit {limit})")]
    TooMany {
        /// The limit in force.
        limit: usize,
    },
    /// The client answered with an error (e.g. [`NO_HANDLER`]).
    #[error("the client answered with an error: {0}")]
    Client(String),
    /// The request could not be sent (e.g. over the message size limit).
    #[error("the request could not be sent: {0}")]
    Send(String),
}

/// Bounds of server-to-client requests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestConfig {
    /// Most requests waiting for one client's answer; more get [`RequestError::TooMany`].
    /// Default 16.
    pub max_outstanding_per_client: usize,
    /// Longest timeout a request may ask for, in ms (longer ones are cut to it). Default 60 000.
    pub max_timeout_ms: u64,
    /// In a cluster, how long past a request's timeout its node waits for the other nodes'
    /// answers (they ask their own clients with the same timeout, then answer through the
    /// backplane), in ms. Default 1 000.
    pub cluster_grace_ms: u64,
    /// In a cluster, most answers of one client per second that a node forwards to the node
    /// that asked (see the module docs); more are refused and counted on the receiving node,
    /// so a client spraying `chsk/rep` costs only itself. Default 64.
    pub max_forwarded_replies_per_client_per_sec: u32,
}

impl Default for RequestConfig {
    fn default() -> Self {
        RequestConfig {
            max_outstanding_per_client: 16,
            max_timeout_ms: 60_000,
            cluster_grace_ms: 1_000,
            max_forwarded_replies_per_client_per_sec: 64,
        }
    }
}

impl RequestConfig {
    /// Sets [`RequestConfig::max_outstanding_per_client`].
    pub fn max_outstanding_per_client(mut self, value: usize) -> Self {
        self.max_outstanding_per_client = value;
        self
    }

    /// Sets [`RequestConfig::max_timeout_ms`].
    pub fn max_timeout_ms(mut self, value: u64) -> Self {
        self.max_timeout_ms = value;
        self
    }

    /// Sets [`RequestConfig::cluster_grace_ms`].
    pub fn cluster_grace_ms(mut self, value: u64) -> Self {
        self.cluster_grace_ms = value;
        self
    }

    /// Sets [`RequestConfig::max_forwarded_replies_per_client_per_sec`].
    pub fn max_forwarded_replies_per_client_per_sec(mut self, value: u32) -> Self {
        self.max_forwarded_replies_per_client_per_sec = value;
        self
    }
}

/// Whether an `ext` parameter value (comma-separated names) announces [`EXTENSION`].
pub fn announced(ext: Option<&str>) -> bool {
    crate::large::ext_announces(ext, EXTENSION)
}

fn int(id: u64) -> Value {
    Value::Int(i64::try_from(id).unwrap_or(i64::MAX))
}

/// `[:chsk/req [id [ev-id data]]]`.
pub fn request_event(id: u64, event: &Event) -> Event {
    Event::new(
        EventId::from_static(ids::REQ),
        Value::Vector(vec![int(id), event.to_value()]),
    )
}

/// Reads the data of a `chsk/req` event: the request's id and event.
pub fn parse_request(data: &Value) -> Option<(u64, Event)> {
    let Value::Vector(v) = data else { return None };
    let [Value::Int(id), ev] = v.as_slice() else {
        return None;
    };
    let id = u64::try_from(*id).ok()?;
    let event = Event::from_value(ev.clone()).ok()?;
    Some((id, event))
}

/// `[:chsk/rep [id reply]]`, or `[:chsk/rep [id nil reason]]` for an error.
pub fn reply_event(id: u64, answer: Result<Value, String>) -> Event {
    let data = match answer {
        Ok(v) => vec![int(id), v],
        Err(reason) => vec![int(id), Value::Nil, Value::Str(reason)],
    };
    Event::new(EventId::from_static(ids::REP), Value::Vector(data))
}

/// Reads the data of a `chsk/rep` event: the request's id and the answer (`None`: malformed).
pub fn parse_reply(data: &Value) -> Option<(u64, Result<Value, RequestError>)> {
    let Value::Vector(v) = data else { return None };
    match v.as_slice() {
        [Value::Int(id), reply] => Some((u64::try_from(*id).ok()?, Ok(reply.clone()))),
        [Value::Int(id), Value::Nil, Value::Str(reason)] => {
            let mut reason = reason.clone();
            if reason.len() > MAX_REASON_LEN {
                let mut end = MAX_REASON_LEN;
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                reason.truncate(end);
            }
            Some((u64::try_from(*id).ok()?, Err(RequestError::Client(reason))))
        }
        _ => None,
    }
}

/// Bits of a request id that number it on its node (the bits above are the node's tag).
pub const ID_SEQ_BITS: u32 = 32;

/// Bits of a node's tag: with [`ID_SEQ_BITS`], ids stay below 2^53.
pub const ID_TAG_BITS: u32 = 20;

const SEQ_MASK: u64 = (1 << ID_SEQ_BITS) - 1;

/// The tag of the node whose id is `node` (the upper bits of the request ids it gives).
pub fn node_tag(node: u64) -> u32 {
    // Folded so that every bit of the node id counts.
    let folded = node ^ (node >> 21) ^ (node >> 42);
    u32::try_from(folded & ((1 << ID_TAG_BITS) - 1)).unwrap_or(0)
}

/// The tag of the node that gave request id `id`.
pub fn id_tag(id: u64) -> u32 {
    u32::try_from(id >> ID_SEQ_BITS).unwrap_or(u32::MAX)
}

/// How many answers a node forwards for each client to the node that asked, per second
/// ([`RequestConfig::max_forwarded_replies_per_client_per_sec`]). Counted in windows of one
/// second; what it holds is the clients that had an answer forwarded in the current window
/// (bounded by the POSTs of that second).
#[derive(Debug, Default)]
pub struct ForwardBudget {
    window: u64,
    counts: HashMap<(Uid, ClientId), u32>,
}

impl ForwardBudget {
    /// An empty budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether one more answer of client `cid` of `uid` may be forwarded at `now_ms` (and
    /// counts it), at most `per_sec` per second.
    pub fn take(&mut self, uid: &Uid, cid: &ClientId, per_sec: u32, now_ms: u64) -> bool {
        let window = now_ms / 1000;
        if window != self.window {
            self.window = window;
            self.counts.clear();
        }
        let n = self.counts.entry((uid.clone(), cid.clone())).or_insert(0);
        if *n >= per_sec {
            return false;
        }
        *n += 1;
        true
    }
}

/// The requests waiting for answers, each held with the waiter `T` (e.g. a channel), bounded
/// per client. An answer is taken only from the client its request went to.
#[derive(Debug)]
pub struct RequestBook<T> {
    next: u64,
    waiting: HashMap<u64, (Uid, ClientId, T)>,
    per_client: HashMap<(Uid, ClientId), usize>,
}

impl<T> Default for RequestBook<T> {
    fn default() -> Self {
        RequestBook {
            next: 1,
            waiting: HashMap::new(),
            per_client: HashMap::new(),
        }
    }
}

impl<T> RequestBook<T> {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty book whose ids name the node tagged `tag` ([`node_tag`]).
    pub fn tagged(tag: u32) -> Self {
        RequestBook {
            next: (u64::from(tag) << ID_SEQ_BITS) | 1,
            ..Self::default()
        }
    }

    /// The tag of the node this book's ids name.
    pub fn tag(&self) -> u32 {
        id_tag(self.next)
    }

    /// Opens a request to client `cid` of `uid`: its id, or the waiter back when the client
    /// already has `limit` requests waiting.
    pub fn open(&mut self, uid: &Uid, cid: &ClientId, limit: usize, waiter: T) -> Result<u64, T> {
        let key = (uid.clone(), cid.clone());
        let n = self.per_client.get(&key).copied().unwrap_or(0);
        if n >= limit {
            return Err(waiter);
        }
        self.per_client.insert(key, n + 1);
        let mut id = self.next;
        // Within the node's tag: the number wraps (skipping 0 and ids still waiting).
        while id & SEQ_MASK == 0 || self.waiting.contains_key(&id) {
            id = (id & !SEQ_MASK) | ((id + 1) & SEQ_MASK);
        }
        self.next = (id & !SEQ_MASK) | ((id + 1) & SEQ_MASK);
        self.waiting.insert(id, (uid.clone(), cid.clone(), waiter));
        Ok(id)
    }

    /// Client `cid` of `uid` answered request `id`: its waiter, or `None` (refused) when no
    /// such request waits for that client.
    pub fn answer(&mut self, uid: &Uid, cid: &ClientId, id: u64) -> Option<T> {
        match self.waiting.get(&id) {
            Some((u, c, _)) if u == uid && c == cid => self.close(id),
            _ => None,
        }
    }

    /// Gives up request `id` (timed out, or not sent): its waiter, if it still waits.
    pub fn close(&mut self, id: u64) -> Option<T> {
        let (uid, cid, waiter) = self.waiting.remove(&id)?;
        let key = (uid, cid);
        if let Some(n) = self.per_client.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&key);
            }
        }
        Some(waiter)
    }

    /// Requests waiting for client `cid` of `uid`.
    pub fn outstanding(&self, uid: &Uid, cid: &ClientId) -> usize {
        self.per_client
            .get(&(uid.clone(), cid.clone()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests waiting in all.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no request waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packer::{EdnPacker, JsonPacker, Packer};

    #[test]
    fn requests_and_replies_round_trip_through_the_packers() {
        let ev = Event::new(EventId::new("app/ask").unwrap(), Value::from("q"));
        for packer in [&EdnPacker as &dyn Packer, &JsonPacker] {
            let req = request_event(7, &ev);
            let packed = packer.pack(&req.to_value()).unwrap();
            let back = packer
                .unpack(packed.as_bytes(), &crate::Limits::default())
                .unwrap();
            let back = Event::from_value(back).unwrap();
            assert_eq!(back.id().as_str(), ids::REQ);
            let (id, got) = parse_request(back.data()).unwrap();
            assert_eq!((id, got.id().as_str()), (7, "app/ask"));
            assert_eq!(got.data(), &Value::from("q"));
            for answer in [Ok(Value::Int(3)), Err(NO_HANDLER.to_owned())] {
                let rep = reply_event(7, answer.clone());
                let packed = packer.pack(&rep.to_value()).unwrap();
                let v = packer
                    .unpack(packed.as_bytes(), &crate::Limits::default())
                    .unwrap();
                let (id, got) = parse_reply(Event::from_value(v).unwrap().data()).unwrap();
                assert_eq!(id, 7);
                assert_eq!(got, answer.map_err(RequestError::Client));
            }
        }
        for bad in [Value::Nil, Value::Vector(vec![Value::Int(-1), Value::Nil])] {
            assert!(parse_reply(&bad).is_none());
            assert!(parse_request(&bad).is_none());
        }
        assert!(announced(Some("x, req")) && !announced(Some("request")) && !announced(None));
    }

    #[test]
    fn the_book_takes_answers_only_from_the_asked_client_and_is_bounded() {
        let (u, v) = (Uid::from("u"), Uid::from("v"));
        let (a, b) = (ClientId::new("a").unwrap(), ClientId::new("b").unwrap());
        let mut book = RequestBook::new();
        let r1 = book.open(&u, &a, 2, "w1").unwrap();
        let r2 = book.open(&u, &a, 2, "w2").unwrap();
        assert_eq!(book.open(&u, &a, 2, "w3"), Err("w3"));
        assert!(book.open(&u, &b, 2, "w4").is_ok());
        assert_eq!(book.answer(&u, &b, r1), None);
        assert_eq!(book.answer(&v, &a, r1), None);
        assert_eq!(book.answer(&u, &a, 999), None);
        assert_eq!(book.answer(&u, &a, r1), Some("w1"));
        assert_eq!(book.answer(&u, &a, r1), None);
        assert_eq!(book.outstanding(&u, &a), 1);
        assert_eq!(book.close(r2), Some("w2"));
        assert_eq!(book.outstanding(&u, &a), 0);
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn ids_name_their_node_and_stay_exact_in_javascript() {
        for node in [0, 1, u64::MAX, 0x1234_5678_9abc_def0] {
            let tag = node_tag(node);
            let mut book = RequestBook::tagged(tag);
            assert_eq!(book.tag(), tag);
            let u = Uid::from("u");
            let a = ClientId::new("a").unwrap();
            let id = book.open(&u, &a, 4, ()).unwrap();
            assert_eq!(id_tag(id), tag);
            assert!(id < 1 << 53, "{id}");
            assert_ne!(id & SEQ_MASK, 0);
        }
        // The number wraps within the tag, past 0 and past an id still waiting.
        let (u, a) = (Uid::from("u"), ClientId::new("a").unwrap());
        let mut book = RequestBook::tagged(3);
        let first = book.open(&u, &a, 4, ()).unwrap();
        book.next = (3 << ID_SEQ_BITS) | SEQ_MASK;
        let last = book.open(&u, &a, 4, ()).unwrap();
        assert_eq!(last & SEQ_MASK, SEQ_MASK);
        let wrapped = book.open(&u, &a, 4, ()).unwrap();
        assert_eq!(
            wrapped,
            first + 1,
            "0 and the waiting id {first} are skipped"
        );
        assert!([first, last, wrapped].iter().all(|i| id_tag(*i) == 3));
    }

    #[test]
    fn the_forward_budget_is_per_client_per_second() {
        let (u, a, b) = (
            Uid::from("u"),
            ClientId::new("a").unwrap(),
            ClientId::new("b").unwrap(),
        );
        let mut budget = ForwardBudget::new();
        assert!((0..3).all(|_| budget.take(&u, &a, 3, 1_000)));
        assert!(!budget.take(&u, &a, 3, 1_999), "over the budget of a");
        assert!(budget.take(&u, &b, 3, 1_999), "b has its own");
        assert!(budget.take(&u, &a, 3, 2_000), "a new second");
        assert!(!budget.take(&u, &a, 0, 5_000), "0: nothing is forwarded");
    }
}
