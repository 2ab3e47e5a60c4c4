//! A [`Backplane`] over NATS (core pub/sub, and JetStream key-value buckets) for sente-rs: run
//! several `sente::Server` nodes as one cluster. Any node's `send`, `send_many`, `broadcast`,
//! `flush` and `close_uid` reach the clients of every node, `connected_uids()` is the
//! cluster's, `chsk/uidport-open` / `-close` fire once for the cluster, and Ajax clients need no
//! sticky sessions (their pushes wait in per-client mailboxes in JetStream).
//!
//! ```no_run
//! use std::sync::Arc;
//! use sente_nats::{NatsBackplane, NatsConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let backplane = NatsBackplane::start(NatsConfig::new("nats://127.0.0.1:4222"))?;
//! let server = sente::Server::builder()
//!     .backplane(Arc::new(backplane.clone()))
//!     .build()?;
//! // Serve `server` as usual; `backplane.health()` tells whether NATS is reachable.
//! # let _ = server;
//! # Ok(())
//! # }
//! ```
//!
//! # Subject, encoding
//!
//! - **One subject per cluster**: `<cluster>.backplane` ([`NatsConfig::cluster`], default
//!   `sente`, so `sente.backplane`; the name must be a valid subject token: no spaces, dots or
//!   wildcards). Every node subscribes to it once and publishes every frame to it. Presence
//!   (`connected_uids`) is not stored: it lives in each node's memory and is rebuilt from
//!   heartbeats and snapshots.
//! - **Buckets** (below, JetStream key-value, memory storage): uidport sets, node liveness, Ajax
//!   registrations and mailboxes.
//! - The client connects with `no_echo`, so the server never sends a node its own frames.
//! - **Encoding**: each message is one frame of [`sente_proto::backplane::codec`]: a version
//!   byte (1), the publishing instance's 64-bit origin id, a kind byte and a compact body;
//!   events travel as their edn text (msgpack for events holding raw bytes). Unknown kinds are
//!   skipped and unknown versions refused (counted in [`Health::codec_errors`]), so two
//!   releases can share a cluster during a rolling deploy. A frame must fit the server's
//!   `max_payload` (1 MiB by default); a larger one is dropped and counted.
//!
//! # Ordering and delivery
//!
//! A node's frames go out through one connection in publish order, and NATS delivers one
//! publisher's messages on a subject to each subscriber in that order, so every node sees
//! another node's pushes in `send` order per uid (in fact in total order per publishing node).
//! With cross-node resume ([`NatsConfig::resume`], on by default; see below) pushes, flushes
//! and closes go through a JetStream stream and are applied by every node, its own included,
//! in the stream's order. Without it, or while NATS is unreachable, a node's own pushes are
//! applied to its own clients at once, without the round trip through NATS, so its local
//! clients are served even while NATS is down.
//!
//! # Cross-node resume
//!
//! A WebSocket client that resumes (the `resume` extension, see
//! `sente_proto::server::replay`) may resume on any node:
//!
//! - Each `send`, `send_many`, `broadcast`, `flush` and `close_uid` is published to the
//!   JetStream stream `<cluster>_SEQ` (memory storage, subject `<cluster>.seq`, bounded by
//!   [`NatsConfig::seq_stream`]) and acknowledged by it; every node consumes the stream with an
//!   ordered consumer (from the messages after it started), and the stream sequence is the
//!   push's global number, the stream's creation time the epoch (a NATS restart makes the
//!   stream, hence the epoch, anew: older positions are refused).
//! - Every node applies them in order (its own included) and logs every push under its
//!   number (see `sente_proto::server::replay`, "In a cluster"); a node that missed numbers or
//!   started after a client's position refuses it (`recovered: false`, no partial replay).
//! - A resuming Ajax handshake (its mailbox new after a WebSocket, or its last answer lost)
//!   reads the stream's last sequence after registering the mailbox (a stream info request),
//!   and puts what the client missed up to it, from the node's logs, in front of the mailbox
//!   with one compare-and-set (`Mailbox::fill`; refused over the mailbox's bounds).
//! - While a node's first consumer is being made (its first moments), its pushes wait for
//!   it, at most [`NatsConfig::op_timeout`], so that they are numbered like the ones after
//!   them.
//! - While NATS or the consumer is down, or a publish is not acknowledged within
//!   [`NatsConfig::op_timeout`], pushes are applied locally and published unnumbered
//!   ([`Health::unsequenced`]); their clients' next resume gets `recovered: false`. A push
//!   the stream numbered that had not come back to this node when the connection or the
//!   consumer failed is applied here then, unnumbered and before any later push (the stream
//!   may be gone with the NATS server); it is skipped if it comes back after all. A publish
//!   whose acknowledgement was lost although the stream stored it reaches this node's
//!   clients twice (rare).
//! - Order across that switch: a push published unnumbered travels on the core subject, faster
//!   than the stream's consumers, so it carries the last number this node's pushes got
//!   (`sente_proto::backplane::codec::Frame::After`), and every other node holds it until its
//!   consumer applied that number: pushes from one node reach every node in the order they were
//!   sent. A node holds such a push at most [`NatsConfig::op_timeout`], and not at all while its
//!   consumer is down.
//! - Costs: one JetStream publish and its acknowledgement (a request/reply) instead of a core
//!   publish per push, the stream's memory (its bounds) in the NATS server, a round trip
//!   before a node's own clients see its push; and every node keeps every pushed uid's recent
//!   pushes. Measured in `BENCHMARKS.md`, "Cluster resume".
//! - Mixed versions: an older node neither publishes to nor reads the stream: its pushes reach
//!   newer nodes unnumbered (positions stop being resumable there) and newer nodes' pushes do
//!   not reach it. Turn it off (`NatsConfig::resume(false)`) for a rolling deploy from a
//!   release without it.
//!
//! `publish` never blocks: frames go into a bounded queue ([`NatsConfig::queue`], default
//! 65 536 frames) drained by a task into the NATS client (which buffers while reconnecting).
//! When the queue is full, the frame is **dropped**, counted in [`Health::dropped`] and logged
//! with `tracing::warn!` (at most once a second). A subscriber that falls behind the server
//! loses messages as NATS's slow-consumer rule says (logged); presence then resynchronizes
//! through heartbeats.
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
//! node). See [`sente_proto::backplane::cluster`] for the protocol.
//!
//! # Buckets
//!
//! Five key-value buckets named `<cluster>_<name>` (characters other than letters, digits, `-`
//! and `_` in the cluster name become `_`), made on start if missing (their streams are
//! created directly, so servers from 2.9 on work). A `<uid>` is the hex of the uid's encoding
//! ([`codec::uid_bytes`]), a `<client>` the hex of the client id, an `<origin>` a node's
//! backplane instance id (16 hex digits). Every change is a compare-and-set on the key's
//! revision (`create` / `update`), retried on conflict (at most 64 times, then logged).
//!
//! | bucket | key | value | age limit |
//! |---|---|---|---|
//! | `nodes` | `<origin>` | `1`: the node is alive | [`ClusterConfig::expiry`] (5 s), put every heartbeat |
//! | `uidport` | `<uid>` | origins of the nodes that have the uid, comma separated | [`NatsConfig::uidport_ttl`] (1 h), renewed by its nodes every quarter of it |
//! | `ajax` | `<uid>` | registered clients, `<client>:<expiry ms>` comma separated | [`MailboxConfig::max_age`] (60 s) |
//! | `idem` | `<uid>_<client>_<request id hex>` | a retried request's claim (`r`: running), then `d` and its outcome ([`codec::encode_outcome`]): the cluster-wide dedupe of the `idem` extension | 120 s (the server's default dedupe window) |
//! | `mbox` | `<uid>_<client>` | the mailbox: a format byte (2), the lease's delivered flag, its id (u8 length, bytes), its event count (u32 LE), then the lease's events and the waiting ones ([`codec::encode_event`]), each after its u32 LE length (one key, so a take moves events into the lease with one compare-and-set) | [`MailboxConfig::max_age`] |
//!
//! Registration expiries use the nodes' clocks (keep them in sync within a second or so).
//! Without JetStream (a server started without `-js`), the node logs a warning once and works
//! as before: uidport events per node, Ajax clients served by the node they handshook with.
//!
//! The buckets' streams (`KV_<cluster>_<name>`) and the numbering stream (`<cluster>_SEQ`)
//! stay on the NATS server after the last node stops; [`remove_cluster`] deletes them, for a
//! cluster gone for good (a test or benchmark run, a retired deployment).
//!
//! # `chsk/uidport-*` once per cluster
//!
//! When a node's first connection of a uid opens, the node's operations task reads
//! `uidport/<uid>`, drops members whose `nodes` key is gone (dead nodes), adds itself and
//! writes it back at the revision it read; it fires `uidport-open` only if no live member was
//! there. When its last connection of the uid closes (after the grace period), it removes
//! itself the same way and fires `uidport-close` only if no live member is left. A write made
//! on a stale revision fails and the decision is made again on the new value, so of two nodes
//! connecting the same uid at the same moment exactly one fires, and of the last two leaving
//! exactly one. One node's decisions are made in the order it asked, and fired in that order.
//!
//! - **A node dies**: after [`ClusterConfig::expiry`] every survivor expires it and removes it
//!   from each of its uids; the one whose removal empties a set fires `uidport-close`. If every
//!   node died, the next node to open such a uid fires `uidport-close` then `uidport-open`
//!   ([`UidportDecision::close_stale`]).
//! - **A node comes back** after the others dropped it: its uids were closed for the cluster;
//!   they are not re-added and its later closes find it gone, so nothing is counted twice.
//! - Without an answer (queue full, JetStream unavailable) the node decides alone (fires).
//!
//! # Ajax without sticky sessions
//!
//! As in `sente-redis`: a handshake on any node registers the client (`ajax/<uid>`, for
//! `lp_timeout_ms` + `ms_allow_reconnect_before_close_ajax` + 1 s, renewed by every poll); a poll
//! on another node is served as a poll when the client is registered; a `send`, `send_many` or
//! `broadcast` appends the event once, on the publishing node, to the mailbox of every
//! registered client of its uids, **before** the push is published (the publishing task awaits
//! the appends), so a node that hears the push finds it stored; held polls are woken and take
//! their mailbox's oldest events with a compare-and-set (each event is taken by exactly one
//! poll; leased, see "Leased takes"), up to `max_batch_len` events and half the message limit.
//! A `broadcast` finds the registered clients in this node's view of the `ajax` bucket, kept by
//! a key-value watch (seeded from the bucket's keys when the watch starts, and again after the
//! buckets are made again), not by listing the bucket per broadcast; a registration made on
//! another node reaches the view one NATS round trip later (a broadcast in that window misses
//! the new client, as one published just before its handshake would). The publishing task
//! takes up to 64 queued jobs at once and makes their appends together: one read of each uid's
//! registrations and one compare-and-set per client for all of them, in order, before it
//! publishes their frames (measured: 100 broadcasts/s to 10 Ajax clients appended with 8 ms of
//! lag in a debug build, against 52/s with a key listing per broadcast; `BENCHMARKS.md`). Bounds
//! ([`MailboxConfig`]): over `max_events` (1 000) or `max_bytes` (4 MiB) the client is forgotten
//! (mailbox emptied, registration removed: its next poll gets a handshake); a mailbox or
//! registration unchanged for [`MailboxConfig::max_age`] (60 s) is dropped by JetStream. A
//! value must fit the server's `max_payload` (1 MiB by default), which bounds a NATS mailbox
//! below `max_bytes` unless the server allows more. A POST may land on any node.
//!
//! # Numbered entries
//!
//! With cross-node resume a push's mailbox append waits for the push's number (the numbering
//! stream's acknowledgement), then stores the entry with the push's sequenced trailer
//! ([`codec::number_entry`]; an older node reads the event and ignores it) and publishes an
//! `AjaxWake` frame (codec kind 7; older nodes skip it) so the other nodes' held polls take
//! again (they may have looked when the push reached them, before the entry was stored). A
//! resuming Ajax client names its position on every GET: a poll's answer from the mailbox is
//! numbered and leaves out what the position says the client has; a resuming handshake whose
//! mailbox was kept recovers its own position (`recovered: true`). Cost: a push's append is
//! one compare-and-set after its acknowledgement (no longer batched with the run's other
//! appends) plus one core publish.
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
//! At the start the node has joined ([`Backplane::joined`]) once it has read its place in the
//! numbering and NATS has its subscription (a flush's round trip); until then the server holds
//! new clients (`sente::Builder::join_wait`, at most 10 s by default; past it the node serves
//! without the cluster, as during an outage).
//!
//! The `async-nats` client reconnects by itself (forever, with our backoff: 100 ms doubling to
//! 5 s, [`NatsConfig::reconnect`]) and resubscribes; outages are logged with `tracing` (warn
//! when lost, info when back) and visible in [`NatsBackplane::health`]. Nothing here panics.
//! The backplane's tasks and connection end when the last clone of the [`NatsBackplane`] is
//! dropped.
//!
//! Engine operations are bounded by [`NatsConfig::op_timeout`] (2 s): one that fails or times
//! out is logged and its caller gets the single-node answer (a uidport event fires on this
//! node, a poll finds nothing); while NATS is unreachable, mailbox appends are skipped. The
//! buckets live in memory: NATS restarting loses them (uids open at that moment may fire
//! `uidport-open` again, waiting Ajax pushes are lost, Ajax clients re-handshake); the node
//! makes them again after its first failed operation (at most once a second).
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
//!   node at a random moment of the traffic (0 lost in 96 NATS runs; a batch repeated once in
//!   2 of 64 under doubled load: the window left in "Leased takes").
//! - **The Ajax window**: what waits for a client is bounded by [`MailboxConfig`]: `max_events`
//!   (1 000) and `max_bytes` (4 MiB) per client (over either, the client is forgotten and
//!   re-handshakes with an empty mailbox), and age: a registration lives `lp_timeout_ms` +
//!   `ms_allow_reconnect_before_close_ajax` + 1 s after the client's last request (26 s with the
//!   server's defaults) and a mailbox unchanged for [`MailboxConfig::max_age`] (60 s) is dropped by
//!   JetStream, so a client has the shorter of the two to reconnect to a survivor before its
//!   waiting pushes are dropped.
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
//! - **Pushes to WebSocket clients**: with cross-node resume every node logs them under their
//!   global number, so a resuming client (the default of the Rust, WASM and JS clients) that
//!   reconnects to a survivor gets those sent meanwhile replayed: every acknowledged push
//!   arrives exactly once, in order (the process test `ws_sigkill`). A client without resume
//!   loses the pushes sent while it reconnected.

