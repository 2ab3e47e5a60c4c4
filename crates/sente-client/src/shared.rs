//! State shared by the client handle, the driver and the IO tasks: the sans-IO machine behind a
//! mutex, plus the plumbing that turns its outputs into events, replies and state updates.

use crate::events::EventSender;
use crate::platform;
use sente_proto::client::{
    Action, ClientEvent, ClientMachine, LogLevel, Output, RequestError, RequestId, State,
};
use sente_proto::{Event, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::{Notify, oneshot, watch};

pub(crate) type ReplyTx = oneshot::Sender<Result<Value, RequestError>>;

/// A handler of server requests: the request's event in, the reply out.
pub(crate) type RequestHandler = Arc<dyn Fn(&Event) -> Value + Send + Sync>;

/// The handlers of server requests by event id ([`crate::ClientBuilder::on_request`]).
#[derive(Clone, Default)]
pub(crate) struct RequestHandlers(pub(crate) HashMap<String, RequestHandler>);

impl std::fmt::Debug for RequestHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

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
    handlers: RequestHandlers,
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
        handlers: RequestHandlers,
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
            handlers,
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

    /// The reply to a server request: its handler's, or [`sente_proto::s2c::NO_HANDLER`].
    fn answer(&self, event: &Event) -> Result<Value, String> {
        match self.handlers.0.get(event.id().as_str()) {
            Some(h) => Ok(h(event)),
            None => Err(sente_proto::s2c::NO_HANDLER.to_owned()),
        }
    }

    /// Handles every output but server requests, which are returned (with the lock).
    #[allow(clippy::type_complexity)]
    fn drain_outputs(
        &self,
        actions: &mut Vec<Action>,
    ) -> (MutexGuard<'_, Inner>, Vec<(u64, Event)>) {
        let mut inner = self.lock();
        let mut requests = Vec::new();
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
                Output::ServerRequest { id, event } => requests.push((id, event)),
                Output::Log {
                    level: LogLevel::Warn,
                    message,
                } => tracing::warn!(target: "sente_client", "{message}"),
                Output::Log { message, .. } => tracing::debug!(target: "sente_client", "{message}"),
                other => tracing::debug!(target: "sente_client", "ignoring output {other:?}"),
            }
        }
        (inner, requests)
    }

    /// Pops every output: events go to subscribers, replies to their waiters, logs to
    /// `tracing`, state changes to the watch; actions are returned for the driver to perform.
    pub(crate) fn drain(&self) -> Drained {
        let mut actions = Vec::new();
        let mut inner = loop {
            let (inner, requests) = self.drain_outputs(&mut actions);
            if requests.is_empty() {
                break inner;
            }
            // Handlers run without the lock (they may use the client), then answer.
            drop(inner);
            let answers: Vec<_> = requests
                .into_iter()
                .map(|(id, event)| (id, self.answer(&event)))
                .collect();
            let mut inner = self.lock();
            let now = self.now();
            for (id, answer) in answers {
                if let Err(e) = inner.machine.answer_request(id, answer, now) {
                    tracing::debug!(target: "sente_client", "server request {id} not answered: {e}");
                }
            }
        };
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
