//! The seam for running several server nodes: pushes and closes go through a [`Backplane`],
//! which delivers them to every node's connections. One node uses [`LocalBackplane`].

use sente_proto::{Event, Uid};
use std::sync::{Arc, OnceLock};

/// A message between nodes: what `Server::send` / `close_uid` asked for.
#[derive(Clone, Debug)]
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
    /// Push `event` to every client of each of `uids` (`Server::send_many`, `broadcast`): one
    /// message for all of them, applied like a `Push` per uid, in order.
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
    /// Close every connection of `uid`.
    CloseUid {
        /// The uid.
        uid: Uid,
    },
}

/// Receives the messages a backplane delivers to this node.
pub type BackplaneSink = Arc<dyn Fn(BackplaneMsg) + Send + Sync>;

/// Fan-out between server nodes. `publish` must deliver every message to the sink of every
/// subscribed node (this one included), in publish order per uid.
pub trait Backplane: Send + Sync + 'static {
    /// Publishes a message to all nodes.
    fn publish(&self, msg: BackplaneMsg);
    /// Registers this node's sink.
    fn subscribe(&self, sink: BackplaneSink);
}

/// The in-memory backplane of a single node: `publish` calls the sink directly.
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
        LocalBackplane {
            sink: OnceLock::new(),
        }
    }
}

impl Backplane for LocalBackplane {
    fn publish(&self, msg: BackplaneMsg) {
        if let Some(sink) = self.sink.get() {
            sink(msg);
        }
    }

    fn subscribe(&self, sink: BackplaneSink) {
        let _ = self.sink.set(sink);
    }
}
