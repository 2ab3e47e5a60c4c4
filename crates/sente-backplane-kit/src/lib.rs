//! The engine-independent runtime of the sente-rs cluster backplanes (`sente-redis`,
//! `sente-nats`): the bounded publish queue, the local sink, the cluster view behind a lock, the
//! timer, health and counters, and the queue of engine operations (uidport decisions, Ajax
//! mailboxes). An engine crate moves bytes between [`Shared`] and its engine; the protocol
//! decisions are in `sente_proto::backplane`. Applications use `sente-redis` or `sente-nats`,
//! not this crate.

use sente_proto::backplane::cluster::{Cluster, ClusterConfig, Output};
use sente_proto::backplane::codec;
use sente_proto::backplane::{
    BackplaneMsg, BackplaneSink, BoxFuture, Claim, IdemStore, Mailbox, Taken, UidportDecision,
};
use sente_proto::{ClientId, Event, Uid, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};

/// Bounds of the Ajax mailboxes (one per Ajax client, in the engine).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MailboxConfig {
    /// Keep pushes for Ajax clients in per-client mailboxes, so their requests may land on any
    /// node (no sticky sessions). Default `true`.
    pub enabled: bool,
    /// Most events waiting for one client; one more and the client is forgotten (it
    /// re-handshakes on its next poll), as a server drops a client over
    /// `max_pending_events_per_client`. Default 1 000 (that limit's default).
    pub max_events: usize,
    /// Most bytes (encoded events) waiting for one client; over it, the same. Default 4 MiB.
    pub max_bytes: usize,
    /// NATS only: the age of the mailbox and registration buckets (entries unchanged for
    /// this long are dropped; polls and pushes change them). Redis keeps a mailbox for its
    /// client's registration (`lp_timeout_ms` + the Ajax grace + 1 s after its last request).
    /// Default 60 s.
    pub max_age: Duration,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            enabled: true,
            max_events: 1_000,
            max_bytes: 4 << 20,
            max_age: Duration::from_secs(60),
        }
    }
}

impl MailboxConfig {
    /// Sets [`MailboxConfig::enabled`].
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Sets [`MailboxConfig::max_events`] (at least 1).
    pub fn max_events(mut self, n: usize) -> Self {
        self.max_events = n.max(1);
        self
    }

    /// Sets [`MailboxConfig::max_age`] (at least 1 s).
    pub fn max_age(mut self, d: Duration) -> Self {
        self.max_age = d.max(Duration::from_secs(1));
        self
    }

    /// Sets [`MailboxConfig::max_bytes`] (at least 1).
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n.max(1);
        self
    }
}

/// What the publisher sends, in order.
pub enum Job {
    /// A frame for the pub/sub channel.
    Frame(Vec<u8>),
    /// A frame the engine numbers and publishes in one atomic step (see
    /// [`Shared::set_sequencing`]); `msg` is what it encodes (applied here unnumbered if the
    /// engine cannot be reached, see [`Shared::unsequence`]).
    Seq {
        /// The frame, without its trailer (the engine appends it).
        frame: Vec<u8>,
        /// The message.
        msg: BackplaneMsg,
        /// Its place among this node's messages waiting for a number (see
        /// [`Shared::waits_for_number`]).
        id: u64,
        /// The push's mailbox append ([`Job::Append`] or [`Job::AppendClient`]), made by the
        /// engine in the same atomic step with the number appended to its entry
        /// ([`sente_proto::backplane::codec::number_entry`]), for an engine that numbers its
        /// entries ([`Shared::set_numbered_appends`]). Made unnumbered if the message is
        /// published plain after all ([`Shared::waits_for_number`] says no).
        append: Option<Box<Job>>,
    },
    /// Append an event (encoded) to the mailboxes of the Ajax clients of `uids` (`None`:
    /// every registered client), then wake this node's polls of those uids.
    Append {
        /// The uids whose clients' mailboxes get the event (`None`: every registered client).
        uids: Option<Arc<[Uid]>>,
        /// The encoded event.
        entry: Vec<u8>,
        /// Its place among this node's appends not yet stored (see
        /// [`Shared::append_pending`]).
        id: u64,
    },
    /// Append an event (encoded) to the mailbox of one Ajax client of `uid`, if it is
    /// registered (`send_to_client`), then wake this node's polls of `uid`.
    AppendClient {
        /// The uid.
        uid: Uid,
        /// The client.
        client: ClientId,
        /// The encoded event.
        entry: Vec<u8>,
        /// Its place among this node's appends not yet stored (see
        /// [`Shared::append_pending`]).
        id: u64,
    },
}

impl Job {
    /// The job's payload bytes (what the publish queue's byte accounting counts).
    pub fn len(&self) -> usize {
        match self {
            Job::Frame(b) | Job::Seq { frame: b, .. } => b.len(),
            Job::Append { entry, .. } | Job::AppendClient { entry, .. } => entry.len(),
        }
    }

    /// Whether the job carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of the mailbox append the job makes (its own, or the one a [`Job::Seq`]
    /// carries), if any.
    pub fn append_id(&self) -> Option<u64> {
        match self {
            Job::Append { id, .. } | Job::AppendClient { id, .. } => Some(*id),
            Job::Seq {
                append: Some(a), ..
            } => a.append_id(),
            Job::Frame(_) | Job::Seq { append: None, .. } => None,
        }
    }
}

/// An operation on the engine's stored state, run in order by the operations task.
pub enum Op {
    /// Add (`open`) or remove `member` (an origin) from `uid`'s set of nodes. `done: None`:
    /// an expired node's removal, delivered as `UidportClose` to the local sink if it fires.
    Uidport {
        /// The uid.
        uid: Uid,
        /// The node (its origin) joining or leaving the uid's set.
        member: u64,
        /// Joining (`true`) or leaving.
        open: bool,
        /// Where the decision goes.
        done: Option<oneshot::Sender<UidportDecision>>,
    },
    /// Register (or renew) the Ajax client `cid` of `uid`, for `ttl`.
    Register {
        /// The uid.
        uid: Uid,
        /// The client.
        cid: ClientId,
        /// How long the registration lasts without renewal.
        ttl: Duration,
        /// Answered once stored.
        done: oneshot::Sender<()>,
    },
    /// Whether some node registered the Ajax client `cid` of `uid`.
    Known {
        /// The uid.
        uid: Uid,
        /// The client.
        cid: ClientId,
        /// The answer.
        done: oneshot::Sender<bool>,
    },
    /// Take the oldest events of `cid`'s mailbox, within the bounds, as the lease `lease`
    /// (they stay in the engine until settled; see `Mailbox`'s "Leased takes").
    Take {
        /// The uid.
        uid: Uid,
        /// The client.
        cid: ClientId,
        /// The lease's id (unique per take: this node's origin and a counter).
        lease: String,
        /// At most this many events.
        max_events: usize,
        /// At most about this many encoded bytes (at least one event is taken).
        max_bytes: usize,
        /// The events taken, oldest first, with their numbers.
        done: oneshot::Sender<Vec<Taken>>,
    },
    /// Put the lease `lease` (its answer could not be delivered) back at the head of `cid`'s
    /// mailbox, if it is still the client's lease.
    PutBack {
        /// The uid.
        uid: Uid,
        /// The client.
        cid: ClientId,
        /// The lease's id.
        lease: String,
        /// Answered once stored.
        done: oneshot::Sender<()>,
    },
    /// A GET of `cid` arrived: confirm its lease (a poll), or put it back in front unless it
    /// was delivered (a handshake).
    Settle {
        /// The uid.
        uid: Uid,
        /// The client.
        cid: ClientId,
        /// The GET is a handshake.
        handshake: bool,
        /// Answered once stored.
        done: oneshot::Sender<()>,
    },
    /// The engine's numbering now, `(epoch, last push number)`; `None` when it cannot be
    /// read. See `Mailbox::sequence_now`.
    SequenceNow {
        /// The answer.
        done: oneshot::Sender<Option<(u64, u64)>>,
    },
    /// Put numbered `entries` (encoded as the appends are, oldest first) in front of `cid`'s
    /// waiting events, behind its lease, if the client is registered and the mailbox stays
    /// within its bounds ([`MailboxConfig`]); answered whether they were stored. See
    /// `Mailbox::fill`.
    Fill {
        /// The uid.
        uid: Uid,
        /// The client.
        cid: ClientId,
        /// The entries.
        entries: Vec<Vec<u8>>,
        /// Whether they were stored.
        done: oneshot::Sender<bool>,
    },
    /// Claim request `id` of `cid` of `uid` for `ttl`, if nobody has (see
    /// `IdemStore::claim`); `None` when the engine could not answer.
    IdemClaim {
        /// The uid.
        uid: Uid,
        /// The client.
        cid: ClientId,
        /// The request id.
        id: String,
        /// How long the claim (then the outcome) is kept.
        ttl: Duration,
        /// What the engine held.
        done: oneshot::Sender<Option<IdemSeen>>,
    },
    /// Store the outcome ([`codec::encode_outcome`]) of request `id`'s run, for `ttl`.
    IdemFinish {
        /// The uid.
        uid: Uid,
        /// The client.
        cid: ClientId,
        /// The request id.
        id: String,
        /// The encoded outcome.
        outcome: Vec<u8>,
        /// How long it is kept.
        ttl: Duration,
        /// Answered once stored.
        done: oneshot::Sender<()>,
    },
    /// Drop request `id`'s claim if its run has not finished (it was refused before it ran).
    IdemForget {
        /// The uid.
        uid: Uid,
        /// The client.
        cid: ClientId,
        /// The request id.
        id: String,
        /// Answered once done.
        done: oneshot::Sender<()>,
    },
    /// The answer of lease `lease` was handed to the client's request: mark it delivered, if
    /// it is still the client's lease.
    Delivered {
        /// The uid.
        uid: Uid,
        /// The client.
        cid: ClientId,
        /// The lease's id.
        lease: String,
        /// Answered once stored.
        done: oneshot::Sender<()>,
    },
}

