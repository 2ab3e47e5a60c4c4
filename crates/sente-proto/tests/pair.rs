//! A quinn-style pair test: the sans-IO client ([`ClientMachine`]) stepped against the sans-IO
//! server ([`Core`], [`Keepalive`] and the per-message functions of [`message`]) in virtual
//! time. No sockets, no tokio, no sleeps: [`Pair`] owns both sides and a clock, moves every
//! frame and HTTP exchange across (packed and unpacked with the edn packer, so real bytes cross),
//! and jumps the clock to the next deadline of either side.
//!
//! The harness is also documentation of how the pieces fit: it is the whole of a server shell
//! and a client shell, minus the IO.

use sente_proto::client::{
    Action as Io, Backoff, ChskUrl, ClientConfig, ClientEvent, ClientMachine, CloseReason, ConnId,
    Handshake, HttpFailure, HttpId, HttpMethod, Kind, Output, QueueConfig, RequestError,
    RequestFailure, RequestId, WsClosed, WsFailure,
};
use sente_proto::packer::EdnPacker;
use sente_proto::server::message::{self, PendingReplies, Push};
use sente_proto::server::{
    Action, Core, CoreConfig, CoreEvent, Keepalive, KeepaliveAction, PackedBytes, PollAnswer,
};
use sente_proto::{ClientId, Event, EventId, Transport, Uid, Value, server};
use std::collections::BTreeMap;
use std::sync::Arc;

const UID: &str = "alice";
const T0_UNIX: u64 = 1_700_000_000_000;
/// The server's keepalive (spec 5.5 defaults): a check every 12.5 s, close 10 s after a ping.
const SERVER_KALIVE_MS: u64 = 25_000;
const SERVER_PING_TIMEOUT_MS: u64 = 10_000;

/// Where the app's answer to an event goes.
#[derive(Clone, Debug, PartialEq)]
enum ReplyTo {
    /// `[reply cb]` on this WebSocket.
    Ws(ConnId, Value),
    /// The response of this Ajax POST.
    Ajax(HttpId),
}

/// The server's side of one WebSocket: the core's id for it and its keepalive.
struct ServerWs {
    id: server::ConnId,
    cid: ClientId,
    keepalive: Keepalive,
}

/// Both sides, the wire between them and a virtual clock (ms).
struct Pair {
    now: u64,
    client: ClientMachine,
    /// Connection handles are the client's own ids: the wire is a direct line.
    core: Core<ConnId, HttpId, ()>,
    packer: EdnPacker,
    sockets: BTreeMap<ConnId, ServerWs>,
    /// Ajax polls the core holds, and POSTs waiting for the app's reply (with their deadline).
    polls: BTreeMap<HttpId, (ClientId, server::ConnId)>,
    posts: BTreeMap<HttpId, (ClientId, u64)>,
    replies_owed: PendingReplies,
    /// The server app's inbox, the client app's view, and every message that crossed.
    inbox: Vec<(u64, Event, Option<ReplyTo>)>,
    seen: Vec<(u64, Output)>,
    core_events: Vec<(u64, CoreEvent<()>)>,
    trace: Vec<(u64, String)>,
    /// Faults: the server refuses connections (or only WebSocket upgrades); frames of one
    /// direction are lost.
    server_down: bool,
    refuse_ws: bool,
    drop_client_frames: bool,
    drop_server_frames: bool,
}

impl Pair {
    fn new(kind: Kind, tweak: impl FnOnce(&mut ClientConfig)) -> Self {
        let url = ChskUrl::parse("http://localhost:3000/chsk").unwrap();
        let mut cfg = ClientConfig::new(url, ClientId::new("cid-1").unwrap(), Arc::new(EdnPacker));
        cfg.kind = kind;
        tweak(&mut cfg);
        Pair {
            now: 0,
            client: ClientMachine::new(cfg, 7, 0, T0_UNIX),
            core: Core::new(CoreConfig::default()),
            packer: EdnPacker,
            sockets: BTreeMap::new(),
            polls: BTreeMap::new(),
            posts: BTreeMap::new(),
            replies_owed: PendingReplies::new(),
            inbox: Vec::new(),
            seen: Vec::new(),
            core_events: Vec::new(),
            trace: Vec::new(),
            server_down: false,
            refuse_ws: false,
            drop_client_frames: false,
            drop_server_frames: false,
        }
    }

    /// A connected pair at time 0.
    fn connected(kind: Kind, tweak: impl FnOnce(&mut ClientConfig)) -> Self {
        let mut p = Pair::new(kind, tweak);
        p.client.connect(0);
        p.pump();
        assert!(p.client.is_open(), "{:#?}", p.trace);
        p
    }

    fn uid() -> Uid {
        Uid::from(UID)
    }

    fn max(&self) -> usize {
        self.core.config().limits.message.max_message_bytes
    }

