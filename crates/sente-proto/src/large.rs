//! Large payloads offloaded over plain HTTP (a negotiated extension of the Sente protocol), so
//! a socket stays free for small events while a large one is on its way. A plain Sente client
//! never announces the extension, so it gets every event inline, as Sente does.
//!
//! # Wire
//!
//! - A client that fetches offloaded events adds `large` to the `ext` query parameter
//!   (comma-separated extension names) of its WebSocket upgrade and of every Ajax GET.
//! - A pushed event whose estimated packed size ([`estimate_event_size`]) is over the
//!   threshold ([`LargeConfig::threshold`]) is stored once on the server (one copy however many
//!   clients it goes to) under an unguessable id, and such a client gets
//!   `[:chsk/large {:id "<id>" :size n}]` in its place, in the same position of the stream
//!   (`n`: the estimated size in bytes).
//! - The client fetches the event with `GET <chsk path>?large=<id>&client-id=..&packer=..`,
//!   with the same credentials as an Ajax poll (CSRF token, cookies, Origin): the server
//!   answers with the event packed as a one-event batch `[[event] nil]` (what a long-poll
//!   answers), `404` when the id is unknown or expired, `403` when this client was not sent
//!   the id (another user's, or another client's), `410` when this client fetched it already.
//!   Each delivery of the reference allows one fetch by the client it went to.
//! - The client delivers the fetched event to the app in the reference's place: the events
//!   after it wait until it is fetched. A failed fetch is delivered as
//!   `[:chsk/large-failed {:id "<id>" :size n :reason "..."}]` (client side only).
//!
//! [`LargeStore`] is the server's sans-IO store of offloaded events: bounded in bytes, each
//! entry expiring after [`LargeConfig::ttl_ms`].

use crate::event::{ClientId, Event, EventId, Uid, ids};
use crate::server::{PushBatch, estimate_event_size};
use sente_edn::{Keyword, Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The extension's name in the `ext` query parameter.
pub const EXTENSION: &str = "large";

/// The query parameter of a fetch: `?large=<id>`.
pub const PARAM: &str = "large";

/// Bounds of offloading.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LargeConfig {
    /// Events estimated larger than this many bytes are offloaded (for clients that announce
    /// the extension). `None`: never. Default 64 KiB.
    pub threshold: Option<usize>,
    /// How long an offloaded event can be fetched, in ms. Default 60 000.
    pub ttl_ms: u64,
    /// Most bytes (estimated) stored at once; an event that does not fit is sent inline (and
    /// counted). Default 64 MiB.
    pub max_stored_bytes: usize,
}

impl Default for LargeConfig {
    fn default() -> Self {
        LargeConfig {
            threshold: Some(64 * 1024),
            ttl_ms: 60_000,
            max_stored_bytes: 64 * 1024 * 1024,
        }
    }
}

impl LargeConfig {
    /// Sets [`LargeConfig::threshold`].
    pub fn threshold(mut self, bytes: Option<usize>) -> Self {
        self.threshold = bytes;
        self
    }

    /// Sets [`LargeConfig::ttl_ms`].
    pub fn ttl_ms(mut self, ms: u64) -> Self {
        self.ttl_ms = ms;
        self
    }

    /// Sets [`LargeConfig::max_stored_bytes`].
    pub fn max_stored_bytes(mut self, bytes: usize) -> Self {
        self.max_stored_bytes = bytes;
        self
    }
}

/// Whether an `ext` parameter value (comma-separated names) announces `name`.
pub fn ext_announces(ext: Option<&str>, name: &str) -> bool {
    ext.is_some_and(|e| e.split(',').any(|n| n.trim() == name))
}

fn map(pairs: Vec<(&'static str, Value)>) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::Keyword(Keyword::new(k)), v))
            .collect::<Map>(),
    )
}

fn size_value(size: u64) -> Value {
    Value::Int(i64::try_from(size).unwrap_or(i64::MAX))
}

/// `[:chsk/large {:id id :size size}]`: what an offloading client gets in an event's place.
pub fn reference_event(id: &str, size: u64) -> Event {
    Event::new(
        EventId::from_static(ids::LARGE),
        map(vec![("id", Value::from(id)), ("size", size_value(size))]),
    )
}

