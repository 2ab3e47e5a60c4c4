//! `connected_uids()` and `chsk/uidport-open` / `chsk/uidport-close` over real connections,
//! with shortened grace periods (the exact timing is tested in virtual time in
//! `sente-proto/tests/server_core.rs`). Tests only assert lower bounds on time.
#![allow(clippy::many_single_char_names)]

mod common;

use common::*;
use sente::{ConnectedUids, Uid};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

fn builder() -> sente::Builder {
    transcript_builder()
        .ms_allow_reconnect_before_close_ws(300)
        .ms_allow_reconnect_before_close_ajax(500)
        .lp_timeout_ms(400)
}

async fn wait_for(rx: &mut watch::Receiver<ConnectedUids>, f: impl Fn(&ConnectedUids) -> bool) {
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|c| f(c)))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn ws_tabs_reload_and_close() {
    let mut h = start(builder()).await;
    let mut rx = h.server.connected_uids();
    let u = Uid::from("p");
    let a = ws_connect(h.addr, "uid=p&client-id=A&csrf-token=tok-123").await;
    assert_eq!(h.next().await.event, "[:chsk/uidport-open \"p\"]");
    wait_for(&mut rx, |c| {
        c.ws.contains(&u) && c.any.contains(&u) && !c.ajax.contains(&u)
    })
    .await;
    // A second tab: no uidport event; closing it: none either.
    let b = ws_connect(h.addr, "uid=p&client-id=B&csrf-token=tok-123").await;
    drop(b);
    // A reload of tab A within the grace period: no close/open pair.
    drop(a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = ws_connect(h.addr, "uid=p&client-id=A&csrf-token=tok-123").await;
    h.silent_within(600).await;
    assert!(rx.borrow().any.contains(&u));
    // Closing the last tab: uidport-close, not before the grace period.
    let closed = Instant::now();
    drop(a);
    let e = h.next().await;
    assert_eq!(e.event, "[:chsk/uidport-close \"p\"]");
    assert_eq!(e.client_id, "A");
    assert!(closed.elapsed() >= Duration::from_millis(300));
    wait_for(&mut rx, |c| c.any.is_empty() && c.ws.is_empty()).await;
}

#[tokio::test]
async fn ajax_handshake_alone_does_not_connect_the_first_poll_does() {
    let mut h = start(builder()).await;
    let mut rx = h.server.connected_uids();
    let r = raw(
        h.addr,
        &get_req("/chsk?uid=q&client-id=X&handshake%3F=1", &ajax_headers()),
    )
    .await;
    assert_eq!(r.status, 200);
    h.silent_within(100).await;
    assert!(rx.borrow().any.is_empty());
    let started = Instant::now();
    let r = raw(h.addr, &get_req("/chsk?uid=q&client-id=X", &ajax_headers())).await;
    assert_eq!(r.text(), "[:chsk/timeout nil]");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "held for lp_timeout_ms"
    );
    let e = h.next().await;
    assert_eq!(
        (e.event.as_str(), e.transport),
        ("[:chsk/uidport-open \"q\"]", sente::Transport::Ajax)
    );
    wait_for(&mut rx, |c| {
        c.ajax.contains(&Uid::from("q")) && !c.ws.contains(&Uid::from("q"))
    })
    .await;
    // No more polls: gone after the Ajax grace period.
    let e = h.next().await;
    assert_eq!(e.event, "[:chsk/uidport-close \"q\"]");
    wait_for(&mut rx, |c| c.any.is_empty()).await;
}

