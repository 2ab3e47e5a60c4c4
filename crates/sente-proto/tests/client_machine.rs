//! The sans-IO client state machine, stepped in virtual time (no sleeps, no sockets).

use sente_proto::client::{
    Action, Backoff, ChskUrl, ClientConfig, ClientEvent, ClientMachine, CloseReason, ConnId,
    CsrfToken, HttpFailure, HttpId, HttpMethod, HttpRequest, Kind, Output, QueueConfig,
    RequestError, RequestFailure, RequestId, SendError, StateChange, WsClosed, WsFailure,
};
use sente_proto::packer::{PackError, Packed, Packer, UnpackError};
use sente_proto::{ClientId, Envelope, Event, EventId, Limits, Uid, Value, server_msg};
use std::sync::{Arc, Mutex};

/// A packer that round-trips values through a process-wide table, so these tests depend only on
/// the machine, not on a wire format. Text form: `#<index>`.
#[derive(Debug)]
struct TablePacker {
    binary: bool,
}

static TABLE: Mutex<Vec<Value>> = Mutex::new(Vec::new());

impl Packer for TablePacker {
    fn name(&self) -> &'static str {
        if self.binary { "tablebin" } else { "table" }
    }
    fn is_binary(&self) -> bool {
        self.binary
    }
    fn pack(&self, value: &Value) -> Result<Packed, PackError> {
        let mut t = TABLE.lock().unwrap();
        t.push(value.clone());
        let text = format!("#{}", t.len() - 1);
        Ok(if self.binary {
            Packed::Binary(text.into_bytes())
        } else {
            Packed::Text(text)
        })
    }
    fn unpack(&self, input: &[u8], _limits: &Limits) -> Result<Value, UnpackError> {
        let bad = || UnpackError::Malformed {
            packer: "table",
            offset: 0,
            reason: "bad".into(),
        };
        let s = std::str::from_utf8(input).map_err(|_| bad())?;
        let i: usize = s
            .strip_prefix('#')
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        TABLE.lock().unwrap().get(i).cloned().ok_or_else(bad)
    }
}

fn unpack(bytes: &[u8]) -> Envelope {
    Envelope::unpack(&TablePacker { binary: false }, bytes, &Limits::default()).unwrap()
}

fn ev(id: &str, data: impl Into<Value>) -> Event {
    Event::new(EventId::new(id).unwrap(), data)
}

const T0_UNIX: u64 = 1_700_000_000_000;

struct H {
    m: ClientMachine,
    now: u64,
}

fn config(kind: Kind) -> ClientConfig {
    let mut c = ClientConfig::new(
        ChskUrl::parse("http://127.0.0.1:3000/chsk").unwrap(),
        ClientId::new("cid-1").unwrap(),
        Arc::new(TablePacker { binary: false }),
    );
    c.kind = kind;
    c
}

impl H {
    fn new(cfg: ClientConfig) -> Self {
        H {
            m: ClientMachine::new(cfg, 7, 0, T0_UNIX),
            now: 0,
        }
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.m.poll_output()).collect()
    }

    /// Moves virtual time forward to `now + ms`, firing every timer on the way.
    fn advance(&mut self, ms: u64) -> Vec<Output> {
        let target = self.now + ms;
        let mut out = Vec::new();
        while let Some(t) = self.m.poll_timeout() {
            if t > target {
                break;
            }
            self.now = self.now.max(t);
            self.m.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = target;
        out
    }

    fn ws_msg(&mut self, conn: ConnId, env: &Envelope) -> Vec<Output> {
        let bytes = env
            .pack(&TablePacker { binary: false })
            .unwrap()
            .into_bytes();
        self.m.handle_ws_message(conn, &bytes, self.now);
        self.drain()
    }

    fn http_ok(&mut self, id: HttpId, env: &Envelope) -> Vec<Output> {
        let body = env
            .pack(&TablePacker { binary: false })
            .unwrap()
            .into_bytes();
        self.m.handle_http_response(id, 200, &body, self.now);
        self.drain()
    }

    /// connect + open + handshake over WebSocket; returns the connection.
    fn open_ws(&mut self, uid: &str) -> ConnId {
        self.m.connect(self.now);
        let conn = ws_open_of(&self.drain()).0;
        self.m.handle_ws_open(conn, self.now);
        self.ws_msg(conn, &server_msg::handshake(&Uid::from(uid), Value::Nil));
        assert!(self.m.is_open());
        conn
    }

    /// connect + handshake over Ajax; returns the pending long-poll.
    fn open_ajax(&mut self) -> HttpId {
        self.m.connect(self.now);
        let (id, req) = http_of(&self.drain());
        assert!(req.url.contains("handshake%3F=1"));
        let out = self.http_ok(id, &server_msg::handshake(&Uid::Nil, Value::Nil));
        assert!(self.m.is_open());
        http_of(&out).0
    }
}