/// What the engine held for a claimed request id ([`Op::IdemClaim`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdemSeen {
    /// Nothing: the claim is now this node's.
    Won,
    /// Another node's claim, its run not finished.
    Running,
    /// The encoded outcome of a finished run ([`codec::encode_outcome`]).
    Done(Vec<u8>),
}

/// The engine key of request `id` of `cid` of `uid` (hex parts joined by `_`; `None` for a
/// uid without a key).
pub fn idem_key(uid: &Uid, cid: &ClientId, id: &str) -> Option<String> {
    Some(format!(
        "{}_{}_{}",
        uid_hex(uid)?,
        cid_hex(cid),
        codec::hex(id.as_bytes())
    ))
}

/// A backplane's cluster-wide dedupe of retried requests, over its operations queue.
pub struct Idem(pub Arc<Shared>);

impl IdemStore for Idem {
    fn claim(&self, uid: &Uid, client: &ClientId, id: &str, ttl: Duration) -> BoxFuture<Claim> {
        let (done, rx) = oneshot::channel();
        let queued = self.0.engine_up()
            && self.0.op(Op::IdemClaim {
                uid: uid.clone(),
                cid: client.clone(),
                id: id.to_owned(),
                ttl,
                done,
            });
        let shared = self.0.clone();
        Box::pin(async move {
            let seen = if queued {
                shared.unless_down(rx).await.flatten()
            } else {
                None
            };
            match seen {
                // The engine could not answer: this node dedupes alone.
                None | Some(IdemSeen::Won) => Claim::Run,
                Some(IdemSeen::Running) => Claim::Running,
                Some(IdemSeen::Done(bytes)) => {
                    let limits = shared.cluster().config().limits.clone();
                    match codec::decode_outcome(&bytes, &limits) {
                        Ok(outcome) => Claim::Done(outcome),
                        Err(e) => {
                            shared.codec_error(&e);
                            Claim::Run
                        }
                    }
                }
            }
        })
    }

    fn finish(
        &self,
        uid: &Uid,
        client: &ClientId,
        id: &str,
        outcome: Option<Value>,
        ttl: Duration,
    ) -> BoxFuture<()> {
        let outcome = match codec::encode_outcome(outcome.as_ref()) {
            Ok(b) => b,
            Err(e) => {
                self.0.codec_error(&e);
                // Recorded as no reply rather than left running.
                vec![codec::VERSION, 0]
            }
        };
        self.unit(|done| Op::IdemFinish {
            uid: uid.clone(),
            cid: client.clone(),
            id: id.to_owned(),
            outcome,
            ttl,
            done,
        })
    }

    fn forget(&self, uid: &Uid, client: &ClientId, id: &str) -> BoxFuture<()> {
        self.unit(|done| Op::IdemForget {
            uid: uid.clone(),
            cid: client.clone(),
            id: id.to_owned(),
            done,
        })
    }
}

impl Idem {
    fn unit(&self, op: impl FnOnce(oneshot::Sender<()>) -> Op) -> BoxFuture<()> {
        Mailboxes(self.0.clone()).unit_op(op)
    }
}

/// The receiving end of a backplane's engine operations: two lanes, run by one task in order
/// (see [`OpQueue::recv`]).
pub struct OpQueue {
    urgent: mpsc::Receiver<Op>,
    ops: mpsc::Receiver<Op>,
}

impl OpQueue {
    /// The next operation: an urgent one ([`Op::Delivered`]) first, then the others in
    /// order; `None` when the backplane is gone.
    ///
    /// A `Delivered` mark goes ahead of the operations queued before it: it is queued once
    /// an answer is handed over, after the take of its lease ran (so it never overtakes that
    /// take), and before the client's next request could queue anything for that client
    /// (so it is never overtaken by that client's settle); every other client's operations
    /// touch other keys. So a node killed right after handing an answer over has its mark in
    /// the engine after at most the one operation in progress, not after its whole queue (see
    /// `Mailbox`'s "Leased takes" in `sente_proto::backplane`).
    pub async fn recv(&mut self) -> Option<Op> {
        tokio::select! {
            biased;
            Some(op) = self.urgent.recv() => Some(op),
            op = self.ops.recv() => op,
        }
    }
}

/// Key names: the hex of a uid's and a client id's encodings.
pub fn uid_hex(uid: &Uid) -> Option<String> {
    codec::uid_bytes(uid).ok().map(|b| codec::hex(&b))
}

/// Key names: the hex of a client id.
pub fn cid_hex(cid: &ClientId) -> String {
    codec::hex(cid.as_str().as_bytes())
}

/// The state of a backplane's connections, and its counters (what the backplane's `health()`
/// returns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Both the publishing and the subscribing connection are up.
    pub connected: bool,
    /// The node has joined the cluster ([`Shared::mark_joined`], `Backplane::joined`).
    pub joined: bool,
    /// The last connection error, and when it happened.
    pub last_error: Option<(SystemTime, String)>,
    /// How many times a connection was lost (or could not be made) after being up or at start.
    pub outages: u64,
    /// Other nodes heard from within the expiry.
    pub peers: usize,
    /// Payloads published.
    pub published: u64,
    /// Bytes published (payloads only, without the pub/sub protocol's framing).
    pub published_bytes: u64,
    /// Payloads received (this node's own included, where the server echoes them).
    pub received: u64,
    /// Payloads dropped because the publish queue was full.
    pub dropped: u64,
    /// Payloads that could not be decoded (another release's version, corrupt) or messages
    /// that could not be encoded.
    pub codec_errors: u64,
    /// Payloads of kinds this release does not know, skipped.
    pub skipped: u64,
    /// Remote nodes expired for silence.
    pub expired_nodes: u64,
    /// Mailbox appends sent to the engine (one per push, for all the Ajax clients it
    /// reaches).
    pub appends: u64,
    /// Bytes of those appends (encoded events).
    pub append_bytes: u64,
    /// Other engine operations done (uidport decisions, mailbox registers, takes, ...).
    pub ops: u64,
    /// Of [`Health::published`], the payloads numbered by the engine (cross-node resume:
    /// one atomic number-and-publish each, instead of a plain publish).
    pub sequenced: u64,
    /// Pushes applied without a number because the engine was unreachable (their clients
    /// cannot resume past them).
    pub unsequenced: u64,
}