    /// Runs both sides until neither has anything left to do at `now`.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(out) = self.client.poll_output() {
                busy = true;
                match out {
                    Output::Action(io) => self.client_io(io),
                    other => self.seen.push((self.now, other)),
                }
            }
            for action in self.core.take_actions() {
                busy = true;
                self.server_action(action);
            }
            let now = self.now;
            let events = self.core.take_events().into_iter().map(|e| (now, e));
            self.core_events.extend(events);
            if !busy {
                return;
            }
        }
    }

    /// When either side next has something to do.
    fn next_deadline(&self) -> Option<u64> {
        let keepalives = self
            .sockets
            .values()
            .filter_map(|s| s.keepalive.next_deadline());
        let posts = self.posts.values().map(|(_, at)| *at);
        [self.client.poll_timeout(), self.core.next_deadline()]
            .into_iter()
            .flatten()
            .chain(keepalives)
            .chain(posts)
            .min()
    }

    /// Moves the clock to `t`, firing every deadline of either side on the way.
    fn advance_to(&mut self, t: u64) {
        while let Some(at) = self.next_deadline().filter(|at| *at <= t) {
            self.now = self.now.max(at);
            self.client.handle_timeout(self.now);
            self.core.poll(self.now);
            let conns: Vec<ConnId> = self.sockets.keys().copied().collect();
            for conn in conns {
                let Some(s) = self.sockets.get_mut(&conn) else {
                    continue;
                };
                match s.keepalive.poll(self.now) {
                    Some(KeepaliveAction::Ping) => {
                        let ping = message::ws_ping(&self.packer).unwrap();
                        self.send_to_client(conn, &ping);
                    }
                    Some(KeepaliveAction::Close) => self.server_closes(conn, 1000),
                    None => {}
                }
            }
            let now = self.now;
            let due = self.posts.iter().filter(|(_, (_, at))| *at <= now);
            let due: Vec<HttpId> = due.map(|(id, _)| *id).collect();
            for id in due {
                self.answer_post(id, None); // `lp_timeout_ms` passed: `[:chsk/timeout nil]`
            }
            self.pump();
        }
        self.now = t;
        self.pump();
    }

    fn advance(&mut self, ms: u64) {
        self.advance_to(self.now + ms);
    }

    // ---- client -> server ----------------------------------------------------------------

    fn client_io(&mut self, io: Io) {
        let now = self.now;
        match io {
            Io::WsOpen { conn, url, .. } => {
                let cid = ClientId::new(query_param(&url, "client-id").unwrap()).unwrap();
                if self.server_down || self.refuse_ws {
                    let failure = WsFailure::new("connection refused");
                    self.client.handle_ws_connect_failed(conn, failure, now);
                    return;
                }
                self.client.handle_ws_open(conn, now);
                let id = self.core.handle_ws_open(&Pair::uid(), &cid, conn, (), now);
                let keepalive =
                    Keepalive::new(now, Some(SERVER_KALIVE_MS), Some(SERVER_PING_TIMEOUT_MS));
                let id = id.unwrap();
                self.sockets.insert(conn, ServerWs { id, cid, keepalive });
                let hd = Value::from("welcome");
                let handshake =
                    message::handshake(&Pair::uid(), hd, None, &self.packer, self.max());
                self.send_to_client(conn, &handshake.unwrap());
            }
            Io::WsSend { conn, frame } => {
                if self.drop_client_frames || !self.sockets.contains_key(&conn) {
                    return;
                }
                let bytes = frame.as_bytes();
                self.trace
                    .push((now, format!("c>s {}", String::from_utf8_lossy(bytes))));
                self.sockets
                    .get_mut(&conn)
                    .unwrap()
                    .keepalive
                    .handle_activity();
                let limits = &self.core.config().limits.message;
                let inbound = message::ws_message(&self.packer, bytes, frame.is_binary(), limits);
                if let Some(answer) = inbound.answer {
                    let packed = message::pack(answer, &self.packer, self.max()).unwrap();
                    self.send_to_client(conn, &packed);
                }
                let reply_to = inbound.reply_to.map(|cb| ReplyTo::Ws(conn, cb));
                self.inbox.extend(inbound.event.map(|e| (now, e, reply_to)));
            }
            Io::WsClose { conn, code, reason } => {
                if let Some(s) = self.sockets.remove(&conn) {
                    self.core.handle_ws_closed(&Pair::uid(), &s.cid, s.id, now);
                }
                let close = WsClosed {
                    code,
                    reason,
                    clean: true,
                };
                self.client.handle_ws_closed(conn, close, now);
            }
            Io::Http { id, request } if request.method == HttpMethod::Get => {
                let url = &request.url;
                let cid = ClientId::new(query_param(url, "client-id").unwrap()).unwrap();
                self.trace
                    .push((now, format!("GET {}", url.split_once('?').unwrap().1)));
                if self.server_down {
                    let refused = HttpFailure::Connect("connection refused".into());
                    self.client.handle_http_failure(id, refused, now);
                    return;
                }
                let uid = Pair::uid();
                if query_param(url, "handshake?").is_some() || !self.core.ajax_knows(&uid, &cid) {
                    self.core
                        .handle_ajax_handshake(&uid, &cid, (), now)
                        .unwrap();
                    let hd = Value::from("welcome");
                    let handshake = message::handshake(&uid, hd, None, &self.packer, self.max());
                    self.respond(id, 200, &handshake.unwrap().bytes);
                } else {
                    let conn = self.core.handle_ajax_poll(&uid, &cid, id, (), now).unwrap();
                    self.polls.insert(id, (cid, conn));
                }
            }
            Io::Http { id, request } => {
                let form = String::from_utf8(request.body.unwrap()).unwrap();
                let cid = ClientId::new(query_param(&form, "client-id").unwrap()).unwrap();
                let ppstr = query_param(&form, "ppstr").unwrap();
                self.trace.push((now, format!("POST {ppstr}")));
                let limits = &self.core.config().limits.message;
                let inbound = message::ajax_post(&self.packer, ppstr.as_bytes(), limits).unwrap();
                let reply_to = inbound.reply_to.as_ref().map(|_| ReplyTo::Ajax(id));
                self.inbox.extend(inbound.event.map(|e| (now, e, reply_to)));
                if let Some(answer) = inbound.answer {
                    let packed = message::pack(answer, &self.packer, self.max()).unwrap();
                    self.respond(id, 200, &packed.bytes);
                } else {
                    let limit = self.core.config().limits.max_pending_replies_per_client;
                    assert!(self.replies_owed.acquire(&cid, limit), "429");
                    let deadline = now + self.core.config().lp_timeout_ms;
                    self.posts.insert(id, (cid, deadline));
                }
            }
            Io::HttpAbort { id } => {
                if let Some((cid, conn)) = self.polls.remove(&id) {
                    self.core.handle_poll_ended(&Pair::uid(), &cid, conn, now);
                }
                if let Some((cid, _)) = self.posts.remove(&id) {
                    self.replies_owed.release(&cid);
                }
            }
            other => panic!("unexpected client action {other:?}"),
        }
    }

    // ---- server -> client ----------------------------------------------------------------

    fn server_action(&mut self, action: Action<ConnId, HttpId>) {
        let now = self.now;
        match action {
            Action::WsDeliver { conn, batch, .. } => {
                let packed = batch.packed(&self.packer, self.max()).unwrap();
                if let Some(s) = self.sockets.get_mut(&conn) {
                    s.keepalive.handle_activity(); // a delivered push counts as activity
                }
                self.send_to_client(conn, &packed);
            }
            Action::WsClose { conn, .. } => self.server_closes(conn, 1000),
            Action::AjaxAnswer {
                uid,
                client_id,
                conn,
                responder,
                answer,
            } => {
                if self.polls.remove(&responder).is_none() {
                    let cid = &client_id;
                    self.core
                        .handle_poll_undeliverable(&uid, cid, conn, answer, now);
                    return;
                }
                let (status, body) = match answer {
                    PollAnswer::Batch(b) => (200, b.packed(&self.packer, self.max()).unwrap()),
                    PollAnswer::Numbered(b, n) => (
                        200,
                        b.packed_numbered(&self.packer, self.max(), Some(n))
                            .unwrap(),
                    ),
                    PollAnswer::Timeout => {
                        let timeout = message::ajax_reply(None);
                        (
                            200,
                            message::pack(timeout, &self.packer, self.max()).unwrap(),
                        )
                    }
                    PollAnswer::Closed => (410, PackedBytes::default()),
                };
                self.respond(responder, status, &body.bytes);
            }
            // Mailbox mode (a cluster backplane) is not used here.
            Action::AjaxWake { .. } => {}
        }
    }

    fn send_to_client(&mut self, conn: ConnId, frame: &PackedBytes) {
        if self.drop_server_frames || !self.sockets.contains_key(&conn) {
            return;
        }
        let text = String::from_utf8_lossy(&frame.bytes);
        self.trace.push((self.now, format!("s>c {text}")));
        self.client.handle_ws_message(conn, &frame.bytes, self.now);
    }

    fn respond(&mut self, id: HttpId, status: u16, body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        self.trace.push((self.now, format!("{status} {text}")));
        self.client.handle_http_response(id, status, body, self.now);
    }

    /// The server ends a WebSocket: a close frame with `code` (1006: the connection just drops).
    fn server_closes(&mut self, conn: ConnId, code: u16) {
        let Some(s) = self.sockets.remove(&conn) else {
            return;
        };
        self.trace.push((self.now, format!("s>c close {code}")));
        self.core
            .handle_ws_closed(&Pair::uid(), &s.cid, s.id, self.now);
        let close = WsClosed {
            code,
            reason: String::new(),
            clean: code == 1000,
        };
        self.client.handle_ws_closed(conn, close, self.now);
    }

    /// The connection drops (server restart, network): every WebSocket ends with 1006 and every
    /// held poll fails.
    fn drop_connections(&mut self) {
        let conns: Vec<ConnId> = self.sockets.keys().copied().collect();
        for conn in conns {
            self.server_closes(conn, 1006);
        }
        for (id, (cid, conn)) in std::mem::take(&mut self.polls) {
            self.core
                .handle_poll_ended(&Pair::uid(), &cid, conn, self.now);
            let reset = HttpFailure::Network("connection reset".into());
            self.client.handle_http_failure(id, reset, self.now);
        }
        self.pump();
    }

    fn answer_post(&mut self, id: HttpId, reply: Option<Value>) {
        let Some((cid, _)) = self.posts.remove(&id) else {
            return;
        };
        self.replies_owed.release(&cid);
        let packed = message::pack(message::ajax_reply(reply), &self.packer, self.max()).unwrap();
        self.respond(id, 200, &packed.bytes);
    }

    // ---- the apps ------------------------------------------------------------------------

    /// The server app answers an event it received.
    fn reply(&mut self, to: &ReplyTo, value: Value) {
        match to {
            ReplyTo::Ws(conn, cb) => {
                let env = message::ws_reply(value, cb.clone());
                let packed = message::pack(env, &self.packer, self.max()).unwrap();
                self.send_to_client(*conn, &packed);
            }
            ReplyTo::Ajax(id) => self.answer_post(*id, Some(value)),
        }
        self.pump();
    }

    /// The server app pushes `[:app/push n]` to the uid (`Server::send`).
    fn push(&mut self, n: i64, flush: bool) {
        let event = Event::new(EventId::from_static("app/push"), Value::Int(n));
        let limits = &self.core.config().limits.message;
        let Push::Event { estimate } = message::push(&event, limits).unwrap() else {
            unreachable!()
        };
        self.core
            .send(&Pair::uid(), &Arc::new(event), estimate, flush, self.now);
        self.pump();
    }

    /// The client app sends a request.
    fn request(&mut self, n: i64, timeout_ms: u64) -> RequestId {
        let event = Event::new(EventId::from_static("app/ask"), Value::Int(n));
        let id = self.client.request(event, timeout_ms, self.now);
        self.pump();
        id
    }

    /// The last event the server app received, with where its reply goes.
    fn last_inbox(&self) -> (u64, Event, Option<ReplyTo>) {
        self.inbox.last().cloned().unwrap()
    }

    /// `(time, n)` of every `[:app/push n]` the client app received.
    fn pushes(&self) -> Vec<(u64, i64)> {
        let pushes = self.seen.iter().filter_map(|(t, o)| match o {
            Output::Event(ClientEvent::Push(e)) => Some((*t, e.data().as_i64().unwrap())),
            _ => None,
        });
        pushes.collect()
    }

    fn handshakes(&self) -> Vec<(u64, Handshake)> {
        let hs = self.seen.iter().filter_map(|(t, o)| match o {
            Output::Event(ClientEvent::Handshake(h)) => Some((*t, h.clone())),
            _ => None,
        });
        hs.collect()
    }

    fn reply_of(&self, id: RequestId) -> Option<(u64, Result<Value, RequestError>)> {
        self.seen.iter().find_map(|(t, o)| match o {
            Output::Reply { id: i, result } if *i == id => Some((*t, result.clone())),
            _ => None,
        })
    }

    /// Times of the traced messages that contain `text`.
    fn traced(&self, text: &str) -> Vec<u64> {
        let hits = self.trace.iter().filter(|(_, m)| m.contains(text));
        hits.map(|(t, _)| *t).collect()
    }

    fn uidport_events(&self) -> Vec<(u64, &'static str)> {
        let evs = self.core_events.iter().filter_map(|(t, e)| match e {
            CoreEvent::UidportOpen { .. } => Some((*t, "open")),
            CoreEvent::UidportClose { .. } => Some((*t, "close")),
            _ => None,
        });
        evs.collect()
    }
}