fn ws_open_of(out: &[Output]) -> (ConnId, String) {
    out.iter()
        .find_map(|o| match o {
            Output::Action(Action::WsOpen { conn, url, .. }) => Some((*conn, url.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no WsOpen in {out:#?}"))
}

fn ws_sends(out: &[Output]) -> Vec<Envelope> {
    out.iter()
        .filter_map(|o| match o {
            Output::Action(Action::WsSend { frame, .. }) => Some(unpack(frame.as_bytes())),
            _ => None,
        })
        .collect()
}

fn http_of(out: &[Output]) -> (HttpId, HttpRequest) {
    http_all(out)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no Http in {out:#?}"))
}

fn http_all(out: &[Output]) -> Vec<(HttpId, HttpRequest)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Action(Action::Http { id, request }) => Some((*id, request.clone())),
            _ => None,
        })
        .collect()
}

fn replies(out: &[Output]) -> Vec<(RequestId, Result<Value, RequestError>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reply { id, result } => Some((*id, result.clone())),
            _ => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<ClientEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn state_changes(out: &[Output]) -> Vec<StateChange> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::State(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn has_action(out: &[Output], f: impl Fn(&Action) -> bool) -> bool {
    out.iter().any(|o| matches!(o, Output::Action(a) if f(a)))
}

fn cb_of(env: &Envelope) -> Value {
    env.cb.clone().expect("cb id")
}

// ------------------------------------------------------------------------------------------------

#[test]
fn ws_url_carries_params_client_id_token_and_packer_in_order() {
    let mut c = config(Kind::Ws);
    c.params = vec![("uid".into(), "u 1".into())];
    c.csrf_token = CsrfToken::Value("a+b/c==".into());
    c.headers = vec![("Authorization".into(), "Bearer x".into())];
    let mut h = H::new(c);
    h.m.connect(0);
    let out = h.drain();
    let Some(Output::Action(Action::WsOpen { url, headers, .. })) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(
        url,
        "ws://127.0.0.1:3000/chsk?uid=u%201&client-id=cid-1&csrf-token=a%2Bb%2Fc%3D%3D&packer=table&ext=idem%2Clarge&resume="
    );
    assert_eq!(
        headers,
        &vec![("Authorization".to_owned(), "Bearer x".to_owned())]
    );
}

#[test]
fn csrf_token_fn_is_read_on_every_connect() {
    let n = Arc::new(Mutex::new(0));
    let n2 = n.clone();
    let mut c = config(Kind::Ws);
    c.csrf_token = CsrfToken::Fn(Arc::new(move || {
        let mut n = n2.lock().unwrap();
        *n += 1;
        Some(format!("tok{n}"))
    }));
    let mut h = H::new(c);
    h.m.connect(0);
    assert!(ws_open_of(&h.drain()).1.contains("csrf-token=tok1"));
    h.m.reconnect(0);
    assert!(ws_open_of(&h.drain()).1.contains("csrf-token=tok2"));
}

#[test]
fn ws_handshake_opens_then_emits_state_and_handshake_events() {
    let mut h = H::new(config(Kind::Ws));
    assert_eq!(h.m.state().kind, Kind::Ws);
    h.m.connect(0);
    let conn = ws_open_of(&h.drain()).0;
    h.m.handle_ws_open(conn, 5);
    assert!(
        h.drain().is_empty(),
        "open before the handshake changes nothing"
    );
    assert!(!h.m.is_open());
    let mut hd = sente_proto::Map::new();
    hd.insert(Value::kw("hello"), Value::from("world"));
    let out = h.ws_msg(
        conn,
        &server_msg::handshake(&Uid::from("u1"), Value::Map(hd.clone())),
    );
    let evs = events(&out);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    let ClientEvent::State(ch) = &evs[0] else {
        panic!()
    };
    assert!(ch.opened() && ch.first_open() && ch.open_changed());
    assert_eq!(ch.new.uid, Some(Uid::from("u1")));
    assert_eq!(ch.new.handshake_data, Some(Value::Map(hd.clone())));
    assert!(ch.new.ever_opened);
    let ClientEvent::Handshake(hs) = &evs[1] else {
        panic!()
    };
    assert!(hs.first);
    assert_eq!(
        hs.to_event().to_value(),
        Value::Vector(vec![
            Value::kw("chsk/handshake"),
            Value::Vector(vec![
                Value::from("u1"),
                Value::Nil,
                Value::Map(hd),
                Value::Bool(true)
            ])
        ])
    );
}

#[test]
fn request_reply_and_fire_and_forget_over_ws() {
    let mut h = H::new(config(Kind::Ws));
    let conn = h.open_ws("u1");
    h.m.send(ev("demo/hello", 1), h.now).unwrap();
    let id = h.m.request(ev("demo/echo", "hi"), 5000, h.now);
    let sent = ws_sends(&h.drain());
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], Envelope::new(ev("demo/hello", 1).into_value()));
    let cb = cb_of(&sent[1]);
    let cb_str = cb.as_str().unwrap();
    assert_eq!(cb_str.len(), 6);
    assert!(cb_str.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(sent[1].payload, ev("demo/echo", "hi").into_value());
    let out = h.ws_msg(conn, &server_msg::ws_reply(Value::from("hi"), cb.clone()));
    assert_eq!(replies(&out), vec![(id, Ok(Value::from("hi")))]);
    // A duplicate reply (Sente's WS reply-fn has no once-guard) is ignored.
    let out = h.ws_msg(conn, &server_msg::ws_reply(Value::from("again"), cb));
    assert!(replies(&out).is_empty());
    assert_eq!(h.m.pending_requests(), 0);
}

#[test]
fn request_timeout_in_virtual_time_and_late_reply_dropped() {
    let mut h = H::new(config(Kind::Ws));
    let conn = h.open_ws("u1");
    let id = h.m.request(ev("demo/no-reply", Value::Nil), 1500, h.now);
    let cb = cb_of(&ws_sends(&h.drain())[0]);
    assert!(replies(&h.advance(1499)).is_empty());
    assert_eq!(
        replies(&h.advance(1)),
        vec![(id, Err(RequestError::Timeout))]
    );
    let out = h.ws_msg(conn, &server_msg::ws_reply(Value::from("late"), cb));
    assert!(replies(&out).is_empty());
    assert!(
        h.m.is_open(),
        "a request timeout does not close the connection"
    );
}

#[test]
fn closed_send_and_request_fail_at_once() {
    let mut h = H::new(config(Kind::Ws));
    assert_eq!(h.m.send(ev("demo/x", 1), 0), Err(SendError::Closed));
    let id = h.m.request(ev("demo/x", 1), 1000, 0);
    assert_eq!(replies(&h.drain()), vec![(id, Err(RequestError::Closed))]);
    // Connecting but not yet open: still closed (no queue by default).
    h.m.connect(0);
    h.drain();
    let id = h.m.request(ev("demo/x", 1), 1000, 0);
    assert_eq!(replies(&h.drain()), vec![(id, Err(RequestError::Closed))]);
}

#[test]
fn oversized_send_and_request_fail_with_the_pack_error() {
    let mut cfg = config(Kind::Ws);
    cfg.limits.max_message_bytes = 1;
    let mut h = H::new(cfg);
    h.open_ws("u1");
    h.drain();
    let too_large = |e: &PackError| matches!(e, PackError::TooLarge { limit: 1, .. });
    assert!(matches!(h.m.send(ev("demo/x", 1), h.now), Err(SendError::Pack(e)) if too_large(&e)));
    let id = h.m.request(ev("demo/x", 1), 1000, h.now);
    assert!(matches!(&replies(&h.drain())[..],
        [(rid, Err(RequestError::Error(RequestFailure::Pack(e))))] if *rid == id && too_large(e)));
    assert!(
        h.m.is_open(),
        "a refused send does not close the connection"
    );
}

#[test]
fn push_batch_and_server_ping() {
    let mut h = H::new(config(Kind::Ws));
    let conn = h.open_ws("u1");
    let batch = server_msg::push_batch([ev("demo/a", 1), ev("demo/b", 2), ev("demo/a", 3)]);
    let out = h.ws_msg(conn, &batch);
    assert_eq!(
        events(&out),
        vec![
            ClientEvent::Push(ev("demo/a", 1)),
            ClientEvent::Push(ev("demo/b", 2)),
            ClientEvent::Push(ev("demo/a", 3)),
        ]
    );
    let out = h.ws_msg(conn, &server_msg::ws_ping());
    assert_eq!(ws_sends(&out), vec![sente_proto::client_msg::ws_pong()]);
    assert_eq!(events(&out), vec![ClientEvent::WsPing]);
    // A batch with a chsk/* event is invalid (spec 12.6 #49): nothing delivered.
    let bad = Envelope::new(Value::Vector(vec![Value::Vector(vec![Value::kw(
        "chsk/foo",
    )])]));
    assert!(events(&h.ws_msg(conn, &bad)).is_empty());
}

#[test]
fn keepalive_pings_when_idle_and_reconnects_on_ping_timeout() {
    let mut h = H::new(config(Kind::Ws));
    let conn = h.open_ws("u1");
    // Activity within each 10 s tick: no ping.
    for _ in 0..3 {
        assert!(ws_sends(&h.advance(6000)).is_empty());
        h.ws_msg(conn, &server_msg::push_batch([ev("demo/a", 1)]));
    }
    // Idle: the tick at 30 s (12 s after the last activity) pings with a cb id.
    let out = h.advance(12_000);
    let pings = ws_sends(&out);
    assert_eq!(pings.len(), 1, "{out:#?}");
    assert_eq!(
        pings[0].payload,
        Value::Vector(vec![Value::kw("chsk/ws-ping")])
    );
    let cb = cb_of(&pings[0]);
    // A pong keeps the connection.
    h.ws_msg(conn, &server_msg::pong(cb));
    assert!(h.m.is_open());
    // Idle again, and this time no pong within 5 s.
    let out = h.advance(10_000);
    assert_eq!(ws_sends(&out).len(), 1);
    let out = h.advance(4_999);
    assert!(state_changes(&out).is_empty());
    let out = h.advance(1);
    assert!(has_action(
        &out,
        |a| matches!(a, Action::WsClose { conn: c, .. } if *c == conn)
    ));
    let ch = &state_changes(&out)[0];
    assert!(ch.closed());
    assert_eq!(
        ch.new.last_close.as_ref().unwrap().reason,
        CloseReason::WsPingTimeout
    );
    // First retry is immediate.
    let (conn2, _) = ws_open_of(&out);
    assert_ne!(conn2, conn);
    // Old connection's late events are ignored.
    h.m.handle_ws_closed(
        conn,
        WsClosed {
            code: 1000,
            reason: String::new(),
            clean: true,
        },
        h.now,
    );
    assert!(state_changes(&h.drain()).is_empty());
}

#[test]
fn server_close_reconnects_immediately_and_handshake_is_not_first() {
    let mut h = H::new(config(Kind::Ws));
    let conn = h.open_ws("u1");
    h.m.handle_ws_closed(
        conn,
        WsClosed {
            code: 1000,
            reason: String::new(),
            clean: true,
        },
        100,
    );
    let out = h.drain();
    let chs = state_changes(&out);
    // last-ws-close recorded, then the close transition (Sente emits them in one change; two
    // changes carry the same information).
    let last = chs.last().unwrap();
    assert!(!last.new.open);
    assert_eq!(
        last.new.last_close.as_ref().unwrap().reason,
        CloseReason::Clean
    );
    assert_eq!(last.new.last_close.as_ref().unwrap().udt, T0_UNIX + 100);
    let ws = last.new.last_ws_close.as_ref().unwrap();
    assert!(ws.clean && ws.code == 1000);
    let (conn2, _) = ws_open_of(&out);
    let out = h.ws_msg(conn2, &server_msg::handshake(&Uid::from("u1"), Value::Nil));
    let evs = events(&out);
    let ClientEvent::State(ch) = &evs[0] else {
        panic!()
    };
    assert!(ch.opened() && !ch.first_open());
    let ClientEvent::Handshake(hs) = &evs[1] else {
        panic!()
    };
    assert!(!hs.first);
}

fn fail_ws(h: &mut H, conn: ConnId, status: Option<u16>) -> Vec<Output> {
    h.m.handle_ws_connect_failed(
        conn,
        WsFailure {
            status,
            message: "refused".into(),
            tls: false,
        },
        h.now,
    );
    h.drain()
}

/// Runs `n` failed attempts and returns the delays before each retry.
fn retry_delays(h: &mut H, n: usize) -> Vec<u64> {
    h.m.connect(h.now);
    let mut conn = ws_open_of(&h.drain()).0;
    let mut delays = Vec::new();
    for _ in 0..n {
        let out = fail_ws(h, conn, None);
        let start = h.now;
        let next = if let Some((c, _)) = try_ws_open(&out) {
            c
        } else {
            let t = h.m.poll_timeout().expect("retry timer");
            let ch = state_changes(&out);
            let udt_next = ch.last().and_then(|c| c.new.udt_next_reconnect).unwrap();
            assert_eq!(udt_next, T0_UNIX + t);
            let out = h.advance(t - h.now);
            ws_open_of(&out).0
        };
        delays.push(h.now - start);
        conn = next;
    }
    delays
}

fn try_ws_open(out: &[Output]) -> Option<(ConnId, String)> {
    out.iter().find_map(|o| match o {
        Output::Action(Action::WsOpen { conn, url, .. }) => Some((*conn, url.clone())),
        _ => None,
    })
}

#[test]
fn default_backoff_is_full_jitter_capped_at_30s_first_retry_immediate() {
    let mut h = H::new(config(Kind::Ws));
    let delays = retry_delays(&mut h, 12);
    assert_eq!(delays[0], 0);
    for (i, d) in delays.iter().enumerate().skip(1) {
        let attempt = i as u32 + 1;
        let upper = (1000u64 << attempt).min(30_000);
        assert!(*d < upper, "attempt {attempt}: {d} >= {upper} ({delays:?})");
    }
    assert!(delays.iter().all(|d| *d <= 30_000));
    assert!(
        delays.iter().skip(6).any(|d| *d > 1000),
        "jitter spreads: {delays:?}"
    );
}

#[test]
fn sente_backoff_matches_vector_44() {
    let mut c = config(Kind::Ws);
    c.backoff = Backoff::Sente;
    let mut h = H::new(c);
    let delays = retry_delays(&mut h, 4);
    assert_eq!(delays[0], 0);
    assert!((2000..4000).contains(&delays[1]), "{delays:?}");
    assert!((4000..8000).contains(&delays[2]), "{delays:?}");
    assert!((8000..16000).contains(&delays[3]), "{delays:?}");
}

#[test]
fn custom_backoff_function() {
    let mut c = config(Kind::Ws);
    c.backoff = Backoff::Custom(Arc::new(|n, _| u64::from(n) * 100));
    let mut h = H::new(c);
    assert_eq!(retry_delays(&mut h, 3), vec![0, 200, 300]);
}

#[test]
fn backoff_counter_resets_after_a_successful_handshake() {
    let mut c = config(Kind::Ws);
    c.backoff = Backoff::Custom(Arc::new(|n, _| u64::from(n) * 100));
    let mut h = H::new(c);
    h.m.connect(0);
    let mut conn = ws_open_of(&h.drain()).0;
    for _ in 0..3 {
        let out = fail_ws(&mut h, conn, None);
        conn = match try_ws_open(&out) {
            Some((c, _)) => c,
            None => ws_open_of(&h.advance(1000)).0,
        };
    }
    h.ws_msg(conn, &server_msg::handshake(&Uid::Nil, Value::Nil));
    assert!(h.m.is_open());
    h.m.handle_ws_closed(conn, WsClosed::abnormal(), h.now);
    let out = h.drain();
    assert!(
        try_ws_open(&out).is_some(),
        "first retry after a success is immediate again"
    );
    assert_eq!(
        state_changes(&out)
            .last()
            .unwrap()
            .new
            .last_close
            .as_ref()
            .unwrap()
            .reason,
        CloseReason::Unexpected
    );
}

#[test]
fn rejected_ws_handshake_is_a_distinct_state_retried_slowly() {
    let mut h = H::new(config(Kind::Ws));
    h.m.connect(0);
    let conn = ws_open_of(&h.drain()).0;
    let out = fail_ws(&mut h, conn, Some(403));
    assert!(try_ws_open(&out).is_none(), "not retried at once");
    let st = h.m.state();
    assert_eq!(
        st.last_close.as_ref().unwrap().reason,
        CloseReason::Rejected { status: 403 }
    );
    assert_eq!(st.last_ws_error.as_ref().unwrap().status, Some(403));
    assert!(!st.open && !st.ever_opened);
    let t = h.m.poll_timeout().unwrap();
    assert!((30_000..=60_000).contains(&t), "slow path: {t}");
    assert!(try_ws_open(&h.advance(t - 1)).is_none());
    assert!(try_ws_open(&h.advance(1)).is_some());
}

#[test]
fn ajax_handshake_poll_push_and_post() {
    let mut c = config(Kind::Ajax);
    c.params = vec![("uid".into(), "u2".into())];
    c.csrf_token = CsrfToken::Value("tok-123".into());
    let mut h = H::new(c);
    h.now = 5;
    h.m.connect(5);
    let (id, req) = http_of(&h.drain());
    assert_eq!(req.method, HttpMethod::Get);
    assert_eq!(
        req.url,
        format!(
            "http://127.0.0.1:3000/chsk?uid=u2&udt={}&client-id=cid-1&handshake%3F=1&packer=table&ext=idem%2Clarge&resume=",
            T0_UNIX + 5
        )
    );
    assert!(
        req.headers
            .contains(&("X-CSRF-Token".into(), "tok-123".into()))
    );
    assert_eq!(req.timeout_ms, 60_000);
    let out = h.http_ok(id, &server_msg::handshake(&Uid::Nil, Value::Nil));
    assert_eq!(h.m.state().kind, Kind::Ajax);
    let evs = events(&out);
    assert!(matches!(&evs[1], ClientEvent::Handshake(hs) if hs.uid == Uid::Nil && hs.first));
    let (poll, req) = http_of(&out);
    assert!(!req.url.contains("handshake"), "{}", req.url);
    // Long-poll timeout: poll again, nothing delivered.
    let out = h.http_ok(poll, &server_msg::timeout());
    assert!(events(&out).is_empty());
    let (poll, _) = http_of(&out);
    // Pushes.
    let out = h.http_ok(
        poll,
        &server_msg::push_batch([ev("demo/p", 1), ev("demo/p", 2)]),
    );
    assert_eq!(
        events(&out),
        vec![
            ClientEvent::Push(ev("demo/p", 1)),
            ClientEvent::Push(ev("demo/p", 2))
        ]
    );
    let _poll = http_of(&out).0;
    // POST with a reply.
    let rid = h.m.request(ev("demo/echo", 42), 8000, h.now);
    let (post, req) = http_of(&h.drain());
    assert_eq!(req.method, HttpMethod::Post);
    assert_eq!(req.url, "http://127.0.0.1:3000/chsk?packer=table");
    let body = String::from_utf8(req.body.clone().unwrap()).unwrap();
    let prefix = format!("udt={}&client-id=cid-1&ppstr=%23", T0_UNIX + 5);
    assert!(body.starts_with(&prefix), "{body}");
    assert!(req.headers.iter().any(
        |(k, v)| k == "Content-Type" && v == "application/x-www-form-urlencoded;charset=UTF-8"
    ));
    assert!(
        req.headers
            .contains(&("X-CSRF-Token".into(), "tok-123".into()))
    );
    // The envelope asks for a reply with the :ajax marker.
    let ppstr = body.rsplit("ppstr=").next().unwrap().replace("%23", "#");
    let env = unpack(ppstr.as_bytes());
    assert_eq!(env.cb, Some(Value::kw("ajax")));
    let out = h.http_ok(post, &server_msg::ajax_reply(Value::from("ok")));
    assert_eq!(replies(&out), vec![(rid, Ok(Value::from("ok")))]);
    // Server-side timeout -> Timeout; POST without reply -> dummy ack.
    let rid = h.m.request(ev("demo/no-reply", 1), 8000, h.now);
    let (post, _) = http_of(&h.drain());
    let out = h.http_ok(post, &server_msg::timeout());
    assert_eq!(replies(&out), vec![(rid, Err(RequestError::Timeout))]);
    h.m.send(ev("demo/fire", 1), h.now).unwrap();
    let (post, req) = http_of(&h.drain());
    let ppstr = String::from_utf8(req.body.unwrap()).unwrap();
    let ppstr = ppstr.rsplit("ppstr=").next().unwrap().replace("%23", "#");
    assert_eq!(unpack(ppstr.as_bytes()).cb, None);
    assert!(replies(&h.http_ok(post, &server_msg::dummy_cb_200())).is_empty());
}

#[test]
fn ajax_request_timeout_aborts_the_post_without_closing() {
    let mut h = H::new(config(Kind::Ajax));
    h.open_ajax();
    let rid = h.m.request(ev("demo/no-reply", 1), 1000, h.now);
    let (post, req) = http_of(&h.drain());
    assert!(req.timeout_ms >= 1000);
    let out = h.advance(1000);
    assert_eq!(replies(&out), vec![(rid, Err(RequestError::Timeout))]);
    assert!(has_action(
        &out,
        |a| matches!(a, Action::HttpAbort { id } if *id == post)
    ));
    assert!(h.m.is_open());
}

#[test]
fn ajax_post_errors_fail_the_request() {
    let mut h = H::new(config(Kind::Ajax));
    h.open_ajax();
    let rid = h.m.request(ev("demo/x", 1), 5000, h.now);
    let (post, _) = http_of(&h.drain());
    h.m.handle_http_response(post, 500, b"boom", h.now);
    let r = replies(&h.drain());
    assert!(matches!(&r[0],
        (id, Err(RequestError::Error(RequestFailure::Status { status: 500, body })))
            if *id == rid && body == "boom"));
    let rid = h.m.request(ev("demo/x", 1), 5000, h.now);
    let (post, _) = http_of(&h.drain());
    h.m.handle_http_failure(post, HttpFailure::Network("reset".into()), h.now);
    assert!(matches!(&replies(&h.drain())[0],
        (id, Err(RequestError::Error(RequestFailure::Http(HttpFailure::Network(m)))))
            if *id == rid && m == "reset"));
}

#[test]
fn ajax_rejection_and_network_failure() {
    let mut h = H::new(config(Kind::Ajax));
    h.m.connect(0);
    let (id, _) = http_of(&h.drain());
    h.m.handle_http_response(id, 401, b"no", 0);
    let out = h.drain();
    assert!(http_all(&out).is_empty());
    assert_eq!(
        h.m.state().last_close.as_ref().unwrap().reason,
        CloseReason::Rejected { status: 401 }
    );
    let t = h.m.poll_timeout().unwrap();
    assert!(t >= 30_000);
    let out = h.advance(t);
    let (id, req) = http_of(&out);
    assert!(req.url.contains("handshake%3F=1"));
    let out = h.http_ok(id, &server_msg::handshake(&Uid::Nil, Value::Nil));
    let (poll, _) = http_of(&out);
    // The poll fails: closed (unexpected), re-handshake at once.
    h.m.handle_http_failure(poll, HttpFailure::Network("reset".into()), h.now);
    let out = h.drain();
    assert_eq!(
        state_changes(&out)[0]
            .new
            .last_close
            .as_ref()
            .unwrap()
            .reason,
        CloseReason::Unexpected
    );
    let (_, req) = http_of(&out);
    assert!(req.url.contains("handshake%3F=1"));
    let err = h.m.state().last_ajax_error.clone().unwrap();
    assert_eq!(err.failure, HttpFailure::Network("reset".into()));
}

#[test]
fn a_tls_failure_is_recorded_in_the_state() {
    let mut h = H::new(config(Kind::Ajax));
    h.m.connect(h.now);
    let (poll, _) = http_of(&h.drain());
    h.m.handle_http_failure(poll, HttpFailure::Tls("UnknownIssuer".into()), h.now);
    h.drain();
    let state = h.m.state().to_value().to_string();
    assert!(state.contains(":last-ajax-error"), "{state}");
    assert!(state.contains(":tls? true"), "{state}");
    assert!(matches!(
        h.m.state().last_ajax_error.as_ref().unwrap().failure,
        HttpFailure::Tls(_)
    ));

    let mut h = H::new(config(Kind::Ws));
    h.m.connect(h.now);
    let (conn, _) = ws_open_of(&h.drain());
    let failure = WsFailure {
        status: None,
        message: "TLS error: invalid peer certificate: UnknownIssuer".into(),
        tls: true,
    };
    h.m.handle_ws_connect_failed(conn, failure, h.now);
    h.drain();
    let err = h.m.state().last_ws_error.clone().unwrap();
    assert!(err.tls && err.status.is_none());
    let state = h.m.state().to_value().to_string();
    assert!(state.contains(":tls? true"), "{state}");
}

#[test]
fn binary_packer_posts_raw_bytes_with_query() {
    let mut c = config(Kind::Ajax);
    c.packer = Arc::new(TablePacker { binary: true });
    let mut h = H::new(c);
    h.m.connect(0);
    let (id, _) = http_of(&h.drain());
    let body = server_msg::handshake(&Uid::Nil, Value::Nil)
        .pack(&TablePacker { binary: true })
        .unwrap()
        .into_bytes();
    h.m.handle_http_response(id, 200, &body, 0);
    h.drain();
    h.m.send(ev("demo/x", 1), 0).unwrap();
    let (_, req) = http_of(&h.drain());
    assert_eq!(
        req.url,
        format!(
            "http://127.0.0.1:3000/chsk?udt={T0_UNIX}&client-id=cid-1&binary%3F=true&packer=tablebin"
        )
    );
    assert!(
        req.headers
            .contains(&("Content-Type".into(), "application/octet-stream".into()))
    );
    assert!(req.body.unwrap().starts_with(b"#"));
}

#[test]
fn auto_downgrades_to_ajax_when_the_first_ws_attempt_fails() {
    let mut h = H::new(config(Kind::Auto));
    assert_eq!(h.m.state().kind, Kind::Auto);
    h.m.connect(0);
    let conn = ws_open_of(&h.drain()).0;
    h.m.handle_ws_error(
        conn,
        WsFailure {
            status: Some(403),
            message: "403".into(),
            tls: false,
        },
        3,
    );
    let out = h.drain();
    let chs = state_changes(&out);
    assert_eq!(chs.len(), 1);
    assert_eq!(chs[0].new.last_ws_error.as_ref().unwrap().udt, T0_UNIX + 3);
    assert_eq!(chs[0].new.kind, Kind::Auto);
    assert!(
        chs[0].new.last_close.is_none(),
        "never opened: no last-close"
    );
    let (poll, req) = http_of(&out);
    assert!(req.url.contains("handshake%3F=1"));
    // The failed socket's close is still recorded.
    h.m.handle_ws_closed(conn, WsClosed::abnormal(), 4);
    let chs = state_changes(&h.drain());
    assert_eq!(chs[0].new.last_ws_close.as_ref().unwrap().code, 1006);
    let out = h.http_ok(poll, &server_msg::handshake(&Uid::from("u3"), Value::Nil));
    let ch = &state_changes(&out)[0];
    assert_eq!((ch.old.kind, ch.new.kind), (Kind::Auto, Kind::Ajax));
    assert!(ch.first_open());
}

#[test]
fn auto_never_downgrades_after_ws_has_opened() {
    let mut c = config(Kind::Auto);
    c.ws_reprobe_ms = None;
    let mut h = H::new(c);
    let conn = h.open_ws("u1");
    assert_eq!(h.m.state().kind, Kind::Ws);
    h.m.handle_ws_closed(conn, WsClosed::abnormal(), h.now);
    let conn = ws_open_of(&h.drain()).0;
    let out = fail_ws(&mut h, conn, None);
    assert!(http_all(&out).is_empty(), "retries WebSocket, not Ajax");
    let t = h.m.poll_timeout().unwrap();
    assert!(try_ws_open(&h.advance(t)).is_some());
}

#[test]
fn auto_reprobes_ws_after_ajax_fallback_and_keeps_requests() {
    let mut h = H::new(config(Kind::Auto));
    h.m.connect(0);
    let conn = ws_open_of(&h.drain()).0;
    let out = fail_ws(&mut h, conn, None);
    let (poll, _) = http_of(&out);
    let out = h.http_ok(poll, &server_msg::handshake(&Uid::from("u"), Value::Nil));
    let (mut poll, _) = http_of(&out);
    // A request in flight over Ajax when the probe succeeds.
    let rid = h.m.request(ev("demo/slow", 1), 600_000, h.now);
    let (post, _) = http_of(&h.drain());
    // Polls keep going for 3 minutes; then a probe.
    for _ in 0..8 {
        let out = h.advance(20_000);
        assert!(try_ws_open(&out).is_none());
        poll = http_of(&h.http_ok(poll, &server_msg::timeout())).0;
    }
    let out = h.advance(20_000);
    let (probe, url) = ws_open_of(&out);
    assert!(url.starts_with("ws://"));
    // The first probe fails: stay on Ajax, try again later.
    h.m.handle_ws_connect_failed(
        probe,
        WsFailure {
            status: None,
            message: "x".into(),
            tls: false,
        },
        h.now,
    );
    let out = h.drain();
    assert!(
        state_changes(&out).is_empty(),
        "a failed probe does not touch the state"
    );
    assert!(h.m.is_open());
    let out = h.advance(180_000);
    let (probe, _) = ws_open_of(&out);
    h.m.handle_ws_open(probe, h.now);
    let out = h.ws_msg(probe, &server_msg::handshake(&Uid::from("u"), Value::Nil));
    assert!(has_action(
        &out,
        |a| matches!(a, Action::HttpAbort { id } if *id == poll)
    ));
    let ch = &state_changes(&out)[0];
    assert_eq!((ch.old.kind, ch.new.kind), (Kind::Ajax, Kind::Ws));
    assert!(ch.old.open && ch.new.open);
    assert!(matches!(&events(&out)[1], ClientEvent::Handshake(hs) if !hs.first));
    // The old poll's abort produces no state change; the in-flight POST still completes.
    h.m.handle_http_failure(poll, HttpFailure::Network("aborted".into()), h.now);
    assert!(state_changes(&h.drain()).is_empty());
    let out = h.http_ok(post, &server_msg::ajax_reply(Value::from("done")));
    assert_eq!(replies(&out), vec![(rid, Ok(Value::from("done")))]);
    // New requests go over the WebSocket.
    h.m.request(ev("demo/echo", 1), 1000, h.now);
    assert_eq!(ws_sends(&h.drain()).len(), 1);
}

#[test]
#[allow(clippy::many_single_char_names)] // a, b, c, d: the queued requests, in order
fn queue_holds_messages_until_open_with_bounds() {
    let mut cfg = config(Kind::Ws);
    cfg.queue = Some(QueueConfig::new(3, 4000));
    let mut h = H::new(cfg);
    // Before connect: nothing to wait for.
    assert_eq!(h.m.send(ev("demo/x", 0), 0), Err(SendError::Closed));
    h.m.connect(0);
    let conn = ws_open_of(&h.drain()).0;
    h.m.send(ev("demo/x", 1), 0).unwrap();
    let a = h.m.request(ev("demo/echo", "a"), 10_000, 0);
    let b = h.m.request(ev("demo/echo", "b"), 500, 0);
    let full = h.m.request(ev("demo/echo", "c"), 10_000, 0);
    assert_eq!(replies(&h.drain()), vec![(full, Err(RequestError::Closed))]);
    // b's own timeout comes first.
    assert_eq!(
        replies(&h.advance(500)),
        vec![(b, Err(RequestError::Timeout))]
    );
    h.m.handle_ws_open(conn, h.now);
    let out = h.ws_msg(conn, &server_msg::handshake(&Uid::Nil, Value::Nil));
    let sent = ws_sends(&out);
    assert_eq!(sent.len(), 2, "the send and request a, in order");
    assert_eq!(sent[0].payload, ev("demo/x", 1).into_value());
    assert_eq!(sent[1].payload, ev("demo/echo", "a").into_value());
    let out = h.ws_msg(
        conn,
        &server_msg::ws_reply(Value::from("a"), cb_of(&sent[1])),
    );
    assert_eq!(replies(&out), vec![(a, Ok(Value::from("a")))]);
    // Down again: queued requests expire with Closed after max_wait.
    h.m.handle_ws_closed(conn, WsClosed::abnormal(), h.now);
    let conn = ws_open_of(&h.drain()).0;
    let c2 = h.m.request(ev("demo/echo", "c"), 60_000, h.now);
    let out = h.advance(4000);
    assert_eq!(replies(&out), vec![(c2, Err(RequestError::Closed))]);
    // disconnect() fails what is queued at once.
    let d = h.m.request(ev("demo/echo", "d"), 60_000, h.now);
    h.m.disconnect(h.now);
    let out = h.drain();
    assert_eq!(replies(&out), vec![(d, Err(RequestError::Closed))]);
    assert!(has_action(
        &out,
        |a| matches!(a, Action::WsClose { conn: c, code: 1000, .. } if *c == conn)
    ));
}

#[test]
fn disconnect_and_reconnect() {
    let mut h = H::new(config(Kind::Ws));
    let conn = h.open_ws("u1");
    let rid = h.m.request(ev("demo/no-reply", 1), 10_000, h.now);
    h.drain();
    h.m.disconnect(h.now);
    let out = h.drain();
    assert!(has_action(&out, |a| matches!(a,
        Action::WsClose { conn: c, code: 1000, reason } if *c == conn && reason == "CLOSE_NORMAL")));
    assert!(matches!(&replies(&out)[0],
        (id, Err(RequestError::Error(RequestFailure::ConnectionLost))) if *id == rid));
    let st = h.m.state();
    assert_eq!(
        st.last_close.as_ref().unwrap().reason,
        CloseReason::RequestedDisconnect
    );
    assert!(!st.open && st.ever_opened);
    assert_eq!(
        h.m.poll_timeout(),
        None,
        "no retry after a requested disconnect"
    );
    // The close echo is recorded as last-ws-close, without reconnecting.
    h.m.handle_ws_closed(
        conn,
        WsClosed {
            code: 1000,
            reason: "CLOSE_NORMAL".into(),
            clean: true,
        },
        h.now,
    );
    let out = h.drain();
    assert!(try_ws_open(&out).is_none());
    assert_eq!(
        h.m.state().last_ws_close.as_ref().unwrap().reason,
        "CLOSE_NORMAL"
    );
    // reconnect: connects at once; while open, reason requested-reconnect.
    h.m.connect(h.now);
    let conn = ws_open_of(&h.drain()).0;
    h.ws_msg(conn, &server_msg::handshake(&Uid::from("u1"), Value::Nil));
    h.m.reconnect(h.now);
    let out = h.drain();
    assert_eq!(
        h.m.state().last_close.as_ref().unwrap().reason,
        CloseReason::RequestedReconnect
    );
    assert!(try_ws_open(&out).is_some());
}

#[test]
fn stale_and_unknown_inputs_are_ignored() {
    let mut h = H::new(config(Kind::Ws));
    let conn = h.open_ws("u1");
    h.m.handle_ws_message(ConnId(999), b"#0", h.now);
    h.m.handle_http_response(HttpId(999), 200, &[], h.now);
    h.m.handle_http_failure(HttpId(998), HttpFailure::Timeout, h.now);
    h.m.handle_ws_closed(ConnId(997), WsClosed::abnormal(), h.now);
    assert!(h.drain().is_empty());
    // Garbage on the live socket is logged and dropped; the connection stays.
    h.m.handle_ws_message(conn, b"not a table entry", h.now);
    let out = h.drain();
    assert!(matches!(&out[..], [Output::Log { .. }]));
    assert!(h.m.is_open());
}

/// The resume extension: the handshake's position, `[:chsk/seq n]` markers, skipping what a
/// replay and a live batch both carry, the position on the reconnect URL, and forgetting it
/// after a batch with no number.
#[test]
fn resume_tracks_the_position_skips_overlaps_and_reconnects_from_it() {
    use sente_proto::server::replay::{Position, ResumeInfo};
    let n = |k: i64| Event::new(EventId::new("t/n").unwrap(), Value::Int(k));
    let pushed = |out: &[Output]| -> Vec<Value> {
        events(out)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Push(ev) => Some(ev.data().clone()),
                _ => None,
            })
            .collect()
    };
    let info = |seq, recovered| ResumeInfo {
        position: Position {
            epoch: "e1".into(),
            seq,
        },
        recovered,
    };
    let mut h = H::new(config(Kind::Ws));
    h.m.connect(h.now);
    let (conn, url) = ws_open_of(&h.drain());
    assert!(url.ends_with("&resume="), "{url}");
    h.m.handle_ws_open(conn, h.now);
    h.ws_msg(
        conn,
        &server_msg::handshake_resume(&Uid::from("u"), Value::Nil, &info(5, false)),
    );
    assert_eq!(
        h.m.state().recovered,
        None,
        "nothing to recover on a first connection"
    );
    h.ws_msg(conn, &server_msg::seq_marker(7));
    let out = h.ws_msg(conn, &server_msg::push_batch([n(6), n(7)]));
    assert_eq!(pushed(&out), [Value::Int(6), Value::Int(7)]);
    // A batch numbered 6..=8 overlapping what arrived: only 8 is new.
    h.ws_msg(conn, &server_msg::seq_marker(8));
    let out = h.ws_msg(conn, &server_msg::push_batch([n(6), n(7), n(8)]));
    assert_eq!(pushed(&out), [Value::Int(8)]);
    assert_eq!(h.m.resume_position().map(|p| p.seq), Some(8));

    // The reconnect asks for 8, and a recovered handshake says so.
    h.m.handle_ws_closed(conn, WsClosed::abnormal(), h.now);
    let mut out = h.drain();
    out.extend(h.advance(60_000));
    let (conn, url) = ws_open_of(&out);
    assert!(url.ends_with("&resume=e1%3A8"), "{url}");
    h.m.handle_ws_open(conn, h.now);
    h.ws_msg(
        conn,
        &server_msg::handshake_resume(&Uid::from("u"), Value::Nil, &info(8, true)),
    );
    assert_eq!(h.m.state().recovered, Some(true));
    // A batch without a number (`send_to_client`, or a push the server could not number):
    // delivered, and the position is unknown from now on.
    let out = h.ws_msg(conn, &server_msg::push_batch([n(100)]));
    assert_eq!(pushed(&out), [Value::Int(100)]);
    assert_eq!(h.m.resume_position(), None);
}

/// `retry_now` brings a pending reconnect forward (the browser's `online` event, a visible
/// tab, a button), and does nothing while connected.
#[test]
fn retry_now_brings_a_pending_reconnect_forward() {
    let mut c = config(Kind::Ws);
    c.backoff = Backoff::Custom(Arc::new(|_, _| 60_000));
    let mut h = H::new(c);
    let conn = h.open_ws("u");
    h.m.retry_now(h.now);
    assert!(h.drain().is_empty(), "connected: nothing to do");
    h.m.handle_ws_closed(conn, WsClosed::abnormal(), h.now);
    let mut out = h.drain();
    // The first retry is immediate; it fails, and the next waits 60 s.
    let (conn, _) = ws_open_of(&out);
    h.m.handle_ws_closed(conn, WsClosed::abnormal(), h.now);
    out = h.drain();
    assert!(!has_action(&out, |a| matches!(a, Action::WsOpen { .. })));
    assert!(h.m.state().udt_next_reconnect.is_some());
    h.m.retry_now(h.now);
    let out = h.drain();
    assert!(
        has_action(&out, |a| matches!(a, Action::WsOpen { .. })),
        "{out:#?}"
    );
    assert_eq!(h.m.state().udt_next_reconnect, None);
}

/// Item 5 of issue 15: an auto client whose WebSocket worked falls back to Ajax when the
/// upgrade is refused mid-session, resumes there from its position (numbered Ajax answers),
/// and goes back to WebSocket on a re-probe, still from its position: a replay overlapping
/// what Ajax delivered meanwhile is skipped. An Ajax attempt that fails before its handshake
/// too makes the next attempt a WebSocket again.
#[test]
fn auto_switches_ws_to_ajax_and_back_mid_session_keeping_the_position() {
    use sente_proto::server::PushBatch;
    use sente_proto::server::replay::{Position, ResumeInfo};
    let n = |k: i64| Arc::new(Event::new(EventId::new("t/n").unwrap(), Value::Int(k)));
    let numbered = |seq, ks: &[i64]| {
        PushBatch::new(ks.iter().map(|k| n(*k)).collect()).envelope_numbered(Some(seq))
    };
    let pushed = |out: &[Output]| -> Vec<Value> {
        events(out)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Push(ev) => Some(ev.data().clone()),
                _ => None,
            })
            .collect()
    };
    let hs = |seq, recovered| {
        let info = ResumeInfo {
            position: Position {
                epoch: "e1".into(),
                seq,
            },
            recovered,
        };
        server_msg::handshake_resume(&Uid::from("u"), Value::Nil, &info)
    };
    let mut c = config(Kind::Auto);
    c.ws_reprobe_ms = Some(1_000);
    let mut h = H::new(c);
    h.m.connect(h.now);
    let (conn, _) = ws_open_of(&h.drain());
    h.m.handle_ws_open(conn, h.now);
    h.ws_msg(conn, &hs(0, false));
    h.ws_msg(conn, &server_msg::seq_marker(2));
    let out = h.ws_msg(
        conn,
        &server_msg::push_batch([(*n(1)).clone(), (*n(2)).clone()]),
    );
    assert_eq!(pushed(&out), [Value::Int(1), Value::Int(2)]);

    // The socket dies; the immediate retry's upgrade is refused: Ajax, from position 2.
    h.m.handle_ws_closed(conn, WsClosed::abnormal(), h.now);
    let (conn, _) = ws_open_of(&h.drain());
    let out = fail_ws(&mut h, conn, Some(502));
    let (poll, req) = http_of(&out);
    assert!(req.url.contains("handshake%3F=1"), "{}", req.url);
    assert!(req.url.ends_with("&resume=e1%3A2"), "{}", req.url);
    let out = h.http_ok(poll, &hs(2, true));
    assert_eq!(h.m.state().kind, Kind::Ajax);
    assert_eq!(h.m.state().recovered, Some(true));
    let (poll, req) = http_of(&out);
    assert!(
        req.url.ends_with("&resume=e1%3A2"),
        "every poll names the position"
    );
    // The replay (3, 4), then a live answer (5).
    let out = h.http_ok(poll, &numbered(4, &[3, 4]));
    assert_eq!(pushed(&out), [Value::Int(3), Value::Int(4)]);
    let (poll, _) = http_of(&out);
    let out = h.http_ok(poll, &numbered(5, &[5]));
    assert_eq!(pushed(&out), [Value::Int(5)]);
    let (poll, _) = http_of(&out);

    // The re-probe opens at position 5; Ajax delivers 6 before the probe's handshake, which
    // resumes from 5 and replays 6, 7: only 7 is new.
    let out = h.advance(1_000);
    let (probe, url) = ws_open_of(&out);
    assert!(url.ends_with("&resume=e1%3A5"), "{url}");
    let out = h.http_ok(poll, &numbered(6, &[6]));
    assert_eq!(pushed(&out), [Value::Int(6)]);
    let (poll, _) = http_of(&out);
    h.m.handle_ws_open(probe, h.now);
    let out = h.ws_msg(probe, &hs(5, true));
    assert!(has_action(
        &out,
        |a| matches!(a, Action::HttpAbort { id } if *id == poll)
    ));
    assert_eq!(h.m.state().kind, Kind::Ws);
    assert_eq!(h.m.resume_position().map(|p| p.seq), Some(6));
    h.ws_msg(probe, &server_msg::seq_marker(7));
    let out = h.ws_msg(
        probe,
        &server_msg::push_batch([(*n(6)).clone(), (*n(7)).clone()]),
    );
    assert_eq!(pushed(&out), [Value::Int(7)]);

    // The socket dies again and upgrades are refused; then the Ajax handshake fails too (the
    // server is down): the next attempt is a WebSocket again.
    h.m.handle_ws_closed(probe, WsClosed::abnormal(), h.now);
    let (conn, _) = ws_open_of(&h.drain());
    let (poll, _) = http_of(&fail_ws(&mut h, conn, None));
    h.m.handle_http_failure(poll, HttpFailure::Connect("refused".into()), h.now);
    let mut out = h.drain();
    if try_ws_open(&out).is_none() {
        let t = h.m.poll_timeout().unwrap();
        out = h.advance(t - h.now);
    }
    let (_, url) = ws_open_of(&out);
    assert!(url.ends_with("&resume=e1%3A7"), "{url}");
}

