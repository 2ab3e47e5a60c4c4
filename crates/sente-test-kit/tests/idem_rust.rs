//! Idempotent client requests (the `idem` extension) against the real server, through the
//! test kit's proxy: the connection is cut after a request reached the server and before its
//! reply reached the client. With `retry_requests(true)` the client re-sends it on the next
//! connection; the handler runs once and the client gets the original reply once.

use sente_client::{Client, Event, EventId, Kind, RequestError, RequestFailure, Value};
use sente_test_kit::{CSRF_TOKEN, ServerOptions, TestServer};
use std::time::Duration;

fn once(key: &str, ms: i64) -> Event {
    Event::new(
        EventId::new("demo/once").unwrap(),
        Value::Vector(vec![Value::from(key), Value::Int(ms)]),
    )
}

fn runs(server: &TestServer, key: &str) -> usize {
    server
        .log()
        .events()
        .iter()
        .filter(|e| e.id().as_str() == "demo/ran" && e.data() == &Value::from(key))
        .count()
}

async fn until_ran(server: &TestServer, key: &str) {
    for _ in 0..500 {
        if runs(server, key) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never reached the server");
}

fn ran(n: i64) -> Value {
    let mut m = sente_client::edn::Map::new();
    m.insert(Value::kw("ran"), Value::Int(n));
    Value::Map(m)
}

fn client(server: &TestServer, kind: Kind, uid: &str, retry: bool) -> Client {
    Client::builder(server.url())
        .kind(kind)
        .csrf_token(CSRF_TOKEN)
        .param("uid", uid)
        .retry_requests(retry)
        .connect()
        .unwrap()
}

/// The cut comes while the handler runs: the retry arrives before the reply is known and
/// waits for it. (`Cut::Refuse`: the proxy refuses new connections until the reply is known,
/// so the retry gets the kept reply.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_runs_once_and_gets_its_reply_once() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let upstream = server.upstream().unwrap();
    for kind in [Kind::Ws, Kind::Ajax] {
        for refuse in [false, true] {
            let key = format!("{kind}-{refuse}");
            let c = client(&server, kind, &key, true);
            c.wait_open().await;
            let req = {
                let c = c.clone();
                let ev = once(&key, if refuse { 100 } else { 800 });
                tokio::spawn(async move { c.request(ev, Duration::from_secs(15)).await })
            };
            until_ran(&server, &key).await;
            if refuse {
                server.proxy().cut();
                tokio::time::sleep(Duration::from_millis(600)).await;
                server.proxy().set_target(upstream);
            } else {
                server.proxy().drop_connections();
            }
            let got = tokio::time::timeout(Duration::from_secs(20), req)
                .await
                .expect("an answer within the timeout")
                .unwrap();
            assert_eq!(got, Ok(ran(1)), "{key}: the original reply");
            assert!(
                c.state().borrow().last_close.is_some(),
                "{key}: the client reconnected"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(runs(&server, &key), 1, "{key}: the handler ran once");
            // The client goes on as usual.
            let again = c.request(once(&format!("{key}-b"), 0), Duration::from_secs(5));
            assert_eq!(again.await, Ok(ran(1)));
        }
    }
}

/// A retry may come over the other transport: the request goes out over WebSocket, then the
/// proxy refuses upgrades and the client reconnects; it (auto) falls back to Ajax and re-sends
/// the request there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_may_come_over_the_other_transport() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let key = "ws-then-ajax";
    let c = Client::builder(server.url())
        .kind(Kind::Auto)
        .csrf_token(CSRF_TOKEN)
        .param("uid", key)
        .connect()
        .unwrap();
    c.wait_open().await;
    assert_eq!(c.state().borrow().kind, Kind::Ws);
    let req = {
        let c = c.clone();
        tokio::spawn(async move {
            c.request_with_retry(once(key, 800), Duration::from_secs(20), true)
                .await
        })
    };
    until_ran(&server, key).await;
    server.proxy().refuse_ws_upgrades(true);
    c.reconnect();
    let got = tokio::time::timeout(Duration::from_secs(25), req)
        .await
        .expect("an answer within the timeout")
        .unwrap();
    assert_eq!(got, Ok(ran(1)));
    assert_eq!(c.state().borrow().kind, Kind::Ajax);
    assert_eq!(runs(&server, key), 1);
}

/// Without the opt-in a cut request fails as before (the app does not know whether it ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_opt_in_a_cut_request_fails() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let key = "no-retry";
    let c = client(&server, Kind::Ws, key, false);
    c.wait_open().await;
    let req = {
        let c = c.clone();
        tokio::spawn(async move { c.request(once(key, 500), Duration::from_secs(10)).await })
    };
    until_ran(&server, key).await;
    server.proxy().drop_connections();
    let got = req.await.unwrap();
    assert_eq!(
        got,
        Err(RequestError::Error(RequestFailure::ConnectionLost)),
        "{got:?}"
    );
}
