//! The seam for running several server nodes: every push, flush, close and presence change a
//! server makes goes through a [`Backplane`], which delivers it to every node (itself included),
//! and each node applies it to its own connections. One node uses [`LocalBackplane`]; cluster
//! backplanes (Redis, NATS) implement the same trait and depend on this crate only.
//!
//! [`codec`] is their versioned wire encoding, and [`cluster`] the sans-IO part they share
//! (own-frame filtering, heartbeats, expiry of silent nodes, presence snapshots).
//!
//! Two optional parts of the trait make a cluster behave like one server:
//!
//! - [`Backplane::uidport`]: `chsk/uidport-open` / `-close` are decided for the cluster, so
//!   they fire once (on one node) when a uid gets its first connection anywhere and when it
//!   leaves its last node. The rule: each backplane keeps, per uid, the set of nodes that have
//!   the uid, changed only by atomic operations of its engine; a node's open fires when it
//!   turns the set from empty (or only dead nodes) to non-empty, a close when it turns it
//!   empty. Nodes that die are removed by the survivors (one of them fires the close). Without
//!   it (the default, [`LocalBackplane`]), every node fires its own transitions.
//! - [`Backplane::mailbox`]: per-client [`Mailbox`]es for Ajax clients, so polls, POSTs and
//!   handshakes of one client may land on any node (no sticky sessions).

pub mod cluster;
pub mod codec;

use crate::event::{ClientId, Event, Uid};
use crate::s2c::RequestError;
use sente_edn::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A boxed future returned by the asynchronous parts of a backplane.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Identifies one server node in a cluster (chosen at random when a server starts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

/// A message between nodes: what the application asked a server for, or a node's presence.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BackplaneMsg {
    /// Push `event` to every client of `uid`.
    Push {
        /// The uid.
        uid: Uid,
        /// The event.
        event: Arc<Event>,
        /// Its estimated packed size.
        estimate: usize,
        /// Flush the uid's buffer now.
        flush: bool,
    },
    /// Push `event` to every client of each of `uids` (`send_many`): one message for all of
    /// them, applied like a `Push` per uid, in order.
    PushMany {
        /// The uids.
        uids: Arc<[Uid]>,
        /// The event.
        event: Arc<Event>,
        /// Its estimated packed size.
        estimate: usize,
        /// Flush each uid's buffer now.
        flush: bool,
    },
    /// Push `event` to every uid connected to the receiving node (`broadcast`): each node
    /// reaches its own clients, so no node needs the cluster's list of uids.
    Broadcast {
        /// The event.
        event: Arc<Event>,
        /// Its estimated packed size.
        estimate: usize,
        /// Flush each uid's buffer now.
        flush: bool,
    },
    /// Push `event` to client `client_id` of `uid` alone (`send_to_client`), after what is
    /// buffered for the uid (so it keeps its place among the uid's pushes).
    PushClient {
        /// The uid.
        uid: Uid,
        /// The client.
        client_id: ClientId,
        /// The event.
        event: Arc<Event>,
        /// Its estimated packed size.
        estimate: usize,
    },
    /// Send what is buffered for `uid` now.
    Flush {
        /// The uid.
        uid: Uid,
    },
    /// Close every connection of `uid`.
    CloseUid {
        /// The uid.
        uid: Uid,
    },
    /// A node's membership of `uid` in the connected-uid sets changed (after the grace period).
    Presence {
        /// The node.
        node: NodeId,
        /// The uid.
        uid: Uid,
        /// The uid has a WebSocket client on that node.
        ws: bool,
        /// The uid has an Ajax client on that node.
        ajax: bool,
    },
    /// A `Push`, `PushMany`, `Broadcast`, `Flush` or `CloseUid` numbered by the cluster's
    /// engine (a sequencing backplane, see [`Backplane::sequenced`]): every node receives
    /// these in the order of their numbers, the publishing node included, so every node's
    /// replay logs hold the same pushes under the same numbers and a WebSocket client may
    /// resume on any node (see [`crate::server::replay`], "In a cluster").
    Sequenced {
        /// The epoch of the engine's sequence (a new one when the engine lost it).
        epoch: u64,
        /// The message's number in the cluster (from 1, no gaps within an epoch).
        seq: u64,
        /// The message.
        msg: Box<BackplaneMsg>,
    },
    /// `server.request(uid, ..)` made on node `node` (its request `id`): every other node asks
    /// its own clients of `uid` `event` within `timeout_ms` and answers with
    /// [`BackplaneMsg::RequestAnswers`] (an empty list when it has none). The asking node
    /// ignores its own.
    Request {
        /// The asking node.
        node: NodeId,
        /// The request's id on that node.
        id: u64,
        /// The uid whose clients are asked.
        uid: Uid,
        /// The request's event.
        event: Arc<Event>,
        /// How long the asked node waits for its clients, in ms.
        timeout_ms: u64,
    },
    /// Node `from`'s answers to request `id` of node `node` (see [`BackplaneMsg::Request`]):
    /// one per client of the uid there. Only node `node` applies it.
    RequestAnswers {
        /// The asking node.
        node: NodeId,
        /// The request's id on that node.
        id: u64,
        /// The answering node.
        from: NodeId,
        /// Each asked client's answer.
        answers: Vec<(ClientId, Result<Value, RequestError>)>,
    },
    /// A client's answer to request `id` of another node, received by a node that does not
    /// hold that request (an Ajax client's `[:chsk/rep [id reply]]` POST lands on any node of
    /// a cluster without sticky sessions). Only the node the id names
    /// ([`crate::s2c::id_tag`]) applies it: it takes the answer if `id` still waits for client
    /// `client_id` of `uid` there, else refuses and counts it.
    RequestReply {
        /// The uid of the client that answered.
        uid: Uid,
        /// The client that answered.
        client_id: ClientId,
        /// The request's id (it names the asking node).
        id: u64,
        /// The answer.
        answer: Result<Value, RequestError>,
    },
    /// Delivered by a sequencing backplane to its own node only (never published): the
    /// epoch of the cluster's sequence, known once its engine is reached (so a client that
    /// handshakes before the first numbered push gets a position in that epoch).
    Epoch {
        /// The epoch.
        epoch: u64,
    },
    /// Delivered by a backplane to its own node only (never published): fire
    /// `chsk/uidport-close` for `uid` here, on behalf of nodes that died with it (the
    /// backplane's atomic decision chose this node; see [`Backplane::uidport`]).
    UidportClose {
        /// The uid.
        uid: Uid,
    },
    /// Pushes to these uids (`None`: to every uid) are now in the Ajax mailboxes, so polls
    /// held here should take them (see [`Backplane::mailbox`]). Delivered by a backplane to
    /// its own node; `sente-nats` also publishes it to the others after a numbered append
    /// (stored after its push was numbered, so after the other nodes may have looked).
    AjaxWake {
        /// The uids, or `None` for all.
        uids: Option<Arc<[Uid]>>,
    },
}