/// The value of `key` in a URL's query or a form body, percent-decoded.
fn query_param(text: &str, key: &str) -> Option<String> {
    let query = text.split_once('?').map_or(text, |(_, q)| q);
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: String = bytes.by_ref().take(2).map(char::from).collect();
            out.push(u8::from_str_radix(&hex, 16).unwrap());
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).unwrap()
}

fn welcome(first: bool) -> Handshake {
    Handshake {
        uid: Pair::uid(),
        data: Value::from("welcome"),
        first,
    }
}

fn times<T>(v: &[(u64, T)]) -> Vec<u64> {
    v.iter().map(|(t, _)| *t).collect()
}

/// A backoff with an injected random number: full jitter (base 1 s, cap 30 s) at 0.25, so
/// attempt 2 waits 1 000 ms and attempt 3 2 000 ms (attempt 1 is immediate).
fn quarter_jitter(cfg: &mut ClientConfig) {
    let curve = Backoff::FullJitter {
        base_ms: 1_000,
        cap_ms: 30_000,
    };
    cfg.backoff = Backoff::Custom(Arc::new(move |n, _rand| curve.delay_ms(n, 0.25)));
}

// ---- 1. connect + handshake ------------------------------------------------------------------

#[test]
fn ws_connect_and_handshake() {
    let p = Pair::connected(Kind::Ws, |_| {});
    let s = p.client.state();
    assert!(s.open && s.ever_opened);
    assert_eq!(s.kind, Kind::Ws);
    assert_eq!(s.uid, Some(Pair::uid()));
    assert_eq!(s.handshake_data, Some(Value::from("welcome")));
    assert_eq!(p.client.transport(), Some(Transport::Ws));
    assert_eq!(p.handshakes(), vec![(0, welcome(true))]);
    let frame = "s>c [[:chsk/handshake [\"alice\" nil \"welcome\"]] nil]";
    assert_eq!(p.trace, vec![(0, frame.to_owned())]);
    assert_eq!(p.uidport_events(), vec![(0, "open")]);
    let connected: Vec<_> = p
        .core
        .connected()
        .map(|(u, ws, ajax)| (u.clone(), ws, ajax))
        .collect();
    assert_eq!(connected, vec![(Pair::uid(), true, false)]);
}

