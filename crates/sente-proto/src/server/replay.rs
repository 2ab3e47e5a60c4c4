//! Resume after a reconnect (a negotiated extension of the Sente protocol): a client that asks
//! for it gets every push of its uid with a per-uid sequence number, and when it reconnects
//! within the replay window it gets exactly the pushes it missed, in order, with no duplicates,
//! and `recovered: true`; otherwise `recovered: false` and no partial replay, so the application
//! knows to refetch. A plain Sente client never asks, and never sees any of it.
//!
//! # Wire
//!
//! - The client adds the query parameter `resume` to its WebSocket handshake request and to
//!   every Ajax GET (the handshake and the long-polls: a poll the server answers with a
//!   handshake because it forgot the client, after its grace period, resumes too): empty on
//!   its first connection, `<epoch>:<seq>` (its position) on a reconnect. A Sente server
//!   ignores the parameter.
//! - The server's handshake `[:chsk/handshake [uid nil handshake-data]]` then gets a fourth
//!   element `{:epoch "..." :seq n :recovered bool}`: the position the client now stands at
//!   (its own when recovered; otherwise the log's, and the client forgets its old one).
//! - Before each batch of pushes it sends the client a frame `[:chsk/seq n]`: `n` is the
//!   sequence number of the batch's last event. On one node the batch's events are numbered
//!   consecutively up to it, except for the numbers of pushes to another client of the uid
//!   alone (`send_to_client`: logged for that client only); in a cluster (below) they may skip
//!   numbers too. The client takes them
//!   as numbered consecutively up to `n`, skips events at or before its position and moves its
//!   position to `n`; with skipped numbers that guess is at or above each event's real number,
//!   so it can only deliver an event it had, never skip one it had not, and the server never
//!   sends a replay and a live batch that overlap (it flushes what is buffered before
//!   replaying). The marker is a frame of its own so that the batch after it stays one packed
//!   message shared by every client of the batch.
//! - **Ajax.** A long-poll answer is one message, so a resuming Ajax client's batch carries
//!   the marker as its first element: `[[[:chsk/seq n] ev1 ... evN] nil]` (packed once per
//!   packer and number, [`super::PushBatch::packed_numbered`]); the client takes it off and
//!   reads the rest as above. Batches waiting between polls merge into one answer only with
//!   batches of the same kind (numbered with numbered, numbered up to the last one's number).
//!   The missed pushes wait for the client's first poll after its handshake, before anything
//!   newer. A client the server still knows (back within its Ajax grace period) is replayed
//!   from its position too: its numbered waiting batches are replaced by the replay (an answer
//!   written into the dead connection was lost with it), and a poll still held for it is
//!   answered empty first. With a backplane's Ajax mailboxes (`sente-redis`, `sente-nats`,
//!   on by default) nothing waits in the core: the mailbox entries carry the cluster's
//!   numbers, a poll's answer from the mailbox is numbered and leaves out what the poll's
//!   position says the client has, and a resuming handshake recovers the client's own
//!   position when its mailbox was kept; a client whose mailbox is new (it comes from a
//!   WebSocket, or its mailbox expired) recovers too when this node's logs hold what it
//!   missed before the mailbox existed: the node reads the cluster's numbering after the
//!   registration, waits until it applied that far, and puts those pushes, numbered, in front
//!   of the mailbox before answering (`Mailbox::sequence_now`, `Mailbox::fill`); otherwise
//!   `recovered: false`. See `Core::handle_ajax_handshake_mailbox`.
//! - A client switches transports without losing its place: the position is the uid log's,
//!   whatever carried the pushes, so an Ajax fallback resumes from the last push the
//!   WebSocket delivered and a WebSocket probe from the last one Ajax delivered. A handshake
//!   that recovers from an older position of the same epoch than the client's own (Ajax went
//!   on delivering while the probe connected) leaves the client at its own, so the replay's
//!   overlap is skipped.
//! - A client whose handshake carries no resume element (a server without the extension)
//!   forgets its position.
//! - The anonymous uid (`:sente/nil-uid`, every client without a user id) never resumes: its
//!   clients are unrelated people, so one must not read what was pushed to the others before
//!   it connected. Its handshake carries no resume element.
//!
//! # The log
//!
//! One [`ReplayLog`] per uid, created when a resuming client of the uid connects, in the memory
//! of the server node. It keeps the uid's latest pushes within [`ReplayConfig`]'s bounds (count,
//! bytes, age; the oldest go first), and lives on for `max_age_ms` after the uid's last client
//! left. Its epoch names one life of the log: a restarted server, or a log dropped and created
//! anew, has another epoch, so an old position is never resumed against the wrong history.
//!
//! # In a cluster
//!
//! With a sequencing backplane ([`crate::backplane::Backplane::sequenced`]: `sente-redis` and
//! `sente-nats` by default), a client may resume on any node:
//!
//! - **One order, one numbering.** The engine numbers every `Push`, `PushMany`, `Broadcast`,
//!   `Flush` and `CloseUid` of the cluster and delivers them to every node in number order
//!   ([`crate::backplane::BackplaneMsg::Sequenced`]; Redis: one script increments
//!   `<cluster>:gseq` and publishes; NATS: a JetStream stream whose sequence is the number). A
//!   node applies its own pushes only when they come back numbered, so every node applies the
//!   same order. The epoch is the engine's (a Redis key, the NATS stream's creation time): an
//!   engine that lost it starts a new one, and older positions are refused everywhere.
//! - **Every node logs every push** (not only the uids of its clients): a push to a uid goes into
//!   that uid's log under its global number (numbers are sparse per uid), a broadcast into one
//!   broadcast log that every resume also reads. A log lives `max_age_ms` after the uid's last
//!   push or client. Cost: every node keeps every pushed uid's recent pushes (within the
//!   per-uid bounds) for `max_age_ms`.
//! - **Completeness.** A node tracks the last number it applied. Its first message, a skipped
//!   number (missed messages: an engine reconnect, a slow consumer), a new epoch, or a push
//!   applied without a number (the engine was unreachable: the node serves its clients
//!   locally meanwhile) make the positions before that point unresumable on it; a resume from
//!   such a position, or one past what a log still keeps, gets `recovered: false`, never a
//!   partial replay. A log created after an older one was dropped starts after the dropped
//!   one's last number.
//! - A client that handshakes before the node applied any numbered message gets position 0 of
//!   the epoch the backplane announced (resumable wherever number 1 was the first applied).

