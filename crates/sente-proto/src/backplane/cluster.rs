//! The sans-IO half of a cluster backplane: encodes what this node publishes, decodes what
//! arrives, filters this node's own frames, and keeps the cluster's presence with heartbeats,
//! expiry and snapshots. `sente-redis` and `sente-nats` are thin IO shells around it (one
//! pub/sub channel, a publish queue, a timer), so both behave the same.
//!
//! # Presence protocol
//!
//! - Each node publishes its `Presence` changes as they happen, and a [`Frame::Heartbeat`]
//!   every [`ClusterConfig::heartbeat`] with the count and hash of its present uids.
//! - A receiver keeps, per origin (one backplane instance = one node), the uids that origin
//!   says are present and when it last heard from it (any frame counts).
//! - A heartbeat whose count or hash differs from the receiver's view (a node that joined late,
//!   frames lost during an outage or dropped by a full queue) makes the receiver publish a
//!   [`Frame::SyncRequest`] (at most one per origin per two heartbeats); the origin answers with
//!   a [`Frame::Snapshot`] (at most one per heartbeat interval, split into parts of
//!   [`ClusterConfig::snapshot_part`] entries, published back to back). Receivers replace their
//!   view with it and deliver the difference as `Presence` messages.
//! - An origin silent for [`ClusterConfig::expiry`] is expired: a `Presence { node, uid,
//!   ws: false, ajax: false }` is delivered for each of its uids, so they leave
//!   `connected_uids` (unless another node has them). If it comes back (a partition, not a
//!   crash), its next heartbeat mismatches the now empty view and a snapshot restores it; the
//!   server's `PresenceView` is keyed by node, so nothing is counted twice.

use super::codec::{self, CodecError, Decoded, Frame, presence_hash};
use super::{BackplaneMsg, NodeId};
use crate::event::Uid;
use crate::limits::Limits;
use std::collections::HashMap;
use std::time::Duration;

/// Timing and sizes of the presence protocol.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// How often a node publishes a heartbeat. Default 1 s.
    pub heartbeat: Duration,
    /// How long a silent node keeps its uids. Default 5 s.
    pub expiry: Duration,
    /// Entries per snapshot part. Default 1 000.
    pub snapshot_part: usize,
    /// Limits for decoding events and uids. Default: [`Limits::default`] with a
    /// 16 MiB message limit.
    pub limits: Limits,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            heartbeat: Duration::from_secs(1),
            expiry: Duration::from_secs(5),
            snapshot_part: 1000,
            limits: Limits::default().max_message_bytes(16 << 20),
        }
    }
}

impl ClusterConfig {
    /// Sets [`ClusterConfig::heartbeat`].
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.heartbeat = d;
        self
    }

    /// Sets [`ClusterConfig::expiry`].
    pub fn expiry(mut self, d: Duration) -> Self {
        self.expiry = d;
        self
    }

    /// Sets [`ClusterConfig::snapshot_part`] (at least 1).
    pub fn snapshot_part(mut self, n: usize) -> Self {
        self.snapshot_part = n.max(1);
        self
    }

    /// Sets [`ClusterConfig::limits`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// What the IO shell must do after a call: deliver messages to the local sink (in order, after
/// letting go of the lock around the [`Cluster`]) and publish payloads (in order).
#[derive(Debug, Default)]
pub struct Output {
    /// Messages for this node's sink.
    pub deliver: Vec<BackplaneMsg>,
    /// Payloads to publish.
    pub publish: Vec<Vec<u8>>,
    /// Origins expired by this call: `(origin, node, uids)`, for logging.
    pub expired: Vec<(u64, Option<NodeId>, usize)>,
    /// The uids each origin expired by this call had (for the backplane's cluster-wide
    /// uidport decisions: a survivor removes the dead node from each uid).
    pub expired_uids: Vec<(u64, Vec<Uid>)>,
    /// A payload that could not be decoded (for counting and logging).
    pub error: Option<CodecError>,
    /// A payload of an unknown kind was skipped.
    pub skipped: Option<u8>,
    /// [`Output::deliver`] is this node's own numbered message come back: the oldest of those
    /// it published that had not come back yet (they come back in the order they were
    /// numbered).
    pub own_sequenced: bool,
    /// [`Output::deliver`] is another node's push published unnumbered after its numbered push
    /// `(epoch, seq)` ([`Frame::After`]): apply it after that one.
    pub after: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Present {
    uids: HashMap<Uid, (bool, bool)>,
    hash: u64,
}

impl Present {
    /// Sets `uid`'s flags; returns whether anything changed.
    fn set(&mut self, uid: &Uid, ws: bool, ajax: bool) -> bool {
        let old = if ws || ajax {
            self.uids.insert(uid.clone(), (ws, ajax))
        } else {
            self.uids.remove(uid)
        };
        if old == Some((ws, ajax)) {
            return false;
        }
        if let Some((ow, oa)) = old {
            self.hash = self.hash.wrapping_sub(presence_hash(uid, ow, oa));
        }
        if ws || ajax {
            self.hash = self.hash.wrapping_add(presence_hash(uid, ws, ajax));
        }
        true
    }

