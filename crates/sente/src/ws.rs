//! The WebSocket transport (spec 5): the upgrade over hyper, and one task per connection that
//! reads frames, writes the connection's ordered queue, and runs the keepalive.

use crate::dispatch::InlineRunner;
use crate::framing::{WsSocket, close_payload};
use crate::gate::Gate;
use crate::meters::Meters;
use crate::metrics::Why;
use crate::metrics::{ConnMetrics, Open};
use crate::msg::{EventMsg, Reply};
use crate::outbox::{Out, Outbox, Popped};
use crate::registry::{ConnCtx, LiveGuard};
use crate::request::ChskRequest;
use crate::response::{ChskBody, plain, reject};
use crate::shell::{Admitted, Shell};
use crate::wsread::{INVALID_TEXT, Incoming, ReadError, code};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use sente_proto::server::message::{self, Inbound};
use sente_proto::server::replay::{RESUME_PARAM, Resume};
use sente_proto::server::{ConnId, Keepalive, KeepaliveAction, PackedBytes, Transport};
use sente_proto::{ClientId, Limits, Packer, Uid};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

/// Outgoing messages larger than this are sent as fragments of this size, and the connection's
/// write queue ([`crate::wswrite`]) is written to the socket once it holds more than this.
/// Messages queued together go out in one vectored write. Clients reassemble fragments
/// transparently.
const FRAGMENT: usize = 16 * 1024;

/// Whether the request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade(headers: &http::HeaderMap) -> bool {
    has_token(headers, &header::UPGRADE, "websocket")
}

/// Whether a comma-separated header holds `token` (ASCII case-insensitive).
fn has_token(headers: &http::HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The `Sec-WebSocket-Key` of an upgrade request whose handshake is well-formed (RFC 6455
/// 4.2.1: HTTP/1.1 or later, `Connection: Upgrade`, `Sec-WebSocket-Version: 13`, a key), or
/// what is wrong with it.
pub(crate) fn handshake_key(parts: &http::request::Parts) -> Result<HeaderValue, &'static str> {
    if parts.version < http::Version::HTTP_11 {
        return Err("Bad WebSocket handshake: an upgrade needs HTTP/1.1");
    }
    if !has_token(&parts.headers, &header::CONNECTION, "upgrade") {
        return Err("Bad WebSocket handshake: `Connection: Upgrade` is required");
    }
    let version_13 = parts
        .headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "13");
    match parts.headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if version_13 => Ok(key.clone()),
        _ => Err(
            "Bad WebSocket handshake: Sec-WebSocket-Key and Sec-WebSocket-Version: 13 are required",
        ),
    }
}

/// The `Sec-WebSocket-Accept` answer to a handshake's `Sec-WebSocket-Key` (RFC 6455 4.2.2):
/// the base64 of the SHA-1 of the key followed by the protocol's GUID.
fn accept_key(key: &[u8]) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// How the service runs a WebSocket it accepted.
pub(crate) enum Upgrade {
    /// hyper's upgrade: the service spawns the connection task itself.
    Hyper(hyper::upgrade::OnUpgrade),
    /// An adapter's slot: the connection goes back to the adapter
    /// ([`ChskService::call_with_upgrade`](crate::ChskService::call_with_upgrade)).
    Detached(Slot),
}

impl Upgrade {
    /// The upgrade of a request: hyper's when the HTTP server gave one, else an adapter's slot.
    pub(crate) fn take(ext: &mut http::Extensions) -> Option<Upgrade> {
        if let Some(on) = ext.remove::<hyper::upgrade::OnUpgrade>() {
            return Some(Upgrade::Hyper(on));
        }
        ext.remove::<Slot>().map(Upgrade::Detached)
    }

    /// Runs an accepted connection (called right before the `101` is returned).
    fn start(self, conn: WsConn) {
        match self {
            Upgrade::Hyper(on) => {
                let span = conn.span();
                tokio::spawn(conn.run(on).instrument(span));
            }
            Upgrade::Detached(slot) => slot.put(Accepted(Some(conn))),
        }
    }
}

