//! The server's bounds.

use crate::limits::Limits;

/// Everything the server bounds, with the defaults below. Message-level limits (bytes, depth,
/// batch length) are the shared [`Limits`]; the rest is per client, per uid or per request.
///
/// What happens over a limit: an Ajax request gets `413 Payload Too Large` (size) or
/// `429 Too Many Requests` (counts), a WebSocket is closed with `1009` (message too big) or `1013`
/// (its send queue is full: a slow or stalled client), `Server::send` returns a typed error, and
/// a new connection over a count limit is refused with `429`. The connection's other traffic and
/// the other clients are not affected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// Message limits: bytes per message (1 MiB), nesting depth, collection and batch length.
    pub message: Limits,
    /// Most pushed events waiting for one client (in its WebSocket send queue, or between two
    /// Ajax polls / during a WebSocket reconnect). Default 1 000. A WebSocket over it is closed
    /// (1013); an Ajax client over it is forgotten and re-handshakes on its next poll.
    pub max_pending_events_per_client: usize,
    /// Most Ajax POSTs of one client id waiting for a reply at once. Default 64; more get 429.
    pub max_pending_replies_per_client: usize,
    /// Most clients (WebSocket or Ajax) of one named uid. Default 256; more get 429.
    pub max_connections_per_uid: usize,
    /// Most anonymous clients (uid `:sente/nil-uid`, which all of them share). Default 100 000.
    pub max_anonymous_connections: usize,
    /// Largest request head (request line + headers) in bytes. Default 16 KiB; larger gets 431.
    pub max_header_bytes: usize,
    /// How long the server waits for one WebSocket frame to be written before it gives up on the
    /// client and drops the connection (ms). Default 10 000.
    pub ws_write_timeout_ms: u64,
    /// How long the server waits for the whole body of an Ajax `POST` once it starts reading it
    /// (ms). Default 10 000. A body not complete by then is dropped with its connection (`408`
    /// when the client still listens), and the memory it held is released. Bodies are read only
    /// after the request passed the Origin, CSRF (when the token is in the head), `reject_fn` and
    /// `authorized_fn` checks, and never beyond the size limit (3 x `max_message_bytes` + 4 KiB
    /// for a form, `max_message_bytes` for a binary body).
    pub body_read_timeout_ms: u64,
    /// Most fields in a query string, and most fields in a form body (each counted on its own).
    /// Default 64 (a Sente request has about 5). More gets `400 Bad Request` before any field is
    /// decoded, so a body of many tiny fields costs no more memory than its own bytes.
    pub max_form_fields: usize,
    /// Bounds of server-to-client requests ([`crate::s2c`]): at most 16 waiting per client,
    /// timeouts cut to 60 s by default.
    pub requests: crate::s2c::RequestConfig,
    /// Bounds of the dedupe window of idempotent client requests ([`crate::idem`]): per
    /// (uid, client id) 64 request ids, each kept 120 s, 8 MiB of replies in all by default
    /// (over it the heaviest client's oldest go first).
    pub idem: crate::idem::IdemConfig,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            message: Limits::default(),
            max_pending_events_per_client: 1_000,
            max_pending_replies_per_client: 64,
            max_connections_per_uid: 256,
            max_anonymous_connections: 100_000,
            max_header_bytes: 16 * 1024,
            ws_write_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_form_fields: 64,
            requests: crate::s2c::RequestConfig::default(),
            idem: crate::idem::IdemConfig::default(),
        }
    }
}

/// Setters, for building limits from the defaults:
/// `ServerLimits::default().message(..)`.
impl ServerLimits {
    /// Sets [`ServerLimits::message`].
    pub fn message(mut self, value: Limits) -> Self {
        self.message = value;
        self
    }

    /// Sets [`ServerLimits::max_pending_events_per_client`].
    pub fn max_pending_events_per_client(mut self, value: usize) -> Self {
        self.max_pending_events_per_client = value;
        self
    }

    /// Sets [`ServerLimits::max_pending_replies_per_client`].
    pub fn max_pending_replies_per_client(mut self, value: usize) -> Self {
        self.max_pending_replies_per_client = value;
        self
    }

    /// Sets [`ServerLimits::max_connections_per_uid`].
    pub fn max_connections_per_uid(mut self, value: usize) -> Self {
        self.max_connections_per_uid = value;
        self
    }

    /// Sets [`ServerLimits::max_anonymous_connections`].
    pub fn max_anonymous_connections(mut self, value: usize) -> Self {
        self.max_anonymous_connections = value;
        self
    }

    /// Sets [`ServerLimits::max_header_bytes`].
    pub fn max_header_bytes(mut self, value: usize) -> Self {
        self.max_header_bytes = value;
        self
    }

    /// Sets [`ServerLimits::ws_write_timeout_ms`].
    pub fn ws_write_timeout_ms(mut self, value: u64) -> Self {
        self.ws_write_timeout_ms = value;
        self
    }

    /// Sets [`ServerLimits::body_read_timeout_ms`].
    pub fn body_read_timeout_ms(mut self, value: u64) -> Self {
        self.body_read_timeout_ms = value;
        self
    }

    /// Sets [`ServerLimits::requests`].
    pub fn requests(mut self, value: crate::s2c::RequestConfig) -> Self {
        self.requests = value;
        self
    }

    /// Sets [`ServerLimits::idem`].
    pub fn idem(mut self, value: crate::idem::IdemConfig) -> Self {
        self.idem = value;
        self
    }

    /// Sets [`ServerLimits::max_form_fields`].
    pub fn max_form_fields(mut self, value: usize) -> Self {
        self.max_form_fields = value;
        self
    }
}