#[test]
fn large_references_are_fetched_and_delivered_in_their_place() {
    use sente_proto::large::reference_event;
    let mut h = H::new(config(Kind::Ws));
    let conn = h.open_ws("u1");
    let batch = server_msg::push_batch([
        ev("demo/a", 1),
        reference_event("id-1", 100_000),
        ev("demo/a", 2),
        reference_event("id-2", 200_000),
        ev("demo/a", 3),
    ]);
    let out = h.ws_msg(conn, &batch);
    // The push before the first reference goes out; the rest waits for the fetches.
    assert_eq!(events(&out), vec![ClientEvent::Push(ev("demo/a", 1))]);
    let fetches = http_all(&out);
    assert_eq!(fetches.len(), 2);
    for ((_, req), id) in fetches.iter().zip(["id-1", "id-2"]) {
        assert_eq!(req.method, HttpMethod::Get);
        assert!(
            req.url.starts_with("http://127.0.0.1:3000/chsk?")
                && req.url.contains("client-id=cid-1")
                && req.url.ends_with(&format!("&large={id}")),
            "{}",
            req.url
        );
    }
    // The second fetch ends first: nothing is delivered until the first one does.
    h.m.handle_http_response(fetches[1].0, 410, b"fetched already", h.now);
    assert!(events(&h.drain()).is_empty());
    let out = h.http_ok(
        fetches[0].0,
        &server_msg::push_batch([ev("demo/big", "one")]),
    );
    let got = events(&out);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0], ClientEvent::Push(ev("demo/big", "one")));
    assert_eq!(got[1], ClientEvent::Push(ev("demo/a", 2)));
    match &got[2] {
        ClientEvent::LargeFailed(f) => {
            assert_eq!((f.id.as_str(), f.size), ("id-2", 200_000));
            assert!(f.reason.contains("410"), "{}", f.reason);
            assert_eq!(got[2].to_event().id().as_str(), "chsk/large-failed");
        }
        other => panic!("expected LargeFailed, got {other:?}"),
    }
    assert_eq!(got[3], ClientEvent::Push(ev("demo/a", 3)));
    // Nothing held now: a push goes straight out.
    let out = h.ws_msg(conn, &server_msg::push_batch([ev("demo/a", 4)]));
    assert_eq!(events(&out), vec![ClientEvent::Push(ev("demo/a", 4))]);
}

