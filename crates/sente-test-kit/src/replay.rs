//! A scripted server that replays the server side of a recorded real-Sente transcript
//! (`tests/data/sente-transcripts/*.jsonl`) to a client under test.
//!
//! One client (one recorded client-id) is replayed: the recorded requests of that client-id are
//! matched to the live client's requests **by transport and order**, never by exact bytes:
//!
//! - **WebSocket:** the n-th upgrade gets the n-th recorded upgrade response. After a 101, the
//!   recorded frames of that connection are played in order: a client→server text frame waits for
//!   the client's next text frame (its callback id is mapped to the recorded one, so recorded
//!   replies carry the live id); a server→client frame is sent after the recorded gap (capped);
//!   a server close frame is sent as recorded, and a server `tcp-fin` closes the socket. After the
//!   script, the socket stays open (http-kit does not close TCP after a close handshake either).
//! - **Ajax:** requests are classified as handshake GET (`handshake?` present), poll GET or POST;
//!   each class answers with the next recorded response of that class, after its recorded latency
//!   (capped). A recorded request that never got a response is held open.
//!
//! Every text frame and request the client sent is logged ([`Replay::client_log`]), with the
//! callback id replaced by `<cb>`, so tests can compare it with what Sente's client sent.

use serde_json::Value as Json;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// How long a recorded gap or latency may be, at most, when replayed.
pub const MAX_GAP: Duration = Duration::from_millis(3500);
/// How long a scripted WebSocket waits for the client's next frame before giving up.
const CLIENT_FRAME_WAIT: Duration = Duration::from_secs(10);

/// The directory of the recorded transcripts.
pub fn transcripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/sente-transcripts")
}

/// Loads a transcript (`name` without `.jsonl`) as its JSON records.
pub fn load_transcript(name: &str) -> Vec<Json> {
    let path = transcripts_dir().join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("transcript line is JSON"))
        .collect()
}

/// The client-id of a recorded request (its `client-id` query param or form field).
pub fn record_client_id(r: &Json) -> Option<&str> {
    r["query"]["client-id"]
        .as_str()
        .or_else(|| r["form"]["client-id"].as_str())
}

/// The client-ids of the transcript's browser tabs, in the order they first appear.
pub fn client_ids(records: &[Json]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for r in records.iter().filter(|r| r["kind"] == "http-request") {
        if let Some(id) = record_client_id(r)
            && !ids.iter().any(|x| x == id)
        {
            ids.push(id.to_owned());
        }
    }
    ids
}

/// A recorded HTTP response.
#[derive(Clone, Debug)]
struct Resp {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: String,
    latency: Duration,
}

/// One step of a recorded WebSocket connection.
#[derive(Clone, Debug)]
enum WsStep {
    /// Wait for the client's next text frame; `cb` is the recorded callback id, if any.
    ClientText {
        /// The recorded frame.
        payload: String,
        /// Its callback id.
        cb: Option<String>,
    },
    /// Wait for the client's close frame.
    ClientClose,
    /// Send a text frame, `gap` after the previous step.
    ServerText { payload: String, gap: Duration },
    /// Send a close frame.
    ServerClose {
        code: u16,
        reason: String,
        gap: Duration,
    },
    /// Close the TCP connection.
    ServerFin { gap: Duration },
}

#[derive(Clone, Debug)]
struct WsSession {
    resp: Resp,
    steps: Vec<WsStep>,
}

#[derive(Default)]
struct Script {
    ws: VecDeque<WsSession>,
    /// Ajax responses by class ("hs", "poll", "post"); `None` = never answered.
    ajax: HashMap<&'static str, VecDeque<Option<Resp>>>,
}

fn ajax_class(method: &str, query: &HashMap<String, String>) -> &'static str {
    if method == "POST" {
        "post"
    } else if query.contains_key("handshake?") {
        "hs"
    } else {
        "poll"
    }
}

