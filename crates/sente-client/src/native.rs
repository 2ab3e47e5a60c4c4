//! The tokio shell: tokio-tungstenite for WebSockets, hyper-util's client for Ajax.

use crate::shared::Shared;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sente_proto::Packed;
use sente_proto::client::{Action, ConnId, HttpFailure, HttpId, HttpRequest, WsClosed, WsFailure};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{WebSocketConfig, frame::coding::CloseCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Monotonic milliseconds since the client started (tokio's clock, so paused-time tests work).
pub(crate) struct Clock(Instant);

impl Clock {
    pub(crate) fn new() -> Self {
        Clock(Instant::now())
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

enum WsCmd {
    Send(Packed),
    Close(u16, String),
}

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// How a server that closed the WebSocket gets to close TCP after our answering close frame,
/// before the socket is dropped (browsers wait about as long).
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of the IO layer, from the builder.
#[derive(Clone)]
#[cfg_attr(not(feature = "tls"), derive(Default))]
pub(crate) struct IoConfig {
    /// The rustls configuration for `https://` and `wss://` URLs.
    #[cfg(feature = "tls")]
    pub(crate) tls: Arc<rustls::ClientConfig>,
}

/// Live IO resources, keyed by the machine's ids.
pub(crate) struct Io {
    http: HttpClient<Connector, Full<Bytes>>,
    sockets: Mutex<HashMap<ConnId, mpsc::UnboundedSender<WsCmd>>>,
    requests: Mutex<HashMap<HttpId, AbortHandle>>,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    config: IoConfig,
}

impl Io {
    pub(crate) fn new(config: IoConfig) -> Self {
        #[cfg(feature = "tls")]
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*config.tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        #[cfg(not(feature = "tls"))]
        let connector = HttpConnector::new();
        Io {
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            sockets: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
            config,
        }
    }
}

/// Whether an error chain comes from TLS.
#[cfg(feature = "tls")]
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    crate::tls::is_tls_error(e)
}

#[cfg(not(feature = "tls"))]
fn is_tls(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

pub(crate) fn spawn_driver(shared: Arc<Shared>) {
    tokio::spawn(drive(shared));
}

async fn drive(shared: Arc<Shared>) {
    loop {
        let drained = shared.drain();
        for action in drained.actions {
            perform(&shared, action);
        }
        if drained.shutdown {
            return;
        }
        let sleep = async {
            match drained.deadline {
                Some(at) => {
                    let now = shared.now();
                    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now))).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = shared.notify.notified() => {}
            () = sleep => {
                let mut inner = shared.lock();
                let now = shared.now();
                inner.machine.handle_timeout(now);
            }
        }
    }
}

fn perform(shared: &Arc<Shared>, action: Action) {
    match action {
        Action::WsOpen { conn, url, headers } => {
            let (tx, rx) = mpsc::unbounded_channel();
            lock(&shared.io.sockets).insert(conn, tx);
            tokio::spawn(ws_task(shared.clone(), conn, url, headers, rx));
        }
        Action::WsSend { conn, frame } => {
            let sent = lock(&shared.io.sockets)
                .get(&conn)
                .is_some_and(|tx| tx.send(WsCmd::Send(frame)).is_ok());
            if !sent {
                shared.with(|m, now| m.handle_ws_send_failed(conn, "socket is gone", now));
            }
        }
        Action::WsClose { conn, code, reason } => {
            if let Some(tx) = lock(&shared.io.sockets).get(&conn) {
                let _ = tx.send(WsCmd::Close(code, reason));
            }
        }
        Action::Http { id, request } => {
            let task = tokio::spawn(http_task(shared.clone(), id, request));
            lock(&shared.io.requests).insert(id, task.abort_handle());
        }
        Action::HttpAbort { id } => {
            if let Some(h) = lock(&shared.io.requests).remove(&id) {
                h.abort();
            }
        }
        other => tracing::debug!(target: "sente_client", "ignoring action {other:?}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn http_task(shared: Arc<Shared>, id: HttpId, request: HttpRequest) {
    let timeout = Duration::from_millis(request.timeout_ms);
    let (max, large) = {
        let inner = shared.lock();
        let m = &inner.machine;
        let large = m.is_large_fetch(id).then(|| m.large_unpacker());
        (m.config().limits.max_message_bytes, large)
    };
    let result = tokio::time::timeout(timeout, http_call(&shared, request, max)).await;
    lock(&shared.io.requests).remove(&id);
    if let Some(unpacker) = large {
        // An offloaded event: unpacked here, not under the machine's lock (which the
        // WebSocket reader and the app's sends need meanwhile).
        let event = match result {
            Ok(Ok((status, body))) => unpacker.unpack(status, &body),
            Ok(Err(failure)) => Err(failure.to_string()),
            Err(_) => Err(HttpFailure::Timeout.to_string()),
        };
        shared.with(|m, now| m.handle_large_fetched(id, event, now));
        return;
    }
    shared.with(|m, now| match result {
        Ok(Ok((status, body))) => m.handle_http_response(id, status, &body, now),
        Ok(Err(failure)) => m.handle_http_failure(id, failure, now),
        Err(_) => m.handle_http_failure(id, HttpFailure::Timeout, now),
    });
}

async fn http_call(
    shared: &Shared,
    request: HttpRequest,
    max_body: usize,
) -> Result<(u16, Vec<u8>), HttpFailure> {
    let mut builder = http::Request::builder()
        .method(request.method.as_str())
        .uri(&request.url);
    for (k, v) in &request.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
    let req = builder
        .body(body)
        .map_err(|e| HttpFailure::InvalidRequest(e.to_string()))?;
    let resp = shared.io.http.request(req).await.map_err(|e| {
        if is_tls(&e) {
            HttpFailure::Tls(describe(&e))
        } else if e.is_connect() {
            HttpFailure::Connect(describe(&e))
        } else {
            HttpFailure::Network(describe(&e))
        }
    })?;
    let status = resp.status().as_u16();
    let limit = max_body.saturating_add(64);
    let body = Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                HttpFailure::BodyTooLarge { limit }
            } else {
                HttpFailure::Network(format!("reading the body: {}", describe(&*e)))
            }
        })?
        .to_bytes();
    Ok((status, body.to_vec()))
}

/// An error and its sources, joined with `": "`.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

async fn ws_task(
    shared: Arc<Shared>,
    conn: ConnId,
    url: String,
    headers: Vec<(String, String)>,
    mut rx: mpsc::UnboundedReceiver<WsCmd>,
) {
    let max = shared.lock().machine.config().limits.max_message_bytes;
    let result = async {
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| failure(&e))?;
        for (k, v) in &headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| plain(&e))?;
            let value = HeaderValue::from_str(v).map_err(|e| plain(&e))?;
            req.headers_mut().append(name, value);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(max.saturating_add(64)))
            .max_frame_size(Some(max.saturating_add(64)));
        #[cfg(feature = "tls")]
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            req,
            Some(config),
            true,
            Some(tokio_tungstenite::Connector::Rustls(
                shared.io.config.tls.clone(),
            )),
        );
        #[cfg(not(feature = "tls"))]
        let connecting = tokio_tungstenite::connect_async_with_config(req, Some(config), true);
        connecting.await.map_err(|e| failure(&e))
    };
    let connected = tokio::select! {
        r = result => r,
        // Closed (or the client went away) while connecting: give up quietly.
        _ = rx.recv() => {
            lock(&shared.io.sockets).remove(&conn);
            return;
        }
    };
    let ws = match connected {
        Ok((ws, _resp)) => ws,
        Err(f) => {
            lock(&shared.io.sockets).remove(&conn);
            shared.with(|m, now| m.handle_ws_connect_failed(conn, f, now));
            return;
        }
    };
    shared.with(|m, now| m.handle_ws_open(conn, now));
    let (mut sink, mut stream) = ws.split();
    // The close frame received, once the machine has been told about it.
    let mut reported = false;
    let mut close: Option<WsClosed> = None;
    let mut closing = false;
    // Once a close frame went either way, wait a bounded time for the server to close TCP.
    let mut give_up_at = Instant::now() + Duration::from_secs(3600);
    loop {
        tokio::select! {
            cmd = rx.recv(), if !closing => match cmd {
                Some(WsCmd::Send(frame)) => {
                    let msg = match frame {
                        Packed::Text(t) => Message::text(t),
                        Packed::Binary(b) => Message::binary(b),
                    };
                    if let Err(e) = sink.send(msg).await {
                        let text = e.to_string();
                        shared.with(|m, now| m.handle_ws_send_failed(conn, &text, now));
                        break;
                    }
                }
                Some(WsCmd::Close(code, reason)) => {
                    closing = true;
                    give_up_at = Instant::now() + CLOSE_HANDSHAKE_TIMEOUT;
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
                None => {
                    closing = true;
                    give_up_at = Instant::now() + CLOSE_HANDSHAKE_TIMEOUT;
                    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    shared.with(|m, now| m.handle_ws_message(conn, t.as_bytes(), now));
                }
                Some(Ok(Message::Binary(b))) => {
                    shared.with(|m, now| m.handle_ws_message(conn, &b, now));
                }
                Some(Ok(Message::Close(frame))) => {
                    let info = match frame {
                        Some(f) => WsClosed {
                            code: u16::from(f.code),
                            reason: f.reason.as_str().to_owned(),
                            clean: true,
                        },
                        None => WsClosed { code: 1005, reason: String::new(), clean: true },
                    };
                    if closing {
                        // The answer to our own close.
                        close = Some(info);
                    } else {
                        // The server closed (Sente's `[:chsk/close]`). tungstenite queues the
                        // answering close frame and sends it on the next read below; the close
                        // handshake is complete for us, so the machine hears of it now (it
                        // reconnects, and requests made from now on are queued or fail as
                        // closed) rather than when the server closes TCP: http-kit may never.
                        closing = true;
                        give_up_at = Instant::now() + CLOSE_HANDSHAKE_TIMEOUT;
                        lock(&shared.io.sockets).remove(&conn);
                        shared.with(|m, now| m.handle_ws_closed(conn, info, now));
                        reported = true;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(target: "sente_client", "WebSocket {conn} error: {e}");
                    break;
                }
                None => break,
            },
            () = tokio::time::sleep_until(give_up_at), if closing => {
                tracing::debug!(
                    target: "sente_client",
                    "WebSocket {conn}: the server did not close TCP after the close handshake"
                );
                break;
            }
        }
    }
    if !reported {
        lock(&shared.io.sockets).remove(&conn);
        let close = close.unwrap_or_else(WsClosed::abnormal);
        shared.with(|m, now| m.handle_ws_closed(conn, close, now));
    }
}

fn plain(e: &dyn std::fmt::Display) -> WsFailure {
    WsFailure::new(e.to_string())
}

fn failure(e: &WsError) -> WsFailure {
    match e {
        WsError::Http(resp) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            WsFailure {
                status: Some(resp.status().as_u16()),
                message: format!("upgrade refused: HTTP {} {body}", resp.status()),
                tls: false,
            }
        }
        other if is_tls(other) => WsFailure {
            status: None,
            message: format!("TLS error: {}", describe(other)),
            tls: true,
        },
        other => plain(other),
    }
}