#[test]
fn without_the_extension_nothing_is_announced_or_fetched() {
    let mut cfg = config(Kind::Ws);
    cfg.large = false;
    let mut h = H::new(cfg);
    h.m.connect(h.now);
    let (conn, url) = ws_open_of(&h.drain());
    assert!(!url.contains("large"), "{url}");
    h.m.handle_ws_open(conn, h.now);
    h.ws_msg(conn, &server_msg::handshake(&Uid::from("u"), Value::Nil));
    let reference = sente_proto::large::reference_event("id-1", 1);
    let out = h.ws_msg(conn, &server_msg::push_batch([reference.clone()]));
    assert!(http_all(&out).is_empty());
    assert_eq!(events(&out), vec![ClientEvent::Push(reference)]);
}

// ------------------------------------------------------------------------------------------------
// Idempotent requests (extension `idem`)

/// The WebSocket handshake of a server that acknowledges `idem` (or not).
fn ws_handshake(h: &mut H, idem: bool) -> ConnId {
    h.m.connect(h.now);
    let (conn, url) = ws_open_of(&h.drain());
    assert!(url.contains("ext=idem"), "{url}");
    h.m.handle_ws_open(conn, h.now);
    let hs = server_msg::handshake_ext(&Uid::from("u"), Value::Nil, None, idem);
    h.ws_msg(conn, &hs);
    assert!(h.m.is_open());
    conn
}

