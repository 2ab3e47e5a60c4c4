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

/// The pushes numbered `n` that arrive on `events` within `ms`, after the first `want` or
/// when none arrive for `ms`.
async fn pushes(events: &mut sente_client::EventStream, want: usize, ms: u64) -> Vec<i64> {
    let mut got = Vec::new();
    while got.len() < want {
        match tokio::time::timeout(Duration::from_millis(ms), events.next()).await {
            Ok(Some(ClientEvent::Push(ev))) if ev.id().as_str() == "test/n" => {
                if let Value::Int(n) = ev.data() {
                    got.push(*n);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// Pushes `test/n` with each of `ns` to `uid`, flushed.
fn push(server: &TestServer, uid: &str, ns: std::ops::RangeInclusive<i64>) {
    let server = server.server().expect("a sente-rs server");
    for n in ns {
        server
            .handle()
            .send_flush(&sente_client::Uid::from(uid), ev("test/n", n))
            .unwrap();
    }
}

/// Waits (at most 10 s) until `client` is open again after a close; its state.
async fn reconnected(client: &Client) -> tokio::sync::watch::Receiver<sente_client::State> {
    let mut state = client.state();
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| s.open && s.last_close.is_some()),
    )
    .await
    .expect("reconnected")
    .unwrap();
    state
}

/// A blip: the network path dies without either end noticing (the proxy throws away what the
/// server writes), then the connection drops and the client reconnects. With resume (the
/// default) every push arrives exactly once, in order, and the state says `recovered`;
/// without it, the pushes written into the dead connection are lost (Sente's behaviour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_loses_no_push_with_resume() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    for resume in [true, false] {
        let uid = format!("blip-{resume}");
        let client = Client::builder(server.url())
            .kind(Kind::Ws)
            .csrf_token(CSRF_TOKEN)
            .param("uid", &uid)
            .resume(resume)
            .connect()
            .unwrap();
        let mut events = client.events();
        client.wait_open().await;
        push(&server, &uid, 1..=3);
        assert_eq!(pushes(&mut events, 3, 5_000).await, vec![1, 2, 3]);
        assert_eq!(client.state().borrow().recovered, None, "first connection");

        server.proxy().blackhole(true);
        push(&server, &uid, 4..=6); // written into the dead path
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.proxy().drop_connections();
        server.proxy().blackhole(false);
        push(&server, &uid, 7..=8); // while the client reconnects
        let state = reconnected(&client).await;
        push(&server, &uid, 9..=10);
        if resume {
            assert_eq!(state.borrow().recovered, Some(true));
            assert_eq!(
                pushes(&mut events, 7, 5_000).await,
                (4..=10).collect::<Vec<_>>()
            );
        } else {
            assert_eq!(state.borrow().recovered, None);
            let got = pushes(&mut events, 7, 1_000).await;
            assert!(got.ends_with(&[9, 10]), "{got:?}");
            assert!(
                !got.contains(&4),
                "without resume the dead path's pushes are lost: {got:?}"
            );
        }
        assert!(
            pushes(&mut events, 1, 300).await.is_empty(),
            "no duplicates"
        );
    }
}

/// Pushes to one client (`send_to_client`) resume like pushes to its uid: two resuming
/// clients of one uid go through a blip (pushes written into the dead path, then more while
/// they reconnect); the one pushed to gets every push, its own and its uid's, once and in
/// order, and the other gets only the uid's; both say `recovered: true`. Over WebSocket and
/// Ajax.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_one_client_resumes_too() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let handle = server.server().expect("a sente-rs server").handle().clone();
    for kind in [Kind::Ws, Kind::Ajax] {
        let uid = format!("one-{kind:?}");
        let connect = |name: &str| {
            Client::builder(server.url())
                .kind(kind)
                .csrf_token(CSRF_TOKEN)
                .param("uid", &uid)
                .client_id(format!("{name}-{kind:?}"))
                .connect()
                .unwrap()
        };
        let (a, b) = (connect("a"), connect("b"));
        let (mut ea, mut eb) = (a.events(), b.events());
        a.wait_open().await;
        b.wait_open().await;
        let u = sente_client::Uid::from(uid.as_str());
        let to_a = |n: i64| {
            handle
                .send_to_client(&u, a.client_id(), ev("test/n", n))
                .unwrap();
        };
        push(&server, &uid, 1..=1);
        to_a(2);
        push(&server, &uid, 3..=3);
        assert_eq!(pushes(&mut ea, 3, 5_000).await, vec![1, 2, 3]);
        assert_eq!(pushes(&mut eb, 2, 5_000).await, vec![1, 3]);

        server.proxy().blackhole(true);
        to_a(4); // written into the dead path
        push(&server, &uid, 5..=5);
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.proxy().drop_connections();
        server.proxy().blackhole(false);
        to_a(6); // while the client reconnects
        for c in [&a, &b] {
            reconnected(c).await;
        }
        push(&server, &uid, 7..=7);
        assert_eq!(
            pushes(&mut ea, 4, 5_000).await,
            vec![4, 5, 6, 7],
            "{kind:?}"
        );
        assert_eq!(pushes(&mut eb, 2, 5_000).await, vec![5, 7], "{kind:?}");
        for (c, e) in [(&a, &mut ea), (&b, &mut eb)] {
            assert_eq!(c.state().borrow().recovered, Some(true), "{kind:?}");
            assert!(pushes(e, 1, 300).await.is_empty(), "no duplicates");
        }
    }
}

