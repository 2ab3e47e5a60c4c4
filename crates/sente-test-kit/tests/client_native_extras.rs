//! sente-rs client improvements over Sente, against the real server: the request queue, WebSocket
//! re-probing after an Ajax fallback, and a clean close on drop.

use futures_util::StreamExt;
use sente_client::{Client, ClientEvent, Event, EventId, Kind, Value};
use sente_test_kit::{CSRF_TOKEN, ServerOptions, TestServer};
use std::time::Duration;

fn ev(id: &str, data: impl Into<Value>) -> Event {
    Event::new(EventId::new(id).unwrap(), data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_made_while_connecting_are_queued_until_open() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    for kind in [Kind::Ws, Kind::Ajax] {
        let client = Client::builder(server.url())
            .kind(kind)
            .csrf_token(CSRF_TOKEN)
            .queue_while_connecting(16, Duration::from_secs(10))
            .connect()
            .unwrap();
        // Most likely not open yet: without the queue this would fail with Closed at once.
        client.send(ev("demo/echo", "queued send")).unwrap();
        let r = client
            .request(ev("demo/echo", 7), Duration::from_secs(10))
            .await;
        assert_eq!(r, Ok(Value::Int(7)), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_queue_requests_fail_closed_while_not_open() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let client = Client::builder(server.url())
        .csrf_token(CSRF_TOKEN)
        .connect()
        .unwrap();
    let r = client
        .request(ev("demo/echo", 7), Duration::from_secs(10))
        .await;
    assert_eq!(r, Err(sente_client::RequestError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_reprobes_websocket_after_an_ajax_fallback() {
    let server = TestServer::spawn(ServerOptions {
        refuse_ws_upgrades: true,
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let client = Client::builder(server.url())
        .kind(Kind::Auto)
        .csrf_token(CSRF_TOKEN)
        .ws_reprobe(Some(Duration::from_millis(300)))
        .connect()
        .unwrap();
    let mut state = client.state();
    tokio::time::timeout(Duration::from_secs(20), state.wait_for(|s| s.open))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.borrow().kind, Kind::Ajax);
    // A slow request in flight over Ajax while the transport switches.
    let c2 = client.clone();
    let slow = tokio::spawn(async move {
        c2.request(ev("demo/echo", 1), Duration::from_secs(20))
            .await
    });
    // WebSocket works again: the next probe switches over.
    server.proxy().refuse_ws_upgrades(false);
    tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| s.kind == Kind::Ws && s.open),
    )
    .await
    .expect("switched to WebSocket")
    .unwrap();
    assert_eq!(slow.await.unwrap(), Ok(Value::Int(1)));
    let r = client
        .request(ev("demo/echo", 2), Duration::from_secs(10))
        .await;
    assert_eq!(r, Ok(Value::Int(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_client_closes_cleanly_and_ends_the_stream() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let client = Client::builder(server.url())
        .kind(Kind::Ws)
        .csrf_token(CSRF_TOKEN)
        .param("uid", "drop-me")
        .connect()
        .unwrap();
    let mut events = client.events();
    client.wait_open().await;
    drop(client);
    // The stream ends after the final state change.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        while let Some(e) = events.next().await {
            rest.push(e);
        }
        rest
    })
    .await
    .expect("stream ends");
    assert!(
        rest.iter()
            .any(|e| matches!(e, ClientEvent::State(c) if c.closed()))
    );
    // The server sees the uid leave (after its grace period).
    let uid = sente_proto::Uid::from("drop-me");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !server.log().has("chsk/uidport-close", &uid) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("uidport-close");
}