/// The callback id at the end of a client envelope `[ev cb]`, if it is a string.
fn envelope_cb(payload: &str) -> Option<String> {
    let p = payload.trim_end().strip_suffix(']')?.trim_end();
    let p = p.strip_suffix('"')?;
    let start = p.rfind('"')?;
    Some(p[start + 1..].to_owned())
}

fn gap(from: f64, to: f64) -> Duration {
    Duration::from_secs_f64(((to - from).max(0.0) / 1000.0).min(MAX_GAP.as_secs_f64()))
}

fn resp_of(r: &Json) -> Resp {
    let headers = r["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length"))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Resp {
        status: r["status"].as_u64().unwrap_or(200) as u16,
        reason: r["reason"].as_str().unwrap_or("OK").to_owned(),
        headers,
        body: r["body"].as_str().unwrap_or_default().to_owned(),
        latency: Duration::from_secs_f64(
            (r["latency_ms"].as_f64().unwrap_or(0.0) / 1000.0).min(MAX_GAP.as_secs_f64()),
        ),
    }
}

impl Script {
    fn build(records: &[Json], client_id: &str) -> Script {
        let mut script = Script::default();
        // Requests of this client, in order, with the connection they came on.
        let requests: Vec<&Json> = records
            .iter()
            .filter(|r| r["dir"] == "c2s" && r["kind"] == "http-request")
            .filter(|r| record_client_id(r) == Some(client_id))
            .collect();
        for req in requests {
            let (conn, xid) = (&req["conn"], &req["xid"]);
            let resp = records
                .iter()
                .find(|r| r["kind"] == "http-response" && r["conn"] == *conn && r["xid"] == *xid)
                .map(resp_of);
            if req["transport"] == "ws" {
                let Some(resp) = resp else { continue };
                let mut steps = Vec::new();
                let mut last_t = None;
                if resp.status == 101 {
                    let start = records
                        .iter()
                        .position(|r| r["kind"] == "http-response" && r["xid"] == *xid)
                        .unwrap_or(0);
                    last_t = records[start]["t_ms"].as_f64();
                    for r in records[start + 1..].iter().filter(|r| r["conn"] == *conn) {
                        let t = r["t_ms"].as_f64().unwrap_or(0.0);
                        let g = gap(last_t.unwrap_or(t), t);
                        let step =
                            match (r["dir"].as_str(), r["kind"].as_str(), r["opcode"].as_str()) {
                                (Some("c2s"), Some("ws-frame"), Some("text")) => {
                                    let payload = r["payload"].as_str().unwrap_or_default();
                                    WsStep::ClientText {
                                        cb: envelope_cb(payload),
                                        payload: payload.to_owned(),
                                    }
                                }
                                (Some("c2s"), Some("ws-frame"), Some("close")) => {
                                    WsStep::ClientClose
                                }
                                (Some("s2c"), Some("ws-frame"), Some("text")) => {
                                    WsStep::ServerText {
                                        payload: r["payload"]
                                            .as_str()
                                            .unwrap_or_default()
                                            .to_owned(),
                                        gap: g,
                                    }
                                }
                                (Some("s2c"), Some("ws-frame"), Some("close")) => {
                                    WsStep::ServerClose {
                                        code: r["close_code"].as_u64().unwrap_or(1000) as u16,
                                        reason: r["close_reason"]
                                            .as_str()
                                            .unwrap_or_default()
                                            .to_owned(),
                                        gap: g,
                                    }
                                }
                                (Some("s2c"), Some("tcp-fin"), _) => WsStep::ServerFin { gap: g },
                                _ => continue,
                            };
                        last_t = Some(t);
                        steps.push(step);
                    }
                }
                let _ = last_t;
                script.ws.push_back(WsSession { resp, steps });
            } else {
                let query: HashMap<String, String> = req["query"]
                    .as_object()
                    .map(|q| {
                        q.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let class = ajax_class(req["method"].as_str().unwrap_or("GET"), &query);
                script.ajax.entry(class).or_default().push_back(resp);
            }
        }
        script
    }
}

struct Shared {
    script: Mutex<Script>,
    log: Mutex<Vec<String>>,
}

/// A running replay server; it stops when dropped.
pub struct Replay {
    /// `http://127.0.0.1:<port>/chsk`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Replay {
    /// Replays the server side of transcript `name` for the recorded client `client_id`.
    pub async fn start(name: &str, client_id: &str) -> std::io::Result<Replay> {
        let records = load_transcript(name);
        Self::start_records(&records, client_id).await
    }

    /// Like [`Replay::start`], from loaded records.
    pub async fn start_records(records: &[Json], client_id: &str) -> std::io::Result<Replay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/chsk", listener.local_addr()?);
        let shared = Arc::new(Shared {
            script: Mutex::new(Script::build(records, client_id)),
            log: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve_conn(sock, s.clone()));
            }
        });
        Ok(Replay { url, shared, task })
    }

    /// What the client sent: `"ws-upgrade"`, `"ajax hs"`, `"ajax poll"`, `"ajax post <ppstr>"`,
    /// `"ws <payload>"` (callback ids as `<cb>`), `"ws close"`, in order.
    pub fn client_log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }

    fn log(shared: &Shared, line: String) {
        shared.log.lock().unwrap().push(line);
    }
}

