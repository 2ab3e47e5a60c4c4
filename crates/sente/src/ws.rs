//! The WebSocket transport (spec 5): the upgrade over hyper, and one task per connection that
//! reads frames, writes the connection's ordered queue, and runs the keepalive.

use crate::msg::{EventMsg, Reply};
use crate::request::ChskRequest;
use crate::router::InlineRunner;
use crate::server::{ConnCtx, Inner};
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use sente_proto::server::{ConnId, Keepalive, KeepaliveAction, PackedBytes, PushBatch, Transport};
use sente_proto::{ClientId, ClientMsg, Envelope, Packer, Uid, Value, ids, server_msg};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Read buffer of a WebSocket connection (and the most read per syscall). Small, so an idle
/// connection costs little; tungstenite grows it for a larger incoming message (up to the message
/// limit), which then takes one read per KiB.
const READ_BUFFER: usize = 1024;

/// Outgoing messages larger than this are sent as fragments of this size, and the socket's write
/// buffer writes to the socket once it holds more than this, so it never grows past two
/// fragments (tungstenite keeps its write buffer's capacity for the connection's lifetime).
/// Messages queued together go out in one write. Clients reassemble fragments transparently.
const FRAGMENT: usize = 16 * 1024;

/// One item of a connection's ordered send queue.
#[derive(Debug)]
pub(crate) enum Out {
    Batch(Arc<PushBatch>),
    Reply(Box<Envelope>),
    Close(&'static str),
}

#[derive(Debug, Default)]
struct OutQ {
    items: VecDeque<Out>,
    events: usize,
    overflow: bool,
    gone: bool,
    /// The connection task is running and drains the queue before it waits again: a push
    /// needs no wake-up (saves a spurious re-poll of the task per reply it sends itself).
    awake: bool,
}

/// The ordered send queue of one WebSocket connection, shared by the registry (pushes), the
/// replies of its events, and its task (the only writer). Bounded: over
/// `max_pending_events_per_client` the connection is dropped with close code 1013.
#[derive(Debug)]
pub(crate) struct Outbox {
    q: Mutex<OutQ>,
    waker: AtomicWaker,
    limit: usize,
}

impl Outbox {
    pub(crate) fn new(limit: usize) -> Self {
        Outbox {
            q: Mutex::new(OutQ::default()),
            waker: AtomicWaker::new(),
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
        if q.gone || q.overflow {
            return false;
        }
        if weight > 0 && q.events + weight > self.limit {
            q.overflow = true;
            drop(q);
            self.waker.wake();
            return false;
        }
        q.events += weight;
        q.items.push_back(out);
        let wake = !q.awake;
        drop(q);
        if wake {
            self.waker.wake();
        }
        true
    }

    /// Marks the connection task as running (see `OutQ::awake`). Only for code that the task
    /// runs between a wake-up and its next loop iteration, which drains the queue and polls
    /// [`Outbox::poll_ready`] (clearing the mark) before it can wait again.
    fn set_awake(&self) {
        self.lock().awake = true;
    }

    pub(crate) fn push_batch(&self, b: Arc<PushBatch>) -> bool {
        let n = b.len();
        self.push(Out::Batch(b), n)
    }

    pub(crate) fn push_reply(&self, out: Out) -> bool {
        self.push(out, 1)
    }

    pub(crate) fn push_close(&self, reason: &'static str) {
        self.push(Out::Close(reason), 0);
    }

    fn pop(&self) -> Option<Out> {
        let mut q = self.lock();
        let out = q.items.pop_front()?;
        q.events -= match &out {
            Out::Batch(b) => b.len(),
            Out::Reply(_) => 1,
            Out::Close(_) => 0,
        };
        Some(out)
    }

    /// Ready when something is queued (or the queue overflowed).
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        let mut q = self.lock();
        if q.items.is_empty() && !q.overflow {
            q.awake = false;
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn overflowed(&self) -> bool {
        self.lock().overflow
    }

    fn set_gone(&self) {
        let mut q = self.lock();
        q.gone = true;
        q.items.clear();
        q.events = 0;
    }
}

/// Whether the request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade(headers: &http::HeaderMap) -> bool {
    let has_token = |name: http::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(http::header::UPGRADE, "websocket")
}

/// Everything a connection task needs.
pub(crate) struct WsConn {
    pub(crate) inner: Arc<Inner>,
    pub(crate) uid: Uid,
    pub(crate) client_id: ClientId,
    pub(crate) conn: ConnId,
    pub(crate) packer: Arc<dyn Packer>,
    pub(crate) request: Arc<ChskRequest>,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) handshake: PackedBytes,
}

fn message(p: &PackedBytes) -> Message {
    if p.binary {
        Message::Binary(p.bytes.clone())
    } else {
        match Utf8Bytes::try_from(p.bytes.clone()) {
            Ok(t) => Message::Text(t),
            Err(_) => Message::Binary(p.bytes.clone()),
        }
    }
}

/// The frames of one outgoing message: one frame, or `FRAGMENT`-sized fragments.
fn frames(p: &PackedBytes) -> impl Iterator<Item = Message> + '_ {
    let len = p.bytes.len();
    let whole = (len <= FRAGMENT).then(|| message(p));
    let opcode = if p.binary { Data::Binary } else { Data::Text };
    let fragments = (len > FRAGMENT).then(|| {
        (0..len).step_by(FRAGMENT).map(move |start| {
            let end = (start + FRAGMENT).min(len);
            let op = if start == 0 { opcode } else { Data::Continue };
            Message::Frame(Frame::message(
                p.bytes.slice(start..end),
                OpCode::Data(op),
                end == len,
            ))
        })
    });
    whole.into_iter().chain(fragments.into_iter().flatten())
}