    fn matches(&self, count: u64, hash: u64) -> bool {
        self.uids.len() as u64 == count && self.hash == hash
    }
}

#[derive(Debug)]
struct Peer {
    node: Option<NodeId>,
    last_seen: u64,
    present: Present,
    last_sync_request: Option<u64>,
    /// A snapshot being received: node, next part, entries so far.
    pending: Option<Pending>,
}

/// A snapshot being received: node, next part, entries so far.
type Pending = (NodeId, u32, Vec<(Uid, bool, bool)>);

/// One node's view of the cluster (see the module docs). Time is milliseconds on any
/// monotonic clock the shell chooses.
#[derive(Debug)]
pub struct Cluster {
    origin: u64,
    cfg: ClusterConfig,
    node: Option<NodeId>,
    local: Present,
    peers: HashMap<u64, Peer>,
    last_heartbeat: Option<u64>,
    last_snapshot: Option<u64>,
}

impl Cluster {
    /// A view for the backplane instance `origin` (a random id, unique in the cluster).
    pub fn new(origin: u64, cfg: ClusterConfig) -> Self {
        Cluster {
            origin,
            cfg,
            node: None,
            local: Present::default(),
            peers: HashMap::new(),
            last_heartbeat: None,
            last_snapshot: None,
        }
    }

    /// This instance's origin id.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// This node's present uids (those it published as present).
    pub fn local_uids(&self) -> impl Iterator<Item = &Uid> {
        self.local.uids.keys()
    }

    /// How many other nodes are currently known (heard from within the expiry).
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Encodes a message this node publishes. For this node's own `Presence`, records it
    /// (heartbeats and snapshots report it). Delivering non-presence messages to this node's
    /// own sink is the shell's job (its own frames are filtered out on the way back).
    pub fn publish(&mut self, msg: &BackplaneMsg) -> Result<Vec<u8>, CodecError> {
        if let BackplaneMsg::Presence {
            node,
            uid,
            ws,
            ajax,
        } = msg
        {
            self.node = Some(*node);
            self.local.set(uid, *ws, *ajax);
        }
        codec::encode_msg(self.origin, msg)
    }

