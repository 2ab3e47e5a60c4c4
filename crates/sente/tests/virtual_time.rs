//! Timing through the real service in virtual time (`tokio::time::pause`): the service is called
//! in-process, so the Ajax poll hold, the batching window, the lp-timeout and the grace period
//! are checked to the millisecond without sleeping.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use sente::{ChskService, EventStream, Uid};
use sente_proto::Value;
use std::time::Duration;
use tokio::time::Instant;
use tower::ServiceExt;

async fn get(svc: &ChskService, target: &str) -> String {
    let mut req = http::Request::get(target).header("Host", "127.0.0.1:8300");
    for (k, v) in ajax_headers() {
        req = req.header(k, v);
    }
    let resp = svc
        .clone()
        .oneshot(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

async fn next_event(events: &mut EventStream) -> (String, Instant) {
    let msg = events.recv().await.unwrap();
    (pr(&msg.event.to_value()), Instant::now())
}

#[tokio::test(start_paused = true)]
async fn ajax_poll_hold_batch_window_lp_timeout_and_grace() {
    let (server, mut events) = transcript_builder().build_with_events().unwrap();
    let svc = server.service_at("/chsk");
    let hs = get(&svc, "/chsk?uid=v&client-id=c&handshake%3F=1").await;
    assert!(hs.starts_with("[[:chsk/handshake [\"v\" nil"));

    // A long-poll is held; pushes go out exactly send_buf_ms_ajax (100 ms) after the first.
    let t0 = Instant::now();
    let poll = tokio::spawn({
        let svc = svc.clone();
        async move { (get(&svc, "/chsk?uid=v&client-id=c").await, Instant::now()) }
    });
    let (open, at) = next_event(&mut events).await;
    assert_eq!((open.as_str(), at), ("[:chsk/uidport-open \"v\"]", t0));
    assert!(
        server
            .connected_uids()
            .borrow()
            .ajax
            .contains(&Uid::from("v"))
    );
    tokio::time::sleep(Duration::from_millis(7)).await;
    server
        .send(&Uid::from("v"), ev("t/a", Value::Int(1)))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    server
        .send(&Uid::from("v"), ev("t/b", Value::Int(2)))
        .unwrap();
    let (body, at) = poll.await.unwrap();
    assert_eq!(body, "[[[:t/a 1] [:t/b 2]] nil]");
    assert_eq!(at - t0, Duration::from_millis(107));

    // The next poll gets nothing: [:chsk/timeout nil] exactly lp_timeout_ms (20 s) later.
    let t1 = Instant::now();
    let body = get(&svc, "/chsk?uid=v&client-id=c").await;
    assert_eq!(body, "[:chsk/timeout nil]");
    assert_eq!(t1.elapsed(), Duration::from_secs(20));

    // No more polls: uidport-close exactly ms_allow_reconnect_before_close_ajax (5 s) later.
    let t2 = Instant::now();
    let (close, at) = next_event(&mut events).await;
    assert_eq!(close, "[:chsk/uidport-close \"v\"]");
    assert_eq!(at - t2, Duration::from_secs(5));
    assert!(server.connected_uids().borrow().any.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_poll_within_the_grace_period_keeps_the_uid_connected() {
    let (server, mut events) = transcript_builder()
        .lp_timeout_ms(1000)
        .build_with_events()
        .unwrap();
    let svc = server.service_at("/chsk");
    get(&svc, "/chsk?uid=w&client-id=c&handshake%3F=1").await;
    let t0 = Instant::now();
    // Poll, time out, wait 4.9 s, poll again, for a minute: never disconnected.
    while t0.elapsed() < Duration::from_secs(60) {
        assert_eq!(
            get(&svc, "/chsk?uid=w&client-id=c").await,
            "[:chsk/timeout nil]"
        );
        tokio::time::sleep(Duration::from_millis(4_900)).await;
    }
    let (open, _) = next_event(&mut events).await;
    assert_eq!(open, "[:chsk/uidport-open \"w\"]");
    let waiting = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
    assert!(
        waiting.is_err(),
        "no uidport-close while the client keeps polling"
    );
}

#[tokio::test(start_paused = true)]
async fn an_ajax_reply_that_never_comes_times_out_after_lp_timeout() {
    let (server, mut events) = transcript_builder()
        .lp_timeout_ms(3000)
        .build_with_events()
        .unwrap();
    let svc = server.service_at("/chsk");
    let mut held = Vec::new();
    let t0 = Instant::now();
    let post = tokio::spawn({
        let svc = svc.clone();
        async move {
            let body = format!("client-id=p&ppstr={}", enc("[[:test/no-reply 1] :ajax]"));
            let mut req = http::Request::post("/chsk")
                .header("Host", "127.0.0.1:8300")
                .header("Content-Type", "application/x-www-form-urlencoded");
            for (k, v) in ajax_headers() {
                req = req.header(k, v);
            }
            let resp = svc
                .oneshot(req.body(Full::new(Bytes::from(body))).unwrap())
                .await
                .unwrap();
            resp.into_body().collect().await.unwrap().to_bytes()
        }
    });
    let mut msg = events.recv().await.unwrap();
    held.extend(msg.take_reply());
    assert_eq!(
        post.await.unwrap(),
        Bytes::from_static(b"[:chsk/timeout nil]")
    );
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
    let _ = server;
}
