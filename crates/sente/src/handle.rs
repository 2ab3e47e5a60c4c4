//! [`ServerHandle`]: what the application does to clients (Sente's `send-fn` and
//! `connected-uids`): push to users, close them, watch who is connected, shut down. Every push
//! and close goes through the backplane, so it reaches the clients on every node.

use crate::meters::RejectedRequest;
use crate::registry::{ConnectedUids, Registry, Stats};
use sente_proto::backplane::BackplaneMsg;
use sente_proto::server::message::{self, Push};
use sente_proto::server::{SendError, ServerLimits};
use sente_proto::{Event, Uid};
use std::sync::{Arc, Weak};
use tokio::sync::watch;

/// Pushes to clients and watches them: a cheap, clonable handle. A [`Server`](crate::Server)
/// derefs to it, and every [`EventMsg`](crate::EventMsg) carries one
/// ([`EventMsg::server`](crate::EventMsg::server)), so handlers need not capture the server.
///
/// A handle keeps the connection registry alive, not the handlers: a handler that captures a
/// `ServerHandle` makes no reference cycle.
#[derive(Clone)]
pub struct ServerHandle {
    registry: Arc<Registry>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").finish_non_exhaustive()
    }
}

/// A [`ServerHandle`] that does not keep the server alive ([`ServerHandle::downgrade`]).
#[derive(Clone, Debug)]
pub struct WeakServerHandle {
    registry: Weak<Registry>,
}

impl WeakServerHandle {
    /// The handle, if the server is still alive.
    pub fn upgrade(&self) -> Option<ServerHandle> {
        self.registry
            .upgrade()
            .map(|registry| ServerHandle { registry })
    }
}

