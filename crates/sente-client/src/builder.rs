//! [`ClientBuilder`]: Sente's `make-channel-socket-client!` options.

use crate::{Client, ConnectError};
use sente_proto::client::{Backoff, ChskUrl, ClientConfig, CsrfToken, Kind, QueueConfig};
use sente_proto::{ClientId, Limits, Packer};
use std::sync::Arc;
use std::time::Duration;

enum PackerChoice {
    Given(Arc<dyn Packer>),
    /// `packer_name` with a name no packer has; reported by `config`.
    Unknown(String),
}

/// Builds a [`Client`]. Defaults follow Sente: [`Kind::Auto`], a random UUID v4 client id, the
/// `edn` packer, keepalive 20 s with a 5 s ping timeout, Ajax poll timeout 60 s; plus the
/// sente-rs defaults: jittered backoff capped at 30 s, slow retry after a rejected handshake,
/// WebSocket re-probing every 3 min after an Ajax fallback.
pub struct ClientBuilder {
    url: String,
    kind: Kind,
    client_id: Option<String>,
    csrf_token: CsrfToken,
    params: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    packer: PackerChoice,
    limits: Limits,
    ws_kalive_ms: Option<u64>,
    ws_ping_timeout_ms: u64,
    ajax_timeout_ms: u64,
    backoff: Backoff,
    rejected_retry_ms: u64,
    ws_reprobe_ms: Option<u64>,
    queue: Option<QueueConfig>,
    event_buffer: usize,
    seed: Option<u64>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ClientBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        ClientBuilder {
            url: url.into(),
            kind: Kind::Auto,
            client_id: None,
            csrf_token: CsrfToken::None,
            params: Vec::new(),
            headers: Vec::new(),
            packer: PackerChoice::Given(Arc::new(sente_proto::packer::EdnPacker)),
            limits: Limits::default(),
            ws_kalive_ms: Some(20_000),
            ws_ping_timeout_ms: 5_000,
            ajax_timeout_ms: 60_000,
            backoff: Backoff::default(),
            rejected_retry_ms: 60_000,
            ws_reprobe_ms: Some(180_000),
            queue: None,
            event_buffer: 1024,
            seed: None,
        }
    }

    /// Transport: [`Kind::Auto`] (default), [`Kind::Ws`] or [`Kind::Ajax`].
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// A fixed CSRF token (blank means none).
    pub fn csrf_token(mut self, token: impl Into<String>) -> Self {
        self.csrf_token = CsrfToken::Value(token.into());
        self
    }

    /// A CSRF token function, called again on every connect and every Ajax request.
    pub fn csrf_token_fn(mut self, f: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        self.csrf_token = CsrfToken::Fn(Arc::new(f));
        self
    }

    /// This client's id (default: a random UUID v4).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// An extra query parameter for the WebSocket URL and the Ajax GETs (Sente's `:params`).
    pub fn param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((key.into(), value.into()));
        self
    }

    /// An extra request header (native only: browsers cannot set WebSocket headers; the wasm
    /// shell applies them to Ajax requests only).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The packer (default `edn`). Its name is sent as the `packer` query parameter, so a
    /// sente-rs server serves this connection with it.
    pub fn packer(mut self, packer: Arc<dyn Packer>) -> Self {
        self.packer = PackerChoice::Given(packer);
        self
    }

    /// A packer by name: `edn`, `transit`, `json`, `msgpack`, or one of those with `+gzip`.
    /// Unknown names fail at [`connect`](Self::connect).
    pub fn packer_name(mut self, name: impl Into<String>) -> Self {
        // Resolved here, so builds that never call this do not link every packer.
        let name = name.into();
        self.packer = match sente_proto::packer::by_name(&name) {
            Some(p) => PackerChoice::Given(p),
            None => PackerChoice::Unknown(name),
        };
        self
    }

    /// Limits applied to what the server sends (and to the size of what this client sends).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// WebSocket keepalive (Sente's `:ws-kalive-ms`, default 20 s; checked every half of it);
    /// `None` disables client pings.
    pub fn keepalive(mut self, every: Option<Duration>) -> Self {
        self.ws_kalive_ms = every.map(ms);
        self
    }

    /// How long to wait for the server's pong (Sente's `:ws-ping-timeout-ms`, default 5 s).
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ws_ping_timeout_ms = ms(timeout);
        self
    }

    /// Ajax long-poll HTTP timeout (default 60 s; must exceed the server's poll timeout).
    pub fn ajax_timeout(mut self, timeout: Duration) -> Self {
        self.ajax_timeout_ms = ms(timeout);
        self
    }

    /// Reconnect backoff (default [`Backoff::FullJitter`] with a 30 s cap).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Reconnect backoff as a function of the attempt number (`>= 2`) and a uniform random
    /// number in `[0, 1)`, returning milliseconds (Sente's `:backoff-ms-fn`).
    pub fn backoff_fn(mut self, f: impl Fn(u32, f64) -> u64 + Send + Sync + 'static) -> Self {
        self.backoff = Backoff::Custom(Arc::new(f));
        self
    }

    /// After a rejected handshake (HTTP 401/403), retry after between half this and this
    /// (default 60 s).
    pub fn rejected_retry(mut self, max_wait: Duration) -> Self {
        self.rejected_retry_ms = ms(max_wait);
        self
    }

    /// [`Kind::Auto`]: how often to try WebSocket again after falling back to Ajax (default
    /// 3 min); `None` keeps Sente's downgrade-forever behaviour.
    pub fn ws_reprobe(mut self, every: Option<Duration>) -> Self {
        self.ws_reprobe_ms = every.map(ms);
        self
    }

    /// Queue sends and requests made while (re)connecting, at most `max_len` of them for at
    /// most `max_wait` each, instead of failing them at once with `Closed` (off by default).
    pub fn queue_while_connecting(mut self, max_len: usize, max_wait: Duration) -> Self {
        self.queue = Some(QueueConfig::new(max_len, ms(max_wait)));
        self
    }

    /// Capacity of each event stream (default 1024); the oldest events are dropped beyond it.
    pub fn event_buffer(mut self, capacity: usize) -> Self {
        self.event_buffer = capacity.max(1);
        self
    }

    /// Seed for callback ids and backoff jitter (default: random). For reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The machine configuration this builder describes.
    pub fn config(&self) -> Result<ClientConfig, ConnectError> {
        let url = ChskUrl::parse(&self.url)?;
        let client_id = match &self.client_id {
            Some(id) => ClientId::new(id.clone())?,
            None => ClientId::new(uuid::Uuid::new_v4().to_string())?,
        };
        let packer = match &self.packer {
            PackerChoice::Given(p) => p.clone(),
            PackerChoice::Unknown(name) => return Err(ConnectError::UnknownPacker(name.clone())),
        };
        let mut cfg = ClientConfig::new(url, client_id, packer);
        cfg.kind = self.kind;
        cfg.csrf_token = self.csrf_token.clone();
        cfg.params.clone_from(&self.params);
        cfg.headers.clone_from(&self.headers);
        cfg.limits = self.limits.clone();
        cfg.ws_kalive_ms = self.ws_kalive_ms;
        cfg.ws_ping_timeout_ms = self.ws_ping_timeout_ms;
        cfg.ajax_timeout_ms = self.ajax_timeout_ms;
        cfg.backoff = self.backoff.clone();
        cfg.rejected_retry_ms = self.rejected_retry_ms;
        cfg.ws_reprobe_ms = self.ws_reprobe_ms;
        cfg.queue = self.queue;
        Ok(cfg)
    }

    /// Starts the client: it connects in the background and reconnects until dropped or
    /// [`disconnect`](Client::disconnect)ed. Natively this must run inside a tokio runtime.
    pub fn connect(self) -> Result<Client, ConnectError> {
        let cfg = self.config()?;
        let seed = self
            .seed
            .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
        Ok(Client::start(cfg, seed, self.event_buffer))
    }
}
