//! A [`Backplane`] over Redis pub/sub for sente-rs: run several `sente::Server` nodes as one
//! cluster. Any node's `send`, `send_many`, `broadcast`, `flush` and `close_uid` reach the
//! clients of every node, `connected_uids()` is the cluster's, `chsk/uidport-open` /
//! `-close` fire once for the cluster, and Ajax clients need no sticky sessions (their pushes
//! wait in per-client mailboxes in Redis).
//!
//! ```no_run
//! use std::sync::Arc;
//! use sente_redis::{RedisBackplane, RedisConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let backplane = RedisBackplane::start(RedisConfig::new("redis://127.0.0.1:6379/"))?;
//! let server = sente::Server::builder()
//!     .backplane(Arc::new(backplane.clone()))
//!     .build()?;
//! // Serve `server` as usual; `backplane.health()` tells whether Redis is reachable.
//! # let _ = server;
//! # Ok(())
//! # }
//! ```
//!
//! # Channel, keys, encoding
//!
//! - **One channel per cluster**: `<cluster>:backplane` ([`RedisConfig::cluster`], default
//!   `sente`, so `sente:backplane`). Every node `SUBSCRIBE`s to it once and `PUBLISH`es every
//!   frame to it.
//! - **Keys** (below): uidport sets, node liveness, Ajax registrations and mailboxes.
//!   Presence (`connected_uids`) is not stored: it lives in each node's memory and is rebuilt
//!   from heartbeats and snapshots.
//! - **Encoding**: each payload is one frame of
//!   [`sente_proto::backplane::codec`]: a version byte (1), the publishing instance's
//!   64-bit origin id, a kind byte and a compact body; events travel as their edn text
//!   (msgpack for events holding raw bytes). Unknown kinds are skipped and unknown versions
//!   refused (counted in [`Health::codec_errors`]), so two releases can share a cluster during a
//!   rolling deploy.
//!
//! # Ordering and delivery
//!
//! A node's frames go out through one connection, in publish order (batched into pipelines),
//! and Redis delivers a channel's messages to each subscriber in that order, so every node sees
//! another node's pushes in `send` order per uid (in fact in total order per publishing node).
//!
//! With cross-node resume ([`RedisConfig::resume`], on by default; see below) pushes, flushes
//! and closes are numbered by Redis and applied by every node, their own included, when they
//! come back. Without it, or while Redis is unreachable, a node's own pushes are applied to its
//! own clients at once, without the round trip through Redis (its own frames coming back are
//! recognized by their origin and ignored), so its local clients are served even while Redis
//! is down.
//!
//! # Cross-node resume
//!
//! A WebSocket client that resumes (the `resume` extension, see
//! `sente_proto::server::replay`) may resume on any node, so the pushes sent while it
//! reconnected after its node died are replayed by the node it reaches:
//!
//! - Each `send`, `send_many`, `broadcast`, `flush` and `close_uid` is one `EVALSHA` of a
//!   script that increments `<cluster>:gseq` and `PUBLISH`es the frame with that number and
//!   the epoch appended (the codec's sequenced trailer), atomically, so the channel's order is
//!   the numbers' order for every subscriber. The epoch (`<cluster>:epoch`, 8 bytes) is made
//!   by the first node; a Redis that lost its keys gets a new one (older positions are then
//!   refused with `recovered: false`).
//! - Every node applies the numbered frames in order (its own included: no local shortcut)
//!   and logs every push under its number (see `sente_proto::server::replay`, "In a
//!   cluster"). A node that missed numbers (its subscription dropped) or started after a
//!   client's position refuses that position (`recovered: false`, no partial replay).
//! - A resuming Ajax handshake (its mailbox new after a WebSocket, or its last answer lost)
//!   reads `epoch` and `gseq` (`MGET`) after registering the mailbox, and puts what the
//!   client missed up to that number, from the node's logs, in front of the mailbox with one
//!   script (`Mailbox::fill`; refused over the mailbox's bounds).
//! - While Redis is unreachable (either connection down), pushes are applied locally at once
//!   and published unnumbered when it is back; what was queued for numbering when the
//!   connection failed is applied locally then, in order, after what Redis numbered but the
//!   subscription had not brought back yet when it failed. Their clients forget their position
//!   (their next resume gets `recovered: false`). Counted in [`Health::unsequenced`].
//! - Costs: one `EVALSHA` (a `GET`, an `INCR` and the `PUBLISH`, all in Redis) instead of a
//!   `PUBLISH` per push, 10 to 20 more bytes per frame, and one more network round trip
//!   before a node's own clients see its push; memory: every node keeps every pushed uid's
//!   recent pushes (the server's [`sente_proto::server::replay::ReplayConfig`] bounds, per
//!   uid, for `max_age_ms`). Measured in `BENCHMARKS.md`, "Cluster resume".
//! - Mixed versions (rolling deploy): an older node applies numbered frames as plain ones (it
//!   ignores the trailer) and its own pushes unnumbered; a newer node applies the older node's
//!   pushes unnumbered, so while both run, positions stop being resumable at each of them.
//!   Turn it off with `RedisConfig::resume(false)` (or the server's replay off).
//!
//! `publish` never blocks: frames go into a bounded queue ([`RedisConfig::queue`], default
//! 65 536 frames) drained by a task. When the queue is full (Redis down for long, or slower than
//! the application), the frame is **dropped**, counted in [`Health::dropped`] and logged with
//! `tracing::warn!` (at most once a second). While Redis is unreachable the queue keeps what
//! was published and the task retries the head of the queue after reconnecting; a batch whose
//! `PUBLISH` failed mid-way may then reach other nodes twice (rare: only when a connection dies
//! between Redis executing and answering the pipeline).
//!
//! # Presence and expiry
//!
//! Each node publishes its presence changes, and a heartbeat every
//! [`ClusterConfig::heartbeat`] (1 s) with the count and hash of its present uids. A node that
//! is silent for [`ClusterConfig::expiry`] (5 s) is expired: this node delivers
//! `Presence { node, uid, ws: false, ajax: false }` for each of its uids, so they leave
//! `connected_uids()` within the expiry plus one tick (a quarter heartbeat). A node whose view
//! mismatches a heartbeat (it joined late, or missed frames during an outage) asks for a
//! snapshot and catches up; a node that comes back is not counted twice (presence is keyed by
//! node). See [`sente_proto::backplane::cluster`] for the protocol. While this node is cut from
//! Redis it hears nobody, so after the expiry it shows its own uids only, until it reconnects.
//!
//! # Keys
//!
//! All under `<cluster>:`. A `<uid>` is the hex of the uid's encoding
//! ([`codec::uid_bytes`]), a `<client>` the hex of the client id, an `<origin>` a node's
//! backplane instance id (16 hex digits). Every change is one Lua script (`SCRIPT LOAD` once per
//! connection, then `EVALSHA`), so it is atomic; scripts use Redis's clock (`TIME`), never the
//! nodes'. Scripts touch keys they compute, so a cluster's keys must live on one Redis (no
//! Redis Cluster sharding).
//!
//! | key | type | holds | expiry |
//! |---|---|---|---|
//! | `node:<origin>` | string | the node is alive | [`ClusterConfig::expiry`] (5 s), set again every heartbeat |
//! | `uidport:<uid>` | set of origins | the nodes that have the uid | [`RedisConfig::uidport_ttl`] (1 h) after its last change, renewed by its nodes every quarter of it |
//! | `ajax:<uid>` | sorted set, client by expiry (ms) | the uid's registered Ajax clients | the last registration's |
//! | `ajax` | sorted set, `<uid>:<client>` by expiry | every registered Ajax client (for `broadcast`) | members dropped past their score |
//! | `mbox:<uid>:<client>` | list of events ([`codec::encode_event`], numbered with [`codec::number_entry`] under cross-node resume) | the client's mailbox | its registration's |
//! | `mboxb:<uid>:<client>` | integer | the mailbox's bytes | its registration's |
//! | `idem:<uid>_<client>_<request id hex>` | string: `r` while a retried request runs, then `d` and its outcome ([`codec::encode_outcome`]) | the cluster-wide dedupe of the `idem` extension (claimed with `SET NX`) | the server's dedupe window (`IdemConfig::max_age_ms`, 120 s) |
//! | `lease:<uid>:<client>` | list: lease id, delivered flag (`0`/`1`), events | the events of the client's last answer, until its next GET settles them ("Leased takes") | its registration's |
//! | `gseq` | integer | the last global push number (cross-node resume) | none |
//! | `epoch` | 8 bytes | the epoch of those numbers | none |
//!
//! [`remove_cluster`] deletes them all, for a cluster gone for good.
//!
//! # `chsk/uidport-*` once per cluster
//!
//! When a node's first connection of a uid opens (its core's `uidport-open`), the node's
//! operations task runs a script on `uidport:<uid>`: it drops members whose `node:` key is gone
//! (dead nodes), adds this node, and answers **fire** only if no live member was there before.
//! When the node's last connection of the uid closes (after the grace period), the script
//! removes the node and answers **fire** only if no live member is left. Redis runs scripts one
//! at a time, so of two nodes connecting the same uid at the same moment exactly one sees the
//! set empty; of the last two leaving, exactly one empties it. One node's decisions are made in
//! the order it asked (one connection, one task), and fired in that order.
//!
//! - **A node dies**: after [`ClusterConfig::expiry`] every survivor expires it from its
//!   presence view and runs the close script for each of its uids with the dead node as the
//!   member; the one whose removal empties a set fires `uidport-close` (the others find it
//!   gone). If every node died, the next node to open such a uid finds only stale members:
//!   it fires `uidport-close` then `uidport-open` ([`UidportDecision::close_stale`]).
//! - **A node comes back** after the others dropped it (a partition longer than the expiry):
//!   its uids were closed for the cluster; they are not re-added (no second open), and its
//!   later closes find it gone (no second close). It counts again from its next open.
//! - Without an answer from Redis for a decision (queue full, or a command refused), the node
//!   decides alone (fires): a duplicate event rather than a lost one.
//!
//! # Ajax without sticky sessions
//!
//! - A handshake (on any node) registers the client in `ajax:<uid>` and `ajax`, for
//!   `lp_timeout_ms` + `ms_allow_reconnect_before_close_ajax` + 1 s, renewed by every poll. A
//!   poll on a node that never saw the handshake asks Redis whether the client is registered
//!   and, if so, is served as a poll (otherwise it gets a handshake, as on one server).
//! - A `send`, `send_many` or `broadcast` appends the event once, on the publishing node, to
//!   the mailbox of every registered client of its uids, in the same pipeline as, and before,
//!   the `PUBLISH` of the push. Nodes hearing the push wake the polls they hold for those uids
//!   (after the Ajax batching window), and the publishing node does once the append is
//!   acknowledged; a woken poll takes its mailbox's oldest events (a script moves them into
//!   the client's lease, so each event is taken by exactly one poll; see "Leased takes") and
//!   answers with them, up to `max_batch_len` events and half the message limit. A poll also
//!   takes at once what is waiting when it arrives. An answer that cannot be delivered puts
//!   its lease back in front.
//! - Bounds ([`MailboxConfig`]): over `max_events` (1 000, as `max_pending_events_per_client`)
//!   or `max_bytes` (4 MiB) the client is forgotten, as one server forgets a client with too
//!   many pushes waiting: its mailbox is dropped and its next poll gets a handshake. A client
//!   that stops polling is forgotten when its registration expires, mailbox with it.
//! - A POST may land on any node: it is handled there (the handler's reply is the POST's
//!   answer); with no handshake seen on that node, the request's own packer is used.
//!
//! # Numbered entries
//!
//! With cross-node resume a push's mailbox append runs in the same script as its numbering
//! (`PUBLISH_SEQ` with the append after it): each entry gets the push's sequenced trailer
//! ([`codec::number_entry`]; an older node reads the event and ignores it). A resuming Ajax
//! client names its position on every GET, so a poll's answer from the mailbox is numbered
//! (`[:chsk/seq n]` first, as on one node) and leaves out what the position says the client
//! has (an answer re-sent after a node died, pushes its WebSocket delivered); a resuming
//! handshake whose mailbox was kept recovers its own position (`recovered: true`), else it is
//! recovered only if the node's logs hold nothing after it (otherwise `recovered: false`, no
//! partial replay). Pushes applied unnumbered (Redis unreachable) make unnumbered entries:
//! those answers are plain batches.
//!
//! # Leased takes
//!
//! A poll's take does not delete: the events it returns become the client's *lease* in the
//! engine (one per client, with an id and a delivered flag), until the client's next GET, on
//! any node, settles it before that GET registers and takes (the `Mailbox` trait's
//! "Leased takes" in `sente_proto::backplane` has the rule and its argument):
//!
//! - a **poll** confirms the lease (drops it): Sente Ajax clients (Clojure, JS, native) send the
//!   next poll only after they received and processed the previous answer;
//! - a **handshake** (what those clients send after a failed GET) puts the lease back in front of
//!   the mailbox, unless the node that took it marked it delivered (it does once the answer is
//!   handed to the request; then the lease is dropped);
//! - a node that cannot hand its answer over (the request went away) puts its lease back itself.
//!
//! So a node killed while it holds an answer loses nothing (the client's handshake re-sends the
//! batch), and a client that received an answer never gets its events twice. The mark is
//! queued by the request once its answer is made, as it goes to the connection (not when the
//! batch is handed to the request, which may still go away unanswered), in an urgent lane
//! that goes ahead of the node's other queued engine operations (`OpQueue` in
//! `sente-backplane-kit`): it reaches the engine after at most the operation in progress and
//! its own compare-and-set, about a millisecond, instead of after the whole queue. Left: a
//! node killed within that millisecond after writing an answer re-sends the batch once if the
//! client did receive it and its next poll died with the node (random NATS kills: 2 of 32 before
//! the urgent lane; since, 0 of 96 on an otherwise idle machine and 2 of 64 with a second test
//! loop running beside it; Redis: 0 of 8). That window is left only for a client **without
//! resume**: mailbox entries carry the cluster's number of their push (see "Numbered
//! entries"), so a resuming client's (the default for the Rust, WASM and JS clients) re-sent
//! batch is left out by the server (its GET names its position) and skipped by the client;
//! the kill-anywhere process test keeps reporting the repeat as `KNOWN HOLE` for its one
//! client without resume, and fails on any repeat for the others. Marking before the write would trade that duplicate for a loss (a node
//! killed between its mark and its write), and so would a mark made by the take's own
//! compare-and-set: a delivered lease is dropped by a handshake, so it must not be marked
//! before the answer is out. Costs: one more engine operation per GET (the settle) and per
//! answer (the mark).
//!
//! # Failures
//!
//! At the start the node has joined ([`Backplane::joined`]) once Redis has confirmed its
//! subscription; until then the server holds new clients (`sente::Builder::join_wait`, at most
//! 10 s by default; past it the node serves without the cluster, as during an outage).
//!
//! Both connections (publish and subscribe) reconnect by themselves with exponential backoff
//! (100 ms to 5 s, [`RedisConfig::reconnect`]); outages are logged with `tracing` (warn when
//! lost, info when back) and visible in [`RedisBackplane::health`]. Nothing here panics. The
//! backplane's tasks stop when the last clone of the [`RedisBackplane`] is dropped.
//!
//! The third connection, of the operations task (uidport decisions, registrations, takes),
//! reconnects the same way and retries the operation it was running; a take is not retried
//! (the poll stays held and is woken by the next push). Mailbox appends travel with the
//! publish pipeline, so they are retried with it. A command Redis refuses (not a connection
//! error) is logged and not retried: a refused operation's caller gets the single-node answer
//! (a uidport event fires on this node, a poll finds nothing). Redis restarting without
//! persistence loses the stored state: uids open at that moment may fire `uidport-open` again,
//! pushes waiting in mailboxes are lost, and Ajax clients re-handshake on their next poll.
//!
//! # A node killed (`SIGKILL`)
//!
//! What the process-level tests (`crates/sente-test-kit/tests/cluster_processes.rs` and
//! `clients/js/test/cluster.test.js`: three `sente-cluster-node` processes behind a round-robin TCP
//! proxy, one of them killed with `SIGKILL` while pushes flow) show:
//!
//! - **Its clients reconnect to the others.** The kernel closes the dead process's sockets, so its
//!   WebSocket clients and held Ajax polls fail at once; reconnect attempt 1 is immediate (native
//!   and JS clients; later attempts use the capped, jittered backoff), the load balancer sends it
//!   to a live node, and the client is open again there: measured 2 to 20 ms after the kill (up to
//!   180 ms on a loaded 2-core machine) for the native client on both transports, 10 to 45 ms for
//!   the JS client over Ajax; the tests allow 3 s.
//! - **Presence.** The reconnected uids are in every survivor's `connected_uids()` at once; the
//!   dead node's own entries leave when it is expired, [`ClusterConfig::expiry`] after its last
//!   heartbeat (5 s by default; the tests' 1 s expiry with 200 ms heartbeats expired it 1.4 to
//!   1.8 s after the kill). A uid that was only on the dead node gets one
//!   `chsk/uidport-close`, fired by a survivor, within the expiry plus a heartbeat.
//! - **Pushes to Ajax clients wait in the engine**, so a push is *acknowledged* once its mailbox
//!   append is stored ([`Health::appends`] counts them; a push still in the dead node's publish
//!   queue was not acknowledged and is lost with it). The client's re-handshake on a survivor keeps
//!   its mailbox, and its next poll takes what waits: every acknowledged push arrives exactly once
//!   and in order, whichever node sent it, also the batch a poll held on the dying node had
//!   already taken: takes are leased (see "Leased takes" above), so its client's handshake on a
//!   survivor puts that batch back in front. The tests demand it with no exception: the node
//!   holding a client's poll killed while pushes are in flight, and a variant that kills a random
//!   node at a random moment of the traffic (0 lost, 0 duplicated, in 32 runs before and 8
//!   runs after the urgent lane of "Leased takes"; the window left is there).
//! - **The Ajax window**: what waits for a client is bounded by [`MailboxConfig`]: `max_events`
//!   (1 000) and `max_bytes` (4 MiB) per client (over either, the client is forgotten and
//!   re-handshakes with an empty mailbox), and age: a mailbox lives as long as its client's
//!   registration, `lp_timeout_ms` + `ms_allow_reconnect_before_close_ajax` + 1 s after the
//!   client's last request (26 s with the server's defaults), so a client has that long to
//!   reconnect to a survivor before its waiting pushes are dropped.
//! - **The engine unreachable** (not a node): a node keeps serving its local WebSocket clients
//!   (a process test pushed about 40 in 500 ms of outage, all delivered once, in order). Its
//!   local **Ajax** clients are served too, from a node-local fallback of the mailboxes (in
//!   `sente-backplane-kit`): while the engine is unreachable a push is not appended; it is kept
//!   in memory for each of this node's own Ajax clients of its uids (those registered through
//!   this node), at most [`MailboxConfig::max_events`] per client (over it, that client's
//!   fallback queue is dropped, logged), and their polls take it from there, in order; mailbox
//!   operations do not wait for the engine meanwhile (`known` answers yes, registrations and
//!   settles run when it is back). What the fallback still holds when the engine is back is
//!   served first, then the mailbox. `send_to_client` to such a client is kept the same way.
//!   Pushes published in the moment before the node noticed the outage (5 to 30 ms), whose
//!   appends are still queued or in progress, are moved to the fallback when it notices, in
//!   publish order and ahead of every push published after (one lock orders the two), and
//!   their appends are given up (the one in progress at once) and never made later
//!   (`Shared::append_pending` in `sente-backplane-kit`), so none can reach a mailbox after the
//!   newer pushes the fallback served; an append the engine stored just before the outage was
//!   seen is taken out of the fallback again. The process test `service_restart` demands the
//!   local Ajax client's pushes in order without duplicates (47 NATS restarts checked: all in
//!   order, once; before: 1 in 16 got two late). Left: when the engine keeps its state across
//!   the outage (a network cut rather than a restart), an append written in the instant the
//!   connection broke may be stored and also served from the fallback (one push twice); and
//!   the other nodes' Ajax clients miss pushes made during the outage (their appends are not
//!   made).
//! - **Pushes to WebSocket clients** travel by pub/sub only, but with cross-node resume every
//!   node logs them under their global number, so a resuming client (the default of the Rust,
//!   WASM and JS clients) that reconnects to a survivor gets those sent meanwhile replayed:
//!   every acknowledged push arrives exactly once, in order, with `recovered: true` (the
//!   process test `ws_sigkill`). A client without resume loses the pushes sent while it
//!   reconnected (it sees every push sent after the reconnect, in order, without duplicates).
//!   **Known hole**: if this node's subscription drops while its publishing connection stays
//!   up, its own numbered pushes published meanwhile do not come back to it, so its connected
//!   clients miss them without a sign (the gap makes their positions unresumable here).

