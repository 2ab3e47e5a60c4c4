//! Idempotent client requests (wire: [`sente_proto::idem`]): a request a client retries after
//! a reconnect runs once and every copy of it gets the original reply.
//!
//! A client that announced the `idem` extension may send a request whose callback id is a
//! request id. Before such a request reaches the handlers, the node's dedupe window
//! ([`sente_proto::idem::DedupeWindow`], bounded by [`ServerLimits::idem`]) decides: the first
//! copy runs, and its reply is kept; a copy arriving while the handler runs waits for that
//! reply; a later copy gets the kept reply at once. Copies may come over either transport.
//!
//! In a cluster (a backplane with [`Backplane::idem`], as `sente-redis` and `sente-nats`
//! have), a copy that the node's window lets through then claims its request id in the
//! engine before it runs: it runs only if no node claimed it; a copy whose run another node
//! holds asks again, after [`CLAIM_POLL`] and then twice as long each time up to
//! [`CLAIM_POLL_MAX`], until that run's outcome is stored, and then gets
//! it; a later copy gets the stored outcome at once. So a retry that lands on another node
//! (its first node died, or a round-robin balancer sent it elsewhere) still runs once. The
//! claim and the outcome live in the engine for [`IdemConfig::max_age_ms`]; while the engine
//! is unreachable each node dedupes alone. A claim whose node died before the run finished
//! is waited for until it expires (the client's request times out first).
//!
//! [`ServerLimits::idem`]: sente_proto::server::ServerLimits::idem
//! [`Backplane::idem`]: sente_proto::backplane::Backplane::idem

pub use crate::claim::{CLAIM_POLL, CLAIM_POLL_MAX};
use crate::claim::{Claiming, ClusterIdem};
use crate::msg::{EventMsg, Reply, SharedReply};
use crate::request::ChskRequest;
use sente_proto::idem::{Begin, DedupeWindow};
use sente_proto::{ClientId, Uid, Value};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// A copy whose request ran on another node gets that run's outcome (and the node's window
/// keeps it for later copies).
pub(crate) fn answer_elsewhere(mut msg: EventMsg, outcome: Option<Value>) {
    if let (Some(reply), Some(v)) = (msg.reply.take(), outcome) {
        reply.send(v);
    }
}

/// Runs `f` on the current runtime, if any (a reply may be dropped outside one at shutdown).
fn spawn(f: sente_proto::backplane::BoxFuture<()>) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(f);
    }
}

pub use sente_proto::idem::IdemConfig;

/// The shared outcome of one request id's run: the copies waiting for it, then the outcome
/// (`finished` with no reply: the handler answered nothing).
#[derive(Debug, Default)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    waiting: Vec<Reply>,
    finished: bool,
    outcome: Option<Value>,
}

impl Slot {
    /// A copy of the request arrived while its handler runs: it gets the same outcome.
    fn join(&self, reply: Reply) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.finished {
            let outcome = st.outcome.clone();
            drop(st);
            answer(reply, outcome);
        } else {
            st.waiting.push(reply);
        }
    }

    /// Records the outcome and answers the copies waiting for it: whether one was answered
    /// (`None`: the outcome was recorded already).
    fn finish(&self, outcome: Option<&Value>) -> Option<bool> {
        let waiting = {
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if st.finished {
                return None;
            }
            st.finished = true;
            st.outcome = outcome.cloned();
            std::mem::take(&mut st.waiting)
        };
        let mut sent = false;
        for reply in waiting {
            sent |= answer(reply, outcome.cloned());
        }
        Some(sent)
    }
}

/// Sends `outcome` (a reply, or nothing: the reply is dropped, as the handler's was).
fn answer(reply: Reply, outcome: Option<Value>) -> bool {
    outcome.is_some_and(|v| reply.send(v))
}

/// The node's dedupe window (held by the dispatcher, which admits every event).
#[derive(Debug)]
pub(crate) struct Window(Mutex<DedupeWindow<Arc<Slot>>>);

