//! The Router: handlers by id, typed data, fallback, error handler, per-client ordering.

mod common;

use common::*;
use sente::{EventMsg, HandlerError, Router, Server};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Point {
    x: i64,
    y: i64,
}

async fn serve(server: &Server) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server.router::<()>("/chsk");
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn routes_typed_data_fallback_and_errors() {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (t1, t2, t3) = (tx.clone(), tx.clone(), tx.clone());
    let router = Router::new()
        .on("my/point", move |mut msg: EventMsg| {
            let tx = t1.clone();
            async move {
                let p: Point = msg.data()?;
                tx.send(format!("point {} {}", p.x, p.y)).unwrap();
                msg.reply(sente_proto::Value::Int(p.x + p.y));
                Ok::<(), sente::BoxError>(())
            }
        })
        .on(":my/panic", |msg: EventMsg| async move {
            assert!(msg.id().as_str().is_empty(), "boom");
        })
        .fallback(move |msg: EventMsg| {
            let tx = t2.clone();
            async move { tx.send(format!("fallback {}", msg.id())).unwrap() }
        })
        .on_error(move |err, info| {
            let kind = match err {
                HandlerError::Failed(_) => "failed",
                HandlerError::Panicked(_) => "panicked",
                _ => "other",
            };
            t3.send(format!("{kind} {}", info.id)).unwrap();
        });
    let server = transcript_builder().handler(router).build().unwrap();
    let addr = serve(&server).await;
    let mut ws = ws_connect(addr, "client-id=r&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    assert_eq!(next(&mut rx).await, "fallback :chsk/uidport-open");
    ws_send(&mut ws, "[[:my/point {:x 1, :y 2}] \"cb0001\"]").await;
    assert_eq!(next(&mut rx).await, "point 1 2");
    assert_eq!(ws_text(&mut ws).await, "[3 \"cb0001\"]");
    ws_send(&mut ws, "[[:my/point \"not a point\"] nil]").await;
    assert_eq!(next(&mut rx).await, "failed :my/point");
    ws_send(&mut ws, "[[:my/panic] nil]").await;
    assert_eq!(next(&mut rx).await, "panicked :my/panic");
    ws_send(&mut ws, "[[:other/thing] nil]").await;
    assert_eq!(next(&mut rx).await, "fallback :other/thing");
}

#[tokio::test]
async fn one_clients_events_run_in_order_clients_run_concurrently() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = log.clone();
    let router = Router::new().on("t/seq", move |msg: EventMsg| {
        let l = l.clone();
        async move {
            let n = msg.data_value().as_i64().unwrap();
            // Earlier events sleep longer: without ordering they would finish last.
            tokio::time::sleep(Duration::from_millis(u64::try_from(50 - n * 5).unwrap())).await;
            l.lock().unwrap().push(format!("{} {n}", msg.client_id));
        }
    });
    let server = transcript_builder().handler(router).build().unwrap();
    let addr = serve(&server).await;
    let mut a = ws_connect(addr, "client-id=A&csrf-token=tok-123").await;
    let mut b = ws_connect(addr, "client-id=B&csrf-token=tok-123").await;
    ws_text(&mut a).await;
    ws_text(&mut b).await;
    for n in 0..10 {
        ws_send(&mut a, &format!("[[:t/seq {n}] nil]")).await;
    }
    ws_send(&mut b, "[[:t/seq 9] nil]").await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while log.lock().unwrap().len() < 11 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let log = log.lock().unwrap().clone();
    let a_order: Vec<&String> = log.iter().filter(|s| s.starts_with('A')).collect();
    assert_eq!(
        a_order,
        (0..10)
            .map(|n| format!("A {n}"))
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>()
    );
    let b_pos = log.iter().position(|s| s == "B 9").unwrap();
    assert!(b_pos < 10, "B did not wait for all of A's events: {log:?}");
}