#[test]
fn a_retried_request_is_re_sent_with_its_id_after_a_reconnect_and_answered_once() {
    let mut h = H::new(config(Kind::Ws));
    let conn = ws_handshake(&mut h, true);
    let id =
        h.m.request_with_retry(ev("demo/once", 1), 10_000, true, h.now);
    let sent = ws_sends(&h.drain());
    let rid = sent[0].cb.clone().unwrap();
    assert!(rid.as_str().unwrap().starts_with('!'), "{rid:?}");
    h.now += 100;
    h.m.handle_ws_closed(conn, WsClosed::abnormal(), h.now);
    let out = h.drain();
    assert!(replies(&out).is_empty(), "not failed: {out:#?}");
    // Reconnects (the first attempt is immediate) and re-sends with the same id.
    let (conn2, _) = ws_open_of(&out);
    h.m.handle_ws_open(conn2, h.now);
    let hs = server_msg::handshake_ext(&Uid::from("u"), Value::Nil, None, true);
    let out = h.ws_msg(conn2, &hs);
    let again = ws_sends(&out);
    assert_eq!(again.len(), 1, "{out:#?}");
    assert_eq!(again[0].cb, Some(rid.clone()));
    // The reply comes once, on the new connection.
    let out = h.ws_msg(conn2, &Envelope::with_cb(Value::Int(42), rid.clone()));
    assert_eq!(replies(&out), vec![(id, Ok(Value::Int(42)))]);
    assert!(replies(&h.ws_msg(conn2, &Envelope::with_cb(Value::Int(42), rid))).is_empty());
    assert_eq!(h.m.pending_requests(), 0);
}

