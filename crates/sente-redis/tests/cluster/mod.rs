//! The cluster test suite shared by `sente-redis` and `sente-nats` (the NATS crate includes
//! this file with `#[path]`): several `sente::Server` nodes in one process, each on its own
//! tokio runtime (so a node can be killed by dropping its runtime), its own backplane instance
//! and its own 127.0.0.1:0 listener, with real WebSocket and Ajax clients.
#![allow(dead_code, unreachable_pub)]

use futures_util::{SinkExt, StreamExt};
use sente::{AllowedOrigins, ConnectedUids, CsrfToken, Dispatch, EventMsg, Server};
use sente_proto::backplane::Backplane;
use sente_proto::backplane::cluster::ClusterConfig;
use sente_proto::edn::{self, ReadOptions};
use sente_proto::{Event, EventId, Uid, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

pub const TOKEN: &str = "tok-123";
pub const ORIGIN: &str = "http://127.0.0.1:8300";

/// What a test sees of a backplane's health (both crates have their own `Health` type).
#[derive(Clone, Debug, Default)]
pub struct H {
    pub appends: u64,
    pub append_bytes: u64,
    pub ops: u64,
    pub connected: bool,
    pub outages: u64,
    pub last_error: Option<String>,
    pub published: u64,
    pub published_bytes: u64,
    pub dropped: u64,
}

/// A backplane implementation under test.
pub trait Flavor: 'static {
    type B: Backplane + Clone;
    const NAME: &'static str;
    /// The shared service's URL (127.0.0.1).
    fn url() -> String;
    /// The URL of a service on `port`.
    fn url_on(port: u16) -> String;
    /// Starts a private service on `port` (for the restart test); `None` when the binary is
    /// missing.
    fn spawn_service(port: u16) -> Option<std::process::Child>;
    /// Starts a backplane (inside a runtime).
    fn start(url: &str, cluster: &str, presence: ClusterConfig) -> Self::B;
    /// Starts a backplane whose Ajax mailboxes hold at most `max_events` events.
    fn start_small_mailbox(url: &str, cluster: &str, max_events: usize) -> Self::B;
    fn health(b: &Self::B) -> H;
    /// Deletes what cluster `cluster` keeps on the shared service (see [`cleaned`]).
    fn remove_cluster(cluster: &str) -> impl std::future::Future<Output = ()> + Send;
}

tokio::task_local! {
    /// The clusters a scenario named, removed from the service once it passed.
    static NAMED: std::cell::RefCell<Vec<String>>;
}

/// Runs a scenario, then deletes what the clusters it named keep on the shared service (their
/// numbering and, with NATS, their buckets stay otherwise; a failed scenario leaves them to
/// look at).
pub async fn cleaned<F: Flavor>(scenario: impl std::future::Future<Output = ()>) {
    let named = NAMED
        .scope(std::cell::RefCell::default(), async {
            scenario.await;
            NAMED.with(std::cell::RefCell::take)
        })
        .await;
    for cluster in named {
        F::remove_cluster(&cluster).await;
    }
}

/// A fresh cluster name, so concurrent test runs never share a channel (noted for
/// [`cleaned`]).
pub fn cluster_name(test: &str) -> String {
    let name = format!("test-{test}-{}", uuid_like());
    let _ = NAMED.try_with(|n| n.borrow_mut().push(name.clone()));
    name
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    format!("{:016x}", h.finish())
}

/// `SENTE_TEST_NO_MAILBOX=1`: backplanes without Ajax mailboxes (to measure what they cost).
pub fn no_mailbox() -> bool {
    std::env::var_os("SENTE_TEST_NO_MAILBOX").is_some()
}

/// Fast presence timing for tests: heartbeat 200 ms, expiry 1 s.
pub fn fast() -> ClusterConfig {
    ClusterConfig::default()
        .heartbeat(Duration::from_millis(200))
        .expiry(Duration::from_secs(1))
}

/// Whether `url`'s host:port accepts TCP connections (else the test is skipped).
pub async fn reachable(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The events a node's handler saw: `(event id, uid)`. `t/echo` events are answered with
/// `"echo-<data>"`.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<(String, String)>>>);

impl Seen {
    /// How many `id` events for `uid` were seen.
    pub fn count(&self, id: &str, uid: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, u)| i == id && u == uid)
            .count()
    }
}

impl Dispatch for Seen {
    fn dispatch(&self, mut msg: EventMsg) -> futures_util::future::BoxFuture<'static, ()> {
        let id = msg.event.id().as_str().to_owned();
        self.0
            .lock()
            .unwrap()
            .push((id.clone(), msg.uid.to_string()));
        if id == "t/echo" {
            let answer = format!("echo-{}", edn::to_edn_string(msg.event.data()));
            msg.reply(Value::from(answer));
        }
        if id == "t/once" {
            // Waits `data` ms, then replies `"run-<n>"`: `n` numbers the runs of this process
            // (every node of a test runs in it), so each run's reply is its own.
            static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let ms = msg.event.data().as_i64().unwrap_or(0).max(0) as u64;
            let reply = msg.take_reply();
            return Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if let Some(r) = reply {
                    r.send(Value::from(format!("run-{run}")));
                }
            });
        }
        Box::pin(async {})
    }
}

pub struct Node<F: Flavor> {
    rt: Option<tokio::runtime::Runtime>,
    pub server: Option<Server>,
    pub addr: SocketAddr,
    pub backplane: F::B,
    pub seen: Seen,
}

impl<F: Flavor> Node<F> {
    /// A node on its own runtime, built with its own backplane instance.
    pub fn start(url: &str, cluster: &str, presence: ClusterConfig) -> Node<F> {
        Self::start_with(|| F::start(url, cluster, presence))
    }

