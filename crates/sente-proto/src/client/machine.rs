//! The client connection state machine: sans-IO, driven by `handle_*`/`poll_*` calls.

use super::config::{ClientConfig, Kind, Transport};
use super::rng::Rng;
use super::state::{
    AjaxErrorInfo, ClientEvent, CloseInfo, CloseReason, Handshake, HttpFailure, LargeFailure,
    RequestError, RequestFailure, SendError, State, StateChange, WsCloseInfo, WsErrorInfo,
};
use super::url::{query_string, url_encode, with_query};
use crate::envelope::{Envelope, PostReply, ServerMsg, client_msg};
use crate::event::{Event, Uid};
use crate::limits::Limits;
use crate::packer::{PackError, Packed, Packer};
use crate::server::replay::{Position, RESUME_PARAM, ResumeInfo};
use sente_edn::Value;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

/// Identifies one WebSocket connection attempt. Inputs about an attempt that is no longer
/// current are ignored, so shells never need to filter stale callbacks themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Identifies one HTTP request issued by the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpId(pub u64);

/// Identifies one request (an event that asked for a reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ws#{}", self.0)
    }
}
impl fmt::Display for HttpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http#{}", self.0)
    }
}
impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req#{}", self.0)
    }
}

/// HTTP method of a [`HttpRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpMethod {
    /// Handshake or long-poll.
    Get,
    /// Client -> server event.
    Post,
}

impl HttpMethod {
    /// `GET` or `POST`.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An HTTP request the shell must issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// GET or POST.
    pub method: HttpMethod,
    /// The full URL, query included.
    pub url: String,
    /// Request headers (CSRF token, content type, user headers).
    pub headers: Vec<(String, String)>,
    /// The body (POST only).
    pub body: Option<Vec<u8>>,
    /// Give up after this long and report [`HttpFailure::Timeout`].
    pub timeout_ms: u64,
}

/// Something the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Open a WebSocket to `url` (with `headers` where the platform allows), then report
    /// [`ClientMachine::handle_ws_open`] or a failure.
    WsOpen {
        /// The attempt.
        conn: ConnId,
        /// `ws://` or `wss://` URL with the query.
        url: String,
        /// Extra upgrade request headers.
        headers: Vec<(String, String)>,
    },
    /// Send one frame: text for [`Packed::Text`], binary for [`Packed::Binary`].
    WsSend {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Packed,
    },
    /// Close the WebSocket (if it is still there) with this code and reason.
    WsClose {
        /// The connection.
        conn: ConnId,
        /// Close code (1000 for requested closes).
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Issue an HTTP request, then report [`ClientMachine::handle_http_response`] or
    /// [`ClientMachine::handle_http_failure`].
    Http {
        /// The request's id.
        id: HttpId,
        /// The request.
        request: HttpRequest,
    },
    /// Abort an HTTP request issued earlier (no report needed).
    HttpAbort {
        /// The request's id.
        id: HttpId,
    },
}

/// Severity of a [`Output::Log`] line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogLevel {
    /// Routine detail.
    Debug,
    /// Something the server or network did wrong; the machine carried on.
    Warn,
}

/// One output of the machine, in the order it must be handled.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// IO for the shell to perform.
    Action(Action),
    /// An event for the app.
    Event(ClientEvent),
    /// The outcome of [`ClientMachine::request`].
    Reply {
        /// The request.
        id: RequestId,
        /// The reply value or why there is none.
        result: Result<Value, RequestError>,
    },
    /// A request from the server ([`ClientConfig::requests`] on; see [`crate::s2c`]): answer
    /// it with [`ClientMachine::answer_request`].
    ServerRequest {
        /// The server's id of the request.
        id: u64,
        /// What the server asks.
        event: Event,
    },
    /// A diagnostic for the shell's logger.
    Log {
        /// Severity.
        level: LogLevel,
        /// The message.
        message: String,
    },
}

/// A WebSocket error (browser `onerror`, or a failed connect).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsFailure {
    /// The HTTP status when the server answered the upgrade with something other than 101.
    pub status: Option<u16>,
    /// What happened.
    pub message: String,
    /// Whether TLS failed (e.g. the server's certificate is not trusted; native shell only).
    pub tls: bool,
}

impl WsFailure {
    /// A failure with a message only (no HTTP status, not TLS).
    pub fn new(message: impl Into<String>) -> Self {
        WsFailure {
            status: None,
            message: message.into(),
            tls: false,
        }
    }
}

/// A WebSocket close (browser `onclose`, or the end of the stream natively).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsClosed {
    /// Close code; 1006 when the connection dropped without a close frame.
    pub code: u16,
    /// Close reason text.
    pub reason: String,
    /// Whether the close handshake completed normally (`wasClean`).
    pub clean: bool,
}

