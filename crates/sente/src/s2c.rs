//! Push to one client ([`ServerHandle::send_to_client`]) and server-to-client requests
//! ([`ServerHandle::request`]; wire: [`sente_proto::s2c`]).
//!
//! A request goes to each client of the uid that announced the `req` extension, as a push to
//! that client alone (so it keeps its place among the uid's pushes), and waits for each one's
//! `[:chsk/rep [id reply]]`. Answers are taken only from the client a request went to, for a
//! request still waiting; any other `chsk/rep` is refused and counted
//! (`sente_rejections_total{detail="unexpected-request-reply"}` and
//! [`Stats::rejected_requests`](crate::Stats::rejected_requests)), never reaching the handler.
//!
//! In a cluster, [`ServerHandle::send_to_client`] reaches the client on whichever node holds it
//! (a backplane message, and the Ajax mailbox of that client alone); [`ServerHandle::request`]
//! asks the clients connected to *this* node (the others are not listed).

use crate::handle::ServerHandle;
use crate::metrics::Why;
use crate::msg::EventMsg;
use crate::registry::{Registry, RequestWaiter};
use sente_proto::backplane::BackplaneMsg;
use sente_proto::s2c::{self, RequestBook};
use sente_proto::server::message::{self, Push};
use sente_proto::server::{SendError, estimate_event_size};
use sente_proto::{ClientId, Event, Uid, Value};
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

pub use sente_proto::s2c::{RequestConfig, RequestError};

/// The node's book of requests waiting for answers.
fn book(registry: &Registry) -> std::sync::MutexGuard<'_, RequestBook<RequestWaiter>> {
    registry
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A client's `chsk/rep`: resolves its request, or is refused and counted.
pub(crate) fn answer(registry: &Registry, msg: &EventMsg) {
    let parsed = s2c::parse_reply(msg.event.data());
    let waiter = parsed
        .as_ref()
        .and_then(|(id, _)| book(registry).answer(&msg.uid, &msg.client_id, *id));
    if let (Some(tx), Some((_, answer))) = (waiter, parsed) {
        let _ = tx.send(answer);
    } else {
        tracing::debug!(uid = %msg.uid, client_id = %msg.client_id,
            "chsk/rep for no request waiting for this client: refused");
        Why::RequestReply.count(registry.meters(), None);
    }
}

/// Why [`ServerHandle::send_to_client`] refused a push.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientSendError {
    /// The event cannot be pushed (reserved, or over the message size limit).
    #[error(transparent)]
    Send(#[from] SendError),
    /// No such client of this uid on this node, and the uid is on no other node.
    #[error("no such client of this user")]
    UnknownClient,
}

impl ServerHandle {
    /// Pushes `event` to one client of `uid` (its `client-id`), on WebSocket or Ajax, on any
    /// node of a cluster. It keeps its place among the pushes to `uid` (what is buffered for
    /// the uid goes out first). A client whose WebSocket is reconnecting gets it when it comes
    /// back within the grace period, after any replay; unlike pushes to a uid, it is not in
    /// the uid's replay log, so a client that comes back later (or on another node) does not
    /// get it. It reaches the client unnumbered, so the client drops its resume position (its
    /// next reconnect asks for no replay rather than one that would silently miss this push).
    ///
    /// Errors: [`ClientSendError::UnknownClient`] when neither this node knows the client nor
    /// another node has the uid (in a cluster, a client id unknown on the node holding the uid
    /// is dropped there); [`ClientSendError::Send`] as [`ServerHandle::send`] (`[:chsk/close]`
    /// is refused as reserved here).
    pub fn send_to_client(
        &self,
        uid: &Uid,
        client_id: &ClientId,
        event: Event,
    ) -> Result<(), ClientSendError> {
        let estimate = match message::push(&event, &self.limits().message)? {
            Push::Event { estimate } => estimate,
            Push::Close => return Err(SendError::Reserved(event.id().clone()).into()),
        };
        self.push_client(uid, client_id, Arc::new(event), estimate)
    }

