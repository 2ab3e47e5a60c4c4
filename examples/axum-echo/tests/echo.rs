//! The example answers an echo and pushes three events, over a raw WebSocket speaking edn.

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn echo_and_push() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum_echo::app().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

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
}