impl WsClosed {
    /// A connection that dropped or failed without a close frame (1006).
    pub fn abnormal() -> Self {
        WsClosed {
            code: 1006,
            reason: String::new(),
            clean: false,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct WsLink {
    conn: ConnId,
    handshaken: bool,
    /// The status of a refused upgrade, reported by `handle_ws_error` before the close.
    rejected: Option<u16>,
}

#[derive(Clone, Copy, Debug)]
enum Link {
    /// Not connected and not trying (before `connect`, after `disconnect`).
    Idle,
    /// Waiting to reconnect.
    Retry { at: u64 },
    /// A WebSocket, connecting or open.
    Ws(WsLink),
    /// Ajax long-polling: `poll` is the GET in flight.
    Ajax { poll: HttpId, handshaken: bool },
}

#[derive(Clone, Debug)]
enum Pending {
    Queued,
    Ws { cb: String },
    Ajax { http: HttpId },
}

#[derive(Clone, Debug)]
struct Queued {
    request: Option<RequestId>,
    event: Event,
    expires: u64,
}

/// A push on its way to the app: ready, or an offloaded event still being fetched.
#[derive(Clone, Debug)]
enum Held {
    Ready(Output),
    Fetching(HttpId),
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    conn: ConnId,
}

const NORMAL_CLOSE: u16 = 1000;

/// The client state machine: Sente's client (spec 8) with the sente-rs improvements, free of IO,
/// clocks and randomness.
///
/// Time is a monotonic millisecond counter chosen by the shell (`now`); wall-clock `udt` values
/// are derived from the Unix time given at construction. Drive it like this:
///
/// 1. call [`connect`](Self::connect), [`send`](Self::send), [`request`](Self::request) and the
///    `handle_*` methods as things happen;
/// 2. after each call, drain [`poll_output`](Self::poll_output) and act on each output;
/// 3. sleep until [`poll_timeout`](Self::poll_timeout), then call
///    [`handle_timeout`](Self::handle_timeout).
pub struct ClientMachine {
    cfg: ClientConfig,
    rng: Rng,
    start_mono: u64,
    start_unix: u64,
    state: State,
    link: Link,
    out: VecDeque<Output>,
    next_id: u64,
    /// Reconnect attempts since the last successful handshake or poll.
    attempt: u32,
    /// Auto: whether the next attempt uses a WebSocket.
    auto_ws: bool,
    /// Auto: a WebSocket handshake succeeded since the last explicit connect.
    ws_ever_handshaken: bool,
    /// Auto: on Ajax because a WebSocket failed before its handshake after an earlier one had
    /// worked (a proxy started refusing upgrades); an Ajax attempt that fails before its
    /// handshake too (the server is down) makes the next attempt a WebSocket again.
    ws_fallback: bool,
    /// The last WebSocket attempt of the main link (its close is still recorded after a
    /// downgrade).
    last_ws_conn: Option<ConnId>,
    probe: Option<Probe>,
    next_probe_at: Option<u64>,
    last_activity: u64,
    kalive_at: Option<u64>,
    ping: Option<(String, u64)>,
    pending: HashMap<RequestId, Pending>,
    deadlines: BTreeSet<(u64, RequestId)>,
    deadline_of: HashMap<RequestId, u64>,
    ws_cbs: HashMap<String, RequestId>,
    posts: HashMap<HttpId, Option<RequestId>>,
    queue: VecDeque<Queued>,
    /// Resume extension: the last push received, when every push since the position the
    /// server gave was numbered (forgotten otherwise).
    position: Option<Position>,
    /// The sequence number announced for the next batch (`[:chsk/seq n]`).
    next_seq: Option<u64>,
    /// Large extension: pushes waiting behind an offloaded event being fetched, in order
    /// (empty when none is being fetched).
    held: VecDeque<Held>,
    /// The fetches of offloaded events in flight: the event's id and announced size.
    fetches: HashMap<HttpId, (String, u64)>,
    /// Idempotent requests ([`crate::idem`]): the event and request id of each request that
    /// may be re-sent.
    retryable: HashMap<RequestId, (Event, String)>,
    /// Retryable requests whose link was lost before their reply, in the order they were
    /// first sent: re-sent once a link that acknowledged the extension is open.
    retrying: Vec<RequestId>,
    /// Re-send [`Self::retrying`] at this time though the link stayed up (an Ajax POST failed,
    /// or the server stopped holding it before the reply was known).
    retry_at: Option<u64>,
    /// How often each retryable request was put back to be re-sent over an open link (see
    /// [`Self::resend_later`]): the backoff attempt of its next wait.
    resends: HashMap<RequestId, u32>,
    /// The current link's server dedupes retried requests (its handshake acknowledged `idem`).
    idem_acked: bool,
    /// The random first part of this machine's request ids.
    idem_prefix: String,
}

impl fmt::Debug for ClientMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientMachine")
            .field("client_id", &self.cfg.client_id)
            .field("state", &self.state)
            .field("link", &self.link)
            .field("pending", &self.pending.len())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl ClientMachine {
    /// A machine for `config`, not yet connecting. `seed` feeds the callback ids and backoff
    /// jitter; `now` is the shell's monotonic clock and `unix_ms` the wall-clock time at `now`.
    pub fn new(config: ClientConfig, seed: u64, now: u64, unix_ms: u64) -> Self {
        let state = State::new(config.kind);
        ClientMachine {
            cfg: config,
            rng: Rng::new(seed),
            start_mono: now,
            start_unix: unix_ms,
            state,
            link: Link::Idle,
            out: VecDeque::new(),
            next_id: 0,
            attempt: 0,
            auto_ws: true,
            ws_ever_handshaken: false,
            ws_fallback: false,
            last_ws_conn: None,
            probe: None,
            next_probe_at: None,
            last_activity: now,
            kalive_at: None,
            ping: None,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            deadline_of: HashMap::new(),
            ws_cbs: HashMap::new(),
            posts: HashMap::new(),
            queue: VecDeque::new(),
            position: None,
            next_seq: None,
            held: VecDeque::new(),
            fetches: HashMap::new(),
            retryable: HashMap::new(),
            retrying: Vec::new(),
            retry_at: None,
            resends: HashMap::new(),
            idem_acked: false,
            // From its own generator: the callback ids and jitter drawn from `seed` stay the
            // same as without the extension.
            idem_prefix: format!(
                "{}{}",
                crate::idem::PREFIX,
                Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15).cb_id()
            ),
        }
    }

    /// The resume position: the last push received (see [`ClientConfig::resume`]).
    pub fn resume_position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The current state map.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether sends go out now (a handshake was received and the connection is up).
    pub fn is_open(&self) -> bool {
        self.state.open
            && match self.link {
                Link::Ws(ws) => ws.handshaken,
                Link::Ajax { handshaken, .. } => handshaken,
                Link::Idle | Link::Retry { .. } => false,
            }
    }

    /// The transport of the open connection, if any.
    pub fn transport(&self) -> Option<Transport> {
        if !self.is_open() {
            return None;
        }
        match self.link {
            Link::Ws(_) => Some(Transport::Ws),
            Link::Ajax { .. } => Some(Transport::Ajax),
            Link::Idle | Link::Retry { .. } => None,
        }
    }

    /// Requests in flight or queued.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Next output to handle, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut consider = |x: Option<u64>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if let Link::Retry { at } = self.link {
            consider(Some(at));
        }
        consider(self.kalive_at);
        consider(self.ping.as_ref().map(|(_, d)| *d));
        consider(self.next_probe_at);
        consider(self.deadlines.first().map(|(d, _)| *d));
        consider(self.queue.front().map(|q| q.expires));
        consider(self.retry_at);
        t
    }

    // ----------------------------------------------------------------------------------------
    // Commands

    /// Starts connecting (Sente's `chsk-connect!`). Does nothing when already connected or
    /// connecting, except that a pending retry is brought forward.
    pub fn connect(&mut self, now: u64) {
        match self.link {
            Link::Ws(_) | Link::Ajax { .. } => {}
            Link::Idle | Link::Retry { .. } => {
                self.attempt = 0;
                self.auto_ws = true;
                self.ws_ever_handshaken = false;
                self.ws_fallback = false;
                self.set_state(|s| s.udt_next_reconnect = None);
                self.start_attempt(now);
            }
        }
    }

    /// Closes the connection and stops reconnecting (Sente's `chsk-disconnect!`): WebSocket
    /// close 1000, the Ajax poll aborted. Queued messages fail with `Closed`; requests waiting
    /// for a WebSocket reply fail with `Error`.
    pub fn disconnect(&mut self, now: u64) {
        self.close_link(CloseReason::RequestedDisconnect, now);
        self.link = Link::Idle;
        self.fail_retrying(&RequestError::Closed);
        self.fail_queue(now);
    }

    /// While waiting to reconnect, tries now instead of when the backoff says (e.g. the
    /// network came back: the browser's `online` event, a tab made visible, or a "retry now"
    /// button). The backoff continues from the same attempt if this try fails. Does nothing
    /// when connected, connecting or disconnected.
    pub fn retry_now(&mut self, now: u64) {
        if let Link::Retry { .. } = self.link {
            self.set_state(|s| s.udt_next_reconnect = None);
            self.start_attempt(now);
        }
    }

    /// Closes the connection and connects again at once (Sente's `chsk-reconnect!`, e.g. to
    /// pick up a new session after login). Queued messages stay queued.
    pub fn reconnect(&mut self, now: u64) {
        self.close_link(CloseReason::RequestedReconnect, now);
        self.link = Link::Idle;
        self.connect(now);
    }

    /// Sends an event without asking for a reply. When the connection is not open the event is
    /// queued if the queue is on and the client is (re)connecting, else refused with
    /// [`SendError::Closed`].
    pub fn send(&mut self, event: Event, now: u64) -> Result<(), SendError> {
        if self.is_open() {
            return self.transmit(event, None, now);
        }
        if self.can_queue() {
            let expires = now + self.cfg.queue.map_or(0, |q| q.max_wait_ms);
            self.queue.push_back(Queued {
                request: None,
                event,
                expires,
            });
            return Ok(());
        }
        Err(SendError::Closed)
    }

    /// Sends an event asking for a reply within `timeout_ms`. The outcome comes out of
    /// [`poll_output`](Self::poll_output) as [`Output::Reply`] with the returned id (possibly
    /// right away: `Closed` when the connection is not open and the request cannot be queued).
    ///
    /// With [`ClientConfig::retry_requests`] on, the request is retried across reconnects (see
    /// [`request_with_retry`](Self::request_with_retry)).
    pub fn request(&mut self, event: Event, timeout_ms: u64, now: u64) -> RequestId {
        self.request_with_retry(event, timeout_ms, self.cfg.retry_requests, now)
    }