#[test]
fn without_the_servers_acknowledgement_or_the_opt_in_a_lost_request_fails() {
    for (acked, retry) in [(false, true), (true, false)] {
        let mut h = H::new(config(Kind::Ws));
        let conn = ws_handshake(&mut h, acked);
        let id =
            h.m.request_with_retry(ev("demo/once", 1), 10_000, retry, h.now);
        let cb = ws_sends(&h.drain())[0].cb.clone().unwrap();
        assert_eq!(cb.as_str().unwrap().starts_with('!'), retry);
        h.m.handle_ws_closed(conn, WsClosed::abnormal(), h.now);
        assert_eq!(
            replies(&h.drain()),
            vec![(id, Err(RequestFailure::ConnectionLost.into()))],
            "acked {acked}, retry {retry}"
        );
    }
}

#[test]
fn a_retried_request_still_times_out_and_a_disconnect_fails_it() {
    let mut cfg = config(Kind::Ws);
    cfg.retry_requests = true;
    let mut h = H::new(cfg);
    let conn = ws_handshake(&mut h, true);
    let id = h.m.request(ev("demo/once", 1), 1_000, h.now);
    h.drain();
    h.m.handle_ws_closed(conn, WsClosed::abnormal(), h.now);
    h.drain(); // reconnecting: never opens
    let out = h.advance(1_000);
    assert_eq!(replies(&out), vec![(id, Err(RequestError::Timeout))]);

    let mut cfg = config(Kind::Ws);
    cfg.retry_requests = true;
    let mut h = H::new(cfg);
    let conn = ws_handshake(&mut h, true);
    let id = h.m.request(ev("demo/once", 2), 10_000, h.now);
    h.drain();
    h.m.handle_ws_closed(conn, WsClosed::abnormal(), h.now);
    assert!(replies(&h.drain()).is_empty(), "waits to be re-sent");
    h.m.disconnect(h.now);
    let out = h.drain();
    assert_eq!(replies(&out), vec![(id, Err(RequestError::Closed))]);
}

