//! A node's start and end. `ServerHandle::shutdown` drains in phases: a slow handler's reply
//! reaches its client during the shutdown (WebSocket and Ajax), new handshakes and polls get
//! `503` with `Retry-After` meanwhile, buffered pushes are flushed before the close, held Ajax
//! polls are answered (not cut), and clients are closed spread over `shutdown_stagger`. At the
//! start, a node whose backplane has not joined its cluster holds new clients until it joins
//! or `join_wait` passes. Real sockets on 127.0.0.1.

mod common;

use common::*;
use sente::{EventMsg, Router, Server};
use sente_proto::backplane::{Backplane, BackplaneMsg, BackplaneSink, LocalBackplane};
use sente_proto::{Uid, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A server whose `t/slow` handler replies `[:slow n]` after `n` ms.
async fn slow_server(stagger: Duration) -> (Server, SocketAddr) {
    let router = Router::new().on("t/slow", |mut msg: EventMsg| async move {
        let ms = msg.data_value().as_i64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())).await;
        msg.reply(Value::Vector(vec![Value::kw("slow"), Value::Int(ms)]));
    });
    let server = transcript_builder()
        .handler(router)
        .send_buf_ms_ws(2000)
        .drain_timeout(Duration::from_secs(5))
        .shutdown_stagger(stagger)
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let addr = listen(&server).await;
    (server, addr)
}

/// Serves `server` at `/chsk` on a fresh 127.0.0.1 port.
async fn listen(server: &Server) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server.router::<()>("/chsk");
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn ws_open(addr: SocketAddr, uid: &str) -> Ws {
    let mut ws = ws_connect(
        addr,
        &format!("uid={uid}&client-id={uid}&csrf-token=tok-123"),
    )
    .await;
    let hs = ws_text(&mut ws).await;
    assert!(hs.starts_with("[[:chsk/handshake "), "{hs}");
    ws
}

/// The status a WebSocket upgrade is refused with (panics if it is accepted).
async fn ws_refused(addr: SocketAddr) -> u16 {
    let refused = tokio_tungstenite::connect_async({
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{addr}/chsk?uid=x&client-id=x&csrf-token=tok-123")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("Origin", ORIGIN.parse().unwrap());
        req
    })
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        other => panic!("a WebSocket upgrade that should be refused: {other:?}"),
    }
}

/// Reads frames until the close frame; the texts read before it and the close code.
async fn until_close(ws: &mut Ws) -> (Vec<String>, u16) {
    let mut texts = Vec::new();
    loop {
        match ws_frame(ws, 10_000).await {
            Some(Message::Text(t)) => texts.push(t.to_string()),
            Some(Message::Close(f)) => {
                // Answers the close (tungstenite sends its close frame on the next read).
                let _ = ws_frame(ws, 1000).await;
                return (texts, f.map_or(1005, |f| u16::from(f.code)));
            }
            Some(_) => {}
            None => panic!("closed without a close frame after {texts:?}"),
        }
    }
}