use sente_backplane_kit as shell;

pub use sente_proto::backplane::cluster::ClusterConfig;
pub use shell::{Health, MailboxConfig};

use futures_util::StreamExt;
use sente_proto::Uid;
use sente_proto::backplane::{
    Backplane, BackplaneMsg, BackplaneSink, BoxFuture, IdemStore, Mailbox, NodeId, UidportDecision,
    codec,
};
use shell::{
    Backoff, Idem, IdemSeen, Job, Mailboxes, Op, OpQueue, Shared, Side, cid_hex, idem_key, uid_hex,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Most frames sent in one pipeline.
const BATCH: usize = 256;

/// How to reach Redis and how the cluster behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The Redis URL (`redis://host:port/db`, `rediss://` needs the `redis` crate's TLS
    /// features).
    pub url: String,
    /// The cluster name: the channel is `<cluster>:backplane`, the keys `<cluster>:...`.
    /// Not empty and without `:` (so that no cluster's keys fall under another's prefix).
    /// Default `sente`.
    pub cluster: String,
    /// Capacity of the publish queue, in frames. Default 65 536.
    pub queue: usize,
    /// Reconnect backoff: first and largest delay. Default 100 ms and 5 s.
    pub reconnect: (Duration, Duration),
    /// Heartbeats, expiry and decoding limits.
    pub presence: ClusterConfig,
    /// The Ajax mailboxes (on by default).
    pub mailbox: MailboxConfig,
    /// How long a `uidport:<uid>` key lives after its last change or renewal; every node
    /// renews the keys of its uids every quarter of it. Default 1 h.
    pub uidport_ttl: Duration,
    /// Cross-node resume: number every push for the cluster (one `EVALSHA` of a script that
    /// increments `<cluster>:gseq` and publishes, instead of a `PUBLISH`), so a WebSocket
    /// client may resume on any node (see the crate docs, "Cross-node resume"). The servers
    /// use the numbers when their replay ([`sente_proto::server::replay::ReplayConfig`]) is
    /// enabled; turn this off when it is not (the numbering would cost for nothing). Default
    /// `true`.
    pub resume: bool,
}