/// Reads the data of a `chsk/large` event: the id and the size (`None`: malformed).
pub fn parse_reference(data: &Value) -> Option<(String, u64)> {
    let Value::Map(m) = data else { return None };
    let id = m.get(&Value::kw("id"))?.as_str()?;
    if id.is_empty() || id.len() > 128 {
        return None;
    }
    let size = match m.get(&Value::kw("size")) {
        Some(Value::Int(n)) => u64::try_from(*n).ok()?,
        _ => return None,
    };
    Some((id.to_owned(), size))
}

/// `[:chsk/large-failed {:id id :size size :reason reason}]`: what a client delivers when an
/// offloaded event could not be fetched.
pub fn failed_event(id: &str, size: u64, reason: &str) -> Event {
    Event::new(
        EventId::from_static(ids::LARGE_FAILED),
        map(vec![
            ("id", Value::from(id)),
            ("size", size_value(size)),
            ("reason", Value::from(reason)),
        ]),
    )
}

/// Why a fetch was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No such id (never stored, or expired).
    #[error("no such large event (unknown or expired)")]
    Unknown,
    /// The id was not sent to this client.
    #[error("this large event was not sent to this client")]
    Forbidden,
    /// This client fetched it already (as many times as it was sent).
    #[error("this large event was fetched already")]
    Fetched,
}

impl FetchError {
    /// The HTTP status the server answers: 404, 403 or 410.
    pub fn status(self) -> u16 {
        match self {
            FetchError::Unknown => 404,
            FetchError::Forbidden => 403,
            FetchError::Fetched => 410,
        }
    }

    /// A short label (metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            FetchError::Unknown => "unknown",
            FetchError::Forbidden => "forbidden",
            FetchError::Fetched => "fetched",
        }
    }
}

/// A batch as an offloading client gets it: the large events replaced by references.
#[derive(Debug)]
pub struct Offloaded {
    /// The batch with the references in place.
    pub batch: Arc<PushBatch>,
    /// The ids of the references.
    pub ids: Vec<String>,
}

/// What [`LargeStore::offload`] did, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadCounts {
    /// Events stored now (not counting those stored already by another batch).
    pub stored: u64,
    /// Their estimated bytes.
    pub stored_bytes: u64,
    /// Large events sent inline because the store was full.
    pub inline: u64,
}

#[derive(Debug)]
struct Entry {
    /// The event, as a one-event batch (packed at most once per packer).
    body: Arc<PushBatch>,
    size: usize,
    expires: u64,
    /// Fetches each client may still make, with its uid.
    grants: HashMap<ClientId, (Uid, u32)>,
    /// Clients that fetched it.
    fetched: HashSet<ClientId>,
}

/// The offloaded events of a server, each stored once under its id, bounded in bytes and
/// expiring after [`LargeConfig::ttl_ms`]. Time is a millisecond counter chosen by the caller.
#[derive(Debug)]
pub struct LargeStore {
    cfg: LargeConfig,
    entries: HashMap<String, Entry>,
    /// The id of a stored event, by the event's address (the same `Arc<Event>` fanned out to
    /// several uids or transports is stored once). Valid while the entry holds the event.
    by_event: HashMap<usize, String>,
    /// Ids in the order they expire (the TTL is the same for all).
    order: VecDeque<(u64, String)>,
    bytes: usize,
}

fn addr(event: &Arc<Event>) -> usize {
    Arc::as_ptr(event) as usize
}

