//! `Server::builder()`: the options of Sente's `make-channel-socket-server!` (spec 7.1), in
//! snake case, with the same defaults except where a safer default is noted. Durations are
//! [`Duration`]s; the Sente-named `*_ms` methods take milliseconds.

use crate::dispatch::{Dispatch, Dispatcher};
use crate::guard::{CsrfToken, Guard, HookResponse};
use crate::handle::ServerHandle;
use crate::origin::{AllowedHosts, AllowedOrigins};
use crate::packers::Packers;
use crate::registry::Lifecycle;
use crate::registry::Registry;
use crate::request::ChskRequest;
use crate::server::Server;
use crate::shell::{Shell, Timing};
use crate::stream::{self, EventStream};
use sente_proto::backplane::{Backplane, LocalBackplane};
use sente_proto::packer::{self, Packer};
use sente_proto::server::replay::ReplayConfig;
use sente_proto::server::{CoreConfig, ServerLimits};
use sente_proto::{Uid, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why [`Builder::build`] refused the configuration.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// `build_with_events` was called on a builder with a `handler`: events go to one place.
    #[error(
        "build_with_events() delivers events to the stream; remove the handler(...) or call build()"
    )]
    HandlerAndStream,
}

/// Builds a [`Server`]. See the crate docs for an example.
#[must_use]
pub struct Builder {
    guard: Guard,
    timing: Timing,
    core: CoreConfig,
    packer: Option<Arc<dyn Packer>>,
    packer_name: String,
    recv_buf: usize,
    insecure_ok: bool,
    backplane: Option<Arc<dyn Backplane>>,
    handler: Option<Arc<dyn Dispatch>>,
    lifecycle: Lifecycle,
    recent_rejections: usize,
    /// `None`: the default for the backplane (see [`Builder::large`]).
    large: Option<crate::large::LargeConfig>,
    /// See [`Builder::core_shards`].
    shards: usize,
}

impl Server {
    /// A builder with Sente's defaults (spec 7.1) and secure checks on.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl Default for Builder {
    fn default() -> Self {
        let core = CoreConfig::default();
        Builder {
            guard: Guard::default(),
            timing: Timing {
                ws_kalive: Some(Duration::from_secs(25)),
                ws_ping_timeout: Some(Duration::from_secs(10)),
                lp_timeout: Duration::from_millis(core.lp_timeout_ms),
            },
            core,
            packer: None,
            packer_name: "edn".to_owned(),
            recv_buf: 1_000,
            insecure_ok: false,
            backplane: None,
            handler: None,
            lifecycle: Lifecycle::default(),
            recent_rejections: crate::meters::DEFAULT_RECENT_REJECTIONS,
            large: None,
            shards: sente_proto::server::default_shards(),
        }
    }
}

impl Builder {
    /// The uid of a request (Sente `:user-id-fn`). The request carries the client id
    /// ([`ChskRequest::client_id`]). Default: the [`UserId`](crate::UserId) request extension, else
    /// `Uid::Nil` (`:sente/nil-uid`, shared by all anonymous clients).
    pub fn user_id_fn(mut self, f: impl Fn(&ChskRequest) -> Uid + Send + Sync + 'static) -> Self {
        self.guard.user_id_fn = Arc::new(f);
        self
    }