#[test]
fn ajax_connect_and_handshake_then_long_poll() {
    let mut p = Pair::connected(Kind::Ajax, |_| {});
    let s = p.client.state();
    assert_eq!((s.open, s.kind), (true, Kind::Ajax));
    assert_eq!(s.uid, Some(Pair::uid()));
    assert_eq!(s.handshake_data, Some(Value::from("welcome")));
    assert_eq!(p.client.transport(), Some(Transport::Ajax));
    assert_eq!(p.handshakes(), vec![(0, welcome(true))]);
    // The handshake GET, then the long-poll the server holds; only the poll connects the uid
    // (spec 7.4, vector 42).
    assert_eq!(p.traced("GET"), vec![0, 0]);
    assert_eq!(p.traced("handshake%3F=1"), vec![0]);
    assert_eq!(p.polls.len(), 1);
    assert_eq!(p.uidport_events(), vec![(0, "open")]);
    // Nothing to deliver: the poll is answered `[:chsk/timeout nil]` after lp_timeout_ms (20 s)
    // and the client polls again at once.
    p.advance_to(19_999);
    assert_eq!(p.traced("GET"), vec![0, 0]);
    p.advance_to(20_000);
    assert_eq!(p.traced("200 [:chsk/timeout nil]"), vec![20_000]);
    assert_eq!(p.traced("GET"), vec![0, 0, 20_000]);
    assert!(p.client.is_open());
}

