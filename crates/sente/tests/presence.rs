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
