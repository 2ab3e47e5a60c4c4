//! Idempotent client requests (a negotiated extension of the Sente protocol): a request the
//! client retries after a reconnect takes effect once on the server and gets its original
//! reply. A plain Sente client never announces the extension and never sees any of it.
//!
//! # Wire
//!
//! - A client that may retry requests adds `idem` to the `ext` query parameter
//!   (comma-separated extension names) of its WebSocket upgrade, Ajax GETs and Ajax POSTs.
//! - The server answers such a client's handshake with a fourth data element, a map holding
//!   `:idem true` (with the resume extension's keys when it resumes, see
//!   [`crate::server::replay`]): only then may the client retry, since only then does the
//!   server dedupe.
//! - A request the client may retry carries a *request id* as its callback id instead of
//!   Sente's 6-character one (WebSocket) or `:ajax` marker (Ajax POST): a string starting with
//!   [`PREFIX`], unique per client id ([`request_id`] reads it, at most [`MAX_ID_LEN`]
//!   bytes). Over WebSocket the reply echoes it as usual; over Ajax the reply is the POST's
//!   response as usual.
//! - The server keeps a window of the request ids it saw per (uid, client id)
//!   ([`DedupeWindow`]): a request id seen before is not dispatched again. If its reply is
//!   known the retry gets that reply; if its handler still runs the retry gets the same reply
//!   when it comes. A retry may come over the other transport.
//!
//! The window lives on one node; in a cluster, a backplane with
//! [`Backplane::idem`](crate::backplane::Backplane::idem) (Redis, NATS) lets a copy that
//! passed the window run only if no node claimed its id (see `sente::idem`).

use crate::event::{ClientId, Uid};
use crate::server::estimate_size;
use sente_edn::Value;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// The extension's name in the `ext` query parameter.
pub const EXTENSION: &str = "idem";

/// The first character of a request id (a plain Sente client's callback ids are hex; the
/// json packer escapes strings starting with `~` or `:`).
pub const PREFIX: char = '!';

/// Longest request id taken (longer ones are handled as plain callback ids: not deduped).
pub const MAX_ID_LEN: usize = 64;

/// The key of the server's acknowledgement in the handshake's fourth data element.
pub const ACK_KEY: &str = "idem";

/// Bookkeeping bytes counted per remembered request, on top of its id and reply.
const ENTRY_OVERHEAD: usize = 96;

/// Whether an `ext` parameter value (comma-separated names) announces [`EXTENSION`].
pub fn announced(ext: Option<&str>) -> bool {
    ext.is_some_and(|e| e.split(',').any(|n| n.trim() == EXTENSION))
}

/// The request id a callback id carries, if it is one ([`PREFIX`], at most [`MAX_ID_LEN`]
/// bytes, not only the prefix).
pub fn request_id(cb: &Value) -> Option<&str> {
    match cb {
        Value::Str(s) if s.starts_with(PREFIX) && s.len() > 1 && s.len() <= MAX_ID_LEN => Some(s),
        _ => None,
    }
}

/// Whether a handshake's fourth data element acknowledges the extension (`:idem true`, or
/// `"idem" true` as a JSON packer gives it).
pub fn acknowledged(extra: Option<&Value>) -> bool {
    let Some(Value::Map(map)) = extra else {
        return false;
    };
    map.iter().any(|(k, v)| {
        (k.is_kw(ACK_KEY) || matches!(k, Value::Str(s) if s == ACK_KEY))
            && matches!(v, Value::Bool(true))
    })
}

/// Bounds of the server's dedupe window.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdemConfig {
    /// Most request ids remembered per (uid, client id); the oldest is forgotten first.
    /// Default 64.
    pub max_per_client: usize,
    /// How long a request id is remembered after it first arrived, in ms. Default 120 000
    /// (twice the clients' longest usual request timeout).
    pub max_age_ms: u64,
    /// Most bytes remembered on the node in all (replies' estimated packed size plus about
    /// 100 bytes per request id). Over it, the client holding the most bytes loses its oldest
    /// request id first, so a client that makes many retryable requests with large replies
    /// pushes out its own, never a lighter client's before its own are gone. Default 8 MiB.
    pub max_bytes: usize,
}

