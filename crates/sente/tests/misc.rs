//! Builder validation, secure defaults, the JavaScript client, and the service under plain
//! hyper (no axum).

mod common;

use common::*;
use hyper_util::rt::TokioIo;
use sente::{AllowedOrigins, BuildError, CsrfToken, Server};

#[tokio::test]
async fn builder_refuses_bad_configs() {
    assert_eq!(
        Server::builder().lp_timeout_ms(60_000).build().unwrap_err(),
        BuildError::LpTimeoutTooLong(60_000)
    );
    assert!(Server::builder().lp_timeout_ms(59_999).build().is_ok());
    assert_eq!(
        Server::builder().send_buf_ms_ws(0).build().unwrap_err(),
        BuildError::ZeroWindow("send_buf_ms_ws")
    );
    let unprotected = || {
        Server::builder()
            .disable_csrf_check()
            .allowed_origins(AllowedOrigins::All)
    };
    assert_eq!(unprotected().build().unwrap_err(), BuildError::Unprotected);
    assert!(unprotected().insecure_allow_unprotected().build().is_ok());
    assert!(
        Server::builder().disable_csrf_check().build().is_ok(),
        "origin check alone is fine"
    );
    assert_eq!(
        Server::builder().packer_name("yaml").build().unwrap_err(),
        BuildError::NoPacker("yaml".into())
    );
}

#[test]
fn builder_needs_a_runtime() {
    assert_eq!(
        Server::builder().build().unwrap_err(),
        BuildError::NoRuntime
    );
}