// ---- 2. request / reply ----------------------------------------------------------------------

#[test]
fn ws_request_reply_and_timeout() {
    let mut p = Pair::connected(Kind::Ws, |_| {});
    p.advance_to(100);
    let id = p.request(1, 5_000);
    let (t, ev, to) = p.last_inbox();
    assert_eq!(
        (t, ev.id().as_str(), ev.data()),
        (100, "app/ask", &Value::Int(1))
    );
    let to = to.expect("the client waits for a reply");
    p.advance(40); // the app takes 40 ms
    p.reply(&to, Value::Int(2));
    assert_eq!(p.reply_of(id), Some((140, Ok(Value::Int(2)))));

    // Nobody answers: `Timeout` at exactly the request's timeout, and a late reply is dropped.
    let id = p.request(3, 3_000);
    let to = p.last_inbox().2.unwrap();
    p.advance_to(3_139);
    assert_eq!(p.reply_of(id), None);
    p.advance_to(3_140);
    assert_eq!(p.reply_of(id), Some((3_140, Err(RequestError::Timeout))));
    p.reply(&to, Value::Int(4));
    let replies = p
        .seen
        .iter()
        .filter(|(_, o)| matches!(o, Output::Reply { .. }));
    assert_eq!(replies.count(), 2);
    assert!(p.client.is_open());
}

#[test]
fn ajax_request_reply_and_timeouts() {
    let mut p = Pair::connected(Kind::Ajax, |_| {});
    let cid = ClientId::new("cid-1").unwrap();
    p.advance_to(100);
    let id = p.request(1, 5_000);
    let (t, ev, to) = p.last_inbox();
    assert_eq!((t, ev.data()), (100, &Value::Int(1)));
    let to = to.expect("the client waits for a reply");
    assert!(matches!(to, ReplyTo::Ajax(_)));
    p.advance(40);
    p.reply(&to, Value::Int(2));
    assert_eq!(p.reply_of(id), Some((140, Ok(Value::Int(2)))));

    // An event without a reply is answered `:chsk/dummy-cb-200` at once.
    let ev = Event::new(EventId::from_static("app/tell"), Value::Int(5));
    p.client.send(ev, p.now).unwrap();
    p.pump();
    assert_eq!(p.traced("200 [:chsk/dummy-cb-200 nil]"), vec![140]);

    // The client's timeout comes first: `Timeout`, and the aborted POST is forgotten.
    let id = p.request(3, 3_000);
    assert_eq!(p.replies_owed.pending(&cid), 1);
    p.advance_to(3_140);
    assert_eq!(p.reply_of(id), Some((3_140, Err(RequestError::Timeout))));
    assert_eq!(p.replies_owed.pending(&cid), 0);

    // The server's comes first (lp_timeout_ms, 20 s): it answers `[:chsk/timeout nil]`.
    let id = p.request(4, 60_000);
    p.advance_to(23_139);
    assert_eq!(p.reply_of(id), None);
    p.advance_to(23_140);
    assert_eq!(p.reply_of(id), Some((23_140, Err(RequestError::Timeout))));
    assert!(p.client.is_open());
}

/// A server whose handler failed answers `:chsk/error` (what a Sente client's `cb-error?` takes
/// for an error): the request fails at once with `RequestFailure::HandlerFailed`, on both
/// transports, and the connection stays open.
#[test]
fn a_chsk_error_reply_fails_the_request_on_both_transports() {
    for kind in [Kind::Ws, Kind::Ajax] {
        let mut p = Pair::connected(kind, |_| {});
        p.advance_to(100);
        let id = p.request(1, 5_000);
        let to = p.last_inbox().2.expect("the client waits for a reply");
        p.advance(5);
        p.reply(&to, Value::kw("chsk/error"));
        assert_eq!(
            p.reply_of(id),
            Some((
                105,
                Err(RequestError::Error(
                    sente_proto::client::RequestFailure::HandlerFailed
                ))
            )),
            "{kind:?}"
        );
        assert!(p.client.is_open(), "{kind:?}");
    }
}