impl Default for IdemConfig {
    fn default() -> Self {
        IdemConfig {
            max_per_client: 64,
            max_age_ms: 120_000,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

impl IdemConfig {
    /// Sets [`IdemConfig::max_per_client`].
    pub fn max_per_client(mut self, value: usize) -> Self {
        self.max_per_client = value;
        self
    }

    /// Sets [`IdemConfig::max_age_ms`].
    pub fn max_age_ms(mut self, value: u64) -> Self {
        self.max_age_ms = value;
        self
    }

    /// Sets [`IdemConfig::max_bytes`].
    pub fn max_bytes(mut self, value: usize) -> Self {
        self.max_bytes = value;
        self
    }
}

/// What a request id's arrival means ([`DedupeWindow::begin`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Begin<S> {
    /// First seen: dispatch it; its outcome goes to `S` and then [`DedupeWindow::finish`].
    Run(S),
    /// Its handler still runs: wait on `S` for the same outcome.
    Running(S),
    /// Done: the original outcome (`None`: the handler answered nothing).
    Done(Option<Value>),
}

#[derive(Debug)]
enum State<S> {
    Running(S),
    Done(Option<Value>),
}

#[derive(Debug)]
struct Entry<S> {
    state: State<S>,
    seq: u64,
    bytes: usize,
}

type Key = (Uid, ClientId);

/// One client's remembered request ids.
#[derive(Debug)]
struct Client<S> {
    ids: HashMap<String, Entry<S>>,
    /// The sum of its entries' bytes.
    bytes: usize,
    /// Its number in [`DedupeWindow::by_bytes`] and [`DedupeWindow::keys`].
    no: u64,
}

/// The server's sans-IO dedupe window: per (uid, client id), the request ids seen, each with
/// its handler's shared outcome slot `S` while it runs, then its reply. Bounded by
/// [`IdemConfig`]: count per client and age (oldest forgotten first), and bytes in all (the
/// heaviest client's oldest forgotten first). Time is the caller's monotonic milliseconds.
#[derive(Debug)]
pub struct DedupeWindow<S> {
    cfg: IdemConfig,
    clients: HashMap<Key, Client<S>>,
    /// Every client with remembered ids as (its bytes, its number): the heaviest is last.
    by_bytes: BTreeSet<(usize, u64)>,
    /// A client's key by its number.
    keys: HashMap<u64, Key>,
    next_client: u64,
    /// Every remembered id in arrival order: (seq, arrival ms, key, id). Entries forgotten
    /// early (per-client bound) stay here until they reach the front, recognized by `seq`.
    order: VecDeque<(u64, u64, Key, String)>,
    next_seq: u64,
    bytes: usize,
    len: usize,
}

impl<S: Clone> DedupeWindow<S> {
    /// An empty window bounded by `cfg`.
    pub fn new(cfg: IdemConfig) -> Self {
        DedupeWindow {
            cfg,
            clients: HashMap::new(),
            by_bytes: BTreeSet::new(),
            keys: HashMap::new(),
            next_client: 0,
            order: VecDeque::new(),
            next_seq: 0,
            bytes: 0,
            len: 0,
        }
    }

    /// The bounds.
    pub fn config(&self) -> &IdemConfig {
        &self.cfg
    }

    /// Request `id` of client `cid` of `uid` arrived at `now`: run it (a new slot from
    /// `slot`), wait for its running handler, or take its known outcome.
    pub fn begin(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        id: &str,
        now: u64,
        slot: impl FnOnce() -> S,
    ) -> Begin<S> {
        self.expire(now);
        let key = (uid.clone(), cid.clone());
        if let Some(e) = self.clients.get(&key).and_then(|c| c.ids.get(id)) {
            return match &e.state {
                State::Running(s) => Begin::Running(s.clone()),
                State::Done(v) => Begin::Done(v.clone()),
            };
        }
        if self.cfg.max_per_client == 0 || self.cfg.max_bytes == 0 {
            return Begin::Run(slot());
        }
        let s = slot();
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = ENTRY_OVERHEAD + id.len();
        let client = match self.clients.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let no = self.next_client;
                self.next_client += 1;
                self.keys.insert(no, v.key().clone());
                self.by_bytes.insert((0, no));
                v.insert(Client {
                    ids: HashMap::new(),
                    bytes: 0,
                    no,
                })
            }
        };
        client.ids.insert(
            id.to_owned(),
            Entry {
                state: State::Running(s.clone()),
                seq,
                bytes,
            },
        );
        let over = client.ids.len() > self.cfg.max_per_client;
        Self::add_bytes(&mut self.by_bytes, client, bytes as isize);
        self.bytes += bytes;
        self.len += 1;
        self.order.push_back((seq, now, key.clone(), id.to_owned()));
        if over {
            self.forget_oldest_of(&key);
        }
        self.shrink();
        Begin::Run(s)
    }