    /// The reference CSRF token of a request (Sente `:csrf-token-fn`). The client's token is
    /// the `csrf-token` parameter, else the `X-CSRF-Token` header, else `X-XSRF-Token`. Default:
    /// the [`AntiForgeryToken`](crate::AntiForgeryToken) request extension; without it every request gets 403, as in
    /// Sente.
    pub fn csrf_token_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> CsrfToken + Send + Sync + 'static,
    ) -> Self {
        self.guard.csrf_token_fn = Some(Arc::new(f));
        self
    }

    /// Turns the CSRF check off (Sente `:csrf-token-fn nil`). Refused by [`Builder::build`] when
    /// the Origin check is off too, unless [`Builder::insecure_allow_unprotected`] is called.
    pub fn disable_csrf_check(mut self) -> Self {
        self.guard.csrf_token_fn = None;
        self
    }

    /// Allowed page origins (Sente `:allowed-origins`). Default: the request's own origin
    /// ([`AllowedOrigins::SameOrigin`]; Sente's default is `:all`). The list also decides which
    /// cross-origin pages get CORS headers for the endpoint and `<mount>/client.js` (see
    /// [`AllowedOrigins`]): to serve a page from `http://localhost:3000` and the server from
    /// `http://localhost:8080`, allow `AllowedOrigins::list(["http://localhost:3000"])`.
    pub fn allowed_origins(mut self, origins: AllowedOrigins) -> Self {
        self.guard.allowed_origins = origins;
        self
    }

    /// The `Host` headers the server answers (default: any). With the default same-origin check,
    /// set it on every server reachable beyond loopback: see [`AllowedHosts`] (DNS rebinding).
    pub fn allowed_hosts(mut self, hosts: AllowedHosts) -> Self {
        self.guard.allowed_hosts = hosts;
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
        self.guard.authorized_fn = Some(Arc::new(f));
        self
    }

    /// Answer to an unauthorized request. Default: 401 `Unauthorized request`.
    pub fn unauthorized_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> HookResponse + Send + Sync + 'static,
    ) -> Self {
        self.guard.unauthorized_fn = Arc::new(f);
        self
    }

    /// Answer to a bad CSRF token. Default: 403 `Bad CSRF token`.
    pub fn bad_csrf_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> HookResponse + Send + Sync + 'static,
    ) -> Self {
        self.guard.bad_csrf_fn = Arc::new(f);
        self
    }

    /// Answer to a disallowed origin. Default: 403 `Unauthorized origin`.
    pub fn bad_origin_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> HookResponse + Send + Sync + 'static,
    ) -> Self {
        self.guard.bad_origin_fn = Arc::new(f);
        self
    }

    /// Runs before the built-in checks (Sente 1.22 `:reject-fn`): `Some(response)` is returned
    /// as is; `None` continues with the CSRF, Origin and authorization checks.
    pub fn reject_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> Option<HookResponse> + Send + Sync + 'static,
    ) -> Self {
        self.guard.reject_fn = Some(Arc::new(f));
        self
    }

    /// Data for the handshake `[:chsk/handshake [uid nil data]]`. Default: `nil`.
    pub fn handshake_data_fn(
        mut self,
        f: impl Fn(&ChskRequest) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.guard.handshake_data_fn = Arc::new(f);
        self
    }

    /// WebSocket keepalive (Sente `:ws-kalive-ms`, default 25 s; checked every half of it);
    /// `None` turns the server's pings off.
    pub fn ws_kalive(mut self, every: Option<Duration>) -> Self {
        self.timing.ws_kalive = every;
        self
    }

    /// [`Builder::ws_kalive`] in milliseconds (Sente's name).
    pub fn ws_kalive_ms(self, ms: Option<u64>) -> Self {
        self.ws_kalive(ms.map(Duration::from_millis))
    }

    /// How long the server waits for any frame after its ping before closing (default 10 s);
    /// `None`: ping but never close.
    pub fn ws_ping_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timing.ws_ping_timeout = timeout;
        self
    }

    /// [`Builder::ws_ping_timeout`] in milliseconds.
    pub fn ws_ping_timeout_ms(self, ms: Option<u64>) -> Self {
        self.ws_ping_timeout(ms.map(Duration::from_millis))
    }

    /// How long an Ajax poll (and an Ajax reply) is held (default 20 s; must be < 60 s, the
    /// client's Ajax timeout).
    pub fn lp_timeout(mut self, timeout: Duration) -> Self {
        self.core.lp_timeout_ms = millis(timeout);
        self
    }

    /// [`Builder::lp_timeout`] in milliseconds (Sente's `:lp-timeout-ms`).
    pub fn lp_timeout_ms(self, ms: u64) -> Self {
        self.lp_timeout(Duration::from_millis(ms))
    }

    /// How many shards the connection registry is split into, by uid hash (at least 1; default:
    /// the machine's available parallelism, `std::thread::available_parallelism`). Connections
    /// and pushes of uids in different shards are handled on different cores at once; a
    /// broadcast visits every shard in turn. 1 keeps one lock for everything (the least work
    /// per broadcast on one core). See BENCHMARKS.md, "Many cores".
    pub fn core_shards(mut self, n: usize) -> Self {
        self.shards = n.max(1);
        self
    }

    /// Batching window of WebSocket pushes (default 30 ms).
    pub fn send_buf_ws(mut self, window: Duration) -> Self {
        self.core.send_buf_ms_ws = millis(window);
        self
    }

    /// [`Builder::send_buf_ws`] in milliseconds (Sente's `:send-buf-ms-ws`).
    pub fn send_buf_ms_ws(self, ms: u64) -> Self {
        self.send_buf_ws(Duration::from_millis(ms))
    }

    /// Batching window of Ajax pushes (default 100 ms).
    pub fn send_buf_ajax(mut self, window: Duration) -> Self {
        self.core.send_buf_ms_ajax = millis(window);
        self
    }

    /// [`Builder::send_buf_ajax`] in milliseconds (Sente's `:send-buf-ms-ajax`).
    pub fn send_buf_ms_ajax(self, ms: u64) -> Self {
        self.send_buf_ajax(Duration::from_millis(ms))
    }

    /// Grace after a WebSocket closes before its client counts as gone (default 2.5 s).
    pub fn allow_reconnect_before_close_ws(mut self, grace: Duration) -> Self {
        self.core.ms_allow_reconnect_before_close_ws = millis(grace);
        self
    }

    /// [`Builder::allow_reconnect_before_close_ws`] in milliseconds (Sente's name).
    pub fn ms_allow_reconnect_before_close_ws(self, ms: u64) -> Self {
        self.allow_reconnect_before_close_ws(Duration::from_millis(ms))
    }

    /// Grace after an Ajax poll ends before its client counts as gone (default 5 s).
    pub fn allow_reconnect_before_close_ajax(mut self, grace: Duration) -> Self {
        self.core.ms_allow_reconnect_before_close_ajax = millis(grace);
        self
    }

    /// [`Builder::allow_reconnect_before_close_ajax`] in milliseconds (Sente's name).
    pub fn ms_allow_reconnect_before_close_ajax(self, ms: u64) -> Self {
        self.allow_reconnect_before_close_ajax(Duration::from_millis(ms))
    }

    /// How long a node of a cluster waits for its [`Builder::backplane`] to join before it
    /// serves new clients (default 10 s). Until the backplane has joined ([`Backplane::joined`]:
    /// subscribed, and where pushes are numbered, its place in the numbering read), new
    /// handshakes, WebSocket upgrades and polls are held, and answered once it has: a client
    /// served before would miss the pushes the other nodes make meanwhile. A join takes
    /// milliseconds, so clients only see a slower handshake (no refusal: a Sente client whose
    /// first WebSocket fails would fall back to Ajax for good). Ajax POSTs are not held (their
    /// clients were served by other nodes). Past `wait` the node serves anyway, without the
    /// cluster (as during a later outage), and logs a warning. `Duration::ZERO` serves at once.
    /// A single node (no backplane) never waits.
    pub fn join_wait(mut self, wait: Duration) -> Self {
        self.lifecycle.join_wait = wait;
        self
    }

    /// How long [`ServerHandle::shutdown`](crate::ServerHandle::shutdown) lets handlers that
    /// are still running finish and send their replies before it closes the clients
    /// (default 5 s; bounded by [`Builder::shutdown_timeout`]).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.lifecycle.drain = timeout;
        self
    }

    /// Over how long [`ServerHandle::shutdown`](crate::ServerHandle::shutdown) spreads the
    /// closing of clients, so that they do not all reconnect at once (default 1 s).
    pub fn shutdown_stagger(mut self, stagger: Duration) -> Self {
        self.lifecycle.stagger = stagger;
        self
    }

    /// How long [`ServerHandle::shutdown`](crate::ServerHandle::shutdown) waits for connections
    /// and requests to end (default 10 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.lifecycle.timeout = timeout;
        self
    }

    /// The handler of every event (a [`Router`](crate::Router), or any [`Dispatch`]),
    /// registered before the server serves anything. Without one, events are dropped (and
    /// requested Ajax replies answered `[:chsk/timeout nil]`); see also
    /// [`Builder::build_with_events`].
    pub fn handler(mut self, handler: impl Dispatch) -> Self {
        self.handler = Some(Arc::new(handler));
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

    /// Capacity of the [`EventStream`] of [`Builder::build_with_events`] and of the queue of
    /// [`Concurrency::Sequential`](crate::Concurrency) (Sente `:recv-buf-or-n`, default 1 000).
    pub fn recv_buf(mut self, n: usize) -> Self {
        self.recv_buf = n.max(1);
        self
    }

    /// All limits (see [`ServerLimits`] for the defaults).
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.core.limits = limits;
        self
    }

    /// Resume after a reconnect: the bounds of the per-uid replay logs (default: on, 512
    /// pushes, 256 KiB and 60 s per uid; see [`ReplayConfig`]). Clients that ask for it (the
    /// sente-rs Rust, WASM and JS clients do, over WebSocket and Ajax) get what they missed during a
    /// short disconnect, in order, exactly once, or learn that they did not (`recovered:
    /// false`). A plain Sente client never asks and never sees it.
    pub fn replay(mut self, replay: ReplayConfig) -> Self {
        self.core.replay = replay;
        self
    }

    /// Offloading of large pushes over HTTP ([`crate::large`]): clients that announce the
    /// `large` extension (the sente-rs Rust, WASM and JS clients) fetch a push estimated over
    /// [`LargeConfig::threshold`](crate::large::LargeConfig::threshold) (default 64 KiB) by
    /// HTTP, so their socket stays free for small events; the app still sees one event, in
    /// order. A plain Sente client gets it inline. `threshold(None)` turns it off.
    ///
    /// The event is stored on the node that pushed it, so its fetch must reach that node: on
    /// by default without a [`Builder::backplane`], off by default with one (turn it on when
    /// the load balancer keeps each client on one node, e.g. sticky sessions).
    pub fn large(mut self, large: crate::large::LargeConfig) -> Self {
        self.large = Some(large);
        self
    }

    /// How many refused requests [`ServerHandle::recent_rejections`](crate::ServerHandle::recent_rejections)
    /// keeps (default 64; 0 keeps none, they are still counted in
    /// [`Stats::rejected_requests`](crate::Stats::rejected_requests)).
    pub fn recent_rejections(mut self, capacity: usize) -> Self {
        self.recent_rejections = capacity;
        self
    }

    /// Records the uid (what `user_id_fn` says) of each refused request in the recent
    /// rejections (default: off, a refused request's uid is not kept). `user_id_fn` then runs
    /// on refused requests too.
    pub fn record_rejected_uids(mut self, on: bool) -> Self {
        self.guard.record_rejected_uids = on;
        self
    }

    /// The backplane that carries pushes, closes and presence to every node (default: a
    /// [`LocalBackplane`], for a single node). A cluster backplane (`sente-redis`,
    /// `sente-nats`) may also decide `chsk/uidport-open` / `-close` for the cluster (fired on
    /// one node, once; see [`Backplane::uidport`]) and keep Ajax clients' pushes in per-client
    /// mailboxes, so an Ajax client's requests may land on any node
    /// ([`Backplane::mailbox`]). `chsk/uidport-close` events fired on behalf of a node that
    /// died carry the client id `sente-cluster` and an empty request.
    pub fn backplane(mut self, backplane: Arc<dyn Backplane>) -> Self {
        self.backplane = Some(backplane);
        self
    }

    /// Builds the server, with the [`Builder::handler`] (if any). Must be called inside a
    /// tokio runtime.
    pub fn build(self) -> Result<Server, BuildError> {
        let handler = self.handler.clone();
        self.assemble(handler)
    }

    /// Builds the server and an [`EventStream`] of every event (Sente's `ch-recv`), for an
    /// application that consumes events itself instead of registering a handler.
    pub fn build_with_events(self) -> Result<(Server, EventStream), BuildError> {
        if self.handler.is_some() {
            return Err(BuildError::HandlerAndStream);
        }
        let (sender, events) = stream::channel(self.recv_buf);
        let server = self.assemble(Some(Arc::new(sender)))?;
        Ok((server, events))
    }

    fn check(&self) -> Result<Arc<dyn Packer>, BuildError> {
        if self.core.lp_timeout_ms >= 60_000 {
            return Err(BuildError::LpTimeoutTooLong(self.core.lp_timeout_ms));
        }
        if self.core.send_buf_ms_ws == 0 {
            return Err(BuildError::ZeroWindow("send_buf_ms_ws"));
        }
        if self.core.send_buf_ms_ajax == 0 {
            return Err(BuildError::ZeroWindow("send_buf_ms_ajax"));
        }
        if self.guard.unprotected() && !self.insecure_ok {
            return Err(BuildError::Unprotected);
        }
        let packer = match &self.packer {
            Some(p) => p.clone(),
            None => packer::by_name(&self.packer_name)
                .ok_or_else(|| BuildError::NoPacker(self.packer_name.clone()))?,
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        Ok(packer)
    }

    /// Wires the parts: the registry (with the backplane), the handle, the dispatcher, and the
    /// transports' shell. The registry reaches the dispatcher through weak references only, so a
    /// handler that captures a [`ServerHandle`](crate::ServerHandle) makes no cycle.
    fn assemble(self, handler: Option<Arc<dyn Dispatch>>) -> Result<Server, BuildError> {
        let packer = self.check()?;
        // A fetch must reach the node that stored the event: on by default on one node only.
        let large = self.large.unwrap_or_else(|| match self.backplane {
            None => crate::large::LargeConfig::default(),
            Some(_) => crate::large::LargeConfig::default().threshold(None),
        });
        let backplane = self
            .backplane
            .unwrap_or_else(|| Arc::new(LocalBackplane::new()));
        let timing = Timing {
            lp_timeout: Duration::from_millis(self.core.lp_timeout_ms),
            ..self.timing
        };
        let meters = Arc::new(crate::meters::Meters::new(self.recent_rejections));
        let registry = Registry::start(
            self.core,
            self.shards,
            backplane,
            packer.clone(),
            meters,
            self.lifecycle,
        );
        let handle = ServerHandle::new(registry.clone());
        let dispatcher = Dispatcher::new(handler, self.recv_buf, handle.clone());
        let d = Arc::downgrade(&dispatcher);
        registry.set_system_sink(Box::new(move |ev| {
            if let Some(d) = d.upgrade() {
                d.system(ev);
            }
        }));
        let r = Arc::downgrade(&registry);
        registry.set_request_sink(Box::new(move |msg| {
            if let Some(r) = r.upgrade() {
                crate::s2c::from_backplane(&r, msg);
            }
        }));
        let d = Arc::downgrade(&dispatcher);
        registry.on_shutdown(Box::new(move || {
            if let Some(d) = d.upgrade() {
                d.release();
            }
        }));
        let shell = Arc::new(Shell {
            guard: self.guard,
            packers: Packers::new(packer),
            dispatcher,
            timing,
            replies: Mutex::default(),
            unpacking: tokio::sync::Semaphore::new(crate::shell::unpack_slots()),
            large: crate::large::Large::new(large),
        });
        Ok(Server::new(handle, shell))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
