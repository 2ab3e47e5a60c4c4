//! The Ajax transport (spec 6): the handshake and the long-poll (`GET`), and events sent with
//! `POST`, answered at once (`:chsk/dummy-cb-200`, `"pong"`) or with the handler's reply.

use crate::meters::Meters;
use crate::metrics::ConnMetrics;
use crate::metrics::Why;
use crate::msg::{EventMsg, Reply};
use crate::params::{Params, TooManyFields};
use crate::registry::{ConnCtx, Registry};
use crate::response::{ChskBody, envelope, packed, plain, reject};
use crate::shell::{Admitted, Shell};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sente_proto::server::message::{self, InboundError};
use sente_proto::server::replay::{RESUME_PARAM, Resume};
use sente_proto::server::{ConnId, MailboxResume, PollAnswer, Transport};
use sente_proto::{ClientId, Uid};
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::Instrument;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Tells the core when a held poll request goes away without an answer.
struct PollGuard {
    registry: Arc<Registry>,
    uid: Uid,
    cid: ClientId,
    conn: ConnId,
    /// The core answered the poll: it has let go of the poll already (an answer is only sent
    /// once the client's entry no longer holds this poll), so there is nothing to tell it.
    answered: bool,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let (uid, cid, conn) = (&self.uid, &self.cid, self.conn);
        self.registry
            .with_core(uid, |c, now| c.handle_poll_ended(uid, cid, conn, now));
    }
}

/// What an Ajax GET started.
enum Started {
    /// A handshake (with what a resuming client's handshake tells it, and what to put in
    /// front of its mailbox first).
    Handshake(MailboxResume),
    /// A long-poll.
    Poll(ConnId),
}

/// `GET`: the handshake (`handshake?` parameter, or a client the server does not know), or a
/// long-poll held until pushes arrive, `lp_timeout_ms` passes, or the uid is closed.
///
/// With the backplane's Ajax mailboxes (a cluster), a client "known" is one registered in the
/// mailboxes by any node's handshake, so its polls may land on any node; a held poll is
/// answered from its mailbox.
pub(crate) async fn get(shell: Arc<Shell>, a: Admitted) -> Response<ChskBody> {
    let span = span(&a);
    get_admitted(shell, a).instrument(span).await
}