/// A cluster-wide `chsk/uidport-*` decision (see [`Backplane::uidport`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UidportDecision {
    /// Fire `chsk/uidport-close` first: the uid was still counted open for nodes that died,
    /// and this call removed the last of them.
    pub close_stale: bool,
    /// Fire the event asked about.
    pub fire: bool,
}

impl UidportDecision {
    /// A decision.
    pub fn new(close_stale: bool, fire: bool) -> Self {
        UidportDecision { close_stale, fire }
    }
}

/// The once-per-cluster uidport rule (see [`Backplane::uidport`]), as a backplane applies it
/// atomically to the set of nodes that have a uid: `members` is the set as stored, each with
/// whether that node is alive (its liveness record exists; ignored for `me`); `me` joins
/// (`open`) or leaves. Returns the decision and the set to store (`None`: unchanged).
///
/// - Dead members are dropped.
/// - Join: fire if no live member was there and `me` was not; also `close_stale` if dead ones
///   were (their uid was never closed).
/// - Leave (`me` a member): fire if no live member is left. `me` not a member (a survivor
///   removing a dead node that another survivor already removed, or a node dropped while
///   partitioned): fire only if this call dropped the last (dead) members.
pub fn uidport_rule<M: PartialEq + Clone>(
    members: &[(M, bool)],
    me: &M,
    open: bool,
) -> (UidportDecision, Option<Vec<M>>) {
    let mine = members.iter().any(|(m, _)| m == me);
    let mut live: Vec<M> = members
        .iter()
        .filter(|(m, alive)| *alive && m != me)
        .map(|(m, _)| m.clone())
        .collect();
    let stale = members
        .iter()
        .filter(|(m, alive)| !*alive && m != me)
        .count();
    let decision = if open {
        let fire = !mine && live.is_empty();
        UidportDecision::new(fire && stale > 0, fire)
    } else if mine {
        UidportDecision::new(false, live.is_empty())
    } else {
        UidportDecision::new(false, live.is_empty() && stale > 0)
    };
    if open {
        live.push(me.clone());
    }
    let changed = stale > 0 || mine != open;
    (decision, changed.then_some(live))
}

