//! The tower [`Service`](tower_service::Service) that serves one mount path: `GET` (Ajax
//! handshake and long-poll), `POST` (Ajax send), the WebSocket upgrade, and `GET <mount>/client.js`.

use crate::config::HookResponse;
use crate::msg::{EventMsg, Reply};
use crate::params::Params;
use crate::request::ChskRequest;
use crate::security::{origin_allowed, token_eq};
use crate::server::{ConnCtx, Inner, Server};
use crate::ws::{Outbox, WsConn, is_upgrade};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use sente_proto::packer::Packer;
use sente_proto::server::{PollAnswer, Transport};
use sente_proto::{ClientId, ClientMsg, Envelope, Uid, Value, server_msg};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// The response body of the service.
pub type ChskBody = Full<Bytes>;

/// The JavaScript client served at `<mount>/client.js`.
const CLIENT_JS: &str = include_str!("../js/sente.js");

const MISSING_CLIENT_ID: &str = "Missing client-id: every Sente request (Ajax GET, WebSocket upgrade and POST) \
must carry a non-blank `client-id` parameter of at most 128 bytes.";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The tower service of a [`Server`] at a mount path. Cheap to clone.
///
/// Works with any server that gives the request hyper's upgrade extension (hyper, axum, and
/// other tower-based stacks on hyper); the WebSocket upgrade is done here, over hyper.
#[derive(Clone)]
pub struct ChskService {
    inner: Arc<Inner>,
    mount: Option<Arc<str>>,
}

impl std::fmt::Debug for ChskService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChskService")
            .field("mount", &self.mount)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The service, answering only `mount` (e.g. `/chsk`) and `<mount>/client.js` (404 for any
    /// other path).
    pub fn service_at(&self, mount: &str) -> ChskService {
        let mount = mount.trim_end_matches('/');
        ChskService {
            inner: self.inner.clone(),
            mount: Some(Arc::from(mount)),
        }
    }

    /// The service, answering every path it is given (mount it at one path of your router; a
    /// path ending in `/client.js` gets the JavaScript client).
    pub fn service(&self) -> ChskService {
        ChskService {
            inner: self.inner.clone(),
            mount: None,
        }
    }
}

impl<B> tower_service::Service<Request<B>> for ChskService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ChskBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ChskBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let mount = self.mount.clone();
        Box::pin(async move { Ok(handle(inner, mount, req).await) })
    }
}

fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<ChskBody> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn hook(resp: HookResponse) -> Response<ChskBody> {
    resp.map(Full::new)
}

fn reject(status: StatusCode, reason: &str, body: impl Into<Bytes>) -> Response<ChskBody> {
    tracing::info!(status = status.as_u16(), reason, "request rejected");
    plain(status, body)
}

fn packed_response(packer: &dyn Packer, env: Envelope, max: usize) -> Response<ChskBody> {
    match env.into_packed(packer) {
        Ok(p) if p.as_bytes().len() <= max => ok_bytes(p.into()),
        Ok(p) => {
            let size = p.as_bytes().len();
            tracing::warn!(size, limit = max, "response over the message limit");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Response over the message size limit",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "response could not be packed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Response could not be packed: {e}"),
            )
        }
    }
}

