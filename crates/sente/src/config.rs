//! `Server::builder()`: the options of Sente's `make-channel-socket-server!` (spec 7.1), in
//! snake case, with the same defaults except where a safer default is noted.

use crate::request::ChskRequest;
use crate::security::AllowedOrigins;
use crate::server::{EventStream, Server};
use bytes::Bytes;
use sente_proto::packer::{self, Packer};
use sente_proto::server::{CoreConfig, ServerLimits};
use sente_proto::{Uid, Value};
use std::sync::Arc;

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

/// Why [`Builder::build`] refused the configuration.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// `lp_timeout_ms` must be below the client's 60 s XHR timeout (Sente throws too).
    #[error("lp_timeout_ms must be < 60000 (the client's Ajax timeout), got {0}")]
    LpTimeoutTooLong(u64),
    /// A send-buffer window of 0.
    #[error("{0} must be a positive number of milliseconds")]
    ZeroWindow(&'static str),
    /// Both the CSRF and the Origin checks are off.
    #[error(
        "both the CSRF check and the Origin check are disabled; call insecure_allow_unprotected() if you really mean it"
    )]
    Unprotected,
    /// The default packer is not available.
    #[error("no packer named {0:?} is available")]
    NoPacker(String),
    /// `build` must run inside a tokio runtime (it spawns the server's timer task).
    #[error("Server::builder().build() must be called from within a tokio runtime")]
    NoRuntime,
}

/// Builds a [`Server`] and its [`EventStream`]. See the crate docs for an example.
#[must_use]
pub struct Builder {
    pub(crate) user_id_fn: UserIdFn,
    pub(crate) csrf_token_fn: Option<CsrfFn>,
    pub(crate) allowed_origins: AllowedOrigins,
    pub(crate) authorized_fn: Option<PredFn>,
    pub(crate) unauthorized_fn: RespFn,
    pub(crate) bad_csrf_fn: RespFn,
    pub(crate) bad_origin_fn: RespFn,
    pub(crate) reject_fn: Option<RejectFn>,
    pub(crate) handshake_data_fn: ValueFn,
    pub(crate) ws_kalive_ms: Option<u64>,
    pub(crate) ws_ping_timeout_ms: Option<u64>,
    pub(crate) core: CoreConfig,
    pub(crate) packer: Option<Arc<dyn Packer>>,
    pub(crate) packer_name: String,
    pub(crate) recv_buf: usize,
    pub(crate) insecure_ok: bool,
    pub(crate) backplane: Option<Arc<dyn crate::backplane::Backplane>>,
}

pub(crate) fn text_response(status: u16, body: &'static str) -> HookResponse {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap_or_else(|_| http::Response::new(Bytes::from_static(body.as_bytes())))
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
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
            authorized_fn: None,
            unauthorized_fn: Arc::new(|_: &ChskRequest| text_response(401, "Unauthorized request")),
            bad_csrf_fn: Arc::new(|_: &ChskRequest| text_response(403, "Bad CSRF token")),
            bad_origin_fn: Arc::new(|_: &ChskRequest| text_response(403, "Unauthorized origin")),
            reject_fn: None,
            handshake_data_fn: Arc::new(|_: &ChskRequest| Value::Nil),
            ws_kalive_ms: Some(25_000),
            ws_ping_timeout_ms: Some(10_000),
            core: CoreConfig::default(),
            packer: None,
            packer_name: "edn".to_owned(),
            recv_buf: 1_000,
            insecure_ok: false,
            backplane: None,
        }
    }
}

impl Builder {
    /// The uid of a request (Sente `:user-id-fn`). The request carries the client id
    /// ([`ChskRequest::client_id`]). Default: the [`UserId`] request extension, else
    /// `Uid::Nil` (`:sente/nil-uid`, shared by all anonymous clients).
    pub fn user_id_fn(mut self, f: impl Fn(&ChskRequest) -> Uid + Send + Sync + 'static) -> Self {
        self.user_id_fn = Arc::new(f);
        self
    }