/// `Some("ping")` for a client's `[[:chsk/ws-ping] cb]`, `Some("pong")` for `[[:chsk/ws-pong] nil]`.
pub fn keepalive_kind(payload: &str) -> Option<&'static str> {
    let p = payload.trim_start();
    if p.starts_with("[[:chsk/ws-ping]") {
        Some("ping")
    } else if p.starts_with("[[:chsk/ws-pong]") {
        Some("pong")
    } else {
        None
    }
}

/// Replaces the callback id of a client envelope by `<cb>`.
pub fn normalize_cb(payload: &str) -> String {
    match envelope_cb(payload) {
        Some(cb) => payload.replacen(&format!("\"{cb}\"]"), "\"<cb>\"]", 1),
        None => payload.to_owned(),
    }
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: String,
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_pairs(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
    buf.drain(..head_end + len);
    let query = parse_pairs(target.split_once('?').map_or("", |x| x.1));
    Some(Request {
        method,
        path: target.split('?').next().unwrap_or_default().to_owned(),
        query,
        headers,
        body,
    })
}

async fn write_response(sock: &mut TcpStream, r: &Resp, cors: Option<&str>) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, r.reason);
    for (k, v) in &r.headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if let Some(origin) = cors {
        let _ = write!(
            out,
            "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\n"
        );
    }
    if r.status != 101 {
        let _ = write!(out, "content-length: {}\r\n", r.body.len());
    }
    out.push_str("\r\n");
    out.push_str(&r.body);
    sock.write_all(out.as_bytes()).await
}

