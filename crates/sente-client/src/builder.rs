//! [`ClientBuilder`]: Sente's `make-channel-socket-client!` options.

use crate::{Client, ConnectError};
use sente_proto::client::{
    Backoff, ChskUrl, ClientConfig, CsrfToken, InvalidUrl, Kind, QueueConfig,
};
use sente_proto::{ClientId, InvalidClientId, Limits, Packer};
use std::sync::Arc;
use std::time::Duration;

/// Builds a [`Client`] around a [`ClientConfig`], whose [`new`](ClientConfig::new) holds every
/// default: Sente's ([`Kind::Auto`], keepalive 20 s with a 5 s ping timeout, Ajax poll timeout
/// 60 s) and sente-rs's (jittered backoff capped at 30 s, slow retry after a rejected handshake,
/// WebSocket re-probing every 3 min after an Ajax fallback). The builder adds a random UUID v4
/// client id and the `edn` packer, and the two settings of the shell itself
/// ([`event_buffer`](Self::event_buffer), [`seed`](Self::seed)).
#[derive(Debug)]
pub struct ClientBuilder {
    /// What the machine gets. While the url or client id given is invalid, the field holds a
    /// placeholder and `invalid` the error, reported by [`config`](Self::config).
    config: ClientConfig,
    invalid: Invalid,
    event_buffer: usize,
    seed: Option<u64>,
    handlers: crate::shared::RequestHandlers,
    #[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
    tls: crate::tls::TlsOptions,
}

/// Inputs that were refused, reported in this order by [`ClientBuilder::config`].
#[derive(Debug, Default)]
struct Invalid {
    url: Option<InvalidUrl>,
    client_id: Option<InvalidClientId>,
    /// `packer_name` with a name no packer has.
    packer: Option<String>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn random_client_id() -> ClientId {
    ClientId::new(uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid client id")
}

impl ClientBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let mut invalid = Invalid::default();
        let url = ChskUrl::parse(&url).unwrap_or_else(|e| {
            invalid.url = Some(e);
            ChskUrl::parse("http://invalid.invalid/chsk").expect("a valid placeholder url")
        });
        let packer: Arc<dyn Packer> = Arc::new(sente_proto::packer::EdnPacker);
        let mut builder =
            ClientBuilder::from_config(ClientConfig::new(url, random_client_id(), packer));
        builder.invalid = invalid;
        builder
    }

    /// A builder starting from a complete configuration (its url, client id and packer
    /// included), e.g. one shared with a custom shell; the setters below change it further.
    pub fn from_config(config: ClientConfig) -> Self {
        ClientBuilder {
            config,
            invalid: Invalid::default(),
            event_buffer: 1024,
            seed: None,
            handlers: crate::shared::RequestHandlers::default(),
            #[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
            tls: crate::tls::TlsOptions::default(),
        }
    }

    /// Transport: [`Kind::Auto`] (default), [`Kind::Ws`] or [`Kind::Ajax`].
    pub fn kind(mut self, kind: Kind) -> Self {
        self.config.kind = kind;
        self
    }

    /// A fixed CSRF token (blank means none).
    pub fn csrf_token(mut self, token: impl Into<String>) -> Self {
        self.config.csrf_token = CsrfToken::Value(token.into());
        self
    }

    /// A CSRF token function, called again on every connect and every Ajax request.
    pub fn csrf_token_fn(mut self, f: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        self.config.csrf_token = CsrfToken::Fn(Arc::new(f));
        self
    }