/// How many of a mailbox's oldest entries (of sizes `sizes`, oldest first) one poll takes: at
/// most `max_events`, and no more than `max_bytes` in all, but at least one when any waits.
pub fn mailbox_take_count(
    sizes: impl IntoIterator<Item = usize>,
    max_events: usize,
    max_bytes: usize,
) -> usize {
    let mut n = 0;
    let mut bytes = 0usize;
    for size in sizes.into_iter().take(max_events.max(1)) {
        if n > 0 && bytes.saturating_add(size) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(size);
        n += 1;
    }
    n
}

/// One event taken from an Ajax mailbox ([`Mailbox::take`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Taken {
    /// The event.
    pub event: Arc<Event>,
    /// The cluster's number of its push, `(epoch, seq)`, when the engine numbered it
    /// ([`Backplane::sequenced`]; see [`codec::number_entry`]). `None`: appended unnumbered
    /// (the engine was unreachable, or an older node appended it).
    pub seq: Option<(u64, u64)>,
}

impl Taken {
    /// An event without a number.
    pub fn plain(event: Arc<Event>) -> Self {
        Taken { event, seq: None }
    }
}

/// Per-client mailboxes of Ajax clients in a cluster: pushes for an Ajax client wait here
/// (not on the node that received them) until its next poll, on any node, takes them. The
/// backplane itself appends pushes to the mailboxes of the uid's registered clients when a
/// `Push`, `PushMany` or `Broadcast` is published (once per push, by the publishing node),
/// then delivers [`BackplaneMsg::AjaxWake`] locally and the push to the other nodes, whose
/// held polls then [`Mailbox::take`].
///
/// Failures (engine unreachable) make `take` return nothing and `register` / `known` report
/// what they can; nothing panics.
///
/// # Leased takes
///
/// A take does not delete: the events it returns become the client's *lease* in the engine
/// (one per client), so that a node killed while it holds the answer loses nothing. The
/// client's next GET, on any node, settles the lease ([`Mailbox::settle`]) before it takes
/// again:
///
/// - a **poll** confirms it (the lease is dropped): a Sente Ajax client (the Clojure, JS and
///   native ones alike) sends its next poll only after it received and processed the answer
///   of its previous GET, one GET at a time per client id; after a failed GET (no answer, a
///   non-2xx answer, an answer it could not read) its next GET is a **handshake**.
/// - a **handshake** puts the lease back in front of the mailbox, unless the node that took
///   it reported the answer handed to the client's request ([`Mailbox::delivered`]): then the
///   lease is dropped (the handshake follows a poll that failed after that answer arrived).
///
/// So a client that received an answer never gets its events again (its next GET confirms
/// the lease, or finds it marked delivered), and an answer lost with its node (killed before
/// handing it over) is re-sent after the client's handshake. The server marks a lease
/// delivered when the request's answer is made, as it goes to the connection, and a backplane
/// runs the mark ahead of its other queued operations. The one window left is a node killed
/// between writing the answer and its `delivered` mark reaching the engine (the operation in
/// progress and the mark itself): the events are re-sent once if the client did get them and
/// its next poll died with the node. Marking earlier would turn that into a loss.
pub trait Mailbox: Send + Sync + 'static {
    /// Ajax client `client` of `uid` handshook or polled: pushes to `uid` are kept for it
    /// until `ttl` passes without another call (then its mailbox is dropped too).
    fn register(&self, uid: &Uid, client: &ClientId, ttl: Duration) -> BoxFuture<()>;
    /// Whether `client` of `uid` is registered (it handshook on some node and has not expired
    /// or overflowed). `true` when the engine cannot be asked (a poll is then held, not
    /// answered with a handshake).
    fn known(&self, uid: &Uid, client: &ClientId) -> BoxFuture<bool>;
    /// Takes the oldest waiting events of `client`, at most `max_events` and about `max_bytes`
    /// (at least one when any waits), in push order, each exactly once in the cluster, with
    /// the cluster's numbers of their pushes where the engine numbered them (a resuming
    /// client's poll answer is then numbered, and what its position says it has is left out:
    /// see `Core::wake_done_taken`).
    fn take(
        &self,
        uid: &Uid,
        client: &ClientId,
        max_events: usize,
        max_bytes: usize,
    ) -> BoxFuture<Vec<Taken>>;
    /// Puts events taken by [`Mailbox::take`] back in front (their poll answer could not be
    /// delivered). With leased takes, this node's last lease of `client`, if it is still there.
    fn put_back(&self, uid: &Uid, client: &ClientId, events: Vec<Arc<Event>>) -> BoxFuture<()>;

    /// A GET of `client` arrived, before it registers and takes: settles the client's lease
    /// (see "Leased takes" above). `handshake`: the GET asks for a handshake (the lease goes
    /// back in front unless delivered); else it is a poll (the lease is confirmed). The
    /// default (no leases): nothing to do.
    fn settle(&self, uid: &Uid, client: &ClientId, handshake: bool) -> BoxFuture<()> {
        let _ = (uid, client, handshake);
        Box::pin(async {})
    }

    /// The answer carrying this node's last take for `client` was made for the client's
    /// request and goes to its connection now: a handshake then drops the lease instead of
    /// putting it back. The default (no leases): nothing to do.
    fn delivered(&self, uid: &Uid, client: &ClientId) -> BoxFuture<()> {
        let _ = (uid, client);
        Box::pin(async {})
    }

    /// Cross-node resume of a client whose mailbox is new (it was on a WebSocket, or its
    /// mailbox expired): the cluster's numbering right now, `(epoch, last number)`, asked
    /// after the client's [`Mailbox::register`] completed, so every push numbered at or before
    /// it was numbered before the mailbox existed (and may be missing from it), and every later
    /// one is appended to it. `None` (the default): unknown (no numbering, or the engine is
    /// unreachable); the client then resumes only if it missed nothing.
    fn sequence_now(&self) -> BoxFuture<Option<(u64, u64)>> {
        Box::pin(async { None })
    }

    /// Puts `events` (each numbered, oldest first: what the client missed before its mailbox
    /// existed, from this node's replay logs) in front of `client`'s waiting events, behind its
    /// lease, in one atomic step. `false`: nothing was stored (the client is not registered,
    /// the mailbox's bounds would be exceeded, the engine is unreachable, or the default: no
    /// support); the client then gets `recovered: false`.
    fn fill(&self, uid: &Uid, client: &ClientId, events: Vec<Taken>) -> BoxFuture<bool> {
        let _ = (uid, client, events);
        Box::pin(async { false })
    }
}