use sente_backplane_kit as shell;

pub use sente_proto::backplane::cluster::ClusterConfig;
pub use shell::{Health, MailboxConfig};

use futures_util::StreamExt;
use sente_proto::backplane::{
    Backplane, BackplaneMsg, BackplaneSink, BoxFuture, IdemStore, Mailbox, NodeId, UidportDecision,
    codec, mailbox_take_count, uidport_rule,
};
use sente_proto::{ClientId, Uid};
use shell::{
    Backoff, Idem, IdemSeen, Job, Mailboxes, Op, OpQueue, Shared, Side, cid_hex, idem_key, uid_hex,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How to reach NATS and how the cluster behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NatsConfig {
    /// The server URL(s), comma separated (`nats://host:port`).
    pub url: String,
    /// The cluster name: the subject is `<cluster>.backplane`. Default `sente`.
    pub cluster: String,
    /// Capacity of the publish queue, in frames. Default 65 536.
    pub queue: usize,
    /// Reconnect backoff: first and largest delay. Default 100 ms and 5 s.
    pub reconnect: (Duration, Duration),
    /// Heartbeats, expiry and decoding limits.
    pub presence: ClusterConfig,
    /// The Ajax mailboxes (on by default).
    pub mailbox: MailboxConfig,
    /// The age limit of the `uidport` bucket: a uid's entry lives this long after its last
    /// change or renewal; every node renews the entries of its uids every quarter of it.
    /// Default 1 h.
    pub uidport_ttl: Duration,
    /// The longest one engine operation may take (a uidport decision, a mailbox registration
    /// or take, or one push's mailbox appends) before it is given up (logged; a uidport event
    /// then fires on this node, a poll finds nothing). While NATS is unreachable appends are
    /// skipped at once (their pushes still reach the nodes' WebSocket clients once NATS is
    /// back, from the publish queue). Also the longest a node holds a push another node
    /// published unnumbered while waiting for that node's numbered pushes before it (see the
    /// crate docs, "Cross-node resume"). Default 2 s.
    pub op_timeout: Duration,
    /// Cross-node resume: number every push for the cluster by publishing it to the JetStream
    /// stream `<cluster>_SEQ` (memory storage, subject `<cluster>.seq`) that every node
    /// consumes in order, instead of a core publish (see the crate docs, "Cross-node
    /// resume"). The servers use the numbers when their replay is enabled; turn this off when
    /// it is not. Default `true`.
    pub resume: bool,
    /// The numbering stream's bounds: messages kept, and their age. Default 100 000 and 2 min
    /// (a node only reads what arrives after it started consuming; these bound the engine's
    /// memory).
    pub seq_stream: (i64, Duration),
}

impl NatsConfig {
    /// The defaults, with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            cluster: "sente".to_owned(),
            queue: 65_536,
            reconnect: (Duration::from_millis(100), Duration::from_secs(5)),
            presence: ClusterConfig::default(),
            mailbox: MailboxConfig::default(),
            uidport_ttl: Duration::from_secs(3600),
            op_timeout: Duration::from_secs(2),
            resume: true,
            seq_stream: (100_000, Duration::from_secs(120)),
        }
    }

    /// Sets [`NatsConfig::resume`].
    pub fn resume(mut self, on: bool) -> Self {
        self.resume = on;
        self
    }

    /// Sets [`NatsConfig::op_timeout`] (at least 10 ms).
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d.max(Duration::from_millis(10));
        self
    }

    /// Sets [`NatsConfig::uidport_ttl`] (at least 1 s).
    pub fn uidport_ttl(mut self, ttl: Duration) -> Self {
        self.uidport_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Sets [`NatsConfig::mailbox`].
    pub fn mailbox(mut self, cfg: MailboxConfig) -> Self {
        self.mailbox = cfg;
        self
    }

    /// Sets [`NatsConfig::cluster`].
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// Sets [`NatsConfig::queue`].
    pub fn queue(mut self, frames: usize) -> Self {
        self.queue = frames.max(1);
        self
    }

    /// Sets [`NatsConfig::reconnect`].
    pub fn reconnect(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect = (min, max.max(min));
        self
    }

    /// Sets [`NatsConfig::presence`].
    pub fn presence(mut self, cfg: ClusterConfig) -> Self {
        self.presence = cfg;
        self
    }

    /// The subject.
    pub fn subject(&self) -> String {
        format!("{}.backplane", self.cluster)
    }
}

