//! The ordered send queue of one WebSocket connection: pushes from the registry, replies of
//! its events and pongs, and the close, written by the connection's task only.

use sente_proto::Envelope;
use sente_proto::server::PushBatch;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// One item of a connection's ordered send queue.
#[derive(Debug)]
pub(crate) enum Out {
    /// A batch, and for a resuming client the sequence number of its last event.
    Batch(Arc<PushBatch>, Option<u64>),
    /// A reply (with when its event arrived, for `sente_reply_seconds`) or a pong.
    Reply(Box<Envelope>, Option<std::time::Instant>),
    Close(&'static str),
}

#[derive(Debug, Default)]
struct OutQ {
    items: VecDeque<Out>,
    events: usize,
    gone: bool,
    /// Replies owed by the handlers of this connection's events (see [`Outbox::owe`]).
    owed: usize,
    /// A close waiting for the owed replies (a draining server's).
    close_when_answered: Option<&'static str>,
    /// The connection task is running, or was woken and has not drained the queue yet: a
    /// push needs no wake-up (one wake-up per batch of pushes, none for the replies the task
    /// queues itself).
    awake: bool,
    /// The connection task's waker, kept under the same lock as the queue: a push checks and
    /// takes it in the one critical section it takes anyway (and wakes the task after it).
    waker: Option<Waker>,
}

/// The ordered send queue of one WebSocket connection, shared by the registry (pushes), the
/// replies of its events, and its task (the only writer). Bounded: over
/// `max_pending_events_per_client` the connection is dropped with close code 1013.
#[derive(Debug)]
pub(crate) struct Outbox {
    q: Mutex<OutQ>,
    /// Set (under the lock) when a push found the queue full; read without it by the task
    /// after every round of writes.
    overflow: AtomicBool,
    limit: usize,
}

/// An item taken from the queue by [`Outbox::pop`].
#[derive(Debug)]
pub(crate) struct Popped {
    pub(crate) out: Out,
    /// Events queued before it was taken (for `sente_pending_sends`).
    pub(crate) queued: usize,
    /// Whether it was the last one: the caller need not ask again (a push after it wakes the
    /// task).
    pub(crate) last: bool,
}

impl Outbox {
    pub(crate) fn new(limit: usize) -> Self {
        Outbox {
            q: Mutex::new(OutQ::default()),
            overflow: AtomicBool::new(false),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutQ> {
        self.q
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, out: Out, weight: usize) -> bool {
        let mut q = self.lock();
        if q.gone || self.overflowed() {
            return false;
        }
        let taken = !(weight > 0 && q.events + weight > self.limit);
        if taken {
            q.events += weight;
            q.items.push_back(out);
        } else {
            self.overflow.store(true, Ordering::Release);
        }
        // Woken after the lock is let go: a waker may run code that takes it.
        let waker = if q.awake {
            None
        } else {
            q.awake = true;
            q.waker.take()
        };
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
        taken
    }

    /// Marks the connection task as running (see `OutQ::awake`). Only for code that the task
    /// runs between a wake-up and its next loop iteration, which drains the queue and polls
    /// [`Outbox::poll_pop`] (clearing the mark) before it can wait again.
    pub(crate) fn set_awake(&self) {
        self.lock().awake = true;
    }

    pub(crate) fn push_batch(&self, b: Arc<PushBatch>, seq: Option<u64>) -> bool {
        let n = b.len();
        self.push(Out::Batch(b, seq), n)
    }

    pub(crate) fn push_reply(&self, out: Out) -> bool {
        self.push(out, 1)
    }

    pub(crate) fn push_close(&self, reason: &'static str) {
        self.push(Out::Close(reason), 0);
    }

    /// Counts a reply that a handler owes to this connection, until [`Outbox::settle`].
    pub(crate) fn owe(&self) {
        self.lock().owed += 1;
    }

    /// An owed reply was queued (or given up): a close that waited for it is queued now.
    pub(crate) fn settle(&self) {
        let close = {
            let mut q = self.lock();
            q.owed = q.owed.saturating_sub(1);
            if q.owed == 0 {
                q.close_when_answered.take()
            } else {
                None
            }
        };
        if let Some(reason) = close {
            self.push_close(reason);
        }
    }

    /// Closes the connection once the replies its handlers owe are queued (a draining
    /// server), after them; at once when none is owed.
    pub(crate) fn push_close_after_replies(&self, reason: &'static str) {
        {
            let mut q = self.lock();
            if q.owed > 0 {
                q.close_when_answered = Some(reason);
                return;
            }
        }
        self.push_close(reason);
    }

    /// The next item (see [`Popped`]).
    pub(crate) fn pop(&self) -> Option<Popped> {
        Self::take(&mut self.lock())
    }

    fn take(q: &mut OutQ) -> Option<Popped> {
        let queued = q.events;
        let out = q.items.pop_front()?;
        q.events -= match &out {
            Out::Batch(b, _) => b.len(),
            Out::Reply(..) => 1,
            Out::Close(_) => 0,
        };
        Some(Popped {
            out,
            queued,
            last: q.items.is_empty(),
        })
    }

    /// The next item, `Ready(None)` when the queue overflowed, or (nothing queued) `Pending`
    /// with the task's waker registered for the next push: a woken task finds its first item
    /// in the same critical section that tells it one is there.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Popped>> {
        let mut q = self.lock();
        if let Some(p) = Self::take(&mut q) {
            return Poll::Ready(Some(p));
        }
        if self.overflowed() {
            return Poll::Ready(None);
        }
        q.awake = false;
        match &mut q.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.overflow.load(Ordering::Acquire)
    }

    pub(crate) fn set_gone(&self) {
        let mut q = self.lock();
        q.gone = true;
        q.items.clear();
        q.events = 0;
        // The queue may outlive the task (a handler's reply holds it): not its waker.
        q.waker = None;
    }
}
