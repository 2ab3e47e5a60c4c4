//! The tower [`Service`](tower_service::Service) that serves one mount path: `GET` (Ajax
//! handshake and long-poll), `POST` (Ajax send), the WebSocket upgrade, and `GET <mount>/client.js`.
//! It routes each request to its transport; the transports do the rest.

use crate::ajax;
use crate::cors::Cors;
use crate::metrics::Why;
use crate::params::Params;
use crate::response::{ChskBody, plain, reject};
use crate::shell::{Shell, Via};
use crate::ws::{self, Upgrade};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The JavaScript client served at `<mount>/client.js`.
const CLIENT_JS: &str = include_str!("../js/sente.js");

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The tower service of a [`Server`](crate::Server) at a mount path. Cheap to clone.
///
/// Works with any server that gives the request hyper's upgrade extension (hyper, axum, and
/// other tower-based stacks on hyper); the WebSocket upgrade is done here, over hyper.
#[derive(Clone)]
pub struct ChskService {
    shell: Arc<Shell>,
    mount: Option<Arc<str>>,
}

impl std::fmt::Debug for ChskService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChskService")
            .field("mount", &self.mount)
            .finish_non_exhaustive()
    }
}

impl ChskService {
    /// The service answering `mount` and `<mount>/client.js` (`None`: every path it is given).
    pub(crate) fn new(shell: Arc<Shell>, mount: Option<&str>) -> Self {
        ChskService {
            shell,
            mount: mount.map(|m| Arc::from(m.trim_end_matches('/'))),
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
        let shell = self.shell.clone();
        let mount = self.mount.clone();
        Box::pin(async move { Ok(handle(shell, mount, req).await) })
    }
}

async fn handle<B>(
    shell: Arc<Shell>,
    mount: Option<Arc<str>>,
    req: Request<B>,
) -> Response<ChskBody>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let cors = Cors::of(&shell.guard.allowed_origins, req.headers());
    let registry = shell.registry().clone();
    let mut resp = route(shell, mount, req, &cors).await;
    cors.apply(&mut resp);
    if registry.is_closing() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Draining: the client's next request opens a new connection (to another node).
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The answer to one request, before its CORS headers ([`crate::cors`]).
async fn route<B>(
    shell: Arc<Shell>,
    mount: Option<Arc<str>>,
    req: Request<B>,
    cors: &Cors,
) -> Response<ChskBody>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path();
    let in_mount = |p: &str| {
        mount
            .as_deref()
            .is_none_or(|m| p == m || (m.is_empty() && p == "/"))
    };
    if req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && (in_mount(path) || path.ends_with("/client.js"))
    {
        return cors.preflight(shell.registry().meters(), req.headers());
    }
    if path.ends_with("/client.js")
        && mount
            .as_deref()
            .is_none_or(|m| path.strip_suffix("/client.js") == Some(m))
    {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
        }
        if let Cors::Refused(origin) = cors {
            return Cors::refusal(shell.registry().meters(), origin);
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
    let head_bytes: usize = uri_len(req.uri())
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head_bytes > shell.registry().limits().max_header_bytes {
        return reject(
            shell.registry().meters(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Why::HeadTooLarge,
            "Request header fields too large",
        );
    }
    // Draining: the events of clients already here (POSTs) are still handled; new handshakes
    // and polls go elsewhere. Stopped: everything does.
    let registry = shell.registry();
    // Fetches of large events (`?large=`) are the pushes of clients already here, served too.
    let fetch = req.method() == Method::GET
        && req
            .uri()
            .query()
            .is_some_and(|q| q.starts_with("large=") || q.contains("&large="));
    // A node that has not joined its cluster yet holds new clients until it has (at most
    // `Builder::join_wait`): served before, they would miss the other nodes' pushes. The
    // POSTs of clients already served by other nodes go on.
    if req.method() != Method::POST && !registry.joined() {
        registry.wait_joined().await;
    }
    if registry.is_stopped() || (registry.is_closing() && req.method() != Method::POST && !fetch) {
        let mut r = reject(
            registry.meters(),
            StatusCode::SERVICE_UNAVAILABLE,
            Why::ShuttingDown,
            "The server is shutting down",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    match *req.method() {
        Method::GET => get(shell, req).await,
        Method::POST => ajax::post(shell, req).await,
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
    }
}

/// The length of `uri` as written (scheme, authority, path and query), without writing it.
fn uri_len(uri: &http::Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len())
}

/// `GET`: a WebSocket upgrade or an Ajax handshake/poll, admitted by the guard first.
async fn get<B>(shell: Arc<Shell>, req: Request<B>) -> Response<ChskBody> {
    let (mut parts, _body) = req.into_parts();
    let max_fields = shell.registry().limits().max_form_fields;
    let params = match Params::parse(parts.uri.query().unwrap_or(""), max_fields) {
        Ok(p) => p,
        Err(e) => {
            return reject(
                shell.registry().meters(),
                StatusCode::BAD_REQUEST,
                Why::TooManyFields,
                e.to_string(),
            );
        }
    };
    let ws = ws::is_upgrade(&parts.headers);
    let on_upgrade = if ws {
        Upgrade::take(&mut parts.extensions)
    } else {
        None
    };
    // Read before the request is kept: it drops the headers that only describe the handshake.
    let ws_key = ws::handshake_key(&parts);
    let via = if ws { Via::Ws } else { Via::AjaxGet };
    let admitted = match shell.admit(parts, params, via) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    if ws {
        ws::accept(shell, admitted, on_upgrade, ws_key)
    } else if crate::large::is_fetch(&admitted.request) {
        ajax::large(shell, admitted).await
    } else {
        ajax::get(shell, admitted).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uri_len_is_the_written_length() {
        for u in [
            "/chsk",
            "/chsk?client-id=c1&udt=1",
            "*",
            "http://example.com/chsk?x=1",
            "https://example.com:8443/",
            "example.com:443",
        ] {
            let uri: http::Uri = u.parse().expect("a valid URI");
            assert_eq!(super::uri_len(&uri), uri.to_string().len(), "{u}");
        }
    }
}