impl Window {
    pub(crate) fn new(cfg: IdemConfig) -> Arc<Window> {
        Arc::new(Window(Mutex::new(DedupeWindow::new(cfg))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DedupeWindow<Arc<Slot>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The reply of the copy of a request id that runs: answering it answers every copy and is
/// kept for later ones. Dropped unanswered, the outcome "no reply" is kept.
#[derive(Debug)]
pub(crate) struct Deduped {
    own: Option<Reply>,
    slot: Arc<Slot>,
    window: Weak<Window>,
    uid: Uid,
    client_id: ClientId,
    id: String,
    /// The cluster's dedupe, where the outcome is stored too.
    cluster: Option<ClusterIdem>,
}

impl SharedReply for Deduped {
    fn settle(&mut self, outcome: Option<Value>) -> bool {
        let own = self.own.take();
        let Some(sent_waiting) = self.slot.finish(outcome.as_ref()) else {
            return false;
        };
        if let Some(window) = self.window.upgrade() {
            window
                .lock()
                .finish(&self.uid, &self.client_id, &self.id, outcome.clone());
        }
        if let Some(c) = &self.cluster {
            let (uid, cid, id) = (&self.uid, &self.client_id, &self.id);
            spawn(c.store.finish(uid, cid, id, outcome.clone(), c.ttl));
        }
        let sent_own = own.is_some_and(|r| answer(r, outcome));
        sent_own || sent_waiting
    }

    /// The copy that was to run was refused before it ran (its client's queue was full): the
    /// request id is forgotten, so a retry runs it; copies waiting for it get no reply.
    fn forget(mut self: Box<Self>) {
        self.own = None;
        self.slot.finish(None);
        if let Some(window) = self.window.upgrade() {
            window.lock().forget(&self.uid, &self.client_id, &self.id);
        }
        if let Some(c) = &self.cluster {
            spawn(c.store.forget(&self.uid, &self.client_id, &self.id));
        }
    }

    fn is_ws(&self) -> bool {
        self.own.as_ref().is_some_and(Reply::is_ws)
    }
}

impl Drop for Deduped {
    fn drop(&mut self) {
        if self.own.is_some() {
            self.settle(None);
        }
    }
}

/// Whether the client of `request` announced the extension (its handshake acknowledges it).
pub(crate) fn announced(request: &ChskRequest) -> bool {
    request
        .protocol_extensions()
        .contains(sente_proto::idem::EXTENSION)
}

/// An event admitted by [`admit`] was refused before it ran (its client's queue was full).
pub(crate) fn refused(msg: EventMsg) {
    if let Some(reply) = msg.reply {
        reply.forget();
    }
}

/// The request id of an event with callback id `cb`, when its client announced the extension.
pub(crate) fn request_id(request: &ChskRequest, cb: Option<&Value>) -> Option<String> {
    if !announced(request) {
        return None;
    }
    cb.and_then(sente_proto::idem::request_id)
        .map(str::to_owned)
}

/// Decides what to do with an event before it is scheduled: `Some` to run it (a request id's
/// first copy here with its reply wrapped and, with the cluster's dedupe `cluster` (its store
/// and ttl), its claim to decide before it runs; or any other event as it is), `None` when a
/// copy of a request id seen before was answered or joined the running one.
pub(crate) fn admit(
    window: &Arc<Window>,
    cluster: Option<&ClusterIdem>,
    now: u64,
    mut msg: EventMsg,
) -> Option<EventMsg> {
    let Some(id) = msg.idem.take() else {
        return Some(msg);
    };
    let Some(reply) = msg.reply.take() else {
        return Some(msg);
    };
    let begun = window.lock().begin(&msg.uid, &msg.client_id, &id, now, || {
        Arc::new(Slot::default())
    });
    match begun {
        Begin::Run(slot) => {
            msg.claim = cluster.map(|c| {
                Box::new(Claiming {
                    cluster: c.clone(),
                    uid: msg.uid.clone(),
                    client_id: msg.client_id.clone(),
                    id: id.clone(),
                })
            });
            msg.reply = Some(Reply::shared(Box::new(Deduped {
                own: Some(reply),
                slot,
                window: Arc::downgrade(window),
                uid: msg.uid.clone(),
                client_id: msg.client_id.clone(),
                id,
                cluster: cluster.cloned(),
            })));
            Some(msg)
        }
        Begin::Running(slot) => {
            tracing::debug!(uid = %msg.uid, client_id = %msg.client_id, %id,
                "retried request still running: waits for its reply");
            slot.join(reply);
            None
        }
        Begin::Done(outcome) => {
            tracing::debug!(uid = %msg.uid, client_id = %msg.client_id, %id,
                "retried request already answered: the original reply again");
            answer(reply, outcome);
            None
        }
    }
}