use crate::ClientId;
use crate::event::Event;
use sente_edn::{Map, Value};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

/// The query parameter a resuming client adds to its handshake request.
pub const RESUME_PARAM: &str = "resume";

/// Longest epoch accepted in a `resume` parameter (longer: treated as unknown).
const MAX_EPOCH_LEN: usize = 64;

/// Bounds of the per-uid replay logs. A log keeps at most `max_events` pushes, `max_bytes`
/// (estimated packed size) and pushes younger than `max_age_ms`; a reconnect that needs older
/// pushes gets `recovered: false`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayConfig {
    /// Resume is offered to clients that ask. Default `true`.
    pub enabled: bool,
    /// Most pushes kept per uid. Default 512.
    pub max_events: usize,
    /// Most bytes (estimated packed size) kept per uid. Default 256 KiB.
    pub max_bytes: usize,
    /// Oldest push kept, and how long a log outlives the uid's last client, in ms. Default 60 000.
    pub max_age_ms: u64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            enabled: true,
            max_events: 512,
            max_bytes: 256 * 1024,
            max_age_ms: 60_000,
        }
    }
}

impl ReplayConfig {
    /// Sets [`ReplayConfig::enabled`].
    pub fn enabled(mut self, value: bool) -> Self {
        self.enabled = value;
        self
    }
    /// Sets [`ReplayConfig::max_events`].
    pub fn max_events(mut self, value: usize) -> Self {
        self.max_events = value;
        self
    }
    /// Sets [`ReplayConfig::max_bytes`].
    pub fn max_bytes(mut self, value: usize) -> Self {
        self.max_bytes = value;
        self
    }
    /// Sets [`ReplayConfig::max_age_ms`].
    pub fn max_age_ms(mut self, value: u64) -> Self {
        self.max_age_ms = value;
        self
    }
}