    fn push_client(
        &self,
        uid: &Uid,
        client_id: &ClientId,
        event: Arc<Event>,
        estimate: usize,
    ) -> Result<(), ClientSendError> {
        let registry = self.registry();
        let here = registry.with_core(|c, _| c.clients(uid).iter().any(|(c, ..)| c == client_id));
        if !here && !registry.elsewhere(uid) {
            return Err(ClientSendError::UnknownClient);
        }
        registry.backplane().publish(BackplaneMsg::PushClient {
            uid: uid.clone(),
            client_id: client_id.clone(),
            event,
            estimate,
        });
        Ok(())
    }

    /// Asks every client of `uid` connected to this node `event`, and waits for each one's
    /// answer, at most `timeout` (cut to [`RequestConfig::max_timeout_ms`]). Each client gets
    /// a result: its reply; [`RequestError::Unsupported`] for a client that did not announce
    /// the extension (a plain Sente client: it is not asked); [`RequestError::Timeout`];
    /// [`RequestError::Client`] when it answered with an error (e.g. no handler for the event);
    /// [`RequestError::TooMany`] over [`RequestConfig::max_outstanding_per_client`];
    /// [`RequestError::Closed`] when it could not be reached; [`RequestError::Send`] for an
    /// event that cannot be pushed. A uid with no client here gives an empty list.
    pub async fn request(
        &self,
        uid: &Uid,
        event: Event,
        timeout: Duration,
    ) -> Vec<(ClientId, Result<Value, RequestError>)> {
        let registry = self.registry().clone();
        let cfg = self.limits().requests.clone();
        let timeout = timeout.min(Duration::from_millis(cfg.max_timeout_ms));
        let deadline = tokio::time::Instant::now() + timeout;
        let clients = registry.with_core(|c, _| c.clients(uid));
        let refused = match message::push(&event, &self.limits().message) {
            Ok(Push::Event { .. }) => None,
            Ok(Push::Close) => Some(SendError::Reserved(event.id().clone()).to_string()),
            Err(e) => Some(e.to_string()),
        };
        let mut results = Vec::with_capacity(clients.len());
        let mut waits = Vec::new();
        // Gives up what still waits, also when the caller drops this future.
        let mut open = Opened {
            registry: registry.clone(),
            ids: Vec::new(),
        };
        for (cid, _, ctx) in clients {
            if !ctx.request.protocol_extensions().contains(s2c::EXTENSION) {
                results.push((cid, Err(RequestError::Unsupported)));
                continue;
            }
            if let Some(reason) = &refused {
                results.push((cid, Err(RequestError::Send(reason.clone()))));
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let opened = book(&registry).open(uid, &cid, cfg.max_outstanding_per_client, tx);
            let Ok(id) = opened else {
                let limit = cfg.max_outstanding_per_client;
                results.push((cid, Err(RequestError::TooMany { limit })));
                continue;
            };
            let req = Arc::new(s2c::request_event(id, &event));
            let estimate = estimate_event_size(&req, usize::MAX);
            if self.push_client(uid, &cid, req, estimate).is_err() {
                book(&registry).close(id);
                results.push((cid, Err(RequestError::Closed)));
                continue;
            }
            open.ids.push(id);
            waits.push((cid, rx));
        }
        let answers = futures_util::future::join_all(waits.into_iter().map(|(cid, rx)| async {
            let got = match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(RequestError::Closed),
                Err(_) => Err(RequestError::Timeout),
            };
            (cid, got)
        }))
        .await;
        drop(open);
        results.extend(answers);
        results
    }
}

/// The ids of one [`ServerHandle::request`] call, given up when it ends (answered ones are
/// gone from the book already).
struct Opened {
    registry: Arc<Registry>,
    ids: Vec<u64>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        let mut book = book(&self.registry);
        for id in &self.ids {
            book.close(*id);
        }
    }
}
