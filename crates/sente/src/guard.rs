//! The security guard: owns the application's request hooks (Sente's `:user-id-fn`,
//! `:csrf-token-fn`, `:allowed-origins`, `:authorized?-fn`, `:reject-fn` and the answers to
//! refused requests, `:handshake-data-fn`) and runs the rejection pipeline of spec 4.2 on every
//! GET, POST and WebSocket upgrade.

use crate::origin::{AllowedHosts, AllowedOrigins, host_allowed, origin_allowed, token_eq};
use crate::request::ChskRequest;
use bytes::Bytes;
use http::{HeaderName, header};
use sente_proto::{Uid, Value};
use std::sync::Arc;

/// The headers a client may carry its CSRF token in (besides the `csrf-token` parameter).
static X_CSRF_TOKEN: HeaderName = HeaderName::from_static("x-csrf-token");
static X_XSRF_TOKEN: HeaderName = HeaderName::from_static("x-xsrf-token");

/// A response a hook returns (rejections): status, headers and a body.
pub type HookResponse = http::Response<Bytes>;

pub(crate) type UserIdFn = Arc<dyn Fn(&ChskRequest) -> Uid + Send + Sync>;
pub(crate) type CsrfFn = Arc<dyn Fn(&ChskRequest) -> CsrfToken + Send + Sync>;
pub(crate) type PredFn = Arc<dyn Fn(&ChskRequest) -> bool + Send + Sync>;
pub(crate) type RespFn = Arc<dyn Fn(&ChskRequest) -> HookResponse + Send + Sync>;
pub(crate) type RejectFn = Arc<dyn Fn(&ChskRequest) -> Option<HookResponse> + Send + Sync>;
pub(crate) type ValueFn = Arc<dyn Fn(&ChskRequest) -> Value + Send + Sync>;

/// What `csrf_token_fn` returns: the reference token the request's token must equal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CsrfToken {
    /// The expected token.
    Token(String),
    /// No token is available: the check fails (Sente: a nil reference token means 403).
    Missing,
    /// Pass this request without a check (Sente's `:sente/skip-CSRF-check`).
    Skip,
}

impl From<Option<String>> for CsrfToken {
    fn from(t: Option<String>) -> Self {
        t.map_or(CsrfToken::Missing, CsrfToken::Token)
    }
}

impl From<String> for CsrfToken {
    fn from(t: String) -> Self {
        CsrfToken::Token(t)
    }
}

impl From<&str> for CsrfToken {
    fn from(t: &str) -> Self {
        CsrfToken::Token(t.to_owned())
    }
}

/// Request extension read by the default `user_id_fn` (Sente's default reads the session's
/// `:uid`): a middleware that knows the user inserts `UserId(uid)` into the request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserId(pub Uid);

/// Request extension read by the default `csrf_token_fn` (Sente's default reads the
/// anti-forgery token of the request or session): a middleware inserts the session's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AntiForgeryToken(pub String);

/// Why a request was refused (for logs and counters; the client gets the hook's response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The `Host` is not one of [`AllowedHosts`].
    Host,
    /// `reject_fn` answered.
    RejectFn,
    /// The CSRF token is missing or wrong.
    Csrf,
    /// The page's origin is not allowed.
    Origin,
    /// `authorized_fn` said no.
    Unauthorized,
}

impl Rejection {
    /// A short name: `host`, `reject-fn`, `csrf`, `origin`, `unauthorized`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Host => "host",
            Rejection::RejectFn => "reject-fn",
            Rejection::Csrf => "csrf",
            Rejection::Origin => "origin",
            Rejection::Unauthorized => "unauthorized",
        }
    }
}

/// A refused request: why, and the hook's answer.
pub(crate) type Refusal = Box<(Rejection, HookResponse)>;

pub(crate) fn text_response(status: u16, body: &'static str) -> HookResponse {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap_or_else(|_| http::Response::new(Bytes::from_static(body.as_bytes())))
}

/// Whether a request's CSRF check is done ([`Guard::admit_head`]) or waits for its form body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CsrfCheck {
    /// Passed (or not required).
    Done,
    /// The head carries no token: the form body may (`csrf-token` field).
    AwaitsBody,
}

/// The CSRF verdict on what the request carries so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Csrf {
    Pass,
    Fail,
    /// A token is expected and the request carries none.
    NoToken,
}

/// The hooks and the checks they drive. Built by [`crate::Builder`], owned by the server.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) user_id_fn: UserIdFn,
    pub(crate) csrf_token_fn: Option<CsrfFn>,
    pub(crate) allowed_origins: AllowedOrigins,
    pub(crate) allowed_hosts: AllowedHosts,
    /// Whether the DNS-rebinding warning was logged (see [`Guard::warn_if_host_unchecked`]).
    warned_hosts: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) authorized_fn: Option<PredFn>,
    pub(crate) unauthorized_fn: RespFn,
    pub(crate) bad_csrf_fn: RespFn,
    pub(crate) bad_origin_fn: RespFn,
    pub(crate) reject_fn: Option<RejectFn>,
    pub(crate) handshake_data_fn: ValueFn,
    /// Whether refused requests' uids are kept in the recent rejections.
    pub(crate) record_rejected_uids: bool,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            user_id_fn: Arc::new(|req: &ChskRequest| {
                req.extensions()
                    .get::<UserId>()
                    .map_or(Uid::Nil, |u| u.0.clone())
            }),
            csrf_token_fn: Some(Arc::new(|req: &ChskRequest| {
                req.extensions()
                    .get::<AntiForgeryToken>()
                    .map_or(CsrfToken::Missing, |t| CsrfToken::Token(t.0.clone()))
            })),
            allowed_origins: AllowedOrigins::SameOrigin,
            allowed_hosts: AllowedHosts::Any,
            warned_hosts: Arc::default(),
            authorized_fn: None,
            unauthorized_fn: Arc::new(|_: &ChskRequest| text_response(401, "Unauthorized request")),
            bad_csrf_fn: Arc::new(|_: &ChskRequest| text_response(403, "Bad CSRF token")),
            bad_origin_fn: Arc::new(|_: &ChskRequest| text_response(403, "Unauthorized origin")),
            reject_fn: None,
            handshake_data_fn: Arc::new(|_: &ChskRequest| Value::Nil),
            record_rejected_uids: false,
        }
    }
}

