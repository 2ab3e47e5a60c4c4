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
//! asks the uid's clients on every node: the asking node publishes
//! [`BackplaneMsg::Request`] (its node id and a request id of its own, so ids never clash
//! between nodes), every other node asks its own clients of the uid with the same timeout and
//! publishes their answers ([`BackplaneMsg::RequestAnswers`], addressed to the asking node),
//! and the asking node waits for each node its presence view lists for the uid, at most
//! [`RequestConfig::cluster_grace_ms`] past the timeout. Clients of a node that died or never
//! answered are missing from the list. A node of an older release skips both messages (its
//! clients are not asked, and the asking node waits for it until the grace ends).
//!
//! An Ajax client's answer is a POST, which in a cluster without sticky sessions (Ajax
//! mailboxes) lands on any node. A request id names the node that holds it
//! ([`sente_proto::s2c::id_tag`]), so a node that gets an answer for an id of another node
//! forwards it there ([`BackplaneMsg::RequestReply`]) when it has heard of that node (its
//! presence, for any uid); that node takes it only from the client the request went to, for
//! a request still waiting (else refuses and counts it, as above). A node forwards at most
//! [`RequestConfig::max_forwarded_replies_per_client_per_sec`] answers of one client per
//! second; more, and answers whose id names this node or a node it never heard of, are
//! refused and counted where they arrived. (An answer forwarded to a node that died
//! meanwhile is lost uncounted, within that budget.) An Ajax client that polled on several nodes may be
//! asked by each of them (its handler then runs more than once); the asking node keeps one
//! result per client, its best (a reply before an error before a timeout).

use crate::handle::ServerHandle;
use crate::metrics::Why;
use crate::msg::EventMsg;
use crate::registry::{Registry, RemoteWaiter, RequestWaiter};
use sente_proto::backplane::{BackplaneMsg, NodeId};
use sente_proto::s2c::{self, RequestBook};
use sente_proto::server::message::{self, Push};
use sente_proto::server::{SendError, estimate_event_size};
use sente_proto::{ClientId, Event, Uid, Value};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub use sente_proto::s2c::{RequestConfig, RequestError};

/// The node's book of requests waiting for answers.
fn book(registry: &Registry) -> std::sync::MutexGuard<'_, RequestBook<RequestWaiter>> {
    registry
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A client's `chsk/rep`: resolves its request, is forwarded to the node its id names (see
/// the module docs), or is refused and counted.
pub(crate) fn answer(registry: &Registry, msg: &EventMsg) {
    let (uid, cid) = (&msg.uid, &msg.client_id);
    let Some((id, answer)) = s2c::parse_reply(msg.event.data()) else {
        return refuse(registry, uid, cid, None);
    };
    let Some(answer) = resolve(registry, uid, cid, id, answer) else {
        return;
    };
    // The id of another node that this one has heard of.
    let tag = s2c::id_tag(id);
    let elsewhere =
        tag != book(registry).tag() && registry.mailbox().is_some() && registry.knows_tag(tag);
    if elsewhere && forward_budget(registry, uid, cid) {
        registry.backplane().publish(BackplaneMsg::RequestReply {
            uid: uid.clone(),
            client_id: cid.clone(),
            id,
            answer,
        });
        return;
    }
    refuse(registry, uid, cid, Some(id));
}

/// Whether one more answer of client `cid` of `uid` may be forwarded now.
fn forward_budget(registry: &Registry, uid: &Uid, cid: &ClientId) -> bool {
    let per_sec = registry
        .limits()
        .requests
        .max_forwarded_replies_per_client_per_sec;
    registry
        .forwards
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take(uid, cid, per_sec, registry.now())
}

/// Hands `answer` to request `id` if it waits here for client `cid` of `uid`; else gives the
/// answer back.
fn resolve(
    registry: &Registry,
    uid: &Uid,
    cid: &ClientId,
    id: u64,
    answer: Result<Value, RequestError>,
) -> Option<Result<Value, RequestError>> {
    let Some(tx) = book(registry).answer(uid, cid, id) else {
        return Some(answer);
    };
    let _ = tx.send(answer);
    None
}

/// An answer another node forwarded here: taken, or refused and counted.
fn take_forwarded(
    registry: &Registry,
    uid: &Uid,
    cid: &ClientId,
    id: u64,
    answer: Result<Value, RequestError>,
) {
    if resolve(registry, uid, cid, id, answer).is_some() {
        refuse(registry, uid, cid, Some(id));
    }
}

/// Refuses and counts an answer for no request waiting for that client (or malformed).
fn refuse(registry: &Registry, uid: &Uid, cid: &ClientId, id: Option<u64>) {
    tracing::debug!(%uid, client_id = %cid, ?id,
        "chsk/rep for no request waiting for this client: refused");
    Why::RequestReply.count(registry.meters(), None);
}

