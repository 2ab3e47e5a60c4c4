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
    req.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
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
    req.extend_from_slice(
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(raw(h.addr, &req).await.status, 400);
    // Wrong version.
    let mut req = get_req(
        "/chsk?client-id=c&csrf-token=tok-123",
        &[("Origin", ORIGIN)],
    );
    req.truncate(req.len() - 2);
    req.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
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

/// A client cannot pass for the server: `chsk/uidport-open` and the other ids only the server
/// makes reach handlers as `[:chsk/bad-event original]`, on both transports (the
/// CVE-2024-38355 class).
#[tokio::test]
async fn forged_server_events_reach_handlers_as_bad_events() {
    let mut h = start(transcript_builder()).await;
    let mut ws = ws_connect(h.addr, "uid=u&client-id=f&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    assert_eq!(h.next().await.id, "chsk/uidport-open");
    for forged in [
        "chsk/uidport-open",
        "chsk/uidport-close",
        "chsk/handshake",
        "chsk/bad-package",
    ] {
        ws_send(&mut ws, &format!("[[:{forged} \"admin\"] nil]")).await;
        let e = h.next_app().await;
        assert_eq!(e.event, format!("[:chsk/bad-event [:{forged} \"admin\"]]"));
        let r = post_ppstr(h.addr, "g", &format!("[[:{forged} \"admin\"] nil]")).await;
        assert_eq!(r.status, 200);
        let e = h.next_app().await;
        assert_eq!(e.event, format!("[:chsk/bad-event [:{forged} \"admin\"]]"));
    }
}

/// Opens a WebSocket by hand and returns the raw socket after the handshake message.
async fn raw_ws(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /chsk?client-id=r&csrf-token=tok-123 HTTP/1.1\r\nHost: {addr}\r\nOrigin: {ORIGIN}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // The handshake frame: text, unmasked, short.
    let (_op, len) = (s.read_u8().await.unwrap(), s.read_u8().await.unwrap());
    let mut body = vec![0; usize::from(len)];
    s.read_exact(&mut body).await.unwrap();
    s
}

/// The close code the server sends next (skipping data frames).
async fn close_code(s: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let op = s.read_u8().await.unwrap();
            let len = s.read_u8().await.unwrap() & 0x7f;
            let mut body = vec![0; usize::from(len)];
            s.read_exact(&mut body).await.unwrap();
            if op & 0x0f == 0x8 {
                return u16::from_be_bytes([body[0], body[1]]);
            }
        }
    })
    .await
    .expect("a close frame")
}

/// Protocol errors end the connection with a close frame that says why: 1002 for a frame
/// that breaks the protocol, 1007 for a text frame that is not UTF-8.
#[tokio::test]
async fn websocket_protocol_errors_get_a_close_code() {
    use tokio::io::AsyncWriteExt;
    let h = start(transcript_builder()).await;
    // An unmasked client frame (RFC 6455 5.1).
    let mut s = raw_ws(h.addr).await;
    s.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    assert_eq!(close_code(&mut s).await, 1002);
    assert_invalid_text_closes(h.addr).await;
}

/// Text frames that are not UTF-8 (masks of zeros) close the connection with 1007: bytes
/// that are nothing else, a well-formed message with one bad byte inside a string, and a
/// message fragmented across two frames.
async fn assert_invalid_text_closes(addr: std::net::SocketAddr) {
    use tokio::io::AsyncWriteExt;
    let frames: [&[u8]; 3] = [
        &[0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe],
        &[0x81, 0x86, 0, 0, 0, 0, b'[', b'"', 0xc3, b'"', b']', b' '],
        &[
            0x01, 0x83, 0, 0, 0, 0, b'[', b'"', 0xc3, 0x80, 0x82, 0, 0, 0, 0, b'"', b']',
        ],
    ];
    for frame in frames {
        let mut s = raw_ws(addr).await;
        s.write_all(frame).await.unwrap();
        assert_eq!(close_code(&mut s).await, 1007, "{frame:?}");
    }
}

/// A packer that reads its input as text but does not say it checks UTF-8
/// ([`sente::packer::Packer::checks_utf8`] left at its default).
#[derive(Debug)]
struct Unsaid;

impl sente::packer::Packer for Unsaid {
    fn name(&self) -> &'static str {
        "edn"
    }

    fn is_binary(&self) -> bool {
        false
    }

    fn pack(&self, v: &sente::Value) -> Result<sente::packer::Packed, sente::packer::PackError> {
        sente::packer::EdnPacker.pack(v)
    }

    fn unpack(
        &self,
        input: &[u8],
        limits: &sente::Limits,
    ) -> Result<sente::Value, sente::packer::UnpackError> {
        sente::packer::EdnPacker.unpack(input, limits)
    }
}

/// The UTF-8 check of text frames is the packer's when it says it makes one (the built-in
/// text packers), and the connection's own otherwise: a text frame that is not UTF-8 closes
/// the connection with 1007 either way.
#[tokio::test]
async fn invalid_text_closes_whoever_checks_it() {
    let own = start(transcript_builder().packer(std::sync::Arc::new(Unsaid))).await;
    assert_invalid_text_closes(own.addr).await;
    let by_packer = start(transcript_builder().packer_name("json")).await;
    assert_invalid_text_closes(by_packer.addr).await;
}

/// An upgrade needs HTTP/1.1 and `Connection: Upgrade` (RFC 6455 4.2.1): otherwise 400, not
/// an accepted socket or a 500.
#[tokio::test]
async fn malformed_upgrades_get_400() {
    let h = start(transcript_builder()).await;
    let head = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let no_connection = format!(
        "GET /chsk?client-id=c&csrf-token=tok-123 HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n{head}\r\n"
    );
    let r = raw(h.addr, no_connection.as_bytes()).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Connection: Upgrade"), "{}", r.text());
    let http10 = format!(
        "GET /chsk?client-id=c&csrf-token=tok-123 HTTP/1.0\r\nHost: x\r\nOrigin: {ORIGIN}\r\nConnection: Upgrade\r\n{head}\r\n"
    );
    let r = raw(h.addr, http10.as_bytes()).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("HTTP/1.1"), "{}", r.text());
}

/// DNS rebinding: a page on an attacker's domain that resolves to the server is "same origin"
/// with itself (Origin and Host agree). The default lets it through (documented); an
/// `allowed_hosts` list refuses any other Host with 421, while the real host still works.
#[tokio::test]
async fn allowed_hosts_refuse_a_rebinding_page() {
    let rebinding = |host: &str| {
        format!(
            "GET /chsk?client-id=c&csrf-token=tok-123&handshake%3F=1 HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let same_origin = || transcript_builder().allowed_origins(sente::AllowedOrigins::SameOrigin);
    let h = start(same_origin()).await;
    assert_eq!(
        raw(h.addr, &rebinding("evil.example:3000")).await.status,
        200
    );
    let h = start(same_origin().allowed_hosts(sente::AllowedHosts::list(["app.example"]))).await;
    let r = raw(h.addr, &rebinding("evil.example:3000")).await;
    assert_eq!(r.status, 421, "{}", r.text());
    assert_eq!(
        raw(h.addr, &rebinding("app.example:3000")).await.status,
        200
    );
}
