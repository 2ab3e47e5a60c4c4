//! Shared test harness: a real server on 127.0.0.1:0 with the options of the recorded Sente
//! transcripts, the transcripts' test app, and raw HTTP / WebSocket clients.
#![allow(dead_code, unreachable_pub)]

use futures::{SinkExt, StreamExt};
use sente::{AllowedOrigins, Builder, CsrfToken, EventMsg, Reply, Server, Transport};
use sente_proto::edn::{self, Map, ReadOptions};
use sente_proto::{Event, EventId, Uid, Value};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub const TOKEN: &str = "tok-123";
pub const ORIGIN: &str = "http://127.0.0.1:8300";

/// What reached the app's handler (like the transcripts' `server-handler` records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub id: String,
    pub event: String,
    pub uid: String,
    pub client_id: String,
    pub has_reply: bool,
    pub transport: Transport,
}

pub fn pr(v: &Value) -> String {
    edn::to_edn_string(v)
}

pub fn read(text: &str) -> Value {
    edn::read(text, &ReadOptions::default()).expect("valid edn")
}

pub fn ev(id: &str, data: Value) -> Event {
    Event::new(EventId::new(id).unwrap(), data)
}

pub fn n_map(n: i64) -> Value {
    let mut m = Map::new();
    m.insert(Value::kw("n"), Value::Int(n));
    Value::Map(m)
}

/// The server options of every transcript scenario (see the transcripts README, "Server").
pub fn transcript_builder() -> Builder {
    Server::builder()
        .user_id_fn(|r| r.param("uid").map_or(Uid::Nil, Uid::from))
        .csrf_token_fn(|_| CsrfToken::from(TOKEN))
        .allowed_origins(AllowedOrigins::list([ORIGIN]))
        .handshake_data_fn(|_| {
            let mut m = Map::new();
            m.insert(Value::kw("hello"), Value::from("world"));
            Value::Map(m)
        })
        .authorized_fn(|r| r.param("deny").is_none())
}

pub struct Harness {
    pub addr: SocketAddr,
    pub server: Server,
    pub handled: mpsc::UnboundedReceiver<Handled>,
}

/// Starts the server with the transcripts' test app (echo, push-me, no-reply, close-me).
pub async fn start(builder: Builder) -> Harness {
    start_inner(builder, None).await
}

/// Like [`start`], served by `sente::serve` with `config` instead of `axum::serve`.
pub async fn start_served(builder: Builder, config: sente::ServeConfig) -> Harness {
    start_inner(builder, Some(config)).await
}

async fn start_inner(builder: Builder, config: Option<sente::ServeConfig>) -> Harness {
    let (server, mut events) = builder.build_with_events().expect("valid config");
    let (tx, handled) = mpsc::unbounded_channel();
    let app_server = server.clone();
    tokio::spawn(async move {
        let mut held: Vec<Reply> = Vec::new();
        while let Some(mut msg) = events.recv().await {
            let rec = Handled {
                id: msg.id().as_str().to_owned(),
                event: pr(&msg.event.to_value()),
                uid: pr(&msg.uid.to_value()),
                client_id: msg.client_id.to_string(),
                has_reply: msg.reply.is_some(),
                transport: msg.transport,
            };
            let _ = tx.send(rec);
            app(&app_server, &mut msg, &mut held);
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server.router::<()>("/chsk");
    match config {
        None => tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }),
        Some(c) => tokio::spawn(async move { sente::serve(listener, app, c).await.unwrap() }),
    };
    Harness {
        addr,
        server,
        handled,
    }
}

fn app(server: &Server, msg: &mut EventMsg, held: &mut Vec<Reply>) {
    match msg.id().as_str() {
        "test/echo" => {
            let mut m = Map::new();
            m.insert(Value::kw("echo"), msg.data_value().clone());
            msg.reply(Value::Map(m));
        }
        "test/no-reply" => held.extend(msg.take_reply()),
        "test/close-me" => server
            .send(&msg.uid, ev("chsk/close", Value::Nil))
            .unwrap_or(()),
        "test/push-me" => {
            let (server, uid) = (server.clone(), msg.uid.clone());
            tokio::spawn(async move {
                for n in 1..=3 {
                    server.send(&uid, ev("test/push", n_map(n))).unwrap();
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
                server
                    .send_flush(&uid, ev("test/push-flush", n_map(4)))
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(400)).await;
                server.send(&uid, ev("test/push", n_map(5))).unwrap();
                server
                    .send_flush(&uid, ev("test/push-flush", n_map(6)))
                    .unwrap();
            });
        }
        _ => {}
    }
}

impl Harness {
    /// The next handled event (fails after 5 s).
    pub async fn next(&mut self) -> Handled {
        tokio::time::timeout(Duration::from_secs(5), self.handled.recv())
            .await
            .expect("an event reached the handler")
            .expect("app running")
    }

    /// The next handled event that is not a uidport event.
    pub async fn next_app(&mut self) -> Handled {
        loop {
            let h = self.next().await;
            if !h.id.starts_with("chsk/uidport") {
                return h;
            }
        }
    }

    /// Asserts that no (non-uidport) event reaches the handler within `ms`.
    pub async fn none_within(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.handled.recv()).await {
                Err(_) | Ok(None) => return,
                Ok(Some(h)) if h.id.starts_with("chsk/uidport") => {}
                Ok(Some(h)) => panic!("unexpected event {h:?}"),
            }
        }
    }

    /// Asserts that no event at all (uidport included) reaches the handler within `ms`.
    pub async fn silent_within(&mut self, ms: u64) {
        if let Ok(Some(h)) =
            tokio::time::timeout(Duration::from_millis(ms), self.handled.recv()).await
        {
            panic!("unexpected event {h:?}");
        }
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/chsk?{query}", self.addr)
    }
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw request bytes on a new connection and reads the response (to EOF, or only the head
/// for a 101).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .expect("response within 30 s")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(r) = parse(&buf) {
            return r;
        }
    }
    parse(&buf)
        .unwrap_or_else(|| panic!("incomplete response: {:?}", String::from_utf8_lossy(&buf)))
}

