//! Replays the WebSocket exchanges of the recorded Sente 1.21 transcripts (`1-ws`, `7-raw-ws`)
//! against our server with the same options, frame by frame, and checks the same frames come
//! back and the same events reach the handler, modulo the documented improvements.
#![allow(
    clippy::format_push_string,
    clippy::type_complexity,
    clippy::assigning_clones
)]
#![allow(clippy::duration_suboptimal_units, clippy::cast_lossless)]

mod common;

use common::*;
use futures::SinkExt;
use serde_json::Value as J;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

#[derive(Debug, Default)]
struct Step {
    send: Option<J>,
    frames: Vec<J>,
    handled: Vec<(String, bool)>,
}

/// Splits a transcript into steps: each client frame, with the server frames and handler events
/// that followed it.
fn steps(records: &[J]) -> (String, Vec<Step>) {
    let mut target = String::new();
    let mut steps = vec![Step::default()];
    for r in records {
        let kind = r["kind"].as_str().unwrap_or("");
        match (r["dir"].as_str().unwrap_or(""), kind) {
            ("c2s", "http-request") if r["transport"] == "ws" && target.is_empty() => {
                target = r["target"].as_str().unwrap().to_owned();
            }
            ("c2s", "ws-frame") => steps.push(Step {
                send: Some(r.clone()),
                ..Step::default()
            }),
            ("s2c", "ws-frame") => steps.last_mut().unwrap().frames.push(r.clone()),
            ("server-handler", _) => {
                let event = r["event"].as_str().unwrap().to_owned();
                if !event.starts_with("[:chsk/uidport") {
                    steps
                        .last_mut()
                        .unwrap()
                        .handled
                        .push((event, r["has_reply_fn"].as_bool().unwrap()));
                }
            }
            _ => {}
        }
    }
    (target, steps)
}

/// Our deliberate differences from Sente 1.21 for one client frame: `(frames, handled)`.
fn improved(sent: &J) -> Option<(Vec<String>, Vec<(String, bool)>)> {
    let bad_package = |data: &str| (vec![], vec![(format!("[:chsk/bad-package {data}]"), false)]);
    if sent["opcode"] == "binary" {
        let len = sent["length"].as_u64().unwrap();
        return Some(bad_package(&len.to_string()));
    }
    let text = sent["payload"].as_str()?;
    Some(match text {
        // Unusable envelopes: Sente throws inside the adapter and says nothing; we report them.
        ":test/echo" | "{:a 1}" | "[[:test/echo #foo/bar 1] \"cb0018\"]" | "[[:test/echo \"x\"" => {
            bad_package(&pr(&sente_proto::Value::from(text)))
        }
        // Sente <= 1.17 prefixed envelopes are accepted (spec 2.3).
        "+[[:test/echo \"legacy-plus\"] \"cb0016\"]" => (
            vec!["[{:echo \"legacy-plus\"} \"cb0016\"]".to_owned()],
            vec![("[:test/echo \"legacy-plus\"]".to_owned(), true)],
        ),
        "-[:test/echo \"legacy-minus\"]" => (
            vec![],
            vec![("[:test/echo \"legacy-minus\"]".to_owned(), false)],
        ),
        _ => return None,
    })
}

async fn replay(name: &str) {
    let (target, steps) = steps(&load_transcript(name));
    let mut h = start(transcript_builder()).await;
    let query = target.split_once('?').unwrap().1;
    let mut ws = ws_connect(h.addr, query).await;
    let uid = if query.contains("uid=u1") {
        "\"u1\""
    } else {
        "\"u7\""
    };
    let open = h.next().await;
    assert_eq!(open.event, format!("[:chsk/uidport-open {uid}]"));
    for step in steps {
        let (frames, handled) = match step.send.as_ref().and_then(improved) {
            Some((f, hd)) => (
                f.into_iter()
                    .map(|t| serde_json::json!({"opcode": "text", "payload": t}))
                    .collect(),
                hd,
            ),
            None => (step.frames.clone(), step.handled.clone()),
        };
        if let Some(sent) = &step.send {
            match sent["opcode"].as_str().unwrap() {
                "text" => ws_send(&mut ws, sent["payload"].as_str().unwrap()).await,
                "binary" => {
                    let bytes = hex(sent["payload_hex"].as_str().unwrap());
                    ws.send(Message::binary(bytes)).await.unwrap();
                }
                "ping" => ws
                    .send(Message::Ping(
                        hex(sent["payload_hex"].as_str().unwrap()).into(),
                    ))
                    .await
                    .unwrap(),
                "close" => {
                    let code = sent["close_code"].as_u64().unwrap() as u16;
                    let reason = sent["close_reason"].as_str().unwrap_or("").to_owned();
                    ws.send(Message::Close(Some(CloseFrame {
                        code: code.into(),
                        reason: reason.into(),
                    })))
                    .await
                    .unwrap();
                }
                other => panic!("unexpected opcode {other}"),
            }
        }
        for f in &frames {
            match f["opcode"].as_str().unwrap() {
                "text" => assert_eq!(
                    ws_text(&mut ws).await,
                    f["payload"].as_str().unwrap(),
                    "after {:?}",
                    step.send
                ),
                "pong" => match ws_frame(&mut ws, 5000).await {
                    Some(Message::Pong(p)) => {
                        assert_eq!(&p[..], &hex(f["payload_hex"].as_str().unwrap())[..]);
                    }
                    other => panic!("expected pong, got {other:?}"),
                },
                "close" => match ws_frame(&mut ws, 5000).await {
                    Some(Message::Close(Some(c))) => {
                        assert_eq!(u16::from(c.code), f["close_code"].as_u64().unwrap() as u16);
                        assert_eq!(c.reason.as_str(), f["close_reason"].as_str().unwrap_or(""));
                    }
                    other => panic!("expected close, got {other:?}"),
                },
                other => panic!("unexpected opcode {other}"),
            }
        }
        for (event, has_reply) in &handled {
            let got = h.next_app().await;
            assert_eq!(
                (&got.event, got.has_reply),
                (event, *has_reply),
                "after {:?}",
                step.send
            );
            assert_eq!(got.uid, uid);
        }
        if step.send.as_ref().is_some_and(|s| s["opcode"] != "close") && frames.is_empty() {
            ws_silent(&mut ws, 50).await;
        }
    }
    // After the client's close: uidport-close once the 2.5 s grace has passed, not before.
    let closed_at = tokio::time::Instant::now();
    let close = h.next().await;
    assert_eq!(close.event, format!("[:chsk/uidport-close {uid}]"));
    assert!(closed_at.elapsed() >= Duration::from_millis(2000));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn transcript_1_ws() {
    replay("1-ws").await;
}

#[tokio::test]
async fn transcript_7_raw_ws() {
    replay("7-raw-ws").await;
}