/// A reconnect that needs more than the replay window keeps (here 3 pushes) gets
/// `recovered: false` and no partial replay: only what is pushed after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_window_the_client_learns_it_missed_pushes() {
    let server = TestServer::spawn(ServerOptions {
        replay: sente::ReplayConfig::default().max_events(3),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let uid = "window";
    let client = Client::builder(server.url())
        .kind(Kind::Ws)
        .csrf_token(CSRF_TOKEN)
        .param("uid", uid)
        .connect()
        .unwrap();
    let mut events = client.events();
    client.wait_open().await;
    push(&server, uid, 1..=2);
    assert_eq!(pushes(&mut events, 2, 5_000).await, vec![1, 2]);
    server.proxy().blackhole(true);
    push(&server, uid, 3..=7); // 5 missed, 3 kept
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.proxy().drop_connections();
    server.proxy().blackhole(false);
    let mut state = client.state();
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| s.open && s.recovered.is_some()),
    )
    .await
    .expect("reconnected")
    .unwrap();
    assert_eq!(state.borrow().recovered, Some(false));
    push(&server, uid, 8..=8);
    assert_eq!(
        pushes(&mut events, 1, 5_000).await,
        vec![8],
        "no partial replay"
    );
}

/// Measurement (`cargo test -p sente-test-kit --test client_native_extras -- --ignored
/// --nocapture recovery`): how long after the server is reachable again 20 clients with the
/// default backoff are open again, after outages of 1, 10 and 60 s. Numbers in BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about 2 minutes)"]
async fn measure_recovery_after_outages() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let upstream = server.upstream().unwrap();
    let clients: Vec<Client> = (0..20)
        .map(|i| {
            Client::builder(server.url())
                .kind(Kind::Ws)
                .csrf_token(CSRF_TOKEN)
                .param("uid", format!("r{i}"))
                .connect()
                .unwrap()
        })
        .collect();
    for c in &clients {
        c.wait_open().await;
    }
    for outage in [1u64, 10, 60] {
        server.proxy().cut();
        for c in &clients {
            let mut state = c.state();
            state.wait_for(|s| !s.open).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(outage)).await;
        server.proxy().set_target(upstream);
        let back = std::time::Instant::now();
        let waits: Vec<_> = clients
            .iter()
            .map(|c| {
                let mut state = c.state();
                tokio::spawn(async move {
                    state.wait_for(|s| s.open).await.unwrap();
                    back.elapsed().as_millis()
                })
            })
            .collect();
        let mut times = Vec::new();
        for w in waits {
            times.push(w.await.unwrap());
        }
        times.sort_unstable();
        println!(
            "outage {outage:>2} s: open again after median {} ms, max {} ms (20 clients)",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}
