//! Push to one client and server-to-client requests (issue 15 items 2 and 3), with the native
//! Rust client against the real server, on both transports: a push to one client reaches only
//! it, in order with the uid's pushes; a request gets each client's answer, `Unsupported` for a
//! plain client, `no-handler` for a client without a handler for it, `Timeout` for a slow one;
//! an answer to an id never sent is refused and counted.

use futures_util::StreamExt;
use sente::s2c::RequestError;
use sente::{ClientSendError, Server};
use sente_client::{Client, ClientEvent, Event, EventId, Kind, Uid, Value};
use sente_test_kit::{CSRF_TOKEN, ServerOptions, TestServer};
use std::time::Duration;

fn ev(id: &str, data: impl Into<Value>) -> Event {
    Event::new(EventId::new(id).unwrap(), data)
}

fn client(server: &TestServer, uid: &str, kind: Kind) -> sente_client::ClientBuilder {
    Client::builder(server.url())
        .kind(kind)
        .csrf_token(CSRF_TOKEN)
        .param("uid", uid)
}

/// The `test/n` pushes that arrive within `ms` of each other, up to `want`.
async fn pushes(events: &mut sente_client::EventStream, want: usize, ms: u64) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < want {
        match tokio::time::timeout(Duration::from_millis(ms), events.next()).await {
            Ok(Some(ClientEvent::Push(ev))) if ev.id().as_str() == "test/n" => {
                got.push(ev.data().clone());
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// Waits until an Ajax client of `uid` has polled (it then counts as connected).
async fn ajax_polls(s: &Server, uid: &Uid) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !s.connected_uids().borrow().ajax.contains(uid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the Ajax client polls");
}

/// Waits until the server has refused one more request than `before`.
async fn rejected_after(s: &Server, before: u64, what: &str) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.stats().rejected_requests == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect(what);
}

/// Whether a `chsk/rep` reached the application's handler (it must not).
fn app_saw_a_reply(server: &TestServer) -> bool {
    server
        .log()
        .events()
        .iter()
        .any(|e| e.id().as_str() == "chsk/rep")
}

fn sente(server: &TestServer) -> Server {
    server.server().expect("a sente-rs server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_one_client_reaches_only_it_in_order_on_both_transports() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let s = sente(&server);
    let uid = Uid::from("s2c-one");
    let ws = client(&server, "s2c-one", Kind::Ws).connect().unwrap();
    let ajax = client(&server, "s2c-one", Kind::Ajax).connect().unwrap();
    let (mut ws_events, mut ajax_events) = (ws.events(), ajax.events());
    ws.wait_open().await;
    ajax.wait_open().await;
    // Both clients are registered (the Ajax one after its first poll).
    ajax_polls(&s, &uid).await;
    let n = |k: i64| ev("test/n", k);
    let only = |who: &str, k: i64| ev("test/n", Value::from(format!("{who}-{k}")));
    s.send(&uid, n(1)).unwrap();
    s.send_to_client(&uid, ws.client_id(), only("ws", 1))
        .unwrap();
    s.send(&uid, n(2)).unwrap();
    s.send_to_client(&uid, ajax.client_id(), only("ajax", 1))
        .unwrap();
    s.send_flush(&uid, n(3)).unwrap();
    let ints = |v: &[i64]| v.iter().map(|k| Value::Int(*k)).collect::<Vec<_>>();
    let mut want_ws = ints(&[1]);
    want_ws.push(Value::from("ws-1"));
    want_ws.extend(ints(&[2, 3]));
    let mut want_ajax = ints(&[1, 2]);
    want_ajax.push(Value::from("ajax-1"));
    want_ajax.extend(ints(&[3]));
    assert_eq!(pushes(&mut ws_events, 5, 3_000).await, want_ws);
    assert_eq!(pushes(&mut ajax_events, 5, 3_000).await, want_ajax);

    // An unknown client, or a reserved event: typed errors.
    let stranger = sente_client::ClientId::new("nobody").unwrap();
    assert_eq!(
        s.send_to_client(&uid, &stranger, n(9)),
        Err(ClientSendError::UnknownClient)
    );
    assert_eq!(
        s.send_to_client(&Uid::from("no-such-user"), ws.client_id(), n(9)),
        Err(ClientSendError::UnknownClient)
    );
    assert!(matches!(
        s.send_to_client(&uid, ws.client_id(), ev("chsk/handshake", 1)),
        Err(ClientSendError::Send(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_gets_each_clients_answer_or_why_not() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let s = sente(&server);
    let uid = Uid::from("s2c-req");
    let answer = |who: &'static str| {
        move |e: &Event| -> Value { Value::from(format!("{who}:{}", e.data())) }
    };
    let ws = client(&server, "s2c-req", Kind::Ws)
        .on_request("app/ask", answer("ws"))
        .connect()
        .unwrap();
    let ajax = client(&server, "s2c-req", Kind::Ajax)
        .on_request(":app/ask", answer("ajax"))
        .connect()
        .unwrap();
    let plain = client(&server, "s2c-req", Kind::Ws).connect().unwrap();
    let other = client(&server, "s2c-req", Kind::Ws)
        .on_request("app/other", answer("other"))
        .connect()
        .unwrap();
    for c in [&ws, &ajax, &plain, &other] {
        c.wait_open().await;
    }
    ajax_polls(&s, &uid).await;
    let mut plain_events = plain.events();

    let mut got = s
        .request(&uid, ev("app/ask", 7), Duration::from_secs(5))
        .await;
    got.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut want = vec![
        (ws.client_id().clone(), Ok(Value::from("ws:7"))),
        (ajax.client_id().clone(), Ok(Value::from("ajax:7"))),
        (plain.client_id().clone(), Err(RequestError::Unsupported)),
        (
            other.client_id().clone(),
            Err(RequestError::Client("no-handler".into())),
        ),
    ];
    want.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    assert_eq!(got, want);
    // The plain client never saw anything of it.
    s.send_to_client(&uid, plain.client_id(), ev("test/n", 1))
        .unwrap();
    assert_eq!(pushes(&mut plain_events, 1, 3_000).await, [Value::Int(1)]);
    // The answers never reached the application's handler.
    assert!(!app_saw_a_reply(&server));
    // A uid with no client: nobody to ask.
    assert!(
        s.request(
            &Uid::from("nobody"),
            ev("app/ask", 1),
            Duration::from_secs(1)
        )
        .await
        .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_times_out_and_a_stray_answer_is_refused_and_counted() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let s = sente(&server);
    let uid = Uid::from("s2c-slow");
    // The slow handler blocks its thread (against `on_request`'s advice), so the client runs on
    // a runtime of its own: blocking one of this test's two workers could hold up the server's
    // timers on a loaded machine and let the late answer arrive before the timeout fires.
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let slow = {
        let _on_its_runtime = client_rt.enter();
        client(&server, "s2c-slow", Kind::Ws)
            .on_request("app/ask", |_e: &Event| {
                std::thread::sleep(Duration::from_millis(1_500));
                Value::from("late")
            })
            .connect()
            .unwrap()
    };
    slow.wait_open().await;
    let got = s
        .request(&uid, ev("app/ask", 1), Duration::from_millis(300))
        .await;
    assert_eq!(
        got,
        vec![(slow.client_id().clone(), Err(RequestError::Timeout))]
    );
    // The late answer arrives after the timeout: refused, counted, never the app's.
    let before = s.stats().rejected_requests;
    rejected_after(&s, before, "the late answer is counted").await;

    // An answer to an id never sent, from a client that announced nothing.
    let stray = client(&server, "s2c-slow", Kind::Ws).connect().unwrap();
    stray.wait_open().await;
    let before = s.stats().rejected_requests;
    let forged = sente_proto::s2c::reply_event(424_242, Ok(Value::from("forged")));
    stray.send(forged).unwrap();
    rejected_after(&s, before, "the stray answer is counted").await;
    assert!(!app_saw_a_reply(&server));
    drop(slow);
    client_rt.shutdown_background();
}

/// The bound on waiting requests per client (default 16): over it, `TooMany`, nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_one_client_are_bounded() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let s = sente(&server);
    let uid = Uid::from("s2c-bound");
    let c = client(&server, "s2c-bound", Kind::Ws)
        .on_request("app/ask", |e: &Event| {
            std::thread::sleep(Duration::from_millis(50));
            e.data().clone()
        })
        .connect()
        .unwrap();
    c.wait_open().await;
    let limit = s.limits().requests.max_outstanding_per_client;
    let all = futures_util::future::join_all(
        (0..=limit as i64).map(|k| s.request(&uid, ev("app/ask", k), Duration::from_secs(20))),
    )
    .await;
    let ok = all.iter().filter(|r| r[0].1.is_ok()).count();
    let over = all
        .iter()
        .filter(|r| r[0].1 == Err(RequestError::TooMany { limit }))
        .count();
    assert_eq!((ok, over), (limit, 1));
}