impl LargeStore {
    /// An empty store.
    pub fn new(cfg: LargeConfig) -> Self {
        LargeStore {
            cfg,
            entries: HashMap::new(),
            by_event: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The bounds in force.
    pub fn config(&self) -> &LargeConfig {
        &self.cfg
    }

    /// The estimated bytes stored now.
    pub fn stored_bytes(&self) -> usize {
        self.bytes
    }

    /// The events stored now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The estimated size of `event` when it is over the threshold.
    pub fn large_size(&self, event: &Event) -> Option<usize> {
        let threshold = self.cfg.threshold?;
        let size = estimate_event_size(event, threshold);
        (size > threshold).then_some(size)
    }

    /// Forgets the entries expired at `now`.
    pub fn expire(&mut self, now: u64) {
        while let Some((at, _)) = self.order.front()
            && *at <= now
        {
            let Some((_, id)) = self.order.pop_front() else {
                break;
            };
            if let Some(e) = self.entries.remove(&id) {
                self.bytes -= e.size;
                if let Some(ev) = e.body.events().first() {
                    self.by_event.remove(&addr(ev));
                }
            }
        }
    }

    /// The batch `events` as an offloading client gets it: `None` when no event is over the
    /// threshold (or none fits in the store); else the batch with each large event replaced
    /// by its reference, storing the events not stored yet under ids from `fresh_id` (which
    /// must be unguessable).
    pub fn offload(
        &mut self,
        events: &[Arc<Event>],
        now: u64,
        mut fresh_id: impl FnMut() -> String,
    ) -> (Option<Offloaded>, OffloadCounts) {
        let mut counts = OffloadCounts::default();
        if self.cfg.threshold.is_none() {
            return (None, counts);
        }
        self.expire(now);
        let mut out = Vec::with_capacity(events.len());
        let mut ids = Vec::new();
        for ev in events {
            let Some(size) = self.large_size(ev) else {
                out.push(ev.clone());
                continue;
            };
            let id = match self.by_event.get(&addr(ev)) {
                Some(id) => id.clone(),
                None if self.bytes.saturating_add(size) > self.cfg.max_stored_bytes => {
                    counts.inline += 1;
                    out.push(ev.clone());
                    continue;
                }
                None => {
                    let id = fresh_id();
                    let expires = now.saturating_add(self.cfg.ttl_ms);
                    self.entries.insert(
                        id.clone(),
                        Entry {
                            body: Arc::new(PushBatch::new(vec![ev.clone()])),
                            size,
                            expires,
                            grants: HashMap::new(),
                            fetched: HashSet::new(),
                        },
                    );
                    self.by_event.insert(addr(ev), id.clone());
                    self.order.push_back((expires, id.clone()));
                    self.bytes += size;
                    counts.stored += 1;
                    counts.stored_bytes += size as u64;
                    id
                }
            };
            out.push(Arc::new(reference_event(&id, size as u64)));
            ids.push(id);
        }
        if ids.is_empty() {
            return (None, counts);
        }
        let batch = Arc::new(PushBatch::new(out));
        (Some(Offloaded { batch, ids }), counts)
    }

    /// The references `ids` are being sent to client `cid` of `uid`: each allows that client
    /// one more fetch. Ids no longer stored are skipped (their fetch answers `404`).
    pub fn grant(&mut self, ids: &[String], uid: &Uid, cid: &ClientId) {
        for id in ids {
            if let Some(e) = self.entries.get_mut(id) {
                let g = e
                    .grants
                    .entry(cid.clone())
                    .or_insert_with(|| (uid.clone(), 0));
                if g.0 == *uid {
                    g.1 = g.1.saturating_add(1);
                }
            }
        }
    }

    /// Client `cid` of `uid` fetches `id`: the event as a one-event batch (to pack with the
    /// client's packer), using up one of the client's fetches.
    pub fn fetch(
        &mut self,
        id: &str,
        uid: &Uid,
        cid: &ClientId,
        now: u64,
    ) -> Result<Arc<PushBatch>, FetchError> {
        self.expire(now);
        let e = self.entries.get_mut(id).ok_or(FetchError::Unknown)?;
        debug_assert!(e.expires > now);
        match e.grants.get_mut(cid) {
            Some((u, n)) if u == uid && *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    e.grants.remove(cid);
                }
                e.fetched.insert(cid.clone());
                Ok(e.body.clone())
            }
            Some((u, _)) if u != uid => Err(FetchError::Forbidden),
            _ if e.fetched.contains(cid) => Err(FetchError::Fetched),
            _ => Err(FetchError::Forbidden),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packer::{EdnPacker, JsonPacker, Packer};

    fn big(n: usize) -> Arc<Event> {
        Arc::new(Event::new(
            EventId::new("app/big").unwrap(),
            Value::from("x".repeat(n)),
        ))
    }

    fn small() -> Arc<Event> {
        Arc::new(Event::new(
            EventId::new("app/small").unwrap(),
            Value::Int(1),
        ))
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("id{n}")
        }
    }

    #[test]
    fn references_round_trip_through_the_packers() {
        for packer in [&EdnPacker as &dyn Packer, &JsonPacker] {
            let ev = reference_event("abc", 12345);
            let packed = packer.pack(&ev.to_value()).unwrap();
            let back = packer
                .unpack(packed.as_bytes(), &crate::Limits::default())
                .unwrap();
            let back = Event::from_value(back).unwrap();
            assert_eq!(back.id().as_str(), ids::LARGE);
            assert_eq!(
                parse_reference(back.data()),
                Some(("abc".to_owned(), 12345))
            );
        }
        assert_eq!(parse_reference(&Value::Nil), None);
        assert_eq!(
            failed_event("a", 1, "gone").id().as_str(),
            ids::LARGE_FAILED
        );
        assert!(ext_announces(Some("req, large"), EXTENSION));
        assert!(!ext_announces(Some("larger"), EXTENSION) && !ext_announces(None, EXTENSION));
    }

    #[test]
    fn large_events_are_stored_once_and_replaced_in_place() {
        let mut store = LargeStore::new(LargeConfig::default().threshold(Some(1000)));
        let (b, s) = (big(5000), small());
        let mut next = ids();
        let (off, counts) = store.offload(&[s.clone(), b.clone(), s.clone()], 0, &mut next);
        let off = off.unwrap();
        assert_eq!(counts.stored, 1);
        assert_eq!(off.ids, vec!["id1".to_owned()]);
        let got: Vec<&str> = off.batch.events().iter().map(|e| e.id().as_str()).collect();
        assert_eq!(got, ["app/small", ids::LARGE, "app/small"]);
        // The same event in another batch (another uid of a fan-out) is not stored again.
        let (off2, counts) = store.offload(std::slice::from_ref(&b), 1, &mut next);
        assert_eq!(
            (counts.stored, off2.unwrap().ids),
            (0, vec!["id1".to_owned()])
        );
        assert_eq!(store.len(), 1);
        assert!(store.offload(&[s], 1, &mut next).0.is_none());
    }

    #[test]
    fn fetches_are_per_delivery_and_only_by_the_client_sent_to() {
        let mut store = LargeStore::new(LargeConfig::default().threshold(Some(1000)));
        let (u, v) = (Uid::from("u"), Uid::from("v"));
        let (a, b) = (ClientId::new("a").unwrap(), ClientId::new("b").unwrap());
        let (off, _) = store.offload(&[big(5000)], 0, ids());
        let off = off.unwrap();
        store.grant(&off.ids, &u, &a);
        let id = &off.ids[0];
        assert_eq!(
            store.fetch(id, &v, &a, 1).err(),
            Some(FetchError::Forbidden)
        );
        assert_eq!(
            store.fetch(id, &u, &b, 1).err(),
            Some(FetchError::Forbidden)
        );
        assert_eq!(
            store.fetch("nope", &u, &a, 1).err(),
            Some(FetchError::Unknown)
        );
        let body = store.fetch(id, &u, &a, 1).unwrap();
        assert_eq!(body.events()[0].id().as_str(), "app/big");
        assert_eq!(store.fetch(id, &u, &a, 1).err(), Some(FetchError::Fetched));
        store.grant(&off.ids, &u, &a);
        assert!(store.fetch(id, &u, &a, 2).is_ok());
        store.grant(&off.ids, &u, &b);
        assert_eq!(
            store.fetch(id, &u, &b, 60_000).err(),
            Some(FetchError::Unknown)
        );
        assert_eq!((store.len(), store.stored_bytes()), (0, 0));
    }

    #[test]
    fn over_the_bound_events_go_inline() {
        let cfg = LargeConfig::default()
            .threshold(Some(1000))
            .max_stored_bytes(8000);
        let mut store = LargeStore::new(cfg);
        let (off, counts) = store.offload(&[big(5000), big(5000)], 0, ids());
        assert_eq!((counts.stored, counts.inline), (1, 1));
        let off = off.unwrap();
        assert_eq!(off.ids.len(), 1);
        assert_eq!(off.batch.events()[1].id().as_str(), "app/big");
        let mut off_store = LargeStore::new(LargeConfig::default().threshold(None));
        assert!(off_store.offload(&[big(1 << 20)], 0, ids()).0.is_none());
    }
}