async fn get_admitted(shell: Arc<Shell>, a: Admitted) -> Response<ChskBody> {
    let registry = shell.registry().clone();
    let max = shell.max_message();
    let Admitted {
        request,
        uid,
        client_id: cid,
        packer,
        ..
    } = a;
    let handshake = request.params_inner().has("handshake?");
    let m = registry.conn_metrics(Transport::Ajax, packer.name());
    // The context a new client entry keeps: a copy of the request out of hyper's buffer,
    // made only for an entry (a poll of a known client keeps nothing of its request); a
    // handshake's is made before the core's lock is taken.
    let make_ctx = || ConnCtx {
        request: Arc::new(request.kept()),
        transport: Transport::Ajax,
        packer: packer.clone(),
    };
    let mut made = handshake.then(make_ctx);
    let mut ctx = || made.take().unwrap_or_else(make_ctx);
    let mailbox = registry.mailbox().cloned();
    // A resuming client names its position on every GET: a poll the server takes for a
    // handshake (it forgot the client) then resumes too.
    let resume = Resume::parse(request.param(RESUME_PARAM));
    // Mailbox mode: known here or registered by any node, decided once (the local entry may
    // end its grace period while the registration is renewed below; the poll recreates it).
    // For a resuming handshake: whether its mailbox was kept (registered before this GET).
    let mut known = false;
    if let Some(mb) = &mailbox {
        // Settles what the client's previous answer carried (a poll proves it arrived; see
        // `Mailbox::settle`); runs before the registration and take below (same queue).
        let settled = mb.settle(&uid, &cid, handshake);
        tokio::spawn(settled);
    }
    if let Some(mb) = &mailbox {
        if !handshake {
            known = registry.with_core(&uid, |c, _| c.ajax_knows(&uid, &cid))
                || mb.known(&uid, &cid).await;
        } else if resume.is_on() {
            known = mb.known(&uid, &cid).await;
        }
    }
    if let Some(mb) = &mailbox {
        // Registered (or kept) before the poll is held, so no push meanwhile misses it.
        mb.register(&uid, &cid, registry.mailbox_ttl()).await;
    }
    // A resuming handshake in a cluster: the numbering now (every later push is in the
    // mailbox registered above), once this node applied that far (see
    // `Core::handle_ajax_handshake_mailbox`).
    let upto = match (&mailbox, handshake, &resume) {
        (Some(mb), true, Resume::From(_)) => {
            let upto = mb.sequence_now().await;
            if let Some(at) = upto {
                caught_up(&registry, &uid, at).await;
            }
            upto
        }
        _ => None,
    };
    let (tx, rx) = oneshot::channel();
    let started = registry.with_core(&uid, |c, now| {
        if handshake || (!known && !c.ajax_knows(&uid, &cid)) {
            let kept = handshake && known;
            match mailbox {
                Some(_) => {
                    c.handle_ajax_handshake_mailbox(&uid, &cid, ctx(), &resume, (kept, upto), now)
                }
                None => c
                    .handle_ajax_handshake_resume(&uid, &cid, ctx(), &resume, now)
                    .map(MailboxResume::of),
            }
            .map(Started::Handshake)
        } else {
            c.handle_ajax_poll_with(&uid, &cid, tx, ctx, &resume, now)
                .map(Started::Poll)
        }
    });
    let conn = match started {
        Err(e) => {
            return reject(
                shell.registry().meters(),
                StatusCode::TOO_MANY_REQUESTS,
                Why::ConnectionLimit,
                e.to_string(),
            );
        }
        Ok(Started::Handshake(mut answer)) => {
            let fill = std::mem::take(&mut answer.fill);
            let filled = match &mailbox {
                Some(mb) if !fill.is_empty() => mb.fill(&uid, &cid, fill).await,
                _ => fill.is_empty(),
            };
            let resumed = answer.answer(filled);
            crate::metrics::handshake(Transport::Ajax);
            tracing::debug!("ajax handshake");
            crate::metrics::resumed(Transport::Ajax, &resume, resumed.as_ref());
            let data = shell.guard.handshake_data(&request);
            let idem = crate::idem::announced(&request);
            return match message::handshake_ext(&uid, data, resumed.as_ref(), idem, &*packer, max) {
                Ok(p) => sent(&m, packed(p)),
                Err(e) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Handshake could not be packed: {e}"),
                ),
            };
        }
        Ok(Started::Poll(conn)) => conn,
    };
    // Not kept while the poll is held: it may still be in hyper's read buffer.
    let large = crate::large::announced(&request);
    drop(request);
    if mailbox.is_some() {
        // What waits in the mailbox answers the poll at once.
        registry.wake(uid.clone(), cid.clone(), conn);
    }
    let _live = registry.live();
    let _open = crate::metrics::Open::new(&m);
    let mut guard = PollGuard {
        registry: registry.clone(),
        uid,
        cid,
        conn,
        answered: false,
    };
    let answer = rx.await;
    guard.answered = answer.is_ok();
    let (b, seq) = match answer {
        Ok(PollAnswer::Batch(b)) => (b, None),
        Ok(PollAnswer::Numbered(b, n)) => (b, Some(n)),
        Ok(PollAnswer::Timeout) | Err(_) => {
            return sent(&m, envelope(&*packer, message::ajax_reply(None), max));
        }
        Ok(PollAnswer::Closed) => {
            return plain(StatusCode::GONE, "Connection closed by the server");
        }
    };
    let answer = match shell
        .large
        .outgoing(|| registry.now(), &b, large, &guard.uid, &guard.cid)
        .packed_numbered(&*packer, max, seq)
    {
        Ok(p) => {
            m.batch_sent(b.len());
            sent(&m, packed(p))
        }
        Err(e) => {
            registry.count_dropped_push(&e, b.len());
            sent(&m, envelope(&*packer, message::ajax_reply(None), max))
        }
    };
    if let Some(mb) = &mailbox {
        // The answer is made and goes to the connection as this returns: the lease of its take
        // is marked delivered now (not when the core handed the batch to this request, which
        // may still go away unanswered), so a handshake drops it rather than re-sending it (see
        // `Mailbox::delivered`).
        tokio::spawn(mb.delivered(&guard.uid, &guard.cid));
    }
    answer
}

/// How long a resuming Ajax handshake in a cluster waits for this node to apply the pushes
/// numbered before the client's mailbox existed (it answers `recovered: false` if it is
/// further behind than that).
const CATCH_UP: Duration = Duration::from_secs(1);

