//! The adapter's own edges, over raw HTTP/1.1: rejections before a `101`, a streamed POST body
//! over the limit, paths under the scope. The protocol itself is covered by the conformance
//! suite (`cargo test -p sente-test-kit --test adapters`).

use sente::{CsrfToken, Limits, Server, ServerLimits};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn start() -> (SocketAddr, actix_web::dev::ServerHandle) {
    let server = Server::builder()
        .csrf_token_fn(|_| CsrfToken::Token("t".to_owned()))
        .limits(ServerLimits::default().message(Limits::default().max_message_bytes(1024)))
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let http = actix_web::HttpServer::new(move || {
        actix_web::App::new().service(sente_actix::scope(&server, "/chsk"))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = http.handle();
    tokio::spawn(http);
    (addr, handle)
}

/// Sends `head` (and `body`), returns the response head.
async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and stop reading) before the whole body is sent.
    let _ = tcp.write_all(body).await;
    let mut buf = vec![0; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn upgrade_head(addr: SocketAddr, csrf: &str) -> String {
    format!(
        "GET /chsk?client-id=c1&csrf-token={csrf} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

#[tokio::test]
async fn websocket_upgrade_is_checked_before_the_101() {
    let (addr, handle) = start();
    let bad = exchange(addr, &upgrade_head(addr, "wrong"), b"").await;
    assert!(bad.starts_with("HTTP/1.1 403"), "{bad}");
    let ok = exchange(addr, &upgrade_head(addr, "t"), b"").await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    let ok = ok.to_ascii_lowercase();
    assert!(
        ok.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{ok}"
    );
    assert!(ok.contains("upgrade: websocket"), "{ok}");
    handle.stop(false).await;
}

#[tokio::test]
async fn a_streamed_post_over_the_limit_gets_413() {
    let (addr, handle) = start();
    let head = format!(
        "POST /chsk?client-id=c1&csrf-token=t HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut body = Vec::new();
    for _ in 0..16 {
        body.extend_from_slice(b"400\r\n");
        body.extend_from_slice(&[b'x'; 1024]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let resp = exchange(addr, &head, &body).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    handle.stop(false).await;
}

#[tokio::test]
async fn paths_under_the_scope() {
    let (addr, handle) = start();
    let js = exchange(
        addr,
        &format!("GET /chsk/client.js HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        b"",
    )
    .await;
    assert!(js.starts_with("HTTP/1.1 200"), "{js}");
    let other = exchange(
        addr,
        &format!("GET /chsk/other HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        b"",
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let no_client = exchange(
        addr,
        &format!("GET /chsk HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        b"",
    )
    .await;
    assert!(no_client.starts_with("HTTP/1.1 400"), "{no_client}");
    handle.stop(false).await;
}
