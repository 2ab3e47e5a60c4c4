//! The event stream: a bounded, single-consumer queue that drops the **oldest** events when the
//! consumer falls behind (Sente's client uses sliding buffers the same way), counting what it
//! dropped.

use crate::ClientEvent;
use futures_util::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

#[derive(Debug)]
struct Slot {
    queue: VecDeque<ClientEvent>,
    capacity: usize,
    waker: Option<Waker>,
    closed: bool,
    receiver_gone: bool,
    dropped: u64,
}

/// The producing side, held by the client's driver.
#[derive(Debug, Clone)]
pub(crate) struct EventSender(Arc<Mutex<Slot>>);

/// A stream of [`ClientEvent`]s: `chsk/state` changes, handshakes, pushes and server pings, in
/// the order they happened.
///
/// It holds at most the client's `event_buffer` events (default 1024). When the consumer falls
/// behind, the oldest events are dropped and counted ([`EventStream::dropped`]), so a stalled
/// consumer never blocks replies or the connection. The stream ends when the client is dropped.
#[derive(Debug)]
pub struct EventStream(Arc<Mutex<Slot>>);

pub(crate) fn channel(capacity: usize) -> (EventSender, EventStream) {
    let slot = Arc::new(Mutex::new(Slot {
        queue: VecDeque::new(),
        capacity: capacity.max(1),
        waker: None,
        closed: false,
        receiver_gone: false,
        dropped: 0,
    }));
    (EventSender(slot.clone()), EventStream(slot))
}

impl EventSender {
    /// Queues an event; returns false when the stream was dropped (the sender can be removed).
    pub(crate) fn push(&self, event: ClientEvent) -> bool {
        let mut s = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.receiver_gone {
            return false;
        }
        if s.queue.len() >= s.capacity {
            s.queue.pop_front();
            s.dropped += 1;
        }
        s.queue.push_back(event);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        true
    }

    /// Ends the stream once the queued events are consumed.
    pub(crate) fn close(&self) {
        let mut s = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.closed = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

impl EventStream {
    /// How many events were dropped because the consumer fell behind.
    pub fn dropped(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .dropped
    }

    /// The next event without waiting, if one is queued.
    pub fn try_next(&mut self) -> Option<ClientEvent> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .queue
            .pop_front()
    }
}

impl Stream for EventStream {
    type Item = ClientEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        let mut s = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ev) = s.queue.pop_front() {
            return Poll::Ready(Some(ev));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let mut s = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.receiver_gone = true;
        s.queue.clear();
    }
}