/// Waits until the shard of `uid` applied the cluster's numbers up to `at` (`(epoch, seq)`),
/// or [`CATCH_UP`] passed.
async fn caught_up(registry: &Registry, uid: &Uid, (epoch, seq): (u64, u64)) {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        let applied = registry.with_core(uid, |c, _| c.global_position());
        if applied.is_some_and(|(e, n)| e != epoch || n >= seq)
            || tokio::time::Instant::now() >= deadline
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `GET ?large=<id>` (admitted like a poll): an offloaded push ([`crate::large`]) as a
/// one-event batch, packed with the client's packer (once per packer, however many clients
/// fetch it); `404` unknown or expired, `403` not sent to this client, `410` fetched already.
pub(crate) async fn large(shell: Arc<Shell>, a: Admitted) -> Response<ChskBody> {
    let span = span(&a);
    large_admitted(shell, a).instrument(span).await
}

async fn large_admitted(shell: Arc<Shell>, a: Admitted) -> Response<ChskBody> {
    let registry = shell.registry();
    let id = a
        .request
        .param(sente_proto::large::PARAM)
        .unwrap_or_default();
    let body = match shell.large.fetch(id, &a.uid, &a.client_id, registry.now()) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "large event fetch refused");
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::NOT_FOUND);
            return plain(status, e.to_string());
        }
    };
    let m = registry.conn_metrics(Transport::Ajax, a.packer.name());
    // Packed off the workers that serve connections (on the blocking pool, like the decoding
    // of a large message): an offloaded body is large by definition.
    let (packer, max, b) = (a.packer.clone(), shell.max_message(), body.clone());
    let done = shell
        .unpack(usize::MAX, move || b.packed(&*packer, max))
        .await;
    match done {
        Some(Ok(p)) => {
            m.batch_sent(body.len());
            sent(&m, packed(p))
        }
        Some(Err(e)) => {
            registry.count_dropped_push(&e, 1);
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("The event could not be packed: {e}"),
            )
        }
        None => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The event could not be packed",
        ),
    }
}

/// Counts a reply the client waits for; released on drop.
struct PendingReply {
    shell: Arc<Shell>,
    cid: ClientId,
}

impl PendingReply {
    fn acquire(shell: &Arc<Shell>, cid: &ClientId) -> Option<Self> {
        let limit = shell.registry().limits().max_pending_replies_per_client;
        let ok = shell
            .replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .acquire(cid, limit);
        ok.then(|| PendingReply {
            shell: shell.clone(),
            cid: cid.clone(),
        })
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.shell
            .replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(&self.cid);
    }
}

fn too_many_fields(node: &Meters, e: TooManyFields) -> Response<ChskBody> {
    reject(
        node,
        StatusCode::BAD_REQUEST,
        Why::TooManyFields,
        e.to_string(),
    )
}

