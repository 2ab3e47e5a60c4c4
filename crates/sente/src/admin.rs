//! An admin page for a running server: live connections by transport, the connected uids,
//! event rates in and out, reply latency, and the recent rejections with their reasons.
//!
//! [`AdminPage`] serves two things at the path it is mounted at:
//! - `GET <path>`: a self-contained HTML page (inline CSS and JavaScript, no CDN) that polls
//!   the snapshot every second and draws charts of the last two minutes on `<canvas>`es;
//! - `GET <path>/snapshot.json`: the [`Snapshot`] as JSON (cumulative counters; the page
//!   computes rates and latency quantiles from the difference of two snapshots).
//!
//! **The route has no authentication of its own: the application must mount it behind its own
//! check** (it shows who is connected and who was refused). With axum:
//!
//! ```no_run
//! # fn demo(server: &sente::Server) -> axum::Router {
//! use axum::{extract::Request, http::StatusCode, middleware::{self, Next}, response::Response};
//!
//! async fn admins_only(req: Request, next: Next) -> Result<Response, StatusCode> {
//!     // Your session's check here: e.g. the signed-in user has the admin role.
//!     let is_admin = req.headers().get("x-demo-admin").is_some();
//!     if !is_admin {
//!         return Err(StatusCode::FORBIDDEN);
//!     }
//!     Ok(next.run(req).await)
//! }
//!
//! let admin = sente::admin::AdminPage::new(server.handle())
//!     .router("/admin")
//!     .layer(middleware::from_fn(admins_only));
//! axum::Router::new().merge(server.router("/chsk")).merge(admin)
//! # }
//! ```
//!
//! With hyper or another tower stack, route `<path>` and `<path>/snapshot.json` to
//! [`AdminPage::service`] after your check. The numbers are this node's (connections, events,
//! rejections); the connected uids are the cluster's (see [`ConnectedUids`](crate::ConnectedUids)).
//!
//! Everything comes from [`ServerHandle::stats`] (atomics), [`ServerHandle::connected_uids`] and
//! [`ServerHandle::recent_rejections`] (a bounded ring, redacted: no query string, body or
//! cookies, so no CSRF token and no payload; uids only with
//! [`Builder::record_rejected_uids`](crate::Builder::record_rejected_uids)).

use crate::handle::ServerHandle;
use crate::meters::RejectedRequest;
use crate::registry::Stats;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::meters::{LATENCY_BUCKETS, LatencyHistogram};

/// Default of [`AdminPage::max_uids`].
pub const DEFAULT_MAX_UIDS: usize = 200;

/// The page (inline CSS and JavaScript).
const PAGE: &str = include_str!("../admin/admin.html");

/// The admin page of a server: a snapshot of its state, and the service that shows it. Cheap to
/// clone. See the [module docs](self): mount it behind your own authentication.
#[derive(Clone, Debug)]
pub struct AdminPage {
    server: ServerHandle,
    max_uids: usize,
}

/// What the admin page shows, at one instant (see [`AdminPage::snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The server's counters and gauges (this node).
    pub stats: Stats,
    /// How many uids have a WebSocket client.
    pub uids_ws: usize,
    /// How many uids have an Ajax client (that has long-polled).
    pub uids_ajax: usize,
    /// How many uids are connected (either transport).
    pub uids_any: usize,
    /// The connected uids, sorted, at most [`AdminPage::max_uids`] of them.
    pub uids: Vec<String>,
    /// How many connected uids [`Snapshot::uids`] leaves out.
    pub more_uids: usize,
    /// The recent rejections, oldest first.
    pub rejections: Vec<RejectedRequest>,
}

impl AdminPage {
    /// The admin page of `server` (a [`Server`](crate::Server) derefs to its handle).
    pub fn new(server: &ServerHandle) -> Self {
        AdminPage {
            server: server.clone(),
            max_uids: DEFAULT_MAX_UIDS,
        }
    }

    /// How many uids the snapshot lists (default 200; the others are counted in
    /// [`Snapshot::more_uids`]).
    #[must_use]
    pub fn max_uids(mut self, max: usize) -> Self {
        self.max_uids = max;
        self
    }

