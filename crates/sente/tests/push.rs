//! Server pushes: batching, fan-out to every client of a uid on both transports, in-order
//! delivery across batches and flushes, `Uid::AllWithoutUid`, `close_uid`, send errors.
#![allow(clippy::format_push_string)]

mod common;

use common::*;
use sente::{SendError, Uid};
use sente_proto::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The event numbers of a pushed batch frame `[[[:t/n 1] ...] nil]`.
fn batch_nums(text: &str) -> Vec<i64> {
    let v = read(text);
    let items = v.as_seq().unwrap();
    assert_eq!(items[1], Value::Nil);
    items[0]
        .as_seq()
        .unwrap()
        .iter()
        .map(|e| e.as_seq().unwrap()[1].as_i64().unwrap())
        .collect()
}

async fn ws_open(h: &mut Harness, query: &str) -> Ws {
    let mut ws = ws_connect(h.addr, query).await;
    let hs = ws_text(&mut ws).await;
    assert!(hs.starts_with("[[:chsk/handshake "), "{hs}");
    ws
}

async fn ajax_handshake(h: &Harness, query: &str) {
    let r = raw(
        h.addr,
        &get_req(&format!("/chsk?{query}&handshake%3F=1"), &ajax_headers()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("[[:chsk/handshake "));
}

#[tokio::test]
async fn pushes_arrive_in_send_order_across_batches_and_flushes_on_ws() {
    let mut h = start(transcript_builder()).await;
    let mut ws = ws_open(&mut h, "uid=o&client-id=c1&csrf-token=tok-123").await;
    let uid = Uid::from("o");
    let mut expected = Vec::new();
    for n in 0..300i64 {
        let e = ev("t/n", Value::Int(n));
        if n % 7 == 0 {
            h.server.send_flush(&uid, e).unwrap();
        } else {
            h.server.send(&uid, e).unwrap();
        }
        expected.push(n);
        if n % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(35)).await;
        }
    }
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.extend(batch_nums(&ws_text(&mut ws).await));
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn pushes_arrive_in_send_order_on_ajax() {
    let h = start(transcript_builder()).await;
    let q = "uid=o&client-id=a1";
    ajax_handshake(&h, q).await;
    let uid = Uid::from("o");
    let poller = {
        let addr = h.addr;
        tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 100 {
                let r = raw(addr, &get_req(&format!("/chsk?{q}"), &ajax_headers())).await;
                assert_eq!(r.status, 200);
                if r.text() != "[:chsk/timeout nil]" {
                    got.extend(batch_nums(&r.text()));
                }
            }
            got
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 0..100i64 {
        let e = ev("t/n", Value::Int(n));
        if n % 3 == 0 {
            h.server.send_flush(&uid, e).unwrap();
        } else {
            h.server.send(&uid, e).unwrap();
        }
    }
    assert_eq!(poller.await.unwrap(), (0..100).collect::<Vec<_>>());
}

#[tokio::test]
async fn one_push_reaches_every_client_of_the_uid_on_both_transports() {
    let mut h = start(transcript_builder()).await;
    let mut a = ws_open(&mut h, "uid=u6&client-id=A&csrf-token=tok-123").await;
    let mut b = ws_open(&mut h, "uid=u6&client-id=B&csrf-token=tok-123").await;
    let mut other = ws_open(&mut h, "uid=zz&client-id=Z&csrf-token=tok-123").await;
    ajax_handshake(&h, "uid=u6&client-id=C").await;
    let poll = {
        let addr = h.addr;
        tokio::spawn(async move {
            raw(addr, &get_req("/chsk?uid=u6&client-id=C", &ajax_headers())).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = h.server.connected_uids().borrow().clone();
    assert!(c.ws.contains(&Uid::from("u6")) && c.ajax.contains(&Uid::from("u6")));
    h.server
        .send(&Uid::from("u6"), ev("t/hi", n_map(1)))
        .unwrap();
    let frame = "[[[:t/hi {:n 1}]] nil]";
    assert_eq!(ws_text(&mut a).await, frame);
    assert_eq!(ws_text(&mut b).await, frame);
    assert_eq!(poll.await.unwrap().text(), frame);
    ws_silent(&mut other, 200).await;
}

#[tokio::test]
async fn all_without_uid_reaches_every_anonymous_client() {
    let mut h = start(transcript_builder()).await;
    let mut anon1 = ws_open(&mut h, "client-id=n1&csrf-token=tok-123").await;
    let mut anon2 = ws_open(&mut h, "client-id=n2&csrf-token=tok-123").await;
    let mut named = ws_open(&mut h, "uid=u&client-id=n3&csrf-token=tok-123").await;
    h.server
        .send_flush(&Uid::AllWithoutUid, ev("t/all", Value::Nil))
        .unwrap();
    assert_eq!(ws_text(&mut anon1).await, "[[[:t/all nil]] nil]");
    assert_eq!(ws_text(&mut anon2).await, "[[[:t/all nil]] nil]");
    ws_silent(&mut named, 200).await;
}

#[tokio::test]
async fn close_uid_closes_ws_with_1000_and_ends_ajax_polls_the_client_comes_back() {
    let mut h = start(transcript_builder()).await;
    let mut ws = ws_open(&mut h, "uid=k&client-id=w&csrf-token=tok-123").await;
    ajax_handshake(&h, "uid=k&client-id=x").await;
    let poll = {
        let addr = h.addr;
        tokio::spawn(async move {
            raw(addr, &get_req("/chsk?uid=k&client-id=x", &ajax_headers())).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Buffered pushes go out before the close.
    h.server
        .send(&Uid::from("k"), ev("t/bye", Value::Nil))
        .unwrap();
    h.server
        .send(&Uid::from("k"), ev("chsk/close", Value::Nil))
        .unwrap();
    assert_eq!(ws_text(&mut ws).await, "[[[:t/bye nil]] nil]");
    match ws_frame(&mut ws, 5000).await {
        Some(Message::Close(Some(c))) => {
            assert_eq!(u16::from(c.code), 1000);
            assert_eq!(c.reason.as_str(), "");
        }
        other => panic!("expected close, got {other:?}"),
    }
    assert_eq!(poll.await.unwrap().text(), "[[[:t/bye nil]] nil]");
    // The Ajax client polls again: this poll is ended by the next close.
    let poll = {
        let addr = h.addr;
        tokio::spawn(async move {
            raw(addr, &get_req("/chsk?uid=k&client-id=x", &ajax_headers())).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.server.close_uid(&Uid::from("k"));
    assert_eq!(poll.await.unwrap().status, 410);
    // WebSocket clients reconnect (a kick, not a ban).
    let mut ws = ws_open(&mut h, "uid=k&client-id=w&csrf-token=tok-123").await;
    h.server
        .send_flush(&Uid::from("k"), ev("t/again", Value::Nil))
        .unwrap();
    assert_eq!(ws_text(&mut ws).await, "[[[:t/again nil]] nil]");
}

#[tokio::test]
async fn replies_never_overtake_earlier_pushes() {
    let mut h = start(transcript_builder()).await;
    let mut ws = ws_open(&mut h, "uid=r&client-id=r1&csrf-token=tok-123").await;
    // push-me's first three pushes are buffered for 30 ms; a flushed push then the echo reply.
    h.server
        .send(&Uid::from("r"), ev("t/first", Value::Nil))
        .unwrap();
    h.server
        .send_flush(&Uid::from("r"), ev("t/second", Value::Nil))
        .unwrap();
    ws_send(&mut ws, "[[:test/echo 1] \"cb0001\"]").await;
    assert_eq!(
        ws_text(&mut ws).await,
        "[[[:t/first nil] [:t/second nil]] nil]"
    );
    assert_eq!(ws_text(&mut ws).await, "[{:echo 1} \"cb0001\"]");
}

#[tokio::test]
async fn send_errors_are_typed() {
    let h = start(transcript_builder()).await;
    let uid = Uid::from("u");
    assert!(matches!(
        h.server.send(&uid, ev("chsk/handshake", Value::Nil)),
        Err(SendError::Reserved(_))
    ));
    let big = Value::Str("x".repeat(2 << 20));
    assert!(matches!(
        h.server.send(&uid, ev("t/big", big)),
        Err(SendError::TooLarge { .. })
    ));
    // Sending to a uid with no client is fine (dropped, as in Sente).
    h.server
        .send(&Uid::from("nobody"), ev("t/x", Value::Nil))
        .unwrap();
}

#[tokio::test]
async fn large_pushes_and_replies_arrive_whole() {
    let mut h = start(transcript_builder()).await;
    let mut ws = ws_open(&mut h, "uid=big&client-id=b1&csrf-token=tok-123").await;
    let text = "é".repeat(60_000);
    h.server
        .send_flush(&Uid::from("big"), ev("t/big", Value::from(text.as_str())))
        .unwrap();
    assert_eq!(
        ws_text(&mut ws).await,
        format!("[[[:t/big \"{text}\"]] nil]")
    );
    ws_send(&mut ws, &format!("[[:test/echo \"{text}\"] \"cb0001\"]")).await;
    assert_eq!(
        ws_text(&mut ws).await,
        format!("[{{:echo \"{text}\"}} \"cb0001\"]")
    );
}

/// An edn packer that counts how many messages it packs.
#[derive(Debug, Default)]
struct Counting(std::sync::atomic::AtomicUsize);

impl sente_proto::Packer for Counting {
    fn name(&self) -> &'static str {
        "edn"
    }
    fn is_binary(&self) -> bool {
        false
    }
    fn pack(&self, value: &Value) -> Result<sente_proto::Packed, sente_proto::PackError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        sente_proto::packer::EdnPacker.pack(value)
    }
    fn unpack(
        &self,
        input: &[u8],
        limits: &sente_proto::Limits,
    ) -> Result<Value, sente_proto::UnpackError> {
        sente_proto::packer::EdnPacker.unpack(input, limits)
    }
}

#[tokio::test]
async fn a_broadcast_is_packed_once() {
    let packer = std::sync::Arc::new(Counting::default());
    // One shard: a batch is made (and packed) once per shard its uids live in.
    let mut h = start(transcript_builder().packer(packer.clone()).core_shards(1)).await;
    let mut clients = Vec::new();
    for i in 0..30 {
        // Two tabs for some uids, to check fan-out within a uid too.
        clients.push(
            ws_open(
                &mut h,
                &format!("uid=b{}&client-id=t{i}&csrf-token=tok-123", i % 20),
            )
            .await,
        );
    }
    let mut rx = h.server.connected_uids();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|c| c.any.len() == 20))
        .await
        .unwrap()
        .unwrap();
    let before = packer.0.load(std::sync::atomic::Ordering::SeqCst);
    h.server
        .broadcast(ev("t/news", Value::from("hello")))
        .unwrap();
    for ws in &mut clients {
        assert_eq!(ws_text(ws).await, "[[[:t/news \"hello\"]] nil]");
    }
    assert_eq!(
        packer.0.load(std::sync::atomic::Ordering::SeqCst) - before,
        1
    );
}

#[tokio::test]
async fn a_flushed_send_many_reaches_every_client_in_order_and_is_packed_once() {
    let packer = std::sync::Arc::new(Counting::default());
    // A long window, so the earlier pushes are still buffered when the flush comes.
    let b = transcript_builder()
        .packer(packer.clone())
        .send_buf_ms_ws(600_000)
        // One shard: a batch is made (and packed) once per shard its uids live in.
        .core_shards(1);
    let mut h = start(b).await;
    let mut clients = Vec::new();
    for i in 0..30 {
        let uid = i % 20;
        let ws = ws_open(
            &mut h,
            &format!("uid=m{uid}&client-id=t{i}&csrf-token=tok-123"),
        )
        .await;
        clients.push((uid, ws));
    }
    let mut rx = h.server.connected_uids();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|c| c.any.len() == 20))
        .await
        .unwrap()
        .unwrap();
    let uids: Vec<Uid> = (0..20).map(|i| Uid::from(format!("m{i}"))).collect();
    // Earlier buffered pushes to uids 0 and 1 (the same event: one shared batch) and to 2.
    h.server
        .send_many(&uids[..2], ev("t/n", Value::Int(1)))
        .unwrap();
    h.server.send(&uids[2], ev("t/n", Value::Int(2))).unwrap();
    let before = packer.0.load(std::sync::atomic::Ordering::SeqCst);
    h.server
        .send_many_flush(&uids, ev("t/n", Value::Int(3)))
        .unwrap();
    for (uid, ws) in &mut clients {
        let expected = match uid {
            0 | 1 => vec![1, 3],
            2 => vec![2, 3],
            _ => vec![3],
        };
        assert_eq!(batch_nums(&ws_text(ws).await), expected, "uid m{uid}");
    }
    // Three distinct batches: [1 3], [2 3] and [3].
    assert_eq!(
        packer.0.load(std::sync::atomic::Ordering::SeqCst) - before,
        3
    );
    // broadcast_flush: every connected uid, packed once.
    h.server.broadcast_flush(ev("t/n", Value::Int(4))).unwrap();
    for (_, ws) in &mut clients {
        assert_eq!(batch_nums(&ws_text(ws).await), vec![4]);
    }
    assert_eq!(
        packer.0.load(std::sync::atomic::Ordering::SeqCst) - before,
        4
    );
}
