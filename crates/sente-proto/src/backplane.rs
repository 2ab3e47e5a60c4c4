//! The seam for running several server nodes: every push, flush, close and presence change a
//! server makes goes through a [`Backplane`], which delivers it to every node (itself included),
//! and each node applies it to its own connections. One node uses [`LocalBackplane`]; cluster
//! backplanes (Redis, NATS) implement the same trait and depend on this crate only.
//!
//! [`codec`] is their versioned wire encoding, and [`cluster`] the sans-IO part they share
//! (own-frame filtering, heartbeats, expiry of silent nodes, presence snapshots).

pub mod cluster;
pub mod codec;

use crate::event::{Event, Uid};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Identifies one server node in a cluster (chosen at random when a server starts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

/// A message between nodes: what the application asked a server for, or a node's presence.
#[derive(Clone, Debug)]
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