/// Why a backplane could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The cluster name makes an invalid subject.
    Subject(String),
    /// Not called within a tokio runtime.
    NoRuntime,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Subject(s) => write!(f, "invalid NATS subject {s:?}"),
            Error::NoRuntime => f.write_str("NatsBackplane::start needs a tokio runtime"),
        }
    }
}

impl std::error::Error for Error {}

/// A [`Backplane`] over NATS (see the crate docs). Cheap to clone; one instance per server
/// node.
#[derive(Clone)]
pub struct NatsBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    subject: String,
    _stop: watch::Sender<()>,
}

impl std::fmt::Debug for NatsBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackplane")
            .field("subject", &self.inner.subject)
            .field("origin", &self.inner.shared.origin)
            .finish_non_exhaustive()
    }
}

impl NatsBackplane {
    /// Starts the backplane's tasks (connection, publisher, subscriber, timer) on the current
    /// tokio runtime. It connects in the background, so NATS need not be up yet; see
    /// [`NatsBackplane::wait_connected`].
    #[allow(clippy::needless_pass_by_value)] // a config is built for this call
    pub fn start(config: NatsConfig) -> Result<NatsBackplane, Error> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let subject = config.subject();
        if subject.is_empty()
            || subject
                .chars()
                .any(|c| c.is_whitespace() || c == '*' || c == '>')
            || subject.split('.').any(str::is_empty)
        {
            return Err(Error::Subject(subject));
        }
        let (shared, rx, ops) = Shared::new(
            "nats",
            config.presence.clone(),
            config.queue,
            config.mailbox.clone(),
        );
        shared.set_sequencing(config.resume);
        shared.set_after_wait(config.op_timeout);
        // A push's mailbox append waits for the push's number and is stored numbered.
        shared.set_numbered_appends(true);
        let (stop, stop_rx) = watch::channel(());
        handle.spawn(run(
            config.url.clone(),
            (
                config.cluster.clone(),
                config.uidport_ttl,
                config.op_timeout,
                config.seq_stream,
            ),
            subject.clone(),
            shared.clone(),
            (rx, ops),
            stop_rx.clone(),
            config.reconnect,
        ));
        handle.spawn(shell::run_timer(shared.clone(), stop_rx));
        Ok(NatsBackplane {
            inner: Arc::new(Inner {
                shared,
                subject,
                _stop: stop,
            }),
        })
    }

    /// The connection state and counters.
    pub fn health(&self) -> Health {
        self.inner.shared.health()
    }

    /// Waits until the connection is up; false after `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.inner.shared.wait_connected(timeout).await
    }

    /// This instance's origin id (in every frame it publishes).
    pub fn origin(&self) -> u64 {
        self.inner.shared.origin
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }
}