async fn serve_conn(mut sock: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        let origin = req.headers.get("origin").cloned();
        if req.method == "OPTIONS" {
            let r = Resp {
                status: 204,
                reason: "No Content".into(),
                headers: vec![
                    ("Access-Control-Allow-Methods".into(), "GET, POST".into()),
                    ("Access-Control-Allow-Headers".into(), "*".into()),
                ],
                body: String::new(),
                latency: Duration::ZERO,
            };
            let _ = write_response(&mut sock, &r, origin.as_deref()).await;
            continue;
        }
        if req.path == "/replay-log" {
            // For clients in another process: what they sent, as a JSON array of strings.
            let log = shared.log.lock().unwrap().clone();
            let r = Resp {
                status: 200,
                reason: "OK".into(),
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: serde_json::to_string(&log).unwrap_or_default(),
                latency: Duration::ZERO,
            };
            let _ = write_response(&mut sock, &r, origin.as_deref()).await;
            continue;
        }
        let is_ws = req
            .headers
            .get("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if is_ws {
            Replay::log(&shared, "ws-upgrade".into());
            let session = shared.script.lock().unwrap().ws.pop_front();
            let Some(mut session) = session else { return };
            if session.resp.status == 101 {
                let key = req
                    .headers
                    .get("sec-websocket-key")
                    .cloned()
                    .unwrap_or_default();
                session.resp.headers = vec![
                    ("Upgrade".into(), "websocket".into()),
                    ("Connection".into(), "Upgrade".into()),
                    (
                        "Sec-WebSocket-Accept".into(),
                        derive_accept_key(key.as_bytes()),
                    ),
                ];
                if write_response(&mut sock, &session.resp, None).await.is_ok() {
                    play_ws(sock, buf, session.steps, &shared).await;
                }
            } else {
                let _ = write_response(&mut sock, &session.resp, None).await;
            }
            return;
        }
        let class = ajax_class(&req.method, &req.query);
        let line = if class == "post" {
            let ppstr = parse_pairs(&req.body).remove("ppstr").unwrap_or_default();
            format!("ajax post {}", normalize_cb(&ppstr))
        } else {
            format!("ajax {class}")
        };
        Replay::log(&shared, line);
        let resp = shared
            .script
            .lock()
            .unwrap()
            .ajax
            .get_mut(class)
            .and_then(VecDeque::pop_front)
            .flatten();
        let Some(resp) = resp else {
            // Never answered in the recording (or nothing left): hold until the client gives up.
            let mut sink = [0u8; 1024];
            while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        };
        tokio::time::sleep(resp.latency).await;
        if write_response(&mut sock, &resp, origin.as_deref())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A client frame: opcode and unmasked payload.
async fn read_frame(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    loop {
        if buf.len() >= 2 {
            let opcode = buf[0] & 0x0f;
            let masked = buf[1] & 0x80 != 0;
            let (len, mut at): (usize, usize) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n if n < 126 => (n as usize, 2),
                _ => (usize::MAX, 0),
            };
            let need = at
                .saturating_add(if masked { 4 } else { 0 })
                .saturating_add(len);
            if len != usize::MAX && buf.len() >= need {
                let mask = if masked {
                    at += 4;
                    Some([buf[at - 4], buf[at - 3], buf[at - 2], buf[at - 1]])
                } else {
                    None
                };
                let mut payload = buf[at..at + len].to_vec();
                if let Some(m) = mask {
                    payload
                        .iter_mut()
                        .enumerate()
                        .for_each(|(i, b)| *b ^= m[i % 4]);
                }
                buf.drain(..need);
                return Some((opcode, payload));
            }
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn write_frame(sock: &mut TcpStream, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    sock.write_all(&out).await
}

async fn play_ws(mut sock: TcpStream, mut buf: Vec<u8>, steps: Vec<WsStep>, shared: &Shared) {
    // recorded callback id -> the live client's callback id
    let mut cbs: HashMap<String, String> = HashMap::new();
    for step in steps {
        match step {
            WsStep::ClientText {
                payload: recorded,
                cb,
            } => loop {
                let frame =
                    tokio::time::timeout(CLIENT_FRAME_WAIT, read_frame(&mut sock, &mut buf)).await;
                let Ok(Some((op, payload))) = frame else {
                    return;
                };
                match op {
                    1 => {
                        let text = String::from_utf8_lossy(&payload).into_owned();
                        Replay::log(shared, format!("ws {}", normalize_cb(&text)));
                        // Keepalive frames depend on timing: one the script does not expect
                        // here is answered as Sente would and skipped.
                        let kind = |t: &str| keepalive_kind(t);
                        if kind(&text).is_some() && kind(&text) != kind(&recorded) {
                            if kind(&text) == Some("ping")
                                && let Some(live) = envelope_cb(&text)
                            {
                                let pong = format!("[\"pong\" \"{live}\"]");
                                let _ = write_frame(&mut sock, 1, pong.as_bytes()).await;
                            }
                            continue;
                        }
                        if let (Some(rec), Some(live)) = (cb, envelope_cb(&text)) {
                            cbs.insert(rec, live);
                        }
                        break;
                    }
                    8 => {
                        Replay::log(shared, "ws close".into());
                        return;
                    }
                    9 => {
                        let _ = write_frame(&mut sock, 10, &payload).await;
                    }
                    _ => {}
                }
            },
            WsStep::ClientClose => loop {
                let frame =
                    tokio::time::timeout(CLIENT_FRAME_WAIT, read_frame(&mut sock, &mut buf)).await;
                let Ok(Some((op, payload))) = frame else {
                    return;
                };
                if op == 8 {
                    Replay::log(shared, "ws close".into());
                    break;
                }
                if op == 1 {
                    let text = String::from_utf8_lossy(&payload);
                    Replay::log(shared, format!("ws {}", normalize_cb(&text)));
                }
            },
            WsStep::ServerText { mut payload, gap } => {
                tokio::time::sleep(gap).await;
                if let Some(rec) = envelope_cb(&payload)
                    && let Some(live) = cbs.get(&rec)
                {
                    payload = payload.replacen(&format!("\"{rec}\"]"), &format!("\"{live}\"]"), 1);
                }
                if write_frame(&mut sock, 1, payload.as_bytes()).await.is_err() {
                    return;
                }
            }
            WsStep::ServerClose { code, reason, gap } => {
                tokio::time::sleep(gap).await;
                let mut p = code.to_be_bytes().to_vec();
                p.extend_from_slice(reason.as_bytes());
                if write_frame(&mut sock, 8, &p).await.is_err() {
                    return;
                }
            }
            WsStep::ServerFin { gap } => {
                tokio::time::sleep(gap).await;
                let _ = sock.shutdown().await;
                return;
            }
        }
    }
    // Script done: keep reading (answering WS pings) until the client goes away.
    while let Some((op, payload)) = read_frame(&mut sock, &mut buf).await {
        match op {
            1 => {
                let text = String::from_utf8_lossy(&payload).into_owned();
                Replay::log(shared, format!("ws {}", normalize_cb(&text)));
                if keepalive_kind(&text) == Some("ping")
                    && let Some(live) = envelope_cb(&text)
                {
                    let pong = format!("[\"pong\" \"{live}\"]");
                    let _ = write_frame(&mut sock, 1, pong.as_bytes()).await;
                }
            }
            8 => Replay::log(shared, "ws close".into()),
            9 => {
                let _ = write_frame(&mut sock, 10, &payload).await;
            }
            _ => {}
        }
    }
}

/// A driver step of one recorded tab: what the test must make its client do, and when.
#[derive(Clone, Debug)]
pub enum Action {
    /// `chsk-send!`: `event` as edn; with `timeout` = a request with a callback.
    Send {
        /// Delay from the client's creation.
        at: Duration,
        /// The driver's label (replies are keyed by it).
        label: String,
        /// The event, edn.
        event: String,
        /// The callback timeout, if any.
        timeout: Option<Duration>,
    },
    /// `chsk-disconnect!`.
    Disconnect {
        /// Delay from the client's creation.
        at: Duration,
    },
}

/// What Sente's client observed in one tab (up to a cutoff), in comparable form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// One entry per `chsk/state` that flipped `:open?`: `"open"` or `"closed <reason>"`.
    pub states: Vec<String>,
    /// Every other event that reached the router (handshake, pushes, ws-ping), as edn.
    pub recv: Vec<String>,
    /// Callback results: `(label, reply edn)`; errors as `:chsk/timeout`, `:chsk/error`, ...
    pub replies: Vec<(String, String)>,
}

/// Edn text in this crate's canonical printing (so Sente's and ours compare equal).
pub fn canonical_edn(text: &str) -> String {
    match sente_proto::edn::read(text, &sente_proto::edn::ReadOptions::default()) {
        Ok(v) => sente_proto::edn::to_edn_string(&v),
        Err(_) => text.to_owned(),
    }
}

/// The `:reason` of `:last-close` in a printed client state map.
fn last_close_reason(state: &str) -> String {
    state
        .split(":last-close {")
        .nth(1)
        .and_then(|s| s.split(":reason ").nth(1))
        .map_or_else(
            || "-".into(),
            |s| {
                s.split(['}', ',', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            },
        )
}

/// The recorded tab's start time (its `client-config` record).
fn tab_start(records: &[Json], tab: &str) -> f64 {
    records
        .iter()
        .find(|r| r["dir"] == "client-config" && r["tab"] == tab)
        .and_then(|r| r["t_ms"].as_f64())
        .unwrap_or(0.0)
}

/// What tab `tab` of the recording observed, up to `cutoff_ms` (transcript time).
pub fn expected(records: &[Json], tab: &str, cutoff_ms: f64) -> Observed {
    let mut o = Observed::default();
    for r in records
        .iter()
        .filter(|r| r["tab"] == tab && r["t_ms"].as_f64().unwrap_or(0.0) <= cutoff_ms)
    {
        match r["dir"].as_str() {
            Some("client-state") if r["open_changed"] == true => {
                o.states.push(if r["open"] == true {
                    "open".into()
                } else {
                    format!(
                        "closed {}",
                        last_close_reason(r["new"].as_str().unwrap_or(""))
                    )
                });
            }
            Some("client-recv") => o
                .recv
                .push(canonical_edn(r["event"].as_str().unwrap_or(""))),
            Some("client-reply") => o.replies.push((
                r["label"].as_str().unwrap_or("").to_owned(),
                canonical_edn(r["reply"].as_str().unwrap_or("")),
            )),
            _ => {}
        }
    }
    o
}

/// The driver steps of tab `tab`, up to `cutoff_ms`, timed from the tab's client creation.
pub fn actions(records: &[Json], tab: &str, cutoff_ms: f64) -> Vec<Action> {
    let start = tab_start(records, tab);
    records
        .iter()
        .filter(|r| r["tab"] == tab && r["t_ms"].as_f64().unwrap_or(0.0) <= cutoff_ms)
        .filter_map(|r| {
            let at = Duration::from_secs_f64((r["t_ms"].as_f64()? - start).max(0.0) / 1000.0);
            match r["dir"].as_str()? {
                "client-send" => Some(Action::Send {
                    at,
                    label: r["label"].as_str()?.to_owned(),
                    event: r["event"].as_str()?.to_owned(),
                    timeout: r["timeout_ms"].as_u64().map(Duration::from_millis),
                }),
                "client-call" if r["call"] == "chsk-disconnect!" => Some(Action::Disconnect { at }),
                _ => None,
            }
        })
        .collect()
}

/// What Sente's client sent in tab `tab` up to `cutoff_ms`, in [`Replay::client_log`] form.
pub fn expected_client_log(records: &[Json], client_id: &str, cutoff_ms: f64) -> Vec<String> {
    let conns: Vec<&Json> = records
        .iter()
        .filter(|r| r["kind"] == "http-request" && record_client_id(r) == Some(client_id))
        .map(|r| &r["conn"])
        .collect();
    let mut out = Vec::new();
    for r in records
        .iter()
        .filter(|r| r["dir"] == "c2s" && r["t_ms"].as_f64().unwrap_or(0.0) <= cutoff_ms)
    {
        let mine = record_client_id(r) == Some(client_id);
        match (r["kind"].as_str(), r["transport"].as_str()) {
            (Some("http-request"), Some("ws")) if mine => out.push("ws-upgrade".into()),
            (Some("http-request"), _) if mine => {
                let q: HashMap<String, String> = r["query"]
                    .as_object()
                    .map(|q| q.keys().map(|k| (k.clone(), String::new())).collect())
                    .unwrap_or_default();
                let class = ajax_class(r["method"].as_str().unwrap_or(""), &q);
                out.push(if class == "post" {
                    let ppstr = r["form"]["ppstr"].as_str().unwrap_or("");
                    format!("ajax post {}", normalize_cb(ppstr))
                } else {
                    format!("ajax {class}")
                });
            }
            (Some("ws-frame"), _) if conns.contains(&&r["conn"]) => match r["opcode"].as_str() {
                Some("text") => out.push(format!(
                    "ws {}",
                    normalize_cb(r["payload"].as_str().unwrap_or(""))
                )),
                Some("close") => out.push("ws close".into()),
                _ => {}
            },
            _ => {}
        }
    }
    out
}

/// One recorded tab, ready for a client in another process (node, a browser): a running
/// [`Replay`] and its description as JSON:
///
/// - `url` (the chsk endpoint) and `log_url` (`GET` it for [`Replay::client_log`] as JSON);
/// - `actions`: what the test must make its client do (`send`, `disconnect`), `at_ms` after
///   creating it, as the recording's driver did with Sente's client in tab `tab`;
/// - `expected`: what Sente's client observed ([`Observed`]: `states`, `recv`, `replies`);
/// - `expected_sent`: what Sente's client sent, in the form `log_url` returns for ours.
pub async fn start_case(
    transcript: &str,
    tab: &str,
    cutoff_ms: f64,
) -> std::io::Result<(Replay, Json)> {
    let records = load_transcript(transcript);
    let index = usize::from(tab.as_bytes().first().map_or(0, |b| b.saturating_sub(b'A')));
    let client_id = client_ids(&records)
        .get(index)
        .cloned()
        .ok_or_else(|| std::io::Error::other(format!("{transcript} has no tab {tab}")))?;
    let replay = Replay::start_records(&records, &client_id).await?;
    let acts: Vec<Json> = actions(&records, tab, cutoff_ms)
        .into_iter()
        .map(|a| match a {
            Action::Send {
                at,
                label,
                event,
                timeout,
            } => serde_json::json!({"kind": "send", "at_ms": at.as_millis() as u64,
                "label": label, "event": event,
                "timeout_ms": timeout.map(|t| t.as_millis() as u64)}),
            Action::Disconnect { at } => {
                serde_json::json!({"kind": "disconnect", "at_ms": at.as_millis() as u64})
            }
        })
        .collect();
    let want = expected(&records, tab, cutoff_ms);
    let info = serde_json::json!({
        "url": replay.url,
        "log_url": replay.url.replace("/chsk", "/replay-log"),
        "actions": acts,
        "expected": {"states": want.states, "recv": want.recv, "replies": want.replies},
        "expected_sent": expected_client_log(&records, &client_id, cutoff_ms),
    });
    Ok((replay, info))
}

/// Serves replays on demand for clients that cannot start processes (the WASM client in a
/// browser): `GET /start?transcript=1-ws&tab=A[&cutoff=12000]` starts a [`start_case`] replay
/// and answers its JSON description (CORS allowed for any origin). Replays live until the
/// listener's task ends.
pub async fn serve_control(listener: TcpListener) {
    let replays: Arc<Mutex<Vec<Replay>>> = Arc::default();
    while let Ok((mut sock, _)) = listener.accept().await {
        let replays = replays.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(req) = read_request(&mut sock, &mut buf).await {
                let origin = req.headers.get("origin").cloned();
                let q = |k: &str| req.query.get(k).cloned().unwrap_or_default();
                let cutoff = q("cutoff").parse().unwrap_or(f64::MAX);
                let (status, reason, body) = if req.path == "/start" {
                    match start_case(&q("transcript"), &q("tab"), cutoff).await {
                        Ok((replay, info)) => {
                            replays.lock().unwrap().push(replay);
                            (200, "OK", info.to_string())
                        }
                        Err(e) => (400, "Bad Request", e.to_string()),
                    }
                } else {
                    (404, "Not Found", "no such path".to_owned())
                };
                let r = Resp {
                    status,
                    reason: reason.into(),
                    headers: vec![("Content-Type".into(), "application/json".into())],
                    body,
                    latency: Duration::ZERO,
                };
                if write_response(&mut sock, &r, origin.as_deref())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}