/// Reads a request body: at most `limit` bytes (checked as it streams in), within `timeout`.
/// `Err` is the answer (413, 408, or 400); the partial body is dropped with it.
async fn read_body<B>(
    node: &Meters,
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Box<Response<ChskBody>>>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Box::new(reject(
            node,
            StatusCode::PAYLOAD_TOO_LARGE,
            Why::BodyTooLarge,
            "Message over the size limit",
        ))),
        Ok(Err(_)) => Err(Box::new(reject(
            node,
            StatusCode::BAD_REQUEST,
            Why::BodyReadError,
            "The request body could not be read",
        ))),
        Err(_) => Err(Box::new(reject(
            node,
            StatusCode::REQUEST_TIMEOUT,
            Why::BodyReadTimeout,
            format!(
                "The request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        ))),
    }
}

fn busy(node: &Meters) -> Response<ChskBody> {
    reject(
        node,
        StatusCode::TOO_MANY_REQUESTS,
        Why::QueueFull,
        "Too many events of this client are waiting for their handlers",
    )
}

/// `POST`: one event (`ppstr` form field, or the body itself with `binary?`). The guard's
/// checks that need no body run first; the body is read only then, within the size limit and
/// [`ServerLimits::body_read_timeout_ms`](sente_proto::server::ServerLimits::body_read_timeout_ms).
pub(crate) async fn post<B>(shell: Arc<Shell>, req: Request<B>) -> Response<ChskBody>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let _live = shell.registry().live();
    let (parts, body) = req.into_parts();
    let limits = shell.registry().limits();
    let (max_fields, body_timeout) = (
        limits.max_form_fields,
        Duration::from_millis(limits.body_read_timeout_ms),
    );
    let params = match Params::parse(parts.uri.query().unwrap_or(""), max_fields) {
        Ok(p) => p,
        Err(e) => return too_many_fields(shell.registry().meters(), e),
    };
    let max = shell.max_message();
    let binary = params.has("binary?");
    // An urlencoded body can be up to 3x the message (percent-encoding) plus the other fields.
    let body_limit = if binary {
        max
    } else {
        max.saturating_mul(3).saturating_add(4096)
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > body_limit as u64) {
        return reject(
            shell.registry().meters(),
            StatusCode::PAYLOAD_TOO_LARGE,
            Why::BodyTooLarge,
            "Message over the size limit",
        );
    }
    let head = match shell.admit_head(parts, params) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let body = match read_body(shell.registry().meters(), body, body_limit, body_timeout).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let (packed_msg, form) = if binary {
        (body, Params::default())
    } else {
        let body = body; // dropped at the end of this block: not held while a reply is awaited
        let text = String::from_utf8_lossy(&body);
        let mut form = match Params::parse(&text, max_fields) {
            Ok(f) => f,
            Err(e) => return too_many_fields(shell.registry().meters(), e),
        };
        let ppstr = form.take("ppstr").unwrap_or_default();
        (Bytes::from(ppstr), form)
    };
    let mut a = match shell.admit_body(head, form) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    // The packer the client handshook with (Sente >= 1.21 clients name it on the handshake
    // and polls only); a POST that names another one is refused.
    let handshook = shell.registry().with_core(&a.uid, |c, _| {
        c.ajax_ctx(&a.uid, &a.client_id)
            .map(|ctx| ctx.packer.clone())
    });
    if let Some(p) = handshook {
        if a.packer_named && p.name() != a.packer.name() {
            return reject(
                shell.registry().meters(),
                StatusCode::BAD_REQUEST,
                Why::PackerMismatch,
                format!(
                    "This POST names the packer {:?}, but client-id {} handshook with {:?}",
                    a.packer.name(),
                    a.client_id,
                    p.name()
                ),
            );
        }
        a.packer = p;
    }
    let span = span(&a);
    post_event(shell, a, packed_msg, max).instrument(span).await
}

/// The span of an Ajax request (target `sente::ajax`, info): uid, client id, transport, packer.
fn span(a: &Admitted) -> tracing::Span {
    crate::dispatch::conn_span(&a.uid, &a.client_id, Transport::Ajax, a.packer.name())
}

/// Counts the bytes of a message the response carries.
fn sent(m: &ConnMetrics, r: Response<ChskBody>) -> Response<ChskBody> {
    if r.status().is_success() {
        let n = http_body::Body::size_hint(r.body()).exact().unwrap_or(0);
        m.bytes_out.increment(n);
    }
    r
}

/// The rest of a POST, once admitted: unpack, dispatch, answer.
async fn post_event(
    shell: Arc<Shell>,
    a: Admitted,
    packed_msg: Bytes,
    max: usize,
) -> Response<ChskBody> {
    let m = shell
        .registry()
        .conn_metrics(Transport::Ajax, a.packer.name());
    m.bytes_in.increment(packed_msg.len() as u64);
    let decoded = shell
        .decode(packed_msg, &a.packer, message::ajax_post)
        .await;
    let Ok(decoded) = decoded else {
        return reject(
            shell.registry().meters(),
            StatusCode::BAD_REQUEST,
            Why::BadPackage,
            "The message could not be unpacked",
        );
    };
    let inbound = match decoded {
        Ok(i) => i,
        Err(e @ InboundError::TooLarge(_)) => {
            return reject(
                shell.registry().meters(),
                StatusCode::PAYLOAD_TOO_LARGE,
                Why::MessageTooLarge,
                e.to_string(),
            );
        }
        Err(e) => {
            return reject(
                shell.registry().meters(),
                StatusCode::BAD_REQUEST,
                Why::BadPackage,
                e.to_string(),
            );
        }
    };
    let Some(event) = inbound.event else {
        // A ping: answered here, nothing for the handlers.
        let answer = inbound.answer.unwrap_or_else(|| message::ajax_reply(None));
        return sent(&m, envelope(&*a.packer, answer, max));
    };
    m.event_in();
    let mut msg = EventMsg {
        event,
        uid: a.uid,
        client_id: a.client_id.clone(),
        transport: Transport::Ajax,
        reply: None,
        idem: crate::idem::request_id(&a.request, inbound.reply_to.as_ref()),
        claim: None,
        request: a.request,
        server: shell.server().clone(),
    };
    if inbound.reply_to.is_none() {
        if shell.dispatcher.submit(msg).is_err() {
            return busy(shell.registry().meters());
        }
        let answer = inbound.answer.unwrap_or_else(|| message::ajax_reply(None));
        return sent(&m, envelope(&*a.packer, answer, max));
    }
    let Some(_pending) = PendingReply::acquire(&shell, &a.client_id) else {
        return reject(
            shell.registry().meters(),
            StatusCode::TOO_MANY_REQUESTS,
            Why::PendingReplies,
            "Too many requests waiting for a reply",
        );
    };
    let timer = m.reply_timer();
    let (tx, rx) = oneshot::channel();
    msg.reply = Some(Reply::ajax(tx, shell.registry().reply_owed(None)));
    if shell.dispatcher.submit(msg).is_err() {
        return busy(shell.registry().meters());
    }
    let reply = tokio::time::timeout(shell.timing.lp_timeout, rx)
        .await
        .ok()
        .and_then(Result::ok);
    if reply.is_some() {
        timer.done();
    }
    sent(&m, envelope(&*a.packer, message::ajax_reply(reply), max))
}