impl RedisConfig {
    /// The defaults, with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            cluster: "sente".to_owned(),
            queue: 65_536,
            reconnect: (Duration::from_millis(100), Duration::from_secs(5)),
            presence: ClusterConfig::default(),
            mailbox: MailboxConfig::default(),
            uidport_ttl: Duration::from_secs(3600),
            resume: true,
        }
    }

    /// Sets [`RedisConfig::resume`].
    pub fn resume(mut self, on: bool) -> Self {
        self.resume = on;
        self
    }

    /// Sets [`RedisConfig::uidport_ttl`] (at least 1 s).
    pub fn uidport_ttl(mut self, ttl: Duration) -> Self {
        self.uidport_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Sets [`RedisConfig::mailbox`].
    pub fn mailbox(mut self, cfg: MailboxConfig) -> Self {
        self.mailbox = cfg;
        self
    }

    /// Sets [`RedisConfig::cluster`].
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// Sets [`RedisConfig::queue`].
    pub fn queue(mut self, frames: usize) -> Self {
        self.queue = frames.max(1);
        self
    }

    /// Sets [`RedisConfig::reconnect`].
    pub fn reconnect(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect = (min, max.max(min));
        self
    }

    /// Sets [`RedisConfig::presence`].
    pub fn presence(mut self, cfg: ClusterConfig) -> Self {
        self.presence = cfg;
        self
    }

    /// The pub/sub channel.
    pub fn channel(&self) -> String {
        format!("{}:backplane", self.cluster)
    }
}

