//! [`EventStream`]: every event as a stream (Sente's `ch-recv`), for applications that consume
//! events themselves instead of registering a [`Router`](crate::Router).

use crate::dispatch::Dispatch;
use crate::msg::EventMsg;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// The events of all clients, in arrival order per client (Sente's `ch-recv`), from
/// [`Builder::build_with_events`](crate::Builder::build_with_events).
///
/// Bounded (`recv_buf`, default 1 000). Overflow policy: backpressure on the client that sent
/// the event. When the stream is full, a WebSocket connection stops reading after
/// [64](crate::Concurrency) waiting events (TCP pushes back on that client) and an Ajax client's
/// POSTs wait in its own queue of 64 (more get `429`). The server's own `chsk/uidport-*`
/// events never block the server: beyond a client's queue they are dropped, counted in
/// [`Stats`](crate::Stats) and logged.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<EventMsg>,
}

/// The sending side of an [`EventStream`]: the server's handler.
pub(crate) struct StreamSender {
    tx: mpsc::Sender<EventMsg>,
}

/// A stream of `capacity` events and the handler that feeds it.
pub(crate) fn channel(capacity: usize) -> (StreamSender, EventStream) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (StreamSender { tx }, EventStream { rx })
}

impl Dispatch for StreamSender {
    fn dispatch(&self, msg: EventMsg) -> BoxFuture<'static, ()> {
        let tx = self.tx.clone();
        async move {
            let _ = tx.send(msg).await;
        }
        .boxed()
    }
}

impl futures_util::Stream for EventStream {
    type Item = EventMsg;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EventMsg>> {
        self.rx.poll_recv(cx)
    }
}

impl EventStream {
    /// The next event (`None` once the server and all its connections are gone).
    pub async fn recv(&mut self) -> Option<EventMsg> {
        self.rx.recv().await
    }
}
