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
    let (server, events) = transcript_builder().build().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (t1, t2, t3) = (tx.clone(), tx.clone(), tx.clone());
    Router::new()
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
            };
            t3.send(format!("{kind} {}", info.id)).unwrap();
        })
        .spawn(events);
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
    let (server, events) = transcript_builder().build().unwrap();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = log.clone();
    Router::new()
        .on("t/seq", move |msg: EventMsg| {
            let l = l.clone();
            async move {
                let n = msg.data_value().as_i64().unwrap();
                // Earlier events sleep longer: without ordering they would finish last.
                tokio::time::sleep(Duration::from_millis(u64::try_from(50 - n * 5).unwrap())).await;
                l.lock().unwrap().push(format!("{} {n}", msg.client_id));
            }
        })
        .spawn(events);
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
    let (server, events) = transcript_builder().build().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    Router::new()
        .on("t/slow", move |msg: EventMsg| {
            let (tx, g) = (tx.clone(), g.clone());
            async move {
                tx.send(format!("start {}", msg.data_value())).unwrap();
                g.notified().await;
                tx.send(format!("end {}", msg.data_value())).unwrap();
            }
        })
        .spawn(events);
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