    /// Handles a payload received from the backplane at time `now`.
    pub fn receive(&mut self, payload: &[u8], now: u64) -> Output {
        let mut out = Output::default();
        let (origin, frame) = match codec::decode(payload, &self.cfg.limits) {
            Ok(Decoded::Frame { origin, frame }) => (origin, frame),
            Ok(Decoded::Skipped { origin, kind }) => {
                if origin != self.origin {
                    self.seen(origin, now);
                }
                out.skipped = Some(kind);
                return out;
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        if origin == self.origin {
            // A sequenced message is applied when it comes back numbered, on its own node too
            // (so every node applies the same order); everything else of ours was applied.
            if let Frame::Msg(msg @ BackplaneMsg::Sequenced { .. }) = frame {
                out.deliver.push(msg);
                out.own_sequenced = true;
            }
            return out;
        }
        match frame {
            Frame::Msg(msg) => {
                let peer = self.seen(origin, now);
                if let BackplaneMsg::Presence {
                    node,
                    uid,
                    ws,
                    ajax,
                } = &msg
                {
                    peer.node = Some(*node);
                    peer.present.set(uid, *ws, *ajax);
                }
                out.deliver.push(msg);
            }
            Frame::After { epoch, seq, msg } => {
                self.seen(origin, now);
                out.after = Some((epoch, seq));
                out.deliver.push(msg);
            }
            Frame::Heartbeat { count, hash } => {
                let every = self.cfg.heartbeat.as_millis() as u64;
                let peer = self.seen(origin, now);
                if !peer.present.matches(count, hash)
                    && peer
                        .last_sync_request
                        .is_none_or(|t| now.saturating_sub(t) >= 2 * every)
                {
                    peer.last_sync_request = Some(now);
                    self.push_frame(&mut out, &Frame::SyncRequest { target: origin });
                }
            }
            Frame::SyncRequest { target } => {
                self.seen(origin, now);
                if target == self.origin {
                    self.snapshot(now, &mut out);
                }
            }
            Frame::Snapshot {
                node,
                part,
                parts,
                entries,
            } => {
                let peer = self.seen(origin, now);
                let mut pending = if part == 0 {
                    Some((node, 0, Vec::new()))
                } else {
                    peer.pending.take()
                };
                match &mut pending {
                    Some((n, next, acc)) if *n == node && *next == part => {
                        acc.extend(entries);
                        *next += 1;
                    }
                    _ => pending = None,
                }
                match pending {
                    Some((node, next, acc)) if next >= parts => {
                        apply_snapshot(peer, node, acc, &mut out.deliver);
                    }
                    p => peer.pending = p,
                }
            }
        }
        out
    }

    /// Time passes: publishes a heartbeat when one is due and expires silent nodes. Call it at
    /// least every heartbeat interval.
    pub fn tick(&mut self, now: u64) -> Output {
        let mut out = Output::default();
        let every = self.cfg.heartbeat.as_millis() as u64;
        if self
            .last_heartbeat
            .is_none_or(|t| now.saturating_sub(t) >= every)
        {
            self.last_heartbeat = Some(now);
            let hb = Frame::Heartbeat {
                count: self.local.uids.len() as u64,
                hash: self.local.hash,
            };
            self.push_frame(&mut out, &hb);
        }
        let expiry = self.cfg.expiry.as_millis() as u64;
        let dead: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.last_seen) > expiry)
            .map(|(o, _)| *o)
            .collect();
        for origin in dead {
            if let Some(peer) = self.peers.remove(&origin) {
                out.expired
                    .push((origin, peer.node, peer.present.uids.len()));
                out.expired_uids
                    .push((origin, peer.present.uids.keys().cloned().collect()));
                if let Some(node) = peer.node {
                    for (uid, _) in peer.present.uids {
                        out.deliver.push(BackplaneMsg::Presence {
                            node,
                            uid,
                            ws: false,
                            ajax: false,
                        });
                    }
                }
            }
        }
        out
    }

    fn seen(&mut self, origin: u64, now: u64) -> &mut Peer {
        let peer = self.peers.entry(origin).or_insert_with(|| Peer {
            node: None,
            last_seen: now,
            present: Present::default(),
            last_sync_request: None,
            pending: None,
        });
        peer.last_seen = now;
        peer
    }

    fn push_frame(&self, out: &mut Output, frame: &Frame) {
        match codec::encode(self.origin, frame) {
            Ok(b) => out.publish.push(b),
            Err(e) => out.error = Some(e),
        }
    }

    fn snapshot(&mut self, now: u64, out: &mut Output) {
        let every = self.cfg.heartbeat.as_millis() as u64;
        if self
            .last_snapshot
            .is_some_and(|t| now.saturating_sub(t) < every)
        {
            return;
        }
        // A node that never had a uid present has no node id yet, and nothing to report.
        let Some(node) = self.node else { return };
        self.last_snapshot = Some(now);
        let entries: Vec<(Uid, bool, bool)> = self
            .local
            .uids
            .iter()
            .map(|(u, (w, a))| (u.clone(), *w, *a))
            .collect();
        let chunks: Vec<&[(Uid, bool, bool)]> = if entries.is_empty() {
            vec![&[]]
        } else {
            entries.chunks(self.cfg.snapshot_part.max(1)).collect()
        };
        let parts = chunks.len() as u32;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let f = Frame::Snapshot {
                node,
                part: i as u32,
                parts,
                entries: chunk.to_vec(),
            };
            self.push_frame(out, &f);
        }
    }
}