fn ok_bytes(p: sente_proto::server::PackedBytes) -> Response<ChskBody> {
    let ct = if p.binary {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut r = Response::new(Full::new(p.bytes));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn handle<B>(
    inner: Arc<Inner>,
    mount: Option<Arc<str>>,
    req: Request<B>,
) -> Response<ChskBody>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path();
    if path.ends_with("/client.js")
        && mount
            .as_deref()
            .is_none_or(|m| path.strip_suffix("/client.js") == Some(m))
    {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
        }
        let mut r = Response::new(Full::new(Bytes::from_static(CLIENT_JS.as_bytes())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
        return r;
    }
    if let Some(m) = &mount
        && path != &**m
        && !(m.is_empty() && path == "/")
    {
        return plain(StatusCode::NOT_FOUND, "Not found");
    }
    let head_bytes: usize = req.uri().to_string().len()
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head_bytes > inner.limits().max_header_bytes {
        return reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
            "Request header fields too large",
        );
    }
    match *req.method() {
        Method::GET => get(inner, req).await,
        Method::POST => post(inner, req).await,
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
    }
}

fn client_id(params: &Params) -> Option<ClientId> {
    params.get("client-id").and_then(|c| ClientId::new(c).ok())
}

fn resolve_packer(
    inner: &Inner,
    params: &Params,
) -> Result<Arc<dyn Packer>, Box<Response<ChskBody>>> {
    match params.get("packer") {
        None => Ok(inner.packer.clone()),
        Some(name) => inner.packer_named(name).ok_or_else(|| {
            let name: String = name.chars().take(64).collect();
            Box::new(reject(
                StatusCode::BAD_REQUEST,
                "unknown packer",
                format!(
                    "Unknown packer {name:?}: the `packer` parameter must be one of edn, transit, json, msgpack (optionally with +gzip)"
                ),
            ))
        }),
    }
}

/// The protocol extensions a client asked for (`ext` parameter, comma-separated). The
/// negotiation point for later extensions; none is implemented yet.
pub(crate) fn requested_extensions(params: &Params) -> BTreeSet<String> {
    params
        .get("ext")
        .map(|e| {
            e.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .take(16)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The rejection pipeline of spec 4.2 (after the client-id check): reject_fn, CSRF, Origin,
/// authorization.
fn check(inner: &Inner, req: &ChskRequest) -> Option<Response<ChskBody>> {
    if let Some(f) = &inner.reject_fn
        && let Some(r) = f(req)
    {
        tracing::info!(
            status = r.status().as_u16(),
            reason = "reject_fn",
            "request rejected"
        );
        return Some(hook(r));
    }
    if let Some(f) = &inner.csrf_token_fn {
        let ok = match f(req) {
            crate::CsrfToken::Skip => true,
            crate::CsrfToken::Missing => false,
            crate::CsrfToken::Token(expected) => req
                .param("csrf-token")
                .or_else(|| req.header("x-csrf-token"))
                .or_else(|| req.header("x-xsrf-token"))
                .is_some_and(|got| token_eq(got, &expected)),
        };
        if !ok {
            tracing::info!(reason = "bad CSRF token", "request rejected");
            return Some(hook((inner.bad_csrf_fn)(req)));
        }
    }
    if !origin_allowed(
        &inner.allowed_origins,
        req.header("origin"),
        req.header("referer"),
        req.header("host"),
    ) {
        tracing::info!(
            reason = "origin not allowed",
            origin = req.header("origin"),
            "request rejected"
        );
        return Some(hook((inner.bad_origin_fn)(req)));
    }
    if let Some(f) = &inner.authorized_fn
        && !f(req)
    {
        tracing::info!(reason = "not authorized", "request rejected");
        return Some(hook((inner.unauthorized_fn)(req)));
    }
    None
}

async fn get<B>(inner: Arc<Inner>, req: Request<B>) -> Response<ChskBody> {
    let (mut parts, _body) = req.into_parts();
    let params = Params::parse(parts.uri.query().unwrap_or(""));
    let Some(cid) = client_id(&params) else {
        return reject(
            StatusCode::BAD_REQUEST,
            "missing client-id",
            MISSING_CLIENT_ID,
        );
    };
    let packer = match resolve_packer(&inner, &params) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let ws = is_upgrade(&parts.headers);
    let on_upgrade = if ws {
        crate::adapter::Upgrade::take(&mut parts.extensions)
    } else {
        None
    };
    // Read before the request is kept: it drops the headers that only describe the handshake.
    let version_13 = parts
        .headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "13");
    let ws_key = parts
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| version_13)
        .cloned();
    let exts = requested_extensions(&params);
    let request = Arc::new(ChskRequest::new(parts, params, Some(cid.clone()), exts));
    if let Some(r) = check(&inner, &request) {
        return r;
    }
    let uid = (inner.user_id_fn)(&request);
    if ws {
        return upgrade(inner, request, uid, cid, packer, on_upgrade, ws_key);
    }
    ajax_get(inner, request, uid, cid, packer).await
}

fn upgrade(
    inner: Arc<Inner>,
    request: Arc<ChskRequest>,
    uid: Uid,
    cid: ClientId,
    packer: Arc<dyn Packer>,
    on_upgrade: Option<crate::adapter::Upgrade>,
    // `Sec-WebSocket-Key`, when `Sec-WebSocket-Version` is 13.
    key: Option<HeaderValue>,
) -> Response<ChskBody> {
    let Some(key) = key else {
        let mut r = reject(
            StatusCode::BAD_REQUEST,
            "bad websocket handshake",
            "Bad WebSocket handshake: Sec-WebSocket-Key and Sec-WebSocket-Version: 13 are required",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    };
    let Some(on_upgrade) = on_upgrade else {
        return reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no upgrade support",
            "This HTTP server does not support connection upgrades (serve with hyper upgrades enabled)",
        );
    };
    let hd = (inner.handshake_data_fn)(&request);
    let max = inner.limits().message.max_message_bytes;
    let handshake = match server_msg::handshake(&uid, hd).into_packed(&*packer) {
        Ok(p) if p.as_bytes().len() <= max => p.into(),
        Ok(_) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Handshake data over the message size limit",
            );
        }
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Handshake could not be packed: {e}"),
            );
        }
    };
    let outbox = Arc::new(Outbox::new(inner.limits().max_pending_events_per_client));
    let ctx = ConnCtx::ws(request.clone());
    let opened = inner.with_core(|c, now| c.handle_ws_open(&uid, &cid, outbox.clone(), ctx, now));
    let conn = match opened {
        Ok(c) => c,
        Err(e) => {
            return reject(
                StatusCode::TOO_MANY_REQUESTS,
                "connection limit",
                e.to_string(),
            );
        }
    };
    tracing::debug!(%uid, client_id = %cid, packer = packer.name(), "websocket connect");
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let task = WsConn {
        inner,
        uid,
        client_id: cid,
        conn,
        packer,
        request,
        outbox,
        handshake,
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

/// Tells the core when a held poll request goes away without an answer.
struct PollGuard {
    inner: Arc<Inner>,
    uid: Uid,
    cid: ClientId,
    conn: sente_proto::server::ConnId,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        let (uid, cid, conn) = (&self.uid, &self.cid, self.conn);
        self.inner
            .with_core(|c, now| c.handle_poll_ended(uid, cid, conn, now));
    }
}