/// What a client asked for with its `resume` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// No `resume` parameter: a plain client.
    Off,
    /// Resume asked for, with no usable position (first connection, or an unreadable one).
    New,
    /// Resume from this position.
    From(Position),
}

impl Resume {
    /// Reads the `resume` query parameter's value (`None`: absent).
    pub fn parse(param: Option<&str>) -> Self {
        match param {
            None => Resume::Off,
            Some(text) => Position::parse(text).map_or(Resume::New, Resume::From),
        }
    }

    /// Whether the client asked for resume at all.
    pub fn is_on(&self) -> bool {
        !matches!(self, Resume::Off)
    }
}

/// A client's position: the last push of its uid it received, in one epoch of the uid's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The log's epoch.
    pub epoch: String,
    /// The sequence number of the last push received (0: none yet).
    pub seq: u64,
}

impl Position {
    /// Reads `<epoch>:<seq>`.
    pub fn parse(text: &str) -> Option<Self> {
        let (epoch, seq) = text.rsplit_once(':')?;
        let ok = !epoch.is_empty()
            && epoch.len() <= MAX_EPOCH_LEN
            && epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        Some(Position {
            epoch: ok.then(|| epoch.to_owned())?,
            seq: seq.parse().ok()?,
        })
    }

    /// The `resume` parameter's value for this position.
    pub fn to_param(&self) -> String {
        let mut s = self.epoch.clone();
        let _ = write!(s, ":{}", self.seq);
        s
    }
}

/// The server's answer to a resuming client, sent in its handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeInfo {
    /// Where the client now stands.
    pub position: Position,
    /// The client's own position was resumed: what it missed follows, in order.
    pub recovered: bool,
}

const EPOCH_KEY: &str = "epoch";
const SEQ_KEY: &str = "seq";
const RECOVERED_KEY: &str = "recovered";

impl ResumeInfo {
    /// `{:epoch "..." :seq n :recovered bool}`.
    pub fn to_value(&self) -> Value {
        let seq = i64::try_from(self.position.seq).unwrap_or(i64::MAX);
        let mut map = Map::new();
        map.insert(
            Value::kw(EPOCH_KEY),
            Value::Str(self.position.epoch.clone()),
        );
        map.insert(Value::kw(SEQ_KEY), Value::Int(seq));
        map.insert(Value::kw(RECOVERED_KEY), Value::Bool(self.recovered));
        Value::Map(map)
    }

    /// Reads [`ResumeInfo::to_value`]'s map (also with string keys, as a JSON packer gives them).
    pub fn from_value(value: &Value) -> Option<Self> {
        let Value::Map(map) = value else { return None };
        let get = |key: &str| {
            map.iter()
                .find(|(k, _)| k.is_kw(key) || matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v)
        };
        let Some(Value::Str(epoch)) = get(EPOCH_KEY) else {
            return None;
        };
        let Some(Value::Int(seq)) = get(SEQ_KEY) else {
            return None;
        };
        let Some(Value::Bool(recovered)) = get(RECOVERED_KEY) else {
            return None;
        };
        Some(ResumeInfo {
            position: Position {
                epoch: epoch.clone(),
                seq: u64::try_from(*seq).ok()?,
            },
            recovered: *recovered,
        })
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    event: Arc<Event>,
    size: usize,
    at: u64,
    /// A push to this client alone (`send_to_client`); `None`: to every client of the uid.
    only: Option<ClientId>,
}

/// The latest pushes of one uid, each under its sequence number: consecutive numbers on one
/// node, the cluster's global numbers (sparse per uid) with a sequencing backplane.
#[derive(Debug)]
pub struct ReplayLog {
    epoch: String,
    last: u64,
    /// Every push numbered after this one is kept (positions from it on are resumable).
    complete_after: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    /// When the uid was last seen with a client (for the log's own expiry).
    pub(crate) seen: u64,
}

impl ReplayLog {
    /// An empty log of epoch `epoch`, created at `now`.
    pub fn new(epoch: String, now: u64) -> Self {
        ReplayLog::starting(epoch, 0, now)
    }