impl Backplane for NatsBackplane {
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

fn set_connected(shared: &Shared, up: bool, error: Option<&str>) {
    shared.set_up(Side::Publisher, up, error.map(str::to_owned));
    shared.set_up(Side::Subscriber, up, error.map(str::to_owned));
}

/// Connects (retrying), then runs the publisher, the subscriber and a state watcher until
/// `stop` fires.
async fn run(
    url: String,
    (cluster, uidport_ttl, op_timeout, seq_stream): (String, Duration, Duration, (i64, Duration)),
    subject: String,
    shared: Arc<Shared>,
    (mut rx, ops): (mpsc::Receiver<Job>, OpQueue),
    mut stop: watch::Receiver<()>,
    (min, max): (Duration, Duration),
) {
    let mut backoff = Backoff::new(min, max);
    let client = loop {
        let attempt = tokio::select! {
            r = options(&shared, min, max).connect(url.as_str()) => r,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok(c) => break c,
            Err(e) => {
                set_connected(&shared, false, Some(&e.to_string()));
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
        }
    };
    // Numbering: where this node's consumer starts, read before the core subscription goes
    // live, so nothing numbered after the node starts hearing the cluster is missed.
    let seq_subject = format!("{cluster}.seq");
    let seq_prefix = bucket_prefix(&cluster);
    let seq_start = if shared.sequencing() {
        let last = tokio::select! {
            r = seq_stream_last(&client, &seq_prefix, &seq_subject, seq_stream) => r,
            _ = stop.changed() => return,
        };
        match last {
            Ok(last) => Some(last + 1),
            Err(e) => {
                // Not silent: this node's first consumer then starts with what is numbered
                // after it is made, and misses what was numbered before (a gap).
                shared.record_error(format!(
                    "{e}: the first numbering consumer starts with new pushes"
                ));
                None
            }
        }
    } else {
        None
    };
    // Subscribed, then the round trip of a flush: the server has the subscription before this
    // node counts as joined, so every frame published after that reaches it.
    let subscriber = loop {
        let subscribed = async {
            let s = client
                .subscribe(subject.clone())
                .await
                .map_err(|e| format!("subscribe: {e}"))?;
            client
                .flush()
                .await
                .map_err(|e| format!("subscribe (flush): {e}"))?;
            Ok::<_, String>(s)
        };
        let attempt = tokio::select! {
            r = subscribed => r,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok(s) => break s,
            Err(e) => {
                shared.record_error(e);
                if !backoff.wait(&mut stop).await {
                    return;
                }
            }
        }
    };
    // The numbering's start was read above: the node has joined.
    shared.mark_joined();
    let (every, expiry) = {
        let c = shared
            .cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (c.config().heartbeat, c.config().expiry)
    };
    // The buckets (JetStream). Without them uidport events are decided per node and Ajax
    // clients need sticky sessions (logged); they are made again when an operation fails (a
    // NATS restart loses memory buckets) or while missing, at most once a second.
    let buckets = Arc::new(Buckets {
        current: std::sync::Mutex::new(None),
        last_try: std::sync::Mutex::new(None),
        client: client.clone(),
        cluster,
        ages: (expiry, uidport_ttl),
    });
    tokio::select! {
        () = buckets.repair(&shared) => {}
        _ = stop.changed() => return,
    }
    // This node's liveness key first (other nodes drop members without one), then every
    // heartbeat, in a task of its own so that slow operations never delay it.
    let me = format!("{:016x}", shared.origin);
    if let Some(s) = buckets.get()
        && let Err(e) = s.nodes.put(me.as_str(), "1".into()).await
    {
        shared.record_error(format!("liveness key: {e}"));
    }
    let liveness = {
        let (buckets, shared) = (buckets.clone(), shared.clone());
        async move {
            let mut alive = tokio::time::interval(every);
            alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                alive.tick().await;
                match buckets.get() {
                    Some(s) => {
                        if let Err(e) = s.nodes.put(me.as_str(), "1".into()).await {
                            shared.record_error(format!("liveness key: {e}"));
                            buckets.repair(&shared).await;
                        }
                    }
                    None => buckets.repair(&shared).await,
                }
            }
        }
    };
    let ops_task = run_ops(
        buckets.clone(),
        shared.clone(),
        ops,
        (uidport_ttl, op_timeout),
    );
    let recv = {
        let shared = shared.clone();
        let mut subscriber = subscriber;
        async move {
            while let Some(m) = subscriber.next().await {
                shared.receive(&m.payload);
            }
        }
    };
    let watch_state = {
        let shared = shared.clone();
        let client = client.clone();
        async move {
            // The events above report changes; this catches the initial connection too.
            let mut was = None;
            loop {
                let up = client.connection_state() == async_nats::connection::State::Connected;
                if was != Some(up) {
                    set_connected(&shared, up, None);
                    was = Some(up);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let watch_registered = watch_registrations(buckets.clone(), shared.clone());
    let numbered = run_seq_consumer(
        client.clone(),
        shared.clone(),
        (bucket_prefix(&buckets.cluster), seq_subject.clone()),
        (seq_stream, seq_start),
        (min, max),
    );
    let send = {
        let shared = shared.clone();
        let client = client.clone();
        let js = async_nats::jetstream::new(client.clone());
        async move {
            let mut jobs = Vec::new();
            while rx.recv_many(&mut jobs, APPEND_RUN).await > 0 {
                // The mailbox appends of the run first (one compare-and-set per client for
                // all of them, in order), so a node that hears a push finds it stored; then
                // the frames and numbered frames, in order.
                // Appends an outage moved to the node-local fallback are not made (see
                // `Shared::append_pending`).
                let mut included = Vec::new();
                let appends: Vec<(AppendTo<'_>, &[u8])> = jobs
                    .iter()
                    .filter_map(|j| {
                        let (to, entry, id) = match j {
                            Job::Append { uids, entry, id } => {
                                (AppendTo::Uids(uids.as_deref()), entry, id)
                            }
                            Job::AppendClient {
                                uid,
                                client,
                                entry,
                                id,
                            } => (AppendTo::Client(uid, client), entry, id),
                            Job::Frame(_) | Job::Seq { .. } => return None,
                        };
                        shared.append_pending(*id).then(|| {
                            included.push(*id);
                            (to, entry.as_slice())
                        })
                    })
                    .collect();
                let stored = !appends.is_empty()
                    && Box::pin(store_appends(&buckets, &shared, op_timeout, &appends)).await;
                shared.appends_done(&included, stored);
                let skipped: Vec<u64> = Shared::append_ids(&jobs)
                    .into_iter()
                    .filter(|id| !included.contains(id))
                    .collect();
                shared.appends_done(&skipped, false);
                let mut i = 0;
                while i < jobs.len() {
                    let started = std::time::Instant::now();
                    let mut number = None;
                    let mut append = None;
                    if let Job::Seq {
                        frame,
                        id,
                        append: a,
                        ..
                    } = &mut jobs[i]
                    {
                        append = a.take();
                        if !shared.waits_for_number(*id) {
                            // Applied here meanwhile: published plain.
                            tracing::debug!("numbered push published plain: applied here");
                            jobs[i] = Job::Frame(std::mem::take(frame));
                        } else if let Some(n) =
                            publish_numbered(&js, &shared, &seq_subject, frame, op_timeout).await
                        {
                            shared.numbered(*id, shared.seq_epoch().map(|e| (e, n)));
                            shared.count_sent_since(std::slice::from_ref(&jobs[i]), started);
                            number = Some(n);
                        } else {
                            // Applied here now, and published unnumbered, with what waits
                            // behind it.
                            shared.unsequence(&mut jobs[i..], None);
                        }
                    }
                    if let Some(a) = append {
                        // The push's append, after its number (if it got one).
                        let numbered = number.zip(shared.seq_epoch()).map(|(n, e)| (e, n));
                        append_after(
                            &buckets,
                            &shared,
                            op_timeout,
                            (&client, &subject),
                            *a,
                            numbered,
                        )
                        .await;
                    }
                    if number.is_some() {
                        i += 1;
                        continue;
                    }
                    let job = &jobs[i];
                    match job {
                        Job::Frame(frame) => {
                            // A push published plain goes after this node's numbered ones
                            // on every node (they travel on the consumers' path).
                            let mut frame = frame.clone();
                            shared.mark_after(&mut frame);
                            match client.publish(subject.clone(), frame.into()).await {
                                Ok(()) => {
                                    shared.count_sent_since(std::slice::from_ref(job), started);
                                }
                                Err(e) => shared.record_error(format!("publish: {e}")),
                            }
                        }
                        Job::Seq { .. } => {}
                        Job::Append { id, .. } | Job::AppendClient { id, .. } => {
                            if stored && included.contains(id) {
                                shared.count_sent(std::slice::from_ref(job));
                            }
                            shared.wake_after(std::slice::from_ref(job));
                        }
                    }
                    i += 1;
                }
                jobs.clear();
            }
        }
    };
    tokio::select! {
        () = liveness => {}
        () = watch_registered => {}
        () = ops_task => {}
        () = recv => {}
        () = watch_state => {}
        () = send => {}
        () = numbered => {}
        _ = stop.changed() => {}
    }
}

/// Publishes a numbered frame to the numbering stream and waits for its acknowledgement
/// (at most `op_timeout`, and no longer once NATS is seen gone, so local clients wait no
/// longer); its number (the stream sequence), `None` when it was not stored.
async fn publish_numbered(
    js: &async_nats::jetstream::Context,
    shared: &Shared,
    subject: &str,
    frame: &[u8],
    op_timeout: Duration,
) -> Option<u64> {
    if !shared.sequencing_up() {
        // The first consumer is being made: wait for it (see `Shared::numbering_soon`).
        let started = tokio::time::Instant::now();
        while shared.numbering_soon() && started.elapsed() < op_timeout {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !shared.sequencing_up() {
            tracing::debug!("numbered publish skipped: numbering not up");
            return None;
        }
    }
    let acked = tokio::time::timeout(op_timeout, async {
        js.publish(subject.to_owned(), frame.to_vec().into())
            .await?
            .await
    });
    let down = async {
        while shared.sequencing_up() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let acked = tokio::select! {
        r = acked => r.map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string())),
        () = down => Err("NATS unreachable".to_owned()),
    };
    match acked {
        Ok(ack) => Some(ack.sequence),
        Err(e) => {
            shared.record_error(format!("numbered publish: {e}"));
            None
        }
    }
}

/// Stores a run of appends ([`append`]), given up as soon as NATS is seen unreachable (an
/// outage moves these pushes to the fallback, so they must not reach a mailbox after the
/// newer ones the fallback serves); whether they were stored (failures are recorded).
async fn store_appends(
    buckets: &Buckets,
    shared: &Shared,
    op_timeout: Duration,
    appends: &[(AppendTo<'_>, &[u8])],
) -> bool {
    let Some(s) = buckets.get().filter(|_| shared.health().connected) else {
        shared.record_error("mailbox append skipped: NATS unreachable".to_owned());
        return false;
    };
    let appended = tokio::select! {
        r = tokio::time::timeout(op_timeout, append(&s, &shared.mailbox, appends)) => {
            r.unwrap_or_else(|_| Err("timed out".to_owned()))
        }
        () = shared.until_down() => Err("NATS unreachable".to_owned()),
    };
    match appended {
        Ok(()) => true,
        Err(e) => {
            shared.record_error(format!("mailbox append: {e}"));
            buckets.repair(shared).await;
            false
        }
    }
}

/// Makes the mailbox append that travelled with a push's numbered message, once the push
/// got its number: the entry numbered with `numbered` (`(epoch, seq)`; `None`: plain, the
/// push was published unnumbered). The other nodes may have looked at the mailbox when the
/// push reached them, before this stored it: a numbered append is followed by an
/// [`BackplaneMsg::AjaxWake`] for them (their held polls take again), and wakes this node's.
async fn append_after(
    buckets: &Buckets,
    shared: &Shared,
    op_timeout: Duration,
    (client, subject): (&async_nats::Client, &str),
    job: Job,
    numbered: Option<(u64, u64)>,
) {
    let (to, entry, id, uids) = match &job {
        Job::Append { uids, entry, id } => {
            (AppendTo::Uids(uids.as_deref()), entry, *id, uids.clone())
        }
        Job::AppendClient {
            uid,
            client: c,
            entry,
            id,
        } => (
            AppendTo::Client(uid, c),
            entry,
            *id,
            Some(Arc::from([uid.clone()])),
        ),
        Job::Frame(_) | Job::Seq { .. } => return,
    };
    if !shared.append_pending(id) {
        shared.appends_done(&[id], false);
        return;
    }
    let mut entry = entry.clone();
    if let Some((epoch, seq)) = numbered {
        codec::number_entry(&mut entry, epoch, seq);
    }
    let stored = Box::pin(store_appends(
        buckets,
        shared,
        op_timeout,
        &[(to, entry.as_slice())],
    ))
    .await;
    shared.appends_done(&[id], stored);
    if stored {
        shared.count_sent(std::slice::from_ref(&job));
        if numbered.is_some() {
            let wake = BackplaneMsg::AjaxWake { uids };
            match codec::encode_msg(shared.origin, &wake) {
                Ok(frame) => {
                    if let Err(e) = client.publish(subject.to_owned(), frame.into()).await {
                        shared.record_error(format!("publish: {e}"));
                    }
                }
                Err(e) => shared.record_error(format!("wake frame: {e}")),
            }
        }
    }
    shared.wake_after(std::slice::from_ref(&job));
}

/// Consumes the numbering stream (cross-node resume) in order, from what arrives after it
/// starts: each message is delivered as a sequenced frame (the stream sequence is the global
/// number, the stream's creation time the epoch). Makes the stream if missing; starts over
/// (new consumer, and a new epoch if the stream was made anew) when the consumer fails.
async fn run_seq_consumer(
    client: async_nats::Client,
    shared: Arc<Shared>,
    (prefix, subject): (String, String),
    (bounds, mut start): ((i64, Duration), Option<u64>),
    (min, max): (Duration, Duration),
) {
    if !shared.sequencing() {
        return std::future::pending::<()>().await;
    }
    let js = async_nats::jetstream::new(client.clone());
    let mut backoff = Backoff::new(min, max);
    let (_never, mut stop) = watch::channel(());
    // The first consumer starts at `start` (read before the core subscription went live); a
    // consumer made again after a failure starts with what arrives (the skipped numbers are a
    // gap: older positions are refused here).
    loop {
        let consumed = async {
            let stream = seq_stream_get_or_create(&js, &prefix, &subject, bounds).await?;
            let info = stream.cached_info();
            let created = info.created.unix_timestamp_nanos();
            let epoch = u64::try_from(created).unwrap_or_default() | 1;
            let first = start.take();
            let deliver_policy = match first {
                Some(start_sequence) => {
                    async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence,
                    }
                }
                None => async_nats::jetstream::consumer::DeliverPolicy::New,
            };
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::push::OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    filter_subject: subject.clone(),
                    deliver_policy,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("numbering consumer: {e}"))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| format!("numbering consumer: {e}"))?;
            shared.deliver(BackplaneMsg::Epoch { epoch });
            shared.set_seq_epoch(epoch);
            if let Some(first) = first {
                shared.seq_starts_at(epoch, first);
            }
            shared.set_seq_ready(true);
            let mut payload = Vec::new();
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| format!("numbering consumer: {e}"))?;
                let Ok(info) = m.info() else { continue };
                payload.clear();
                payload.extend_from_slice(&m.payload);
                payload.push(codec::SEQ_TAG);
                payload.extend_from_slice(&epoch.to_le_bytes());
                payload.extend_from_slice(info.stream_sequence.to_string().as_bytes());
                shared.receive(&payload);
            }
            Err::<(), String>("numbering consumer ended".to_owned())
        };
        if let Err(e) = consumed.await {
            shared.set_seq_ready(false);
            shared.record_error(e);
        }
        if !backoff.wait(&mut stop).await {
            return;
        }
    }
}

/// The numbering stream's configuration.
fn seq_stream_config(
    prefix: &str,
    subject: &str,
    (max_messages, max_age): (i64, Duration),
) -> async_nats::jetstream::stream::Config {
    async_nats::jetstream::stream::Config {
        name: seq_stream_name(prefix),
        subjects: vec![subject.to_owned()],
        max_messages,
        max_age,
        storage: async_nats::jetstream::stream::StorageType::Memory,
        discard: async_nats::jetstream::stream::DiscardPolicy::Old,
        num_replicas: 1,
        ..Default::default()
    }
}

/// Attempts of [`seq_stream_get_or_create`].
const SEQ_STREAM_ATTEMPTS: u32 = 5;

/// The numbering stream, made if missing. Nodes that start together race to make it, and
/// NATS may answer the losers' create with an error although the stream is there (NATS 2.9:
/// "subjects overlap with an existing stream"), so a failed attempt is tried again (its
/// lookup then finds the stream), a few times, shortly after.
async fn seq_stream_get_or_create(
    js: &async_nats::jetstream::Context,
    prefix: &str,
    subject: &str,
    bounds: (i64, Duration),
) -> Result<async_nats::jetstream::stream::Stream, String> {
    let mut attempt = 1;
    loop {
        match js
            .get_or_create_stream(seq_stream_config(prefix, subject, bounds))
            .await
        {
            Ok(stream) => return Ok(stream),
            Err(e) if attempt >= SEQ_STREAM_ATTEMPTS => {
                return Err(format!("numbering stream: {e}"));
            }
            Err(e) => {
                tracing::debug!(backplane = "nats", error = %e, attempt, "numbering stream: tried again");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                attempt += 1;
            }
        }
    }
}

/// The numbering stream's last sequence (made if missing); an error when JetStream cannot be
/// asked.
async fn seq_stream_last(
    client: &async_nats::Client,
    prefix: &str,
    subject: &str,
    bounds: (i64, Duration),
) -> Result<u64, String> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = seq_stream_get_or_create(&js, prefix, subject, bounds).await?;
    Ok(stream.cached_info().state.last_sequence)
}

/// The client's options (a fresh value per connection attempt: `connect` consumes them).
fn options(shared: &Arc<Shared>, min: Duration, max: Duration) -> async_nats::ConnectOptions {
    let events = shared.clone();
    async_nats::ConnectOptions::new()
        .name("sente-backplane")
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| {
            let exp = u32::try_from(attempts.min(16)).unwrap_or(16);
            min.saturating_mul(2u32.saturating_pow(exp)).min(max)
        })
        .event_callback(move |event| {
            let shared = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => set_connected(&shared, true, None),
                    async_nats::Event::Disconnected => {
                        set_connected(&shared, false, Some("disconnected from NATS"));
                    }
                    async_nats::Event::SlowConsumer(sid) => shared.record_error(format!(
                        "slow consumer (subscription {sid}): NATS dropped messages"
                    )),
                    async_nats::Event::ServerError(e) => {
                        shared.record_error(format!("server error: {e}"));
                    }
                    async_nats::Event::ClientError(e) => {
                        shared.record_error(format!("client error: {e}"));
                    }
                    other => tracing::debug!(backplane = "nats", event = %other, "nats event"),
                }
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Stored state in JetStream key-value buckets: uidport sets, node liveness, Ajax registrations
// and mailboxes. Every change is a compare-and-set on the key's revision, retried on conflict.

use async_nats::jetstream::kv::{Operation, Store};

/// Most compare-and-set attempts of one operation before it gives up (and logs).
const CAS_ATTEMPTS: usize = 64;

/// The key-value buckets of a cluster.
#[derive(Clone)]
struct Stores {
    nodes: Store,
    uidport: Store,
    ajax: Store,
    mbox: Store,
    /// Retried requests' claims and outcomes (cluster-wide dedupe).
    idem: Store,
    /// The uids (hex) with a registration in `ajax`, kept by a watch of the bucket
    /// ([`watch_registrations`]), so a broadcast needs no key listing. `None` until the watch
    /// runs (a broadcast then lists the keys).
    registered: Arc<std::sync::Mutex<Option<HashSet<String>>>>,
}

impl Stores {
    fn registered(&self) -> std::sync::MutexGuard<'_, Option<HashSet<String>>> {
        self.registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The registered uids, from the watched view (`None`: not watching).
    fn registered_uids(&self) -> Option<Vec<String>> {
        self.registered()
            .as_ref()
            .map(|set| set.iter().cloned().collect())
    }

    /// Records a uid's registration seen here (`true`) or found gone (`false`).
    fn note_registered(&self, uid_hex: &str, present: bool) {
        if let Some(set) = self.registered().as_mut() {
            if present {
                set.insert(uid_hex.to_owned());
            } else {
                set.remove(uid_hex);
            }
        }
    }
}

/// Keeps [`Stores::registered`] of the current stores: seeds it from the bucket's keys once a
/// watch of the bucket runs, then applies the watch's puts and deletes; starts again on the new
/// stores when the buckets are made again (a NATS restart), or when the watch fails.
async fn watch_registrations(buckets: Arc<Buckets>, shared: Arc<Shared>) {
    loop {
        if let Some(s) = buckets.get() {
            match s.ajax.watch_all().await {
                Ok(mut w) => {
                    match s.ajax.keys().await {
                        Ok(keys) => {
                            let set: HashSet<String> =
                                keys.filter_map(|k| async move { k.ok() }).collect().await;
                            *s.registered() = Some(set);
                        }
                        Err(e) => shared.record_error(format!("registrations: {e}")),
                    }
                    let mut check = tokio::time::interval(Duration::from_millis(500));
                    loop {
                        tokio::select! {
                            e = w.next() => match e {
                                Some(Ok(e)) => {
                                    let put = matches!(e.operation, Operation::Put);
                                    s.note_registered(&e.key, put && !e.value.is_empty());
                                }
                                Some(Err(e)) => {
                                    shared.record_error(format!("registrations watch: {e}"));
                                    break;
                                }
                                None => break,
                            },
                            _ = check.tick() => {
                                let current = buckets.get();
                                if current.is_none_or(|c| !Arc::ptr_eq(&c.registered, &s.registered)) {
                                    break;
                                }
                            }
                        }
                    }
                    *s.registered() = None;
                }
                Err(e) => shared.record_error(format!("registrations watch: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The key-value buckets a cluster keeps, `<cluster>_<name>` (see [`remove_cluster`]).
const BUCKETS: [&str; 5] = ["nodes", "uidport", "ajax", "mbox", "idem"];

/// Deletes what cluster `cluster` keeps in NATS's JetStream: its five key-value buckets and
/// its numbering stream `<cluster>_SEQ`. They are memory streams, and the server keeps them
/// (and the memory their limits allow) until they are deleted; this is for a cluster gone for
/// good: a finished test or benchmark, a retired deployment. Never while one of its nodes
/// runs: they would make them again, without what was in them. What is missing is skipped;
/// returns how many were deleted.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let deleted = sente_nats::remove_cluster(&client, "my-test-cluster").await?;
/// # Ok(()) }
/// ```
pub async fn remove_cluster(
    client: &async_nats::Client,
    cluster: &str,
) -> Result<usize, async_nats::jetstream::context::DeleteStreamError> {
    let p = bucket_prefix(cluster);
    let streams: Vec<String> = BUCKETS
        .iter()
        .map(|b| bucket_stream_name(&p, b))
        .chain(std::iter::once(seq_stream_name(&p)))
        .collect();
    remove_streams(client, streams).await
}

/// Deletes the JetStream streams `names` (a key-value bucket's is [`kv_stream_name`]), skipping
/// those that do not exist; returns how many were deleted. [`remove_cluster`] uses it, and an
/// application can remove its own buckets with it.
pub async fn remove_streams(
    client: &async_nats::Client,
    names: impl IntoIterator<Item = String>,
) -> Result<usize, async_nats::jetstream::context::DeleteStreamError> {
    use async_nats::jetstream::{ErrorCode, context::DeleteStreamErrorKind};
    let js = async_nats::jetstream::new(client.clone());
    let mut deleted = 0;
    for name in names {
        match js.delete_stream(&name).await {
            Ok(_) => deleted += 1,
            Err(e)
                if matches!(e.kind(), DeleteStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// The name of the numbering stream of the cluster whose [`bucket_prefix`] is `prefix`.
fn seq_stream_name(prefix: &str) -> String {
    format!("{prefix}_SEQ")
}

/// The name of the stream that holds the cluster's `name` bucket (see [`BUCKETS`]): the one
/// `create_key_value` would make for the bucket `<prefix>_<name>`.
fn bucket_stream_name(prefix: &str, name: &str) -> String {
    kv_stream_name(&format!("{prefix}_{name}"))
}

/// The JetStream stream behind the key-value bucket `bucket` (`KV_<bucket>`, what
/// `create_key_value` makes): for an application that makes or removes ([`remove_streams`])
/// buckets of its own next to a cluster's.
pub fn kv_stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// A bucket-name-safe version of the cluster name.
fn bucket_prefix(cluster: &str) -> String {
    cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The buckets, made again when they go missing.
struct Buckets {
    current: std::sync::Mutex<Option<Stores>>,
    last_try: std::sync::Mutex<Option<tokio::time::Instant>>,
    client: async_nats::Client,
    cluster: String,
    /// Liveness expiry and uidport ttl.
    ages: (Duration, Duration),
}

impl Buckets {
    fn get(&self) -> Option<Stores> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes (or finds) the buckets again, at most once a second.
    async fn repair(&self, shared: &Shared) {
        {
            let mut last = self
                .last_try
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *last = Some(tokio::time::Instant::now());
        }
        match open_stores(&self.client, &self.cluster, self.ages, &shared.mailbox).await {
            Ok(s) => {
                let was = self
                    .current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .replace(s);
                if was.is_none() {
                    tracing::info!(backplane = "nats", "JetStream key-value buckets ready");
                }
            }
            Err(e) => {
                tracing::warn!(backplane = "nats", error = %e,
                    "JetStream key-value buckets unavailable: uidport events per node, no Ajax mailboxes");
                shared.record_error(format!("JetStream: {e}"));
            }
        }
    }
}

/// The age limit of the `idem` bucket: the server's default dedupe window
/// (`IdemConfig::max_age_ms`, 120 s); a longer window is cut to it in a NATS cluster.
const IDEM_AGE: Duration = Duration::from_secs(120);

/// Claims request key `k` in the `idem` bucket (see `IdemStore::claim`).
async fn idem_claim(s: &Stores, k: &str) -> Result<IdemSeen, String> {
    for _ in 0..2 {
        match s.idem.create(k, bytes::Bytes::from_static(b"r")).await {
            Ok(_) => return Ok(IdemSeen::Won),
            Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.to_string()),
        }
        // Absent: deleted meanwhile (a claim given up), so claim again.
        if let Some(v) = read(&s.idem, k).await?.0 {
            return Ok(match v.split_first() {
                Some((b'd', outcome)) => IdemSeen::Done(outcome.to_vec()),
                _ => IdemSeen::Running,
            });
        }
    }
    Ok(IdemSeen::Running)
}

async fn open_stores(
    client: &async_nats::Client,
    cluster: &str,
    (expiry, uidport_ttl): (Duration, Duration),
    mailbox: &MailboxConfig,
) -> Result<Stores, String> {
    let js = async_nats::jetstream::new(client.clone());
    let p = bucket_prefix(cluster);
    // The bucket's stream is made here, as `create_key_value` would (it first asks for the
    // account's details, whose answer older servers, e.g. 2.9, word differently).
    let open = |name: &str, max_age: Duration| {
        let js = js.clone();
        let bucket = format!("{p}_{name}");
        let stream = kv_stream_name(&bucket);
        async move {
            let cfg = async_nats::jetstream::stream::Config {
                name: stream,
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age,
                storage: async_nats::jetstream::stream::StorageType::Memory,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: async_nats::jetstream::stream::DiscardPolicy::New,
                num_replicas: 1,
                ..Default::default()
            };
            // Another node may create it at the same moment: its creation error is then
            // followed by finding the bucket.
            let created = js.get_or_create_stream(cfg).await.err();
            js.get_key_value(bucket.clone())
                .await
                .map_err(|e| match created {
                    Some(c) => format!("bucket {bucket}: {c}; {e}"),
                    None => format!("bucket {bucket}: {e}"),
                })
        }
    };
    let [nodes, uidport, ajax, mbox, idem] = BUCKETS;
    Ok(Stores {
        nodes: open(nodes, expiry).await?,
        uidport: open(uidport, uidport_ttl).await?,
        ajax: open(ajax, mailbox.max_age).await?,
        mbox: open(mbox, mailbox.max_age).await?,
        idem: open(idem, IDEM_AGE).await?,
        registered: Arc::default(),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The current value of `key` (`None`: absent or deleted) and the revision to update it
/// with (`None`: create it).
async fn read(store: &Store, key: &str) -> Result<(Option<bytes::Bytes>, Option<u64>), String> {
    match store.entry(key).await {
        Ok(None) => Ok((None, None)),
        Ok(Some(e)) => {
            let v = matches!(e.operation, Operation::Put).then_some(e.value);
            Ok((v, Some(e.revision)))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Writes `value` if `key` is still at `revision`; `false` on a conflict.
async fn write(store: &Store, key: &str, value: Vec<u8>, revision: Option<u64>) -> bool {
    match revision {
        Some(r) => store.update(key, value.into(), r).await.is_ok(),
        None => store.create(key, value.into()).await.is_ok(),
    }
}

/// Runs `step` on `key`'s value until its write wins: `step` returns the new value (`None`:
/// no write) and the result.
async fn cas<R>(
    store: &Store,
    key: &str,
    mut step: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, R),
) -> Result<R, String> {
    for _ in 0..CAS_ATTEMPTS {
        let (value, revision) = read(store, key).await?;
        let (new, r) = step(value.as_deref());
        match new {
            None => return Ok(r),
            Some(v) => {
                if write(store, key, v, revision).await {
                    return Ok(r);
                }
            }
        }
    }
    Err(format!("{key}: too many conflicting writers"))
}

/// A mailbox value: the client's lease (the events its last answer carried, until settled;
/// see `Mailbox`'s "Leased takes") and its waiting events. Stored as a format byte (2), the
/// lease's delivered flag (0/1), its id (u8 length and bytes), its event count (u32 LE), then
/// the lease's events and the waiting ones, each after its u32 LE length.
#[derive(Default)]
struct Mbox {
    lease: String,
    delivered: bool,
    leased: Vec<Vec<u8>>,
    queued: Vec<Vec<u8>>,
}

/// The format byte of [`Mbox`].
const MBOX_FORMAT: u8 = 2;

impl Mbox {
    /// Reads a value (absent, empty or unreadable: an empty mailbox).
    fn parse(value: Option<&[u8]>) -> Mbox {
        let v = value.unwrap_or_default();
        let (Some(&MBOX_FORMAT), Some(&flag), Some(&n)) = (v.first(), v.get(1), v.get(2)) else {
            return Mbox::default();
        };
        let n = usize::from(n);
        let (Some(id), Some(count)) = (v.get(3..3 + n), v.get(3 + n..7 + n)) else {
            return Mbox::default();
        };
        let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
        let mut all = entries(v.get(7 + n..));
        let queued = all.split_off(count.min(all.len()));
        Mbox {
            lease: String::from_utf8_lossy(id).into_owned(),
            delivered: flag == 1,
            leased: all,
            queued,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let id = self.lease.as_bytes();
        let id = &id[..id.len().min(255)];
        let mut out = vec![MBOX_FORMAT, u8::from(self.delivered), id.len() as u8];
        out.extend_from_slice(id);
        let count = u32::try_from(self.leased.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend(join_entries(self.leased.iter().chain(&self.queued)));
        out
    }

    /// Puts the lease's events back in front of the waiting ones.
    fn restore(&mut self) {
        let mut all = std::mem::take(&mut self.leased);
        all.append(&mut self.queued);
        self.queued = all;
        self.lease.clear();
        self.delivered = false;
    }

    /// Drops the lease.
    fn confirm(&mut self) {
        self.leased.clear();
        self.lease.clear();
        self.delivered = false;
    }
}

/// Mailbox entries: each a u32 little-endian length and the bytes.
fn entries(value: Option<&[u8]>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = value.unwrap_or_default();
    while rest.len() >= 4 {
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + n {
            break;
        }
        out.push(rest[4..4 + n].to_vec());
        rest = &rest[4 + n..];
    }
    out
}

fn join_entries<'a>(entries: impl Iterator<Item = &'a Vec<u8>> + Clone) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.clone().map(|e| e.len() + 4).sum());
    for e in entries {
        out.extend_from_slice(&u32::try_from(e.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// An Ajax registration: `client hex` -> expiry (ms since the epoch), as `hex:ms,hex:ms`.
fn clients(value: Option<&[u8]>, now: u64) -> Vec<(String, u64)> {
    let text = std::str::from_utf8(value.unwrap_or_default()).unwrap_or_default();
    text.split(',')
        .filter_map(|p| {
            let (c, t) = p.split_once(':')?;
            let t: u64 = t.parse().ok()?;
            (t > now).then(|| (c.to_owned(), t))
        })
        .collect()
}

fn join_clients(cs: &[(String, u64)]) -> Vec<u8> {
    cs.iter()
        .map(|(c, t)| format!("{c}:{t}"))
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

fn members(value: Option<&[u8]>) -> Vec<String> {
    std::str::from_utf8(value.unwrap_or_default())
        .unwrap_or_default()
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The uidport rule (see the crate docs): `member` joins (`open`) or leaves `uid`'s set;
/// members whose liveness key is gone are removed on the way.
async fn uidport(
    s: &Stores,
    uid_key: &str,
    member: &str,
    open: bool,
) -> Result<UidportDecision, String> {
    for _ in 0..CAS_ATTEMPTS {
        let (value, revision) = read(&s.uidport, uid_key).await?;
        let mut all = Vec::new();
        for m in members(value.as_deref()) {
            let alive = m == member
                || s.nodes
                    .get(m.as_str())
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some();
            all.push((m, alive));
        }
        let (decision, next) = uidport_rule(&all, &member.to_owned(), open);
        let Some(next) = next else {
            return Ok(decision);
        };
        if write(&s.uidport, uid_key, next.join(",").into_bytes(), revision).await {
            return Ok(decision);
        }
    }
    Err(format!("uidport {uid_key}: too many conflicting writers"))
}

fn mbox_key(uid_hex: &str, cid_hex: &str) -> String {
    format!("{uid_hex}_{cid_hex}")
}

/// Appends a run of pushes' entries (in order; each to the registered clients of its uids,
/// every registered client with `None`) to the mailboxes: per uid, one read of its
/// registrations, then per client one compare-and-set adding all the run's entries for it. A
/// client over a bound is forgotten.
async fn append(
    s: &Stores,
    mailbox: &MailboxConfig,
    run: &[(AppendTo<'_>, &[u8])],
) -> Result<(), String> {
    let mut all: Option<Vec<String>> = None;
    let mut per_uid: HashMap<String, Vec<Entry<'_>>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (to, entry) in run {
        let mut only = None;
        let targets: Vec<String> = match (to, &all) {
            (AppendTo::Uids(Some(uids)), _) => uids.iter().filter_map(uid_hex).collect(),
            (AppendTo::Client(uid, client), _) => {
                only = Some(cid_hex(client));
                uid_hex(uid).into_iter().collect()
            }
            (AppendTo::Uids(None), Some(all)) => all.clone(),
            (AppendTo::Uids(None), None) => {
                let listed = match s.registered_uids() {
                    Some(watched) => watched,
                    // Not watching (yet): list the keys.
                    None => match s.ajax.keys().await {
                        Ok(keys) => keys.filter_map(|k| async move { k.ok() }).collect().await,
                        Err(e) => return Err(e.to_string()),
                    },
                };
                all = Some(listed.clone());
                listed
            }
        };
        for u in targets {
            let list = per_uid.entry(u.clone()).or_default();
            if list.is_empty() {
                order.push(u);
            }
            list.push((entry, only.clone()));
        }
    }
    let now = now_ms();
    // Different uids' appends run concurrently (different keys).
    let results: Vec<Result<(), String>> = futures_util::stream::iter(order)
        .map(|u| {
            let entries = per_uid.get(&u).cloned().unwrap_or_default();
            async move { append_uid(s, mailbox, u, &entries, now).await }
        })
        .buffer_unordered(APPEND_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Most jobs (frames and appends) the NATS publishing task takes at once: their appends are
/// made together.
const APPEND_RUN: usize = 64;

/// Most uids whose mailboxes one push appends to at once (NATS).
const APPEND_CONCURRENCY: usize = 64;

/// An encoded event to append, and the one client it is for (hex; `None`: every client).
type Entry<'a> = (&'a [u8], Option<String>);

/// What one queued append reaches.
enum AppendTo<'a> {
    /// The Ajax clients of these uids (`None`: of every registered uid).
    Uids(Option<&'a [Uid]>),
    /// One Ajax client of a uid (`send_to_client`).
    Client(&'a Uid, &'a ClientId),
}

/// Appends `entries`, in order, to the mailboxes of the registered clients of the uid `u`
/// (an entry with a client goes to that client only), one compare-and-set per client.
async fn append_uid(
    s: &Stores,
    mailbox: &MailboxConfig,
    u: String,
    entries: &[Entry<'_>],
    now: u64,
) -> Result<(), String> {
    {
        let (value, _) = read(&s.ajax, &u).await?;
        if value.is_none() {
            // Gone (aged out): out of the watched view too.
            s.note_registered(&u, false);
        }
        for (c, _) in clients(value.as_deref(), now) {
            let mine: Vec<&[u8]> = entries
                .iter()
                .filter(|(_, only)| only.as_ref().is_none_or(|o| *o == c))
                .map(|(e, _)| *e)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let over = cas(&s.mbox, &mbox_key(&u, &c), |v| {
                let mut m = Mbox::parse(v);
                m.queued.extend(mine.iter().map(|e| e.to_vec()));
                let bytes: usize = m.queued.iter().map(Vec::len).sum();
                if m.queued.len() > mailbox.max_events || bytes > mailbox.max_bytes {
                    (Some(Vec::new()), true)
                } else {
                    (Some(m.encode()), false)
                }
            })
            .await?;
            if over {
                cas(&s.ajax, &u, |v| {
                    let mut cs = clients(v, now);
                    cs.retain(|(x, _)| *x != c);
                    (Some(join_clients(&cs)), ())
                })
                .await?;
            }
        }
    }
    Ok(())
}

/// Runs the engine operations in order, and renews this node's uidport entries.
async fn run_ops(
    buckets: Arc<Buckets>,
    shared: Arc<Shared>,
    mut ops: OpQueue,
    (uidport_ttl, op_timeout): (Duration, Duration),
) {
    let me = format!("{:016x}", shared.origin);
    let mut renew = tokio::time::interval(uidport_ttl / 4);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let op = tokio::select! {
            op = ops.recv() => match op { Some(op) => op, None => return },
            _ = renew.tick() => {
                // The same value written again (if this node is still a member) restarts the
                // entry's age.
                if let Some(s) = buckets.get() {
                    for uid in shared.local_uids() {
                        let Some(u) = uid_hex(&uid) else { continue };
                        let r = cas(&s.uidport, &u, |v| {
                            let ms = members(v);
                            let v = ms.contains(&me).then(|| ms.join(",").into_bytes());
                            (v, ())
                        })
                        .await;
                        if let Err(e) = r {
                            shared.record_error(format!("uidport renewal: {e}"));
                        }
                    }
                }
                continue;
            }
        };
        let op = match op {
            Op::SequenceNow { done } => {
                let now = tokio::time::timeout(op_timeout, seq_now(&buckets, &shared)).await;
                let _ = done.send(now.ok().flatten());
                shared.count_op();
                continue;
            }
            op => op,
        };
        let stores = buckets.get();
        let done = tokio::time::timeout(op_timeout, run_op(stores.as_ref(), &me, &shared, op))
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()));
        if let Err(e) = done {
            shared.record_error(format!("operation: {e}"));
            buckets.repair(&shared).await;
        }
        shared.count_op();
    }
}

/// The numbering now: the numbering stream's epoch (its creation time, as its consumer reads
/// it) and last sequence, read fresh from JetStream; `None` when it cannot be read.
async fn seq_now(buckets: &Buckets, shared: &Shared) -> Option<(u64, u64)> {
    let js = async_nats::jetstream::new(buckets.client.clone());
    let name = seq_stream_name(&bucket_prefix(&buckets.cluster));
    let mut stream = match js.get_stream(name).await {
        Ok(s) => s,
        Err(e) => {
            shared.record_error(format!("numbering read: {e}"));
            return None;
        }
    };
    match stream.info().await {
        Ok(info) => {
            let created = info.created.unix_timestamp_nanos();
            let epoch = u64::try_from(created).unwrap_or_default() | 1;
            Some((epoch, info.state.last_sequence))
        }
        Err(e) => {
            shared.record_error(format!("numbering read: {e}"));
            None
        }
    }
}

/// Runs one operation. Without stores (no JetStream), or when an operation fails, it answers
/// what a single node would: uidport events fire, mailboxes are empty.
async fn run_op(stores: Option<&Stores>, me: &str, shared: &Shared, op: Op) -> Result<(), String> {
    match op {
        Op::Uidport {
            uid,
            member,
            open,
            done,
        } => {
            let member = if member == shared.origin {
                me.to_owned()
            } else {
                format!("{member:016x}")
            };
            let decided = match (stores, uid_hex(&uid)) {
                (Some(s), Some(u)) => uidport(s, &u, &member, open).await,
                _ => Ok(UidportDecision::new(false, done.is_some())),
            };
            let (decision, err) = match decided {
                Ok(d) => (d, None),
                Err(e) => (UidportDecision::new(false, done.is_some()), Some(e)),
            };
            match done {
                Some(d) => {
                    let _ = d.send(decision);
                }
                None if decision.fire => shared.deliver(BackplaneMsg::UidportClose { uid }),
                None => {}
            }
            err.map_or(Ok(()), Err)
        }
        Op::Register {
            uid,
            cid,
            ttl,
            done,
        } => {
            let r = match (stores, uid_hex(&uid)) {
                (Some(s), Some(u)) => {
                    let c = cid_hex(&cid);
                    let now = now_ms();
                    let exp = now.saturating_add(ttl.as_millis() as u64);
                    let r = cas(&s.ajax, &u, |v| {
                        let mut cs = clients(v, now);
                        cs.retain(|(x, _)| *x != c);
                        cs.push((c.clone(), exp));
                        (Some(join_clients(&cs)), ())
                    })
                    .await;
                    // In this node's view at once (the others' through the watch).
                    s.note_registered(&u, true);
                    r
                }
                _ => Ok(()),
            };
            let _ = done.send(());
            r
        }
        Op::Known { uid, cid, done } => {
            let r = match (stores, uid_hex(&uid)) {
                (Some(s), Some(u)) => read(&s.ajax, &u).await.map(|(v, _)| {
                    let c = cid_hex(&cid);
                    clients(v.as_deref(), now_ms()).iter().any(|(x, _)| *x == c)
                }),
                _ => Ok(true),
            };
            let _ = done.send(*r.as_ref().unwrap_or(&true));
            r.map(|_| ())
        }
        Op::Take {
            uid,
            cid,
            lease,
            max_events,
            max_bytes,
            done,
        } => {
            let r = match (stores, uid_hex(&uid)) {
                (Some(s), Some(u)) => {
                    cas(&s.mbox, &mbox_key(&u, &cid_hex(&cid)), |v| {
                        let mut m = Mbox::parse(v);
                        if m.queued.is_empty() {
                            return (None, Vec::new());
                        }
                        let n = mailbox_take_count(
                            m.queued.iter().map(Vec::len),
                            max_events,
                            max_bytes,
                        );
                        let rest = m.queued.split_off(n);
                        let taken = std::mem::replace(&mut m.queued, rest);
                        // A lease still there grows (and takes the new id).
                        m.leased.extend(taken.iter().cloned());
                        m.lease.clone_from(&lease);
                        m.delivered = false;
                        (Some(m.encode()), taken)
                    })
                    .await
                }
                _ => Ok(Vec::new()),
            };
            let taken = r.as_deref().unwrap_or_default();
            let _ = done.send(shared.decode_entries(taken));
            r.map(|_| ())
        }
        Op::IdemClaim {
            uid, cid, id, done, ..
        } => {
            let r = match (stores, idem_key(&uid, &cid, &id)) {
                (Some(s), Some(k)) => idem_claim(s, &k).await.map(Some),
                _ => Ok(None),
            };
            let _ = done.send(r.clone().ok().flatten());
            r.map(|_| ())
        }
        Op::IdemFinish {
            uid,
            cid,
            id,
            outcome,
            done,
            ..
        } => {
            let r = match (stores, idem_key(&uid, &cid, &id)) {
                (Some(s), Some(k)) => {
                    let mut value = Vec::with_capacity(outcome.len() + 1);
                    value.push(b'd');
                    value.extend_from_slice(&outcome);
                    s.idem
                        .put(k, value.into())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                _ => Ok(()),
            };
            let _ = done.send(());
            r
        }
        Op::IdemForget { uid, cid, id, done } => {
            let r = match (stores, idem_key(&uid, &cid, &id)) {
                (Some(s), Some(k)) => match read(&s.idem, &k).await {
                    Ok((Some(v), _)) if v.as_ref() == b"r" => {
                        s.idem.delete(&k).await.map_err(|e| e.to_string())
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                },
                _ => Ok(()),
            };
            let _ = done.send(());
            r
        }
        // Answered by `run_ops` (it needs the JetStream context, not the stores).
        Op::SequenceNow { done } => {
            let _ = done.send(None);
            Ok(())
        }
        Op::Fill {
            uid,
            cid,
            entries,
            done,
        } => {
            let r = match (stores, uid_hex(&uid)) {
                (Some(s), Some(u)) => fill(s, &shared.mailbox, &u, &cid_hex(&cid), &entries).await,
                _ => Ok(false),
            };
            let _ = done.send(*r.as_ref().unwrap_or(&false));
            r.map(|_| ())
        }
        Op::PutBack {
            uid,
            cid,
            lease,
            done,
        } => {
            update_mbox(stores, &uid, &cid, done, |m| {
                let mine = m.lease == lease && !m.leased.is_empty();
                if mine {
                    m.restore();
                }
                mine
            })
            .await
        }
        Op::Settle {
            uid,
            cid,
            handshake,
            done,
        } => {
            update_mbox(stores, &uid, &cid, done, |m| {
                if m.leased.is_empty() {
                    return false;
                }
                if handshake && !m.delivered {
                    m.restore();
                } else {
                    m.confirm();
                }
                true
            })
            .await
        }
        Op::Delivered {
            uid,
            cid,
            lease,
            done,
        } => {
            update_mbox(stores, &uid, &cid, done, |m| {
                let mark = m.lease == lease && !m.leased.is_empty() && !m.delivered;
                m.delivered |= mark;
                mark
            })
            .await
        }
    }
}

/// Puts numbered `entries` in front of the waiting events of client `c` (hex) of uid `u`
/// (hex), behind its lease, if the client is registered and its mailbox stays within `bounds`;
/// whether they were stored (see `Mailbox::fill`).
async fn fill(
    s: &Stores,
    bounds: &MailboxConfig,
    u: &str,
    c: &str,
    entries: &[Vec<u8>],
) -> Result<bool, String> {
    let (registration, _) = read(&s.ajax, u).await?;
    let registered = clients(registration.as_deref(), now_ms())
        .iter()
        .any(|(x, _)| x == c);
    if !registered {
        return Ok(false);
    }
    cas(&s.mbox, &mbox_key(u, c), |v| {
        let mut m = Mbox::parse(v);
        let count = m.queued.len() + entries.len();
        let bytes: usize = m.queued.iter().chain(entries).map(Vec::len).sum();
        if count > bounds.max_events || bytes > bounds.max_bytes {
            return (None, false);
        }
        let mut queued = entries.to_vec();
        queued.append(&mut m.queued);
        m.queued = queued;
        (Some(m.encode()), true)
    })
    .await
}

/// Changes `cid`'s mailbox with `f` (compare-and-set), which returns whether it changed it
/// (`false`: nothing is written), then answers `done`. Without stores: nothing.
async fn update_mbox(
    stores: Option<&Stores>,
    uid: &Uid,
    cid: &sente_proto::ClientId,
    done: tokio::sync::oneshot::Sender<()>,
    f: impl Fn(&mut Mbox) -> bool,
) -> Result<(), String> {
    let r = match (stores, uid_hex(uid)) {
        (Some(s), Some(u)) => {
            cas(&s.mbox, &mbox_key(&u, &cid_hex(cid)), |v| {
                let mut m = Mbox::parse(v);
                (f(&mut m).then(|| m.encode()), ())
            })
            .await
        }
        _ => Ok(()),
    };
    let _ = done.send(());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes starting together race to make the numbering stream; NATS answers some losers'
    /// create with an error although the stream is there. Every node still reads where its
    /// first consumer starts (before, a loser's consumer started with new pushes only, and
    /// missed the ones numbered before it was made). Needs NATS on 127.0.0.1:4222 (skipped
    /// when unreachable).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_starting_together_all_read_the_numbering_start() {
        const NODES: usize = 4;
        let Some(admin) = local_nats().await else {
            return;
        };
        let url = LOCAL_NATS;
        let mut clients = Vec::new();
        for _ in 0..NODES {
            clients.push(async_nats::connect(url).await.expect("NATS"));
        }
        let bounds = NatsConfig::new(url).seq_stream;
        for round in 0..10 {
            let prefix = format!("test-seq-race-{}-{round}", uuid::Uuid::new_v4().simple());
            let subject = format!("{prefix}.seq");
            let barrier = Arc::new(tokio::sync::Barrier::new(NODES));
            let reads = clients.iter().map(|client| {
                let (client, barrier) = (client.clone(), barrier.clone());
                let (prefix, subject) = (prefix.clone(), subject.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    seq_stream_last(&client, &prefix, &subject, bounds).await
                })
            });
            let reads: Vec<Result<u64, String>> = futures_util::future::join_all(reads)
                .await
                .into_iter()
                .map(|r| r.expect("task"))
                .collect();
            let _ = async_nats::jetstream::new(admin.clone())
                .delete_stream(seq_stream_name(&prefix))
                .await;
            assert!(
                reads.iter().all(|r| r == &Ok(0)),
                "round {round}: every node reads the new stream's last number (0): {reads:?}"
            );
        }
    }

    const LOCAL_NATS: &str = "nats://127.0.0.1:4222";

    /// A client of the machine's NATS; `None`, with a message saying the test is skipped,
    /// when it is unreachable.
    async fn local_nats() -> Option<async_nats::Client> {
        let connect = async_nats::connect(LOCAL_NATS);
        let client = tokio::time::timeout(Duration::from_secs(2), connect).await;
        if let Ok(Ok(client)) = client {
            return Some(client);
        }
        eprintln!("SKIPPED: NATS is not reachable on 127.0.0.1:4222");
        None
    }

    /// `remove_cluster` deletes the five buckets and the numbering stream a node made, and
    /// skips what is missing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remove_cluster_deletes_what_a_cluster_keeps() {
        let Some(client) = local_nats().await else {
            return;
        };
        let url = LOCAL_NATS;
        let cluster = format!("test-remove-{}", uuid::Uuid::new_v4().simple());
        let js = async_nats::jetstream::new(client.clone());
        let names: Vec<String> = BUCKETS
            .iter()
            .map(|b| bucket_stream_name(&cluster, b))
            .chain([seq_stream_name(&cluster)])
            .collect();
        let exists = |name: String| {
            let js = js.clone();
            async move { js.get_stream(name).await.is_ok() }
        };
        let node = NatsBackplane::start(NatsConfig::new(url).cluster(&cluster)).unwrap();
        assert!(node.wait_connected(Duration::from_secs(5)).await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for name in &names {
            while !exists(name.clone()).await {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} was never made"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        drop(node);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(remove_cluster(&client, &cluster).await.unwrap(), 6);
        for name in names {
            assert!(!exists(name.clone()).await, "{name} is left");
        }
        assert_eq!(remove_cluster(&client, &cluster).await.unwrap(), 0);
    }
}