/// What the cluster knows of a retried request's id ([`IdemStore::claim`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// Nobody ran it: this node runs it (also the answer when the engine cannot be asked:
    /// the node then dedupes alone).
    Run,
    /// Another node runs it now: ask again later.
    Running,
    /// It ran: its outcome (`None`: the handler answered nothing).
    Done(Option<Value>),
}

/// Cluster-wide dedupe of idempotent client requests (the `idem` extension; see
/// `sente::idem`): a request a client retries after a reconnect runs once in the cluster, and
/// every copy, on any node, gets its original reply. A node consults it after its own dedupe
/// window let a copy through, before running it. Entries live in the engine for `ttl` (the
/// server's `IdemConfig::max_age_ms`).
pub trait IdemStore: Send + Sync + 'static {
    /// Claims request `id` of `client` of `uid`: [`Claim::Run`] if nobody had (this node now
    /// runs it), else what the cluster knows of it.
    fn claim(&self, uid: &Uid, client: &ClientId, id: &str, ttl: Duration) -> BoxFuture<Claim>;
    /// Records the outcome of a run this node claimed, for the copies to come.
    fn finish(
        &self,
        uid: &Uid,
        client: &ClientId,
        id: &str,
        outcome: Option<Value>,
        ttl: Duration,
    ) -> BoxFuture<()>;
    /// Gives up a claim whose run was refused before it ran (its client's queue was full),
    /// so a retry runs it.
    fn forget(&self, uid: &Uid, client: &ClientId, id: &str) -> BoxFuture<()>;
}

