//! Limits on every transport: message bytes, header bytes, pending replies, connections per
//! uid, a slow client's send queue. Over a limit only that request / connection is affected.
#![allow(clippy::format_push_string)]

mod common;

use common::*;
use futures::StreamExt;
use sente::{ServerLimits, Uid};
use sente_proto::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn small(limits: impl FnOnce(&mut ServerLimits)) -> sente::Builder {
    let mut l = ServerLimits::default();
    l.message.max_message_bytes = 1024;
    limits(&mut l);
    transcript_builder().limits(l)
}

#[tokio::test]
async fn ws_frame_over_the_limit_closes_1009_others_unaffected() {
    let mut h = start(small(|_| {})).await;
    let mut big = ws_connect(h.addr, "uid=a&client-id=big&csrf-token=tok-123").await;
    let mut ok = ws_connect(h.addr, "uid=b&client-id=ok&csrf-token=tok-123").await;
    ws_text(&mut big).await;
    ws_text(&mut ok).await;
    ws_send(
        &mut big,
        &format!("[[:test/echo \"{}\"] \"cb0001\"]", "x".repeat(2000)),
    )
    .await;
    match ws_frame(&mut big, 5000).await {
        Some(Message::Close(Some(c))) => assert_eq!(u16::from(c.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    ws_send(&mut ok, "[[:test/echo \"fine\"] \"cb0002\"]").await;
    assert_eq!(ws_text(&mut ok).await, "[{:echo \"fine\"} \"cb0002\"]");
    let _ = &mut h;
}

#[tokio::test]
async fn ajax_post_over_the_limit_is_413() {
    let h = start(small(|_| {})).await;
    let r = post_ppstr(
        h.addr,
        "c1",
        &format!("[[:test/echo \"{}\"] :ajax]", "y".repeat(2000)),
    )
    .await;
    assert_eq!(r.status, 413);
    // A binary body over the limit, announced by Content-Length.
    let mut hd = ajax_headers();
    hd.push(("Content-Type", "application/octet-stream"));
    let r = raw(
        h.addr,
        &post_req(
            "/chsk?client-id=c1&packer=msgpack&binary%3F=true",
            &hd,
            &[0u8; 2000],
        ),
    )
    .await;
    assert_eq!(r.status, 413);
    // The next request is fine.
    let r = post_ppstr(h.addr, "c1", "[[:test/echo 1] :ajax]").await;
    assert_eq!(r.text(), "[{:echo 1} nil]");
}

#[tokio::test]
async fn header_bytes_over_the_limit_is_431() {
    let h = start(small(|l| l.max_header_bytes = 1024)).await;
    let cookie = format!("big={}", "z".repeat(2000));
    let mut hd = ajax_headers();
    hd.push(("Cookie", &cookie));
    let r = raw(h.addr, &get_req("/chsk?client-id=c&handshake%3F=1", &hd)).await;
    assert_eq!(r.status, 431);
}

#[tokio::test]
async fn too_many_pending_replies_is_429() {
    let h = start(
        transcript_builder().limits(ServerLimits::default().max_pending_replies_per_client(2)),
    )
    .await;
    let addr = h.addr;
    let held: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move { post_ppstr(addr, "p", "[[:test/no-reply 1] :ajax]").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = post_ppstr(h.addr, "p", "[[:test/no-reply 2] :ajax]").await;
    assert_eq!(r.status, 429);
    // Another client is not affected.
    let r = post_ppstr(h.addr, "q", "[[:test/echo 2] :ajax]").await;
    assert_eq!(r.text(), "[{:echo 2} nil]");
    for t in held {
        t.abort();
    }
}

#[tokio::test]
async fn connections_per_uid_over_the_limit_is_429() {
    let h = start(transcript_builder().limits(ServerLimits::default().max_connections_per_uid(2)))
        .await;
    let _a = ws_connect(h.addr, "uid=m&client-id=1&csrf-token=tok-123").await;
    let _b = ws_connect(h.addr, "uid=m&client-id=2&csrf-token=tok-123").await;
    let mut req = get_req(
        "/chsk?uid=m&client-id=3&csrf-token=tok-123",
        &[("Origin", ORIGIN)],
    );
    req.truncate(req.len() - 2);
    req.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    let r = raw(h.addr, &req).await;
    assert_eq!(r.status, 429);
    // Ajax too.
    let r = raw(
        h.addr,
        &get_req("/chsk?uid=m&client-id=4&handshake%3F=1", &ajax_headers()),
    )
    .await;
    assert_eq!(r.status, 429);
    // Other uids are fine.
    let _c = ws_connect(h.addr, "uid=other&client-id=3&csrf-token=tok-123").await;
}

#[tokio::test]
async fn a_stalled_ws_client_is_dropped_others_unaffected() {
    let h = start(
        transcript_builder().limits(
            ServerLimits::default()
                .max_pending_events_per_client(8)
                .ws_write_timeout_ms(300),
        ),
    )
    .await;
    let mut stalled = ws_connect(h.addr, "uid=s&client-id=s1&csrf-token=tok-123").await;
    let mut ok = ws_connect(h.addr, "uid=t&client-id=t1&csrf-token=tok-123").await;
    ws_text(&mut ok).await;
    let chunk = Value::Str("w".repeat(256 * 1024));
    for _ in 0..400 {
        h.server
            .send_flush(&Uid::from("s"), ev("t/big", chunk.clone()))
            .unwrap();
    }
    // The stalled client eventually sees its connection end (after the frames the kernel had
    // buffered): the server dropped it instead of buffering without bound.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stalled.next().await {
                Some(Ok(Message::Text(_))) => {}
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "connection of the stalled client ended");
    h.server
        .send_flush(&Uid::from("t"), ev("t/ok", Value::Nil))
        .unwrap();
    assert_eq!(ws_text(&mut ok).await, "[[[:t/ok nil]] nil]");
}