async fn ajax_get(
    inner: Arc<Inner>,
    request: Arc<ChskRequest>,
    uid: Uid,
    cid: ClientId,
    packer: Arc<dyn Packer>,
) -> Response<ChskBody> {
    let max = inner.limits().message.max_message_bytes;
    let handshake = request.params_inner().has("handshake?");
    let ctx = ConnCtx {
        request: request.clone(),
        transport: Transport::Ajax,
    };
    let (tx, rx) = oneshot::channel();
    let started = inner.with_core(|c, now| {
        if handshake || !c.ajax_knows(&uid, &cid) {
            c.handle_ajax_handshake(&uid, &cid, ctx, now).map(|()| None)
        } else {
            c.handle_ajax_poll(&uid, &cid, tx, ctx, now).map(Some)
        }
    });
    let conn = match started {
        Err(e) => {
            return reject(
                StatusCode::TOO_MANY_REQUESTS,
                "connection limit",
                e.to_string(),
            );
        }
        Ok(None) => {
            tracing::debug!(%uid, client_id = %cid, "ajax handshake");
            let hd = (inner.handshake_data_fn)(&request);
            return packed_response(&*packer, server_msg::handshake(&uid, hd), max);
        }
        Ok(Some(conn)) => conn,
    };
    let _guard = PollGuard {
        inner: inner.clone(),
        uid,
        cid,
        conn,
    };
    match rx.await {
        Ok(PollAnswer::Batch(b)) => match b.packed(&*packer, max) {
            Ok(p) => ok_bytes(p),
            Err(e) => {
                inner.count_dropped_push(&e, b.len());
                packed_response(&*packer, server_msg::timeout(), max)
            }
        },
        Ok(PollAnswer::Timeout) | Err(_) => packed_response(&*packer, server_msg::timeout(), max),
        Ok(PollAnswer::Closed) => plain(StatusCode::GONE, "Connection closed by the server"),
    }
}