fn apply_snapshot(
    peer: &mut Peer,
    node: NodeId,
    entries: Vec<(Uid, bool, bool)>,
    deliver: &mut Vec<BackplaneMsg>,
) {
    if let Some(old) = peer.node.filter(|n| *n != node) {
        for uid in peer.present.uids.keys() {
            deliver.push(BackplaneMsg::Presence {
                node: old,
                uid: uid.clone(),
                ws: false,
                ajax: false,
            });
        }
        peer.present = Present::default();
    }
    peer.node = Some(node);
    let mut next = Present::default();
    for (uid, ws, ajax) in entries {
        next.set(&uid, ws, ajax);
    }
    for uid in peer.present.uids.keys() {
        if !next.uids.contains_key(uid) {
            deliver.push(BackplaneMsg::Presence {
                node,
                uid: uid.clone(),
                ws: false,
                ajax: false,
            });
        }
    }
    for (uid, flags) in &next.uids {
        if peer.present.uids.get(uid) != Some(flags) {
            deliver.push(BackplaneMsg::Presence {
                node,
                uid: uid.clone(),
                ws: flags.0,
                ajax: flags.1,
            });
        }
    }
    peer.present = next;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(node: u64, uid: &str, ws: bool) -> BackplaneMsg {
        BackplaneMsg::Presence {
            node: NodeId(node),
            uid: Uid::from(uid),
            ws,
            ajax: false,
        }
    }

    /// Passes every payload of `out` to `to`, returning what `to` delivered and published.
    fn relay(out: &Output, to: &mut Cluster, now: u64) -> Output {
        let mut all = Output::default();
        for p in &out.publish {
            let o = to.receive(p, now);
            all.deliver.extend(o.deliver);
            all.publish.extend(o.publish);
        }
        all
    }

    fn cfg() -> ClusterConfig {
        ClusterConfig::default()
            .heartbeat(Duration::from_millis(100))
            .expiry(Duration::from_millis(500))
            .snapshot_part(2)
    }

    #[test]
    fn own_frames_are_not_delivered() {
        let mut a = Cluster::new(1, cfg());
        let p = a.publish(&presence(10, "u", true)).unwrap();
        assert!(a.receive(&p, 0).deliver.is_empty());
    }

    #[test]
    fn late_joiner_syncs_and_silent_node_expires() {
        let mut a = Cluster::new(1, cfg());
        let mut b = Cluster::new(2, cfg());
        for u in ["u1", "u2", "u3"] {
            a.publish(&presence(10, u, true)).unwrap();
        }
        // b joined after a's presence went out: a's heartbeat mismatches b's empty view.
        let hb = a.tick(0);
        let req = relay(&hb, &mut b, 0);
        assert_eq!(req.publish.len(), 1, "a sync request");
        let snap = relay(&req, &mut a, 0);
        assert_eq!(snap.publish.len(), 2, "3 entries in parts of 2");
        let got = relay(&snap, &mut b, 0);
        assert_eq!(got.deliver.len(), 3);
        // Now in sync: no new request.
        let hb = a.tick(100);
        assert!(relay(&hb, &mut b, 100).publish.is_empty());
        // a goes silent: expired after 500 ms.
        assert!(b.tick(500).deliver.is_empty());
        let out = b.tick(601);
        assert_eq!(out.expired.len(), 1);
        assert_eq!(out.deliver.len(), 3);
        assert!(out.deliver.iter().all(|m| matches!(
            m,
            BackplaneMsg::Presence {
                node: NodeId(10),
                ws: false,
                ajax: false,
                ..
            }
        )));
        // a comes back: resynced.
        let hb = a.tick(700);
        let req = relay(&hb, &mut b, 700);
        let snap = relay(&req, &mut a, 700);
        assert_eq!(relay(&snap, &mut b, 700).deliver.len(), 3);
    }

    #[test]
    fn snapshot_delivers_only_differences() {
        let mut a = Cluster::new(1, cfg());
        let mut b = Cluster::new(2, cfg());
        let p1 = a.publish(&presence(10, "u1", true)).unwrap();
        b.receive(&p1, 0);
        // Lost: u1 leaves, u2 arrives.
        a.publish(&presence(10, "u1", false)).unwrap();
        a.publish(&presence(10, "u2", true)).unwrap();
        let req = relay(&a.tick(0), &mut b, 0);
        let snap = relay(&req, &mut a, 0);
        let got = relay(&snap, &mut b, 0);
        let mut d: Vec<String> = got.deliver.iter().map(|m| format!("{m:?}")).collect();
        d.sort();
        assert_eq!(d.len(), 2);
        assert!(d[0].contains("\"u1\"") && d[0].contains("ws: false"));
        assert!(d[1].contains("\"u2\"") && d[1].contains("ws: true"));
    }
}