/// The attached router's handlers run on the connection's own task: a slow handler must not
/// stall the connection (pushes and pongs still flow, later events queue behind it in order),
/// and events already read when the client goes away still run.
#[tokio::test]
async fn a_slow_handler_does_not_stall_its_connection_and_read_events_survive_a_close() {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let router = Router::new().on("t/slow", move |msg: EventMsg| {
        let (tx, g) = (tx.clone(), g.clone());
        async move {
            tx.send(format!("start {}", msg.data_value())).unwrap();
            g.notified().await;
            tx.send(format!("end {}", msg.data_value())).unwrap();
        }
    });
    let server = transcript_builder().handler(router).build().unwrap();
    let addr = serve(&server).await;
    let mut ws = ws_connect(addr, "uid=u1&client-id=s&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    ws_send(&mut ws, "[[:t/slow 1] nil]").await;
    assert_eq!(next(&mut rx).await, "start 1");
    ws_send(&mut ws, "[[:t/slow 2] nil]").await;
    // While handler 1 waits: a ping is answered and a push is delivered.
    ws_send(&mut ws, "[[:chsk/ws-ping] \"cb01\"]").await;
    assert_eq!(ws_text(&mut ws).await, "[\"pong\" \"cb01\"]");
    let ev = sente_proto::Event::new(
        sente_proto::EventId::new("t/push").unwrap(),
        sente_proto::Value::Int(7),
    );
    server
        .send_flush(&sente_proto::Uid::from("u1"), ev)
        .unwrap();
    assert_eq!(ws_text(&mut ws).await, "[[[:t/push 7]] nil]");
    // Event 2 waits for event 1, then runs: per-client order.
    gate.notify_one();
    assert_eq!(next(&mut rx).await, "end 1");
    assert_eq!(next(&mut rx).await, "start 2");
    // The client leaves while event 2 runs and event 3 waits: both still complete.
    ws_send(&mut ws, "[[:t/slow 3] nil]").await;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.notify_one();
    assert_eq!(next(&mut rx).await, "end 2");
    assert_eq!(next(&mut rx).await, "start 3");
    gate.notify_one();
    assert_eq!(next(&mut rx).await, "end 3");
}

/// One dispatch path: the same router (with state) handles WebSocket and Ajax events, and a
/// handler pushes through `msg.server()` without capturing the server.
#[tokio::test]
async fn websocket_and_ajax_events_reach_the_same_handlers() {
    #[derive(Clone)]
    struct App {
        seen: Arc<Mutex<Vec<String>>>,
    }
    let app = App {
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let router =
        Router::with_state(app.clone()).on("t/hello", |mut msg: EventMsg, app: App| async move {
            let who = format!("{} {}", msg.transport.as_str(), msg.client_id);
            app.seen.lock().unwrap().push(who.clone());
            let ev = ev("t/hi", sente_proto::Value::from(who.as_str()));
            msg.server().send_flush(&msg.uid, ev).unwrap();
            msg.reply(true);
        });
    let server = transcript_builder().handler(router).build().unwrap();
    let addr = serve(&server).await;
    let mut ws = ws_connect(addr, "uid=u&client-id=w&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    ws_send(&mut ws, "[[:t/hello] \"cb1\"]").await;
    let mut got = vec![ws_text(&mut ws).await, ws_text(&mut ws).await];
    got.sort();
    assert_eq!(got, ["[[[:t/hi \"ws w\"]] nil]", "[true \"cb1\"]"]);
    let r = post_ppstr(addr, "a", "[[:t/hello] :ajax-cb]").await;
    assert_eq!((r.status, r.text().as_str()), (200, "[true nil]"));
    assert_eq!(*app.seen.lock().unwrap(), ["ws w", "ajax a"]);
}

/// `shutdown` refuses new requests, closes every client, resolves once they are gone, and lets
/// go of the handlers: a handler that captured the `Server` no longer keeps it alive.
#[tokio::test]
async fn shutdown_closes_clients_and_breaks_the_handler_cycle() {
    let slot: Arc<Mutex<Option<Server>>> = Arc::new(Mutex::new(None));
    let captured = slot.clone();
    let router = Router::new().on("t/x", move |_msg: EventMsg| {
        // The pattern that made a cycle: the handler owns the server.
        let _server = captured.lock().unwrap().clone();
        async {}
    });
    let server = transcript_builder()
        .handler(router)
        .shutdown_stagger(Duration::from_millis(50))
        .build()
        .unwrap();
    *slot.lock().unwrap() = Some(server.clone());
    drop(slot);
    let weak = server.handle().downgrade();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server.router::<()>("/chsk");
    let http = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut ws = ws_connect(addr, "uid=u&client-id=w&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    let waiting = tokio::spawn({
        let s = server.clone();
        async move { s.shutdown().await }
    });
    // The client gets a normal close; a new request gets 503.
    loop {
        match ws_frame(&mut ws, 5_000).await {
            Some(tokio_tungstenite::tungstenite::Message::Close(f)) => {
                assert_eq!(u16::from(f.unwrap().code), 1000);
                break;
            }
            Some(_) => {}
            None => panic!("closed without a close frame"),
        }
    }
    drop(ws);
    let r = raw(
        addr,
        &get_req("/chsk?client-id=n&handshake%3F=1", &ajax_headers()),
    )
    .await;
    assert_eq!(r.status, 503);
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("shutdown resolves")
        .unwrap();
    // Once the HTTP server stops and the last handle is dropped, the server is freed: the
    // handler's captured `Server` was let go at shutdown.
    http.abort();
    drop(server);
    tokio::time::timeout(Duration::from_secs(5), async {
        while weak.upgrade().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no reference cycle keeps the server alive");
}

/// One Ajax client whose handler never answers cannot delay another client's events: its own
/// queue fills (further POSTs get 429) while the other client is served at once.
#[tokio::test]
async fn one_ajax_clients_backlog_only_delays_that_client() {
    let router = Router::new()
        .on("t/hang", |msg: EventMsg| async move {
            std::future::pending::<()>().await;
            drop(msg);
        })
        .on("t/echo", |mut msg: EventMsg| async move {
            let d = msg.data_value().clone();
            msg.reply(d);
        });
    let server = transcript_builder()
        .lp_timeout_ms(59_000)
        .handler(router)
        .build()
        .unwrap();
    let addr = serve(&server).await;
    // The attacker: 64 events queued behind one that never finishes (no reply asked, so the
    // POSTs return at once), then more are refused.
    for _ in 0..65 {
        let r = post_ppstr(addr, "attacker", "[[:t/hang] nil]").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = post_ppstr(addr, "attacker", "[[:t/hang] nil]").await;
    assert_eq!(r.status, 429, "{}", r.text());
    // A healthy client is answered at once, every time.
    for n in 0..20 {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            post_ppstr(addr, "healthy", &format!("[[:t/echo {n}] :ajax-cb]")),
        )
        .await
        .expect("the healthy client is not delayed");
        assert_eq!(r.text(), format!("[{n} nil]"));
    }
}

/// Event ids are checked where they are written: `try_on` returns the error, `on` panics at
/// the caller's line with the reason, and `event_id!` refuses an invalid literal at compile
/// time (a doc test of `sente_proto::event_id`).
#[test]
fn invalid_handler_ids_are_refused() {
    let noop = |_msg: EventMsg| async {};
    assert!(Router::new().try_on("no-namespace", noop).is_err());
    assert!(Router::new().try_on("my-app/ok", noop).is_ok());
    let panic = std::panic::catch_unwind(|| Router::new().on("has space/x y", noop)).unwrap_err();
    let text = panic.downcast_ref::<String>().unwrap();
    assert!(text.starts_with("Router::on: invalid event id"), "{text}");
    assert_eq!(sente::event_id!("my-app/ok").as_str(), "my-app/ok");
}