    /// [`request`](Self::request), choosing whether this request is retried (`retry`) rather
    /// than [`ClientConfig::retry_requests`]. A retried request carries a request id unique to
    /// this client ([`crate::idem`]); when its connection is lost before the reply, and the
    /// server acknowledged the extension, it is not failed but re-sent with the same id once a
    /// connection is open again (over either transport), until its timeout: the server runs it
    /// once and answers the retry with the original reply, so the outcome comes out once.
    /// Over Ajax, a POST the server answers `:chsk/timeout` (it holds a POST only for its
    /// long-poll timeout) is re-sent the same way, with growing waits: the request waits for its
    /// reply until its own timeout, as over WebSocket. Against a server without the extension it
    /// fails as usual (`Error(ConnectionLost)`, `Error(Http(..))` or the server's `Timeout`).
    pub fn request_with_retry(
        &mut self,
        event: Event,
        timeout_ms: u64,
        retry: bool,
        now: u64,
    ) -> RequestId {
        let id = RequestId(self.fresh_id());
        if retry {
            let rid = format!("{}.{}", self.idem_prefix, id.0);
            self.retryable.insert(id, (event.clone(), rid));
        }
        let deadline = now.saturating_add(timeout_ms);
        if self.is_open() {
            self.add_deadline(id, deadline);
            self.pending.insert(id, Pending::Queued);
            if let Err(e) = self.transmit(event, Some(id), now) {
                self.finish(id, Err(send_failed(e)));
            }
        } else if self.can_queue() {
            let expires = now + self.cfg.queue.map_or(0, |q| q.max_wait_ms);
            self.add_deadline(id, deadline);
            self.pending.insert(id, Pending::Queued);
            self.queue.push_back(Queued {
                request: Some(id),
                event,
                expires,
            });
        } else {
            self.retryable.remove(&id);
            self.out.push_back(Output::Reply {
                id,
                result: Err(RequestError::Closed),
            });
        }
        id
    }

    /// Forgets a request whose caller went away: no reply will be produced for it, and its Ajax
    /// POST is aborted.
    pub fn cancel_request(&mut self, id: RequestId) {
        if let Some(Pending::Ajax { http }) = self.take_pending(id) {
            self.posts.remove(&http);
            self.action(Action::HttpAbort { id: http });
        }
    }

    // ----------------------------------------------------------------------------------------
    // WebSocket inputs

    /// The WebSocket `conn` is open (the server has not sent its handshake yet).
    pub fn handle_ws_open(&mut self, conn: ConnId, now: u64) {
        if self.is_main_ws(conn) {
            self.last_activity = now;
        }
    }

    /// A frame arrived on `conn` (text frames as their UTF-8 bytes).
    pub fn handle_ws_message(&mut self, conn: ConnId, data: &[u8], now: u64) {
        let is_probe = self.probe.is_some_and(|p| p.conn == conn);
        if !is_probe && !self.is_main_ws(conn) {
            return;
        }
        let msg = match Envelope::unpack(&*self.cfg.packer, data, &self.cfg.limits) {
            Ok(env) => ServerMsg::classify(env),
            Err(e) => {
                self.log(
                    LogLevel::Warn,
                    format!("dropping a frame that cannot be unpacked: {e}"),
                );
                return;
            }
        };
        if is_probe {
            if let ServerMsg::Handshake {
                uid,
                data,
                resume,
                idem,
            } = msg
            {
                self.promote_probe(conn, uid, data, resume, idem, now);
            }
            return;
        }
        self.last_activity = now;
        let Link::Ws(ws) = self.link else { return };
        if !ws.handshaken {
            match msg {
                ServerMsg::Handshake {
                    uid,
                    data,
                    resume,
                    idem,
                } => {
                    self.link = Link::Ws(WsLink {
                        handshaken: true,
                        ..ws
                    });
                    self.ws_ever_handshaken = true;
                    self.on_handshake(Transport::Ws, uid, data, resume, idem, now);
                }
                other => self.log(
                    LogLevel::Warn,
                    format!("ignoring a message received before the handshake: {other:?}"),
                ),
            }
            return;
        }
        match msg {
            ServerMsg::Handshake {
                uid,
                data,
                resume,
                idem,
            } => {
                self.on_handshake(Transport::Ws, uid, data, resume, idem, now);
            }
            ServerMsg::Seq(n) => self.next_seq = Some(n),
            ServerMsg::Ping => {
                if let Err(e) = self.ws_send(conn, &client_msg::ws_pong(), now) {
                    self.log(LogLevel::Warn, format!("cannot pack the pong: {e}"));
                }
                self.out.push_back(Output::Event(ClientEvent::WsPing));
            }
            ServerMsg::Batch(events) => self.on_batch(events, now),
            ServerMsg::NumberedBatch { seq, events } => {
                self.next_seq = Some(seq);
                self.on_batch(events, now);
            }
            ServerMsg::Reply { cb, value } => self.on_ws_reply(&cb, value, now),
            ServerMsg::PollTimeout => {}
            ServerMsg::Invalid(v) => {
                self.log(
                    LogLevel::Warn,
                    format!("ignoring an invalid server message: {v:?}"),
                );
            }
        }
    }

    /// The WebSocket reported an error (browser `onerror`; a refused upgrade natively, with its
    /// HTTP status). A close is expected to follow; see also
    /// [`handle_ws_connect_failed`](Self::handle_ws_connect_failed).
    pub fn handle_ws_error(&mut self, conn: ConnId, failure: WsFailure, now: u64) {
        if let Some(p) = self.probe
            && p.conn == conn
        {
            self.probe_failed(now);
            return;
        }
        if !self.is_main_ws(conn) {
            return;
        }
        let Link::Ws(ws) = self.link else { return };
        let udt = self.udt(now);
        let status = failure.status;
        self.set_state(|s| {
            s.last_ws_error = Some(WsErrorInfo {
                udt,
                message: failure.message,
                status,
                tls: failure.tls,
            });
        });
        if self.cfg.kind == Kind::Auto && !ws.handshaken {
            if !self.ws_ever_handshaken {
                self.downgrade(conn, now);
                return;
            }
            // Mid-session (with re-probes on, which bring it back to WebSocket): fall back
            // to Ajax rather than retry an upgrade a proxy refuses.
            if self.cfg.ws_reprobe_ms.is_some() {
                self.ws_fallback = true;
                self.downgrade(conn, now);
                return;
            }
        }
        if let Some(status @ (401 | 403)) = status {
            self.link = Link::Ws(WsLink {
                rejected: Some(status),
                ..ws
            });
        }
    }

    /// The WebSocket closed (or failed) for any reason.
    pub fn handle_ws_closed(&mut self, conn: ConnId, close: WsClosed, now: u64) {
        if let Some(p) = self.probe
            && p.conn == conn
        {
            self.probe_failed(now);
            return;
        }
        if self.last_ws_conn == Some(conn) {
            let udt = self.udt(now);
            let info = WsCloseInfo {
                udt,
                code: close.code,
                reason: close.reason,
                clean: close.clean,
            };
            self.set_state(|s| s.last_ws_close = Some(info));
        }
        if !self.is_main_ws(conn) {
            return;
        }
        let Link::Ws(ws) = self.link else { return };
        let reason = match ws.rejected {
            Some(status) => CloseReason::Rejected { status },
            None if close.code == NORMAL_CLOSE => CloseReason::Clean,
            None => CloseReason::Unexpected,
        };
        self.link_lost(reason, now);
    }

    /// Opening the WebSocket failed: [`handle_ws_error`](Self::handle_ws_error) followed by
    /// [`handle_ws_closed`](Self::handle_ws_closed) with code 1006.
    pub fn handle_ws_connect_failed(&mut self, conn: ConnId, failure: WsFailure, now: u64) {
        self.handle_ws_error(conn, failure, now);
        self.handle_ws_closed(conn, WsClosed::abnormal(), now);
    }