impl Guard {
    /// Logs once (a `tracing::warn!`) when the server answers a request for a host other than
    /// loopback while it checks origins against the `Host` header with no
    /// [`AllowedHosts`] list: a DNS-rebinding page would pass that check.
    fn warn_if_host_unchecked(&self, host: Option<&str>) {
        use std::sync::atomic::Ordering;
        if self.allowed_hosts != AllowedHosts::Any
            || self.allowed_origins != AllowedOrigins::SameOrigin
            || self.warned_hosts.load(Ordering::Relaxed)
        {
            return;
        }
        let name = host
            .unwrap_or("")
            .rsplit_once(':')
            .map_or(host.unwrap_or(""), |(h, p)| {
                if p.bytes().all(|b| b.is_ascii_digit()) {
                    h
                } else {
                    host.unwrap_or("")
                }
            });
        let loopback = name.eq_ignore_ascii_case("localhost")
            || name == "[::1]"
            || name
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback && !self.warned_hosts.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                host = name,
                "serving beyond loopback with the same-origin check and no allowed_hosts: a \
                 DNS-rebinding page would pass; set Builder::allowed_hosts"
            );
        }
    }

    /// Whether both the CSRF and the Origin checks are off.
    pub(crate) fn unprotected(&self) -> bool {
        self.csrf_token_fn.is_none() && self.allowed_origins == AllowedOrigins::All
    }

    /// The rejection pipeline of spec 4.2 (after the client-id check): the `Host`, `reject_fn`,
    /// CSRF, Origin, authorization. `Ok` carries the request's uid.
    pub(crate) fn admit(&self, req: &ChskRequest) -> Result<Uid, Refusal> {
        let csrf = self.admit_head(req, false)?;
        self.admit_rest(req, csrf)
    }

    /// The checks that need only the request head, run before a POST body is read: `reject_fn`,
    /// CSRF, Origin, `authorized_fn` (in Sente's order). With `may_defer_csrf`, a request whose
    /// head carries no CSRF token (no `csrf-token` query parameter, no `X-CSRF-Token` or
    /// `X-XSRF-Token` header) has its CSRF check put off until its form body is read
    /// ([`CsrfCheck::AwaitsBody`]); a wrong token in the head is refused at once.
    pub(crate) fn admit_head(
        &self,
        req: &ChskRequest,
        may_defer_csrf: bool,
    ) -> Result<CsrfCheck, Refusal> {
        let host = req.header(&header::HOST);
        self.warn_if_host_unchecked(host);
        if !host_allowed(&self.allowed_hosts, host) {
            return Err(Box::new((
                Rejection::Host,
                text_response(
                    421,
                    "Misdirected request: this server does not answer that Host",
                ),
            )));
        }
        if let Some(f) = &self.reject_fn
            && let Some(r) = f(req)
        {
            return Err(Box::new((Rejection::RejectFn, r)));
        }
        let csrf = match self.csrf(req) {
            Csrf::Pass => CsrfCheck::Done,
            Csrf::NoToken if may_defer_csrf => CsrfCheck::AwaitsBody,
            Csrf::NoToken | Csrf::Fail => {
                return Err(Box::new((Rejection::Csrf, (self.bad_csrf_fn)(req))));
            }
        };
        if !origin_allowed(
            &self.allowed_origins,
            req.header(&header::ORIGIN),
            req.header(&header::REFERER),
            host,
        ) {
            return Err(Box::new((Rejection::Origin, (self.bad_origin_fn)(req))));
        }
        if let Some(f) = &self.authorized_fn
            && !f(req)
        {
            return Err(Box::new((
                Rejection::Unauthorized,
                (self.unauthorized_fn)(req),
            )));
        }
        Ok(csrf)
    }

    /// What is left once the whole request is there: a CSRF check put off by
    /// [`Guard::admit_head`], then the uid.
    pub(crate) fn admit_rest(&self, req: &ChskRequest, csrf: CsrfCheck) -> Result<Uid, Refusal> {
        if csrf == CsrfCheck::AwaitsBody && self.csrf(req) != Csrf::Pass {
            return Err(Box::new((Rejection::Csrf, (self.bad_csrf_fn)(req))));
        }
        Ok((self.user_id_fn)(req))
    }

    fn csrf(&self, req: &ChskRequest) -> Csrf {
        let Some(f) = &self.csrf_token_fn else {
            return Csrf::Pass;
        };
        match f(req) {
            CsrfToken::Skip => Csrf::Pass,
            CsrfToken::Missing => Csrf::Fail,
            CsrfToken::Token(expected) => match req
                .param("csrf-token")
                .or_else(|| req.header(&X_CSRF_TOKEN))
                .or_else(|| req.header(&X_XSRF_TOKEN))
            {
                None => Csrf::NoToken,
                Some(got) if token_eq(got, &expected) => Csrf::Pass,
                Some(_) => Csrf::Fail,
            },
        }
    }

    /// The application's handshake data for a connection.
    pub(crate) fn handshake_data(&self, req: &ChskRequest) -> Value {
        (self.handshake_data_fn)(req)
    }
}