/// Where the service leaves an accepted WebSocket when the request has no hyper upgrade.
#[derive(Clone, Default)]
pub(crate) struct Slot(Arc<Mutex<Option<Accepted>>>);

impl Slot {
    fn put(&self, accepted: Accepted) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(accepted);
    }

    pub(crate) fn take(&self) -> Option<Accepted> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// A connection accepted for an adapter, not yet running; dropping it ends it on the server's
/// side.
pub(crate) struct Accepted(Option<WsConn>);

impl Accepted {
    pub(crate) fn uid(&self) -> Option<&Uid> {
        self.0.as_ref().map(|c| &c.uid)
    }

    /// Serves the connection over `io` until it closes.
    pub(crate) async fn serve<S>(mut self, io: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let Some(conn) = &mut self.0 else { return };
        let span = conn.span();
        // Instrumented as a whole: a future moved into `instrument` would be stored twice.
        async {
            tracing::debug!("websocket open");
            let mut ws = WsSocket::new(io, conn.shell.max_message());
            let reason = conn.serve(&mut ws).await;
            tracing::debug!(reason, "websocket closed");
        }
        .instrument(span)
        .await;
        // Dropping `self` tells the server the connection ended.
    }
}

impl Drop for Accepted {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.closed("connection ended");
        }
    }
}

/// Everything a connection task needs.
pub(crate) struct WsConn {
    pub(crate) shell: Arc<Shell>,
    pub(crate) uid: Uid,
    pub(crate) client_id: ClientId,
    pub(crate) conn: ConnId,
    pub(crate) packer: Arc<dyn Packer>,
    pub(crate) request: Arc<ChskRequest>,
    pub(crate) outbox: Arc<Outbox>,
    /// Sent first, then dropped (boxed: the task's state is most of an idle connection's
    /// memory).
    pub(crate) handshake: Option<Box<PackedBytes>>,
    pub(crate) metrics: ConnMetrics,
    /// The most events queued at once so far (`sente_pending_sends`).
    pub(crate) peak: usize,
    /// Counts the connection in `sente_connections` and
    /// [`Stats::ws_connections`](crate::Stats::ws_connections) while it lives.
    pub(crate) _open: Open,
    /// Counts the connection for a shutdown's wait.
    pub(crate) _live: LiveGuard,
}

/// `400` for a malformed upgrade, naming the WebSocket version the server speaks.
fn bad_handshake(node: &Meters, why: &'static str) -> Response<ChskBody> {
    let mut r = reject(node, StatusCode::BAD_REQUEST, Why::BadHandshake, why);
    r.headers_mut().insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    r
}

