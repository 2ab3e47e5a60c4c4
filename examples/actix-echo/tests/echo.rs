//! The example answers an echo and pushes three events, over a raw WebSocket speaking edn,
//! and serves the JavaScript client.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn echo_and_push() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = actix_echo::app(listener).unwrap();
    let handle = server.handle();
    tokio::spawn(server);

    let mut req = format!("ws://{addr}/chsk?client-id=t1")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", format!("http://{addr}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let Message::Text(handshake) = ws.next().await.unwrap().unwrap() else {
        panic!()
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
    handle.stop(false).await;
}
