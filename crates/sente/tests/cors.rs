//! Issue 16 item 9: cross-origin pages. The allowed origins decide which pages get CORS
//! headers (with credentials) and preflight answers, for the endpoint and `/chsk/client.js`;
//! other origins get a `403` that says why.

mod common;

use common::*;
use sente::{AllowedOrigins, Server};

const OTHER: &str = "http://app.example:3000";
const EVIL: &str = "http://evil.example";

async fn serve(server: &Server) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server.router::<()>("/chsk");
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn options(target: &str, origin: &str) -> Vec<u8> {
    format!(
        "OPTIONS {target} HTTP/1.1\r\nHost: 127.0.0.1:8300\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type, x-csrf-token, x-requested-with\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes()
}

fn allowed_cors(r: &Resp, origin: &str) {
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));
}

#[tokio::test]
async fn listed_origins_get_cors_others_a_clear_403() {
    let server = transcript_builder()
        .allowed_origins(AllowedOrigins::list([ORIGIN, OTHER]))
        .build()
        .unwrap();
    let addr = serve(&server).await;

    // The script, as an ES module import from the other origin.
    let r = raw(addr, &get_req("/chsk/client.js", &[("Origin", OTHER)])).await;
    assert_eq!(r.status, 200);
    allowed_cors(&r, OTHER);
    let r = raw(addr, &get_req("/chsk/client.js", &[("Origin", EVIL)])).await;
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(
        r.text()
            .contains("pages at http://evil.example may not use this server"),
        "{}",
        r.text()
    );
    // Same origin (or a classic script tag: no Origin header): no CORS headers needed.
    let r = raw(addr, &get_req("/chsk/client.js", &[])).await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());

    // Preflights.
    for target in ["/chsk", "/chsk/client.js"] {
        let r = raw(addr, &options(target, OTHER)).await;
        assert_eq!(r.status, 204, "{target}");
        allowed_cors(&r, OTHER);
        assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
        assert!(
            r.header("access-control-allow-headers")
                .is_some_and(|h| h.contains("x-csrf-token"))
        );
        let r = raw(addr, &options(target, EVIL)).await;
        assert_eq!(r.status, 403, "{target}");
        assert!(r.header("access-control-allow-origin").is_none());
        assert!(
            r.text()
                .starts_with("Unauthorized origin: pages at http://evil.example")
        );
    }

    // The Ajax handshake from the other origin, with the token: readable by that page.
    let q = "/chsk?client-id=x1&handshake%3F=1&udt=1";
    let r = raw(
        addr,
        &get_req(q, &[("Origin", OTHER), ("X-CSRF-Token", TOKEN)]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(":chsk/handshake"), "{}", r.text());
    allowed_cors(&r, OTHER);
    // Its refusals too (a wrong token): the page reads the 403.
    let r = raw(
        addr,
        &get_req(q, &[("Origin", OTHER), ("X-CSRF-Token", "bad")]),
    )
    .await;
    assert_eq!(r.status, 403);
    allowed_cors(&r, OTHER);
    // A refused origin: Sente's 403, no CORS headers.
    let r = raw(
        addr,
        &get_req(q, &[("Origin", EVIL), ("X-CSRF-Token", TOKEN)]),
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (403, "Unauthorized origin".to_owned())
    );
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn same_origin_default_sends_no_cors_headers() {
    let server = transcript_builder()
        .allowed_origins(AllowedOrigins::SameOrigin)
        .build()
        .unwrap();
    let addr = serve(&server).await;
    let r = raw(addr, &get_req("/chsk/client.js", &[("Origin", ORIGIN)])).await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    let r = raw(addr, &options("/chsk", OTHER)).await;
    assert_eq!(r.status, 403);
    let r = raw(addr, &get_req("/chsk/client.js", &[("Origin", OTHER)])).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn any_origin_gets_cors_but_never_null() {
    let server = transcript_builder()
        .allowed_origins(AllowedOrigins::All)
        .build()
        .unwrap();
    let addr = serve(&server).await;
    let r = raw(addr, &options("/chsk", EVIL)).await;
    assert_eq!(r.status, 204);
    allowed_cors(&r, EVIL);
    let r = raw(addr, &options("/chsk", "null")).await;
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
}
