//! Issue 16 item 8: a slow handler does not hold a client's unrelated requests past the
//! per-client budget (`Concurrency::PerClient`), fast handlers keep the client's order,
//! `Concurrency::PerClientSerial` keeps the strict order, and a failing handler's request is
//! answered `:chsk/error` at once, on both transports, over real sockets.

mod common;

use common::*;
use sente::{BoxError, Budget, Concurrency, EventMsg, Router, Server};
use std::time::{Duration, Instant};

async fn serve(server: &Server) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server.router::<()>("/chsk");
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

const BUDGET: Duration = Duration::from_millis(300);

/// `t/slow` never replies (holds its reply for a minute), `t/fast` echoes its data after a
/// short sleep that is longer for smaller numbers (so without order they would finish
/// reversed), `t/fail` returns an error, `t/panic` panics, `t/reply-then-fail` replies and
/// then fails, `t/drop` drops its reply.
fn app(concurrency: Concurrency) -> Router {
    Router::new()
        .concurrency(concurrency)
        .on("t/slow", |msg: EventMsg| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(msg);
        })
        .on("t/fast", |mut msg: EventMsg| async move {
            let n = msg.data_value().as_i64().unwrap_or(0);
            let ms = u64::try_from(50 - n.clamp(0, 10) * 5).unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let v = msg.data_value().clone();
            msg.reply(v);
        })
        .on("t/fail", |msg: EventMsg| async move {
            let _keep = msg;
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<(), BoxError>("database unavailable".into())
        })
        .on("t/panic", |msg: EventMsg| async move {
            assert!(msg.id().as_str().is_empty(), "handler bug");
        })
        .on("t/reply-then-fail", |mut msg: EventMsg| async move {
            msg.reply(sente_proto::Value::kw("done"));
            Err::<(), BoxError>("after the reply".into())
        })
        .on("t/drop", |mut msg: EventMsg| async move {
            drop(msg.take_reply());
        })
        .on_error(|_, _| {})
}

async fn ws_reply(ws: &mut Ws, within: Duration) -> String {
    tokio::time::timeout(within, ws_text(ws))
        .await
        .unwrap_or_else(|_| panic!("no reply within {within:?}"))
}