/// Receives the messages a backplane delivers to this node.
pub type BackplaneSink = Arc<dyn Fn(BackplaneMsg) + Send + Sync>;

/// Fan-out between server nodes.
///
/// `publish` must deliver every message to the sink of every subscribed node (the publishing
/// node included), in publish order per uid. It must not block, and it may be called while the
/// server holds its registry lock (for `Presence`), so it must not call the sink synchronously
/// for `Presence` messages of its own node (a node applies its own presence itself).
pub trait Backplane: Send + Sync + 'static {
    /// Publishes a message to all nodes.
    fn publish(&self, msg: BackplaneMsg);
    /// Registers this node's sink.
    fn subscribe(&self, sink: BackplaneSink);

    /// Decides a `chsk/uidport-*` event for the cluster: `node`'s first connection of `uid`
    /// opened (`open`), or its last one closed after the grace period. The returned future
    /// resolves to whether to fire it on this node. Calls for one node are decided in call
    /// order. Must not block (it may be called with the server's registry locked).
    ///
    /// `None` (the default): no cluster decision, the node fires its own transitions (one
    /// node, [`LocalBackplane`]).
    fn uidport(&self, node: NodeId, uid: &Uid, open: bool) -> Option<BoxFuture<UidportDecision>> {
        let _ = (node, uid, open);
        None
    }

    /// The Ajax mailboxes, when this backplane has them (a cluster). `None` (the default): an
    /// Ajax client is served by the node it handshook with, as on one server.
    fn mailbox(&self) -> Option<Arc<dyn Mailbox>> {
        None
    }

    /// The cluster's dedupe of retried requests, when this backplane has it. `None` (the
    /// default): each node dedupes alone, so a retry that lands on another node runs again.
    fn idem(&self) -> Option<Arc<dyn IdemStore>> {
        None
    }

    /// Whether this backplane numbers pushes for the cluster: it delivers `Push`, `PushMany`,
    /// `Broadcast`, `Flush` and `CloseUid` as [`BackplaneMsg::Sequenced`] to every node (its
    /// own included, once the engine numbered them), and unnumbered only while its engine is
    /// unreachable. The server then logs pushes under the cluster's numbers (cross-node
    /// resume). `false` (the default): one node, or a backplane without it.
    fn sequenced(&self) -> bool {
        false
    }

    /// Whether this node has joined the cluster: it has subscribed to the engine (and where
    /// pushes are numbered, read its place in the numbering), so that every frame published
    /// from now on reaches it. Until then the server holds new clients (see the server's
    /// `Builder::join_wait`): a client it served before would miss the pushes other nodes
    /// make meanwhile. A later outage does not unset it. `true` (the default): a single node.
    fn joined(&self) -> bool {
        true
    }
}

/// The in-memory backplane of a single node: `publish` calls the sink directly (its own
/// presence needs no delivery).
#[derive(Default)]
pub struct LocalBackplane {
    sink: OnceLock<BackplaneSink>,
}

impl std::fmt::Debug for LocalBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackplane").finish_non_exhaustive()
    }
}

impl LocalBackplane {
    /// A backplane with no subscriber yet.
    pub fn new() -> Self {
        LocalBackplane::default()
    }
}

impl Backplane for LocalBackplane {
    fn publish(&self, msg: BackplaneMsg) {
        if matches!(msg, BackplaneMsg::Presence { .. }) {
            return;
        }
        if let Some(sink) = self.sink.get() {
            sink(msg);
        }
    }

    fn subscribe(&self, sink: BackplaneSink) {
        let _ = self.sink.set(sink);
    }
}

/// The cluster's connected uids, from the presence of every node: a uid is in `ws` (`ajax`)
/// when any node says so.
#[derive(Debug, Default)]
pub struct PresenceView {
    uids: HashMap<Uid, Vec<(NodeId, bool, bool)>>,
}

impl PresenceView {
    /// An empty view.
    pub fn new() -> Self {
        PresenceView::default()
    }