/// What the backplane brings of requests (installed by the builder as the registry's request
/// sink): another node's request for this node's clients, other nodes' answers to this node's
/// requests, and answers forwarded to this node.
pub(crate) fn from_backplane(registry: &Arc<Registry>, msg: BackplaneMsg) {
    match msg {
        BackplaneMsg::Request {
            node,
            id,
            uid,
            event,
            timeout_ms,
        } if node != registry.node() => {
            let r = registry.clone();
            registry
                .runtime()
                .spawn(answer_remote(r, node, id, uid, event, timeout_ms));
        }
        BackplaneMsg::RequestAnswers {
            node,
            id,
            from,
            answers,
        } if node == registry.node() => {
            if let Some(w) = remote_book(registry).get(&id).cloned() {
                let _ = w.send((from, answers));
            }
        }
        BackplaneMsg::RequestReply {
            uid,
            client_id,
            id,
            answer,
        } if s2c::id_tag(id) == book(registry).tag() => {
            take_forwarded(registry, &uid, &client_id, id, answer);
        }
        _ => {}
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
    /// the uid goes out first). It takes the uid's next number and waits in the uid's replay
    /// log for this client alone, so a resuming client that reconnects (within the replay
    /// window, on any node of a cluster) gets it in its place, as it gets pushes to its uid;
    /// the uid's other clients never see it (their positions skip its number). A client
    /// without resume whose WebSocket is reconnecting gets it when it comes back within the
    /// grace period.
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
        let here = registry.with_core(uid, |c, _| {
            c.clients(uid).iter().any(|(c, ..)| c == client_id)
        });
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

    /// Asks every client of `uid` `event` (in a cluster, on every node: see the module docs),
    /// and waits for each one's answer, at most `timeout` (cut to
    /// [`RequestConfig::max_timeout_ms`]; other nodes' answers may take
    /// [`RequestConfig::cluster_grace_ms`] more). Each client gets
    /// a result: its reply; [`RequestError::Unsupported`] for a client that did not announce
    /// the extension (a plain Sente client: it is not asked); [`RequestError::Timeout`];
    /// [`RequestError::Client`] when it answered with an error (e.g. no handler for the event);
    /// [`RequestError::TooMany`] over [`RequestConfig::max_outstanding_per_client`];
    /// [`RequestError::Closed`] when it could not be reached; [`RequestError::Send`] for an
    /// event that cannot be pushed. A uid with no client gives an empty list.
    pub async fn request(
        &self,
        uid: &Uid,
        event: Event,
        timeout: Duration,
    ) -> Vec<(ClientId, Result<Value, RequestError>)> {
        let registry = self.registry().clone();
        let cfg = self.limits().requests.clone();
        let timeout = timeout.min(Duration::from_millis(cfg.max_timeout_ms));
        let others = registry.nodes_elsewhere(uid);
        let sendable = matches!(
            message::push(&event, &self.limits().message),
            Ok(Push::Event { .. })
        );
        let remote = (!others.is_empty() && sendable).then(|| {
            let id = registry.remote_seq.fetch_add(1, Ordering::Relaxed) + 1;
            let (tx, rx) = mpsc::unbounded_channel();
            remote_book(&registry).insert(id, tx);
            registry.backplane().publish(BackplaneMsg::Request {
                node: registry.node(),
                id,
                uid: uid.clone(),
                event: Arc::new(event.clone()),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            });
            (
                RemoteOpen {
                    registry: registry.clone(),
                    id,
                },
                rx,
            )
        });
        let until =
            tokio::time::Instant::now() + timeout + Duration::from_millis(cfg.cluster_grace_ms);
        let there = async move {
            let mut out = Vec::new();
            let Some((_open, mut rx)) = remote else {
                return out;
            };
            let mut waiting = others;
            while !waiting.is_empty() {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some((from, answers))) => {
                        waiting.retain(|n| *n != from);
                        out.extend(answers);
                    }
                    _ => break,
                }
            }
            out
        };
        let (mut here, there) =
            futures_util::future::join(self.ask_here(uid, event, timeout), there).await;
        here.extend(there);
        best_per_client(here)
    }

    /// [`ServerHandle::request`] for the clients connected to this node only.
    async fn ask_here(
        &self,
        uid: &Uid,
        event: Event,
        timeout: Duration,
    ) -> Vec<(ClientId, Result<Value, RequestError>)> {
        let registry = self.registry().clone();
        let cfg = self.limits().requests.clone();
        let timeout = timeout.min(Duration::from_millis(cfg.max_timeout_ms));
        let deadline = tokio::time::Instant::now() + timeout;
        let clients = registry.with_core(uid, |c, _| c.clients(uid));
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

/// One result per client (an Ajax client may have been asked by several nodes), its best: a
/// reply, else the client's error, else why it gave none; in the order first seen.
fn best_per_client(
    results: Vec<(ClientId, Result<Value, RequestError>)>,
) -> Vec<(ClientId, Result<Value, RequestError>)> {
    let rank = |r: &Result<Value, RequestError>| match r {
        Ok(_) => 0,
        Err(RequestError::Client(_)) => 1,
        Err(_) => 2,
    };
    let mut out: Vec<(ClientId, Result<Value, RequestError>)> = Vec::with_capacity(results.len());
    for (cid, r) in results {
        match out.iter_mut().find(|(c, _)| *c == cid) {
            Some(kept) if rank(&r) < rank(&kept.1) => kept.1 = r,
            Some(_) => {}
            None => out.push((cid, r)),
        }
    }
    out
}

/// This node's requests waiting for other nodes' answers.
fn remote_book(
    registry: &Registry,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, RemoteWaiter>> {
    registry
        .remote_requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// One request's wait for other nodes' answers, given up when it ends.
struct RemoteOpen {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for RemoteOpen {
    fn drop(&mut self) {
        remote_book(&self.registry).remove(&self.id);
    }
}

/// Another node's [`BackplaneMsg::Request`]: asks this node's clients of `uid` and publishes
/// their answers (an empty list when there are none) to the asking node.
pub(crate) async fn answer_remote(
    registry: Arc<Registry>,
    node: NodeId,
    id: u64,
    uid: Uid,
    event: Arc<Event>,
    timeout_ms: u64,
) {
    let handle = ServerHandle::new(registry.clone());
    let answers = handle
        .ask_here(&uid, (*event).clone(), Duration::from_millis(timeout_ms))
        .await;
    registry.backplane().publish(BackplaneMsg::RequestAnswers {
        node,
        id,
        from: registry.node(),
        answers,
    });
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