#[tokio::test]
async fn ws_a_slow_handler_holds_later_requests_for_its_budget_only() {
    let server = transcript_builder()
        .handler(app(Concurrency::PerClient(Budget::new(BUDGET, 16))))
        .build()
        .unwrap();
    let addr = serve(&server).await;
    let mut ws = ws_connect(addr, "client-id=ws-budget&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    ws_send(&mut ws, "[[:t/slow] \"cb-slow\"]").await;
    let t0 = Instant::now();
    ws_send(&mut ws, "[[:t/fast 1] \"cb-fast\"]").await;
    assert_eq!(
        ws_reply(&mut ws, Duration::from_secs(3)).await,
        "[1 \"cb-fast\"]"
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < BUDGET + Duration::from_millis(700),
        "the unrelated request waited {waited:?} (budget {BUDGET:?})"
    );
    // Fast handlers (under the budget) keep the client's order, although earlier ones sleep
    // longer.
    for n in 0..10 {
        ws_send(&mut ws, &format!("[[:t/fast {n}] \"cb{n}\"]")).await;
    }
    for n in 0..10 {
        assert_eq!(
            ws_reply(&mut ws, Duration::from_secs(3)).await,
            format!("[{n} \"cb{n}\"]")
        );
    }
}

#[tokio::test]
async fn ajax_a_slow_handler_holds_later_requests_for_its_budget_only() {
    let server = transcript_builder()
        .handler(app(Concurrency::PerClient(Budget::new(BUDGET, 16))))
        .build()
        .unwrap();
    let addr = serve(&server).await;
    // The slow request's POST stays open (its handler never replies).
    tokio::spawn(async move { post_ppstr(addr, "ajax-budget", "[[:t/slow] :ajax]").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    let r = post_ppstr(addr, "ajax-budget", "[[:t/fast 7] :ajax]").await;
    let waited = t0.elapsed();
    assert_eq!((r.status, r.text()), (200, "[7 nil]".to_owned()));
    assert!(
        waited < BUDGET + Duration::from_millis(700),
        "the unrelated Ajax request waited {waited:?} (budget {BUDGET:?})"
    );
    // Order of fast handlers: POSTs of one client sent one after the other are answered in
    // order (each reply before the next POST), whatever their sleeps.
    for n in 0..5 {
        let r = post_ppstr(addr, "ajax-budget", &format!("[[:t/fast {n}] :ajax]")).await;
        assert_eq!(r.text(), format!("[{n} nil]"));
    }
}

#[tokio::test]
async fn per_client_serial_keeps_the_strict_order() {
    let router = Router::new()
        .concurrency(Concurrency::PerClientSerial)
        .on("t/slowish", |mut msg: EventMsg| async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            msg.reply(sente_proto::Value::kw("slow"));
        })
        .on("t/fast", |mut msg: EventMsg| async move {
            msg.reply(sente_proto::Value::kw("fast"));
        });
    let server = transcript_builder().handler(router).build().unwrap();
    let addr = serve(&server).await;
    let mut ws = ws_connect(addr, "client-id=serial&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    let t0 = Instant::now();
    ws_send(&mut ws, "[[:t/slowish] \"a\"]").await;
    ws_send(&mut ws, "[[:t/fast] \"b\"]").await;
    let d = Duration::from_secs(3);
    assert_eq!(ws_reply(&mut ws, d).await, "[:slow \"a\"]");
    assert_eq!(ws_reply(&mut ws, d).await, "[:fast \"b\"]");
    assert!(t0.elapsed() >= Duration::from_millis(750));
}

#[tokio::test]
async fn max_detached_bounds_a_clients_handlers_past_their_budget() {
    let server = transcript_builder()
        .handler(app(Concurrency::PerClient(Budget::new(
            Duration::from_millis(100),
            1,
        ))))
        .build()
        .unwrap();
    let addr = serve(&server).await;
    let mut ws = ws_connect(addr, "client-id=bounded&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    // The first slow handler moves to a task of its own after 100 ms; the second one may not
    // (max_detached 1), so the fast request waits behind it.
    ws_send(&mut ws, "[[:t/slow] \"s1\"]").await;
    ws_send(&mut ws, "[[:t/slow] \"s2\"]").await;
    ws_send(&mut ws, "[[:t/fast 1] \"f\"]").await;
    ws_silent(&mut ws, 600).await;
    // Another client is not affected.
    let mut other = ws_connect(addr, "client-id=other&csrf-token=tok-123").await;
    ws_text(&mut other).await;
    ws_send(&mut other, "[[:t/fast 2] \"g\"]").await;
    assert_eq!(
        ws_reply(&mut other, Duration::from_secs(2)).await,
        "[2 \"g\"]"
    );
}

#[tokio::test]
async fn a_failing_handler_answers_chsk_error_at_once_on_both_transports() {
    let server = transcript_builder()
        .handler(app(Concurrency::default()))
        .build()
        .unwrap();
    let addr = serve(&server).await;
    let mut ws = ws_connect(addr, "client-id=errors&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    let quick = Duration::from_millis(500);
    ws_send(&mut ws, "[[:t/fail] \"e1\"]").await;
    assert_eq!(ws_reply(&mut ws, quick).await, "[:chsk/error \"e1\"]");
    ws_send(&mut ws, "[[:t/panic] \"e2\"]").await;
    assert_eq!(ws_reply(&mut ws, quick).await, "[:chsk/error \"e2\"]");
    // Replied before failing: the reply stands.
    ws_send(&mut ws, "[[:t/reply-then-fail] \"e3\"]").await;
    assert_eq!(ws_reply(&mut ws, quick).await, "[:done \"e3\"]");
    ws_silent(&mut ws, 200).await;

    for (ev, want) in [
        ("t/fail", "[:chsk/error nil]"),
        ("t/panic", "[:chsk/error nil]"),
        ("t/reply-then-fail", "[:done nil]"),
        // A reply dropped unanswered by a handler that succeeds: `:chsk/timeout` at once, as
        // before.
        ("t/drop", "[:chsk/timeout nil]"),
    ] {
        let t0 = Instant::now();
        let r = post_ppstr(addr, "errors-ajax", &format!("[[:{ev}] :ajax]")).await;
        assert_eq!((r.status, r.text()), (200, want.to_owned()), "{ev}");
        assert!(t0.elapsed() < quick, "{ev} took {:?}", t0.elapsed());
    }
}
