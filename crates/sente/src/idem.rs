//! Idempotent client requests (wire: [`sente_proto::idem`]): a request a client retries after
//! a reconnect runs once and every copy of it gets the original reply.
//!
//! A client that announced the `idem` extension may send a request whose callback id is a
//! request id. Before such a request reaches the handlers, the node's dedupe window
//! ([`sente_proto::idem::DedupeWindow`], bounded by [`ServerLimits::idem`]) decides: the first
//! copy runs, and its reply is kept; a copy arriving while the handler runs waits for that
//! reply; a later copy gets the kept reply at once. Copies may come over either transport.
//! The window is this node's: in a cluster, a retry that lands on another node runs again.
//!
//! [`ServerLimits::idem`]: sente_proto::server::ServerLimits::idem

use crate::msg::{EventMsg, Reply};
use crate::registry::Registry;
use crate::request::ChskRequest;
use sente_proto::idem::{Begin, DedupeWindow};
use sente_proto::{ClientId, Uid, Value};
use std::sync::{Arc, Mutex, PoisonError, Weak};

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

/// The node's dedupe window.
pub(crate) type Window = Mutex<DedupeWindow<Arc<Slot>>>;

fn window(registry: &Registry) -> std::sync::MutexGuard<'_, DedupeWindow<Arc<Slot>>> {
    registry.idem.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The reply of the copy of a request id that runs: answering it answers every copy and is
/// kept for later ones. Dropped unanswered, the outcome "no reply" is kept.
#[derive(Debug)]
pub(crate) struct Deduped {
    own: Option<Reply>,
    slot: Arc<Slot>,
    registry: Weak<Registry>,
    uid: Uid,
    client_id: ClientId,
    id: String,
}

impl Deduped {
    /// Answers every copy with `outcome` and keeps it; returns whether a copy was answered.
    pub(crate) fn settle(&mut self, outcome: Option<Value>) -> bool {
        let own = self.own.take();
        let Some(sent_waiting) = self.slot.finish(outcome.as_ref()) else {
            return false;
        };
        if let Some(registry) = self.registry.upgrade() {
            window(&registry).finish(&self.uid, &self.client_id, &self.id, outcome.clone());
        }
        let sent_own = own.is_some_and(|r| answer(r, outcome));
        sent_own || sent_waiting
    }

    /// The copy that was to run was refused before it ran (its client's queue was full): the
    /// request id is forgotten, so a retry runs it; copies waiting for it get no reply.
    pub(crate) fn forget(mut self) {
        self.own = None;
        self.slot.finish(None);
        if let Some(registry) = self.registry.upgrade() {
            window(&registry).forget(&self.uid, &self.client_id, &self.id);
        }
    }

    /// Whether the copy that runs came over a WebSocket.
    pub(crate) fn is_ws(&self) -> bool {
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
/// first copy with its reply wrapped, or any other event as it is), `None` when a copy of a
/// request id seen before was answered or joined the running one.
pub(crate) fn admit(registry: &Arc<Registry>, mut msg: EventMsg) -> Option<EventMsg> {
    let Some(id) = msg.idem.take() else {
        return Some(msg);
    };
    let Some(reply) = msg.reply.take() else {
        return Some(msg);
    };
    let now = registry.now();
    let begun = window(registry).begin(&msg.uid, &msg.client_id, &id, now, || {
        Arc::new(Slot::default())
    });
    match begun {
        Begin::Run(slot) => {
            msg.reply = Some(Reply::deduped(Deduped {
                own: Some(reply),
                slot,
                registry: Arc::downgrade(registry),
                uid: msg.uid.clone(),
                client_id: msg.client_id.clone(),
                id,
            }));
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