fn parse(buf: &[u8]) -> Option<Resp> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let body = &buf[end + 4..];
    if status == 101 || status == 204 {
        return Some(Resp {
            status,
            headers,
            body: Vec::new(),
        });
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())?;
    (body.len() >= len).then(|| Resp {
        status,
        headers,
        body: body[..len].to_vec(),
    })
}

/// A GET with the headers of the browser client (`Host`, `Origin`/`Referer`, CSRF header).
pub fn get_req(target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:8300\r\n");
    for (k, v) in headers {
        let _ = write!(r, "{k}: {v}\r\n");
    }
    r.push_str("Connection: close\r\n\r\n");
    r.into_bytes()
}

pub fn post_req(target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("POST {target} HTTP/1.1\r\nHost: 127.0.0.1:8300\r\n");
    for (k, v) in headers {
        let _ = write!(r, "{k}: {v}\r\n");
    }
    let _ = write!(
        r,
        "Content-Length: {}
Connection: close

",
        body.len()
    );
    let mut b = r.into_bytes();
    b.extend_from_slice(body);
    b
}

/// `encodeURIComponent` (what the Sente client uses for form values).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The standard headers of the browser's Ajax requests.
pub fn ajax_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Origin", ORIGIN),
        ("X-CSRF-Token", TOKEN),
        ("X-Requested-With", "XMLHTTPRequest"),
    ]
}

/// A form POST of `ppstr` (the packed envelope) as the Sente client sends it.
pub async fn post_ppstr(addr: SocketAddr, client_id: &str, ppstr: &str) -> Resp {
    let body = format!("udt=1&client-id={}&ppstr={}", enc(client_id), enc(ppstr));
    let mut h = ajax_headers();
    h.push((
        "Content-Type",
        "application/x-www-form-urlencoded;charset=UTF-8",
    ));
    raw(addr, &post_req("/chsk", &h, body.as_bytes())).await
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket like the browser client (Origin header, token in the URL).
pub async fn ws_connect(addr: SocketAddr, query: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/chsk?{query}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("Origin", ORIGIN.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next text frame (skipping control frames); fails after 5 s.
pub async fn ws_text(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .expect("frame");
        match m {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The next frame of any kind; fails after `ms`.
pub async fn ws_frame(ws: &mut Ws, ms: u64) -> Option<Message> {
    tokio::time::timeout(Duration::from_millis(ms), ws.next())
        .await
        .expect("a frame in time")
        .map(|r| r.expect("frame"))
}

/// Asserts no data frame arrives within `ms`.
pub async fn ws_silent(ws: &mut Ws, ms: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("unexpected frame {other:?}"),
        }
    }
}

pub async fn ws_send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// The records of one recorded transcript (`tests/data/sente-transcripts/<name>.jsonl`).
pub fn load_transcript(name: &str) -> Vec<serde_json::Value> {
    let path = format!(
        "{}/../../tests/data/sente-transcripts/{name}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