/// This node's numbered messages that have not come back to it yet: those waiting for their
/// number (see [`Shared::waits_for_number`]), and those the engine numbered (`acked`, with
/// `(epoch, number)` when the engine says it), oldest first. When the receiving side fails,
/// the numbered ones may never come back (the engine may have lost them with its state): they
/// are applied here then, unnumbered, before anything published later (see
/// [`Shared::set_up`]).
#[derive(Default)]
struct Waiting {
    next: u64,
    queue: std::collections::VecDeque<(u64, BackplaneMsg)>,
    acked: std::collections::VecDeque<(Option<(u64, u64)>, BackplaneMsg)>,
    /// The last number the engine gave one of this node's messages (see
    /// [`Shared::mark_after`]).
    last_number: Option<(u64, u64)>,
    /// Numbers of messages of `acked` applied here unnumbered: skipped if they come back
    /// after all (a connection that recovered without the engine losing them).
    applied_here: std::collections::VecDeque<(u64, u64)>,
}

/// At most this many numbers are kept in `Waiting::applied_here`.
const APPLIED_HERE_KEPT: usize = 4096;

/// Other nodes' pushes published unnumbered after numbered ones ([`codec::Frame::After`]),
/// held until this node applied those (see [`Shared::set_after_wait`]).
#[derive(Default)]
struct Held {
    /// The last number applied here (or, before any, the one before the first the consumer
    /// brings: [`Shared::seq_starts_at`]).
    last: Option<(u64, u64)>,
    /// The held pushes, in arrival order: the number each waits for, since when, the push.
    queue: std::collections::VecDeque<((u64, u64), Instant, BackplaneMsg)>,
}

/// The default of [`Shared::set_after_wait`].
pub const AFTER_WAIT: Duration = Duration::from_secs(2);

/// The state one backplane instance shares between its handle and its engine tasks.
pub struct Shared {
    /// The engine's name, for logs (`"redis"`, `"nats"`).
    pub name: &'static str,
    /// This node's origin id (random per instance), in every frame it publishes.
    pub origin: u64,
    /// The sans-IO cluster view (heartbeats, expiry, presence).
    pub cluster: Mutex<Cluster>,
    /// The server's sink, once subscribed.
    pub sink: OnceLock<BackplaneSink>,
    start: Instant,
    tx: mpsc::Sender<Job>,
    ops: mpsc::Sender<Op>,
    /// The urgent lane of the operations ([`OpQueue::recv`]).
    urgent: mpsc::Sender<Op>,
    /// This node's mailbox appends queued while the engine was up and not stored yet (see
    /// [`Shared::append_pending`]).
    appends_waiting: Mutex<PendingAppends>,
    /// The Ajax mailbox settings.
    pub mailbox: MailboxConfig,
    state: Mutex<State>,
    /// Payloads published (see [`Health::published`]).
    pub published: AtomicU64,
    /// Bytes published (see [`Health::published_bytes`]).
    pub published_bytes: AtomicU64,
    /// Mailbox appends sent (see [`Health::appends`]).
    pub appends: AtomicU64,
    /// Bytes of those appends (see [`Health::append_bytes`]).
    pub append_bytes: AtomicU64,
    /// Other engine operations done (see [`Health::ops`]).
    pub ops_done: AtomicU64,
    /// Payloads numbered by the engine (see [`Health::sequenced`]).
    pub sequenced: AtomicU64,
    unsequenced: AtomicU64,
    /// Sequencing asked for (see [`Shared::set_sequencing`]).
    sequencing: AtomicBool,
    /// The engine numbers mailbox entries (see [`Shared::set_numbered_appends`]).
    numbered_appends: AtomicBool,
    /// The epoch of the engine's numbers, when the engine crate tracks it (0: unknown).
    seq_epoch: AtomicU64,
    /// The engine's numbered channel is consumed (see [`Shared::set_seq_ready`]).
    seq_ready: AtomicBool,
    /// The engine's first consumer is being made: pushes wait for it rather than go out
    /// unnumbered (see [`Shared::numbering_soon`]).
    seq_starting: AtomicBool,
    /// The messages queued for numbering and not yet numbered, in order: when the engine is
    /// found unreachable they are applied here at once, before any later push, so a push
    /// applied locally never overtakes one queued before it.
    order: Mutex<Waiting>,
    /// Other nodes' pushes waiting for the numbered ones published before them.
    held: Mutex<Held>,
    /// The longest a push waits in `held`, in milliseconds.
    after_wait: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    codec_errors: AtomicU64,
    skipped: AtomicU64,
    expired: AtomicU64,
    last_drop_warn: Mutex<Option<Instant>>,
    metrics: KitMetrics,
    /// This node's last lease per Ajax client (its id, or [`LOCAL_LEASE`]), until delivered or
    /// put back.
    leases: Mutex<HashMap<(Uid, ClientId), String>>,
    lease_seq: AtomicU64,
    /// The node-local fallback of the Ajax mailboxes while the engine is unreachable.
    fallback: Mutex<Fallback>,
    /// Whether both connections are up (changes wake the operations waiting for the engine).
    up: watch::Sender<bool>,
}

/// Who one queued mailbox append is for.
#[derive(Clone)]
enum Target {
    /// The Ajax clients of these uids (`None`: every uid).
    Uids(Option<Arc<[Uid]>>),
    /// One Ajax client of a uid (`send_to_client`).
    Client(Uid, ClientId),
}

/// This node's mailbox appends not stored yet, oldest first (ids increasing), and those an
/// outage moved to the node-local fallback that the publishing task has not seen yet.
#[derive(Default)]
struct PendingAppends {
    next: u64,
    queue: std::collections::VecDeque<(u64, Target, Arc<Event>)>,
    /// Moved to the fallback by an outage (id, event), until the publishing task settles
    /// them ([`Shared::appends_done`]).
    abandoned: Vec<(u64, Arc<Event>)>,
}

/// The lease id of events served from the node-local fallback.
const LOCAL_LEASE: &str = "local";

/// The node-local fallback of the Ajax mailboxes: while the engine is unreachable, a push is
/// kept here for each of this node's own Ajax clients of its uids (those that registered
/// through this node), and their polls take it from here, in order. What is still here when
/// the engine is back is served first (older than what the engine gets after).
#[derive(Default)]
struct Fallback {
    /// This node's Ajax clients, with the end of their registration.
    clients: HashMap<Uid, HashMap<ClientId, Instant>>,
    /// Their waiting events.
    queues: HashMap<(Uid, ClientId), std::collections::VecDeque<Arc<Event>>>,
    /// The events of each client's last answer served from here (put back if undelivered).
    served: HashMap<(Uid, ClientId), Vec<Arc<Event>>>,
}

/// The backplane's metrics (labelled with its name), registered once. The names are in
/// `sente::metrics`'s table; the counters are the same counts as [`Health`]'s.
struct KitMetrics {
    published: metrics::Counter,
    received: metrics::Counter,
    publish_seconds: metrics::Histogram,
    queue: metrics::Gauge,
    queue_full: metrics::Counter,
    codec: metrics::Counter,
    engine: metrics::Counter,
    outage: metrics::Counter,
}

impl KitMetrics {
    fn new(name: &'static str) -> Self {
        let error = |kind: &'static str| metrics::counter!("sente_backplane_errors_total", "backplane" => name, "kind" => kind);
        KitMetrics {
            published: metrics::counter!("sente_backplane_messages_total", "backplane" => name, "direction" => "published"),
            received: metrics::counter!("sente_backplane_messages_total", "backplane" => name, "direction" => "received"),
            publish_seconds: metrics::histogram!("sente_backplane_publish_seconds", "backplane" => name),
            queue: metrics::gauge!("sente_backplane_publish_queue", "backplane" => name),
            queue_full: error("queue-full"),
            codec: error("codec"),
            engine: error("engine"),
            outage: error("outage"),
        }
    }
}

#[derive(Default)]
struct State {
    publisher: bool,
    subscriber: bool,
    joined: bool,
    last_error: Option<(SystemTime, String)>,
    outages: u64,
    down_since: Option<Instant>,
}

/// Which connection a health update is about.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    /// The connection that publishes frames and runs operations.
    Publisher,
    /// The connection that receives the cluster's frames.
    Subscriber,
}