/// Why a backplane could not be started, or a cluster removed ([`remove_cluster`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a Redis URL.
    Url(redis::RedisError),
    /// Not called within a tokio runtime.
    NoRuntime,
    /// The cluster name is empty or holds a `:` ([`RedisConfig::cluster`]).
    ClusterName(String),
    /// A Redis command failed ([`remove_cluster`]).
    Redis(redis::RedisError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Url(e) => write!(f, "invalid Redis URL: {e}"),
            Error::NoRuntime => f.write_str("RedisBackplane::start needs a tokio runtime"),
            Error::Redis(e) => write!(f, "Redis: {e}"),
            Error::ClusterName(name) => {
                write!(
                    f,
                    "invalid cluster name {name:?}: not empty, and without ':'"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// A [`Backplane`] over Redis pub/sub (see the crate docs). Cheap to clone; one instance per
/// server node.
#[derive(Clone)]
pub struct RedisBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    channel: String,
    _stop: watch::Sender<()>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("channel", &self.inner.channel)
            .field("origin", &self.inner.shared.origin)
            .finish_non_exhaustive()
    }
}

impl RedisBackplane {
    /// Starts the backplane's tasks (publisher, subscriber, timer) on the current tokio
    /// runtime. It connects in the background, so Redis need not be up yet; see
    /// [`RedisBackplane::wait_connected`].
    #[allow(clippy::needless_pass_by_value)] // a config is built for this call
    pub fn start(config: RedisConfig) -> Result<RedisBackplane, Error> {
        check_cluster_name(&config.cluster)?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let client = redis::Client::open(config.url.as_str()).map_err(Error::Url)?;
        let (shared, rx, ops) = Shared::new(
            "redis",
            config.presence.clone(),
            config.queue,
            config.mailbox.clone(),
        );
        shared.set_sequencing(config.resume);
        // A push's mailbox entries are numbered by the script that numbers the push.
        shared.set_numbered_appends(true);
        // Numbered frames come on the channel's subscription.
        shared.set_seq_ready(true);
        let (stop, stop_rx) = watch::channel(());
        let channel = config.channel();
        handle.spawn(run_publisher(
            client.clone(),
            config.cluster.clone(),
            channel.clone(),
            shared.clone(),
            rx,
            stop_rx.clone(),
            config.reconnect,
        ));
        handle.spawn(run_ops(
            client.clone(),
            config.cluster.clone(),
            config.uidport_ttl,
            shared.clone(),
            ops,
            stop_rx.clone(),
            config.reconnect,
        ));
        handle.spawn(run_subscriber(
            client,
            channel.clone(),
            shared.clone(),
            stop_rx.clone(),
            config.reconnect,
        ));
        handle.spawn(shell::run_timer(shared.clone(), stop_rx));
        Ok(RedisBackplane {
            inner: Arc::new(Inner {
                shared,
                channel,
                _stop: stop,
            }),
        })
    }

    /// The connection state and counters.
    pub fn health(&self) -> Health {
        self.inner.shared.health()
    }

    /// Waits until both connections are up; false after `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.inner.shared.wait_connected(timeout).await
    }

    /// This instance's origin id (in every frame it publishes).
    pub fn origin(&self) -> u64 {
        self.inner.shared.origin
    }

    /// The pub/sub channel.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }
}

impl Backplane for RedisBackplane {
    fn publish(&self, msg: BackplaneMsg) {
        self.inner.shared.publish(msg);
    }

    fn subscribe(&self, sink: BackplaneSink) {
        let _ = self.inner.shared.sink.set(sink);
    }

    fn uidport(&self, _node: NodeId, uid: &Uid, open: bool) -> Option<BoxFuture<UidportDecision>> {
        Some(self.inner.shared.uidport(uid, open))
    }

    fn sequenced(&self) -> bool {
        self.inner.shared.sequencing()
    }

    fn joined(&self) -> bool {
        self.inner.shared.joined()
    }

    fn mailbox(&self) -> Option<Arc<dyn Mailbox>> {
        self.inner
            .shared
            .mailbox
            .enabled
            .then(|| Arc::new(Mailboxes(self.inner.shared.clone())) as Arc<dyn Mailbox>)
    }

    fn idem(&self) -> Option<Arc<dyn IdemStore>> {
        Some(Arc::new(Idem(self.inner.shared.clone())))
    }
}

/// A cluster name must be non-empty and hold no `:`: then `<cluster>:` prefixes no key of
/// another cluster.
fn check_cluster_name(cluster: &str) -> Result<(), Error> {
    if cluster.is_empty() || cluster.contains(':') {
        return Err(Error::ClusterName(cluster.to_owned()));
    }
    Ok(())
}

