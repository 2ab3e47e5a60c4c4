//! Bad input: unknown packers, missing client ids, malformed and hostile messages, aborted
//! requests, poll floods. Each gets a typed answer; nothing panics or hangs.
#![allow(clippy::format_push_string)]

mod common;

use common::*;
use sente::Uid;
use sente_proto::Value;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn unknown_packer_is_400_on_every_transport() {
    let h = start(transcript_builder()).await;
    let r = raw(
        h.addr,
        &get_req(
            "/chsk?client-id=c&packer=yaml&handshake%3F=1",
            &ajax_headers(),
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Unknown packer \"yaml\""), "{}", r.text());
    let mut hd = ajax_headers();
    hd.push(("Content-Type", "application/x-www-form-urlencoded"));
    let r = raw(
        h.addr,
        &post_req("/chsk?packer=xml", &hd, b"client-id=c&ppstr=%5B%5D"),
    )
    .await;
    assert_eq!(r.status, 400);
    let mut req = get_req(
        "/chsk?client-id=c&csrf-token=tok-123&packer=nope",
        &[("Origin", ORIGIN)],
    );
    req.truncate(req.len() - 2);
    req.extend_from_slice(b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    let r = raw(h.addr, &req).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn missing_or_blank_client_id_is_400_with_a_clear_body() {
    let h = start(transcript_builder()).await;
    for target in [
        "/chsk?handshake%3F=1",
        "/chsk?client-id=&handshake%3F=1",
        "/chsk?client-id=%20%20",
    ] {
        let r = raw(h.addr, &get_req(target, &ajax_headers())).await;
        assert_eq!(r.status, 400, "{target}");
        assert!(r.text().contains("client-id"));
    }
    let long = "x".repeat(200);
    let r = raw(
        h.addr,
        &get_req(&format!("/chsk?client-id={long}"), &ajax_headers()),
    )
    .await;
    assert_eq!(r.status, 400);
    let mut hd = ajax_headers();
    hd.push(("Content-Type", "application/x-www-form-urlencoded"));
    let r = raw(
        h.addr,
        &post_req(
            "/chsk",
            &hd,
            b"udt=1&ppstr=%5B%5B%3Atest%2Fecho%201%5D%20%3Aajax%5D",
        ),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn malformed_posts_get_a_prompt_400_with_the_reason() {
    let h = start(transcript_builder()).await;
    for ppstr in [
        "[[:test/echo \"x\"",
        "}",
        ":test/echo",
        "{:a 1}",
        "#foo/bar [1]",
        "[[:a/b \"\\q\"]]",
    ] {
        let r = post_ppstr(h.addr, "c", ppstr).await;
        assert_eq!(r.status, 400, "{ppstr}");
        assert!(
            r.text().starts_with("The message could not be unpacked"),
            "{}",
            r.text()
        );
    }
}

#[tokio::test]
async fn deeply_nested_and_huge_values_are_refused_without_harm() {
    let mut h = start(transcript_builder()).await;
    let deep = format!(
        "[{}[:test/echo 1]{} nil]",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = post_ppstr(h.addr, "c", &deep).await;
    assert_eq!(r.status, 400);
    let wide = format!("[[:test/echo [{}]] nil]", "1 ".repeat(200_000));
    let r = post_ppstr(h.addr, "c", &wide).await;
    assert_eq!(r.status, 400);
    let mut ws = ws_connect(h.addr, "client-id=d&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    let deep = format!("{}1{}", "[".repeat(50_000), "]".repeat(50_000));
    ws_send(&mut ws, &deep).await;
    let e = h.next_app().await;
    assert!(
        e.event.starts_with("[:chsk/bad-package \"[[[["),
        "{}",
        &e.event[..40]
    );
    // Wrong arity and unqualified ids are bad events, with a reply if asked.
    ws_send(&mut ws, "[[:test/echo 1 2 3] \"cb0001\"]").await;
    let e = h.next_app().await;
    assert_eq!(
        (e.event.as_str(), e.has_reply),
        ("[:chsk/bad-event [:test/echo 1 2 3]]", true)
    );
    ws_send(&mut ws, "[[:unqualified] nil]").await;
    assert_eq!(h.next_app().await.event, "[:chsk/bad-event [:unqualified]]");
    // The connection is still usable.
    ws_send(&mut ws, "[[:test/echo \"alive\"] \"cb0002\"]").await;
    assert_eq!(ws_text(&mut ws).await, "[{:echo \"alive\"} \"cb0002\"]");
}

#[tokio::test]
async fn aborted_request_mid_body_does_not_hurt() {
    let h = start(transcript_builder()).await;
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(b"POST /chsk HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nclient-id=").await.unwrap();
        drop(s);
    }
    let r = post_ppstr(h.addr, "c", "[[:test/echo 1] :ajax]").await;
    assert_eq!(r.text(), "[{:echo 1} nil]");
}

#[tokio::test]
async fn a_flood_of_polls_from_one_client_id_keeps_one_held() {
    let h = start(transcript_builder()).await;
    let q = "client-id=flood";
    raw(
        h.addr,
        &get_req(&format!("/chsk?{q}&handshake%3F=1"), &ajax_headers()),
    )
    .await;
    let mut polls = Vec::new();
    for _ in 0..200 {
        let addr = h.addr;
        polls.push(tokio::spawn(async move {
            raw(addr, &get_req(&format!("/chsk?{q}"), &ajax_headers())).await
        }));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.server
        .send_flush(&Uid::Nil, ev("t/x", Value::Nil))
        .unwrap();
    let mut timeouts = 0;
    let mut batches = 0;
    for p in polls {
        let r = p.await.unwrap();
        assert_eq!(r.status, 200);
        match r.text().as_str() {
            "[:chsk/timeout nil]" => timeouts += 1,
            "[[[:t/x nil]] nil]" => batches += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!((timeouts, batches), (199, 1));
}

#[tokio::test]
async fn bad_websocket_handshakes_are_rejected() {
    let h = start(transcript_builder()).await;
    // No key.
    let mut req = get_req(
        "/chsk?client-id=c&csrf-token=tok-123",
        &[("Origin", ORIGIN)],
    );
    req.truncate(req.len() - 2);
    req.extend_from_slice(b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n");
    assert_eq!(raw(h.addr, &req).await.status, 400);
    // Wrong version.
    let mut req = get_req(
        "/chsk?client-id=c&csrf-token=tok-123",
        &[("Origin", ORIGIN)],
    );
    req.truncate(req.len() - 2);
    req.extend_from_slice(b"Upgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    assert_eq!(raw(h.addr, &req).await.status, 400);
}

#[tokio::test]
async fn other_methods_and_paths() {
    let h = start(transcript_builder()).await;
    let r = raw(
        h.addr,
        b"PUT /chsk HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
}