/// Accepts an admitted WebSocket upgrade: registers the connection, starts it (over hyper, or
/// hands it back to an adapter) and answers `101 Switching Protocols`.
pub(crate) fn accept(
    shell: Arc<Shell>,
    a: Admitted,
    on_upgrade: Option<Upgrade>,
    // From [`handshake_key`].
    key: Result<HeaderValue, &'static str>,
) -> Response<ChskBody> {
    let key = match key {
        Ok(key) => key,
        Err(why) => return bad_handshake(shell.registry().meters(), why),
    };
    let Some(on_upgrade) = on_upgrade else {
        return reject(
            shell.registry().meters(),
            StatusCode::INTERNAL_SERVER_ERROR,
            Why::NoUpgrade,
            "This HTTP server does not support connection upgrades (serve with hyper upgrades enabled)",
        );
    };
    let Admitted {
        request,
        uid,
        client_id,
        packer,
        ..
    } = a;
    let packer_name = packer.name();
    let data = shell.guard.handshake_data(&request);
    let resume = Resume::parse(request.param(RESUME_PARAM));
    let registry = shell.registry().clone();
    let outbox = Arc::new(Outbox::new(registry.limits().max_pending_events_per_client));
    let ctx = ConnCtx {
        request: request.clone(),
        transport: Transport::Ws,
        packer: packer.clone(),
    };
    let opened = registry.with_core(&uid, |c, now| {
        c.handle_ws_open_resume(&uid, &client_id, outbox.clone(), ctx, &resume, now)
    });
    let (conn, resumed) = match opened {
        Ok(c) => c,
        Err(e) => {
            return reject(
                shell.registry().meters(),
                StatusCode::TOO_MANY_REQUESTS,
                Why::ConnectionLimit,
                e.to_string(),
            );
        }
    };
    crate::metrics::resumed(Transport::Ws, &resume, resumed.as_ref());
    // Packed after the open: a resuming client's handshake tells where it stands. The task
    // sends it before anything the open queued (the replay).
    let idem = crate::idem::announced(&request);
    let handshake = match message::handshake_ext(
        &uid,
        data,
        resumed.as_ref(),
        idem,
        &*packer,
        shell.max_message(),
    ) {
        Ok(p) => p,
        Err(e) => {
            registry.with_core(&uid, |c, now| {
                c.handle_ws_closed(&uid, &client_id, conn, now);
            });
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Handshake could not be packed: {e}"),
            );
        }
    };
    crate::metrics::handshake(Transport::Ws);
    tracing::debug!(%uid, %client_id, packer = packer.name(), "websocket connect");
    let accept = accept_key(key.as_bytes());
    let metrics = registry.conn_metrics(Transport::Ws, packer_name);
    let task = WsConn {
        _live: registry.live(),
        shell,
        uid,
        client_id,
        conn,
        packer,
        request,
        outbox,
        handshake: Some(Box::new(handshake)),
        _open: Open::new(&metrics),
        metrics,
        peak: 0,
    };
    on_upgrade.start(task);
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// A connection's one timer (write timeouts and the keepalive). The task's select polls it
/// through a [`Gate`]: pushes wake the task far more often than the timer fires.
struct ConnTimer<'a> {
    sleep: Pin<&'a mut Sleep>,
    gate: Gate,
}

impl ConnTimer<'_> {
    /// Moves the deadline; the timer is polled (and registers its waker) on the next round.
    fn reset(&mut self, at: Instant) {
        self.sleep.as_mut().reset(at);
        self.gate.open();
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = &mut self.sleep;
        self.gate.poll(cx, |cx| sleep.as_mut().poll(cx))
    }
}