pub(crate) fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(FRAGMENT)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

impl WsConn {
    /// Runs the connection after the 101 response: waits for hyper's upgrade, then serves it.
    pub(crate) async fn run(mut self, on_upgrade: hyper::upgrade::OnUpgrade) {
        let span = tracing::debug_span!("sente.ws", uid = %self.uid, client_id = %self.client_id);
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(parent: &span, error = %e, "websocket upgrade failed");
                self.closed("upgrade failed");
                return;
            }
        };
        let max = self.inner.limits().message.max_message_bytes;
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(ws_config(max)),
        )
        .await;
        tracing::debug!(parent: &span, packer = self.packer.name(), "websocket open");
        let reason = self.serve(ws).await;
        tracing::debug!(parent: &span, reason, "websocket closed");
        self.closed(reason);
    }

    pub(crate) fn closed(&self, _reason: &'static str) {
        self.outbox.set_gone();
        let (uid, cid, conn) = (&self.uid, &self.client_id, self.conn);
        self.inner
            .with_core(|core, now| core.handle_ws_closed(uid, cid, conn, now));
    }

    /// Queues `p` (fragmented when large) in the socket's write buffer, which writes to the
    /// socket once it holds more than `FRAGMENT` bytes; with `flush`, then writes everything
    /// queued. Each step runs within the write timeout, on the connection's one timer (the caller
    /// re-arms it for the keepalive afterwards).
    async fn send<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        timer: &mut Pin<&mut Sleep>,
        p: Option<&PackedBytes>,
        flush: bool,
    ) -> Result<(), &'static str>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        for msg in p.into_iter().flat_map(frames) {
            self.within_write_timeout(timer, ws.feed(msg)).await?;
        }
        if flush {
            self.within_write_timeout(timer, ws.flush()).await?;
        }
        Ok(())
    }

    /// Runs one socket operation; a stalled client fails it after `ws_write_timeout_ms`.
    async fn within_write_timeout<F>(
        &self,
        timer: &mut Pin<&mut Sleep>,
        op: F,
    ) -> Result<(), &'static str>
    where
        F: std::future::Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
    {
        let mut op = std::pin::pin!(op);
        // Most operations complete at once: arm the timer only for one that must wait (the
        // operation is kept and polled on, so nothing is lost or reordered).
        let r = if let Some(r) = op.as_mut().now_or_never() {
            r
        } else {
            let t = Duration::from_millis(self.inner.limits().ws_write_timeout_ms);
            timer.as_mut().reset(Instant::now() + t);
            tokio::select! {
                r = op => r,
                () = timer.as_mut() => return Err("write timed out (stalled client)"),
            }
        };
        r.map_err(|_| "write failed")
    }

    /// Sends a close frame and waits (bounded) for the client's, then lets the connection go.
    async fn close<S>(&self, ws: &mut WebSocketStream<S>, code: CloseCode, reason: &'static str)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let t = Duration::from_millis(self.inner.limits().ws_write_timeout_ms);
        if tokio::time::timeout(t, ws.close(Some(frame)))
            .await
            .is_err()
        {
            return;
        }
        drain(ws).await;
    }

    pub(crate) async fn serve<S>(&mut self, mut ws: WebSocketStream<S>) -> &'static str
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let inner = &self.inner;
        let max = inner.limits().message.max_message_bytes;
        // One timer for everything: write timeouts and the keepalive.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        // Sent once: not kept for the connection's lifetime.
        let handshake = std::mem::take(&mut self.handshake);
        if let Err(r) = Box::pin(self.send(&mut ws, &mut timer, Some(&handshake), true)).await {
            return r;
        }
        drop(handshake);
        let mut ka = Keepalive::new(inner.now(), inner.ws_kalive_ms, inner.ws_ping_timeout_ms);
        // Boxed: it is rarely set, and the connection's future stays small.
        let mut pending: Option<Box<EventMsg>> = None;
        let mut inline = InlineRunner::default();
        let idle_deadline = far_future();
        loop {
            // Write everything queued, in order, in as few syscalls as the write buffer allows.
            let mut fed = false;
            while let Some(out) = self.outbox.pop() {
                let packed = match out {
                    Out::Batch(b) => match b.packed(&*self.packer, max) {
                        Ok(p) => {
                            ka.handle_activity();
                            p
                        }
                        Err(e) => {
                            inner.count_dropped_push(&e, b.len());
                            continue;
                        }
                    },
                    Out::Reply(env) => match env.into_packed(&*self.packer) {
                        Ok(p) if p.as_bytes().len() <= max => p.into(),
                        Ok(p) => {
                            let size = p.as_bytes().len();
                            tracing::warn!(
                                size,
                                limit = max,
                                "reply over the message limit dropped"
                            );
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "reply could not be packed; dropped");
                            continue;
                        }
                    },
                    Out::Close(reason) => {
                        Box::pin(self.close(&mut ws, CloseCode::Normal, "")).await;
                        return reason;
                    }
                };
                if let Err(r) = Box::pin(self.send(&mut ws, &mut timer, Some(&packed), false)).await
                {
                    return r;
                }
                fed = true;
            }
            if fed {
                if let Err(r) = Box::pin(self.send(&mut ws, &mut timer, None, true)).await {
                    return r;
                }
            }
            if self.outbox.overflowed() {
                Box::pin(self.close(&mut ws, CloseCode::Again, "send queue full")).await;
                return "send queue full (slow client)";
            }
            let keepalive = ka.next_deadline().map(|d| inner.instant(d));
            let deadline = keepalive.unwrap_or(idle_deadline);
            // Re-arming a timer costs a trip through the timer wheel: only when it changed.
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                () = std::future::poll_fn(|cx| self.outbox.poll_ready(cx)) => {}
                () = std::future::poll_fn(|cx| inline.poll_progress(cx)), if inline.is_busy() => {}
                frame = ws.next(), if pending.is_none() && inline.has_room() => {
                    match frame {
                        None => return "client went away",
                        Some(Err(e)) => {
                            use tokio_tungstenite::tungstenite::Error;
                            return match e {
                                Error::Capacity(_) => {
                                    Box::pin(self.close(&mut ws, CloseCode::Size, "message too big")).await;
                                    "message over the size limit"
                                }
                                Error::ConnectionClosed | Error::AlreadyClosed => "closed",
                                _ => "protocol or IO error",
                            };
                        }
                        Some(Ok(msg)) => {
                            ka.handle_activity();
                            // Pongs and the replies of handlers run right here go to this
                            // task's own outbox: no wake-up needed, the loop drains it next.
                            self.outbox.set_awake();
                            match msg {
                                Message::Text(t) => self.received(self.on_data(t.as_bytes(), false), &mut inline, &mut pending),
                                Message::Binary(b) => self.received(self.on_data(&b, true), &mut inline, &mut pending),
                                Message::Close(_) => {
                                    // tungstenite answers the close; let the client end it.
                                    Box::pin(drain(&mut ws)).await;
                                    return "closed by the client";
                                }
                                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                            }
                        }
                    }
                }
                permit = inner.events_tx.reserve(), if pending.is_some() => {
                    if let (Ok(permit), Some(msg)) = (permit, pending.take()) {
                        permit.send(*msg);
                    }
                }
                () = timer.as_mut(), if keepalive.is_some() => {
                    match ka.poll(inner.now()) {
                        Some(KeepaliveAction::Ping) => {
                            match server_msg::ws_ping().into_packed(&*self.packer) {
                                Ok(p) => {
                                    if let Err(r) = Box::pin(self.send(&mut ws, &mut timer, Some(&p.into()), true)).await {
                                        return r;
                                    }
                                }
                                Err(e) => tracing::warn!(error = %e, "ping could not be packed"),
                            }
                        }
                        Some(KeepaliveAction::Close) => {
                            Box::pin(self.close(&mut ws, CloseCode::Normal, "")).await;
                            return "no answer to the keepalive ping";
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// Hands a received event to the attached router's handlers, run by this task, or else to
    /// the [`crate::EventStream`] (sent by the main loop as soon as the stream has room).
    fn received(
        &self,
        msg: EventMsg,
        inline: &mut InlineRunner,
        pending: &mut Option<Box<EventMsg>>,
    ) {
        match self.inner.router.get() {
            Some(router) => inline.offer(router, msg),
            None => *pending = Some(Box::new(msg)),
        }
    }

    /// One data frame: unpacked and classified, with the automatic pong for a client ping.
    fn on_data(&self, data: &[u8], binary: bool) -> EventMsg {
        let limits = &self.inner.limits().message;
        let unpacked = if binary == self.packer.is_binary() {
            if data.is_empty() {
                Ok(Envelope::new(Value::Nil))
            } else {
                Envelope::unpack(&*self.packer, data, limits).map_err(|e| e.to_string())
            }
        } else {
            Err(format!(
                "{} frame for the {} packer",
                if binary { "binary" } else { "text" },
                self.packer.name()
            ))
        };
        let (event, reply) = match unpacked {
            Ok(env) => {
                let msg = ClientMsg::classify(env);
                if let ClientMsg::Ping { cb } = &msg {
                    self.outbox
                        .push_reply(Out::Reply(Box::new(server_msg::pong(cb.clone()))));
                }
                let (event, cb) = msg.into_event();
                (event, cb.map(|cb| Reply::ws(self.outbox.clone(), cb)))
            }
            Err(reason) => {
                tracing::debug!(%reason, "frame could not be unpacked");
                let data = if binary {
                    Value::Int(data.len() as i64)
                } else {
                    Value::Str(String::from_utf8_lossy(data).into_owned())
                };
                (crate::server::reserved_event(ids::BAD_PACKAGE, data), None)
            }
        };
        EventMsg {
            event,
            uid: self.uid.clone(),
            client_id: self.client_id.clone(),
            transport: Transport::Ws,
            reply,
            request: self.request.clone(),
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Reads until the client ends the connection (bounded: 5 s).
async fn drain<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

impl ConnCtx {
    pub(crate) fn ws(request: Arc<ChskRequest>) -> Self {
        ConnCtx {
            request,
            transport: Transport::Ws,
        }
    }
}