/// The admin snapshot after scripted traffic: exact connection, uid, event, reply and
/// rejection counts, and the same numbers in its JSON.
#[tokio::test]
async fn admin_snapshot_counts_scripted_traffic() {
    let h = start(
        transcript_builder()
            .lp_timeout_ms(5_000)
            .record_rejected_uids(true)
            .recent_rejections(2),
    )
    .await;
    let admin = sente::admin::AdminPage::new(h.server.handle()).max_uids(2);
    let empty = admin.snapshot();
    assert_eq!((empty.stats.ws_connections, empty.uids_any), (0, 0));
    let mut rx = h.server.connected_uids();
    let mut alice = ws_connect(h.addr, "uid=alice&client-id=A&csrf-token=tok-123").await;
    ws_text(&mut alice).await;
    let mut bob = ws_connect(h.addr, "uid=bob&client-id=B&csrf-token=tok-123").await;
    ws_text(&mut bob).await;
    // Carol over Ajax: a handshake, then a poll held open.
    let r = raw(
        h.addr,
        &get_req(
            "/chsk?uid=carol&client-id=C&handshake%3F=1",
            &ajax_headers(),
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    let addr = h.addr;
    let poll = tokio::spawn(async move {
        raw(
            addr,
            &get_req("/chsk?uid=carol&client-id=C", &ajax_headers()),
        )
        .await
    });
    wait_for(&mut rx, |c| c.any.len() == 3).await;
    // Three requests with replies from alice, one event without from bob.
    for n in 1..=3 {
        ws_send(&mut alice, &format!("[[:test/echo {n}] \"cb{n}\"]")).await;
        assert_eq!(
            ws_text(&mut alice).await,
            format!("[{{:echo {n}}} \"cb{n}\"]")
        );
    }
    ws_send(&mut bob, "[[:test/other 1] nil]").await;
    // Two pushes to bob, in one batch.
    h.server
        .send(&Uid::from("bob"), ev("test/push", n_map(1)))
        .unwrap();
    h.server
        .send_flush(&Uid::from("bob"), ev("test/push", n_map(2)))
        .unwrap();
    assert_eq!(
        ws_text(&mut bob).await,
        "[[[:test/push {:n 1}] [:test/push {:n 2}]] nil]"
    );
    // Three refused requests: a wrong CSRF token, a foreign origin, no client id.
    let bad_csrf = get_req(
        "/chsk?uid=mallory&client-id=M&handshake%3F=1&csrf-token=wrong",
        &[("Origin", ORIGIN)],
    );
    assert_eq!(raw(h.addr, &bad_csrf).await.status, 403);
    let bad_origin = get_req(
        "/chsk?uid=mallory&client-id=M&handshake%3F=1&csrf-token=tok-123",
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(raw(h.addr, &bad_origin).await.status, 403);
    let no_cid = get_req("/chsk?uid=mallory&handshake%3F=1", &ajax_headers());
    assert_eq!(raw(h.addr, &no_cid).await.status, 400);
    // The poll is held (counted) until it ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin.snapshot().stats.ajax_polls != 1 {
        assert!(Instant::now() < deadline, "the poll is counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let s = admin.snapshot();
    assert_eq!((s.stats.ws_connections, s.stats.ajax_polls), (2, 1));
    assert_eq!((s.uids_ws, s.uids_ajax, s.uids_any), (2, 1, 3));
    assert_eq!(
        (s.uids.as_slice(), s.more_uids),
        (&["alice".to_owned(), "bob".to_owned()][..], 1)
    );
    // Out: the two pushes and the three replies (as `sente_events_sent_total` counts them).
    assert_eq!((s.stats.events_in, s.stats.events_out), (4, 5));
    assert_eq!(s.stats.replies.count, 3);
    assert_eq!(s.stats.replies.buckets.iter().sum::<u64>(), 3);
    assert!(s.stats.replies.quantile_us(0.99).is_some());
    assert_eq!(s.stats.rejected_requests, 3);
    // The ring keeps the last two; the query (with its CSRF token) is never kept.
    let reasons: Vec<_> = s
        .rejections
        .iter()
        .map(|r| (r.reason, r.status, r.transport))
        .collect();
    assert_eq!(
        reasons,
        [
            ("origin", 403, "ajax-get"),
            ("missing client-id", 400, "ajax-get")
        ]
    );
    assert_eq!(
        s.rejections[0].detail,
        "GET /chsk origin=http://evil.example"
    );
    assert_eq!(s.rejections[0].uid.as_deref(), Some("mallory"));
    assert_eq!(s.rejections[1].uid, None);

    let json: serde_json::Value = serde_json::from_str(&s.to_json()).expect("valid JSON");
    assert_eq!(
        json["connections"],
        serde_json::json!({"ws": 2, "ajax_polls": 1})
    );
    assert_eq!(
        json["uids"],
        serde_json::json!({"ws": 2, "ajax": 1, "any": 3, "more": 1, "list": ["alice", "bob"]})
    );
    assert_eq!(json["events"], serde_json::json!({"in": 4, "out": 5}));
    assert_eq!(json["replies"]["count"], 3);
    assert_eq!(json["rejected"], 3);
    assert_eq!(json["rejections"][0]["reason"], "origin");
    assert_eq!(json["rejections"][0]["uid"], "mallory");
    assert!(!s.to_json().contains("tok-123") && !s.to_json().contains("wrong"));

    // The service: the page, and the snapshot as JSON, over plain tower.
    use tower::ServiceExt as _;
    let page = admin
        .service()
        .oneshot(http::Request::get("/admin").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let snap = admin
        .service()
        .oneshot(http::Request::get("/admin/snapshot.json").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(snap.headers()["content-type"], "application/json");
    drop((alice, bob));
    poll.abort();
}