impl Shared {
    /// A backplane's shared state and the receiving ends of its publish queue (frames and
    /// mailbox appends) and operations queue, for the engine's tasks.
    pub fn new(
        name: &'static str,
        cfg: ClusterConfig,
        queue: usize,
        mailbox: MailboxConfig,
    ) -> (Arc<Shared>, mpsc::Receiver<Job>, OpQueue) {
        let origin = uuid::Uuid::new_v4().as_u64_pair().0;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let (ops, ops_rx) = mpsc::channel(queue.max(1));
        let (urgent, urgent_rx) = mpsc::channel(queue.max(1));
        let shared = Arc::new(Shared {
            name,
            origin,
            cluster: Mutex::new(Cluster::new(origin, cfg)),
            sink: OnceLock::new(),
            start: Instant::now(),
            tx,
            ops,
            urgent,
            appends_waiting: Mutex::new(PendingAppends::default()),
            mailbox,
            state: Mutex::new(State {
                down_since: Some(Instant::now()),
                ..State::default()
            }),
            published: AtomicU64::new(0),
            published_bytes: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            append_bytes: AtomicU64::new(0),
            ops_done: AtomicU64::new(0),
            sequenced: AtomicU64::new(0),
            unsequenced: AtomicU64::new(0),
            sequencing: AtomicBool::new(false),
            numbered_appends: AtomicBool::new(false),
            seq_epoch: AtomicU64::new(0),
            seq_ready: AtomicBool::new(false),
            seq_starting: AtomicBool::new(true),
            order: Mutex::new(Waiting::default()),
            held: Mutex::new(Held::default()),
            after_wait: AtomicU64::new(AFTER_WAIT.as_millis() as u64),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            codec_errors: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            last_drop_warn: Mutex::new(None),
            metrics: KitMetrics::new(name),
            leases: Mutex::new(HashMap::new()),
            lease_seq: AtomicU64::new(0),
            fallback: Mutex::new(Fallback::default()),
            up: watch::Sender::new(false),
        });
        let ops = OpQueue {
            urgent: urgent_rx,
            ops: ops_rx,
        };
        (shared, rx, ops)
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers pushes for the cluster (cross-node resume): `Push`, `PushMany`, `Broadcast`,
    /// `Flush` and `CloseUid` are published as [`Job::Seq`] and applied here only when they
    /// come back numbered ([`sente_proto::backplane::BackplaneMsg::Sequenced`]), like on every
    /// other node. While the engine is unreachable they are applied here at once, unnumbered.
    pub fn set_sequencing(&self, on: bool) {
        self.sequencing.store(on, Ordering::Release);
    }

    /// Whether this node receives what the engine numbers (an engine whose numbered messages
    /// travel on the same subscription as the rest sets it once; one with a consumer of its
    /// own while that consumer runs). Numbered publishing waits for it. When it stops, what
    /// the engine numbered for this node but did not bring back yet is applied here, unnumbered
    /// (it may never come back).
    pub fn set_seq_ready(&self, ready: bool) {
        self.seq_ready.store(ready, Ordering::Release);
        self.seq_starting.store(false, Ordering::Release);
        if !ready {
            self.apply_acked(&mut self.order());
            // A consumer made again may start anywhere: nothing is held until it says where
            // ([`Shared::seq_starts_at`]) or brings a number.
            self.held().last = None;
            self.release_held();
        }
    }

    /// The engine's numbered messages reach this node on a path of their own (a consumer), so
    /// a push another node published unnumbered after numbered ones
    /// ([`codec::Frame::After`]) may arrive before those: it is held until this node applied
    /// them, but at most `wait` (a number the engine lost never comes), and not at all while
    /// the consumer is not ready. Default [`AFTER_WAIT`] (2 s).
    pub fn set_after_wait(&self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.after_wait.store(ms, Ordering::Relaxed);
    }

    /// The engine's consumer brings the numbers of `epoch` from `first` on: a push marked
    /// after an earlier number is not held for it (see [`Shared::set_after_wait`]). Without
    /// it, pushes are held only once a number of the epoch was applied here.
    pub fn seq_starts_at(&self, epoch: u64, first: u64) {
        self.held().last = Some((epoch, first.saturating_sub(1)));
    }

    /// Marks the frame of a push published unnumbered ([`Job::Frame`]) as coming after the
    /// last of this node's pushes the engine numbered, if any ([`codec::mark_after`]), for an
    /// engine whose numbered messages travel apart from plain frames: the other nodes then
    /// apply it after that one.
    pub fn mark_after(&self, frame: &mut Vec<u8>) {
        if let Some((epoch, seq)) = self.order().last_number {
            codec::mark_after(frame, epoch, seq);
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a push marked after `(epoch, seq)` still waits: the consumer is ready, in that
    /// epoch, and has not applied that number yet.
    fn waits_after(&self, held: &Held, (epoch, seq): (u64, u64)) -> bool {
        self.seq_ready.load(Ordering::Acquire)
            && self.seq_epoch() == Some(epoch)
            && held.last.is_some_and(|(e, n)| e == epoch && n < seq)
    }

    /// Applies the held pushes whose turn came (or whose wait ended), in order.
    fn release(&self, held: &mut Held, sink: &BackplaneSink) {
        let wait = Duration::from_millis(self.after_wait.load(Ordering::Relaxed));
        while let Some((after, since, _)) = held.queue.front() {
            if self.waits_after(held, *after) {
                if since.elapsed() < wait {
                    break;
                }
                tracing::debug!(
                    backplane = self.name,
                    after = ?after,
                    "a push waited its longest for a number that did not come: applied"
                );
            }
            if let Some((_, _, msg)) = held.queue.pop_front() {
                sink(msg);
            }
        }
    }

    /// Applies what is held, as its turn came or its wait ended.
    fn release_held(&self) {
        if let Some(sink) = self.sink.get() {
            let mut held = self.held();
            if !held.queue.is_empty() {
                self.release(&mut held, sink);
            }
        }
    }

    /// Delivers what the cluster view passed on; pushes marked after a number wait for it
    /// (see [`Shared::set_after_wait`]).
    fn deliver_in_order(&self, deliver: Vec<BackplaneMsg>, after: Option<(u64, u64)>) {
        let Some(sink) = self.sink.get() else {
            return;
        };
        let numbered = |m: &BackplaneMsg| matches!(m, BackplaneMsg::Sequenced { .. });
        if after.is_none() && !deliver.iter().any(numbered) {
            for msg in deliver {
                sink(msg);
            }
            return;
        }
        // Under the lock, so a push released here and one arriving meanwhile keep their order.
        let mut held = self.held();
        for msg in deliver {
            match (&msg, after) {
                (BackplaneMsg::Sequenced { epoch, seq, .. }, _) => {
                    held.last = Some((*epoch, *seq));
                    sink(msg);
                    self.release(&mut held, sink);
                }
                (_, Some(after)) if !held.queue.is_empty() || self.waits_after(&held, after) => {
                    held.queue.push_back((after, Instant::now(), msg));
                    if held.queue.len() > self.tx.max_capacity() {
                        // Bounded like the publish queue: the oldest goes without its turn.
                        if let Some((_, _, first)) = held.queue.pop_front() {
                            sink(first);
                        }
                    }
                }
                _ => sink(msg),
            }
        }
    }

    /// The engine numbers mailbox entries: with sequencing, a push's mailbox append travels
    /// with its [`Job::Seq`] (its `append`), and the engine stores the entry with the push's
    /// number in the same atomic step. Set once by an engine that can (Redis).
    pub fn set_numbered_appends(&self, on: bool) {
        self.numbered_appends.store(on, Ordering::Release);
    }

    /// Records the epoch of the engine's numbers (for an engine crate that numbers mailbox
    /// entries itself after the push's number came back).
    pub fn set_seq_epoch(&self, epoch: u64) {
        self.seq_epoch.store(epoch, Ordering::Release);
    }

    /// The epoch recorded by [`Shared::set_seq_epoch`] (`None`: none yet).
    pub fn seq_epoch(&self) -> Option<u64> {
        Some(self.seq_epoch.load(Ordering::Acquire)).filter(|e| *e != 0)
    }

    /// Whether pushes are numbered by the engine (see [`Shared::set_sequencing`]).
    pub fn sequencing(&self) -> bool {
        self.sequencing.load(Ordering::Acquire)
    }

    /// Whether a push published now goes to the engine for its number: sequencing is on and
    /// both connections are up.
    pub fn sequencing_up(&self) -> bool {
        self.sequencing() && self.seq_ready.load(Ordering::Acquire) && self.engine_up()
    }

    /// Whether numbering is about to start: sequencing is on, the engine is up, and its first
    /// consumer is being made (the engine has not called [`Shared::set_seq_ready`] yet). Pushes
    /// published then are queued for their number, and the engine's publishing task waits
    /// for the consumer (at most its operation timeout) instead of sending them unnumbered:
    /// a node's first numbered pushes would otherwise overtake its last unnumbered ones on the
    /// other nodes (they travel on different paths). Once the consumer was ready or failed,
    /// an unready consumer means unnumbered pushes at once, as before.
    pub fn numbering_soon(&self) -> bool {
        self.sequencing()
            && !self.seq_ready.load(Ordering::Acquire)
            && self.seq_starting.load(Ordering::Acquire)
            && self.engine_up()
    }

    fn order(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.order.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies here, unnumbered and in order, what was numbered but did not come back yet,
    /// then what waits for a number.
    fn apply_waiting(&self, waiting: &mut Waiting) {
        self.apply_acked(waiting);
        for (_, msg) in std::mem::take(&mut waiting.queue) {
            self.deliver_unsequenced(msg, true);
        }
    }

    /// Applies here, unnumbered and in order, what the engine numbered but did not bring back
    /// yet (the receiving side failed: it may never come back).
    fn apply_acked(&self, waiting: &mut Waiting) {
        for (number, msg) in std::mem::take(&mut waiting.acked) {
            if let Some(n) = number {
                if waiting.applied_here.len() == APPLIED_HERE_KEPT {
                    waiting.applied_here.pop_front();
                }
                waiting.applied_here.push_back(n);
            }
            self.deliver_unsequenced(msg, true);
        }
    }

    /// The engine numbered the [`Job::Seq`] `id` (`number`: `(epoch, number)` when it says):
    /// it now waits to come back, and is applied here unnumbered if the receiving side fails
    /// first. Engines that learn the number call this before [`Shared::count_sent`], which
    /// does it without one.
    ///
    /// Bounded like the publish queue: past its capacity (a receiving side that stalls without
    /// failing), the oldest is forgotten, as before this list existed.
    pub fn numbered(&self, id: u64, number: Option<(u64, u64)>) {
        let mut waiting = self.order();
        if number.is_some() {
            waiting.last_number = number;
        }
        if let Some(at) = waiting.queue.iter().position(|(i, _)| *i == id)
            && let Some((_, msg)) = waiting.queue.remove(at)
        {
            if waiting.acked.len() >= self.tx.max_capacity() {
                waiting.acked.pop_front();
            }
            waiting.acked.push_back((number, msg));
        }
    }

    /// This node's own numbered message came back (`false`: it was applied here already when
    /// the receiving side failed; skip it). It is the oldest of those that had not: the first
    /// numbered one, or (back before the engine's acknowledgement was handled) the first
    /// waiting one; compared, not assumed, so that one applied here without its number and
    /// coming back after all never takes another's place.
    fn came_back(&self, msg: &BackplaneMsg) -> bool {
        let BackplaneMsg::Sequenced { epoch, seq, msg } = msg else {
            return true;
        };
        let number = (*epoch, *seq);
        let mut waiting = self.order();
        if let Some(at) = waiting.applied_here.iter().position(|n| *n == number) {
            waiting.applied_here.remove(at);
            return false;
        }
        let first_acked = waiting
            .acked
            .front()
            .is_some_and(|(n, m)| n.map_or(m == &**msg, |n| n == number));
        if first_acked {
            waiting.acked.pop_front();
        } else if waiting.queue.front().is_some_and(|(_, m)| m == &**msg) {
            waiting.queue.pop_front();
        }
        true
    }

    /// Whether the [`Job::Seq`] `id` still waits for its number (`false`: it was applied here
    /// unnumbered meanwhile; publish it as a plain frame).
    pub fn waits_for_number(&self, id: u64) -> bool {
        self.order().queue.iter().any(|(i, _)| *i == id)
    }

    /// `Backplane::publish`: this node's own presence is recorded and published (never
    /// delivered back); a push numbered by the engine is applied when it comes back; anything
    /// else is delivered to the local sink at once and published for the other nodes.
    pub fn publish(&self, msg: BackplaneMsg) {
        if matches!(msg, BackplaneMsg::Presence { .. }) {
            // Under the cluster lock, so snapshots and presence changes keep their order.
            let mut cluster = self.cluster();
            match cluster.publish(&msg) {
                Ok(bytes) => self.enqueue(bytes),
                Err(e) => self.codec_error(&e),
            }
            return;
        }
        let sequenced = self.sequencing() && codec::sequenceable(&msg);
        let mut order = sequenced.then(|| self.order());
        let numbering = sequenced && (self.sequencing_up() || self.numbering_soon());
        // The append goes with the numbered message when the engine numbers entries.
        let attach = numbering && self.numbered_appends.load(Ordering::Acquire);
        let mut append = None;
        if self.mailbox.enabled {
            let target = match &msg {
                BackplaneMsg::Push { uid, event, .. } => {
                    Some((Target::Uids(Some(Arc::from([uid.clone()]))), event))
                }
                BackplaneMsg::PushMany { uids, event, .. } => {
                    Some((Target::Uids(Some(uids.clone())), event))
                }
                BackplaneMsg::Broadcast { event, .. } => Some((Target::Uids(None), event)),
                BackplaneMsg::PushClient {
                    uid,
                    client_id,
                    event,
                    ..
                } => Some((Target::Client(uid.clone(), client_id.clone()), event)),
                _ => None,
            };
            if let Some((target, event)) = target {
                append = self.append_or_fall_back(target, event, attach);
            }
        }
        let frame = match codec::encode_msg(self.origin, &msg) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.codec_error(&e);
                // Not for the other nodes, but this node's clients still get it.
                return self.deliver_unsequenced(msg, sequenced);
            }
        };
        if let Some(waiting) = order.as_mut() {
            if numbering {
                waiting.next += 1;
                let id = waiting.next;
                waiting.queue.push_back((id, msg.clone()));
                let append_id = append.as_ref().and_then(Job::append_id);
                let append = append.map(Box::new);
                if !self.enqueue_job(Job::Seq {
                    frame,
                    msg,
                    id,
                    append,
                }) {
                    waiting.queue.pop_back();
                    self.appends_done(&Vec::from_iter(append_id), false);
                }
                return;
            }
            // Unreachable: what waits for a number is applied first.
            tracing::debug!(
                backplane = self.name,
                seq_ready = self.seq_ready.load(Ordering::Acquire),
                engine_up = self.engine_up(),
                "push published unnumbered"
            );
            self.apply_waiting(waiting);
        }
        if let Some(job) = append {
            // Not numbered after all (the engine went away meanwhile): made on its own.
            self.enqueue_append(job);
        }
        self.enqueue(frame);
        self.deliver_unsequenced(msg, sequenced);
    }

    fn appends_waiting(&self) -> std::sync::MutexGuard<'_, PendingAppends> {
        self.appends_waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the mailbox append of a push while the engine is up; while it is unreachable,
    /// keeps the push in the node-local fallback for this node's own Ajax clients instead
    /// (the local delivery of the push wakes their polls; the other nodes' Ajax clients miss
    /// it). Decided under the lock an outage takes to move what is still queued to the
    /// fallback ([`Shared::set_up`]), so the fallback gets the pushes in publish order.
    ///
    /// `attach`: the append is returned instead (it travels with the push's [`Job::Seq`]),
    /// registered as pending like a queued one.
    fn append_or_fall_back(&self, target: Target, event: &Arc<Event>, attach: bool) -> Option<Job> {
        let mut waiting = self.appends_waiting();
        if !self.engine_up() {
            self.fall_back(&target, event);
            return None;
        }
        let entry = match codec::encode_event(event) {
            Ok(entry) => entry,
            Err(e) => {
                self.codec_error(&e);
                return None;
            }
        };
        waiting.next += 1;
        let id = waiting.next;
        let job = match &target {
            Target::Uids(uids) => Job::Append {
                uids: uids.clone(),
                entry,
                id,
            },
            Target::Client(uid, client) => Job::AppendClient {
                uid: uid.clone(),
                client: client.clone(),
                entry,
                id,
            },
        };
        waiting.queue.push_back((id, target, event.clone()));
        if attach {
            return Some(job);
        }
        if !self.enqueue_job(job) {
            waiting.queue.pop_back();
        }
        None
    }

    /// Queues an append that was to travel with its numbered message (dropped: counted as
    /// done).
    fn enqueue_append(&self, job: Job) {
        let id = job.append_id();
        if !self.enqueue_job(job) {
            self.appends_done(&Vec::from_iter(id), false);
        }
    }

    /// Whether the append `id` ([`Job::Append`], [`Job::AppendClient`]) is still to be made
    /// (`false`: an outage moved its push to the node-local fallback meanwhile; the engine
    /// must not get it, or a poll could take it after the newer pushes the fallback served).
    pub fn append_pending(&self, id: u64) -> bool {
        self.appends_waiting()
            .queue
            .binary_search_by_key(&id, |(i, _, _)| *i)
            .is_ok()
    }

    /// The publishing task is done with the appends `ids` (`stored`: the engine stored them;
    /// else they failed or were skipped). A stored append that an outage moved to the
    /// fallback in the meantime (the outage was seen after the engine stored it) is taken out
    /// of the fallback again, if no poll took it yet.
    pub fn appends_done(&self, ids: &[u64], stored: bool) {
        if ids.is_empty() {
            return;
        }
        let mut waiting = self.appends_waiting();
        waiting.queue.retain(|(i, _, _)| !ids.contains(i));
        if waiting.abandoned.is_empty() {
            return;
        }
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut waiting.abandoned)
            .into_iter()
            .partition(|(i, _)| ids.contains(i));
        waiting.abandoned = kept;
        if stored && !gone.is_empty() {
            let mut f = self.fallback();
            for q in f.queues.values_mut() {
                q.retain(|e| !gone.iter().any(|(_, g)| Arc::ptr_eq(g, e)));
            }
        }
    }

    /// The ids of the appends among `jobs`.
    /// (Not those a [`Job::Seq`] carries: see [`Job::append_id`].)
    pub fn append_ids(jobs: &[Job]) -> Vec<u64> {
        jobs.iter()
            .filter(|j| !matches!(j, Job::Seq { .. }))
            .filter_map(Job::append_id)
            .collect()
    }

    /// Waits until the engine is unreachable.
    pub async fn until_down(&self) {
        let mut up = self.up.subscribe();
        let _ = up.wait_for(|u| !*u).await;
    }

    fn deliver_unsequenced(&self, msg: BackplaneMsg, counted: bool) {
        if counted
            && !matches!(
                msg,
                BackplaneMsg::Flush { .. } | BackplaneMsg::CloseUid { .. }
            )
        {
            self.unsequenced.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(sink) = self.sink.get() {
            sink(msg);
        }
    }

    /// The engine cannot number what waits (its connection failed: `down` says why, and the
    /// publisher is marked down; or a connection was already down): every message waiting for
    /// a number is applied here now, in order, before any later publish, and the [`Job::Seq`]s
    /// of `jobs` become plain frames (those still in the queue are published plain when their
    /// turn comes: see [`Shared::waits_for_number`]).
    pub fn unsequence(&self, jobs: &mut [Job], down: Option<String>) {
        let mut waiting = self.order();
        if let Some(e) = down {
            self.set_up(Side::Publisher, false, Some(e));
        }
        self.apply_waiting(&mut waiting);
        for job in jobs.iter_mut() {
            // (One with an append stays: published plain, as `waits_for_number` says, with
            // its append made unnumbered.)
            if let Job::Seq {
                frame,
                append: None,
                ..
            } = job
            {
                *job = Job::Frame(std::mem::take(frame));
            }
        }
    }

    fn enqueue(&self, bytes: Vec<u8>) {
        let _ = self.enqueue_job(Job::Frame(bytes));
    }

    /// Queues `job`; `false` when it was dropped.
    fn enqueue_job(&self, job: Job) -> bool {
        let sent = self.tx.try_send(job);
        if let Err(mpsc::error::TrySendError::Full(_)) = sent {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            self.metrics.queue_full.increment(1);
            let mut last = self
                .last_drop_warn
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                *last = Some(Instant::now());
                tracing::warn!(
                    backplane = self.name,
                    dropped,
                    "backplane publish queue full: message dropped"
                );
            }
        }
        sent.is_ok()
    }

    fn codec_error(&self, e: &codec::CodecError) {
        self.codec_errors.fetch_add(1, Ordering::Relaxed);
        self.metrics.codec.increment(1);
        tracing::warn!(backplane = self.name, error = %e, "backplane message dropped");
    }

    /// A payload arrived from the pub/sub connection.
    pub fn receive(&self, payload: &[u8]) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.metrics.received.increment(1);
        let now = self.now();
        let out = self.cluster().receive(payload, now);
        self.run(out);
    }