    /// The reference CSRF token of a request (Sente `:csrf-token-fn`). The client's token is
    /// the `csrf-token` parameter, else the `X-CSRF-Token` header, else `X-XSRF-Token`. Default:
    /// the [`AntiForgeryToken`] request extension; without it every request gets 403, as in
    /// Sente.
    pub fn csrf_token_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> CsrfToken + Send + Sync + 'static,
    ) -> Self {
        self.csrf_token_fn = Some(Arc::new(f));
        self
    }

    /// Turns the CSRF check off (Sente `:csrf-token-fn nil`). Refused by [`Builder::build`] when
    /// the Origin check is off too, unless [`Builder::insecure_allow_unprotected`] is called.
    pub fn disable_csrf_check(mut self) -> Self {
        self.csrf_token_fn = None;
        self
    }

    /// Allowed page origins (Sente `:allowed-origins`). Default: the request's own origin
    /// ([`AllowedOrigins::SameOrigin`]; Sente's default is `:all`).
    pub fn allowed_origins(mut self, origins: AllowedOrigins) -> Self {
        self.allowed_origins = origins;
        self
    }

    /// Accepts a configuration with both the CSRF and the Origin check off: any web page can
    /// then use your users' sessions. Only for APIs without cookies or for tests.
    pub fn insecure_allow_unprotected(mut self) -> Self {
        self.insecure_ok = true;
        self
    }

    /// Authorizes a request (Sente `:authorized?-fn`); `false` gets `unauthorized_fn`'s answer.
    pub fn authorized_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.authorized_fn = Some(Arc::new(f));
        self
    }

    /// Answer to an unauthorized request. Default: 401 `Unauthorized request`.
    pub fn unauthorized_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> HookResponse + Send + Sync + 'static,
    ) -> Self {
        self.unauthorized_fn = Arc::new(f);
        self
    }

    /// Answer to a bad CSRF token. Default: 403 `Bad CSRF token`.
    pub fn bad_csrf_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> HookResponse + Send + Sync + 'static,
    ) -> Self {
        self.bad_csrf_fn = Arc::new(f);
        self
    }

    /// Answer to a disallowed origin. Default: 403 `Unauthorized origin`.
    pub fn bad_origin_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> HookResponse + Send + Sync + 'static,
    ) -> Self {
        self.bad_origin_fn = Arc::new(f);
        self
    }

    /// Runs before the built-in checks (Sente 1.22 `:reject-fn`): `Some(response)` is returned
    /// as is; `None` continues with the CSRF, Origin and authorization checks.
    pub fn reject_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> Option<HookResponse> + Send + Sync + 'static,
    ) -> Self {
        self.reject_fn = Some(Arc::new(f));
        self
    }

    /// Data for the handshake `[:chsk/handshake [uid nil data]]`. Default: `nil`.
    pub fn handshake_data_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.handshake_data_fn = Arc::new(f);
        self
    }

    /// WebSocket keepalive (Sente `:ws-kalive-ms`, default 25 000; checked every half of it);
    /// `None` turns the server's pings off.
    pub fn ws_kalive_ms(mut self, ms: Option<u64>) -> Self {
        self.ws_kalive_ms = ms;
        self
    }

    /// How long the server waits for any frame after its ping before closing (default 10 000);
    /// `None`: ping but never close.
    pub fn ws_ping_timeout_ms(mut self, ms: Option<u64>) -> Self {
        self.ws_ping_timeout_ms = ms;
        self
    }

    /// How long an Ajax poll (and an Ajax reply) is held (default 20 000; must be < 60 000).
    pub fn lp_timeout_ms(mut self, ms: u64) -> Self {
        self.core.lp_timeout_ms = ms;
        self
    }

    /// Batching window of WebSocket pushes (default 30 ms).
    pub fn send_buf_ms_ws(mut self, ms: u64) -> Self {
        self.core.send_buf_ms_ws = ms;
        self
    }

    /// Batching window of Ajax pushes (default 100 ms).
    pub fn send_buf_ms_ajax(mut self, ms: u64) -> Self {
        self.core.send_buf_ms_ajax = ms;
        self
    }

    /// Grace after a WebSocket closes before its client counts as gone (default 2 500 ms).
    pub fn ms_allow_reconnect_before_close_ws(mut self, ms: u64) -> Self {
        self.core.ms_allow_reconnect_before_close_ws = ms;
        self
    }

    /// Grace after an Ajax poll ends before its client counts as gone (default 5 000 ms).
    pub fn ms_allow_reconnect_before_close_ajax(mut self, ms: u64) -> Self {
        self.core.ms_allow_reconnect_before_close_ajax = ms;
        self
    }

    /// The default packer, for connections without a `packer` query parameter (default: edn,
    /// as in Sente).
    pub fn packer(mut self, packer: Arc<dyn Packer>) -> Self {
        packer.name().clone_into(&mut self.packer_name);
        self.packer = Some(packer);
        self
    }

    /// The default packer by name (`edn`, `transit`, `json`, `msgpack`, ...).
    pub fn packer_name(mut self, name: &str) -> Self {
        self.packer = None;
        name.clone_into(&mut self.packer_name);
        self
    }

    /// Capacity of the [`EventStream`] (Sente `:recv-buf-or-n`, default 1 000). When it is full,
    /// connections wait (backpressure): a WebSocket stops reading, an Ajax POST waits.
    pub fn recv_buf(mut self, n: usize) -> Self {
        self.recv_buf = n.max(1);
        self
    }

    /// All limits (see [`ServerLimits`] for the defaults).
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.core.limits = limits;
        self
    }

    /// The backplane that carries pushes and closes to every node (default: a
    /// [`LocalBackplane`](crate::backplane::LocalBackplane), for a single node).
    pub fn backplane(mut self, backplane: Arc<dyn crate::backplane::Backplane>) -> Self {
        self.backplane = Some(backplane);
        self
    }

    /// Builds the server. Must be called inside a tokio runtime.
    pub fn build(mut self) -> Result<(Server, EventStream), BuildError> {
        if self.core.lp_timeout_ms >= 60_000 {
            return Err(BuildError::LpTimeoutTooLong(self.core.lp_timeout_ms));
        }
        if self.core.send_buf_ms_ws == 0 {
            return Err(BuildError::ZeroWindow("send_buf_ms_ws"));
        }
        if self.core.send_buf_ms_ajax == 0 {
            return Err(BuildError::ZeroWindow("send_buf_ms_ajax"));
        }
        if self.csrf_token_fn.is_none()
            && self.allowed_origins == AllowedOrigins::All
            && !self.insecure_ok
        {
            return Err(BuildError::Unprotected);
        }
        if self.packer.is_none() {
            self.packer = Some(
                packer::by_name(&self.packer_name)
                    .ok_or_else(|| BuildError::NoPacker(self.packer_name.clone()))?,
            );
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        Ok(Server::start(self))
    }
}
