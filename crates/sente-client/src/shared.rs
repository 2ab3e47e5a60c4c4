//! State shared by the client handle, the driver and the IO tasks: the sans-IO machine behind a
//! mutex, plus the plumbing that turns its outputs into events, replies and state updates.

use crate::events::EventSender;
use crate::platform;
use sente_proto::Value;
use sente_proto::client::{
    Action, ClientEvent, ClientMachine, LogLevel, Output, RequestError, RequestId, State,
};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::{Notify, oneshot, watch};

pub(crate) type ReplyTx = oneshot::Sender<Result<Value, RequestError>>;

pub(crate) struct Inner {
    pub(crate) machine: ClientMachine,
    pub(crate) waiters: HashMap<RequestId, ReplyTx>,
    pub(crate) subscribers: Vec<EventSender>,
    pub(crate) shutdown: bool,
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    pub(crate) state_tx: watch::Sender<State>,
    pub(crate) notify: Notify,
    pub(crate) clock: platform::Clock,
    pub(crate) io: platform::Io,
    pub(crate) event_buffer: usize,
}

/// What the driver must do after draining the machine.
pub(crate) struct Drained {
    pub(crate) actions: Vec<Action>,
    pub(crate) deadline: Option<u64>,
    pub(crate) shutdown: bool,
}

impl Shared {
    pub(crate) fn new(
        machine: ClientMachine,
        clock: platform::Clock,
        io: platform::Io,
        first: EventSender,
        event_buffer: usize,
    ) -> Self {
        let state = machine.state().clone();
        Shared {
            inner: Mutex::new(Inner {
                machine,
                waiters: HashMap::new(),
                subscribers: vec![first],
                shutdown: false,
            }),
            state_tx: watch::Sender::new(state),
            notify: Notify::new(),
            clock,
            io,
            event_buffer,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Runs `f` on the machine with the current time, then wakes the driver.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut ClientMachine, u64) -> R) -> R {
        let r = {
            let mut inner = self.lock();
            let now = self.now();
            f(&mut inner.machine, now)
        };
        self.notify.notify_one();
        r
    }

    /// Pops every output: events go to subscribers, replies to their waiters, logs to
    /// `tracing`, state changes to the watch; actions are returned for the driver to perform.
    pub(crate) fn drain(&self) -> Drained {
        let mut inner = self.lock();
        let mut actions = Vec::new();
        while let Some(out) = inner.machine.poll_output() {
            match out {
                Output::Action(a) => actions.push(a),
                Output::Event(ev) => {
                    if let ClientEvent::State(change) = &ev {
                        self.state_tx.send_replace(change.new.clone());
                    }
                    inner.subscribers.retain(|s| s.push(ev.clone()));
                }
                Output::Reply { id, result } => {
                    if let Some(tx) = inner.waiters.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
                Output::Log {
                    level: LogLevel::Warn,
                    message,
                } => tracing::warn!(target: "sente_client", "{message}"),
                Output::Log { message, .. } => tracing::debug!(target: "sente_client", "{message}"),
                other => tracing::debug!(target: "sente_client", "ignoring output {other:?}"),
            }
        }
        let shutdown = inner.shutdown;
        if shutdown {
            for s in inner.subscribers.drain(..) {
                s.close();
            }
            for (_, tx) in inner.waiters.drain() {
                let _ = tx.send(Err(RequestError::Closed));
            }
        }
        Drained {
            actions,
            deadline: inner.machine.poll_timeout(),
            shutdown,
        }
    }
}