    /// The timer: heartbeats and expiry.
    pub fn tick(&self) {
        let now = self.now();
        let out = self.cluster().tick(now);
        self.run(out);
        self.release_held();
    }

    /// Executes what the cluster view asked for, with its lock released.
    fn run(&self, out: Output) {
        for bytes in out.publish {
            self.enqueue(bytes);
        }
        if let Some(e) = out.error {
            self.codec_error(&e);
        }
        if let Some(kind) = out.skipped {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                backplane = self.name,
                kind,
                "unknown backplane frame kind skipped"
            );
        }
        for (origin, uids) in out.expired_uids {
            // The survivors remove the dead node from each of its uids; whoever empties a
            // uid's set fires its uidport-close.
            for uid in uids {
                let _ = self.ops.try_send(Op::Uidport {
                    uid,
                    member: origin,
                    open: false,
                    done: None,
                });
            }
        }
        for (origin, node, uids) in out.expired {
            self.expired.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                backplane = self.name,
                origin,
                node = ?node,
                uids,
                "backplane node silent past the expiry: its uids leave the connected uids"
            );
        }
        if out.own_sequenced && !out.deliver.iter().all(|m| self.came_back(m)) {
            return;
        }
        self.deliver_in_order(out.deliver, out.after);
    }

    /// Delivers a message to the local sink.
    pub fn deliver(&self, msg: BackplaneMsg) {
        if let Some(sink) = self.sink.get() {
            sink(msg);
        }
    }

    /// Counts the jobs sent to the engine.
    pub fn count_sent(&self, jobs: &[Job]) {
        for j in jobs {
            let (n, b) = match j {
                Job::Frame(_) => {
                    self.metrics.published.increment(1);
                    (&self.published, &self.published_bytes)
                }
                Job::Seq { id, append, .. } => {
                    if let Some(a) = append {
                        self.appends.fetch_add(1, Ordering::Relaxed);
                        self.append_bytes
                            .fetch_add(a.len() as u64, Ordering::Relaxed);
                    }
                    self.metrics.published.increment(1);
                    self.sequenced.fetch_add(1, Ordering::Relaxed);
                    self.numbered(*id, None);
                    (&self.published, &self.published_bytes)
                }
                Job::Append { .. } | Job::AppendClient { .. } => {
                    (&self.appends, &self.append_bytes)
                }
            };
            n.fetch_add(1, Ordering::Relaxed);
            b.fetch_add(j.len() as u64, Ordering::Relaxed);
        }
        self.metrics
            .queue
            .set((self.tx.max_capacity() - self.tx.capacity()) as f64);
    }

    /// [`Shared::count_sent`] for jobs whose publication to the engine started at `started`
    /// (recorded in `sente_backplane_publish_seconds`).
    pub fn count_sent_since(&self, jobs: &[Job], started: Instant) {
        self.metrics
            .publish_seconds
            .record(started.elapsed().as_secs_f64());
        self.count_sent(jobs);
    }

    /// This node's present uids (its memberships of the uidport sets).
    pub fn local_uids(&self) -> Vec<Uid> {
        self.cluster().local_uids().cloned().collect()
    }

    /// Decodes mailbox entries (an entry that cannot be read is counted and skipped).
    pub fn decode_entries(&self, entries: &[Vec<u8>]) -> Vec<Taken> {
        let limits = self.cluster().config().limits.clone();
        entries
            .iter()
            .filter_map(|e| match codec::decode_entry(e, &limits) {
                Ok(taken) => Some(taken),
                Err(err) => {
                    self.codec_error(&err);
                    None
                }
            })
            .collect()
    }

    /// A new lease id for `cid` (remembered as this node's last lease of the client).
    fn new_lease(&self, uid: &Uid, cid: &ClientId) -> String {
        let n = self.lease_seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}-{n:x}", self.origin);
        self.lease_map()
            .insert((uid.clone(), cid.clone()), id.clone());
        id
    }

    /// Forgets this node's last lease of `cid` (returning it), or only if it is `id`.
    fn end_lease(&self, uid: &Uid, cid: &ClientId, id: Option<&str>) -> Option<String> {
        let mut map = self.lease_map();
        let key = (uid.clone(), cid.clone());
        if id.is_some_and(|id| map.get(&key).is_none_or(|l| l != id)) {
            return None;
        }
        map.remove(&key)
    }

    fn fallback(&self) -> std::sync::MutexGuard<'_, Fallback> {
        self.fallback.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `event` for this node's registered Ajax clients of `uids` (`None`: all of them),
    /// within [`MailboxConfig::max_events`] per client (over it, the client's fallback queue
    /// is dropped and logged, as a mailbox over its bound).
    fn fall_back(&self, target: &Target, event: &Arc<Event>) {
        let now = Instant::now();
        let max = self.mailbox.max_events;
        let mut f = self.fallback();
        let Fallback {
            clients, queues, ..
        } = &mut *f;
        let mut add = |uid: &Uid, cids: &HashMap<ClientId, Instant>| {
            for (cid, until) in cids {
                if *until <= now {
                    continue;
                }
                let q = queues.entry((uid.clone(), cid.clone())).or_default();
                q.push_back(event.clone());
                if q.len() > max {
                    queues.remove(&(uid.clone(), cid.clone()));
                    tracing::warn!(backplane = self.name, %uid, client = %cid,
                        "Ajax fallback queue over max_events while the engine is down: dropped");
                }
            }
        };
        match target {
            Target::Uids(Some(uids)) => {
                for uid in uids.iter() {
                    if let Some(cids) = clients.get(uid) {
                        add(uid, cids);
                    }
                }
            }
            Target::Uids(None) => {
                for (uid, cids) in clients.iter() {
                    add(uid, cids);
                }
            }
            Target::Client(uid, cid) => {
                if let Some(until) = clients.get(uid).and_then(|cids| cids.get(cid)) {
                    add(uid, &HashMap::from([(cid.clone(), *until)]));
                }
            }
        }
    }

    /// Records this node's Ajax client `cid` of `uid`, registered until `ttl` from now (and
    /// forgets the expired ones).
    fn local_client(&self, uid: &Uid, cid: &ClientId, ttl: Duration) {
        let now = Instant::now();
        let mut f = self.fallback();
        f.clients.retain(|_, cids| {
            cids.retain(|_, until| *until > now);
            !cids.is_empty()
        });
        f.clients
            .entry(uid.clone())
            .or_default()
            .insert(cid.clone(), now + ttl);
        let Fallback {
            clients, queues, ..
        } = &mut *f;
        queues.retain(|(u, c), q| {
            !q.is_empty() && clients.get(u).is_some_and(|cs| cs.contains_key(c))
        });
    }

    /// Takes up to `max_events` of `cid`'s fallback queue (remembered for a put back).
    fn take_local(&self, uid: &Uid, cid: &ClientId, max_events: usize) -> Vec<Arc<Event>> {
        let key = (uid.clone(), cid.clone());
        let mut f = self.fallback();
        let Some(q) = f.queues.get_mut(&key) else {
            return Vec::new();
        };
        let n = q.len().min(max_events.max(1));
        let taken: Vec<Arc<Event>> = q.drain(..n).collect();
        if q.is_empty() {
            f.queues.remove(&key);
        }
        if !taken.is_empty() {
            f.served.insert(key.clone(), taken.clone());
            self.lease_map().insert(key, LOCAL_LEASE.to_owned());
        }
        taken
    }

    /// Puts the last answer served from the fallback back in front (`back`), or forgets it.
    fn end_local(&self, uid: &Uid, cid: &ClientId, back: bool) {
        let key = (uid.clone(), cid.clone());
        let mut f = self.fallback();
        if let Some(events) = f.served.remove(&key)
            && back
        {
            let q = f.queues.entry(key).or_default();
            for e in events.into_iter().rev() {
                q.push_front(e);
            }
        }
    }

    /// Whether the engine is reachable now.
    fn engine_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Waits for `rx`, or gives up (`None`) when the engine is or goes unreachable meanwhile.
    async fn unless_down<T>(&self, rx: oneshot::Receiver<T>) -> Option<T> {
        let mut up = self.up.subscribe();
        tokio::select! {
            r = rx => r.ok(),
            _ = up.wait_for(|u| !*u) => None,
        }
    }

    fn lease_map(&self) -> std::sync::MutexGuard<'_, HashMap<(Uid, ClientId), String>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an engine operation.
    pub fn count_op(&self) {
        self.ops_done.fetch_add(1, Ordering::Relaxed);
    }

    /// The uids whose mailboxes a batch of jobs appended to (for the local wake).
    pub fn wake_after(&self, jobs: &[Job]) {
        for j in jobs {
            let j = match j {
                Job::Seq {
                    append: Some(a), ..
                } => a,
                j => j,
            };
            match j {
                Job::Append { uids, .. } => {
                    self.deliver(BackplaneMsg::AjaxWake { uids: uids.clone() });
                }
                Job::AppendClient { uid, .. } => {
                    let uids = Some(Arc::from([uid.clone()]));
                    self.deliver(BackplaneMsg::AjaxWake { uids });
                }
                Job::Frame(_) | Job::Seq { .. } => {}
            }
        }
    }

    /// Queues an engine operation; `false` when the queue is full or closed (logged).
    fn op(&self, op: Op) -> bool {
        if self.ops.try_send(op).is_ok() {
            return true;
        }
        self.record_error("backplane operations queue full or closed".to_owned());
        false
    }

    /// `Backplane::uidport`: this node's membership of `uid` changes, decided by the engine.
    pub fn uidport(&self, uid: &Uid, open: bool) -> BoxFuture<UidportDecision> {
        let (done, rx) = oneshot::channel();
        let queued = self.op(Op::Uidport {
            uid: uid.clone(),
            member: self.origin,
            open,
            done: Some(done),
        });
        Box::pin(async move {
            // Without an answer (queue full, backplane gone) the node decides alone: a
            // duplicate event rather than a lost one.
            if !queued {
                return UidportDecision::new(false, true);
            }
            rx.await.unwrap_or(UidportDecision::new(false, true))
        })
    }

    /// Records a connection coming up or going down (and logs the transitions).
    #[allow(clippy::needless_pass_by_value)]
    pub fn set_up(&self, side: Side, up: bool, error: Option<String>) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let was = s.publisher && s.subscriber;
        let flag = match side {
            Side::Publisher => &mut s.publisher,
            Side::Subscriber => &mut s.subscriber,
        };
        let changed = *flag != up;
        *flag = up;
        if let Some(e) = &error {
            s.last_error = Some((SystemTime::now(), e.clone()));
        }
        let is = s.publisher && s.subscriber;
        {
            // Under the lock `append_or_fall_back` decides under: the appends still queued are
            // moved to the fallback before any push published after the flip gets there.
            let mut waiting = self.appends_waiting();
            self.up.send_if_modified(|u| std::mem::replace(u, is) != is);
            if !is {
                for (id, target, event) in std::mem::take(&mut waiting.queue) {
                    self.fall_back(&target, &event);
                    waiting.abandoned.push((id, event));
                }
            }
        }
        if was && !is {
            s.outages += 1;
            self.metrics.outage.increment(1);
            s.down_since = Some(Instant::now());
            tracing::warn!(
                backplane = self.name,
                ?side,
                error = error.as_deref(),
                "backplane connection lost; reconnecting (local clients are still served)"
            );
        } else if !was && is {
            let outage = s.down_since.take().map(|t| t.elapsed());
            tracing::info!(backplane = self.name, ?outage, "backplane connected");
        } else if changed && !up {
            tracing::debug!(
                backplane = self.name,
                ?side,
                error = error.as_deref(),
                "backplane connection down"
            );
        } else if !up && error.is_some() {
            tracing::debug!(
                backplane = self.name,
                ?side,
                error = error.as_deref(),
                "backplane reconnect failed"
            );
        }
        drop(s);
        if !up && matches!(side, Side::Subscriber) {
            self.apply_acked(&mut self.order());
        }
    }

    /// Records an error that does not change the connection state (logged at warn, or at debug
    /// while reconnecting).
    #[allow(dead_code)]
    pub fn record_error(&self, error: String) {
        self.metrics.engine.increment(1);
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.publisher && s.subscriber {
            tracing::warn!(backplane = self.name, %error, "backplane error");
        } else {
            tracing::debug!(backplane = self.name, %error, "backplane error while reconnecting");
        }
        s.last_error = Some((SystemTime::now(), error));
    }

    /// The connections' state and the counters.
    pub fn health(&self) -> Health {
        let peers = self.cluster().peers();
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Health {
            connected: s.publisher && s.subscriber,
            joined: s.joined,
            last_error: s.last_error.clone(),
            outages: s.outages,
            peers,
            published: self.published.load(Ordering::Relaxed),
            published_bytes: self.published_bytes.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            codec_errors: self.codec_errors.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            expired_nodes: self.expired.load(Ordering::Relaxed),
            appends: self.appends.load(Ordering::Relaxed),
            append_bytes: self.append_bytes.load(Ordering::Relaxed),
            ops: self.ops_done.load(Ordering::Relaxed),
            sequenced: self.sequenced.load(Ordering::Relaxed),
            unsequenced: self.unsequenced.load(Ordering::Relaxed),
        }
    }

    /// Records that this node has joined the cluster: the engine has its subscription (the
    /// round trip that confirms it is done), and where pushes are numbered, the node's place
    /// in the numbering is read. The engine calls it once; a later outage does not undo it.
    pub fn mark_joined(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .joined = true;
    }

    /// Whether [`Shared::mark_joined`] was called (`Backplane::joined`).
    pub fn joined(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .joined
    }

    /// Waits until both connections are up, or `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.health().connected {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The [`Mailbox`] of a backplane: its operations go through the operations queue. While the