/// The Ajax handshake of a server that acknowledges `idem`; returns the pending long-poll.
fn ajax_handshake_idem(h: &mut H) -> HttpId {
    h.m.connect(h.now);
    let (id, req) = http_of(&h.drain());
    assert!(req.url.contains("ext=idem"), "{}", req.url);
    let hs = server_msg::handshake_ext(&Uid::from("u"), Value::Nil, None, true);
    let out = h.http_ok(id, &hs);
    assert!(h.m.is_open());
    http_of(&out).0
}

/// The POSTs among `out` and the callback id (request id) each carries.
fn posts_with_cb(out: &[Output]) -> Vec<(HttpId, Option<Value>)> {
    http_all(out)
        .into_iter()
        .filter(|(_, req)| req.method == HttpMethod::Post)
        .map(|(id, req)| {
            let body = String::from_utf8(req.body.unwrap()).unwrap();
            let ppstr = body.rsplit("ppstr=").next().unwrap().replace("%23", "#");
            (id, unpack(ppstr.as_bytes()).cb)
        })
        .collect()
}

/// The server holds an Ajax POST only so long (its long-poll timeout), then answers
/// `:chsk/timeout`; a copy re-sent after a cut joins the run already underway and may be
/// answered so before that run ends (a browser re-sends a POST whose reused connection closed
/// at once). A retried request asks again with its request id until its own deadline, and gets
/// the reply once; a request that is not retried takes the server's `:chsk/timeout` as before.
#[test]
fn a_retried_ajax_request_answered_chsk_timeout_asks_again_until_its_deadline() {
    let mut h = H::new(config(Kind::Ajax));
    let _poll = ajax_handshake_idem(&mut h);
    let id =
        h.m.request_with_retry(ev("demo/once", 1), 20_000, true, h.now);
    let sent = posts_with_cb(&h.drain());
    assert_eq!(sent.len(), 1);
    let (post, rid) = sent[0].clone();
    assert!(
        rid.as_ref()
            .and_then(Value::as_str)
            .is_some_and(|r| r.starts_with('!'))
    );
    h.now += 1_000;
    let out = h.http_ok(post, &server_msg::timeout());
    assert!(replies(&out).is_empty(), "not failed: {out:#?}");
    assert!(posts_with_cb(&out).is_empty(), "not at once: {out:#?}");
    // Asked again after a short wait, with the same request id; the reply comes once.
    let at = h.m.poll_timeout().unwrap();
    assert!(at > h.now && at <= h.now + 2_000, "{at}");
    let out = h.advance(2_000);
    let again = posts_with_cb(&out);
    assert_eq!(again.len(), 1, "{out:#?}");
    assert_eq!(again[0].1, rid);
    let out = h.http_ok(again[0].0, &server_msg::ajax_reply(Value::Int(42)));
    assert_eq!(replies(&out), vec![(id, Ok(Value::Int(42)))]);
    assert_eq!(h.m.pending_requests(), 0);
    assert!(h.m.is_open());

    // A handler that never replies: every copy is answered `:chsk/timeout` at once; the copies
    // come further and further apart and the request times out at its deadline.
    let id =
        h.m.request_with_retry(ev("demo/no-reply", 1), 20_000, true, h.now);
    let deadline = h.now + 20_000;
    let mut post = posts_with_cb(&h.drain())[0].0;
    let mut copies = 0;
    let result = loop {
        let out = h.http_ok(post, &server_msg::timeout());
        assert!(replies(&out).is_empty(), "{out:#?}");
        let out = h.advance(h.m.poll_timeout().unwrap() - h.now);
        if let Some(r) = replies(&out).pop() {
            break r;
        }
        let again = posts_with_cb(&out);
        assert_eq!(again.len(), 1, "{out:#?}");
        post = again[0].0;
        copies += 1;
    };
    assert_eq!(result, (id, Err(RequestError::Timeout)));
    assert_eq!(h.now, deadline);
    assert!((1..20).contains(&copies), "{copies} copies");
    assert!(
        http_all(&h.advance(60_000))
            .iter()
            .all(|(_, r)| r.method == HttpMethod::Get)
    );

    // Without the opt-in the server's `:chsk/timeout` is the outcome.
    let id =
        h.m.request_with_retry(ev("demo/once", 2), 20_000, false, h.now);
    let post = posts_with_cb(&h.drain())[0].0;
    let out = h.http_ok(post, &server_msg::timeout());
    assert_eq!(replies(&out), vec![(id, Err(RequestError::Timeout))]);
}