    /// Writing a frame to `conn` failed: reconnect with reason `ws-error` (Sente's rule).
    pub fn handle_ws_send_failed(&mut self, conn: ConnId, message: &str, now: u64) {
        if !self.is_main_ws(conn) {
            return;
        }
        self.log(LogLevel::Warn, format!("WebSocket send failed: {message}"));
        self.action(Action::WsClose {
            conn,
            code: NORMAL_CLOSE,
            reason: CloseReason::WsError.as_str().to_owned(),
        });
        self.link_lost(CloseReason::WsError, now);
    }

    // ----------------------------------------------------------------------------------------
    // HTTP inputs

    /// An HTTP request completed with a response (any status; the whole body).
    pub fn handle_http_response(&mut self, id: HttpId, status: u16, body: &[u8], now: u64) {
        if self.fetches.contains_key(&id) {
            let event = self.large_unpacker().unpack(status, body);
            self.handle_large_fetched(id, event, now);
            return;
        }
        if let Some(req) = self.posts.remove(&id) {
            self.on_post_response(req, status, body, now);
            return;
        }
        let Link::Ajax { poll, handshaken } = self.link else {
            return;
        };
        if poll != id {
            return;
        }
        if !(200..300).contains(&status) {
            self.log(
                LogLevel::Warn,
                format!(
                    "Ajax poll answered HTTP {}: {}",
                    status,
                    String::from_utf8_lossy(body)
                ),
            );
            let reason = match status {
                s @ (401 | 403) => CloseReason::Rejected { status: s },
                _ => CloseReason::Unexpected,
            };
            self.link_lost(reason, now);
            return;
        }
        let msg = match Envelope::unpack(&*self.cfg.packer, body, &self.cfg.limits) {
            Ok(env) => ServerMsg::classify(env),
            Err(e) => {
                self.log(
                    LogLevel::Warn,
                    format!("Ajax poll response cannot be unpacked: {e}"),
                );
                self.link_lost(CloseReason::Unexpected, now);
                return;
            }
        };
        self.attempt = 0;
        match msg {
            ServerMsg::Handshake {
                uid,
                data,
                resume,
                idem,
            } => {
                self.link = Link::Ajax {
                    poll,
                    handshaken: true,
                };
                self.on_handshake(Transport::Ajax, uid, data, resume, idem, now);
            }
            other => {
                if handshaken && !self.state.open {
                    self.set_state(|s| s.open = true);
                }
                match other {
                    ServerMsg::Batch(events) if handshaken => self.on_batch(events, now),
                    ServerMsg::NumberedBatch { seq, events } if handshaken => {
                        self.next_seq = Some(seq);
                        self.on_batch(events, now);
                    }
                    ServerMsg::PollTimeout => {}
                    other => self.log(
                        LogLevel::Warn,
                        format!("ignoring an unexpected Ajax poll response: {other:?}"),
                    ),
                }
            }
        }
        // The handshake may have promoted a probe or been followed by a disconnect; only poll
        // again when this poll is still the current one.
        if let Link::Ajax {
            poll: p,
            handshaken,
        } = self.link
            && p == id
        {
            let next = self.issue_poll(!handshaken || !self.state.open, now);
            self.link = Link::Ajax {
                poll: next,
                handshaken,
            };
        }
    }

    /// An HTTP request failed without a response.
    pub fn handle_http_failure(&mut self, id: HttpId, failure: HttpFailure, now: u64) {
        if self.fetches.contains_key(&id) {
            self.handle_large_fetched(id, Err(failure.to_string()), now);
            return;
        }
        if let Some(req) = self.posts.remove(&id) {
            if let Some(req) = req {
                if self.idem_acked && self.retryable.contains_key(&req) {
                    self.log(
                        LogLevel::Debug,
                        format!("Ajax POST of {req} failed ({failure}): retrying it"),
                    );
                    self.resend_later(req, now);
                    return;
                }
                self.finish(req, Err(RequestFailure::Http(failure).into()));
            } else {
                self.log(LogLevel::Warn, format!("Ajax POST failed: {failure}"));
            }
            return;
        }
        let Link::Ajax { poll, .. } = self.link else {
            return;
        };
        if poll != id {
            return;
        }
        self.log(LogLevel::Warn, format!("Ajax poll failed: {failure}"));
        let error = AjaxErrorInfo {
            udt: self.udt(now),
            failure,
        };
        self.link_lost_with(CloseReason::Unexpected, now, |s| {
            s.last_ajax_error = Some(error);
        });
    }

    // ----------------------------------------------------------------------------------------
    // Time