impl ServerHandle {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        ServerHandle { registry }
    }

    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    fn publish(&self, msg: BackplaneMsg) {
        self.registry.backplane().publish(msg);
    }

    fn check(&self, event: &Event) -> Result<Push, SendError> {
        message::push(event, &self.registry.limits().message)
    }

    fn push(&self, uid: &Uid, event: Event, flush: bool) -> Result<(), SendError> {
        match self.check(&event)? {
            Push::Close => {
                if flush {
                    self.flush(uid);
                }
                self.close_uid(uid);
            }
            Push::Event { estimate } => self.publish(BackplaneMsg::Push {
                uid: uid.clone(),
                event: Arc::new(event),
                estimate,
                flush,
            }),
        }
        Ok(())
    }

    /// Pushes `event` to every client of `uid` (Sente's `send-fn`), batched with the other
    /// pushes to that uid within `send_buf_ms_ws` / `send_buf_ms_ajax`. Pushes reach each client
    /// in the order of the calls, across batches and flushes. `Uid::AllWithoutUid` reaches every
    /// anonymous client. `[:chsk/close]` closes the uid's connections (see
    /// [`ServerHandle::close_uid`]).
    ///
    /// Errors: a reserved `chsk/*` event, or an event over the message size limit.
    pub fn send(&self, uid: &Uid, event: Event) -> Result<(), SendError> {
        self.push(uid, event, false)
    }

    /// Like [`ServerHandle::send`], then sends the uid's buffered pushes at once
    /// (`{:flush? true}`).
    pub fn send_flush(&self, uid: &Uid, event: Event) -> Result<(), SendError> {
        self.push(uid, event, true)
    }

    /// Pushes one event to every uid of `uids` (their batching windows apply), in the order of
    /// the calls per uid like [`ServerHandle::send`]. The event is shared, and uids whose batches
    /// hold the same events are flushed together, so it is packed once per packer rather than
    /// once per uid or client. One backplane message carries all the uids.
    ///
    /// Errors: as [`ServerHandle::send`] (nothing is sent). `[:chsk/close]` closes every uid.
    pub fn send_many<'a>(
        &self,
        uids: impl IntoIterator<Item = &'a Uid>,
        event: Event,
    ) -> Result<(), SendError> {
        self.push_many(uids, event, false)
    }

    /// Like [`ServerHandle::send_many`], then sends each uid's buffered pushes at once.
    pub fn send_many_flush<'a>(
        &self,
        uids: impl IntoIterator<Item = &'a Uid>,
        event: Event,
    ) -> Result<(), SendError> {
        self.push_many(uids, event, true)
    }

    fn push_many<'a>(
        &self,
        uids: impl IntoIterator<Item = &'a Uid>,
        event: Event,
        flush: bool,
    ) -> Result<(), SendError> {
        match self.check(&event)? {
            Push::Close => {
                for uid in uids {
                    self.push(uid, event.clone(), flush)?;
                }
            }
            Push::Event { estimate } => {
                let uids: Arc<[Uid]> = uids.into_iter().cloned().collect();
                if !uids.is_empty() {
                    self.publish(BackplaneMsg::PushMany {
                        uids,
                        event: Arc::new(event),
                        estimate,
                        flush,
                    });
                }
            }
        }
        Ok(())
    }

    /// Pushes one event to every connected uid, on every node, like
    /// [`ServerHandle::send_many`]. Sente has no broadcast primitive; this is its idiom, made
    /// cheap.
    pub fn broadcast(&self, event: Event) -> Result<(), SendError> {
        self.broadcast_with(event, false)
    }

    /// [`ServerHandle::broadcast`] with a flush, like [`ServerHandle::send_many_flush`].
    pub fn broadcast_flush(&self, event: Event) -> Result<(), SendError> {
        self.broadcast_with(event, true)
    }

    fn broadcast_with(&self, event: Event, flush: bool) -> Result<(), SendError> {
        match self.check(&event)? {
            Push::Close => {
                let uids: Vec<Uid> = self.connected_uids().borrow().any.iter().cloned().collect();
                for uid in &uids {
                    self.close_uid(uid);
                }
            }
            Push::Event { estimate } => self.publish(BackplaneMsg::Broadcast {
                event: Arc::new(event),
                estimate,
                flush,
            }),
        }
        Ok(())
    }

    /// Sends what is buffered for `uid` now.
    pub fn flush(&self, uid: &Uid) {
        self.publish(BackplaneMsg::Flush { uid: uid.clone() });
    }

    /// Closes every connection of `uid` (Sente's `send-fn uid [:chsk/close]`) after what is
    /// already queued for them: WebSockets get close code 1000; a held Ajax poll is answered
    /// `410 Gone`, so the client reconnects with a new handshake. Clients come back (this is a
    /// kick, not a ban: refuse them in `authorized_fn` to keep them out).
    pub fn close_uid(&self, uid: &Uid) {
        self.publish(BackplaneMsg::CloseUid { uid: uid.clone() });
    }

    /// The connected uids, as a watch channel updated on every change.
    pub fn connected_uids(&self) -> watch::Receiver<ConnectedUids> {
        self.registry.connected_uids()
    }

    /// The limits in force.
    pub fn limits(&self) -> &ServerLimits {
        self.registry.limits()
    }

    /// This node's counters and gauges: drops, open connections, events in and out, reply
    /// latencies, refused requests (see [`Stats`]). Atomic loads: cheap.
    pub fn stats(&self) -> Stats {
        self.registry.stats()
    }

    /// The requests this node refused lately, oldest first (at most
    /// [`Builder::recent_rejections`](crate::Builder::recent_rejections), default 64): why,
    /// when, over which transport, the path and `Origin` (never the query, body or cookies).
    pub fn recent_rejections(&self) -> Vec<RejectedRequest> {
        self.registry.meters().recent_rejections()
    }

    /// Drains this server and shuts it down, in phases (each logged at info on target
    /// `sente::registry`, and set in the `sente_drain_phase` gauge):
    ///
    /// 1. **Draining**: new WebSocket upgrades, Ajax handshakes and Ajax polls are refused
    ///    `503 Service Unavailable` with `Retry-After: 1` and `Connection: close`, so clients
    ///    go to another node behind the load balancer. The clients already here are served as
    ///    before: events read from their WebSockets and their Ajax POSTs are handled and
    ///    answered (responses carry `Connection: close`, so their next request opens a new
    ///    connection, elsewhere). The phase ends once every reply a handler owes has been
    ///    sent (or dropped), at most after
    ///    [`Builder::drain_timeout`](crate::Builder::drain_timeout) (default 5 s).
    /// 2. **Closing clients**: each uid is flushed (its buffered pushes are sent), then its
    ///    clients are let go, spread over
    ///    [`Builder::shutdown_stagger`](crate::Builder::shutdown_stagger) (default 1 s) so
    ///    they do not all reconnect at once: a WebSocket is closed (code 1000) after its queued
    ///    pushes and replies; a held Ajax poll is answered empty (as at `lp_timeout_ms`), not
    ///    cut, so the client polls again, elsewhere, without a new handshake when the
    ///    backplane has Ajax mailboxes.
    /// 3. **Waiting** for every connection and request to end, until
    ///    [`Builder::shutdown_timeout`](crate::Builder::shutdown_timeout) (default 10 s) after
    ///    the call.
    /// 4. **Stopped**: every request, POSTs included, is refused `503`; the server lets go of
    ///    its handlers, so a handler that captured the server no longer keeps it alive.
    ///
    /// A request sent over a WebSocket at the moment its close frame is on the way to the
    /// client cannot be answered (the client's callback sees `closed`, as with any lost
    /// connection); events that were read are answered. Calling it again waits for the first
    /// call's work. Wire it to `SIGTERM` (see "Deploying" in the crate docs), then exit.
    pub async fn shutdown(&self) {
        self.registry.shutdown().await;
    }

    /// Whether [`ServerHandle::shutdown`] was called (the server is draining or stopped).
    pub fn is_draining(&self) -> bool {
        self.registry.is_closing()
    }

    /// Whether this node serves new clients: it is not draining, and it has joined its
    /// cluster (at once for a single node; in a cluster once its backplane has joined, or
    /// [`Builder::join_wait`](crate::Builder::join_wait) has passed). For a readiness probe.
    pub fn is_serving(&self) -> bool {
        self.registry.joined() && !self.registry.is_closing()
    }

    /// Resolves once this node has joined its cluster (see [`ServerHandle::is_serving`]): at
    /// once for a single node, at most [`Builder::join_wait`](crate::Builder::join_wait) after
    /// the server was built. Await it before announcing the node (to a load balancer, in a log
    /// line a script waits for).
    pub async fn serving(&self) {
        self.registry.wait_joined().await;
    }

    /// A handle that does not keep the server alive (for long-lived background tasks).
    pub fn downgrade(&self) -> WeakServerHandle {
        WeakServerHandle {
            registry: Arc::downgrade(&self.registry),
        }
    }
}
