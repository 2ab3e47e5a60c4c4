//! actix-web 4 adapter for the [`sente`] server: Ajax long-polling, Ajax POSTs and WebSockets,
//! with no protocol logic of its own.
//!
//! ```no_run
//! use actix_web::{App, HttpServer};
//! use sente::{CsrfToken, Server};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let server = Server::builder()
//!         .csrf_token_fn(|_| CsrfToken::Skip) // use your session's anti-forgery token
//!         .handler(sente::Router::new()) // your handlers
//!         .build()
//!         .map_err(std::io::Error::other)?;
//!     HttpServer::new(move || App::new().service(sente_actix::scope(&server, "/chsk")))
//!         .bind("127.0.0.1:3000")?
//!         .run()
//!         .await
//! }
//! ```
//!
//! Build the [`sente::Server`] inside a tokio runtime (`#[tokio::main]` or `#[actix_web::main]`:
//! actix-web 4 runs under either); its timer task lives there. Requests are served on actix's
//! workers (single-threaded tokio runtimes): each WebSocket runs on a local task of the worker
//! that accepted it.
//!
//! # How
//!
//! Every request is converted to an `http::Request` (the body streamed, so sente's size limits
//! apply before anything is buffered) and served by sente's tower service through
//! [`ChskService::call_with_upgrade`](sente::ChskService::call_with_upgrade): the same
//! rejection pipeline (CSRF, Origin, `authorized_fn`, limits) and the same handshake checks as
//! on hyper. An accepted WebSocket is answered `101` with a streaming body, and the connection
//! code of sente runs over actix's IO: the request payload (the raw bytes after the upgrade) is
//! read as `AsyncRead`, and writes feed the streaming response body.
//!
//! # Every framework
//!
//! | Framework | Setup |
//! |---|---|
//! | axum 0.8 | `app.merge(server.router("/chsk"))` |
//! | hyper 1 | `service_fn` around `server.service_at("/chsk")`, connection `.with_upgrades()` (`examples/hyper-echo`) |
//! | other hyper-based tower stacks | `server.service_at("/chsk")` as the route's service |
//! | actix-web 4 | `App::new().service(sente_actix::scope(&server, "/chsk"))` (this crate) |
//! | poem 3 | an endpoint over `ChskService::call_with_upgrade` and `Request::take_upgrade` (`examples/poem-echo`) |
//!
//! Details in [`sente::adapter`]. The `sente-test-kit` conformance suite runs against each of
//! them: every scenario over WebSocket, Ajax and Auto, with every packer on axum and with edn,
//! json and msgpack on the others.
#![forbid(unsafe_code)]

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use bytes::Bytes;
use futures_util::future::{Either, select};
use futures_util::{Stream, StreamExt};
use sente::adapter::body_bytes;
use sente::{ChskService, Server};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Chunks of a request body (or of a WebSocket's output) in flight between actix and sente.
const CHANNEL_CHUNKS: usize = 8;

/// The peer address of the connection, put in the request extensions (reachable from sente's
/// hooks through [`ChskRequest::parts`](sente::ChskRequest::parts)`().extensions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// An actix [`Scope`](actix_web::Scope) serving Sente at `path` (e.g. `/chsk`: GET, POST,
/// WebSocket upgrade) and the JavaScript client at `<path>/client.js`; other paths under it
/// get `404`. Register it on your `App`: `App::new().service(sente_actix::scope(&server,
/// "/chsk"))`.
pub fn scope(server: &Server, path: &str) -> actix_web::Scope {
    let path = path.trim_end_matches('/');
    let svc = server.service_at(path);
    web::scope(path).default_service(web::to(move |req: HttpRequest, payload: web::Payload| {
        let svc = svc.clone();
        async move { handle(&svc, req, payload.into_inner()).await }
    }))
}

/// Serves one request with `svc` (for your own routing; [`scope`] is this at one path).
///
/// Must run on an actix-web worker: an accepted WebSocket is spawned on the worker's local
/// task set.
pub async fn handle(svc: &ChskService, req: HttpRequest, mut payload: Payload) -> HttpResponse {
    // GET bodies are ignored (and an upgrade's payload is the WebSocket): only POST streams one.
    let post = req.method() == actix_web::http::Method::POST;
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let request = match to_http(&req, ChannelBody(rx)) {
        Ok(r) => r,
        Err(e) => {
            return HttpResponse::BadRequest()
                .content_type("text/plain; charset=utf-8")
                .body(format!("Request could not be read: {e}"));
        }
    };
    let call = pin!(svc.call_with_upgrade(request));
    let handled = if post {
        let pump = pin!(pump(&mut payload, tx));
        match select(call, pump).await {
            Either::Left((handled, _)) => handled,
            Either::Right(((), call)) => call.await,
        }
    } else {
        drop(tx);
        call.await
    };
    let (parts, body) = handled.response.into_parts();
    let status =
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = HttpResponse::build(status);
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in &parts.headers {
        if upgrade && (name == http::header::CONNECTION || name == http::header::UPGRADE) {
            continue; // written by actix for `upgrade(..)`
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            resp.append_header((n, v));
        }
    }
    match handled.websocket {
        Some(ws) if upgrade => websocket(&mut resp, ws, payload),
        _ => resp.body(body_bytes(body)),
    }
}

/// The `101` with a body streamed from the connection's writes; the connection runs on a local
/// task over the payload.
fn websocket(
    resp: &mut HttpResponseBuilder,
    ws: sente::adapter::WsAccept,
    payload: Payload,
) -> HttpResponse {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let io = ActixIo {
        payload,
        pending: Bytes::new(),
        out: PollSender::new(tx),
    };
    actix_web::rt::spawn(ws.serve(io));
    resp.upgrade("websocket")
        .streaming(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// Copies the actix payload into the body channel until it ends or sente stops reading.
async fn pump(payload: &mut Payload, tx: mpsc::Sender<io::Result<Bytes>>) {
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| io::Error::other(e.to_string()));
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

fn to_http<B>(req: &HttpRequest, body: B) -> Result<http::Request<B>, http::Error> {
    use actix_web::http::Version as V;
    let version = match req.version() {
        V::HTTP_09 => http::Version::HTTP_09,
        V::HTTP_10 => http::Version::HTTP_10,
        V::HTTP_2 => http::Version::HTTP_2,
        V::HTTP_3 => http::Version::HTTP_3,
        _ => http::Version::HTTP_11,
    };
    let mut b = http::Request::builder()
        .method(req.method().as_str())
        .uri(req.uri().to_string())
        .version(version);
    for (name, value) in req.headers() {
        b = b.header(name.as_str(), value.as_bytes());
    }
    if let Some(peer) = req.peer_addr() {
        b = b.extension(PeerAddr(peer));
    }
    b.body(body)
}

/// A streaming request body fed by [`pump`].
struct ChannelBody(mpsc::Receiver<io::Result<Bytes>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|c| c.map(|r| r.map(http_body::Frame::data)))
    }
}

/// actix's side of an upgraded connection: reads the request payload, writes into the
/// streaming response body.
struct ActixIo {
    payload: Payload,
    pending: Bytes,
    out: PollSender<io::Result<Bytes>>,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the connection is closed")
}

impl AsyncRead for ActixIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(Pin::new(&mut self.payload).poll_next(cx)) {
                Some(Ok(chunk)) => self.pending = chunk,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e.to_string()))),
                None => return Poll::Ready(Ok(())), // end of stream
            }
        }
        let n = buf.remaining().min(self.pending.len());
        let chunk = self.pending.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ActixIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.out.poll_reserve(cx)).map_err(|_| closed())?;
        self.out
            .send_item(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| closed())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every write is a chunk of the response body already; actix flushes them.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Ends the response body: actix closes the connection.
        self.out.close();
        Poll::Ready(Ok(()))
    }
}