    /// Fires every timer due at `now`: reconnects, keepalive, ping and request timeouts,
    /// queue expiry and WebSocket re-probes.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some(&(d, id)) = self.deadlines.first() {
            if d > now {
                break;
            }
            if let Some(p) = self.take_pending(id) {
                if let Pending::Ajax { http } = p {
                    self.posts.remove(&http);
                    self.action(Action::HttpAbort { id: http });
                }
                self.out.push_back(Output::Reply {
                    id,
                    result: Err(RequestError::Timeout),
                });
            }
        }
        while self.queue.front().is_some_and(|q| q.expires <= now) {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            match q.request {
                Some(id) => {
                    if self.take_pending(id).is_some() {
                        self.out.push_back(Output::Reply {
                            id,
                            result: Err(RequestError::Closed),
                        });
                    }
                }
                None => self.log(
                    LogLevel::Warn,
                    format!(
                        "dropping queued event {} (connection not open in time)",
                        q.event.id()
                    ),
                ),
            }
        }
        if let Some(at) = self.retry_at
            && at <= now
        {
            self.retry_at = None;
            self.resend_retrying(now);
        }
        if let Some((_, deadline)) = &self.ping
            && *deadline <= now
        {
            self.ping = None;
            self.ping_failed(now);
        }
        if let Some(at) = self.kalive_at
            && at <= now
        {
            self.kalive_tick(now);
        }
        if let Link::Retry { at } = self.link
            && at <= now
        {
            self.set_state(|s| s.udt_next_reconnect = None);
            self.start_attempt(now);
        }
        if let Some(at) = self.next_probe_at
            && at <= now
        {
            self.next_probe_at = None;
            self.start_probe(now);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Internals

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn udt(&self, now: u64) -> u64 {
        self.start_unix
            .saturating_add(now.saturating_sub(self.start_mono))
    }

    fn log(&mut self, level: LogLevel, message: String) {
        self.out.push_back(Output::Log { level, message });
    }

    fn action(&mut self, action: Action) {
        self.out.push_back(Output::Action(action));
    }

    fn set_state(&mut self, f: impl FnOnce(&mut State)) {
        let old = self.state.clone();
        f(&mut self.state);
        if old != self.state {
            let change = StateChange {
                old,
                new: self.state.clone(),
            };
            self.out
                .push_back(Output::Event(ClientEvent::State(Box::new(change))));
        }
    }

    fn is_main_ws(&self, conn: ConnId) -> bool {
        matches!(self.link, Link::Ws(ws) if ws.conn == conn)
    }

    fn can_queue(&self) -> bool {
        self.cfg.queue.is_some_and(|q| self.queue.len() < q.max_len)
            && !matches!(self.link, Link::Idle)
    }

    fn add_deadline(&mut self, id: RequestId, deadline: u64) {
        self.deadlines.insert((deadline, id));
        self.deadline_of.insert(id, deadline);
    }

    /// Removes every trace of a request; returns where it was.
    fn take_pending(&mut self, id: RequestId) -> Option<Pending> {
        if let Some(d) = self.deadline_of.remove(&id) {
            self.deadlines.remove(&(d, id));
        }
        let p = self.pending.remove(&id)?;
        if let Pending::Ws { cb } = &p {
            self.ws_cbs.remove(cb);
        }
        self.retryable.remove(&id);
        self.resends.remove(&id);
        Some(p)
    }

    fn finish(&mut self, id: RequestId, result: Result<Value, RequestError>) {
        if self.take_pending(id).is_some() {
            self.out.push_back(Output::Reply { id, result });
        }
    }

    fn transport_for_attempt(&self) -> Transport {
        match self.cfg.kind {
            Kind::Ws => Transport::Ws,
            Kind::Auto if self.auto_ws => Transport::Ws,
            Kind::Ajax | Kind::Auto => Transport::Ajax,
        }
    }

    fn start_attempt(&mut self, now: u64) {
        match self.transport_for_attempt() {
            Transport::Ws => {
                let conn = self.open_ws(now);
                self.last_ws_conn = Some(conn);
                self.link = Link::Ws(WsLink {
                    conn,
                    handshaken: false,
                    rejected: None,
                });
            }
            Transport::Ajax => {
                let poll = self.issue_poll(true, now);
                self.link = Link::Ajax {
                    poll,
                    handshaken: false,
                };
            }
        }
    }

    fn open_ws(&mut self, _now: u64) -> ConnId {
        let conn = ConnId(self.fresh_id());
        let mut pairs: Vec<(String, String)> = self.cfg.params.clone();
        pairs.push((
            "client-id".to_owned(),
            self.cfg.client_id.as_str().to_owned(),
        ));
        if let Some(token) = self.cfg.csrf_token.get() {
            pairs.push(("csrf-token".to_owned(), token));
        }
        pairs.push(("packer".to_owned(), self.cfg.packer.name().to_owned()));
        if let Some(ext) = self.ext_param() {
            pairs.push(("ext".to_owned(), ext));
        }
        if let Some(at) = self.resume_param() {
            pairs.push((RESUME_PARAM.to_owned(), at));
        }
        let query = query_string(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let url = with_query(self.cfg.url.ws(), &query);
        let headers = self.cfg.headers.clone();
        self.action(Action::WsOpen { conn, url, headers });
        conn
    }

    /// The `resume` parameter's value (resume on): the position, empty without one.
    fn resume_param(&self) -> Option<String> {
        self.cfg.resume.then(|| {
            self.position
                .as_ref()
                .map(Position::to_param)
                .unwrap_or_default()
        })
    }

    /// The `ext` parameter: the extensions this client speaks, comma-separated (`idem` always:
    /// it costs nothing until a request asks to be retried; `req` with request handlers;
    /// `large` unless turned off).
    fn ext_param(&self) -> Option<String> {
        let names: Vec<&str> = [
            (self.cfg.requests, crate::s2c::EXTENSION),
            (true, crate::idem::EXTENSION),
            (self.cfg.large, crate::large::EXTENSION),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        (!names.is_empty()).then(|| names.join(","))
    }

    fn http_headers(&self) -> Vec<(String, String)> {
        let mut h = self.cfg.headers.clone();
        h.push(("X-Requested-With".to_owned(), "XMLHTTPRequest".to_owned()));
        if let Some(token) = self.cfg.csrf_token.get() {
            h.push(("X-CSRF-Token".to_owned(), token));
        }
        h
    }

    /// The query every GET starts with (as Sente's): the app's params, `udt`, `client-id`.
    fn get_query<'a>(&'a self, udt: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut pairs: Vec<(&str, &str)> = self
            .cfg
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pairs.push(("udt", udt));
        pairs.push(("client-id", self.cfg.client_id.as_str()));
        pairs
    }

    fn issue_poll(&mut self, handshake: bool, now: u64) -> HttpId {
        let id = HttpId(self.fresh_id());
        let udt = self.udt(now).to_string();
        let mut pairs = self.get_query(&udt);
        if handshake {
            pairs.push(("handshake?", "1"));
        }
        pairs.push(("packer", self.cfg.packer.name()));
        let ext = self.ext_param();
        if let Some(ext) = &ext {
            pairs.push(("ext", ext));
        }
        // On every GET (not only the handshake): a poll the server takes for a handshake (it
        // forgot the client) resumes too.
        let at = self.resume_param();
        if let Some(at) = &at {
            pairs.push((RESUME_PARAM, at));
        }
        let url = with_query(self.cfg.url.http(), &query_string(pairs));
        let request = HttpRequest {
            method: HttpMethod::Get,
            url,
            headers: self.http_headers(),
            body: None,
            timeout_ms: self.cfg.ajax_timeout_ms,
        };
        self.action(Action::Http { id, request });
        id
    }

    fn ws_send(&mut self, conn: ConnId, envelope: &Envelope, now: u64) -> Result<(), PackError> {
        let frame = self.pack(envelope)?;
        self.last_activity = now;
        self.action(Action::WsSend { conn, frame });
        Ok(())
    }

    fn pack(&self, envelope: &Envelope) -> Result<Packed, PackError> {
        let frame = envelope.pack(&*self.cfg.packer)?;
        let size = frame.as_bytes().len();
        let limit = self.cfg.limits.max_message_bytes;
        if size > limit {
            return Err(PackError::TooLarge { size, limit });
        }
        Ok(frame)
    }

    /// Sends over the open link. Requests must already be in `pending`.
    fn transmit(
        &mut self,
        event: Event,
        req: Option<RequestId>,
        now: u64,
    ) -> Result<(), SendError> {
        match self.link {
            Link::Ws(ws) => {
                let cb = match req {
                    Some(id) => Some(match self.retryable.get(&id) {
                        Some((_, rid)) => rid.clone(),
                        None => self.fresh_cb(),
                    }),
                    None => None,
                };
                self.ws_send(ws.conn, &client_msg::event(event, cb.as_deref()), now)?;
                if let (Some(id), Some(cb)) = (req, cb) {
                    self.ws_cbs.insert(cb.clone(), id);
                    self.pending.insert(id, Pending::Ws { cb });
                }
                Ok(())
            }
            Link::Ajax { .. } => {
                let rid = req.and_then(|id| self.retryable.get(&id));
                let envelope = match rid {
                    Some((_, rid)) => client_msg::event(event, Some(rid)),
                    None => client_msg::ajax_event(event, req.is_some()),
                };
                let rid = rid.map(|_| ());
                let frame = self.pack(&envelope)?;
                let timeout_ms = match req.and_then(|id| self.deadline_of.get(&id)) {
                    // The machine's own timer answers `Timeout`; the HTTP timeout is a backstop.
                    Some(d) => d.saturating_sub(now).saturating_add(1000),
                    None => self.cfg.ajax_timeout_ms,
                };
                let id = HttpId(self.fresh_id());
                let request = self.post_request(frame, timeout_ms, rid.is_some(), now);
                self.posts.insert(id, req);
                if let Some(r) = req {
                    self.pending.insert(r, Pending::Ajax { http: id });
                }
                self.action(Action::Http { id, request });
                Ok(())
            }
            Link::Idle | Link::Retry { .. } => Err(SendError::Closed),
        }
    }

    /// A POST of `frame`; `idem`: it carries a request id, so it announces the extensions
    /// (other POSTs keep Sente's exact form).
    fn post_request(&self, frame: Packed, timeout_ms: u64, idem: bool, now: u64) -> HttpRequest {
        let udt = self.udt(now).to_string();
        let client_id = self.cfg.client_id.as_str();
        let packer = self.cfg.packer.name();
        let ext = match self.ext_param() {
            Some(ext) if idem => format!("&ext={}", url_encode(&ext)),
            _ => String::new(),
        };
        let mut headers = self.http_headers();
        let (url, body) = match frame {
            Packed::Text(text) => {
                let url = if packer == "edn" {
                    self.cfg.url.http().to_owned()
                } else {
                    with_query(self.cfg.url.http(), &query_string([("packer", packer)]))
                };
                headers.push((
                    "Content-Type".to_owned(),
                    "application/x-www-form-urlencoded;charset=UTF-8".to_owned(),
                ));
                let body = format!(
                    "udt={udt}&client-id={}{ext}&ppstr={}",
                    url_encode(client_id),
                    url_encode(&text)
                );
                (url, body.into_bytes())
            }
            Packed::Binary(bytes) => {
                let query = query_string([
                    ("udt", udt.as_str()),
                    ("client-id", client_id),
                    ("binary?", "true"),
                    ("packer", packer),
                ]) + &ext;
                headers.push((
                    "Content-Type".to_owned(),
                    "application/octet-stream".to_owned(),
                ));
                (with_query(self.cfg.url.http(), &query), bytes)
            }
        };
        HttpRequest {
            method: HttpMethod::Post,
            url,
            headers,
            body: Some(body),
            timeout_ms,
        }
    }

    fn fresh_cb(&mut self) -> String {
        loop {
            let cb = self.rng.cb_id();
            if !self.ws_cbs.contains_key(&cb) && self.ping.as_ref().is_none_or(|(p, _)| *p != cb) {
                return cb;
            }
        }
    }

    fn on_handshake(
        &mut self,
        transport: Transport,
        uid: Uid,
        data: Value,
        resume: Option<ResumeInfo>,
        idem: bool,
        now: u64,
    ) {
        self.attempt = 0;
        self.idem_acked = idem;
        let first = !self.state.ever_opened;
        let (uid2, data2) = (uid.clone(), data.clone());
        // Recovered or not is news only to a client that had a position to resume from.
        let recovered = resume
            .as_ref()
            .filter(|_| self.position.is_some())
            .map(|r| r.recovered);
        // Recovered from a position of the same epoch: the client may stand further already (a
        // WebSocket probe opened at its position while Ajax polls went on delivering): the
        // replay's overlap is then skipped, not delivered twice.
        let ahead = match (&self.position, &resume) {
            (Some(p), Some(r)) if r.recovered && r.position.epoch == p.epoch => p.seq,
            _ => 0,
        };
        self.position = resume.map(|mut r| {
            r.position.seq = r.position.seq.max(ahead);
            r.position
        });
        self.next_seq = None;
        self.set_state(|s| {
            s.kind = transport.kind();
            s.open = true;
            s.ever_opened = true;
            s.uid = Some(uid2);
            s.handshake_data = Some(data2);
            s.udt_next_reconnect = None;
            s.recovered = recovered;
        });
        self.out
            .push_back(Output::Event(ClientEvent::Handshake(Handshake {
                uid,
                data,
                first,
            })));
        match transport {
            Transport::Ws => {
                self.last_activity = now;
                self.ping = None;
                self.kalive_at = self.kalive_interval().map(|i| now + i);
                self.next_probe_at = None;
            }
            Transport::Ajax => {
                if self.cfg.kind == Kind::Auto
                    && self.probe.is_none()
                    && self.next_probe_at.is_none()
                    && let Some(every) = self.cfg.ws_reprobe_ms
                {
                    self.next_probe_at = Some(now + every);
                }
            }
        }
        self.resend_retrying(now);
        self.flush_queue(now);
    }

    /// Re-sends the requests whose link was lost, with their request ids, when the open link's
    /// server dedupes them; fails them otherwise.
    fn resend_retrying(&mut self, now: u64) {
        if !self.is_open() || self.retrying.is_empty() {
            return;
        }
        if !self.idem_acked {
            self.fail_retrying(&RequestFailure::ConnectionLost.into());
            return;
        }
        self.retry_at = None;
        for id in std::mem::take(&mut self.retrying) {
            if !matches!(self.pending.get(&id), Some(Pending::Queued)) {
                continue;
            }
            let Some((event, _)) = self.retryable.get(&id) else {
                continue;
            };
            let event = event.clone();
            if let Err(e) = self.transmit(event, Some(id), now) {
                self.finish(id, Err(send_failed(e)));
            }
        }
    }

    /// Puts a retryable request whose Ajax POST ended without its reply (the POST failed, or the
    /// server stopped holding it) back to be re-sent with its request id after a backoff: the
    /// server's dedupe window makes the copy wait for the running handler or answers it with
    /// the kept reply. The wait grows with each re-send of the same request (a handler that
    /// never replies is answered `:chsk/timeout` at once each time), and the request's own
    /// deadline still ends it.
    fn resend_later(&mut self, id: RequestId, now: u64) {
        self.pending.insert(id, Pending::Queued);
        if !self.retrying.contains(&id) {
            self.retrying.push(id);
            self.retrying.sort();
        }
        let n = self.resends.entry(id).or_insert(0);
        *n = n.saturating_add(1);
        let attempt = n.saturating_add(1);
        let delay = self
            .cfg
            .backoff
            .delay_ms(attempt, self.rng.next_f64())
            .max(50);
        let at = now.saturating_add(delay);
        self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
    }

    /// Fails every request waiting to be re-sent with `error`.
    fn fail_retrying(&mut self, error: &RequestError) {
        self.retry_at = None;
        for id in std::mem::take(&mut self.retrying) {
            self.finish(id, Err(error.clone()));
        }
    }

    fn flush_queue(&mut self, now: u64) {
        while self.is_open() {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            match q.request {
                Some(id) => {
                    if !self.pending.contains_key(&id) {
                        continue;
                    }
                    if let Err(e) = self.transmit(q.event, Some(id), now) {
                        self.finish(id, Err(send_failed(e)));
                    }
                }
                None => {
                    if let Err(e) = self.transmit(q.event, None, now) {
                        self.log(LogLevel::Warn, format!("dropping a queued event: {e}"));
                    }
                }
            }
        }
    }

    fn fail_queue(&mut self, _now: u64) {
        for q in std::mem::take(&mut self.queue) {
            if let Some(id) = q.request
                && self.take_pending(id).is_some()
            {
                self.out.push_back(Output::Reply {
                    id,
                    result: Err(RequestError::Closed),
                });
            }
        }
    }

    /// Fails requests waiting for a WebSocket reply (the reply can no longer arrive).
    /// Retryable ones ([`Self::request_with_retry`]) wait to be re-sent instead when the
    /// server acknowledged the extension.
    fn fail_ws_requests(&mut self) {
        let mut ids: Vec<RequestId> = self.ws_cbs.values().copied().collect();
        ids.sort();
        for id in ids {
            if self.idem_acked && self.retryable.contains_key(&id) {
                if let Some(Pending::Ws { cb }) = self.pending.insert(id, Pending::Queued) {
                    self.ws_cbs.remove(&cb);
                }
                self.retrying.push(id);
                continue;
            }
            self.finish(id, Err(RequestFailure::ConnectionLost.into()));
        }
        self.retrying.sort();
        self.ping = None;
    }

    fn stop_link_timers(&mut self) {
        self.kalive_at = None;
        self.ping = None;
    }

    /// Tears the current link down on request (disconnect / reconnect).
    fn close_link(&mut self, reason: CloseReason, now: u64) {
        match self.link {
            Link::Ws(ws) => self.action(Action::WsClose {
                conn: ws.conn,
                code: NORMAL_CLOSE,
                reason: "CLOSE_NORMAL".to_owned(),
            }),
            Link::Ajax { poll, .. } => self.action(Action::HttpAbort { id: poll }),
            Link::Idle | Link::Retry { .. } => {}
        }
        if let Some(p) = self.probe.take() {
            self.action(Action::WsClose {
                conn: p.conn,
                code: NORMAL_CLOSE,
                reason: "CLOSE_NORMAL".to_owned(),
            });
        }
        self.next_probe_at = None;
        self.stop_link_timers();
        self.fail_ws_requests();
        let udt = self.udt(now);
        self.set_state(|s| {
            if s.open {
                s.last_close = Some(CloseInfo { udt, reason });
            }
            s.open = false;
            s.udt_next_reconnect = None;
        });
    }

    /// The link failed: record why and schedule a reconnect.
    fn link_lost(&mut self, reason: CloseReason, now: u64) {
        self.link_lost_with(reason, now, |_| {});
    }

    /// [`link_lost`](Self::link_lost), with more state changed in the same `chsk/state` change.
    fn link_lost_with(&mut self, reason: CloseReason, now: u64, also: impl FnOnce(&mut State)) {
        if self.ws_fallback
            && matches!(
                self.link,
                Link::Ajax {
                    handshaken: false,
                    ..
                }
            )
        {
            // Neither transport gets through: most likely the server is down, not a proxy in
            // the way of upgrades. Try WebSocket first again.
            self.ws_fallback = false;
            self.auto_ws = true;
        }
        self.stop_link_timers();
        self.fail_ws_requests();
        self.attempt = self.attempt.saturating_add(1);
        let delay = if let CloseReason::Rejected { .. } = reason {
            let full = self.cfg.rejected_retry_ms;
            full / 2 + (full as f64 / 2.0 * self.rng.next_f64()) as u64
        } else {
            let r = self.rng.next_f64();
            self.cfg.backoff.delay_ms(self.attempt, r)
        };
        let udt = self.udt(now);
        let at = now.saturating_add(delay);
        let udt_next = (delay > 0).then(|| self.udt(at));
        let record = self.state.open || matches!(reason, CloseReason::Rejected { .. });
        self.set_state(|s| {
            also(s);
            if record {
                s.last_close = Some(CloseInfo { udt, reason });
            }
            s.open = false;
            s.udt_next_reconnect = udt_next;
        });
        if delay == 0 {
            self.start_attempt(now);
        } else {
            self.link = Link::Retry { at };
        }
    }

    fn downgrade(&mut self, conn: ConnId, now: u64) {
        self.log(
            LogLevel::Debug,
            "WebSocket failed before its first handshake: downgrading to Ajax".to_owned(),
        );
        self.action(Action::WsClose {
            conn,
            code: NORMAL_CLOSE,
            reason: CloseReason::DowngradingWsToAjax.as_str().to_owned(),
        });
        self.auto_ws = false;
        self.stop_link_timers();
        let udt = self.udt(now);
        self.set_state(|s| {
            if s.open {
                s.last_close = Some(CloseInfo {
                    udt,
                    reason: CloseReason::DowngradingWsToAjax,
                });
            }
            s.open = false;
        });
        let poll = self.issue_poll(true, now);
        self.link = Link::Ajax {
            poll,
            handshaken: false,
        };
    }

    fn kalive_interval(&self) -> Option<u64> {
        self.cfg.ws_kalive_ms.map(|ms| (ms / 2).max(1))
    }

    fn kalive_tick(&mut self, now: u64) {
        let Some(interval) = self.kalive_interval() else {
            self.kalive_at = None;
            return;
        };
        self.kalive_at = Some(now + interval);
        let Link::Ws(ws) = self.link else { return };
        if !ws.handshaken || self.ping.is_some() {
            return;
        }
        if now.saturating_sub(self.last_activity) >= interval {
            let cb = self.fresh_cb();
            if self
                .ws_send(ws.conn, &client_msg::ws_ping(&cb), now)
                .is_ok()
            {
                self.ping = Some((cb, now + self.cfg.ws_ping_timeout_ms));
            }
        }
    }

    fn on_ws_reply(&mut self, cb: &Value, value: Value, now: u64) {
        let Some(cb) = cb.as_str() else {
            self.log(
                LogLevel::Warn,
                format!("ignoring a reply with a non-string cb id: {cb:?}"),
            );
            return;
        };
        if let Some((ping_cb, _)) = &self.ping
            && ping_cb == cb
        {
            self.ping = None;
            if value.as_str() != Some("pong") {
                self.ping_failed(now);
            }
            return;
        }
        match self.ws_cbs.get(cb).copied() {
            Some(id) => self.finish(id, reply_result(value)),
            None => self.log(
                LogLevel::Debug,
                format!("reply without a waiting request: {cb}"),
            ),
        }
    }

    fn ping_failed(&mut self, now: u64) {
        let Link::Ws(ws) = self.link else { return };
        self.action(Action::WsClose {
            conn: ws.conn,
            code: NORMAL_CLOSE,
            reason: CloseReason::WsPingTimeout.as_str().to_owned(),
        });
        self.link_lost(CloseReason::WsPingTimeout, now);
    }

    fn on_post_response(&mut self, req: Option<RequestId>, status: u16, body: &[u8], now: u64) {
        let ok = (200..300).contains(&status);
        let Some(id) = req else {
            if !ok {
                self.log(
                    LogLevel::Warn,
                    format!(
                        "Ajax POST answered HTTP {}: {}",
                        status,
                        String::from_utf8_lossy(body)
                    ),
                );
            }
            return;
        };
        let result = if !ok {
            Err(RequestFailure::Status {
                status,
                body: String::from_utf8_lossy(body).into_owned(),
            }
            .into())
        } else if body.is_empty() {
            Err(RequestFailure::EmptyResponse.into())
        } else {
            match Envelope::unpack(&*self.cfg.packer, body, &self.cfg.limits) {
                Ok(env) => match PostReply::classify(env) {
                    // The server held the POST as long as it holds any (its long-poll
                    // timeout) and the reply is not known yet. A copy of a retryable request
                    // asks again: its server runs it once and keeps the reply, and a copy
                    // that joined a run already underway (re-sent after a cut) must not give
                    // up before that run ends. The request's own deadline ends the wait.
                    PostReply::Timeout
                        if self.idem_acked
                            && self.retryable.contains_key(&id)
                            && self.deadline_of.get(&id).is_some_and(|d| *d > now) =>
                    {
                        self.log(
                            LogLevel::Debug,
                            format!("Ajax POST of {id} answered :chsk/timeout: asking again"),
                        );
                        self.resend_later(id, now);
                        return;
                    }
                    PostReply::Timeout => Err(RequestError::Timeout),
                    PostReply::Reply(v) => reply_result(v),
                    PostReply::Ack => Ok(Value::kw(crate::event::ids::DUMMY_CB_200)),
                },
                Err(e) => Err(RequestFailure::Unpack(e).into()),
            }
        };
        self.finish(id, result);
    }

    fn start_probe(&mut self, now: u64) {
        let ajax_up = matches!(
            self.link,
            Link::Ajax {
                handshaken: true,
                ..
            }
        ) && self.state.open;
        if self.cfg.kind != Kind::Auto || self.auto_ws || self.probe.is_some() {
            return;
        }
        let Some(every) = self.cfg.ws_reprobe_ms else {
            return;
        };
        if !ajax_up {
            self.next_probe_at = Some(now + every);
            return;
        }
        self.log(
            LogLevel::Debug,
            "probing whether WebSocket works again".to_owned(),
        );
        let conn = self.open_ws(now);
        self.probe = Some(Probe { conn });
    }

    fn probe_failed(&mut self, now: u64) {
        if let Some(p) = self.probe.take() {
            self.action(Action::WsClose {
                conn: p.conn,
                code: NORMAL_CLOSE,
                reason: "probe-failed".to_owned(),
            });
        }
        if let Some(every) = self.cfg.ws_reprobe_ms
            && self.cfg.kind == Kind::Auto
            && !self.auto_ws
            && !matches!(self.link, Link::Idle)
        {
            self.next_probe_at = Some(now + every);
        }
    }

    fn promote_probe(
        &mut self,
        conn: ConnId,
        uid: Uid,
        data: Value,
        resume: Option<ResumeInfo>,
        idem: bool,
        now: u64,
    ) {
        self.log(
            LogLevel::Debug,
            "WebSocket works again: switching from Ajax".to_owned(),
        );
        self.probe = None;
        self.next_probe_at = None;
        if let Link::Ajax { poll, .. } = self.link {
            self.action(Action::HttpAbort { id: poll });
        }
        self.auto_ws = true;
        self.ws_fallback = false;
        self.ws_ever_handshaken = true;
        self.last_ws_conn = Some(conn);
        self.link = Link::Ws(WsLink {
            conn,
            handshaken: true,
            rejected: None,
        });
        self.on_handshake(Transport::Ws, uid, data, resume, idem, now);
    }

    /// A batch of pushes: with a position and a `[:chsk/seq n]` before it, the events it
    /// numbers up to `n` that were received already (a replay overlapping a live batch) are
    /// skipped; a batch with no number (one the server could not number, e.g. a push to this
    /// client alone while the uid had no log) makes the position unknown: the next reconnect
    /// asks for none rather than risk a replay that misses it.
    fn on_batch(&mut self, events: Vec<Event>, now: u64) {
        let skip = if let (Some(last), Some(pos)) = (self.next_seq.take(), &mut self.position) {
            let first = (last + 1).saturating_sub(events.len() as u64);
            let skip = pos.seq.saturating_add(1).saturating_sub(first);
            pos.seq = pos.seq.max(last);
            usize::try_from(skip).unwrap_or(usize::MAX)
        } else {
            self.position = None;
            0
        };
        for ev in events.into_iter().skip(skip) {
            if ev.id().as_str() == crate::event::ids::REQ {
                match crate::s2c::parse_request(ev.data()) {
                    Some((id, event)) if self.cfg.requests => {
                        self.deliver(Output::ServerRequest { id, event });
                    }
                    _ => self.out.push_back(Output::Log {
                        level: LogLevel::Warn,
                        message: "unexpected chsk/req from the server, ignored".to_owned(),
                    }),
                }
                continue;
            }
            if self.cfg.large && ev.id().as_str() == crate::event::ids::LARGE {
                self.fetch_large(&ev, now);
                continue;
            }
            self.deliver(Output::Event(ClientEvent::Push(ev)));
        }
    }

    /// Hands a push (or a server request) to the app, after the offloaded events before it.
    fn deliver(&mut self, output: Output) {
        if self.held.is_empty() {
            self.out.push_back(output);
        } else {
            self.held.push_back(Held::Ready(output));
        }
    }

    /// `[:chsk/large {:id .. :size n}]`: fetches the event; what follows waits for it.
    fn fetch_large(&mut self, reference: &Event, now: u64) {
        let Some((large, size)) = crate::large::parse_reference(reference.data()) else {
            self.log(
                LogLevel::Warn,
                "malformed chsk/large from the server, ignored".to_owned(),
            );
            return;
        };
        let id = HttpId(self.fresh_id());
        let udt = self.udt(now).to_string();
        let mut pairs = self.get_query(&udt);
        pairs.push(("packer", self.cfg.packer.name()));
        pairs.push((crate::large::PARAM, &large));
        let request = HttpRequest {
            method: HttpMethod::Get,
            url: with_query(self.cfg.url.http(), &query_string(pairs)),
            headers: self.http_headers(),
            body: None,
            timeout_ms: self.cfg.ajax_timeout_ms,
        };
        self.action(Action::Http { id, request });
        self.fetches.insert(id, (large, size));
        self.held.push_back(Held::Fetching(id));
    }

    /// Whether HTTP request `id` is the fetch of an offloaded event (large extension): its
    /// response may be unpacked outside the machine ([`ClientMachine::large_unpacker`], then
    /// [`ClientMachine::handle_large_fetched`]), so a shell that shares the machine between
    /// tasks need not hold it while a large body is unpacked.
    pub fn is_large_fetch(&self, id: HttpId) -> bool {
        self.fetches.contains_key(&id)
    }

    /// What unpacks the body of an offloaded event's fetch (this client's packer and limits).
    pub fn large_unpacker(&self) -> LargeUnpacker {
        LargeUnpacker {
            packer: self.cfg.packer.clone(),
            limits: self.cfg.limits.clone(),
        }
    }

    /// The fetch `http` of an offloaded event ended: with the event (unpacked by
    /// [`LargeUnpacker::unpack`]) or why it failed. The event (or its failure) takes its place,
    /// and what waited behind it goes out. Anything but a large fetch in flight is ignored.
    pub fn handle_large_fetched(&mut self, http: HttpId, event: Result<Event, String>, _now: u64) {
        let Some((id, size)) = self.fetches.remove(&http) else {
            return;
        };
        let output = match event {
            Ok(ev) => Output::Event(ClientEvent::Push(ev)),
            Err(reason) => {
                self.log(
                    LogLevel::Warn,
                    format!("large event {id} could not be fetched: {reason}"),
                );
                Output::Event(ClientEvent::LargeFailed(LargeFailure { id, size, reason }))
            }
        };
        if let Some(slot) = self
            .held
            .iter_mut()
            .find(|h| matches!(h, Held::Fetching(x) if *x == http))
        {
            *slot = Held::Ready(output);
        }
        while let Some(Held::Ready(_)) = self.held.front() {
            if let Some(Held::Ready(o)) = self.held.pop_front() {
                self.out.push_back(o);
            }
        }
    }

    /// Answers the server's request `id` ([`Output::ServerRequest`]): `Ok(reply)`, or
    /// `Err(reason)` when the app cannot answer (e.g. [`crate::s2c::NO_HANDLER`]). Sent at once
    /// when the connection is open (queued like any send otherwise); a request whose
    /// connection is gone times out on the server.
    pub fn answer_request(
        &mut self,
        id: u64,
        answer: Result<Value, String>,
        now: u64,
    ) -> Result<(), SendError> {
        self.send(crate::s2c::reply_event(id, answer), now)
    }
}

/// Unpacks the body of an offloaded event's fetch ([`ClientMachine::large_unpacker`]): `Send`,
/// so a shell may run it off the machine's lock (or on a blocking pool).
#[derive(Clone)]
pub struct LargeUnpacker {
    packer: Arc<dyn Packer>,
    limits: Limits,
}

impl std::fmt::Debug for LargeUnpacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LargeUnpacker")
            .field("packer", &self.packer.name())
            .finish_non_exhaustive()
    }
}

impl LargeUnpacker {
    /// The event in a fetch's response (`status`, `body`), or why there is none.
    pub fn unpack(&self, status: u16, body: &[u8]) -> Result<Event, String> {
        if !(200..300).contains(&status) {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(256)])
            ));
        }
        match Envelope::unpack(&*self.packer, body, &self.limits).map(ServerMsg::classify) {
            Ok(ServerMsg::Batch(mut events)) if events.len() == 1 => Ok(events.remove(0)),
            Ok(other) => Err(format!("unexpected answer: {other:?}")),
            Err(e) => Err(format!("cannot unpack the event: {e}")),
        }
    }
}

/// The outcome of a request whose transmission failed.
fn send_failed(e: SendError) -> RequestError {
    match e {
        SendError::Pack(e) => RequestFailure::Pack(e).into(),
        SendError::Closed => RequestError::Closed,
    }
}

/// A reply value as a request's outcome: `:chsk/error` (the server's handler failed before
/// replying, as a Sente client's `cb-error?` sees it) is an error, anything else the reply.
fn reply_result(value: Value) -> Result<Value, RequestError> {
    if value.is_kw(crate::event::ids::ERROR) {
        Err(RequestFailure::HandlerFailed.into())
    } else {
        Ok(value)
    }
}