/// engine is unreachable they do not wait for it: `known` answers `true`, `register` and
/// `settle` are queued for later, and `take` serves the node-local fallback (see
/// [`Shared::publish`]).
pub struct Mailboxes(pub Arc<Shared>);

impl Mailbox for Mailboxes {
    fn register(&self, uid: &Uid, client: &ClientId, ttl: Duration) -> BoxFuture<()> {
        self.0.local_client(uid, client, ttl);
        self.unit_op(|done| Op::Register {
            uid: uid.clone(),
            cid: client.clone(),
            ttl,
            done,
        })
    }

    fn known(&self, uid: &Uid, client: &ClientId) -> BoxFuture<bool> {
        let (done, rx) = oneshot::channel();
        let queued = self.0.engine_up()
            && self.0.op(Op::Known {
                uid: uid.clone(),
                cid: client.clone(),
                done,
            });
        let shared = self.0.clone();
        Box::pin(async move { !queued || shared.unless_down(rx).await.unwrap_or(true) })
    }

    fn take(
        &self,
        uid: &Uid,
        client: &ClientId,
        max_events: usize,
        max_bytes: usize,
    ) -> BoxFuture<Vec<Taken>> {
        // What the fallback kept during an outage is older than what the engine got since.
        let local: Vec<Taken> = self
            .0
            .take_local(uid, client, max_events)
            .into_iter()
            .map(Taken::plain)
            .collect();
        if !local.is_empty() || !self.0.engine_up() {
            return Box::pin(async move { local });
        }
        let (done, rx) = oneshot::channel();
        let lease = self.0.new_lease(uid, client);
        let queued = self.0.op(Op::Take {
            uid: uid.clone(),
            cid: client.clone(),
            lease: lease.clone(),
            max_events,
            max_bytes,
            done,
        });
        let (shared, uid, cid) = (self.0.clone(), uid.clone(), client.clone());
        Box::pin(async move {
            let taken = if queued {
                if let Some(taken) = shared.unless_down(rx).await {
                    taken
                } else {
                    // Given up (the engine went away): the take still runs when it is back,
                    // and this puts its lease back right after.
                    let (done, _) = oneshot::channel();
                    shared.op(Op::PutBack {
                        uid: uid.clone(),
                        cid: cid.clone(),
                        lease: lease.clone(),
                        done,
                    });
                    Vec::new()
                }
            } else {
                Vec::new()
            };
            if taken.is_empty() {
                shared.end_lease(&uid, &cid, Some(&lease));
            }
            taken
        })
    }

