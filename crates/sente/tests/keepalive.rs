//! WebSocket keepalive (spec 5.5, 12.5 vectors 35-36) with short timings.

mod common;

use common::*;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn server_pings_an_idle_client_and_closes_after_the_ping_timeout() {
    let mut h = start(
        transcript_builder()
            .ws_kalive_ms(Some(400))
            .ws_ping_timeout_ms(Some(300)),
    )
    .await;
    let mut ws = ws_connect(h.addr, "uid=k&client-id=k1&csrf-token=tok-123").await;
    ws_text(&mut ws).await; // handshake
    let t = Instant::now();
    assert_eq!(ws_text(&mut ws).await, "[:chsk/ws-ping nil]");
    assert!(t.elapsed() >= Duration::from_millis(200));
    // Answer with a pong: the handler sees it, and the connection stays.
    ws_send(&mut ws, "[[:chsk/ws-pong] nil]").await;
    let e = h.next_app().await;
    assert_eq!((e.event.as_str(), e.has_reply), ("[:chsk/ws-pong]", false));
    assert_eq!(ws_text(&mut ws).await, "[:chsk/ws-ping nil]");
    // No answer this time: close 1000 with an empty reason, after the ping timeout.
    let t = Instant::now();
    match ws_frame(&mut ws, 5000).await {
        Some(Message::Close(Some(c))) => {
            assert_eq!(u16::from(c.code), 1000);
            assert_eq!(c.reason.as_str(), "");
        }
        other => panic!("expected close, got {other:?}"),
    }
    assert!(t.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn client_ping_gets_pong_and_reaches_the_handler_without_reply() {
    let mut h = start(transcript_builder()).await;
    let mut ws = ws_connect(h.addr, "uid=k&client-id=k2&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    ws_send(&mut ws, "[[:chsk/ws-ping] \"abcdef\"]").await;
    assert_eq!(ws_text(&mut ws).await, "[\"pong\" \"abcdef\"]");
    let e = h.next_app().await;
    assert_eq!((e.event.as_str(), e.has_reply), ("[:chsk/ws-ping]", false));
}

#[tokio::test]
async fn a_client_that_pings_is_never_pinged() {
    let mut h = start(
        transcript_builder()
            .ws_kalive_ms(Some(400))
            .ws_ping_timeout_ms(Some(300)),
    )
    .await;
    let mut ws = ws_connect(h.addr, "uid=k&client-id=k3&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ws_send(&mut ws, &format!("[[:chsk/ws-ping] \"p{i}\"]")).await;
        assert_eq!(ws_text(&mut ws).await, format!("[\"pong\" \"p{i}\"]"));
    }
    let _ = &mut h;
}