// ---- 3. push ---------------------------------------------------------------------------------

#[test]
fn ws_pushes_within_the_window_arrive_as_one_batch_and_flush_sends_at_once() {
    let mut p = Pair::connected(Kind::Ws, |_| {});
    p.advance_to(1_000);
    p.push(1, false);
    p.advance_to(1_010);
    p.push(2, false);
    p.advance_to(1_029);
    p.push(3, false);
    assert!(p.pushes().is_empty());
    p.advance_to(1_030); // send_buf_ms_ws after the first push
    assert_eq!(p.pushes(), vec![(1_030, 1), (1_030, 2), (1_030, 3)]);
    let batch = "s>c [[[:app/push 1] [:app/push 2] [:app/push 3]] nil]";
    assert!(p.trace.contains(&(1_030, batch.to_owned())));
    assert_eq!(p.traced(":app/push"), vec![1_030]);

    p.advance_to(2_000);
    p.push(4, true);
    assert_eq!(p.pushes()[3..], [(2_000, 4)]);
    assert_eq!(p.traced(":app/push"), vec![1_030, 2_000]);
}

#[test]
fn ajax_pushes_within_the_window_answer_the_poll_once_and_flush_sends_at_once() {
    let mut p = Pair::connected(Kind::Ajax, |_| {});
    p.advance_to(1_000);
    p.push(1, false);
    p.advance_to(1_050);
    p.push(2, false);
    p.advance_to(1_099);
    assert!(p.pushes().is_empty());
    p.advance_to(1_100); // send_buf_ms_ajax after the first push
    assert_eq!(p.pushes(), vec![(1_100, 1), (1_100, 2)]);
    let batch = "200 [[[:app/push 1] [:app/push 2]] nil]";
    assert!(p.trace.contains(&(1_100, batch.to_owned())));
    assert_eq!(
        p.traced("GET"),
        vec![0, 0, 1_100],
        "the client polls again at once"
    );

    p.advance_to(2_000);
    p.push(3, true);
    assert_eq!(p.pushes()[2..], [(2_000, 3)]);
    assert_eq!(p.traced(":app/push"), vec![1_100, 2_000]);
}

// ---- 4. keepalive ----------------------------------------------------------------------------

const SERVER_PING: &str = "s>c [:chsk/ws-ping nil]";
const CLIENT_PONG: &str = "c>s [[:chsk/ws-pong] nil]";
const CLIENT_PING: &str = "c>s [[:chsk/ws-ping] \"";
const SERVER_PONG: &str = "s>c [\"pong\" \"";

/// The client's own keepalive off, so only the server's runs.
fn no_client_kalive(cfg: &mut ClientConfig) {
    cfg.ws_kalive_ms = None;
}

#[test]
fn server_pings_an_idle_client_and_the_client_answers() {
    let mut p = Pair::connected(Kind::Ws, no_client_kalive);
    p.advance_to(60_000);
    // Checks every 12.5 s: 12 500 sees the open; 25 000 sees nothing -> ping; 35 000 sees the
    // pong; 47 500 sees nothing -> ping; 57 500 sees the pong.
    assert_eq!(p.traced(SERVER_PING), vec![25_000, 47_500]);
    assert_eq!(p.traced(CLIENT_PONG), vec![25_000, 47_500]);
    let pongs = p
        .inbox
        .iter()
        .filter(|(_, e, _)| e.id().as_str() == "chsk/ws-pong");
    assert_eq!(
        pongs.map(|(t, _, to)| (*t, to.clone())).collect::<Vec<_>>(),
        vec![(25_000, None), (47_500, None)]
    );
    let pings = p
        .seen
        .iter()
        .filter(|(_, o)| matches!(o, Output::Event(ClientEvent::WsPing)));
    assert_eq!(pings.count(), 2);
    assert!(p.client.is_open());
    assert_eq!(times(&p.handshakes()), vec![0]);
}

#[test]
fn server_closes_a_silent_client_after_the_ping_timeout() {
    let mut p = Pair::connected(Kind::Ws, no_client_kalive);
    p.advance_to(1);
    p.drop_client_frames = true; // the client goes silent
    p.advance_to(34_999);
    assert_eq!(p.traced(SERVER_PING), vec![25_000]);
    assert!(p.client.is_open());
    p.advance_to(35_000); // ws_ping_timeout_ms (10 s) after the unanswered ping
    assert_eq!(p.traced("s>c close 1000"), vec![35_000]);
    let last_close = p.client.state().last_close.clone().unwrap();
    assert_eq!(
        (last_close.udt, last_close.reason),
        (T0_UNIX + 35_000, CloseReason::Clean)
    );
    // Every close triggers a reconnect, the first one at once; within the grace period the
    // server announces nothing.
    assert_eq!(
        p.handshakes(),
        vec![(0, welcome(true)), (35_000, welcome(false))]
    );
    assert!(p.client.is_open());
    assert_eq!(p.uidport_events(), vec![(0, "open")]);
}

#[test]
fn delivered_pushes_count_as_activity_for_the_server() {
    let mut p = Pair::connected(Kind::Ws, no_client_kalive);
    for i in 1..=6 {
        p.advance_to(i * 10_000);
        p.push(i as i64, true);
    }
    p.advance_to(60_000);
    assert_eq!(p.pushes().len(), 6);
    assert_eq!(p.traced(SERVER_PING), Vec::<u64>::new());
}

