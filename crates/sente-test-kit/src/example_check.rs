//! The check every `*-echo` example runs against itself: the same app on every framework.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Talks to an echo example listening on `addr` (Sente at `/chsk`) over a raw WebSocket speaking
/// edn byte for byte: the handshake, a reply to `[:echo/req {:a 1}]`, the three pushes that
/// `[:echo/push-me]` asks for in one batch, and `GET /chsk/client.js`. Panics on any difference.
pub async fn check_echo_example(addr: SocketAddr) {
    let mut req = format!("ws://{addr}/chsk?client-id=t1")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", format!("http://{addr}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let Some(Ok(Message::Text(handshake))) = ws.next().await else {
        panic!("no handshake frame")
    };
    assert_eq!(
        handshake.as_str(),
        "[[:chsk/handshake [:sente/nil-uid nil nil]] nil]"
    );
    ws.send(Message::text("[[:echo/req {:a 1}] \"cb0001\"]"))
        .await
        .unwrap();
    ws.send(Message::text("[[:echo/push-me] nil]"))
        .await
        .unwrap();
    let mut frames = Vec::new();
    while frames.len() < 2 {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            frames.push(t.to_string());
        }
    }
    assert_eq!(frames[0], "[{:a 1} \"cb0001\"]");
    assert_eq!(
        frames[1],
        "[[[:echo/pushed 1] [:echo/pushed 2] [:echo/pushed 3]] nil]"
    );
    ws.close(None).await.unwrap();

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /chsk/client.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:.200}");
    assert!(resp.contains("text/javascript"), "{resp:.200}");
}