    /// The server's state now.
    pub fn snapshot(&self) -> Snapshot {
        let stats = self.server.stats();
        let (uids_ws, uids_ajax, uids_any, mut uids) = {
            // The watch's lock is held only while the uids are copied out.
            let connected = self.server.connected_uids();
            let c = connected.borrow();
            let all: Vec<String> = c.any.iter().map(ToString::to_string).collect();
            (c.ws.len(), c.ajax.len(), c.any.len(), all)
        };
        let more_uids = uids.len().saturating_sub(self.max_uids);
        // The first `max_uids` in order, without sorting the rest.
        if more_uids > 0 && self.max_uids > 0 {
            uids.select_nth_unstable(self.max_uids - 1);
        }
        uids.truncate(self.max_uids);
        uids.sort_unstable();
        Snapshot {
            at_ms: u64::try_from(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
            stats,
            uids_ws,
            uids_ajax,
            uids_any,
            uids,
            more_uids,
            rejections: self.server.recent_rejections(),
        }
    }

    /// The tower service: `GET` of a path ending in `/snapshot.json` answers the snapshot as
    /// JSON, any other `GET` the page. No authentication: put yours in front of it.
    pub fn service(&self) -> AdminService {
        AdminService { page: self.clone() }
    }

    /// An `axum::Router` serving the page at `path` and the snapshot at `<path>/snapshot.json`
    /// (feature `axum`). Layer your authentication on it before merging it into your app.
    #[cfg(feature = "axum")]
    pub fn router<S>(&self, path: &str) -> axum::Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let path = path.trim_end_matches('/');
        let svc = self.service();
        let page_path = if path.is_empty() { "/" } else { path };
        axum::Router::new()
            .route_service(page_path, svc.clone())
            .route_service(&format!("{path}/snapshot.json"), svc)
    }
}

impl Snapshot {
    /// The snapshot as JSON, as `<path>/snapshot.json` serves it.
    pub fn to_json(&self) -> String {
        let s = &self.stats;
        let mut out = String::with_capacity(1024 + 32 * (self.uids.len() + self.rejections.len()));
        let _ = write!(
            out,
            "{{\"at_ms\":{},\"connections\":{{\"ws\":{},\"ajax_polls\":{}}},\
             \"uids\":{{\"ws\":{},\"ajax\":{},\"any\":{},\"more\":{},\"list\":[",
            self.at_ms,
            s.ws_connections,
            s.ajax_polls,
            self.uids_ws,
            self.uids_ajax,
            self.uids_any,
            self.more_uids
        );
        for (i, uid) in self.uids.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(&mut out, uid);
        }
        let r = &s.replies;
        let _ = write!(
            out,
            "]}},\"events\":{{\"in\":{},\"out\":{}}},\"replies\":{{\"count\":{},\"sum_us\":{},\
             \"p50_us\":{},\"p99_us\":{},\"buckets\":[",
            s.events_in,
            s.events_out,
            r.count,
            r.sum_us,
            r.quantile_us(0.5).unwrap_or(0),
            r.quantile_us(0.99).unwrap_or(0)
        );
        for (i, n) in r.buckets.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{n}");
        }
        let _ = write!(
            out,
            "]}},\"dropped\":{{\"system_events\":{},\"push_events\":{},\"clients\":{}}},\
             \"rejected\":{},\"rejections\":[",
            s.dropped_system_events, s.dropped_push_events, s.dropped_clients, s.rejected_requests
        );
        for (i, rej) in self.rejections.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"at_ms\":{},\"status\":{},\"reason\":",
                rej.at_ms, rej.status
            );
            json_str(&mut out, rej.reason);
            out.push_str(",\"transport\":");
            json_str(&mut out, rej.transport);
            out.push_str(",\"detail\":");
            json_str(&mut out, &rej.detail);
            out.push_str(",\"uid\":");
            match &rej.uid {
                Some(u) => json_str(&mut out, u),
                None => out.push_str("null"),
            }
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}

/// `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `<` too, so the JSON is safe even where it would be read as HTML.
            c if (c as u32) < 0x20 || c == '<' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The tower service of an [`AdminPage`] ([`AdminPage::service`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct AdminService {
    page: AdminPage,
}

impl<B> tower_service::Service<Request<B>> for AdminService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(self.answer(req.method(), req.uri().path())))
    }
}

impl AdminService {
    fn answer(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = Response::new(Full::new(Bytes::from_static(b"Method not allowed")));
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            return r;
        }
        let (body, ct) = if path.ends_with("/snapshot.json") {
            (
                Bytes::from(self.page.snapshot().to_json()),
                "application/json",
            )
        } else {
            (
                Bytes::from_static(PAGE.as_bytes()),
                "text/html; charset=utf-8",
            )
        };
        let mut r = Response::new(Full::new(body));
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; frame-ancestors 'none'",
            ),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::json_str;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_str(&mut out, "a\"b\\c\n</script>\u{1}");
        assert_eq!(out, r#""a\"b\\c\n\u003c/script>\u0001""#);
    }
}
