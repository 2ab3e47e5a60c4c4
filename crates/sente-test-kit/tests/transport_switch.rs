//! Resume over Ajax and the mid-session transport switch (issue 15, item 5), from the outside:
//! the native Rust client against the real server behind the test kit's fault-injecting proxy.
//! A server task pushes counted events to one uid at a steady rate; the proxy blackholes or
//! cuts the connections and refuses WebSocket upgrades for a while. Every push must arrive
//! exactly once, in order, and no handshake may say `recovered: false` (the window is large
//! enough). The JS client runs the same scenarios in `clients/js/test/switch.test.js`.

use futures_util::StreamExt;
use sente_client::{Client, ClientEvent, Event, EventId, Kind, State, Value};
use sente_test_kit::{CSRF_TOKEN, ServerOptions, TestServer};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn ev(n: i64) -> Event {
    Event::new(EventId::new("test/n").unwrap(), Value::Int(n))
}

/// Pushes `test/n` 1..=`count` to `uid`, one every `every_ms` (buffered: the batching windows
/// apply), from the server side.
fn steady_pushes(
    server: &TestServer,
    uid: &str,
    count: i64,
    every_ms: u64,
) -> tokio::task::JoinHandle<()> {
    let handle = server.server().expect("a sente-rs server").handle().clone();
    let uid = sente_client::Uid::from(uid);
    tokio::spawn(async move {
        for n in 1..=count {
            handle.send(&uid, ev(n)).unwrap();
            tokio::time::sleep(Duration::from_millis(every_ms)).await;
        }
    })
}

/// Collects the numbers of `test/n` pushes, and every state the client went through.
struct Watch {
    got: Arc<Mutex<Vec<i64>>>,
    states: Arc<Mutex<Vec<State>>>,
}

impl Watch {
    fn start(client: &Client) -> Watch {
        let got = Arc::new(Mutex::new(Vec::new()));
        let states = Arc::new(Mutex::new(Vec::new()));
        let mut events = client.events();
        let g = got.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                if let ClientEvent::Push(ev) = e
                    && ev.id().as_str() == "test/n"
                    && let Value::Int(n) = ev.data()
                {
                    g.lock().unwrap().push(*n);
                }
            }
        });
        let mut state = client.state();
        let s = states.clone();
        tokio::spawn(async move {
            loop {
                s.lock().unwrap().push(state.borrow_and_update().clone());
                if state.changed().await.is_err() {
                    break;
                }
            }
        });
        Watch { got, states }
    }

    /// Waits until `count` pushes arrived (or 10 s), then a little longer for duplicates.
    async fn all(&self, count: usize) -> Vec<i64> {
        let t0 = std::time::Instant::now();
        while self.got.lock().unwrap().len() < count && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.got.lock().unwrap().clone()
    }

    fn never_unrecovered(&self) {
        let states = self.states.lock().unwrap();
        assert!(
            states.iter().all(|s| s.recovered != Some(false)),
            "a handshake said recovered: false"
        );
    }

    fn kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = Vec::new();
        for s in self.states.lock().unwrap().iter().filter(|s| s.open) {
            if kinds.last() != Some(&s.kind) {
                kinds.push(s.kind);
            }
        }
        kinds
    }
}

async fn wait_state(client: &Client, what: &str, f: impl Fn(&State) -> bool) {
    let mut state = client.state();
    tokio::time::timeout(Duration::from_secs(10), state.wait_for(|s| f(s)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap();
}

/// An Ajax client whose network path dies for longer than the server's Ajax grace period
/// (600 ms here: the server forgets the client, and the poll answers it wrote went nowhere)
/// comes back with its position and gets exactly what it missed, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ajax_blip_longer_than_the_grace_period_loses_no_push() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let uid = "ajax-blip";
    let client = Client::builder(server.url())
        .kind(Kind::Ajax)
        .csrf_token(CSRF_TOKEN)
        .param("uid", uid)
        .connect()
        .unwrap();
    let watch = Watch::start(&client);
    client.wait_open().await;
    let pushes = steady_pushes(&server, uid, 150, 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.proxy().blackhole(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.proxy().drop_connections();
    server.proxy().blackhole(false);
    wait_state(&client, "the reconnect", |s| {
        s.open && s.recovered.is_some()
    })
    .await;
    pushes.await.unwrap();
    assert_eq!(watch.all(150).await, (1..=150).collect::<Vec<_>>());
    assert_eq!(client.state().borrow().recovered, Some(true));
    watch.never_unrecovered();
}

/// Item 5: an auto client on WebSocket; the proxy kills the socket and refuses upgrades for
/// a while (the client falls back to Ajax, resuming from its position, while its re-probes
/// fail), then allows them again (a re-probe takes the client back to WebSocket, resuming
/// again). Twice, under a steady stream of pushes: every push arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_moves_ws_to_ajax_and_back_without_losing_or_reordering() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let uid = "switch";
    let client = Client::builder(server.url())
        .kind(Kind::Auto)
        .csrf_token(CSRF_TOKEN)
        .param("uid", uid)
        .ws_reprobe(Some(Duration::from_millis(400)))
        .connect()
        .unwrap();
    let watch = Watch::start(&client);
    wait_state(&client, "WebSocket", |s| s.open && s.kind == Kind::Ws).await;
    let count = 400;
    let pushes = steady_pushes(&server, uid, count, 10);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.proxy().refuse_ws_upgrades(true);
        server.proxy().drop_connections();
        wait_state(&client, "the Ajax fallback", |s| {
            s.open && s.kind == Kind::Ajax
        })
        .await;
        // Re-probes fail meanwhile; a poll is cut too.
        tokio::time::sleep(Duration::from_millis(600)).await;
        server.proxy().drop_connections();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.proxy().refuse_ws_upgrades(false);
        wait_state(&client, "back on WebSocket", |s| {
            s.open && s.kind == Kind::Ws
        })
        .await;
    }
    pushes.await.unwrap();
    assert_eq!(
        watch.all(count as usize).await,
        (1..=count).collect::<Vec<_>>()
    );
    assert_eq!(
        watch.kinds(),
        [Kind::Ws, Kind::Ajax, Kind::Ws, Kind::Ajax, Kind::Ws]
    );
    assert_eq!(client.state().borrow().recovered, Some(true));
    watch.never_unrecovered();
}