async fn ajax_handshake(addr: SocketAddr, query: &str) {
    let r = raw(
        addr,
        &get_req(&format!("/chsk?{query}&handshake%3F=1"), &ajax_headers()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A slow handler's WebSocket and Ajax replies arrive after the shutdown started; meanwhile a
/// new handshake (WebSocket or Ajax) is refused `503` with `Retry-After`; a push buffered for
/// the WebSocket client (long batching window) is flushed before its close frame, which comes
/// after the reply; the shutdown resolves once the clients are gone, and every phase is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_replies_arrive_during_shutdown_and_new_handshakes_get_503() {
    let (server, addr) = slow_server(Duration::from_millis(50)).await;
    let mut ws = ws_open(addr, "w").await;
    ws_send(&mut ws, "[[:t/slow 600] \"cb1\"]").await;
    let ajax = tokio::spawn(async move { post_ppstr(addr, "a", "[[:t/slow 700] :ajax-cb]").await });
    // Both handlers are running (they take 600 and 700 ms): no reply yet.
    ws_silent(&mut ws, 150).await;
    server
        .send(&Uid::from("w"), ev("t/buffered", Value::Int(1)))
        .unwrap();
    assert!(!server.is_draining());
    let started = Instant::now();
    let shutdown = tokio::spawn({
        let s = server.clone();
        async move { s.shutdown().await }
    });
    while !server.is_draining() {
        tokio::task::yield_now().await;
    }
    // Draining: new clients are sent elsewhere.
    let r = raw(
        addr,
        &get_req("/chsk?client-id=n&uid=n&handshake%3F=1", &ajax_headers()),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(ws_refused(addr).await, 503);
    // The WebSocket client gets its reply, then the buffered push, then a normal close.
    let (texts, code) = until_close(&mut ws).await;
    assert_eq!(code, 1000);
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(texts[0], "[[:slow 600] \"cb1\"]");
    assert_eq!(texts[1], "[[[:t/buffered 1]] nil]");
    // The Ajax POST gets its reply too.
    let r = ajax.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "[[:slow 700] nil]"));
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown resolves")
        .unwrap();
    // It waited for the slow handlers, not for its timeouts.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    // Stopped: every request is refused now, POSTs too.
    let r = post_ppstr(addr, "a", "[[:t/slow 1] :ajax-cb]").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
}

/// A held Ajax poll is answered with an empty `200` (the client polls again, elsewhere), not
/// cut and not `410`; WebSocket clients are closed spread over `shutdown_stagger`, not all at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_polls_are_answered_and_clients_closed_staggered() {
    const CLIENTS: usize = 20;
    let stagger = Duration::from_millis(600);
    let (server, addr) = slow_server(stagger).await;
    ajax_handshake(addr, "client-id=p&uid=p").await;
    let poll = tokio::spawn(async move {
        raw(addr, &get_req("/chsk?client-id=p&uid=p", &ajax_headers())).await
    });
    let mut closes = Vec::new();
    for i in 0..CLIENTS {
        let mut ws = ws_open(addr, &format!("s{i}")).await;
        closes.push(tokio::spawn(async move {
            let (_, code) = until_close(&mut ws).await;
            (code, Instant::now())
        }));
    }
    let mut rx = server.connected_uids();
    tokio::time::timeout(Duration::from_secs(5), async {
        while rx.borrow().any.len() < CLIENTS + 1 {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("every client connected");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown resolves");
    let r = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the held poll is answered")
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "[:chsk/timeout nil]"));
    assert_eq!(r.header("connection"), Some("close"));
    let mut at = Vec::new();
    for c in closes {
        let (code, t) = c.await.unwrap();
        assert_eq!(code, 1000);
        at.push(t.duration_since(started));
    }
    at.sort();
    let spread = at[CLIENTS - 1].saturating_sub(at[0]);
    eprintln!("{CLIENTS} WebSocket clients closed over {spread:?} (stagger {stagger:?})");
    // Spread, not at once: the last close comes at least half the stagger after the first.
    assert!(
        spread >= stagger / 2,
        "closes spread over {spread:?}: {at:?}"
    );
}

/// `serve_with_shutdown` with a drain, as in the crate docs' "Deploying": once the signal
/// fires the listener is closed (new connections are refused), a slow Ajax POST in progress
/// still gets its reply, and the serve future resolves once its response was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_shutdown_stops_accepting_and_finishes_responses() {
    let router = Router::new().on("t/slow", |mut msg: EventMsg| async move {
        let ms = msg.data_value().as_i64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())).await;
        msg.reply(Value::Int(ms));
    });
    let server = transcript_builder().handler(router).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(sente::serve_with_shutdown(
        listener,
        server.router::<()>("/chsk"),
        sente::ServeConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let post = tokio::spawn(async move { post_ppstr(addr, "a", "[[:t/slow 500] :cb]").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let drain = tokio::spawn({
        let h = server.handle().clone();
        async move { h.shutdown().await }
    });
    tokio::time::timeout(Duration::from_secs(5), async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the listener is closed");
    let r = post.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "[500 nil]"));
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("serve_with_shutdown resolves")
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("drained")
        .unwrap();
}

/// A one-node backplane that joins its "cluster" when told to.
struct LateJoin {
    local: LocalBackplane,
    joined: Arc<AtomicBool>,
}

impl Backplane for LateJoin {
    fn publish(&self, msg: BackplaneMsg) {
        self.local.publish(msg);
    }

    fn subscribe(&self, sink: BackplaneSink) {
        self.local.subscribe(sink);
    }

    fn joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }
}

/// A server over a [`LateJoin`] backplane (joined when the flag is set), serving on 127.0.0.1.
async fn late_join_server(join_wait: Duration) -> (Server, SocketAddr, Arc<AtomicBool>) {
    let joined = Arc::new(AtomicBool::new(false));
    let backplane = LateJoin {
        local: LocalBackplane::new(),
        joined: joined.clone(),
    };
    let server = transcript_builder()
        .backplane(Arc::new(backplane))
        .join_wait(join_wait)
        .build()
        .unwrap();
    let addr = listen(&server).await;
    (server, addr, joined)
}

async fn late_handshake(addr: SocketAddr) -> Resp {
    raw(
        addr,
        &get_req("/chsk?client-id=j&uid=j&handshake%3F=1", &ajax_headers()),
    )
    .await
}

/// Whether `task` is still running after `ms` (a request the node holds).
async fn still_held<T>(task: &tokio::task::JoinHandle<T>, ms: u64) -> bool {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    !task.is_finished()
}

/// Until its backplane joins, a node holds new clients (an Ajax handshake, a WebSocket
/// upgrade) and says it is not serving, while a POST goes through; once the backplane joins,
/// the held requests are answered and pushes reach the clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_new_clients_until_its_backplane_joined() {
    let (server, addr, joined) = late_join_server(Duration::from_secs(60)).await;
    assert!(!server.handle().is_serving());
    let handshake = tokio::spawn(late_handshake(addr));
    let upgrade = tokio::spawn(ws_open(addr, "w"));
    assert!(still_held(&handshake, 300).await);
    assert!(!upgrade.is_finished());
    let r = post_ppstr(addr, "p", "[[:t/x 1] :ajax-cb]").await;
    assert_eq!(r.status, 200, "{}", r.text());

    joined.store(true, Ordering::Release);
    tokio::time::timeout(Duration::from_secs(5), server.handle().serving())
        .await
        .expect("serving once joined");
    assert!(server.handle().is_serving());
    let r = handshake.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("chsk/handshake"), "{}", r.text());
    let mut ws = upgrade.await.unwrap();
    server
        .send(&Uid::from("w"), ev("t/after-join", Value::Int(1)))
        .unwrap();
    server.flush(&Uid::from("w"));
    let pushed = ws_text(&mut ws).await;
    assert!(pushed.contains("[:t/after-join 1]"), "{pushed}");
}

/// A backplane that never joins holds the node back for `join_wait` only: then the held
/// requests are answered, without the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_join_wait_a_node_serves_without_its_cluster() {
    let started = Instant::now();
    let (server, addr, _joined) = late_join_server(Duration::from_secs(1)).await;
    let r = late_handshake(addr).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(server.handle().is_serving());
    let _ws = ws_open(addr, "w").await;
}

/// `join_wait` zero serves at once, before the backplane joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_join_wait_serves_at_once() {
    let (server, addr, _joined) = late_join_server(Duration::ZERO).await;
    assert!(server.handle().is_serving());
    let r = late_handshake(addr).await;
    assert_eq!(r.status, 200, "{}", r.text());
}