    fn put_back(&self, uid: &Uid, client: &ClientId, events: Vec<Arc<Event>>) -> BoxFuture<()> {
        drop(events);
        let Some(lease) = self.0.end_lease(uid, client, None) else {
            return Box::pin(async {});
        };
        if lease == LOCAL_LEASE {
            self.0.end_local(uid, client, true);
            return Box::pin(async {});
        }
        self.unit_op(|done| Op::PutBack {
            uid: uid.clone(),
            cid: client.clone(),
            lease,
            done,
        })
    }

    fn settle(&self, uid: &Uid, client: &ClientId, handshake: bool) -> BoxFuture<()> {
        self.unit_op(|done| Op::Settle {
            uid: uid.clone(),
            cid: client.clone(),
            handshake,
            done,
        })
    }

    fn sequence_now(&self) -> BoxFuture<Option<(u64, u64)>> {
        let (done, rx) = oneshot::channel();
        let queued = self.0.sequencing_up() && self.0.op(Op::SequenceNow { done });
        let shared = self.0.clone();
        Box::pin(async move {
            if queued {
                shared.unless_down(rx).await.flatten()
            } else {
                None
            }
        })
    }

    fn fill(&self, uid: &Uid, client: &ClientId, events: Vec<Taken>) -> BoxFuture<bool> {
        let mut entries = Vec::with_capacity(events.len());
        for t in &events {
            let Some((epoch, seq)) = t.seq else {
                return Box::pin(async { false });
            };
            match codec::encode_event(&t.event) {
                Ok(mut entry) => {
                    codec::number_entry(&mut entry, epoch, seq);
                    entries.push(entry);
                }
                Err(e) => {
                    self.0.codec_error(&e);
                    return Box::pin(async { false });
                }
            }
        }
        let (done, rx) = oneshot::channel();
        let queued = self.0.engine_up()
            && self.0.op(Op::Fill {
                uid: uid.clone(),
                cid: client.clone(),
                entries,
                done,
            });
        let shared = self.0.clone();
        Box::pin(async move { queued && shared.unless_down(rx).await.unwrap_or(false) })
    }