    /// An empty log of epoch `epoch` that holds every push numbered after `complete_after`
    /// (what came before it is unknown to this log), created at `now`.
    pub fn starting(epoch: String, complete_after: u64, now: u64) -> Self {
        ReplayLog {
            epoch,
            last: complete_after,
            complete_after,
            entries: VecDeque::new(),
            bytes: 0,
            seen: now,
        }
    }

    /// The epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The sequence number of the latest push (0: none yet).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The lowest sequence number a push kept here may have: every push numbered from it on
    /// is kept (`last + 1` when none is).
    pub fn first(&self) -> u64 {
        self.complete_after + 1
    }

    /// Number of pushes kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no push is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes (estimated) kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends a push of estimated size `size` under the next number; returns the number.
    pub fn append(&mut self, event: &Arc<Event>, size: usize, now: u64, cfg: &ReplayConfig) -> u64 {
        self.append_for(None, event, size, now, cfg)
    }

    /// [`ReplayLog::append`] of a push to client `only` alone (`None`: to every client):
    /// replayed to that client only ([`ReplayLog::numbered_after`]).
    pub fn append_for(
        &mut self,
        only: Option<&ClientId>,
        event: &Arc<Event>,
        size: usize,
        now: u64,
        cfg: &ReplayConfig,
    ) -> u64 {
        let seq = self.last + 1;
        self.append_at_for(seq, only, event, size, now, cfg);
        seq
    }

    /// Appends a push numbered `seq` (a cluster's global number; numbers may skip). A number
    /// not above [`ReplayLog::last`] is ignored (`false`).
    pub fn append_at(
        &mut self,
        seq: u64,
        event: &Arc<Event>,
        size: usize,
        now: u64,
        cfg: &ReplayConfig,
    ) -> bool {
        self.append_at_for(seq, None, event, size, now, cfg)
    }

    /// [`ReplayLog::append_at`] of a push to client `only` alone (`None`: to every client).
    pub fn append_at_for(
        &mut self,
        seq: u64,
        only: Option<&ClientId>,
        event: &Arc<Event>,
        size: usize,
        now: u64,
        cfg: &ReplayConfig,
    ) -> bool {
        if seq <= self.last {
            return false;
        }
        self.last = seq;
        self.entries.push_back(Entry {
            seq,
            event: event.clone(),
            size,
            at: now,
            only: only.cloned(),
        });
        self.bytes += size;
        self.prune(now, cfg);
        true
    }

    /// Drops the pushes over the bounds (oldest first).
    pub fn prune(&mut self, now: u64, cfg: &ReplayConfig) {
        while let Some(front) = self.entries.front() {
            let old = now.saturating_sub(front.at) > cfg.max_age_ms;
            if !old && self.entries.len() <= cfg.max_events && self.bytes <= cfg.max_bytes {
                break;
            }
            self.bytes -= front.size;
            self.complete_after = front.seq;
            self.entries.pop_front();
        }
    }

    /// The pushes client `to` gets after `from`, up to `upto` (inclusive), when every one of
    /// them is still kept (`None`: some were dropped, or `from` is past `upto`): those to
    /// every client of the uid and those to `to` alone.
    pub fn after(&self, from: u64, upto: u64, to: &ClientId) -> Option<Vec<Arc<Event>>> {
        self.numbered_after(from, upto, to)
            .map(|v| v.into_iter().map(|(_, e)| e).collect())
    }

