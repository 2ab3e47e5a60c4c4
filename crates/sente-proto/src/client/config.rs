//! Client configuration: Sente's `make-channel-socket-client!` options (spec 8.1) plus the
//! sente-rs improvements (capped jittered backoff, WebSocket re-probing, a request queue).

use crate::event::ClientId;
use crate::limits::Limits;
use crate::packer::Packer;
pub use crate::transport::Transport;
use std::fmt;
use std::sync::Arc;

/// Which transport to use (Sente's `:type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Kind {
    /// WebSocket first, Ajax long-polling when the WebSocket cannot be established (spec 8.6).
    #[default]
    Auto,
    /// WebSocket only.
    Ws,
    /// Ajax long-polling only.
    Ajax,
}

impl Kind {
    /// `auto`, `ws` or `ajax` (the keyword names Sente uses).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Auto => "auto",
            Kind::Ws => "ws",
            Kind::Ajax => "ajax",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CSRF token: none, a fixed value, or a function re-read on every connect and request
/// (Sente's `?csrf-token-or-fn`). Blank values count as none.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum CsrfToken {
    /// No token.
    #[default]
    None,
    /// A fixed token.
    Value(String),
    /// A function called each time a token is needed.
    Fn(Arc<dyn Fn() -> Option<String> + Send + Sync>),
}