#[test]
fn client_pings_an_idle_server_which_then_never_pings() {
    let mut p = Pair::connected(Kind::Ws, |_| {}); // client ws_kalive_ms 20 s: a check every 10 s
    p.advance_to(60_000);
    let every_10s: Vec<u64> = (1..=6).map(|i| i * 10_000).collect();
    assert_eq!(p.traced(CLIENT_PING), every_10s);
    assert_eq!(p.traced(SERVER_PONG), every_10s);
    let pings = p
        .inbox
        .iter()
        .filter(|(_, e, _)| e.id().as_str() == "chsk/ws-ping");
    assert_eq!(
        pings.count(),
        6,
        "the app sees [:chsk/ws-ping] too (vector 36)"
    );
    assert_eq!(
        p.traced(SERVER_PING),
        Vec::<u64>::new(),
        "a client ping is activity"
    );
    assert!(p.client.is_open());
}

#[test]
fn client_reconnects_when_its_ping_is_not_answered() {
    let mut p = Pair::connected(Kind::Ws, |_| {});
    p.advance_to(1);
    p.drop_server_frames = true; // the server goes silent
    p.advance_to(14_999);
    assert_eq!(p.traced(CLIENT_PING), vec![10_000]);
    assert!(p.client.is_open());
    p.drop_server_frames = false;
    p.advance_to(15_000); // ws_ping_timeout_ms (5 s) after the ping
    let last_close = p.client.state().last_close.clone().unwrap();
    assert_eq!(
        (last_close.udt, last_close.reason),
        (T0_UNIX + 15_000, CloseReason::WsPingTimeout)
    );
    assert_eq!(
        p.handshakes(),
        vec![(0, welcome(true)), (15_000, welcome(false))]
    );
    assert!(p.client.is_open());
    assert_eq!(p.sockets.len(), 1, "the client closed the old socket");
    assert_eq!(p.uidport_events(), vec![(0, "open")]);
}

// ---- 5. close --------------------------------------------------------------------------------

#[test]
fn ws_close_uid_flushes_closes_and_the_client_comes_back() {
    let mut p = Pair::connected(Kind::Ws, |_| {});
    p.advance_to(990);
    p.push(1, false);
    p.advance_to(1_000);
    p.core.close_uid(&Pair::uid(), p.now);
    p.pump();
    // What was buffered goes out first, then the close; the client reconnects at once (the
    // first retry is immediate, vector 39) and the server announces nothing (grace period).
    assert_eq!(p.pushes(), vec![(1_000, 1)]);
    let push_then_close: Vec<&str> = p.trace[1..3].iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        push_then_close,
        ["s>c [[[:app/push 1]] nil]", "s>c close 1000"]
    );
    let s = p.client.state();
    let last_close = s.last_close.clone().unwrap();
    assert_eq!(
        (last_close.udt, last_close.reason),
        (T0_UNIX + 1_000, CloseReason::Clean)
    );
    assert_eq!(s.udt_next_reconnect, None);
    assert_eq!(
        p.handshakes(),
        vec![(0, welcome(true)), (1_000, welcome(false))]
    );

    // The new connection works both ways.
    let id = p.request(2, 5_000);
    let to = p.last_inbox().2.unwrap();
    p.reply(&to, Value::Int(3));
    assert_eq!(p.reply_of(id), Some((1_000, Ok(Value::Int(3)))));
    p.push(4, true);
    assert_eq!(p.pushes()[1..], [(1_000, 4)]);
    p.advance_to(10_000);
    assert_eq!(p.uidport_events(), vec![(0, "open")]);
}

#[test]
fn ajax_close_uid_ends_the_poll_and_the_client_handshakes_again() {
    let mut p = Pair::connected(Kind::Ajax, |_| {});
    p.advance_to(1_000);
    p.core.close_uid(&Pair::uid(), p.now);
    p.pump();
    assert_eq!(p.traced("410"), vec![1_000]);
    let last_close = p.client.state().last_close.clone().unwrap();
    assert_eq!(
        (last_close.udt, last_close.reason),
        (T0_UNIX + 1_000, CloseReason::Unexpected)
    );
    assert_eq!(p.traced("handshake%3F=1"), vec![0, 1_000]);
    assert_eq!(
        p.handshakes(),
        vec![(0, welcome(true)), (1_000, welcome(false))]
    );
    assert!(p.client.is_open());
    p.push(1, true);
    assert_eq!(p.pushes(), vec![(1_000, 1)]);
    p.advance_to(10_000);
    assert_eq!(p.uidport_events(), vec![(0, "open")]);
}

// ---- 6. reconnect ----------------------------------------------------------------------------