    /// [`ReplayLog::after`], each push with its sequence number.
    pub fn numbered_after(
        &self,
        from: u64,
        upto: u64,
        to: &ClientId,
    ) -> Option<Vec<(u64, Arc<Event>)>> {
        if from < self.complete_after || from > upto {
            return None;
        }
        Some(
            self.entries
                .iter()
                .skip_while(|e| e.seq <= from)
                .take_while(|e| e.seq <= upto)
                .filter(|e| e.only.as_ref().is_none_or(|c| c == to))
                .map(|e| (e.seq, e.event.clone()))
                .collect(),
        )
    }
}

/// The marker `[:chsk/seq n]` sent before a batch whose last event has sequence number `n`.
pub fn seq_marker(seq: u64) -> Value {
    Value::Vector(vec![
        Value::kw(crate::event::ids::SEQ),
        Value::Int(i64::try_from(seq).unwrap_or(i64::MAX)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;

    fn ev(n: i64) -> Arc<Event> {
        Arc::new(Event::new(EventId::new("t/e").unwrap(), Value::Int(n)))
    }

    #[test]
    fn positions_round_trip_and_bad_ones_are_new() {
        let p = Position {
            epoch: "ab12-3".into(),
            seq: 42,
        };
        assert_eq!(Resume::parse(Some(&p.to_param())), Resume::From(p));
        assert_eq!(Resume::parse(None), Resume::Off);
        for bad in [
            "",
            "x",
            ":3",
            "a:b",
            "a b:1",
            &format!("{}:1", "a".repeat(65)),
        ] {
            assert_eq!(Resume::parse(Some(bad)), Resume::New, "{bad}");
        }
    }

    #[test]
    fn info_round_trips_through_a_value() {
        let info = ResumeInfo {
            position: Position {
                epoch: "e1".into(),
                seq: 7,
            },
            recovered: true,
        };
        assert_eq!(ResumeInfo::from_value(&info.to_value()), Some(info));
        assert_eq!(ResumeInfo::from_value(&Value::Nil), None);
    }

    /// The JSON packer (the JS client's default) carries the handshake's fourth element as an
    /// object with plain keys, and the marker as a keyword string; both read back.
    #[test]
    fn the_json_packer_carries_the_handshake_element_and_the_marker() {
        use crate::envelope::{Envelope, ServerMsg, server_msg};
        use crate::limits::Limits;
        use crate::packer::{JsonPacker, Packer as _};
        let info = ResumeInfo {
            position: Position {
                epoch: "9f-2".into(),
                seq: 5,
            },
            recovered: true,
        };
        let uid = crate::event::Uid::from("u1");
        let hs = server_msg::handshake_resume(&uid, Value::Nil, &info);
        let text = JsonPacker::pack_string(&hs.to_value()).unwrap();
        assert_eq!(
            text,
            r#"[[":chsk/handshake",["u1",null,null,{"epoch":"9f-2","seq":5,"recovered":true}]],null]"#
        );
        let back = Envelope::unpack(&JsonPacker, text.as_bytes(), &Limits::default()).unwrap();
        match ServerMsg::classify(back) {
            ServerMsg::Handshake { resume, .. } => assert_eq!(resume, Some(info)),
            other => panic!("not a handshake: {other:?}"),
        }
        let marker = JsonPacker
            .pack(&server_msg::seq_marker(7).to_value())
            .unwrap();
        assert_eq!(marker.as_bytes(), br#"[[":chsk/seq",7],null]"#);
        let back = Envelope::unpack(&JsonPacker, marker.as_bytes(), &Limits::default()).unwrap();
        assert!(matches!(ServerMsg::classify(back), ServerMsg::Seq(7)));
        // String keys (another JSON producer) are read too.
        let text = r#"{"epoch":"e","seq":1,"recovered":false}"#;
        let value = JsonPacker
            .unpack(text.as_bytes(), &Limits::default())
            .unwrap();
        let keys = Value::Map(
            [
                ("epoch", Value::Str("e".into())),
                ("seq", Value::Int(1)),
                ("recovered", Value::Bool(false)),
            ]
            .into_iter()
            .map(|(k, v)| (Value::Str(k.into()), v))
            .collect(),
        );
        for value in [value, keys] {
            let got = ResumeInfo::from_value(&value).expect("read back");
            assert_eq!((got.position.seq, got.recovered), (1, false));
        }
    }

    /// A resuming Ajax client's poll answer: the marker leads the batch, in one message; a
    /// marker that is not a non-negative number makes the whole answer invalid.
    #[test]
    fn a_numbered_ajax_answer_carries_the_marker_first() {
        use crate::envelope::{Envelope, ServerMsg};
        use crate::event::EventId;
        use crate::limits::Limits;
        use crate::packer::JsonPacker;
        use crate::server::PushBatch;
        let ev = |n| Arc::new(Event::new(EventId::new("t/e").unwrap(), Value::Int(n)));
        let batch = PushBatch::new(vec![ev(4), ev(5)]);
        let packed = batch
            .packed_numbered(&JsonPacker, 1 << 20, Some(5))
            .unwrap();
        assert_eq!(
            packed.bytes.as_ref(),
            br#"[[[":chsk/seq",5],[":t/e",4],[":t/e",5]],null]"#
        );
        let plain = batch.packed(&JsonPacker, 1 << 20).unwrap();
        assert_eq!(plain.bytes.as_ref(), br#"[[[":t/e",4],[":t/e",5]],null]"#);
        let classify = |text: &[u8]| {
            ServerMsg::classify(Envelope::unpack(&JsonPacker, text, &Limits::default()).unwrap())
        };
        match classify(&packed.bytes) {
            ServerMsg::NumberedBatch { seq, events } => {
                assert_eq!(seq, 5);
                assert_eq!(events.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify(&plain.bytes), ServerMsg::Batch(e) if e.len() == 2));
        for bad in [
            &br#"[[[":chsk/seq",-1],[":t/e",4]],null]"#[..],
            br#"[[[":chsk/seq","x"],[":t/e",4]],null]"#,
            br#"[[[":chsk/seq",1,2],[":t/e",4]],null]"#,
        ] {
            assert!(matches!(classify(bad), ServerMsg::Invalid(_)));
        }
    }

    #[test]
    fn the_log_replays_what_is_kept_and_refuses_gaps() {
        let cfg = ReplayConfig::default().max_events(3);
        let mut log = ReplayLog::new("e".into(), 0);
        for n in 1..=5 {
            assert_eq!(log.append(&ev(n), 10, 0, &cfg), n as u64);
        }
        assert_eq!((log.first(), log.last(), log.len()), (3, 5, 3));
        let me = ClientId::new("me").unwrap();
        let got = |from, upto| {
            log.after(from, upto, &me)
                .map(|v| v.iter().map(|e| e.data().clone()).collect::<Vec<_>>())
        };
        assert_eq!(
            got(2, 5),
            Some(vec![Value::Int(3), Value::Int(4), Value::Int(5)])
        );
        assert_eq!(got(4, 5), Some(vec![Value::Int(5)]));
        assert_eq!(got(3, 4), Some(vec![Value::Int(4)]));
        assert_eq!(got(5, 5), Some(vec![]));
        assert_eq!(got(1, 5), None, "push 2 was dropped");
        assert_eq!(got(6, 5), None, "a position the log never had");
    }

    /// A push to one client (`send_to_client`) takes the uid's next number and is replayed
    /// to that client alone.
    #[test]
    fn a_push_to_one_client_is_replayed_to_it_alone() {
        let cfg = ReplayConfig::default();
        let (a, b) = (ClientId::new("a").unwrap(), ClientId::new("b").unwrap());
        let mut log = ReplayLog::new("e".into(), 0);
        log.append(&ev(1), 10, 0, &cfg);
        assert_eq!(log.append_for(Some(&a), &ev(2), 10, 0, &cfg), 2);
        log.append(&ev(3), 10, 0, &cfg);
        let got = |to: &ClientId| {
            log.numbered_after(0, 3, to)
                .map(|v| v.iter().map(|(n, _)| *n).collect::<Vec<_>>())
        };
        assert_eq!(got(&a), Some(vec![1, 2, 3]));
        assert_eq!(got(&b), Some(vec![1, 3]));
    }

    #[test]
    fn age_and_bytes_bound_the_log() {
        let cfg = ReplayConfig::default().max_age_ms(100).max_bytes(25);
        let mut log = ReplayLog::new("e".into(), 0);
        log.append(&ev(1), 10, 0, &cfg);
        log.append(&ev(2), 10, 50, &cfg);
        log.append(&ev(3), 10, 60, &cfg);
        assert_eq!((log.first(), log.bytes()), (2, 20), "over the bytes");
        log.prune(155, &cfg);
        assert_eq!((log.first(), log.len()), (3, 1), "push 2 aged out");
    }
}
