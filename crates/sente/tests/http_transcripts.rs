//! Replays the HTTP exchanges of the recorded Sente 1.21 transcripts (`2-ajax`, `5-rejections`)
//! against our server with the same options: every request is sent at its recorded time (on its
//! own connection), aborted where the recorded client gave up, and its response compared with the
//! recorded one, modulo the documented improvements. The events that reach the handler are
//! compared too, in order.
#![allow(
    clippy::format_push_string,
    clippy::type_complexity,
    clippy::assigning_clones
)]
#![allow(clippy::duration_suboptimal_units, clippy::cast_lossless)]

mod common;

use common::*;
use serde_json::Value as J;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(Clone, Debug)]
struct Req {
    xid: u64,
    t: f64,
    label: String,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
    abort_at: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
struct Expect {
    status: u16,
    body: String,
}

const MISSING: &str = "Missing client-id";
const UNPACK: &str = "The message could not be unpacked";

/// The recorded response, or ours where we deliberately differ.
fn expected(req: &Req, recorded: Option<Expect>) -> Option<Expect> {
    let rec = recorded?;
    let has_cid = req.target.contains("client-id=") && !req.target.contains("client-id=&")
        || req.body.contains("client-id=");
    Some(match rec.status {
        500 if rec.body.contains("client id") => Expect {
            status: 400,
            body: MISSING.into(),
        },
        500 if req.body.contains("legacy-plus") => Expect {
            status: 200,
            body: "[{:echo \"legacy-plus\"} nil]".into(),
        },
        500 => Expect {
            status: 400,
            body: UNPACK.into(),
        },
        200 if req.method == "POST" && !has_cid => Expect {
            status: 400,
            body: MISSING.into(),
        },
        _ => rec,
    })
}

/// Handler events we deliberately add or drop relative to the recording, by request.
fn expected_handled(req: &Req, recorded: Vec<(String, bool)>) -> Vec<(String, bool)> {
    if req.body.contains("legacy-plus") {
        return vec![("[:test/echo \"legacy-plus\"]".into(), true)];
    }
    recorded
}

fn parse(records: &[J]) -> (Vec<Req>, HashMap<u64, Expect>, Vec<(u64, String, bool)>) {
    let mut reqs: Vec<Req> = Vec::new();
    let mut resps = HashMap::new();
    let mut handled = Vec::new();
    let mut label = String::new();
    let mut last_xid = 0;
    for r in records {
        let t = r["t_ms"].as_f64().unwrap_or(0.0);
        match (
            r["dir"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
        ) {
            ("driver", _) => {
                let text = r["text"].as_str().unwrap_or("");
                if let Some(l) = text.strip_prefix("raw request: ") {
                    l.clone_into(&mut label);
                }
            }
            ("c2s", "http-request") => {
                let headers = r["headers"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let xid = r["xid"].as_u64().unwrap();
                last_xid = xid;
                reqs.push(Req {
                    xid,
                    t,
                    label: label.clone(),
                    method: r["method"].as_str().unwrap().into(),
                    target: r["target"].as_str().unwrap().into(),
                    headers,
                    body: r["body"].as_str().unwrap_or("").into(),
                    abort_at: None,
                });
            }
            ("s2c", "http-response") => {
                let body = r["body"].as_str().unwrap_or("").to_owned();
                resps.insert(
                    r["xid"].as_u64().unwrap(),
                    Expect {
                        status: r["status"].as_u64().unwrap() as u16,
                        body,
                    },
                );
            }
            ("c2s", "tcp-fin") => {
                for x in r["pending_xids"].as_array().into_iter().flatten() {
                    if let Some(q) = reqs.iter_mut().find(|q| Some(q.xid) == x.as_u64()) {
                        q.abort_at = Some(t);
                    }
                }
            }
            ("server-handler", _) => {
                let event = r["event"].as_str().unwrap().to_owned();
                if !event.starts_with("[:chsk/uidport") {
                    handled.push((last_xid, event, r["has_reply_fn"].as_bool().unwrap()));
                }
            }
            _ => {}
        }
    }
    (reqs, resps, handled)
}

fn request_bytes(req: &Req) -> Vec<u8> {
    let mut s = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    let upgrade = req.headers.iter().any(|(k, _)| k == "upgrade");
    for (k, v) in &req.headers {
        if k == "content-length" || k == "connection" {
            continue;
        }
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    if upgrade {
        s.push_str("Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    } else {
        s.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            req.body.len(),
            req.body
        ));
    }
    s.into_bytes()
}

async fn send(addr: std::net::SocketAddr, req: &Req) -> Option<Resp> {
    let bytes = request_bytes(req);
    match req.abort_at {
        Some(at) => {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            tokio::time::sleep(Duration::from_millis((at - req.t).max(0.0) as u64)).await;
            None // the recorded client gave up: close without reading
        }
        None => Some(raw(addr, &bytes).await),
    }
}

async fn replay(name: &str, builder: sente::Builder) -> common::Harness {
    let (reqs, resps, handled) = parse(&load_transcript(name));
    let mut h = start(builder).await;
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for req in reqs.clone() {
        let addr = h.addr;
        let exp = expected(&req, resps.get(&req.xid).cloned());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(t0 + Duration::from_micros((req.t * 1000.0) as u64)).await;
            let got = send(addr, &req).await;
            match (got, exp) {
                (Some(got), Some(exp)) => {
                    assert_eq!(
                        got.status, exp.status,
                        "{} ({} {})",
                        req.label, req.method, req.target
                    );
                    if exp.status == 101 {
                        return;
                    }
                    let text = got.text();
                    assert!(
                        text.starts_with(&exp.body),
                        "{}: got {text:?}, want {:?}",
                        req.label,
                        exp.body
                    );
                    if exp.body == MISSING || exp.body == UNPACK {
                        return;
                    }
                    assert_eq!(text, exp.body, "{}", req.label);
                }
                (None, None) => {}
                (got, exp) => panic!("{}: got {got:?}, expected {exp:?}", req.label),
            }
        }));
    }
    // Handler events, in recorded order (our per-request adjustments applied).
    let mut want = Vec::new();
    for req in &reqs {
        let rec: Vec<_> = handled
            .iter()
            .filter(|(x, ..)| *x == req.xid)
            .map(|(_, e, r)| (e.clone(), *r))
            .collect();
        want.extend(expected_handled(req, rec));
    }
    for (event, has_reply) in want {
        let got = h.next_app().await;
        assert_eq!(
            (got.event.as_str(), got.has_reply),
            (event.as_str(), has_reply)
        );
    }
    for t in tasks {
        t.await.unwrap();
    }
    h
}

#[tokio::test]
async fn transcript_5_rejections() {
    let mut h = replay("5-rejections", transcript_builder()).await;
    h.none_within(100).await;
}

#[tokio::test]
async fn transcript_2_ajax() {
    let mut h = replay("2-ajax", transcript_builder().lp_timeout_ms(3000)).await;
    // The client disconnected (its last poll was aborted): uidport-close after the 5 s grace.
    let mut events = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(15), h.handled.recv())
            .await
            .unwrap()
            .unwrap();
        events.push(e.event.clone());
        if e.event.starts_with("[:chsk/uidport-close") {
            break;
        }
    }
    assert_eq!(
        events.last().unwrap(),
        "[:chsk/uidport-close :sente/nil-uid]"
    );
}