#[test]
fn ws_reconnect_after_backoff_receives_the_pushes_of_the_grace_period() {
    let mut p = Pair::connected(Kind::Ws, quarter_jitter);
    p.advance_to(1_000);
    let lost = p.request(0, 5_000);
    p.server_down = true;
    p.drop_connections();
    let lost = p.reply_of(lost);
    assert_eq!(
        lost,
        Some((1_000, Err(RequestFailure::ConnectionLost.into())))
    );
    // Attempt 1 at once (refused), attempt 2 after 1 000 ms.
    let s = p.client.state();
    assert!(!s.open);
    let last_close = s.last_close.clone().unwrap();
    assert_eq!(
        (last_close.udt, last_close.reason),
        (T0_UNIX + 1_000, CloseReason::Unexpected)
    );
    assert_eq!(s.last_ws_close.as_ref().map(|c| c.code), Some(1006));
    assert_eq!(s.udt_next_reconnect, Some(T0_UNIX + 2_000));
    p.advance_to(1_500);
    p.push(1, false);
    p.push(2, false);
    p.server_down = false;
    p.advance_to(1_999);
    assert!(p.pushes().is_empty() && !p.client.is_open());
    p.advance_to(2_000);
    assert_eq!(
        p.handshakes(),
        vec![(0, welcome(true)), (2_000, welcome(false))]
    );
    assert_eq!(p.pushes(), vec![(2_000, 1), (2_000, 2)]);
    p.advance_to(10_000);
    assert_eq!(p.uidport_events(), vec![(0, "open")]);
}

#[test]
fn ws_reconnect_after_the_grace_period_is_a_new_arrival() {
    let mut p = Pair::connected(Kind::Ws, quarter_jitter);
    p.advance_to(1_000);
    p.server_down = true;
    p.drop_connections();
    p.advance_to(1_500);
    p.push(1, false);
    p.advance_to(2_000); // attempt 2, refused: attempt 3 after 2 000 ms
    assert_eq!(p.client.state().udt_next_reconnect, Some(T0_UNIX + 4_000));
    p.server_down = false;
    p.advance_to(4_000);
    // The grace period (2 500 ms) ended at 3 500: the uid left, and the push went with it.
    assert_eq!(
        p.uidport_events(),
        vec![(0, "open"), (3_500, "close"), (4_000, "open")]
    );
    assert_eq!(times(&p.handshakes()), vec![0, 4_000]);
    assert!(p.pushes().is_empty());
}

#[test]
fn ajax_reconnect_after_backoff_receives_the_pushes_of_the_grace_period() {
    let mut p = Pair::connected(Kind::Ajax, quarter_jitter);
    p.advance_to(1_000);
    p.server_down = true;
    p.drop_connections();
    let s = p.client.state();
    assert_eq!(
        s.last_close.as_ref().map(|c| c.reason),
        Some(CloseReason::Unexpected)
    );
    assert_eq!(s.udt_next_reconnect, Some(T0_UNIX + 2_000));
    p.advance_to(1_500);
    p.push(1, false);
    p.server_down = false;
    p.advance_to(2_000);
    assert_eq!(times(&p.handshakes()), vec![0, 2_000]);
    assert_eq!(p.pushes(), vec![(2_000, 1)]);
    p.advance_to(10_000);
    assert_eq!(p.uidport_events(), vec![(0, "open")]);
}

// ---- Auto: the WebSocket fallback and its re-probe -------------------------------------------

#[test]
fn auto_falls_back_to_ajax_and_returns_to_ws_when_it_works_again() {
    let mut p = Pair::new(Kind::Auto, |c| c.ws_reprobe_ms = Some(30_000));
    p.refuse_ws = true; // e.g. a proxy that breaks WebSocket
    p.client.connect(0);
    p.pump();
    assert_eq!(p.client.transport(), Some(Transport::Ajax));
    assert!(p.client.state().last_ws_error.is_some());
    assert_eq!(p.handshakes(), vec![(0, welcome(true))]);
    p.refuse_ws = false;
    p.advance_to(29_999);
    assert_eq!(p.client.transport(), Some(Transport::Ajax));
    p.advance_to(30_000); // the re-probe: its handshake promotes the WebSocket
    assert_eq!(p.client.transport(), Some(Transport::Ws));
    assert_eq!(
        p.handshakes(),
        vec![(0, welcome(true)), (30_000, welcome(false))]
    );
    assert!(p.polls.is_empty(), "the long-poll was aborted");
    p.push(1, true);
    assert_eq!(p.pushes(), vec![(30_000, 1)], "once, over the WebSocket");
    p.advance_to(40_000); // the Ajax entry's grace period (5 s) is over
    let connected: Vec<_> = p
        .core
        .connected()
        .map(|(u, ws, ajax)| (u.clone(), ws, ajax))
        .collect();
    assert_eq!(connected, vec![(Pair::uid(), true, false)]);
    assert_eq!(p.uidport_events(), vec![(0, "open")]);
    assert_eq!(p.pushes().len(), 1);
}

#[test]
fn a_request_queued_during_the_outage_goes_out_after_the_reconnect() {
    let mut p = Pair::connected(Kind::Ws, |c| {
        quarter_jitter(c);
        c.queue = Some(QueueConfig::default());
    });
    p.advance_to(1_000);
    p.server_down = true;
    p.drop_connections();
    p.advance_to(1_500);
    let id = p.request(1, 5_000); // queued: the client is reconnecting
    assert_eq!(p.client.pending_requests(), 1);
    p.server_down = false;
    p.advance_to(2_000);
    let (t, ev, to) = p.last_inbox();
    assert_eq!((t, ev.data()), (2_000, &Value::Int(1)));
    p.reply(&to.unwrap(), Value::Int(2));
    assert_eq!(p.reply_of(id), Some((2_000, Ok(Value::Int(2)))));
}