    /// A node on its own runtime, with the backplane `make` starts (inside that runtime).
    pub fn start_with(make: impl FnOnce() -> F::B) -> Node<F> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let backplane = make();
        let seen = Seen::default();
        let server = Server::builder()
            .handler(seen.clone())
            .user_id_fn(|r| r.param("uid").map_or(Uid::Nil, Uid::from))
            .csrf_token_fn(|_| CsrfToken::from(TOKEN))
            .allowed_origins(AllowedOrigins::list([ORIGIN]))
            .ms_allow_reconnect_before_close_ws(200)
            // Polls of a round-robin Ajax client move between nodes: a node's grace must
            // cover the next poll reaching another node (a loaded 2-core machine included).
            .ms_allow_reconnect_before_close_ajax(1000)
            .lp_timeout_ms(10_000)
            .shutdown_stagger(Duration::from_millis(10))
            .shutdown_timeout(Duration::from_secs(2))
            .backplane(Arc::new(backplane.clone()))
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let app = server.router::<()>("/chsk");
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Node {
            rt: Some(rt),
            server: Some(server),
            addr,
            backplane,
            seen,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    pub fn health(&self) -> H {
        F::health(&self.backplane)
    }

    /// Kills the node: its runtime stops at once (connections, timers and backplane tasks
    /// with it), like a crashed process; nothing is shut down gracefully.
    pub fn kill(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        drop(self.server.take());
    }

    pub async fn wait_connected(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.health().connected {
            assert!(
                Instant::now() < deadline,
                "{} backplane connected within 10 s: {:?}",
                F::NAME,
                self.health()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl<F: Flavor> Drop for Node<F> {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

pub fn ev(n: i64) -> Event {
    Event::new(EventId::new("t/n").unwrap(), Value::Int(n))
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket client of `uid`, past its handshake.
pub async fn ws_open(addr: SocketAddr, uid: &str, client_id: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/chsk?uid={uid}&client-id={client_id}&csrf-token={TOKEN}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("Origin", ORIGIN.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    let hs = next_text(&mut ws, 5000).await.expect("handshake");
    assert!(hs.contains(":chsk/handshake"), "{hs}");
    ws
}

async fn next_text(ws: &mut Ws, ms: u64) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) | Ok(None | Some(Err(_) | Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The `t/n` numbers of a pushed frame (`[[ev ...] nil]`); other frames give none.
pub fn numbers(text: &str) -> Vec<i64> {
    let v = edn::read(text, &ReadOptions::default()).expect("edn frame");
    let mut out = Vec::new();
    if let Value::Vector(items) = v {
        if let Some(Value::Vector(events)) = items.first() {
            for e in events {
                if let Value::Vector(e) = e {
                    if let (Some(Value::Keyword(k)), Some(Value::Int(n))) = (e.first(), e.get(1)) {
                        if k.as_str() == "t/n" {
                            out.push(*n);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Reads pushed numbers until `count` have arrived (fails after `ms`).
pub async fn recv_numbers(ws: &mut Ws, count: usize, ms: u64) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_millis(ms);
    let mut got = Vec::new();
    while got.len() < count {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        match next_text(ws, left.max(1)).await {
            Some(t) => got.extend(numbers(&t)),
            None => panic!(
                "only {} of {count} pushes within {ms} ms: {got:?}",
                got.len()
            ),
        }
    }
    got
}

/// Asserts that no pushed number arrives within `ms`.
pub async fn no_numbers(ws: &mut Ws, ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(ms);
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        if left == 0 {
            return;
        }
        match next_text(ws, left).await {
            Some(t) => assert!(numbers(&t).is_empty(), "unexpected push {t}"),
            None => return,
        }
    }
}

/// Waits for a close frame (or the end of the stream) within `ms`.
pub async fn closed(ws: &mut Ws, ms: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_) | Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// An Ajax client of `uid`: a handshake, then a long poll held open (in a task).
pub async fn ajax_open(
    addr: SocketAddr,
    uid: &str,
    client_id: &str,
) -> tokio::task::JoinHandle<()> {
    let hs = raw_get(
        addr,
        &format!("/chsk?uid={uid}&client-id={client_id}&handshake%3F=1"),
    )
    .await;
    assert!(hs.contains("chsk/handshake"), "{hs}");
    let target = format!("/chsk?uid={uid}&client-id={client_id}");
    tokio::spawn(async move {
        let _ = raw_get(addr, &target).await;
    })
}

async fn raw_get(addr: SocketAddr, target: &str) -> String {
    raw_get_within(addr, target, 15_000).await
}

/// A GET with the Ajax client's headers; the response as text (what arrived within `ms`).
pub async fn raw_get_within(addr: SocketAddr, target: &str, ms: u64) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:8300\r\nOrigin: {ORIGIN}\r\nX-CSRF-Token: {TOKEN}\r\nX-Requested-With: XMLHTTPRequest\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(ms), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// An Ajax POST of `ppstr` (form-encoded, as the Sente client sends it); the response as text.
pub async fn raw_post(addr: SocketAddr, uid: &str, client_id: &str, ppstr: &str) -> String {
    raw_post_ext(addr, uid, client_id, ppstr, None).await
}

/// [`raw_post`] announcing the extensions `ext` (e.g. `idem`) in the form, as the clients do.
pub async fn raw_post_ext(
    addr: SocketAddr,
    uid: &str,
    client_id: &str,
    ppstr: &str,
    ext: Option<&str>,
) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let mut body = format!("udt=1&client-id={}&ppstr={}", enc(client_id), enc(ppstr));
    if let Some(ext) = ext {
        body.push_str("&ext=");
        body.push_str(&enc(ext));
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /chsk?uid={uid} HTTP/1.1\r\nHost: 127.0.0.1:8300\r\nOrigin: {ORIGIN}\r\nX-CSRF-Token: {TOKEN}\r\nX-Requested-With: XMLHTTPRequest\r\nContent-Type: application/x-www-form-urlencoded;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The `t/n` numbers in an Ajax response (any text holding `[:t/n <n>]` events).
pub fn ajax_numbers(text: &str) -> Vec<i64> {
    text.split(":t/n ")
        .skip(1)
        .filter_map(|s| {
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Waits until `f` holds for the connected uids (fails after `ms`); returns the time it took.
pub async fn wait_uids(
    rx: &mut watch::Receiver<ConnectedUids>,
    ms: u64,
    what: &str,
    f: impl Fn(&ConnectedUids) -> bool,
) -> Duration {
    let t = Instant::now();
    let ok = tokio::time::timeout(Duration::from_millis(ms), rx.wait_for(|c| f(c)))
        .await
        .is_ok();
    assert!(
        ok,
        "{what} within {ms} ms; connected uids: {:?}",
        *rx.borrow()
    );
    t.elapsed()
}

pub fn uid(s: &str) -> Uid {
    Uid::from(s)
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

/// `send(uid)` on A reaches the uid's client on B: 100 numbered pushes, exact order, no loss,
/// no duplicates; and the same-node client of A gets its pushes too.
pub async fn push_crosses_nodes_in_order<F: Flavor>() {
    let cluster = cluster_name("order");
    let a = Node::<F>::start(&F::url(), &cluster, fast());
    let b = Node::<F>::start(&F::url(), &cluster, fast());
    a.wait_connected().await;
    b.wait_connected().await;
    let mut on_b = ws_open(b.addr, "ub", "B1").await;
    let mut on_a = ws_open(a.addr, "ua", "A1").await;
    // The uid on B is visible on A once B's presence crossed: the subscriptions are live.
    let mut rx = a.server().connected_uids();
    wait_uids(&mut rx, 5000, "ub on A", |c| c.ws.contains(&uid("ub"))).await;
    for n in 1..=100 {
        a.server().send(&uid("ub"), ev(n)).unwrap();
        a.server().send(&uid("ua"), ev(n)).unwrap();
        if n % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let expected: Vec<i64> = (1..=100).collect();
    assert_eq!(recv_numbers(&mut on_b, 100, 10_000).await, expected);
    assert_eq!(recv_numbers(&mut on_a, 100, 10_000).await, expected);
    no_numbers(&mut on_b, 300).await;
    no_numbers(&mut on_a, 100).await;
    assert_eq!(a.health().dropped, 0);
}

/// `send_to_client` on A reaches only that client, wherever it is: a WebSocket client on B
/// (not its sibling tab), and an Ajax client through its own mailbox (its poll on B), each in
/// order with the uid's pushes.
pub async fn push_to_one_client_crosses_nodes<F: Flavor>() {
    let cluster = cluster_name("to-client");
    let a = Node::<F>::start(&F::url(), &cluster, fast());
    let b = Node::<F>::start(&F::url(), &cluster, fast());
    a.wait_connected().await;
    b.wait_connected().await;
    let mut b1 = ws_open(b.addr, "pc", "B1").await;
    let mut b2 = ws_open(b.addr, "pc", "B2").await;
    let hs = raw_get(a.addr, "/chsk?uid=pc&client-id=AJ&handshake%3F=1").await;
    assert!(hs.contains("chsk/handshake"), "{hs}");
    let mut rx = a.server().connected_uids();
    wait_uids(&mut rx, 5000, "pc on A", |c| c.ws.contains(&uid("pc"))).await;
    let cid = |c: &str| sente_proto::ClientId::new(c).unwrap();
    let s = a.server();
    s.send(&uid("pc"), ev(1)).unwrap();
    s.send_to_client(&uid("pc"), &cid("B1"), ev(100)).unwrap();
    s.send_to_client(&uid("pc"), &cid("AJ"), ev(200)).unwrap();
    s.send(&uid("pc"), ev(2)).unwrap();
    assert_eq!(recv_numbers(&mut b1, 3, 10_000).await, [1, 100, 2]);
    assert_eq!(recv_numbers(&mut b2, 2, 10_000).await, [1, 2]);
    let (got, _) = drain(&[b.addr], "pc", "AJ", 3).await;
    assert_eq!(got, [1, 200, 2]);
    no_numbers(&mut b1, 300).await;
    no_numbers(&mut b2, 100).await;
}

/// `send_many` and `broadcast` from any node reach the clients of every node, once.
pub async fn send_many_and_broadcast_reach_every_node<F: Flavor>() {
    let cluster = cluster_name("fanout");
    let nodes: Vec<Node<F>> = (0..3)
        .map(|_| Node::<F>::start(&F::url(), &cluster, fast()))
        .collect();
    for n in &nodes {
        n.wait_connected().await;
    }
    let mut clients = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        clients.push(ws_open(n.addr, &format!("u{i}"), &format!("c{i}")).await);
    }
    let mut rx = nodes[0].server().connected_uids();
    wait_uids(&mut rx, 5000, "three uids on node 0", |c| c.ws.len() == 3).await;
    let uids = [uid("u0"), uid("u1"), uid("u2")];
    nodes[0].server().send_many(uids.iter(), ev(1)).unwrap();
    nodes[2].server().broadcast(ev(2)).unwrap();
    nodes[1]
        .server()
        .send_many_flush(uids.iter(), ev(3))
        .unwrap();
    for c in &mut clients {
        let mut got = recv_numbers(c, 3, 5000).await;
        // Pushes from different nodes have no order between them; each arrives once.
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3]);
    }
    for c in &mut clients {
        no_numbers(c, 200).await;
    }
}

/// `close_uid` on A closes the uid's client on B.
pub async fn close_uid_closes_remote_clients<F: Flavor>() {
    let cluster = cluster_name("close");
    let a = Node::<F>::start(&F::url(), &cluster, fast());
    let b = Node::<F>::start(&F::url(), &cluster, fast());
    a.wait_connected().await;
    b.wait_connected().await;
    let mut on_b = ws_open(b.addr, "victim", "V").await;
    let mut bystander = ws_open(b.addr, "other", "O").await;
    let mut rx = a.server().connected_uids();
    wait_uids(&mut rx, 5000, "victim on A", |c| {
        c.ws.contains(&uid("victim"))
    })
    .await;
    a.server().close_uid(&uid("victim"));
    assert!(closed(&mut on_b, 5000).await, "B's client closed");
    a.server().send(&uid("other"), ev(7)).unwrap();
    assert_eq!(recv_numbers(&mut bystander, 1, 5000).await, vec![7]);
}

/// A's `connected_uids` shows uids connected only on B (ws and ajax), and loses them when B
/// shuts down gracefully.
pub async fn connected_uids_follow_a_graceful_shutdown<F: Flavor>() {
    let cluster = cluster_name("shutdown");
    let a = Node::<F>::start(&F::url(), &cluster, fast());
    let b = Node::<F>::start(&F::url(), &cluster, fast());
    a.wait_connected().await;
    b.wait_connected().await;
    let mut ws = ws_open(b.addr, "w", "W").await;
    // A client that reads (so it answers the close handshake).
    let reader = tokio::spawn(async move { closed(&mut ws, 20_000).await });
    let _poll = ajax_open(b.addr, "j", "J").await;
    let mut rx = a.server().connected_uids();
    wait_uids(&mut rx, 5000, "w (ws) and j (ajax) on A", |c| {
        c.ws.contains(&uid("w"))
            && c.ajax.contains(&uid("j"))
            && c.any.contains(&uid("w"))
            && c.any.contains(&uid("j"))
            && !c.ws.contains(&uid("j"))
            && !c.ajax.contains(&uid("w"))
    })
    .await;
    let t = Instant::now();
    b.server().shutdown().await;
    eprintln!("{}: B's shutdown took {:?}", F::NAME, t.elapsed());
    let w = wait_uids(&mut rx, 5000, "w gone", |c| !c.any.contains(&uid("w"))).await;
    eprintln!("{}: w left after {w:?}", F::NAME);
    let took = wait_uids(&mut rx, 5000, "B's uids gone from A", |c| c.any.is_empty()).await;
    eprintln!(
        "{}: B's uids left A {took:?} after B's shutdown returned",
        F::NAME
    );
    assert!(reader.await.unwrap(), "B's client was closed");
}

/// A node that dies without shutting down (its runtime dropped, connections and all): its uids
/// leave the other nodes' `connected_uids` within the expiry; a new node with the same uid is
/// counted once.
pub async fn dead_node_expires<F: Flavor>() {
    let cluster = cluster_name("dead");
    let presence = fast();
    let expiry = presence.expiry;
    let a = Node::<F>::start(&F::url(), &cluster, presence.clone());
    let b = Node::<F>::start(&F::url(), &cluster, presence.clone());
    a.wait_connected().await;
    b.wait_connected().await;
    let _ws = ws_open(b.addr, "d", "D").await;
    let _poll = ajax_open(b.addr, "e", "E").await;
    let mut rx = a.server().connected_uids();
    wait_uids(&mut rx, 5000, "d and e on A", |c| {
        c.ws.contains(&uid("d")) && c.ajax.contains(&uid("e"))
    })
    .await;
    b.kill();
    let took = wait_uids(
        &mut rx,
        (expiry + Duration::from_secs(2)).as_millis() as u64,
        "dead B's uids gone from A",
        |c| c.any.is_empty(),
    )
    .await;
    eprintln!(
        "{}: dead node's uids left A after {took:?} (expiry {expiry:?})",
        F::NAME
    );
    assert!(
        took + Duration::from_millis(300) >= expiry,
        "removed by the expiry, not earlier ({took:?})"
    );
    // The uid reconnects to a new node: counted once, then gone once.
    let c = Node::<F>::start(&F::url(), &cluster, presence);
    c.wait_connected().await;
    let ws = ws_open(c.addr, "d", "D").await;
    wait_uids(&mut rx, 5000, "d back on A", |c| {
        c.ws.contains(&uid("d")) && c.any.len() == 1
    })
    .await;
    drop(ws);
    wait_uids(&mut rx, 5000, "d gone again", |c| c.any.is_empty()).await;
}

/// The service restarts mid-test: the backplane reconnects by itself, `health()` shows the
/// outage, local clients keep being served, pushes cross nodes again afterwards.
pub async fn service_restart<F: Flavor>() {
    let port = free_port();
    let Some(service) = F::spawn_service(port) else {
        eprintln!("SKIPPED: no {} server binary to start", F::NAME);
        return;
    };
    let mut service = Guard(service);
    let url = F::url_on(port);
    wait_port(port).await;
    let cluster = cluster_name("restart");
    let a = Node::<F>::start(&url, &cluster, fast());
    let b = Node::<F>::start(&url, &cluster, fast());
    a.wait_connected().await;
    b.wait_connected().await;
    let mut local = ws_open(a.addr, "local", "L").await;
    let mut remote = ws_open(b.addr, "remote", "R").await;
    let mut rx = a.server().connected_uids();
    wait_uids(&mut rx, 5000, "remote on A", |c| {
        c.ws.contains(&uid("remote"))
    })
    .await;
    a.server().send(&uid("remote"), ev(1)).unwrap();
    assert_eq!(recv_numbers(&mut remote, 1, 5000).await, vec![1]);
    // A local Ajax client (handshake on A).
    let hs = raw_get(a.addr, "/chsk?uid=la&client-id=LA&handshake%3F=1").await;
    assert!(hs.contains("chsk/handshake"), "{hs}");

    // Kill the service.
    service.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.health().connected || b.health().connected {
        assert!(Instant::now() < deadline, "outage seen: {:?}", a.health());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let h = a.health();
    assert!(h.outages >= 1 && h.last_error.is_some(), "{h:?}");
    eprintln!("{}: during the outage: {h:?}", F::NAME);
    // Local clients are still served.
    for n in 10..20 {
        a.server().send(&uid("local"), ev(n)).unwrap();
    }
    assert_eq!(
        recv_numbers(&mut local, 10, 5000).await,
        (10..20).collect::<Vec<_>>()
    );
    // The local Ajax client too, from the node-local fallback: `send` and `send_to_client`
    // alike, in order.
    let la = sente_proto::ClientId::new("LA").unwrap();
    a.server().send(&uid("la"), ev(30)).unwrap();
    a.server().send_to_client(&uid("la"), &la, ev(31)).unwrap();
    a.server().send(&uid("la"), ev(32)).unwrap();
    let r = raw_get_within(a.addr, "/chsk?uid=la&client-id=LA", 5000).await;
    assert_eq!(ajax_numbers(&r), vec![30, 31, 32], "{r}");

    // Restart it on the same port.
    tokio::time::sleep(Duration::from_millis(300)).await;
    service = Guard(F::spawn_service(port).expect("service restarts"));
    a.wait_connected().await;
    b.wait_connected().await;
    // Presence converges again (snapshots after the heartbeats mismatch).
    wait_uids(&mut rx, 5000, "remote on A after the restart", |c| {
        c.ws.contains(&uid("remote"))
    })
    .await;
    for n in 100..110 {
        a.server().send(&uid("remote"), ev(n)).unwrap();
    }
    assert_eq!(
        recv_numbers(&mut remote, 10, 10_000).await,
        (100..110).collect::<Vec<_>>()
    );
    // Ajax mailboxes work again (the service lost them: a new handshake, on B; pushes from A;
    // polls on A).
    let hs = raw_get(b.addr, "/chsk?uid=aj&client-id=AJ&handshake%3F=1").await;
    assert!(hs.contains("chsk/handshake"), "{hs}");
    let appended = a.health().appends;
    for n in 200..205 {
        a.server().send(&uid("aj"), ev(n)).unwrap();
    }
    wait_appends(&a, appended + 5).await;
    let (got, _) = drain(&[a.addr], "aj", "AJ", 5).await;
    assert_eq!(got, (200..205).collect::<Vec<_>>());
    drop(service);
}

/// Two nodes start before their service does: until their backplanes join, both hold new
/// clients (a client served meanwhile would miss the other node's pushes); once joined, the
/// held handshake is answered and a client of one node hears the pushes of the other.
pub async fn node_serves_once_joined<F: Flavor>() {
    let port = free_port();
    let url = F::url_on(port);
    let cluster = cluster_name("join");
    let a = Node::<F>::start(&url, &cluster, fast());
    let b = Node::<F>::start(&url, &cluster, fast());
    let addr = b.addr;
    let held = tokio::spawn(async move {
        raw_get_within(addr, "/chsk?uid=j&client-id=J&handshake%3F=1", 20_000).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "answered before the node joined");
    assert!(!b.server().handle().is_serving());
    let Some(service) = F::spawn_service(port) else {
        eprintln!(
            "SKIPPED the joined part: no {} server binary to start",
            F::NAME
        );
        return;
    };
    let _service = Guard(service);
    a.wait_connected().await;
    b.wait_connected().await;
    let r = held.await.unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("chsk/handshake"),
        "{r}"
    );
    // Each node opens its gate from its own watch of the backplane (polled every 5 ms).
    tokio::time::timeout(Duration::from_secs(5), async {
        a.server().handle().serving().await;
        b.server().handle().serving().await;
    })
    .await
    .expect("both nodes serve once joined");
    assert!(a.server().handle().is_serving() && b.server().handle().is_serving());
    let mut ws = ws_open(b.addr, "late", "L").await;
    let mut rx = a.server().connected_uids();
    wait_uids(&mut rx, 5000, "late on A", |c| c.ws.contains(&uid("late"))).await;
    for n in 1..=3 {
        a.server().send(&uid("late"), ev(n)).unwrap();
    }
    assert_eq!(recv_numbers(&mut ws, 3, 5000).await, vec![1, 2, 3]);
}

struct Guard(std::process::Child);

impl Guard {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "service up on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cross-node vs same-node push latency and backplane bytes per push (release, ignored test).
pub async fn measure_latency<F: Flavor>(pushes: usize) {
    let cluster = cluster_name("latency");
    let a = Node::<F>::start(&F::url(), &cluster, ClusterConfig::default());
    let b = Node::<F>::start(&F::url(), &cluster, ClusterConfig::default());
    a.wait_connected().await;
    b.wait_connected().await;
    let mut on_b = ws_open(b.addr, "lb", "B").await;
    let mut on_a = ws_open(a.addr, "la", "A").await;
    let mut rx = a.server().connected_uids();
    wait_uids(&mut rx, 5000, "lb on A", |c| c.ws.contains(&uid("lb"))).await;
    let mut report = Vec::new();
    for (label, target, ws) in [
        ("same-node", uid("la"), &mut on_a),
        ("cross-node", uid("lb"), &mut on_b),
    ] {
        // Warm up.
        for n in 0..50 {
            a.server().send_flush(&target, ev(n)).unwrap();
            recv_numbers(ws, 1, 5000).await;
        }
        let before = a.health();
        let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for n in 0..pushes {
            let t = Instant::now();
            a.server().send_flush(&target, ev(n as i64)).unwrap();
            recv_numbers(ws, 1, 5000).await;
            hist.record(t.elapsed().as_micros() as u64).unwrap();
        }
        let after = a.health();
        let frames = after.published - before.published;
        let bytes = after.published_bytes - before.published_bytes;
        report.push(format!(
            "{} {label}: p50 {} us, p99 {} us, max {} us over {pushes} pushes; backplane: {:.2} frames and {:.1} bytes per push (heartbeats included)",
            F::NAME,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.max(),
            frames as f64 / pushes as f64,
            bytes as f64 / pushes as f64,
        ));
    }
    for r in report {
        println!("{r}");
    }
}

/// Sends `[ev]` once over a raw WebSocket (keeps the import of SinkExt used).
pub async fn ws_send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Cluster-wide uidport events and Ajax without sticky sessions.

fn total(nodes: &[&Seen], id: &str, uid: &str) -> usize {
    nodes.iter().map(|s| s.count(id, uid)).sum()
}

async fn wait_total(nodes: &[&Seen], id: &str, uid: &str, want: usize, ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(ms);
    while total(nodes, id, uid) < want {
        assert!(
            Instant::now() < deadline,
            "{want} {id} for {uid} within {ms} ms (saw {})",
            total(nodes, id, uid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The same uid connecting on two nodes at the same moment (eight uids at once), then on a
/// third: `chsk/uidport-open` fires once in the cluster per uid; when every client is gone
/// (after the grace), `chsk/uidport-close` fires once.
pub async fn uidport_once_per_cluster<F: Flavor>() {
    let cluster = cluster_name("uidport");
    let nodes: Vec<Node<F>> = (0..3)
        .map(|_| Node::<F>::start(&F::url(), &cluster, fast()))
        .collect();
    for n in &nodes {
        n.wait_connected().await;
    }
    let seen: Vec<&Seen> = nodes.iter().map(|n| &n.seen).collect();
    let uids: Vec<String> = (0..8).map(|i| format!("race{i}")).collect();
    let mut sockets = Vec::new();
    let opens = uids.iter().map(|u| {
        let (a, b) = (nodes[0].addr, nodes[1].addr);
        let u = u.clone();
        async move { tokio::join!(ws_open(a, &u, "x"), ws_open(b, &u, "y")) }
    });
    for (x, y) in futures_util::future::join_all(opens).await {
        sockets.push(x);
        sockets.push(y);
    }
    for u in &uids {
        wait_total(&seen, "chsk/uidport-open", u, 1, 5000).await;
    }
    sockets.push(ws_open(nodes[2].addr, &uids[0], "z").await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for u in &uids {
        assert_eq!(total(&seen, "chsk/uidport-open", u), 1, "opens of {u}");
        assert_eq!(total(&seen, "chsk/uidport-close", u), 0, "closes of {u}");
    }
    drop(sockets);
    for u in &uids {
        wait_total(&seen, "chsk/uidport-close", u, 1, 5000).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for u in &uids {
        assert_eq!(total(&seen, "chsk/uidport-open", u), 1, "opens of {u}");
        assert_eq!(total(&seen, "chsk/uidport-close", u), 1, "closes of {u}");
    }
    // Open again: once more.
    let _again = ws_open(nodes[2].addr, &uids[1], "w").await;
    wait_total(&seen, "chsk/uidport-open", &uids[1], 2, 5000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(total(&seen, "chsk/uidport-open", &uids[1]), 2);
}

/// A uid connected only on a node that dies (its runtime dropped): a survivor fires its
/// `chsk/uidport-close`, once, within the expiry; the uid coming back on two other nodes
/// (one of them new) opens once.
pub async fn uidport_close_for_a_dead_node<F: Flavor>() {
    let cluster = cluster_name("uidport-dead");
    let presence = fast();
    let expiry = presence.expiry;
    let a = Node::<F>::start(&F::url(), &cluster, presence.clone());
    let b = Node::<F>::start(&F::url(), &cluster, presence.clone());
    let c = Node::<F>::start(&F::url(), &cluster, presence.clone());
    for n in [&a, &b, &c] {
        n.wait_connected().await;
    }
    let _ws = ws_open(b.addr, "lonely", "L").await;
    wait_total(&[&b.seen], "chsk/uidport-open", "lonely", 1, 5000).await;
    let mut rx = a.server().connected_uids();
    wait_uids(&mut rx, 5000, "lonely on A", |c| {
        c.any.contains(&uid("lonely"))
    })
    .await;
    let killed = Instant::now();
    b.kill();
    let survivors = [&a.seen, &c.seen];
    wait_total(
        &survivors,
        "chsk/uidport-close",
        "lonely",
        1,
        (expiry + Duration::from_secs(3)).as_millis() as u64,
    )
    .await;
    eprintln!(
        "{}: dead node's uid closed by a survivor after {:?} (expiry {expiry:?})",
        F::NAME,
        killed.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(total(&survivors, "chsk/uidport-close", "lonely"), 1);
    // Back on A and on a new node D at once: one open.
    let d = Node::<F>::start(&F::url(), &cluster, presence);
    d.wait_connected().await;
    let (_x, _y) = tokio::join!(
        ws_open(a.addr, "lonely", "L2"),
        ws_open(d.addr, "lonely", "L3")
    );
    let all = [&a.seen, &c.seen, &d.seen];
    wait_total(&all, "chsk/uidport-open", "lonely", 1, 5000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(total(&all, "chsk/uidport-open", "lonely"), 1);
}

/// An Ajax client whose handshake, polls and POSTs land round-robin on three nodes: `n`
/// numbered pushes sent from pseudo-random nodes (each acknowledged by its backplane before
/// another node sends) arrive exactly once and in order; POSTs to nodes that never saw the
/// handshake are answered by the handler; the uid opens once in the cluster.
pub async fn ajax_round_robin<F: Flavor>() {
    const N: i64 = 60;
    let cluster = cluster_name("ajax-rr");
    let nodes: Vec<Node<F>> = (0..3)
        .map(|_| Node::<F>::start(&F::url(), &cluster, fast()))
        .collect();
    for n in &nodes {
        n.wait_connected().await;
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let hs = raw_get(addrs[0], "/chsk?uid=rr&client-id=RR&handshake%3F=1").await;
    assert!(hs.contains("chsk/handshake"), "{hs}");
    // A POST on a node that never saw this client (no handshake, no poll there).
    let r = raw_post(addrs[2], "rr", "RR", "[[:t/echo 0] :ajax-cb]").await;
    assert!(
        r.contains("echo-0"),
        "POST reply from a node that never saw the client: {r}"
    );
    let poller = {
        let addrs = addrs.clone();
        tokio::spawn(async move {
            let mut got: Vec<i64> = Vec::new();
            let mut i = 1;
            let deadline = Instant::now() + Duration::from_secs(15);
            while got.len() < N as usize && Instant::now() < deadline {
                let r = raw_get_within(addrs[i % 3], "/chsk?uid=rr&client-id=RR", 12_000).await;
                assert!(
                    !r.contains("chsk/handshake"),
                    "poll {i} answered with a handshake: {r}"
                );
                assert!(r.starts_with("HTTP/1.1 200"), "poll {i}: {r}");
                got.extend(ajax_numbers(&r));
                i += 1;
            }
            (got, i)
        })
    };
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut sent = [0u64; 3];
    let mut last: Option<usize> = None;
    for n in 1..=N {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let k = (state >> 33) as usize % 3;
        if let Some(prev) = last.filter(|p| *p != k) {
            // Acknowledged by the previous sender's backplane before another node sends.
            let deadline = Instant::now() + Duration::from_secs(5);
            while nodes[prev].health().appends < sent[prev] {
                assert!(Instant::now() < deadline, "appends acknowledged");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        nodes[k].server().send(&uid("rr"), ev(n)).unwrap();
        sent[k] += 1;
        last = Some(k);
        if n % 7 == 0 {
            tokio::time::sleep(Duration::from_millis((state >> 40) % 150)).await;
        }
        if n % 15 == 0 {
            // A POST with a reply, on a node chosen independently of the polls.
            let r = raw_post(
                addrs[(k + 1) % 3],
                "rr",
                "RR",
                &format!("[[:t/echo {n}] :ajax-cb]"),
            )
            .await;
            assert!(r.contains(&format!("echo-{n}")), "POST reply: {r}");
        }
    }
    let (got, polls) = poller.await.unwrap();
    assert_eq!(got, (1..=N).collect::<Vec<_>>(), "after {polls} polls");
    eprintln!(
        "{}: {N} pushes over {} polls on 3 nodes",
        F::NAME,
        polls - 1
    );
    // Nothing more waits anywhere (a duplicate would answer at once).
    let r = raw_get_within(addrs[polls % 3], "/chsk?uid=rr&client-id=RR", 1500).await;
    assert!(ajax_numbers(&r).is_empty(), "no duplicates: {r}");
    let seen: Vec<&Seen> = nodes.iter().map(|n| &n.seen).collect();
    assert_eq!(
        total(&seen, "chsk/uidport-open", "rr"),
        1,
        "uidport-close meanwhile: {}",
        total(&seen, "chsk/uidport-close", "rr")
    );
    assert_eq!(total(&seen, "t/echo", "rr"), (N / 15) as usize + 1);
}

/// The mailbox bound: an Ajax client (handshake on A) with more pushes waiting than the bound
/// is forgotten, as one server forgets it: its next poll (on B) gets a handshake. A client
/// within the bound gets them all, in order.
pub async fn ajax_mailbox_bound<F: Flavor>() {
    let cluster = cluster_name("ajax-bound");
    let a = Node::<F>::start_with(|| F::start_small_mailbox(&F::url(), &cluster, 5));
    let b = Node::<F>::start_with(|| F::start_small_mailbox(&F::url(), &cluster, 5));
    a.wait_connected().await;
    b.wait_connected().await;
    for (u, c) in [("over", "O"), ("within", "W")] {
        let hs = raw_get(
            a.addr,
            &format!("/chsk?uid={u}&client-id={c}&handshake%3F=1"),
        )
        .await;
        assert!(hs.contains("chsk/handshake"), "{hs}");
    }
    for n in 1..=6 {
        a.server().send(&uid("over"), ev(n)).unwrap();
    }
    for n in 1..=5 {
        a.server().send(&uid("within"), ev(n)).unwrap();
    }
    wait_appends(&a, 11).await;
    let r = raw_get_within(b.addr, "/chsk?uid=within&client-id=W", 5000).await;
    assert_eq!(ajax_numbers(&r), vec![1, 2, 3, 4, 5], "{r}");
    let r = raw_get_within(b.addr, "/chsk?uid=over&client-id=O", 5000).await;
    assert!(
        r.contains("chsk/handshake"),
        "forgotten over the bound: {r}"
    );
    assert!(ajax_numbers(&r).is_empty());
}

/// Backplane messages and bytes per push: to a uid with one client, and a broadcast to 1 000
/// uids (one WebSocket client each, spread over two nodes).
pub async fn measure_messages_per_push<F: Flavor>(pushes: u64) {
    let cluster = cluster_name("per-push");
    let a = Node::<F>::start(&F::url(), &cluster, ClusterConfig::default());
    let b = Node::<F>::start(&F::url(), &cluster, ClusterConfig::default());
    a.wait_connected().await;
    b.wait_connected().await;
    let mut one = ws_open(b.addr, "one", "ONE").await;
    let mut rx = a.server().connected_uids();
    wait_uids(&mut rx, 5000, "one on A", |c| c.ws.contains(&uid("one"))).await;
    let before = a.health();
    for n in 0..pushes {
        a.server().send(&uid("one"), ev(n as i64)).unwrap();
    }
    recv_numbers(&mut one, pushes as usize, 10_000).await;
    let after = a.health();
    report::<F>("1-client uid", pushes, &before, &after);
    drop(one);
    let mut clients = Vec::new();
    for i in 0..1000 {
        let node = if i % 2 == 0 { &a } else { &b };
        clients.push(ws_open(node.addr, &format!("b{i}"), &format!("c{i}")).await);
    }
    wait_uids(&mut rx, 10_000, "1000 uids on A", |c| c.ws.len() >= 1000).await;
    settle(&[&a, &b]).await;
    let before = a.health();
    let rounds = 100;
    for n in 0..rounds {
        a.server().broadcast(ev(n)).unwrap();
    }
    for c in &mut clients {
        recv_numbers(c, rounds as usize, 10_000).await;
    }
    let after = a.health();
    report::<F>(
        "1000-uid broadcast (WebSocket clients)",
        rounds as u64,
        &before,
        &after,
    );
    drop(clients);
    wait_uids(&mut rx, 20_000, "the WebSocket uids gone", |c| {
        c.any.is_empty()
    })
    .await;
    settle(&[&a, &b]).await;

    // Ajax: one client, its mailbox filled, then emptied by polls on alternating nodes.
    let hs = raw_get(b.addr, "/chsk?uid=aj&client-id=AJ&handshake%3F=1").await;
    assert!(hs.contains("chsk/handshake"), "{hs}");
    let nodes = [&a, &b];
    settle(&nodes).await;
    let before = sum(&nodes);
    for n in 0..pushes {
        a.server().send(&uid("aj"), ev(n as i64)).unwrap();
    }
    wait_appends(&a, before.appends + pushes).await;
    let mid = sum(&nodes);
    let (got, polls) = drain(&[a.addr, b.addr], "aj", "AJ", pushes as usize).await;
    assert_eq!(got, (0..pushes as i64).collect::<Vec<_>>());
    let after = sum(&nodes);
    report::<F>("1-client uid (Ajax client)", pushes, &before, &mid);
    report_polls::<F>("1-client uid (Ajax client)", polls, &mid, &after);

    // Ajax: 1000 uids, one client each, 10 broadcasts, then one poll per client.
    for i in 0..1000 {
        let node = if i % 2 == 0 { &a } else { &b };
        let hs = raw_get(
            node.addr,
            &format!("/chsk?uid=j{i}&client-id=J{i}&handshake%3F=1"),
        )
        .await;
        assert!(hs.contains("chsk/handshake"), "{hs}");
    }
    let rounds = 10u64;
    settle(&nodes).await;
    let before = sum(&nodes);
    let t = Instant::now();
    for n in 0..rounds {
        a.server().broadcast(ev(n as i64)).unwrap();
    }
    wait_appends(&a, before.appends + rounds).await;
    println!(
        "{}: {rounds} broadcasts appended to 1000 Ajax mailboxes in {:?}",
        F::NAME,
        t.elapsed()
    );
    let mid = sum(&nodes);
    let mut polls = 0;
    for i in 0..1000 {
        let addrs = if i % 2 == 0 {
            [b.addr, a.addr]
        } else {
            [a.addr, b.addr]
        };
        let (got, p) = drain(&addrs, &format!("j{i}"), &format!("J{i}"), rounds as usize).await;
        assert_eq!(got, (0..rounds as i64).collect::<Vec<_>>());
        polls += p;
    }
    let after = sum(&nodes);
    report::<F>("1000-uid broadcast (Ajax clients)", rounds, &before, &mid);
    report_polls::<F>("1000-uid broadcast (Ajax clients)", polls, &mid, &after);
}

/// The counters of several nodes, added up.
fn sum<F: Flavor>(nodes: &[&Node<F>]) -> H {
    let mut t = H::default();
    for n in nodes {
        let h = n.health();
        t.published += h.published;
        t.published_bytes += h.published_bytes;
        t.appends += h.appends;
        t.append_bytes += h.append_bytes;
        t.ops += h.ops;
    }
    t
}

/// Waits until the nodes' engine operations and appends stop changing (queued uidport
/// decisions and registrations done), so a measurement counts only its own.
async fn settle<F: Flavor>(nodes: &[&Node<F>]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (u64::MAX, u64::MAX);
    loop {
        let h = sum(nodes);
        if (h.ops, h.appends) == last {
            return;
        }
        last = (h.ops, h.appends);
        assert!(Instant::now() < deadline, "engine operations settle");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_appends<F: Flavor>(node: &Node<F>, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.health().appends < want {
        assert!(Instant::now() < deadline, "appends acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls (alternating over `addrs`) until `count` numbers arrived; the numbers and the polls.
async fn drain(addrs: &[SocketAddr], u: &str, c: &str, count: usize) -> (Vec<i64>, usize) {
    let mut got = Vec::new();
    let mut i = 0;
    while got.len() < count {
        let r = raw_get_within(
            addrs[i % addrs.len()],
            &format!("/chsk?uid={u}&client-id={c}"),
            5000,
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        got.extend(ajax_numbers(&r));
        i += 1;
        assert!(
            i < 10 * count + 10,
            "{count} numbers within the polls: {got:?}"
        );
    }
    (got, i)
}

fn report_polls<F: Flavor>(what: &str, polls: usize, before: &H, after: &H) {
    let p = polls as f64;
    println!(
        "{} {what}: the {polls} polls that took them: per poll {:.2} engine operations (registration, take, uidport), {:.2} pub/sub messages (presence; heartbeats included)",
        F::NAME,
        (after.ops - before.ops) as f64 / p,
        (after.published - before.published) as f64 / p,
    );
}

fn report<F: Flavor>(what: &str, pushes: u64, before: &H, after: &H) {
    let p = pushes as f64;
    println!(
        "{} {what}: per push {:.3} pub/sub messages ({:.1} payload bytes) + {:.3} mailbox appends ({:.1} event bytes) + {:.3} other engine operations (heartbeats included)",
        F::NAME,
        (after.published - before.published) as f64 / p,
        (after.published_bytes - before.published_bytes) as f64 / p,
        (after.appends - before.appends) as f64 / p,
        (after.append_bytes - before.append_bytes) as f64 / p,
        (after.ops - before.ops) as f64 / p,
    );
}

/// The `delivered` mark of an Ajax answer goes ahead of the node's queued engine operations
/// (the backplane kit's urgent lane, `OpQueue`): with 300 operations queued before it, the
/// mark runs after the one in progress, not after the queue. A node dropped (as if killed)
/// right after its mark ran, its queue still full, leaves the lease marked, so the client's
/// handshake on another node drops the lease instead of re-sending the batch.
pub async fn delivered_mark_jumps_the_queue<F: Flavor>() {
    let cluster = cluster_name("mark-first");
    let a = F::start(&F::url(), &cluster, fast());
    let b = F::start(&F::url(), &cluster, fast());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(F::health(&a).connected && F::health(&b).connected) {
        assert!(Instant::now() < deadline, "both backplanes connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (ma, mb) = (
        a.mailbox().expect("mailboxes"),
        b.mailbox().expect("mailboxes"),
    );
    let (u, c) = (uid("marked"), sente_proto::ClientId::new("M").unwrap());
    ma.register(&u, &c, Duration::from_secs(30)).await;
    a.publish(sente_proto::backplane::BackplaneMsg::Push {
        uid: u.clone(),
        event: Arc::new(ev(1)),
        estimate: 16,
        flush: true,
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let taken = loop {
        let taken = ma.take(&u, &c, 10, 1 << 20).await;
        if !taken.is_empty() {
            break taken;
        }
        assert!(Instant::now() < deadline, "the push reached the mailbox");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(taken.len(), 1);
    // 300 operations queued (each an engine round trip), then the mark.
    let others: Vec<_> = (0..300)
        .map(|i| ma.known(&u, &sente_proto::ClientId::new(format!("x{i}")).unwrap()))
        .collect();
    let before = F::health(&a).ops;
    ma.delivered(&u, &c).await;
    let ran = F::health(&a).ops - before;
    // Without the lane all 300 run first; with it, the one in progress (and any the engine
    // finished while this task was between reading the count and queueing the mark: a fast
    // engine on a loaded machine may do a few).
    assert!(
        ran < 50,
        "the mark ran ahead of the queue, not after it: {ran} operations ran"
    );
    drop((others, ma, a));
    // The client's handshake on the other node: the lease was delivered, so it is dropped.
    mb.settle(&u, &c, true).await;
    let again = mb.take(&u, &c, 10, 1 << 20).await;
    assert!(
        again.is_empty(),
        "the delivered batch is not sent again: {again:?}"
    );
}

/// `server.request(uid, ..)` on one node reaches the uid's clients on every node: the other
/// node asks its own clients and their answers come back through the backplane
/// (`BackplaneMsg::Request` / `RequestAnswers`), next to the asking node's own clients'.
/// WebSocket clients here; Ajax clients in [`ajax_request_answered_on_any_node`].
pub async fn request_reaches_every_node<F: Flavor>() {
    use sente_client::{Client, Kind};
    let cluster = cluster_name("request");
    let a = Node::<F>::start(&F::url(), &cluster, fast());
    let b = Node::<F>::start(&F::url(), &cluster, fast());
    a.wait_connected().await;
    b.wait_connected().await;
    let client = |node: &Node<F>, kind: Kind| {
        Client::builder(format!("http://{}/chsk", node.addr))
            .kind(kind)
            .csrf_token(TOKEN)
            .header("origin", ORIGIN)
            .param("uid", "rq")
    };
    let answer = |who: &'static str| {
        move |e: &Event| Value::Vector(vec![Value::from(who), e.data().clone()])
    };
    let on_b = client(&b, Kind::Ws)
        .on_request("app/ask", answer("b-ws"))
        .connect()
        .unwrap();
    let plain_b = client(&b, Kind::Ws).connect().unwrap();
    on_b.wait_open().await;
    plain_b.wait_open().await;
    // A knows B has the uid before its own client connects.
    let mut rx = a.server().connected_uids();
    wait_uids(&mut rx, 5000, "rq on B seen by A", |c| {
        c.any.contains(&uid("rq"))
    })
    .await;
    let on_a = client(&a, Kind::Ws)
        .on_request("app/ask", answer("a-ws"))
        .connect()
        .unwrap();
    on_a.wait_open().await;
    let ask = Event::new(EventId::new("app/ask").unwrap(), Value::Int(7));
    let got = a
        .server()
        .request(&uid("rq"), ask, Duration::from_secs(3))
        .await;
    let mut replies: Vec<String> = got
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(ToString::to_string))
        .collect();
    replies.sort();
    assert_eq!(
        replies,
        vec![r#"["a-ws" 7]"#.to_owned(), r#"["b-ws" 7]"#.to_owned()],
        "{got:?}"
    );
    let unsupported = got
        .iter()
        .filter(|(_, r)| matches!(r, Err(sente::s2c::RequestError::Unsupported)))
        .count();
    assert_eq!(unsupported, 1, "the plain client on B: {got:?}");
    assert_eq!(got.len(), 3, "{got:?}");
}

/// A TCP forwarder sending each new connection to the next of `upstreams` (a load balancer
/// without sticky sessions); its address.
async fn round_robin(upstreams: Vec<SocketAddr>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut next = 0;
        while let Ok((mut down, _)) = listener.accept().await {
            let to = upstreams[next % upstreams.len()];
            next += 1;
            tokio::spawn(async move {
                if let Ok(mut up) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
    });
    addr
}

/// The request id in a polled `[:chsk/req [id ..]]`. (Answers are POSTed as Sente's packed
/// `-<event>`: an event without a callback.)
fn request_id(poll: &str) -> u64 {
    let at = poll.find(":chsk/req [").expect("a chsk/req") + ":chsk/req [".len();
    poll[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Asks client `AR` of uid `ar` `[:app/ask n]` from `server` while that client's poll is held
/// on `addr`: the request's id (as the poll received it) and the request's results to come.
async fn ask_polling_client(
    server: &Server,
    addr: SocketAddr,
    n: i64,
) -> (
    u64,
    tokio::task::JoinHandle<
        Vec<(
            sente_proto::ClientId,
            Result<Value, sente::s2c::RequestError>,
        )>,
    >,
) {
    let poll = tokio::spawn(raw_get(addr, "/chsk?uid=ar&client-id=AR&ext=req"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = server.clone();
    let ask = Event::new(EventId::new("app/ask").unwrap(), Value::Int(n));
    let asked = tokio::spawn(async move {
        server
            .request(&uid("ar"), ask, Duration::from_secs(8))
            .await
    });
    (request_id(&poll.await.unwrap()), asked)
}

/// `server.request(uid, ..)` to Ajax clients whose answers (POSTs) land on another node than
/// the one that asked: the answer is forwarded to the asking node (`BackplaneMsg::RequestReply`)
/// and taken there, only from the client asked, once; answers from another client, repeated
/// or for no request are refused and counted exactly once in the cluster; a node forwards at
/// most `max_forwarded_replies_per_client_per_sec` answers of one client per second (the rest
/// are refused where they land), and that client's spray costs no other client its answer.
/// Then a native Ajax client behind a round-robin balancer answers every request.
pub async fn ajax_request_answered_on_any_node<F: Flavor>() {
    use sente_client::{Client, Kind};
    if no_mailbox() {
        eprintln!("SKIPPED: no Ajax mailboxes, so Ajax clients need sticky sessions");
        return;
    }
    let cluster = cluster_name("ajax-req");
    let a = Node::<F>::start(&F::url(), &cluster, fast());
    let b = Node::<F>::start(&F::url(), &cluster, fast());
    a.wait_connected().await;
    b.wait_connected().await;
    let rejected = |n: &Node<F>| n.server().stats().rejected_requests;
    let ask = |n: i64| Event::new(EventId::new("app/ask").unwrap(), Value::Int(n));
    // An Ajax client of A (handshake and poll there) that handles requests.
    let hs = raw_get(a.addr, "/chsk?uid=ar&client-id=AR&handshake%3F=1&ext=req").await;
    assert!(hs.contains("chsk/handshake"), "{hs}");
    let (id, asked) = ask_polling_client(a.server(), a.addr, 7).await;
    let (ra, rb) = (rejected(&a), rejected(&b));
    // Another client of the uid answering on B: forwarded, refused on A.
    let r = raw_post(b.addr, "ar", "XX", &format!("-[:chsk/rep [{id} :not-me]]")).await;
    assert!(r.contains("chsk/dummy-cb-200"), "{r}");
    // The client asked, on B: forwarded, taken on A.
    raw_post(b.addr, "ar", "AR", &format!("-[:chsk/rep [{id} :from-b]]")).await;
    let got = asked.await.unwrap();
    assert_eq!(
        got,
        vec![(
            sente_proto::ClientId::new("AR").unwrap(),
            Ok(Value::kw("from-b"))
        )],
        "the answer POSTed on B reached A's request"
    );
    // Again (the request is answered) and an id of no node: refused.
    raw_post(b.addr, "ar", "AR", &format!("-[:chsk/rep [{id} :again]]")).await;
    raw_post(b.addr, "ar", "AR", "-[:chsk/rep [12345 :own-tag-or-none]]").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while rejected(&a) + rejected(&b) < ra + rb + 3 {
        assert!(Instant::now() < deadline, "refusals counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A spray of answers for ids of A, from one client on B: each refused once in the cluster;
    // at most the budget forwarded per second.
    let (ra, rb) = (rejected(&a), rejected(&b));
    const SPRAY: u64 = 150;
    let started = Instant::now();
    for k in 0..SPRAY {
        let junk = (id & !0xffff_ffff) | (1_000_000 + k);
        raw_post(
            b.addr,
            "ar",
            "SPRAY",
            &format!("-[:chsk/rep [{junk} :junk]]"),
        )
        .await;
    }
    let windows = started.elapsed().as_secs() + 1;
    // Meanwhile another client's answer is still forwarded and taken.
    let (id2, asked) = ask_polling_client(a.server(), a.addr, 8).await;
    raw_post(b.addr, "ar", "AR", &format!("-[:chsk/rep [{id2} :still]]")).await;
    let got = asked.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, Ok(Value::kw("still")), "{got:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while rejected(&a) + rejected(&b) < ra + rb + SPRAY {
        assert!(Instant::now() < deadline, "every sprayed answer refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (on_a, on_b) = (rejected(&a) - ra, rejected(&b) - rb);
    assert_eq!(
        on_a + on_b,
        SPRAY,
        "each refused once: {on_a} on A, {on_b} on B"
    );
    let budget =
        sente_proto::s2c::RequestConfig::default().max_forwarded_replies_per_client_per_sec;
    assert!(
        on_a <= u64::from(budget) * windows,
        "forwarded {on_a} in {windows} s, budget {budget}/s"
    );
    eprintln!(
        "{}: spray of {SPRAY}: {on_a} forwarded and refused on A, {on_b} refused on B",
        F::NAME
    );
    // A native Ajax client behind a round-robin balancer over A and B: every request answered,
    // wherever its polls and answers land.
    let lb = round_robin(vec![a.addr, b.addr]).await;
    // The uid in the URL itself: `param` goes on the GETs only, and the answers are POSTs.
    let ajax = Client::builder(format!("http://{lb}/chsk?uid=native-ar"))
        .kind(Kind::Ajax)
        .csrf_token(TOKEN)
        .header("origin", ORIGIN)
        .on_request("app/ask", |e: &Event| e.data().clone())
        .connect()
        .unwrap();
    ajax.wait_open().await;
    for n in 0..6 {
        let got = a
            .server()
            .request(&uid("native-ar"), ask(n), Duration::from_secs(8))
            .await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, Ok(Value::Int(n)), "request {n}: {got:?}");
    }
}

/// The `"run-<n>"` reply in an Ajax POST's response (see [`Seen`]'s `t/once`).
fn run_of(response: &str) -> Option<String> {
    let at = response.find("run-")?;
    let digits: String = response[at + 4..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("run-{digits}"))
}

/// Idempotent requests across nodes (`sente::idem`, the cluster's dedupe in the engine): a
/// retried request's copy that lands on node B while its first copy runs on A (800 ms) waits
/// for that run and gets its reply; a later copy on B gets it at once; the handler ran once in
/// the cluster. A request id never seen runs where it lands.
pub async fn retried_request_runs_once_in_the_cluster<F: Flavor>() {
    let cluster = cluster_name("idem");
    let a = Node::<F>::start(&F::url(), &cluster, fast());
    let b = Node::<F>::start(&F::url(), &cluster, fast());
    a.wait_connected().await;
    b.wait_connected().await;
    let post = |addr: SocketAddr, ppstr: &'static str| {
        tokio::spawn(async move { raw_post_ext(addr, "ui", "I1", ppstr, Some("idem")).await })
    };
    let once = r#"[[:t/once 800] "!abc123.1"]"#;
    let first = post(a.addr, once);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let copy = post(b.addr, once);
    let (first, copy) = (first.await.unwrap(), copy.await.unwrap());
    let run = run_of(&first).unwrap_or_else(|| panic!("the first copy's reply: {first}"));
    assert_eq!(run_of(&copy).as_deref(), Some(run.as_str()), "{copy}");
    let later = post(b.addr, once).await.unwrap();
    assert_eq!(run_of(&later).as_deref(), Some(run.as_str()), "{later}");
    let runs = a.seen.count("t/once", "ui") + b.seen.count("t/once", "ui");
    assert_eq!(runs, 1, "the handler ran once in the cluster");
    // Another request id runs, on the node it lands on.
    let other = post(b.addr, r#"[[:t/once 0] "!abc123.2"]"#).await.unwrap();
    assert!(run_of(&other).is_some_and(|r| r != run), "{other}");
    assert_eq!(
        b.seen.count("t/once", "ui") + a.seen.count("t/once", "ui"),
        2
    );
}