    /// The handler of request `id` finished with `reply` (`None`: it answered nothing): later
    /// retries get it. Ignored when the id was forgotten meanwhile.
    pub fn finish(&mut self, uid: &Uid, cid: &ClientId, id: &str, reply: Option<Value>) {
        let key = (uid.clone(), cid.clone());
        let Some(client) = self.clients.get_mut(&key) else {
            return;
        };
        let Some(e) = client.ids.get_mut(id) else {
            return;
        };
        if !matches!(e.state, State::Running(_)) {
            return;
        }
        let size = reply
            .as_ref()
            .map_or(0, |v| estimate_size(v, self.cfg.max_bytes));
        e.bytes += size;
        e.state = State::Done(reply);
        Self::add_bytes(&mut self.by_bytes, client, size as isize);
        self.bytes += size;
        self.shrink();
    }

    /// Forgets request `id` (it was refused before it ran, e.g. its client's queue was full):
    /// a retry runs it.
    pub fn forget(&mut self, uid: &Uid, cid: &ClientId, id: &str) {
        let key = (uid.clone(), cid.clone());
        let seq = self
            .clients
            .get(&key)
            .and_then(|c| c.ids.get(id))
            .map(|e| e.seq);
        if let Some(seq) = seq {
            self.remove(&key, id, seq);
        }
    }

    /// Forgets what is older than [`IdemConfig::max_age_ms`] at `now`.
    pub fn expire(&mut self, now: u64) {
        while let Some((_, at, ..)) = self.order.front() {
            if now.saturating_sub(*at) < self.cfg.max_age_ms {
                break;
            }
            self.pop_front();
        }
    }

    /// Request ids remembered in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes counted in all (see [`IdemConfig::max_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Request ids remembered for client `cid` of `uid`.
    pub fn client_len(&self, uid: &Uid, cid: &ClientId) -> usize {
        self.clients
            .get(&(uid.clone(), cid.clone()))
            .map_or(0, |c| c.ids.len())
    }

    /// Bytes counted for client `cid` of `uid`.
    pub fn client_bytes(&self, uid: &Uid, cid: &ClientId) -> usize {
        self.clients
            .get(&(uid.clone(), cid.clone()))
            .map_or(0, |c| c.bytes)
    }

    /// Moves `client`'s place in `by_bytes` after its bytes grew (or shrank) by `delta`.
    fn add_bytes(by_bytes: &mut BTreeSet<(usize, u64)>, client: &mut Client<S>, delta: isize) {
        by_bytes.remove(&(client.bytes, client.no));
        client.bytes = client.bytes.saturating_add_signed(delta);
        by_bytes.insert((client.bytes, client.no));
    }

    /// While over the byte bound, forgets the oldest entry of the client holding the most.
    fn shrink(&mut self) {
        while self.bytes > self.cfg.max_bytes {
            let Some(key) = self
                .by_bytes
                .last()
                .and_then(|(_, no)| self.keys.get(no))
                .cloned()
            else {
                break;
            };
            self.forget_oldest_of(&key);
        }
    }

    /// Forgets the front of the arrival order (if it is still remembered).
    fn pop_front(&mut self) {
        if let Some((seq, _, key, id)) = self.order.pop_front() {
            self.remove(&key, &id, seq);
        }
    }

    fn forget_oldest_of(&mut self, key: &Key) {
        let oldest = self.clients.get(key).and_then(|c| {
            c.ids
                .iter()
                .min_by_key(|(_, e)| e.seq)
                .map(|(id, e)| (id.clone(), e.seq))
        });
        if let Some((id, seq)) = oldest {
            self.remove(key, &id, seq);
        }
    }