    /// This client's id (default: a random UUID v4).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        match ClientId::new(id) {
            Ok(id) => {
                self.config.client_id = id;
                self.invalid.client_id = None;
            }
            Err(e) => self.invalid.client_id = Some(e),
        }
        self
    }

    /// An extra query parameter for the WebSocket URL and the Ajax GETs (Sente's `:params`).
    pub fn param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.params.push((key.into(), value.into()));
        self
    }

    /// An extra request header, sent on the WebSocket upgrade and on every Ajax request (native
    /// only: browsers cannot set WebSocket headers; the wasm shell applies them to Ajax requests
    /// only, and the browser drops the ones it forbids, like `Origin` and `Cookie`). Calling it
    /// again with the same name adds a second value.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.headers.push((name.into(), value.into()));
        self
    }

    /// The `Origin` header, sent on the WebSocket upgrade and every Ajax request, as a browser
    /// page at that origin would (e.g. `"https://example.com"`): a Sente server with
    /// `:allowed-origins` (sente-rs: `AllowedOrigins::list`) refuses requests without an allowed
    /// origin. Replaces an earlier `Origin`. Native only (a browser sends its page's origin).
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.config
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("origin"));
        self.config
            .headers
            .push(("Origin".to_owned(), origin.into()));
        self
    }

    /// A cookie, sent in the `Cookie` header of the WebSocket upgrade and every Ajax request,
    /// e.g. the session cookie of a Ring app (`cookie("ring-session", "...")`), so the server
    /// sees this client's session (its uid, its CSRF token). Cookies given here are joined into
    /// one `Cookie` header (`a=1; b=2`); nothing is stored from `Set-Cookie` responses. Native
    /// only (a browser sends its own cookies).
    pub fn cookie(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        let pair = format!("{}={}", name.as_ref(), value.as_ref());
        match self
            .config
            .headers
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case("cookie"))
        {
            Some((_, v)) => {
                v.push_str("; ");
                v.push_str(&pair);
            }
            None => self.config.headers.push(("Cookie".to_owned(), pair)),
        }
        self
    }

    /// Trusts `cert` as a root certificate authority for `https://` and `wss://` URLs, besides
    /// the built-in (webpki) roots: for a server whose certificate comes from a private or test
    /// CA. Only add CAs you control: every certificate they sign is trusted by this client.
    /// Certificates are always verified; there is no way to turn verification off.
    #[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
    pub fn add_root_certificate(mut self, cert: crate::tls::Certificate) -> Self {
        self.tls.roots.push(cert);
        self
    }

    /// Whether to trust the built-in webpki roots (Mozilla's root store, default `true`). With
    /// `false`, only the certificates given to [`add_root_certificate`](Self::add_root_certificate)
    /// are trusted.
    #[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
    pub fn tls_built_in_root_certs(mut self, enabled: bool) -> Self {
        self.tls.built_in_roots = enabled;
        self
    }

    /// The packer (default `edn`). Its name is sent as the `packer` query parameter, so a
    /// sente-rs server serves this connection with it.
    pub fn packer(mut self, packer: Arc<dyn Packer>) -> Self {
        self.config.packer = packer;
        self.invalid.packer = None;
        self
    }

    /// A packer by name: `edn`, `transit`, `json`, `msgpack`, or one of those with `+gzip`.
    /// Unknown names fail at [`connect`](Self::connect).
    pub fn packer_name(mut self, name: impl Into<String>) -> Self {
        // Resolved here, so builds that never call this do not link every packer.
        let name = name.into();
        match sente_proto::packer::by_name(&name) {
            Some(p) => {
                self.config.packer = p;
                self.invalid.packer = None;
            }
            None => self.invalid.packer = Some(name),
        }
        self
    }

    /// Limits applied to what the server sends (and to the size of what this client sends).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// WebSocket keepalive (Sente's `:ws-kalive-ms`, default 20 s; checked every half of it);
    /// `None` disables client pings.
    pub fn keepalive(mut self, every: Option<Duration>) -> Self {
        self.config.ws_kalive_ms = every.map(ms);
        self
    }

    /// How long to wait for the server's pong (Sente's `:ws-ping-timeout-ms`, default 5 s).
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.config.ws_ping_timeout_ms = ms(timeout);
        self
    }

    /// Ajax long-poll HTTP timeout (default 60 s; must exceed the server's poll timeout).
    pub fn ajax_timeout(mut self, timeout: Duration) -> Self {
        self.config.ajax_timeout_ms = ms(timeout);
        self
    }

    /// Reconnect backoff (default [`Backoff::FastFirst`]: 10 attempts under 2 s, then up to a
    /// 30 s cap).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Reconnect backoff as a function of the attempt number (`>= 2`) and a uniform random
    /// number in `[0, 1)`, returning milliseconds (Sente's `:backoff-ms-fn`).
    pub fn backoff_fn(mut self, f: impl Fn(u32, f64) -> u64 + Send + Sync + 'static) -> Self {
        self.config.backoff = Backoff::Custom(Arc::new(f));
        self
    }

    /// After a rejected handshake (HTTP 401/403), retry after between half this and this
    /// (default 60 s).
    pub fn rejected_retry(mut self, max_wait: Duration) -> Self {
        self.config.rejected_retry_ms = ms(max_wait);
        self
    }

    /// [`Kind::Auto`]: how often to try WebSocket again after falling back to Ajax (default
    /// 3 min). While set, a WebSocket refused before its handshake after earlier ones worked
    /// (a proxy started refusing upgrades) falls back to Ajax too (Sente retries WebSocket
    /// forever then). `None` keeps Sente's downgrade-forever behaviour.
    pub fn ws_reprobe(mut self, every: Option<Duration>) -> Self {
        self.config.ws_reprobe_ms = every.map(ms);
        self
    }

    /// Resume after a reconnect (default on; sente-rs servers, WebSocket and Ajax, also across
    /// a switch between them): the pushes
    /// missed while disconnected arrive in order, once, and `State::recovered` tells whether
    /// anything was lost. Harmless against a Sente server.
    pub fn resume(mut self, on: bool) -> Self {
        self.config.resume = on;
        self
    }

    /// Fetch large pushes by HTTP (default on; sente-rs servers): a push the server offloads
    /// (over its `large` threshold, default 64 KiB) comes as a small reference that this
    /// client fetches with one GET (same credentials as an Ajax poll), so the socket stays
    /// free for small events; the app still sees one [`ClientEvent::Push`](crate::ClientEvent::Push),
    /// in order (later pushes wait for it), or [`ClientEvent::LargeFailed`](crate::ClientEvent::LargeFailed)
    /// when the fetch fails. Harmless against a Sente server.
    pub fn large(mut self, on: bool) -> Self {
        self.config.large = on;
        self
    }

    /// Retry requests across reconnects (off by default; sente-rs servers only): a request
    /// whose connection is lost before its reply is re-sent with the same request id once the
    /// client is connected again, within its timeout, and the server runs it once and answers
    /// with the original reply. See [`Client::request_with_retry`](crate::Client::request_with_retry)
    /// to choose per request.
    pub fn retry_requests(mut self, on: bool) -> Self {
        self.config.retry_requests = on;
        self
    }

    /// Queue sends and requests made while (re)connecting, at most `max_len` of them for at
    /// most `max_wait` each, instead of failing them at once with `Closed` (off by default).
    pub fn queue_while_connecting(mut self, max_len: usize, max_wait: Duration) -> Self {
        self.config.queue = Some(QueueConfig::new(max_len, ms(max_wait)));
        self
    }

    /// Capacity of each event stream (default 1024); the oldest events are dropped beyond it.
    pub fn event_buffer(mut self, capacity: usize) -> Self {
        self.event_buffer = capacity.max(1);
        self
    }

    /// Answers the server's requests for `event_id` ([`ServerHandle::request`] on a sente-rs
    /// server; the `req` protocol extension) with `handler`'s value. Registering any handler
    /// announces the extension; a request for an event with no handler is answered with the
    /// error `"no-handler"`. The handler runs on the client's driver, between messages: keep it
    /// short (it may use the client, e.g. to send).
    ///
    /// [`ServerHandle::request`]: https://docs.rs/sente/latest/sente/struct.ServerHandle.html#method.request
    pub fn on_request(
        mut self,
        event_id: impl Into<String>,
        handler: impl Fn(&sente_proto::Event) -> sente_proto::Value + Send + Sync + 'static,
    ) -> Self {
        let id = event_id.into();
        let id = id.strip_prefix(':').map(str::to_owned).unwrap_or(id);
        self.handlers.0.insert(id, Arc::new(handler));
        self.config.requests = true;
        self
    }

    /// Seed for callback ids and backoff jitter (default: random). For reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The machine configuration this builder describes, or the first input it refused
    /// (url, then client id, then packer name).
    pub fn config(&self) -> Result<ClientConfig, ConnectError> {
        self.check()?;
        Ok(self.config.clone())
    }

    fn check(&self) -> Result<(), ConnectError> {
        if let Some(e) = &self.invalid.url {
            return Err(e.clone().into());
        }
        if let Some(e) = &self.invalid.client_id {
            return Err(e.clone().into());
        }
        if let Some(name) = &self.invalid.packer {
            return Err(ConnectError::UnknownPacker(name.clone()));
        }
        Ok(())
    }

    #[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
    fn platform(&self) -> Result<crate::platform::IoConfig, ConnectError> {
        Ok(crate::platform::IoConfig {
            tls: self.tls.client_config()?,
        })
    }

    #[cfg(not(all(feature = "tls", not(target_arch = "wasm32"))))]
    #[allow(clippy::unnecessary_wraps, clippy::unused_self)]
    fn platform(&self) -> Result<crate::platform::IoConfig, ConnectError> {
        Ok(crate::platform::IoConfig::default())
    }

    /// Starts the client: it connects in the background and reconnects until dropped or
    /// [`disconnect`](Client::disconnect)ed. Natively this must run inside a tokio runtime.
    pub fn connect(self) -> Result<Client, ConnectError> {
        self.check()?;
        let io = self.platform()?;
        let seed = self
            .seed
            .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
        Ok(Client::start(
            self.config,
            seed,
            self.event_buffer,
            io,
            self.handlers,
        ))
    }
}
