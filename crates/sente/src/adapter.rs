//! Serving Sente from any HTTP framework.
//!
//! The server is one tower [`Service`](tower_service::Service) over `http::Request`
//! ([`ChskService`], from [`Server::service_at`](crate::Server::service_at)). Frameworks on
//! hyper 1 hand it requests that carry hyper's upgrade extension, so the service does the
//! WebSocket upgrade itself. Frameworks that do not (actix-web, or a tower-compat layer that keeps
//! the upgrade to itself) call [`ChskService::call_with_upgrade`] instead: same rejection
//! pipeline, same handshake checks, and an accepted WebSocket comes back as a [`WsAccept`] to run
//! over the framework's raw connection with [`WsAccept::serve`]. No adapter has protocol logic
//! of its own.
//!
//! | Framework | Setup | Notes |
//! |---|---|---|
//! | axum 0.8 | `app.merge(server.router("/chsk"))` | feature `axum` (default); serve with [`crate::serve`] (safe timeouts and caps) or `axum::serve` |
//! | hyper 1 | `http1::Builder::new().serve_connection(io, service_fn(..svc.call(req)..)).with_upgrades()` with `svc = server.service_at("/chsk")` | any hyper-based tower stack the same way; `with_upgrades()` is required for WebSockets |
//! | other hyper-based tower stacks (hyper-util's `TowerToHyperService`, tower routers) | `server.service_at("/chsk")` as the route's service | the request must keep hyper's `OnUpgrade` extension |
//! | actix-web 4 | `App::new().service(sente_actix::scope(&server, "/chsk"))` | crate `sente-actix`: IO glue over [`ChskService::call_with_upgrade`] |
//! | poem 3 | `Route::new().at("/chsk", endpoint)` with a ~15-line endpoint over [`ChskService::call_with_upgrade`] and `Request::take_upgrade` (see `examples/poem-echo`) | poem's `TowerCompatExt::compat()` one-liner serves Ajax only: poem moves hyper's upgrade out of the request, so WebSockets need the endpoint |
//!
//! Every adapter above runs the `sente-test-kit` conformance suite: every scenario over
//! WebSocket, Ajax and Auto; every packer on axum, and edn, json and msgpack (text and binary
//! frames) on the others (`cargo test -p sente-test-kit`).
//!
//! Writing an adapter for another framework:
//!
//! 1. convert the framework's request into `http::Request<B>` (`B` a streaming
//!    [`http_body::Body`]; a collected body works too but loses the early size check);
//! 2. `let handled = svc.call_with_upgrade(req).await;` and convert `handled.response` back
//!    (its body is complete: [`body_bytes`]);
//! 3. if `handled.websocket` is `Some`, the response is the `101 Switching Protocols`: once it is
//!    sent, run [`WsAccept::serve`] over the connection's raw bytes (any
//!    `AsyncRead + AsyncWrite + Unpin`; spawn it on the framework's runtime). Dropping the
//!    [`WsAccept`] instead ends the connection cleanly (the uid's grace period starts).

use crate::response::ChskBody;
use crate::service::ChskService;
use crate::ws::{Accepted, Slot, is_upgrade};
use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A WebSocket connection the server accepted (its `101` response is in [`Handled::response`]),
/// waiting for the raw connection. Registered with the server already: run it with
/// [`WsAccept::serve`]; dropping it closes the connection on the server's side.
pub struct WsAccept {
    accepted: Accepted,
}

impl std::fmt::Debug for WsAccept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsAccept")
            .field("uid", &self.accepted.uid())
            .finish_non_exhaustive()
    }
}

impl WsAccept {
    /// Serves the connection over `io`, the raw bytes after the `101` response (the same code
    /// as the hyper path: keepalive, ordered send queue, limits), until it closes.
    ///
    /// The future is `Send` when `io` is; a `!Send` IO (actix-web's payload) runs on a local
    /// task. It needs a tokio runtime with timers (actix-rt's workers have one).
    pub async fn serve<S>(self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.accepted.serve(io).await;
    }
}

/// What [`ChskService::call_with_upgrade`] produced.
#[derive(Debug)]
pub struct Handled {
    /// The response to send (`101 Switching Protocols` when `websocket` is `Some`).
    pub response: Response<ChskBody>,
    /// The accepted WebSocket, to [serve](WsAccept::serve) once the `101` is sent.
    pub websocket: Option<WsAccept>,
}

impl ChskService {
    /// Serves one request like the tower service does, for HTTP servers that do not give
    /// hyper's upgrade extension: an accepted WebSocket upgrade comes back in
    /// [`Handled::websocket`] instead of being run over hyper. Requests that do carry hyper's
    /// upgrade are upgraded over hyper as usual (and `websocket` is `None`).
    pub async fn call_with_upgrade<B>(&self, mut req: Request<B>) -> Handled
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let slot = is_upgrade(req.headers()).then(|| {
            let slot = Slot::default();
            req.extensions_mut().insert(slot.clone());
            slot
        });
        let mut svc = self.clone();
        let response = match tower_service::Service::call(&mut svc, req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        Handled {
            response,
            websocket: slot
                .and_then(|s| s.take())
                .map(|accepted| WsAccept { accepted }),
        }
    }
}

/// The bytes of a response body of the service (always complete: the service answers with
/// whole bodies).
pub fn body_bytes(body: ChskBody) -> Bytes {
    body.collect()
        .now_or_never()
        .and_then(Result::ok)
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default()
}