    fn remove(&mut self, key: &Key, id: &str, seq: u64) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.ids.get(id).is_none_or(|e| e.seq != seq) {
            return;
        }
        if let Some(e) = client.ids.remove(id) {
            Self::add_bytes(&mut self.by_bytes, client, -(e.bytes as isize));
            self.bytes -= e.bytes;
            self.len -= 1;
        }
        if client.ids.is_empty() {
            self.by_bytes.remove(&(client.bytes, client.no));
            self.keys.remove(&client.no);
            self.clients.remove(key);
        }
        // Compacts the arrival order when it holds mostly forgotten entries.
        if self.order.len() > 64 && self.order.len() > 4 * self.len {
            let clients = &self.clients;
            self.order.retain(|(seq, _, key, id)| {
                clients
                    .get(key)
                    .and_then(|c| c.ids.get(id))
                    .is_some_and(|e| e.seq == *seq)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Uid, ClientId, ClientId) {
        (
            Uid::from("u"),
            ClientId::new("a").unwrap(),
            ClientId::new("b").unwrap(),
        )
    }

    #[test]
    fn wire_helpers() {
        assert_eq!(request_id(&Value::from("!x.1")), Some("!x.1"));
        for not in [
            Value::from("3f2a9c"),
            Value::from("!"),
            Value::kw("ajax"),
            Value::Int(0),
            Value::from(format!("!{}", "x".repeat(MAX_ID_LEN))),
        ] {
            assert_eq!(request_id(&not), None, "{not:?}");
        }
        assert!(announced(Some("req,idem")) && !announced(Some("idempotent")));
        let mut m = sente_edn::Map::new();
        m.insert(Value::kw("idem"), Value::Bool(true));
        assert!(acknowledged(Some(&Value::Map(m))));
        let mut m = sente_edn::Map::new();
        m.insert(Value::from("idem"), Value::Bool(true));
        assert!(acknowledged(Some(&Value::Map(m))));
        assert!(!acknowledged(None) && !acknowledged(Some(&Value::Nil)));
    }

    #[test]
    fn a_request_runs_once_and_retries_get_its_reply() {
        let (u, a, b) = ids();
        let mut w = DedupeWindow::new(IdemConfig::default());
        assert_eq!(w.begin(&u, &a, "!1", 0, || 1), Begin::Run(1));
        assert_eq!(w.begin(&u, &a, "!1", 5, || 2), Begin::Running(1));
        // Another client's id is its own.
        assert_eq!(w.begin(&u, &b, "!1", 5, || 3), Begin::Run(3));
        w.finish(&u, &a, "!1", Some(Value::Int(42)));
        assert_eq!(
            w.begin(&u, &a, "!1", 10, || 4),
            Begin::Done(Some(Value::Int(42)))
        );
        // A second finish (e.g. a late duplicate) changes nothing.
        w.finish(&u, &a, "!1", Some(Value::Int(7)));
        assert_eq!(
            w.begin(&u, &a, "!1", 10, || 4),
            Begin::Done(Some(Value::Int(42)))
        );
        w.finish(&u, &b, "!1", None);
        assert_eq!(w.begin(&u, &b, "!1", 10, || 5), Begin::Done(None));
        assert_eq!(w.len(), 2);
        // A forgotten id (refused before it ran) runs again.
        w.forget(&u, &b, "!1");
        assert_eq!(w.begin(&u, &b, "!1", 10, || 6), Begin::Run(6));
    }

    #[test]
    fn the_window_is_bounded_by_count_per_client() {
        let (u, a, b) = ids();
        let mut w = DedupeWindow::new(IdemConfig::default().max_per_client(3));
        for i in 0..5 {
            assert!(matches!(
                w.begin(&u, &a, &format!("!{i}"), i, || i),
                Begin::Run(_)
            ));
        }
        w.begin(&u, &b, "!0", 5, || 9);
        assert_eq!(w.client_len(&u, &a), 3);
        assert_eq!(w.client_len(&u, &b), 1);
        // The oldest two of `a` were forgotten: they would run again.
        assert_eq!(w.begin(&u, &a, "!4", 6, || 0), Begin::Running(4));
        assert!(matches!(w.begin(&u, &a, "!0", 6, || 10), Begin::Run(10)));
        assert_eq!(w.client_len(&u, &a), 3);
        assert_eq!(w.len(), 4);
    }

    #[test]
    fn the_window_is_bounded_by_age() {
        let (u, a, _) = ids();
        let mut w = DedupeWindow::new(IdemConfig::default().max_age_ms(100));
        w.begin(&u, &a, "!1", 0, || 1);
        w.finish(&u, &a, "!1", Some(Value::Int(1)));
        w.begin(&u, &a, "!2", 50, || 2);
        assert!(matches!(w.begin(&u, &a, "!1", 99, || 0), Begin::Done(_)));
        assert!(matches!(w.begin(&u, &a, "!1", 100, || 3), Begin::Run(3)));
        assert_eq!(w.begin(&u, &a, "!2", 120, || 0), Begin::Running(2));
        w.expire(1_000);
        assert!(w.is_empty());
        assert_eq!(w.bytes(), 0);
    }

    #[test]
    fn a_heavy_client_pushes_out_its_own_replies_first() {
        let (u, light, heavy) = ids();
        let max = 16 * 1024;
        let mut w = DedupeWindow::new(IdemConfig::default().max_bytes(max));
        // The light client's small reply is the oldest entry of the node.
        w.begin(&u, &light, "!kept", 0, || 0);
        w.finish(&u, &light, "!kept", Some(Value::Int(1)));
        let big = Value::from("x".repeat(3000));
        for i in 0..40 {
            let id = format!("!{i}");
            w.begin(&u, &heavy, &id, i, || i);
            w.finish(&u, &heavy, &id, Some(big.clone()));
            assert!(w.bytes() <= max, "{} > {max}", w.bytes());
        }
        // The heavy client lost its oldest replies, the light one kept its reply.
        assert_eq!(
            w.begin(&u, &light, "!kept", 50, || 99),
            Begin::Done(Some(Value::Int(1)))
        );
        assert!(matches!(
            w.begin(&u, &heavy, "!0", 50, || 99),
            Begin::Run(99)
        ));
        assert!(w.client_bytes(&u, &heavy) <= max);
        assert!(w.client_bytes(&u, &light) < 200);
        assert_eq!(
            w.bytes(),
            w.client_bytes(&u, &heavy) + w.client_bytes(&u, &light)
        );
    }

    #[test]
    fn the_window_is_bounded_by_bytes_of_replies() {
        let (u, a, b) = ids();
        let max = 4 * 1024;
        let mut w = DedupeWindow::new(IdemConfig::default().max_bytes(max));
        let big = Value::from("x".repeat(1500));
        for i in 0..4 {
            let id = format!("!{i}");
            let cid = if i % 2 == 0 { &a } else { &b };
            w.begin(&u, cid, &id, i, || i);
            w.finish(&u, cid, &id, Some(big.clone()));
            assert!(w.bytes() <= max, "{} > {max}", w.bytes());
        }
        // Two 1.5 KB replies fit in 4 KiB, a third does not: the oldest went first.
        assert_eq!(w.len(), 2);
        assert!(matches!(w.begin(&u, &a, "!0", 10, || 9), Begin::Run(9)));
        assert!(matches!(
            w.begin(&u, &b, "!3", 10, || 9),
            Begin::Done(Some(_))
        ));
        // A reply larger than the whole bound is not kept at all.
        let mut w = DedupeWindow::new(IdemConfig::default().max_bytes(1000));
        w.begin(&u, &a, "!1", 0, || 1);
        w.finish(&u, &a, "!1", Some(Value::from("y".repeat(2000))));
        assert!(w.is_empty() && w.bytes() == 0);
        // Zero bounds turn dedupe off.
        let mut w = DedupeWindow::new(IdemConfig::default().max_per_client(0));
        assert!(matches!(w.begin(&u, &a, "!1", 0, || 1), Begin::Run(1)));
        assert!(matches!(w.begin(&u, &a, "!1", 0, || 2), Begin::Run(2)));
    }
}