#[tokio::test]
async fn defaults_reject_without_token_and_check_same_origin() {
    let h = start(Server::builder()).await;
    // Default csrf_token_fn: no anti-forgery token on the request -> 403, as in Sente.
    let r = raw(
        h.addr,
        &get_req("/chsk?client-id=c&handshake%3F=1", &[("X-CSRF-Token", "x")]),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (403, "Bad CSRF token"));
    // With the check skipped, the default origin policy is the request's own origin.
    let h = start(Server::builder().csrf_token_fn(|_| CsrfToken::Skip)).await;
    let same = raw(
        h.addr,
        &get_req("/chsk?client-id=c&handshake%3F=1", &[("Origin", ORIGIN)]),
    )
    .await;
    assert_eq!(same.status, 200);
    let referer = raw(
        h.addr,
        &get_req(
            "/chsk?client-id=c&handshake%3F=1",
            &[("Referer", "http://127.0.0.1:8300/page")],
        ),
    )
    .await;
    assert_eq!(referer.status, 200);
    for bad in [
        vec![("Origin", "http://127.0.0.1:8300.evil.com")],
        vec![("Origin", "http://evil.127.0.0.1:8300")],
        vec![("Origin", "null")],
        vec![("Origin", "http://127.0.0.1:8301")],
        vec![("Referer", "http://127.0.0.1:8300.evil.com/")],
        vec![],
    ] {
        let r = raw(h.addr, &get_req("/chsk?client-id=c&handshake%3F=1", &bad)).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (403, "Unauthorized origin"),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn reject_fn_wins_and_none_continues() {
    let b = transcript_builder().reject_fn(|r| {
        r.param("slow").map(|_| {
            http::Response::builder()
                .status(429)
                .body(bytes::Bytes::from("slow down"))
                .unwrap()
        })
    });
    let h = start(b).await;
    let r = raw(
        h.addr,
        &get_req("/chsk?client-id=c&slow=1&handshake%3F=1", &ajax_headers()),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (429, "slow down"));
    let r = raw(
        h.addr,
        &get_req("/chsk?client-id=c&handshake%3F=1", &[("Origin", ORIGIN)]),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (403, "Bad CSRF token"));
}

#[tokio::test]
async fn serves_the_javascript_client() {
    let h = start(transcript_builder()).await;
    let r = raw(
        h.addr,
        b"GET /chsk/client.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(r.text().contains("export"));
}

#[tokio::test]
async fn works_under_plain_hyper() {
    let (server, mut events) = transcript_builder().build_with_events().unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = server.service_at("/chsk");
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    let r = raw(
        addr,
        &get_req("/chsk?client-id=h&handshake%3F=1", &ajax_headers()),
    )
    .await;
    assert_eq!(
        r.text(),
        "[[:chsk/handshake [:sente/nil-uid nil {:hello \"world\"}]] nil]"
    );
    let r = raw(addr, &get_req("/elsewhere?client-id=h", &ajax_headers())).await;
    assert_eq!(r.status, 404);
    let mut ws = ws_connect(addr, "uid=u&client-id=h&csrf-token=tok-123").await;
    assert_eq!(
        ws_text(&mut ws).await,
        "[[:chsk/handshake [\"u\" nil {:hello \"world\"}]] nil]"
    );
}

#[tokio::test]
async fn session_middleware_values_are_reachable_from_events() {
    use axum::routing::get;
    use tower_sessions::{MemoryStore, Session, SessionManagerLayer};
    let (server, mut events) = transcript_builder().build_with_events().unwrap();
    tokio::spawn(async move {
        while let Some(mut msg) = events.recv().await {
            let Some(session) = msg.request().extensions().get::<Session>().cloned() else {
                continue;
            };
            let name: Option<String> = session.get("name").await.unwrap();
            msg.reply(sente_proto::Value::from(name.unwrap_or_default().as_str()));
        }
    });
    let app = axum::Router::new()
        .route(
            "/login",
            get(|session: Session| async move {
                session.insert("name", "ada").await.unwrap();
                "ok"
            }),
        )
        .merge(server.router("/chsk"))
        .layer(SessionManagerLayer::new(MemoryStore::default()).with_secure(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let r = raw(
        addr,
        b"GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body = format!("udt=1&client-id=s&ppstr={}", enc("[[:my/who] :ajax]"));
    let mut hd = ajax_headers();
    hd.push(("Cookie", &cookie));
    hd.push(("Content-Type", "application/x-www-form-urlencoded"));
    let r = raw(addr, &post_req("/chsk", &hd, body.as_bytes())).await;
    assert_eq!(r.text(), "[\"ada\" nil]");
}

#[tokio::test]
async fn pushes_go_through_the_backplane() {
    use sente::backplane::{Backplane, BackplaneMsg, BackplaneSink, LocalBackplane};
    use std::sync::{Arc, Mutex};
    #[derive(Default)]
    struct Recording {
        local: LocalBackplane,
        seen: Mutex<Vec<String>>,
    }
    impl Backplane for Recording {
        fn publish(&self, msg: BackplaneMsg) {
            let what = match &msg {
                BackplaneMsg::Push { event, .. } | BackplaneMsg::PushMany { event, .. } => {
                    format!("push {}", event.id())
                }
                BackplaneMsg::Broadcast { event, .. } => format!("broadcast {}", event.id()),
                BackplaneMsg::Flush { .. } => "flush".to_owned(),
                BackplaneMsg::CloseUid { .. } => "close".to_owned(),
                BackplaneMsg::Presence { uid, ws, .. } => format!("presence {uid} {ws}"),
                _ => "other".to_owned(),
            };
            self.seen.lock().unwrap().push(what);
            self.local.publish(msg);
        }
        fn subscribe(&self, sink: BackplaneSink) {
            self.local.subscribe(sink);
        }
    }
    let bp = Arc::new(Recording::default());
    let mut h = start(transcript_builder().backplane(bp.clone())).await;
    let mut ws = ws_connect(h.addr, "uid=b&client-id=b&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    h.server
        .send_flush(&sente::Uid::from("b"), ev("t/x", sente_proto::Value::Nil))
        .unwrap();
    assert_eq!(ws_text(&mut ws).await, "[[[:t/x nil]] nil]");
    h.server
        .broadcast(ev("t/all", sente_proto::Value::Nil))
        .unwrap();
    h.server.flush(&sente::Uid::from("b"));
    assert_eq!(ws_text(&mut ws).await, "[[[:t/all nil]] nil]");
    h.server.close_uid(&sente::Uid::from("b"));
    // Presence goes to the backplane too (a cluster's connected uids are built from it).
    assert_eq!(
        *bp.seen.lock().unwrap(),
        vec![
            "presence b true",
            "push :t/x",
            "broadcast :t/all",
            "flush",
            "close"
        ]
    );
    let _ = h.next().await;
}

#[tokio::test]
async fn csrf_check_can_be_disabled_and_skipped_per_request() {
    let h = start(transcript_builder().disable_csrf_check()).await;
    let r = raw(
        h.addr,
        &get_req("/chsk?client-id=c&handshake%3F=1", &[("Origin", ORIGIN)]),
    )
    .await;
    assert_eq!(r.status, 200);
    let b = transcript_builder().csrf_token_fn(|r| {
        if r.param("public").is_some() {
            CsrfToken::Skip
        } else {
            CsrfToken::Missing
        }
    });
    let h = start(b).await;
    let ok = raw(
        h.addr,
        &get_req(
            "/chsk?client-id=c&public=1&handshake%3F=1",
            &[("Origin", ORIGIN)],
        ),
    )
    .await;
    assert_eq!(ok.status, 200);
    let no = raw(
        h.addr,
        &get_req("/chsk?client-id=c&handshake%3F=1", &ajax_headers()),
    )
    .await;
    assert_eq!(
        no.status, 403,
        "a missing reference token fails even with a client token"
    );
}