    fn delivered(&self, uid: &Uid, client: &ClientId) -> BoxFuture<()> {
        let Some(lease) = self.0.end_lease(uid, client, None) else {
            return Box::pin(async {});
        };
        if lease == LOCAL_LEASE {
            self.0.end_local(uid, client, false);
            return Box::pin(async {});
        }
        let (done, rx) = oneshot::channel();
        let op = Op::Delivered {
            uid: uid.clone(),
            cid: client.clone(),
            lease,
            done,
        };
        let queued = self.0.urgent.try_send(op).is_ok();
        if !queued {
            self.0
                .record_error("backplane operations queue full or closed".to_owned());
        }
        self.wait_op(queued, rx)
    }
}

impl Mailboxes {
    /// Queues an operation answered with `()`; the future resolves once it ran, or at once
    /// while the engine is unreachable (the operation still runs when it is back).
    fn unit_op(&self, op: impl FnOnce(oneshot::Sender<()>) -> Op) -> BoxFuture<()> {
        let (done, rx) = oneshot::channel();
        let queued = self.0.op(op(done));
        self.wait_op(queued, rx)
    }

    /// Waits for a queued operation's answer (or the engine going away).
    fn wait_op(&self, queued: bool, rx: oneshot::Receiver<()>) -> BoxFuture<()> {
        let shared = self.0.clone();
        Box::pin(async move {
            if queued {
                let _ = shared.unless_down(rx).await;
            }
        })
    }
}

/// Runs the timer until `stop` is dropped.
pub async fn run_timer(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let every = {
        let c = shared.cluster();
        (c.config().heartbeat / 4).max(Duration::from_millis(10))
    };
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => shared.tick(),
            _ = stop.changed() => return,
        }
    }
}

/// Exponential backoff between reconnect attempts.
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// Waits from `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    /// Starts again from the shortest wait (after a successful connection).
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// Sleeps for the next delay; false when `stop` fired meanwhile.
    pub async fn wait(&mut self, stop: &mut watch::Receiver<()>) -> bool {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = stop.changed() => false,
        }
    }
}