impl CsrfToken {
    /// The current token, if any and not blank.
    pub fn get(&self) -> Option<String> {
        let token = match self {
            CsrfToken::None => None,
            CsrfToken::Value(v) => Some(v.clone()),
            CsrfToken::Fn(f) => f(),
        };
        token.filter(|t| !t.trim().is_empty())
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsrfToken::None => f.write_str("None"),
            CsrfToken::Value(_) => f.write_str("Value(<redacted>)"),
            CsrfToken::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

/// How long to wait before reconnect attempt `n` (`n >= 2`; the first retry is always
/// immediate, as in Sente).
#[derive(Clone)]
#[non_exhaustive]
pub enum Backoff {
    /// The default: full jitter under a low cap for the first attempts, so that a short outage
    /// is bridged within about `fast_cap_ms` of the server coming back, then
    /// [`Backoff::FullJitter`]'s exponential curve so that a long one is not hammered. Attempts
    /// 2..=`fast_attempts` wait uniform in `[0, fast_cap_ms)`; attempt `fast_attempts + k`
    /// uniform in `[0, min(cap_ms, base_ms * 2^(k+1)))`. Defaults: 10 attempts under 2 s
    /// (about 10 s of fast retries), then from 4 s up to 30 s. Jitter spreads a storm of
    /// clients over the cap.
    FastFirst {
        /// Attempts that use the low cap.
        fast_attempts: u32,
        /// The low cap, in milliseconds.
        fast_cap_ms: u64,
        /// Scale of the exponential curve after them, in milliseconds.
        base_ms: u64,
        /// Longest wait, in milliseconds.
        cap_ms: u64,
    },
    /// "Full jitter": uniform in `[0, min(cap_ms, base_ms * 2^n))`. With `base_ms = 1000,
    /// cap_ms = 30_000` (the default before the fast first attempts), attempt 2 waits up to
    /// 4 s, attempt 3 up to 8 s, ..., never more than 30 s.
    FullJitter {
        /// Scale of the exponential curve, in milliseconds.
        base_ms: u64,
        /// Longest wait, in milliseconds.
        cap_ms: u64,
    },
    /// Sente's default (`encore/exp-backoff`): uniform in `[2^(n-1), 2^n)` seconds, uncapped.
    Sente,
    /// Any function of the attempt number and a uniform random number in `[0, 1)`.
    Custom(Arc<dyn Fn(u32, f64) -> u64 + Send + Sync>),
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::FastFirst {
            fast_attempts: 10,
            fast_cap_ms: 2_000,
            base_ms: 1_000,
            cap_ms: 30_000,
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt`, given `rand` uniform in `[0, 1)`. Attempt 1 (and 0)
    /// is immediate.
    pub fn delay_ms(&self, attempt: u32, rand: f64) -> u64 {
        if attempt <= 1 {
            return 0;
        }
        let full_jitter = |base_ms: u64, cap_ms: u64, n: u32| {
            let upper = base_ms.saturating_mul(1u64 << n.min(40)).min(cap_ms);
            (upper as f64 * rand) as u64
        };
        match self {
            Backoff::FastFirst {
                fast_attempts,
                fast_cap_ms,
                base_ms,
                cap_ms,
            } => {
                if attempt <= *fast_attempts {
                    (*fast_cap_ms as f64 * rand) as u64
                } else {
                    full_jitter(*base_ms, *cap_ms, attempt - fast_attempts + 1)
                }
            }
            Backoff::FullJitter { base_ms, cap_ms } => full_jitter(*base_ms, *cap_ms, attempt),
            Backoff::Sente => {
                let b = 2f64.powi(attempt.min(36) as i32);
                ((b + rand * b) * 0.5 * 1000.0) as u64
            }
            Backoff::Custom(f) => f(attempt, rand),
        }
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backoff::FullJitter { base_ms, cap_ms } => f
                .debug_struct("FullJitter")
                .field("base_ms", base_ms)
                .field("cap_ms", cap_ms)
                .finish(),
            Backoff::FastFirst {
                fast_attempts,
                fast_cap_ms,
                base_ms,
                cap_ms,
            } => f
                .debug_struct("FastFirst")
                .field("fast_attempts", fast_attempts)
                .field("fast_cap_ms", fast_cap_ms)
                .field("base_ms", base_ms)
                .field("cap_ms", cap_ms)
                .finish(),
            Backoff::Sente => f.write_str("Sente"),
            Backoff::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Opt-in queue for sends and requests made while the connection is (re)connecting: they go
/// out in order once it opens, instead of failing at once with `Closed` as in Sente.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Most queued messages; beyond it new ones fail with `Closed`.
    pub max_len: usize,
    /// Longest time a message may wait in the queue; then it fails with `Closed` (unless its
    /// own request timeout came first: `Timeout`).
    pub max_wait_ms: u64,
}

impl QueueConfig {
    /// A queue of at most `max_len` messages, each waiting at most `max_wait_ms`.
    pub fn new(max_len: usize, max_wait_ms: u64) -> Self {
        QueueConfig {
            max_len,
            max_wait_ms,
        }
    }
}

impl Default for QueueConfig {
    /// 256 messages, 10 s each.
    fn default() -> Self {
        QueueConfig::new(256, 10_000)
    }
}

/// Everything the client state machine needs to know. Built by `sente-client`'s builder;
/// usable directly for custom shells: start from [`ClientConfig::new`] (the one place the
/// defaults are written) and set the public fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The chsk endpoint, e.g. `http://127.0.0.1:3000/chsk` (any of http, https, ws, wss).
    pub url: super::ChskUrl,
    /// Transport choice. Default [`Kind::Auto`].
    pub kind: Kind,
    /// This client's id. Default: a random UUID v4 (chosen by the shell).
    pub client_id: ClientId,
    /// CSRF token sent as the `csrf-token` query parameter (WebSocket) or `X-CSRF-Token`
    /// header (Ajax).
    pub csrf_token: CsrfToken,
    /// Extra query parameters, sent first on the WebSocket URL and Ajax GETs (not on POSTs,
    /// like Sente >= 1.21).
    pub params: Vec<(String, String)>,
    /// Extra request headers (native shells only; browsers cannot set WebSocket headers).
    pub headers: Vec<(String, String)>,
    /// The packer. Its name goes into the `packer` query parameter.
    pub packer: Arc<dyn Packer>,
    /// Limits applied to what the server sends.
    pub limits: Limits,
    /// WebSocket keepalive: a check every `ws_kalive_ms / 2` pings the server when nothing was
    /// sent or received since the last check. Default 20 000 (Sente); `None` disables.
    pub ws_kalive_ms: Option<u64>,
    /// How long to wait for the server's `"pong"` before reconnecting. Default 5000 (Sente).
    pub ws_ping_timeout_ms: u64,
    /// Ajax long-poll HTTP timeout. Default 60 000 (Sente's XHR timeout; the server answers
    /// within its `lp-timeout-ms` < 60 s).
    pub ajax_timeout_ms: u64,
    /// Reconnect backoff. Default [`Backoff::FullJitter`] capped at 30 s.
    pub backoff: Backoff,
    /// After a rejected handshake (HTTP 401/403), wait between half this and this long before
    /// trying again. Default 60 000.
    pub rejected_retry_ms: u64,
    /// [`Kind::Auto`] only: after falling back to Ajax, try a WebSocket again this often and
    /// switch to it when its handshake succeeds. With it, a WebSocket that fails before its
    /// handshake after earlier ones worked (a proxy started refusing upgrades) falls back to
    /// Ajax too, not only the first one (Sente's rule); the resume position carries across
    /// both switches. Default 180 000 (3 min); `None` keeps Sente's downgrade-forever
    /// behaviour.
    pub ws_reprobe_ms: Option<u64>,
    /// Queue sends and requests made while (re)connecting. Default `None` (Sente: fail with
    /// `Closed`).
    pub queue: Option<QueueConfig>,
    /// Ask the server to resume after a reconnect (sente-rs extension, WebSocket and Ajax): pushes
    /// missed while disconnected are delivered in order, once, and
    /// [`State::recovered`](super::State::recovered) tells whether nothing was lost. Default
    /// `true`; harmless against a Sente server (it ignores the parameter).
    pub resume: bool,
    /// Announce server-to-client requests (sente-rs extension, see [`crate::s2c`]): `req` in
    /// the `ext` parameter; requests then come out as
    /// [`Output::ServerRequest`](super::Output::ServerRequest). Default `false` (the client
    /// shells turn it on when the app registers a request handler).
    pub requests: bool,
    /// Fetch large pushes by HTTP (sente-rs extension, see [`crate::large`]): `large` in the
    /// `ext` parameter; a push the server offloads is fetched with one GET and delivered in
    /// its place (later pushes wait for it). Default `true`; harmless against a Sente server.
    pub large: bool,
    /// Retry requests across reconnects (sente-rs extension, see [`crate::idem`]): a request
    /// whose connection is lost before its reply is re-sent with the same request id once a
    /// connection is open again, within its timeout, and the server runs it once. Only against
    /// a server that acknowledged the extension in its handshake (others fail the request as
    /// usual). The default of [`ClientMachine::request`](super::ClientMachine::request);
    /// [`ClientMachine::request_with_retry`](super::ClientMachine::request_with_retry) chooses
    /// per request. Default `false`.
    pub retry_requests: bool,
}

impl ClientConfig {
    /// A configuration with Sente's defaults for everything but the url, client id and packer.
    pub fn new(url: super::ChskUrl, client_id: ClientId, packer: Arc<dyn Packer>) -> Self {
        ClientConfig {
            url,
            kind: Kind::Auto,
            client_id,
            csrf_token: CsrfToken::None,
            params: Vec::new(),
            headers: Vec::new(),
            packer,
            limits: Limits::default(),
            ws_kalive_ms: Some(20_000),
            ws_ping_timeout_ms: 5_000,
            ajax_timeout_ms: 60_000,
            backoff: Backoff::default(),
            rejected_retry_ms: 60_000,
            ws_reprobe_ms: Some(180_000),
            queue: None,
            resume: true,
            requests: false,
            large: true,
            retry_requests: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sente_backoff_matches_spec_vector_44() {
        let b = Backoff::Sente;
        assert_eq!(b.delay_ms(1, 0.99), 0);
        assert_eq!(b.delay_ms(2, 0.0), 2000);
        assert_eq!(b.delay_ms(2, 0.999), 3998);
        assert_eq!(b.delay_ms(3, 0.0), 4000);
        assert_eq!(b.delay_ms(4, 0.5), 12000);
    }

    #[test]
    fn the_default_retries_fast_first_then_backs_off_to_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.delay_ms(1, 0.9), 0);
        for attempt in 2..=10 {
            assert!(b.delay_ms(attempt, 0.999_9) < 2_000, "attempt {attempt}");
        }
        assert_eq!(b.delay_ms(11, 0.5), 2_000);
        assert_eq!(b.delay_ms(12, 0.5), 4_000);
        assert_eq!(b.delay_ms(1000, 0.999_9), 29_997);
    }

    #[test]
    fn full_jitter_is_capped() {
        let b = Backoff::FullJitter {
            base_ms: 1000,
            cap_ms: 30_000,
        };
        assert_eq!(b.delay_ms(1, 0.9), 0);
        assert_eq!(b.delay_ms(2, 0.5), 2000);
        assert_eq!(b.delay_ms(3, 0.5), 4000);
        assert_eq!(b.delay_ms(10, 0.999_9), 29_997);
        assert_eq!(b.delay_ms(1000, 0.5), 15_000);
    }

    #[test]
    fn csrf_blank_is_none() {
        assert_eq!(CsrfToken::Value("  ".into()).get(), None);
        let f = CsrfToken::Fn(Arc::new(|| Some("t".to_owned())));
        assert_eq!(f.get().as_deref(), Some("t"));
        assert_eq!(
            format!("{:?}", CsrfToken::Value("secret".into())),
            "Value(<redacted>)"
        );
    }
}