/// Counts the replies a client is waiting for; released on drop.
struct PendingReply {
    inner: Arc<Inner>,
    cid: ClientId,
}

impl PendingReply {
    fn acquire(inner: &Arc<Inner>, cid: &ClientId) -> Option<Self> {
        let mut m = inner
            .pending_replies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(cid.clone()).or_insert(0);
        if *n >= inner.limits().max_pending_replies_per_client {
            return None;
        }
        *n += 1;
        Some(PendingReply {
            inner: inner.clone(),
            cid: cid.clone(),
        })
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        let mut m = self
            .inner
            .pending_replies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.cid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.cid);
            }
        }
    }
}

async fn post<B>(inner: Arc<Inner>, req: Request<B>) -> Response<ChskBody>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let mut params = Params::parse(parts.uri.query().unwrap_or(""));
    let max = inner.limits().message.max_message_bytes;
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
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large",
            "Message over the size limit",
        );
    }
    let body = match Limited::new(body, body_limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                reject(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body too large",
                    "Message over the size limit",
                )
            } else {
                reject(
                    StatusCode::BAD_REQUEST,
                    "body read error",
                    "The request body could not be read",
                )
            };
        }
    };
    let packed: Bytes = if binary {
        body
    } else {
        let text = String::from_utf8_lossy(&body);
        let mut form = Params::parse(&text);
        let ppstr = form.take("ppstr").unwrap_or_default();
        params.extend(form);
        Bytes::from(ppstr)
    };
    let Some(cid) = client_id(&params) else {
        return reject(
            StatusCode::BAD_REQUEST,
            "missing client-id",
            MISSING_CLIENT_ID,
        );
    };
    let packer = match resolve_packer(&inner, &params) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let exts = requested_extensions(&params);
    let request = Arc::new(ChskRequest::new(parts, params, Some(cid.clone()), exts));
    if let Some(r) = check(&inner, &request) {
        return r;
    }
    let uid = (inner.user_id_fn)(&request);
    let env = if packed.is_empty() {
        Ok(Envelope::new(Value::Nil))
    } else {
        Envelope::unpack(&*packer, &packed, &inner.limits().message)
    };
    let env = match env {
        Ok(env) => env,
        Err(sente_proto::EnvelopeError::Unpack(e @ sente_proto::UnpackError::TooLarge { .. })) => {
            return reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                "message too large",
                e.to_string(),
            );
        }
        Err(e) => {
            return reject(
                StatusCode::BAD_REQUEST,
                "message could not be unpacked",
                format!("The message could not be unpacked: {e}"),
            );
        }
    };
    let msg = ClientMsg::classify(env);
    if let ClientMsg::Ping { .. } = &msg {
        return packed_response(&*packer, server_msg::ajax_reply(Value::from("pong")), max);
    }
    let (event, cb) = msg.into_event();
    let mut msg = EventMsg {
        event,
        uid,
        client_id: cid.clone(),
        transport: Transport::Ajax,
        reply: None,
        request,
    };
    if cb.is_none() {
        let _ = inner.events_tx.send(msg).await;
        return packed_response(&*packer, server_msg::dummy_cb_200(), max);
    }
    let Some(_pending) = PendingReply::acquire(&inner, &cid) else {
        return reject(
            StatusCode::TOO_MANY_REQUESTS,
            "too many pending replies",
            "Too many requests waiting for a reply",
        );
    };
    let (tx, rx) = oneshot::channel();
    msg.reply = Some(Reply::ajax(tx));
    let lp = Duration::from_millis(inner.lp_timeout_ms);
    let answer = tokio::time::timeout(lp, async move {
        if inner.events_tx.send(msg).await.is_err() {
            return None;
        }
        rx.await.ok()
    })
    .await;
    match answer {
        Ok(Some(value)) => packed_response(&*packer, server_msg::ajax_reply(value), max),
        _ => packed_response(&*packer, server_msg::timeout(), max),
    }
}