impl WsConn {
    /// Runs the connection after the 101 response: waits for hyper's upgrade, then serves it.
    /// Runs within the connection's span ([`WsConn::span`]).
    ///
    /// Not an `async fn`: one of those keeps its by-value arguments twice in its state (as
    /// passed, and moved into the body), and this state is most of an idle connection's memory.
    #[expect(clippy::manual_async_fn, reason = "an async fn stores `self` twice")]
    pub(crate) fn run(
        mut self,
        on_upgrade: hyper::upgrade::OnUpgrade,
    ) -> impl Future<Output = ()> + Send {
        async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    self.closed("upgrade failed");
                    return;
                }
            };
            tracing::debug!("websocket open");
            let mut ws = WsSocket::new(TokioIo::new(upgraded), self.shell.max_message());
            let reason = self.serve(&mut ws).await;
            tracing::debug!(reason, "websocket closed");
            self.closed(reason);
        }
    }

    /// The connection's span (target `sente::ws`, info): uid, client id, transport, packer.
    fn span(&self) -> tracing::Span {
        crate::dispatch::conn_span(
            &self.uid,
            &self.client_id,
            Transport::Ws,
            self.packer.name(),
        )
    }

    pub(crate) fn closed(&self, _reason: &'static str) {
        self.metrics.pending.record(self.peak as f64);
        self.outbox.set_gone();
        let (uid, cid, conn) = (&self.uid, &self.client_id, self.conn);
        self.shell
            .registry()
            .with_core(uid, |core, now| core.handle_ws_closed(uid, cid, conn, now));
    }

    /// Queues `p` in the connection's write queue (fragments of at most `FRAGMENT` bytes
    /// sharing the packed bytes); [`WsConn::flush`] writes it.
    fn queue<S>(&self, ws: &mut WsSocket<S>, p: PackedBytes) {
        self.metrics.bytes_out.increment(p.bytes.len() as u64);
        ws.out().message(p.bytes, p.binary, FRAGMENT);
    }

    /// Packs and queues everything waiting in the connection's outbox, in order (`first`: the
    /// item the outbox's branch already took): pushes (with their resume markers) and replies.
    /// `Err` with the reason when the server closes the connection (what was queued before
    /// goes out first).
    fn queue_outbox<S>(
        &mut self,
        ws: &mut WsSocket<S>,
        ka: &mut Keepalive,
        max: usize,
        mut first: Option<Popped>,
    ) -> Result<(), &'static str> {
        let registry = self.shell.registry();
        let mut more = true;
        while more && let Some(popped) = first.take().or_else(|| self.outbox.pop()) {
            let Popped { out, queued, last } = popped;
            more = !last;
            if queued > self.peak {
                self.peak = queued;
                registry.pending_sends(queued);
            }
            let packed = match out {
                Out::Batch(b, seq) => match self
                    .shell
                    .large
                    .outgoing(
                        || registry.now(),
                        &b,
                        crate::large::announced(&self.request),
                        &self.uid,
                        &self.client_id,
                    )
                    .packed(&*self.packer, max)
                {
                    Ok(p) => {
                        ka.handle_activity();
                        if let Some(seq) = seq
                            && let Ok(marker) = message::seq_marker(seq, &*self.packer)
                        {
                            self.queue(ws, marker);
                        }
                        self.metrics.batch_sent(b.len());
                        p
                    }
                    Err(e) => {
                        registry.count_dropped_push(&e, b.len());
                        continue;
                    }
                },
                Out::Reply(env, since) => match message::pack(*env, &*self.packer, max) {
                    Ok(p) => {
                        if let Some(since) = since {
                            self.metrics.replied(since);
                        }
                        p
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reply could not be packed; dropped");
                        continue;
                    }
                },
                Out::Close(reason) => return Err(reason),
            };
            self.queue(ws, packed);
        }
        Ok(())
    }

    /// Writes everything queued and flushes the socket, without a timer or an allocation when
    /// the socket takes it all at once (the common case); otherwise waits for the socket
    /// within the write timeout.
    async fn flush<S>(
        &self,
        ws: &mut WsSocket<S>,
        timer: &mut ConnTimer<'_>,
    ) -> Result<(), &'static str>
    where
        S: tokio::io::AsyncWrite + Unpin,
    {
        let now = ws.poll_drain(&mut Context::from_waker(std::task::Waker::noop()), true);
        match now {
            Poll::Ready(Ok(())) => Ok(()),
            Poll::Ready(Err(_)) => Err("write failed"),
            Poll::Pending => Box::pin(self.flush_waiting(ws, timer)).await,
        }
    }

    /// The rest of a [`WsConn::flush`] the socket did not take at once: each `FRAGMENT` bytes
    /// (at most one frame) must be written within `ws_write_timeout_ms` (the time restarts
    /// only then, so a client trickling its reads is dropped like a stalled one), on the
    /// connection's one timer (the caller re-arms it for the keepalive afterwards).
    async fn flush_waiting<S>(
        &self,
        ws: &mut WsSocket<S>,
        timer: &mut ConnTimer<'_>,
    ) -> Result<(), &'static str>
    where
        S: tokio::io::AsyncWrite + Unpin,
    {
        let t = Duration::from_millis(self.shell.registry().limits().ws_write_timeout_ms);
        loop {
            let before = ws.queued();
            timer.reset(Instant::now() + t);
            // `Ok(true)`: all written; `Ok(false)`: a fragment's worth written, the time restarts.
            let step = std::future::poll_fn(|cx| match ws.poll_drain(cx, true) {
                Poll::Ready(r) => Poll::Ready(r.map(|()| true)),
                Poll::Pending if before - ws.queued() >= FRAGMENT => Poll::Ready(Ok(false)),
                Poll::Pending => Poll::Pending,
            });
            tokio::select! {
                r = step => match r {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(_) => return Err("write failed"),
                },
                () = timer.sleep.as_mut() => {
                    crate::metrics::slow_consumer(Transport::Ws, "write-timeout");
                    return Err("write timed out (stalled client)");
                }
            }
        }
    }

    /// Sends a close frame (`code`, `reason`) and waits (bounded) for the client's answer, then
    /// lets the connection go.
    async fn close<S>(&self, ws: &mut WsSocket<S>, code: u16, reason: &'static str)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        if self.close_frame(ws, close_payload(code, reason)).await {
            drain(ws).await;
        }
    }

    /// Sends a close frame (the server's, or the answer to the client's); whether the socket
    /// took it within the write timeout.
    async fn close_frame<S>(&self, ws: &mut WsSocket<S>, payload: Bytes) -> bool
    where
        S: tokio::io::AsyncWrite + Unpin,
    {
        ws.close_frame(payload);
        let t = Duration::from_millis(self.shell.registry().limits().ws_write_timeout_ms);
        let sent = std::future::poll_fn(|cx| ws.poll_drain(cx, true));
        matches!(tokio::time::timeout(t, sent).await, Ok(Ok(())))
    }

    /// Serves the connection over `ws` (the bytes after the `101` response) until it ends.
    pub(crate) async fn serve<S>(&mut self, ws: &mut WsSocket<S>) -> &'static str
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let registry = self.shell.registry().clone();
        let max = self.shell.max_message();
        if !self.packer.is_binary() && self.packer.checks_utf8() {
            ws.leave_text_check();
        }
        // One timer for everything: write timeouts and the keepalive.
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        let mut timer = ConnTimer {
            sleep,
            gate: Gate::new(),
        };
        // Sent once: not kept for the connection's lifetime.
        if let Some(handshake) = self.handshake.take() {
            self.queue(ws, *handshake);
        }
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        let timing = self.shell.timing;
        let mut ka = Keepalive::new(
            registry.now(),
            ms(timing.ws_kalive),
            ms(timing.ws_ping_timeout),
        );
        let mut inline: InlineRunner = self.shell.dispatcher.inline(self.client_id.clone());
        // Pushes wake this task far more often than the client writes: the read side is polled
        // only after its own waker fired (see `crate::gate`).
        let mut read_gate = Gate::new();
        // What the outbox's branch took from the queue when it woke the loop.
        let mut popped = None;
        loop {
            // Everything waiting, in order, written in as few syscalls as the socket allows.
            if let Err(reason) = self.queue_outbox(ws, &mut ka, max, popped.take()) {
                Box::pin(self.close(ws, code::NORMAL, "")).await;
                return reason;
            }
            if ws.queued() > 0 {
                if let Err(r) = self.flush(ws, &mut timer).await {
                    return r;
                }
            }
            if self.outbox.overflowed() {
                registry.count_dropped_client(Transport::Ws);
                Box::pin(self.close(ws, code::AGAIN, "send queue full")).await;
                return "send queue full (slow client)";
            }
            let keepalive = ka.next_deadline().map(|d| registry.instant(d));
            // Re-arming a timer costs a trip through the timer wheel: only when it changed.
            // Without a keepalive the timer's branch is off, whatever its deadline.
            if let Some(deadline) = keepalive
                && timer.sleep.deadline() != deadline
            {
                timer.reset(deadline);
            }
            // Biased (no random start per poll), in an order where no branch starves another:
            // the handlers' progress cannot stay ready without new reads; a read that stays
            // ready is a client that is not idle (the timer only runs the keepalive); and the
            // outbox, last, is drained at the top of every round whichever branch fired.
            tokio::select! {
                biased;
                () = std::future::poll_fn(|cx| inline.poll_progress(cx)), if inline.is_busy() => {}
                frame = std::future::poll_fn(|cx| read_gate.poll(cx, |cx| ws.poll_next(cx))), if inline.has_room() => {
                    let msg = match frame {
                        Ok(msg) => msg,
                        Err(ReadError::Eof) => return "client went away",
                        Err(ReadError::Io(e)) => {
                            tracing::debug!(error = %e, "websocket read failed");
                            return "read failed";
                        }
                        Err(ReadError::Protocol(code, why)) => {
                            Box::pin(self.close(ws, code, why)).await;
                            return why;
                        }
                    };
                    ka.handle_activity();
                    // Pongs and the replies of handlers run right here go to this task's own
                    // outbox: no wake-up needed, the loop drains it next.
                    self.outbox.set_awake();
                    match msg {
                        Incoming::Data(data, binary) => {
                            let len = data.len();
                            let decode = move |packer: &dyn Packer, data: &[u8], limits: &Limits| {
                                message::ws_message(packer, data, binary, limits)
                            };
                            // A small message (most) is decoded here, without a future; a large
                            // one where it cannot stall other clients.
                            let inbound = match self.shell.decode_here(&data, &*self.packer, decode) {
                                Ok(inbound) => inbound,
                                Err(decode) => Box::pin(self.shell.decode(data, &self.packer, decode))
                                    .await
                                    .unwrap_or_else(|data| message::ws_undecodable(&data, binary)),
                            };
                            if !self.on_inbound(inbound, len, &mut inline) {
                                Box::pin(self.close(ws, code::INVALID, INVALID_TEXT)).await;
                                return INVALID_TEXT;
                            }
                        }
                        // Written with the next flush, at the top of the loop.
                        Incoming::Ping(payload) => ws.pong(payload),
                        Incoming::Pong => {}
                        Incoming::Close(payload) => {
                            // The close handshake: the client's code and reason back, then the
                            // server ends the TCP connection (RFC 6455 7.1.1).
                            Box::pin(self.close_frame(ws, payload)).await;
                            return "closed by the client";
                        }
                    }
                }
                () = std::future::poll_fn(|cx| timer.poll(cx)), if keepalive.is_some() => {
                    match ka.poll(registry.now()) {
                        Some(KeepaliveAction::Ping) => {
                            // Written at the top of the loop.
                            match message::ws_ping(&*self.packer) {
                                Ok(p) => self.queue(ws, p),
                                Err(e) => tracing::warn!(error = %e, "ping could not be packed"),
                            }
                        }
                        Some(KeepaliveAction::Close) => {
                            Box::pin(self.close(ws, code::NORMAL, "")).await;
                            return "no answer to the keepalive ping";
                        }
                        None => {}
                    }
                }
                first = std::future::poll_fn(|cx| self.outbox.poll_pop(cx)) => popped = first,
            }
        }
    }

    /// What the protocol decided for one data frame of `len` bytes ([`message::ws_message`]):
    /// the pong of a ping goes to this connection's queue, the event to the handlers run by
    /// this task. `false`: a text message that is not UTF-8 (the connection must close with
    /// 1007).
    fn on_inbound(&self, inbound: Inbound, len: usize, inline: &mut InlineRunner) -> bool {
        if inbound.invalid_text {
            return false;
        }
        if let Some(answer) = inbound.answer {
            self.outbox.push_reply(Out::Reply(Box::new(answer), None));
        }
        self.metrics.bytes_in.increment(len as u64);
        let Some(event) = inbound.event else {
            return true;
        };
        self.metrics.event_in();
        if event.id().as_str() == sente_proto::event::ids::BAD_PACKAGE {
            Why::BadPackage.count(self.shell.registry().meters(), None);
        }
        inline.offer(EventMsg {
            event,
            uid: self.uid.clone(),
            client_id: self.client_id.clone(),
            transport: Transport::Ws,
            idem: crate::idem::request_id(&self.request, inbound.reply_to.as_ref()),
            claim: None,
            reply: inbound.reply_to.map(|cb| {
                let owed = self.shell.registry().reply_owed(Some(&self.outbox));
                Reply::ws(self.outbox.clone(), cb, std::time::Instant::now(), owed)
            }),
            request: self.request.clone(),
            server: self.shell.server().clone(),
        });
        true
    }
}

/// Reads until the client answers the server's close frame or ends the connection (bounded:
/// 5 s).
async fn drain<S>(ws: &mut WsSocket<S>)
where
    S: tokio::io::AsyncRead + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(m) = std::future::poll_fn(|cx| ws.poll_next(cx)).await {
            if matches!(m, Incoming::Close(_)) {
                return;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_of_the_rfc_example() {
        // RFC 6455 1.3.
        assert_eq!(
            super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