    /// Records `node`'s membership of `uid` and returns the cluster's `(ws, ajax)` membership
    /// of `uid` afterwards.
    pub fn apply(&mut self, node: NodeId, uid: &Uid, ws: bool, ajax: bool) -> (bool, bool) {
        let nodes = self.uids.entry(uid.clone()).or_default();
        nodes.retain(|(n, _, _)| *n != node);
        if ws || ajax {
            nodes.push((node, ws, ajax));
        }
        let union = nodes
            .iter()
            .fold((false, false), |(w, a), (_, nw, na)| (w || *nw, a || *na));
        if nodes.is_empty() {
            self.uids.remove(uid);
        }
        union
    }

    /// Whether a node other than `me` has `uid`.
    pub fn elsewhere(&self, uid: &Uid, me: NodeId) -> bool {
        self.uids
            .get(uid)
            .is_some_and(|nodes| nodes.iter().any(|(n, _, _)| *n != me))
    }

    /// The nodes other than `me` that have `uid`.
    pub fn nodes_elsewhere(&self, uid: &Uid, me: NodeId) -> Vec<NodeId> {
        self.uids.get(uid).map_or_else(Vec::new, |nodes| {
            nodes
                .iter()
                .map(|(n, _, _)| *n)
                .filter(|n| *n != me)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidport_rule_fires_once() {
        let none: [(u8, bool); 0] = [];
        // First join fires; a second node joining does not.
        let (d, set) = uidport_rule(&none, &1, true);
        assert_eq!(d, UidportDecision::new(false, true));
        assert_eq!(set, Some(vec![1]));
        let (d, set) = uidport_rule(&[(1, true)], &2, true);
        assert_eq!(d, UidportDecision::new(false, false));
        assert_eq!(set, Some(vec![1, 2]));
        // Joining again changes nothing.
        assert_eq!(
            uidport_rule(&[(1, true), (2, true)], &2, true),
            (UidportDecision::new(false, false), None)
        );
        // The first to leave does not fire, the last does.
        let (d, set) = uidport_rule(&[(1, true), (2, true)], &1, false);
        assert_eq!((d.fire, set), (false, Some(vec![2])));
        let (d, set) = uidport_rule(&[(2, true)], &2, false);
        assert_eq!((d.fire, set), (true, Some(vec![])));
        // Leaving a set one is not in: nothing.
        assert_eq!(
            uidport_rule(&none, &2, false),
            (UidportDecision::new(false, false), None)
        );
    }

    #[test]
    fn uidport_rule_drops_dead_members() {
        // A survivor removes a dead node that was alone: it fires the close.
        let (d, set) = uidport_rule(&[(9, false)], &9, false);
        assert_eq!((d.fire, set), (true, Some(vec![])));
        // A survivor removes a dead node, a live one is left: no close.
        let (d, set) = uidport_rule(&[(9, false), (1, true)], &9, false);
        assert_eq!((d.fire, set), (false, Some(vec![1])));
        // Joining a set of dead nodes only: close then open.
        let (d, set) = uidport_rule(&[(8, false), (9, false)], &1, true);
        assert_eq!(d, UidportDecision::new(true, true));
        assert_eq!(set, Some(vec![1]));
        // Someone else's removal of dead members on the way out of a set without me.
        let (d, set) = uidport_rule(&[(8, false)], &1, false);
        assert_eq!((d.fire, set), (true, Some(vec![])));
    }

    #[test]
    fn mailbox_take_count_bounds() {
        assert_eq!(mailbox_take_count([], 10, 100), 0);
        assert_eq!(mailbox_take_count([500], 10, 100), 1, "at least one");
        assert_eq!(mailbox_take_count([40, 40, 40], 10, 100), 2);
        assert_eq!(mailbox_take_count([1, 1, 1, 1], 3, 100), 3);
        assert_eq!(
            mailbox_take_count([1, 1], 0, 100),
            1,
            "max_events at least 1"
        );
    }

    #[test]
    fn presence_is_the_union_of_nodes() {
        let mut v = PresenceView::new();
        let u = Uid::from("u");
        assert_eq!(v.apply(NodeId(1), &u, true, false), (true, false));
        assert_eq!(v.apply(NodeId(2), &u, false, true), (true, true));
        assert_eq!(v.apply(NodeId(1), &u, false, false), (false, true));
        assert_eq!(v.apply(NodeId(2), &u, false, false), (false, false));
        assert!(v.uids.is_empty());
    }
}