/// Deletes what cluster `cluster` keeps in Redis: every key under `<cluster>:` (see "Keys";
/// most expire by themselves, the numbering's `gseq` and `epoch` never do; an application's own
/// keys under that prefix go too). This is for a cluster gone for good: a finished test or
/// benchmark, a retired deployment. Never while one of its nodes runs: it would start its
/// numbering over, and its clients could not resume past that. Returns how many keys were
/// deleted (`UNLINK`: Redis frees them in the background); [`Error::ClusterName`] for a name
/// no cluster can have.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let mut conn = client.get_multiplexed_async_connection().await?;
/// let deleted = sente_redis::remove_cluster(&mut conn, "my-test-cluster").await?;
/// # Ok(()) }
/// ```
pub async fn remove_cluster(
    conn: &mut impl redis::aio::ConnectionLike,
    cluster: &str,
) -> Result<usize, Error> {
    check_cluster_name(cluster)?;
    // The cluster's name as a glob (its `*?[]\` escaped), then everything under it.
    let mut pattern = String::with_capacity(cluster.len() + 2);
    for c in cluster.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str(":*");
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(Error::Redis)?;
        if !keys.is_empty() {
            deleted += redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<usize>(conn)
                .await
                .map_err(Error::Redis)?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

async fn connect(
    client: &redis::Client,
    shared: &Shared,
    stop: &mut watch::Receiver<()>,
    backoff: &mut Backoff,
) -> Option<redis::aio::MultiplexedConnection> {
    loop {
        match client.get_multiplexed_async_connection().await {
            Ok(c) => {
                backoff.reset();
                shared.set_up(Side::Publisher, true, None);
                return Some(c);
            }
            Err(e) => {
                shared.set_up(Side::Publisher, false, Some(e.to_string()));
                if !backoff.wait(stop).await {
                    return None;
                }
            }
        }
    }
}

/// A candidate for a new epoch of the push numbers: different at every call (a Redis that
/// lost its keys must get an epoch it never had, even from the same node).
fn candidate_epoch(origin: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (origin.rotate_left(29) ^ nanos) | 1
}

/// Whether an error is the connection's (retry on a new one) rather than a refused command.
fn transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == redis::ErrorKind::NoScriptError
}

async fn run_publisher(
    client: redis::Client,
    prefix: String,
    channel: String,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Job>,
    mut stop: watch::Receiver<()>,
    (min, max): (Duration, Duration),
) {
    let mut backoff = Backoff::new(min, max);
    let mut conn: Option<(redis::aio::MultiplexedConnection, Option<Scripts>)> = None;
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH);
    loop {
        // Sequencing: connect (and announce the epoch) before the first push.
        let ready = !shared.sequencing() || conn.as_ref().is_some_and(|(_, s)| s.is_some());
        if batch.is_empty() && ready {
            tokio::select! {
                got = rx.recv_many(&mut batch, BATCH) => if got == 0 { return },
                _ = stop.changed() => return,
            }
        }
        if batch.iter().any(|j| matches!(j, Job::Seq { .. })) && !shared.sequencing_up() {
            // A connection is down: what the engine numbered now might not come back here.
            shared.unsequence(&mut batch, None);
        }
        let (c, scripts) = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&client, &shared, &mut stop, &mut backoff).await {
                Some(c) => conn.insert((c, None)),
                None => return,
            },
        };
        let needs_scripts = shared.sequencing()
            || batch.iter().any(|j| {
                matches!(
                    j,
                    Job::Append { .. } | Job::AppendClient { .. } | Job::Seq { .. }
                )
            });
        if needs_scripts && scripts.is_none() {
            let loaded = async {
                let s = Scripts::load(c).await?;
                if shared.sequencing() {
                    let epoch: Vec<u8> = evalsha(&s.epoch)
                        .arg(candidate_epoch(shared.origin).to_le_bytes().as_slice())
                        .arg(format!("{prefix}:gseq"))
                        .arg(format!("{prefix}:epoch"))
                        .query_async(c)
                        .await?;
                    if let Ok(e) = <[u8; 8]>::try_from(epoch.as_slice()) {
                        let epoch = u64::from_le_bytes(e);
                        shared.deliver(BackplaneMsg::Epoch { epoch });
                    }
                }
                Ok::<_, redis::RedisError>(s)
            };
            match loaded.await {
                Ok(s) => *scripts = Some(s),
                Err(e) => {
                    shared.unsequence(&mut batch, Some(e.to_string()));
                    conn = None;
                    if !backoff.wait(&mut stop).await {
                        return;
                    }
                    continue;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        // Appends an outage moved to the node-local fallback are not made (see
        // `Shared::append_pending`).
        let mut included = Vec::new();
        for job in &batch {
            match (job, scripts.as_ref()) {
                (Job::Append { id, .. } | Job::AppendClient { id, .. }, Some(_))
                    if !shared.append_pending(*id) => {}
                (Job::Frame(frame), _) | (Job::Seq { frame, .. }, None) => {
                    pipe.publish(&channel, frame.as_slice()).ignore();
                }
                (
                    Job::Seq {
                        frame, id, append, ..
                    },
                    Some(s),
                ) if !shared.waits_for_number(*id) => {
                    // Applied here meanwhile: published plain, its append made unnumbered.
                    pipe.publish(&channel, frame.as_slice()).ignore();
                    if let Some(a) = append.as_deref()
                        && let Some(aid) = a.append_id()
                        && shared.append_pending(aid)
                    {
                        let mut c = evalsha(&s.append);
                        if append_args(&mut c, &prefix, &shared.mailbox, a) {
                            included.push(aid);
                            pipe.add_command(c).ignore();
                        }
                    }
                }
                (Job::Seq { frame, append, .. }, Some(s)) => {
                    // With its append, if still to be made: numbered in the same step.
                    let append = append
                        .as_deref()
                        .filter(|a| a.append_id().is_some_and(|i| shared.append_pending(i)));
                    let sha = match append {
                        Some(_) => &s.publish_seq_append,
                        None => &s.publish_seq,
                    };
                    let mut cmd = evalsha(sha);
                    cmd.arg(&channel)
                        .arg(frame.as_slice())
                        .arg([codec::SEQ_TAG].as_slice())
                        .arg(candidate_epoch(shared.origin).to_le_bytes().as_slice())
                        .arg(format!("{prefix}:gseq"))
                        .arg(format!("{prefix}:epoch"));
                    if let Some(a) = append
                        && append_args(&mut cmd, &prefix, &shared.mailbox, a)
                    {
                        included.extend(a.append_id());
                    }
                    pipe.add_command(cmd).ignore();
                }
                (job @ (Job::Append { id, .. } | Job::AppendClient { id, .. }), Some(s)) => {
                    let mut c = evalsha(&s.append);
                    if append_args(&mut c, &prefix, &shared.mailbox, job) {
                        included.push(*id);
                        pipe.add_command(c).ignore();
                    }
                }
                (Job::Append { .. } | Job::AppendClient { .. }, None) => {}
            }
        }
        let started = std::time::Instant::now();
        let sent: Result<(), redis::RedisError> = tokio::select! {
            r = pipe.query_async(c) => r,
            _ = stop.changed() => return,
        };
        match sent {
            Ok(()) => {
                shared.appends_done(&included, true);
                shared.appends_done(&all_append_ids(&batch), false);
                shared.count_sent_since(&batch, started);
                shared.wake_after(&batch);
                batch.clear();
            }
            Err(e) if !transient(&e) => {
                // A command refused (Redis ran the others of the pipeline): not retried.
                shared.record_error(format!("publish pipeline: {e}"));
                shared.appends_done(&all_append_ids(&batch), false);
                shared.count_sent(&batch);
                shared.wake_after(&batch);
                batch.clear();
            }
            Err(e) => {
                // Keep the batch and retry it on a new connection (what waits for a number
                // is applied here now, and published unnumbered).
                shared.unsequence(&mut batch, Some(e.to_string()));
                conn = None;
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
        }
    }
}

async fn run_subscriber(
    client: redis::Client,
    channel: String,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<()>,
    (min, max): (Duration, Duration),
) {
    let mut backoff = Backoff::new(min, max);
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            r = subscribed => r,
            _ = stop.changed() => return,
        };
        match pubsub {
            Ok(pubsub) => {
                backoff.reset();
                // Redis has confirmed the subscription: every frame published from now on
                // (numbered ones too, published by the script that numbers them) reaches it.
                shared.mark_joined();
                shared.set_up(Side::Subscriber, true, None);
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        m = messages.next() => match m {
                            Some(m) => shared.receive(m.get_payload_bytes()),
                            None => break,
                        },
                        _ = stop.changed() => return,
                    }
                }
                shared.set_up(
                    Side::Subscriber,
                    false,
                    Some("subscription connection closed".to_owned()),
                );
            }
            Err(e) => shared.set_up(Side::Subscriber, false, Some(e.to_string())),
        }
        if !backoff.wait(&mut stop).await {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stored state: uidport sets, node liveness, Ajax registrations and mailboxes (Lua scripts, so
// each operation is atomic in Redis).

/// Current Redis time in milliseconds (scripts use the server's clock, so nodes' clocks do not
/// matter).
const NOW: &str = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) ";

/// [`sente_proto::backplane::uidport_rule`], run inside Redis (atomic), with liveness read from
/// the `node:` keys. ARGV: prefix, uid hex, member, open (1/0), key ttl ms. Returns
/// {close_stale, fire}.
const UIDPORT: &str = r"
local p, u, me, open = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local k = p .. ':uidport:' .. u
if redis.call('EXISTS', k) == 1 then redis.call('PEXPIRE', k, ARGV[5]) end
local live, stale, mine = 0, 0, false
for _, m in ipairs(redis.call('SMEMBERS', k)) do
  if m == me then mine = true
  elseif redis.call('EXISTS', p .. ':node:' .. m) == 1 then live = live + 1
  else redis.call('SREM', k, m) stale = stale + 1 end
end
if open then
  redis.call('SADD', k, me)
  redis.call('PEXPIRE', k, ARGV[5])
  if mine or live > 0 then return {0, 0} end
  if stale > 0 then return {1, 1} end
  return {0, 1}
end
if not mine then
  if live == 0 and stale > 0 then return {0, 1} end
  return {0, 0}
end
redis.call('SREM', k, me)
if live == 0 then return {0, 1} end
return {0, 0}
";

/// Numbers a frame and publishes it, atomically (cross-node resume): the channel's order is
/// the numbers' order. A new epoch (the candidate, fresh at every call) when the sequence or
/// its epoch is missing (a Redis that lost its data). ARGV: channel, frame, trailer tag,
/// candidate epoch (8 bytes), sequence key, epoch key. Returns the number.
const PUBLISH_SEQ: &str = r"
local ch, frame, tag, cand, sk, ek = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local e = redis.call('GET', ek)
if redis.call('EXISTS', sk) == 0 or not e or #e ~= 8 then
  e = cand
  redis.call('SET', ek, e)
end
local n = redis.call('INCR', sk)
local trailer = tag .. e .. string.format('%d', n)
redis.call('PUBLISH', ch, frame .. trailer)
";

/// [`PUBLISH_SEQ`] (ARGV 1 to 6) returning the number.
const PUBLISH_SEQ_ONLY: &str = "return n";

/// [`PUBLISH_SEQ`] then [`APPEND`] of the push's entry numbered with the same trailer
/// ([`codec::number_entry`]): one atomic step, so a mailbox entry carries the number of its
/// push. ARGV: those of [`PUBLISH_SEQ`], then those of [`APPEND`] (from ARGV 7). Returns the
/// number.
const PUBLISH_SEQ_APPEND: &str =
    "append_all(ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10] .. trailer, 11) return n";

/// The epoch of the sequence, made as [`PUBLISH_SEQ`] would. ARGV: candidate epoch, sequence
/// key, epoch key. Returns the epoch (8 bytes).
const EPOCH: &str = r"
local cand, sk, ek = ARGV[1], ARGV[2], ARGV[3]
local e = redis.call('GET', ek)
if redis.call('EXISTS', sk) == 0 or not e or #e ~= 8 then
  e = cand
  redis.call('SET', ek, e)
  if redis.call('EXISTS', sk) == 0 then redis.call('SET', sk, 0) end
end
return e
";

/// ARGV: prefix, uid hex, client hex, ttl ms.
const REGISTER: &str = r"
local p, u, c, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local exp = now + ttl
redis.call('ZADD', p .. ':ajax:' .. u, exp, c)
redis.call('PEXPIRE', p .. ':ajax:' .. u, ttl)
redis.call('ZREMRANGEBYSCORE', p .. ':ajax', '-inf', now)
redis.call('ZADD', p .. ':ajax', exp, u .. ':' .. c)
redis.call('PEXPIRE', p .. ':mbox:' .. u .. ':' .. c, ttl)
redis.call('PEXPIRE', p .. ':mboxb:' .. u .. ':' .. c, ttl)
redis.call('PEXPIRE', p .. ':lease:' .. u .. ':' .. c, ttl)
return 1
";

/// ARGV: prefix, uid hex, client hex. Returns 1 when registered and not expired.
const KNOWN: &str = r"
local s = redis.call('ZSCORE', ARGV[1] .. ':ajax:' .. ARGV[2], ARGV[3])
if s and tonumber(s) > now then return 1 end
return 0
";

/// ARGV: prefix, max events, max bytes, entry, then `*` (every client), `=` uid-hex
/// client-hex (one client, if registered) or uid hexes.
/// Returns how many clients were forgotten for exceeding a bound.
const APPEND: &str = "return append_all(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], 5)";

/// The function of [`APPEND`]: the targets from ARGV `first` on.
const APPEND_FN: &str = r"
local function append_all(p, maxn, maxb, entry, first)
local dropped = 0
local function append(u, c, exp)
  local k, kb = p .. ':mbox:' .. u .. ':' .. c, p .. ':mboxb:' .. u .. ':' .. c
  local n = redis.call('RPUSH', k, entry)
  local b = redis.call('INCRBY', kb, #entry)
  if n > maxn or b > maxb then
    redis.call('DEL', k, kb, p .. ':lease:' .. u .. ':' .. c)
    redis.call('ZREM', p .. ':ajax:' .. u, c)
    redis.call('ZREM', p .. ':ajax', u .. ':' .. c)
    dropped = dropped + 1
    return
  end
  local ttl = math.max(1, exp - now)
  redis.call('PEXPIRE', k, ttl)
  redis.call('PEXPIRE', kb, ttl)
end
if ARGV[first] == '=' then
  local u, c = ARGV[first + 1], ARGV[first + 2]
  local s = redis.call('ZSCORE', p .. ':ajax:' .. u, c)
  if s and tonumber(s) > now then append(u, c, tonumber(s)) end
elseif ARGV[first] == '*' then
  redis.call('ZREMRANGEBYSCORE', p .. ':ajax', '-inf', now)
  local all = redis.call('ZRANGE', p .. ':ajax', 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    local sep = string.find(all[i], ':', 1, true)
    append(string.sub(all[i], 1, sep - 1), string.sub(all[i], sep + 1), tonumber(all[i + 1]))
  end
else
  for i = first, #ARGV do
    local zk = p .. ':ajax:' .. ARGV[i]
    redis.call('ZREMRANGEBYSCORE', zk, '-inf', now)
    local cs = redis.call('ZRANGE', zk, 0, -1, 'WITHSCORES')
    for j = 1, #cs, 2 do append(ARGV[i], cs[j], tonumber(cs[j + 1])) end
  end
end
return dropped
end
";

/// Restores a lease's entries (`l`, after its id and delivered flag) in front of the mailbox
/// `k` / `kb`, for `ttl` ms. Shared by [`TAKE`]-related scripts.
const RESTORE: &str = r"
local function restore(k, kb, l, ttl)
  local bytes = 0
  for i = #l, 3, -1 do
    redis.call('LPUSH', k, l[i])
    bytes = bytes + #l[i]
  end
  if bytes > 0 then redis.call('INCRBY', kb, bytes) end
  if ttl > 0 then
    redis.call('PEXPIRE', k, ttl)
    redis.call('PEXPIRE', kb, ttl)
  end
end
";

/// Takes [`sente_proto::backplane::mailbox_take_count`] entries, inside Redis (atomic), as a
/// lease: they move to `lease:<uid>:<client>` (`[id, delivered, entries...]`; a lease still
/// there grows and takes the new id), which lives as long as the registration.
/// ARGV: prefix, uid hex, client hex, max events, max bytes, lease id. Returns the entries.
const TAKE: &str = r"
local p, u, c = ARGV[1], ARGV[2], ARGV[3]
local k, kb = p .. ':mbox:' .. u .. ':' .. c, p .. ':mboxb:' .. u .. ':' .. c
local kl = p .. ':lease:' .. u .. ':' .. c
local maxn, maxb = tonumber(ARGV[4]), tonumber(ARGV[5])
local items = redis.call('LRANGE', k, 0, maxn - 1)
local out, bytes = {}, 0
for i, e in ipairs(items) do
  if i > 1 and bytes + #e > maxb then break end
  bytes = bytes + #e
  out[#out + 1] = e
end
if #out > 0 then
  redis.call('LTRIM', k, #out, -1)
  if redis.call('DECRBY', kb, bytes) <= 0 then redis.call('DEL', kb) end
  if redis.call('EXISTS', kl) == 1 then
    redis.call('LSET', kl, 0, ARGV[6])
    redis.call('LSET', kl, 1, '0')
  else
    redis.call('RPUSH', kl, ARGV[6], '0')
  end
  for _, e in ipairs(out) do redis.call('RPUSH', kl, e) end
  local s = redis.call('ZSCORE', p .. ':ajax:' .. u, c)
  local ttl = 60000
  if s then ttl = math.max(1, tonumber(s) - now) end
  redis.call('PEXPIRE', kl, ttl)
end
return out
";

/// A GET settles the client's lease. ARGV: prefix, uid hex, client hex, `1` for a handshake.
/// A poll drops it; a handshake puts it back in front unless it was delivered.
const SETTLE: &str = r"
local p, u, c = ARGV[1], ARGV[2], ARGV[3]
local kl = p .. ':lease:' .. u .. ':' .. c
local l = redis.call('LRANGE', kl, 0, -1)
if #l == 0 then return 0 end
local ttl = redis.call('PTTL', kl)
redis.call('DEL', kl)
if ARGV[4] ~= '1' or l[2] == '1' then return 0 end
restore(p .. ':mbox:' .. u .. ':' .. c, p .. ':mboxb:' .. u .. ':' .. c, l, ttl)
return #l - 2
";

/// ARGV: prefix, uid hex, client hex, lease id: marks the lease delivered if it is still the
/// client's.
const DELIVERED: &str = r"
local kl = ARGV[1] .. ':lease:' .. ARGV[2] .. ':' .. ARGV[3]
if redis.call('LINDEX', kl, 0) ~= ARGV[4] then return 0 end
redis.call('LSET', kl, 1, '1')
return 1
";

/// ARGV: prefix, uid hex, client hex, lease id: the lease's answer could not be delivered; its
/// entries go back in front if it is still the client's lease.
const PUT_BACK: &str = r"
local p, u, c = ARGV[1], ARGV[2], ARGV[3]
local kl = p .. ':lease:' .. u .. ':' .. c
local l = redis.call('LRANGE', kl, 0, -1)
if #l == 0 or l[1] ~= ARGV[4] then return 0 end
local ttl = redis.call('PTTL', kl)
redis.call('DEL', kl)
restore(p .. ':mbox:' .. u .. ':' .. c, p .. ':mboxb:' .. u .. ':' .. c, l, ttl)
return 1
";

/// Puts numbered entries (what a resuming client missed before its mailbox existed) in front
/// of a registered client's mailbox, within the mailbox's bounds; nothing otherwise. ARGV:
/// prefix, uid hex, client hex, max events, max bytes, the entries (oldest first). Returns 1
/// when stored.
const FILL: &str = r"
local p, u, c = ARGV[1], ARGV[2], ARGV[3]
local maxn, maxb = tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('ZSCORE', p .. ':ajax:' .. u, c)
if not s or tonumber(s) <= now then return 0 end
local k, kb = p .. ':mbox:' .. u .. ':' .. c, p .. ':mboxb:' .. u .. ':' .. c
local l, bytes = {'', ''}, 0
for i = 6, #ARGV do
  l[#l + 1] = ARGV[i]
  bytes = bytes + #ARGV[i]
end
if redis.call('LLEN', k) + #l - 2 > maxn then return 0 end
if tonumber(redis.call('GET', kb) or '0') + bytes > maxb then return 0 end
restore(k, kb, l, math.max(1, tonumber(s) - now))
return 1
";

/// Claims a retried request's id (cluster-wide dedupe): sets the key to `r` (running) for
/// the ttl if it is free. ARGV: key, ttl ms. Returns `""` when claimed, else the key's value
/// (`r`, or `d` and the encoded outcome).
const IDEM_CLAIM: &str = r"
if redis.call('SET', ARGV[1], 'r', 'NX', 'PX', ARGV[2]) then return '' end
return redis.call('GET', ARGV[1]) or 'r'
";

/// Drops a claim whose run did not finish. ARGV: key.
const IDEM_FORGET: &str = r"
if redis.call('GET', ARGV[1]) == 'r' then redis.call('DEL', ARGV[1]) end
return 1
";

/// The scripts' SHA1s (from `SCRIPT LOAD`, on each new connection).
struct Scripts {
    uidport: String,
    register: String,
    known: String,
    append: String,
    take: String,
    put_back: String,
    settle: String,
    delivered: String,
    fill: String,
    idem_claim: String,
    idem_forget: String,
    publish_seq: String,
    publish_seq_append: String,
    epoch: String,
}

impl Scripts {
    async fn load(c: &mut redis::aio::MultiplexedConnection) -> Result<Scripts, redis::RedisError> {
        async fn one(
            c: &mut redis::aio::MultiplexedConnection,
            body: &str,
            with_now: bool,
        ) -> Result<String, redis::RedisError> {
            let text = if with_now {
                format!("{NOW}{RESTORE}{body}")
            } else {
                body.to_owned()
            };
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(text)
                .query_async(c)
                .await
        }
        Ok(Scripts {
            uidport: one(c, UIDPORT, false).await?,
            register: one(c, REGISTER, true).await?,
            known: one(c, KNOWN, true).await?,
            append: one(c, &format!("{APPEND_FN}{APPEND}"), true).await?,
            take: one(c, TAKE, true).await?,
            put_back: one(c, PUT_BACK, true).await?,
            settle: one(c, SETTLE, true).await?,
            delivered: one(c, DELIVERED, false).await?,
            fill: one(c, FILL, true).await?,
            idem_claim: one(c, IDEM_CLAIM, false).await?,
            idem_forget: one(c, IDEM_FORGET, false).await?,
            publish_seq: one(c, &format!("{PUBLISH_SEQ}{PUBLISH_SEQ_ONLY}"), false).await?,
            publish_seq_append: one(
                c,
                &format!("{APPEND_FN}{PUBLISH_SEQ}{PUBLISH_SEQ_APPEND}"),
                true,
            )
            .await?,
            epoch: one(c, EPOCH, false).await?,
        })
    }
}

fn evalsha(sha: &str) -> redis::Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(sha).arg(0);
    c
}

/// The ids of the appends `jobs` make (their own and those their [`Job::Seq`]s carry).
fn all_append_ids(jobs: &[Job]) -> Vec<u64> {
    jobs.iter().filter_map(Job::append_id).collect()
}

/// Adds the arguments of [`APPEND`] for the append `job` ([`Job::Append`] or
/// [`Job::AppendClient`]) to `c`: prefix, bounds, entry, targets. `false`: not an append, or
/// its one client's uid has no key.
fn append_args(c: &mut redis::Cmd, prefix: &str, mailbox: &MailboxConfig, job: &Job) -> bool {
    let (entry, one) = match job {
        Job::Append { entry, .. } => (entry, None),
        Job::AppendClient {
            uid, client, entry, ..
        } => match uid_hex(uid) {
            Some(u) => (entry, Some((u, cid_hex(client)))),
            None => return false,
        },
        Job::Frame(_) | Job::Seq { .. } => return false,
    };
    c.arg(prefix)
        .arg(mailbox.max_events)
        .arg(mailbox.max_bytes)
        .arg(entry.as_slice());
    match (job, one) {
        (_, Some((u, client))) => {
            c.arg("=").arg(u).arg(client);
        }
        (Job::Append { uids: None, .. }, None) => {
            c.arg("*");
        }
        (
            Job::Append {
                uids: Some(uids), ..
            },
            None,
        ) => {
            for u in uids.iter() {
                if let Some(h) = uid_hex(u) {
                    c.arg(h);
                }
            }
        }
        _ => {}
    }
    true
}

/// Runs the engine operations in order on their own connection, and keeps this node's
/// liveness key (`<cluster>:node:<origin>`) alive every heartbeat.
async fn run_ops(
    client: redis::Client,
    prefix: String,
    uidport_ttl: Duration,
    shared: Arc<Shared>,
    mut ops: OpQueue,
    mut stop: watch::Receiver<()>,
    (min, max): (Duration, Duration),
) {
    let (every, expiry) = {
        let c = shared
            .cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (c.config().heartbeat, c.config().expiry)
    };
    let node_key = format!("{prefix}:node:{:016x}", shared.origin);
    // The liveness key, every heartbeat, on a connection of its own (slow operations never
    // delay it); it is also set before the first operation on each connection below.
    tokio::spawn(run_liveness(
        client.clone(),
        node_key.clone(),
        (every, expiry),
        shared.clone(),
        stop.clone(),
    ));
    let me = format!("{:016x}", shared.origin);
    let mut backoff = Backoff::new(min, max);
    let mut conn: Option<(redis::aio::MultiplexedConnection, Scripts)> = None;
    let mut renew = tokio::time::interval(uidport_ttl / 4);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ttl_ms = uidport_ttl.as_millis() as u64;
    let mut pending: Option<Op> = None;
    loop {
        if conn.is_none() {
            let made = async {
                let mut c = client.get_multiplexed_async_connection().await?;
                let s = Scripts::load(&mut c).await?;
                redis::cmd("SET")
                    .arg(&node_key)
                    .arg(1)
                    .arg("PX")
                    .arg(expiry.as_millis() as u64)
                    .query_async::<()>(&mut c)
                    .await?;
                Ok::<_, redis::RedisError>((c, s))
            };
            let made = tokio::select! {
                r = made => r,
                _ = stop.changed() => return,
            };
            match made {
                Ok(c) => {
                    backoff.reset();
                    conn = Some(c);
                }
                Err(e) => {
                    shared.record_error(format!("operations connection: {e}"));
                    if !backoff.wait(&mut stop).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some((c, scripts)) = conn.as_mut() else {
            continue;
        };
        let op = if let Some(op) = pending.take() {
            op
        } else {
            tokio::select! {
                op = ops.recv() => match op { Some(op) => op, None => return },
                _ = renew.tick() => {
                    let mut pipe = redis::pipe();
                    for uid in shared.local_uids() {
                        if let Some(u) = uid_hex(&uid) {
                            pipe.pexpire(format!("{prefix}:uidport:{u}"), ttl_ms as i64).ignore();
                        }
                    }
                    if let Err(e) = pipe.query_async::<()>(c).await {
                        shared.record_error(format!("uidport renewal: {e}"));
                    }
                    continue;
                }
                _ = stop.changed() => return,
            }
        };
        match run_op(c, scripts, &prefix, &me, &shared, op, ttl_ms).await {
            Ok(()) => shared.count_op(),
            Err((op, e)) if !transient(&e) => {
                // Refused by Redis: dropped; its caller gets the single-node answer.
                shared.record_error(format!("operation refused: {e}"));
                drop(op);
            }
            Err((op, e)) => {
                // Keep the operation and retry it on a new connection.
                shared.record_error(format!("operation: {e}"));
                pending = Some(op);
                conn = None;
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Sets this node's liveness key every heartbeat (expiring after the presence expiry).
async fn run_liveness(
    client: redis::Client,
    node_key: String,
    (every, expiry): (Duration, Duration),
    shared: Arc<Shared>,
    mut stop: watch::Receiver<()>,
) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut alive = tokio::time::interval(every);
    alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = alive.tick() => {}
            _ = stop.changed() => return,
        }
        if conn.is_none() {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    shared.record_error(format!("liveness connection: {e}"));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let r = redis::cmd("SET")
            .arg(&node_key)
            .arg(1)
            .arg("PX")
            .arg(expiry.as_millis() as u64)
            .query_async::<()>(c)
            .await;
        if let Err(e) = r {
            shared.record_error(format!("liveness key: {e}"));
            conn = None;
        }
    }
}

/// Runs one operation; on a Redis error gives it back for a retry.
async fn run_op(
    c: &mut redis::aio::MultiplexedConnection,
    scripts: &Scripts,
    prefix: &str,
    me: &str,
    shared: &Shared,
    op: Op,
    uidport_ttl_ms: u64,
) -> Result<(), (Op, redis::RedisError)> {
    match op {
        Op::Uidport {
            uid,
            member,
            open,
            done,
        } => {
            let Some(u) = uid_hex(&uid) else {
                if let Some(d) = done {
                    let _ = d.send(UidportDecision::new(false, true));
                }
                return Ok(());
            };
            let member_hex = if member == shared.origin {
                me.to_owned()
            } else {
                format!("{member:016x}")
            };
            let r: Result<(u8, u8), _> = evalsha(&scripts.uidport)
                .arg(prefix)
                .arg(u)
                .arg(&member_hex)
                .arg(u8::from(open))
                .arg(uidport_ttl_ms)
                .query_async(c)
                .await;
            let (close_stale, fire) = match r {
                Ok(v) => v,
                Err(e) => {
                    return Err((
                        Op::Uidport {
                            uid,
                            member,
                            open,
                            done,
                        },
                        e,
                    ));
                }
            };
            let decision = UidportDecision::new(close_stale == 1, fire == 1);
            match done {
                Some(d) => {
                    let _ = d.send(decision);
                }
                None if decision.fire => shared.deliver(BackplaneMsg::UidportClose { uid }),
                None => {}
            }
        }
        Op::Register {
            uid,
            cid,
            ttl,
            done,
        } => {
            if let Some(u) = uid_hex(&uid) {
                let r: Result<(), _> = evalsha(&scripts.register)
                    .arg(prefix)
                    .arg(u)
                    .arg(cid_hex(&cid))
                    .arg(ttl.as_millis().max(1) as u64)
                    .query_async(c)
                    .await;
                if let Err(e) = r {
                    return Err((
                        Op::Register {
                            uid,
                            cid,
                            ttl,
                            done,
                        },
                        e,
                    ));
                }
            }
            let _ = done.send(());
        }
        Op::Known { uid, cid, done } => {
            let Some(u) = uid_hex(&uid) else {
                let _ = done.send(false);
                return Ok(());
            };
            let r: Result<u8, _> = evalsha(&scripts.known)
                .arg(prefix)
                .arg(u)
                .arg(cid_hex(&cid))
                .query_async(c)
                .await;
            match r {
                Ok(k) => {
                    let _ = done.send(k == 1);
                }
                Err(e) => return Err((Op::Known { uid, cid, done }, e)),
            }
        }
        Op::Take {
            uid,
            cid,
            lease,
            max_events,
            max_bytes,
            done,
        } => {
            let Some(u) = uid_hex(&uid) else {
                let _ = done.send(Vec::new());
                return Ok(());
            };
            let r: Result<Vec<Vec<u8>>, _> = evalsha(&scripts.take)
                .arg(prefix)
                .arg(u)
                .arg(cid_hex(&cid))
                .arg(max_events.max(1))
                .arg(max_bytes.max(1))
                .arg(&lease)
                .query_async(c)
                .await;
            match r {
                Ok(entries) => {
                    let _ = done.send(shared.decode_entries(&entries));
                }
                // A take is not retried (its poll is held again and woken by the next push).
                Err(e) => {
                    shared.record_error(format!("mailbox take: {e}"));
                    let _ = done.send(Vec::new());
                }
            }
        }
        Op::IdemClaim {
            uid,
            cid,
            id,
            ttl,
            done,
        } => {
            let Some(k) = idem_key(&uid, &cid, &id) else {
                let _ = done.send(None);
                return Ok(());
            };
            let r: Result<Vec<u8>, _> = evalsha(&scripts.idem_claim)
                .arg(format!("{prefix}:idem:{k}"))
                .arg(ttl.as_millis().max(1) as u64)
                .query_async(c)
                .await;
            let seen = match r {
                Ok(v) if v.is_empty() => Some(IdemSeen::Won),
                Ok(v) => match v.split_first() {
                    Some((b'd', outcome)) => Some(IdemSeen::Done(outcome.to_vec())),
                    _ => Some(IdemSeen::Running),
                },
                // Not retried: the node dedupes alone this time.
                Err(e) => {
                    shared.record_error(format!("request claim: {e}"));
                    None
                }
            };
            let _ = done.send(seen);
        }
        Op::IdemFinish {
            uid,
            cid,
            id,
            outcome,
            ttl,
            done,
        } => {
            if let Some(k) = idem_key(&uid, &cid, &id) {
                let mut value = Vec::with_capacity(outcome.len() + 1);
                value.push(b'd');
                value.extend_from_slice(&outcome);
                let r: Result<(), _> = redis::cmd("SET")
                    .arg(format!("{prefix}:idem:{k}"))
                    .arg(value)
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64)
                    .query_async(c)
                    .await;
                if let Err(e) = r {
                    shared.record_error(format!("request outcome: {e}"));
                }
            }
            let _ = done.send(());
        }
        Op::IdemForget { uid, cid, id, done } => {
            if let Some(k) = idem_key(&uid, &cid, &id) {
                let r: Result<i64, _> = evalsha(&scripts.idem_forget)
                    .arg(format!("{prefix}:idem:{k}"))
                    .query_async(c)
                    .await;
                if let Err(e) = r {
                    shared.record_error(format!("request claim release: {e}"));
                }
            }
            let _ = done.send(());
        }
        Op::SequenceNow { done } => {
            let r: Result<(Option<Vec<u8>>, Option<u64>), _> = redis::cmd("MGET")
                .arg(format!("{prefix}:epoch"))
                .arg(format!("{prefix}:gseq"))
                .query_async(c)
                .await;
            let now = match r {
                Ok((epoch, last)) => epoch
                    .and_then(|e| <[u8; 8]>::try_from(e.as_slice()).ok())
                    .map(u64::from_le_bytes)
                    .zip(last),
                Err(e) => {
                    shared.record_error(format!("numbering read: {e}"));
                    None
                }
            };
            let _ = done.send(now);
        }
        Op::Fill {
            uid,
            cid,
            entries,
            done,
        } => {
            let Some(u) = uid_hex(&uid) else {
                let _ = done.send(false);
                return Ok(());
            };
            let mut cmd = evalsha(&scripts.fill);
            cmd.arg(prefix)
                .arg(u)
                .arg(cid_hex(&cid))
                .arg(shared.mailbox.max_events)
                .arg(shared.mailbox.max_bytes);
            for e in &entries {
                cmd.arg(e.as_slice());
            }
            // Not retried: the handshake answers `recovered: false` instead.
            let stored = match cmd.query_async::<i64>(c).await {
                Ok(n) => n == 1,
                Err(e) => {
                    shared.record_error(format!("mailbox fill: {e}"));
                    false
                }
            };
            let _ = done.send(stored);
        }
        op @ (Op::PutBack { .. } | Op::Settle { .. } | Op::Delivered { .. }) => {
            let r = match &op {
                Op::PutBack {
                    uid, cid, lease, ..
                } => lease_script(c, &scripts.put_back, prefix, uid, cid, lease).await,
                Op::Settle {
                    uid,
                    cid,
                    handshake,
                    ..
                } => {
                    let arg = if *handshake { "1" } else { "0" };
                    lease_script(c, &scripts.settle, prefix, uid, cid, arg).await
                }
                Op::Delivered {
                    uid, cid, lease, ..
                } => lease_script(c, &scripts.delivered, prefix, uid, cid, lease).await,
                _ => Ok(()),
            };
            if let Err(e) = r {
                return Err((op, e));
            }
            if let Op::PutBack { done, .. } | Op::Settle { done, .. } | Op::Delivered { done, .. } =
                op
            {
                let _ = done.send(());
            }
        }
    }
    Ok(())
}

/// Runs a lease script (ARGV: prefix, uid hex, client hex, `last`).
async fn lease_script(
    c: &mut redis::aio::MultiplexedConnection,
    sha: &str,
    prefix: &str,
    uid: &Uid,
    cid: &sente_proto::ClientId,
    last: &str,
) -> Result<(), redis::RedisError> {
    let Some(u) = uid_hex(uid) else {
        return Ok(());
    };
    evalsha(sha)
        .arg(prefix)
        .arg(u)
        .arg(cid_hex(cid))
        .arg(last)
        .query_async::<i64>(c)
        .await
        .map(|_| ())
}
