//! Starts conformance test servers for clients that run in another process (node, a browser)
//! and prints one JSON line with their URLs:
//!
//! ```text
//! $ sente-test-server [--cors] [--forever]
//! {"url":"http://127.0.0.1:41234/chsk","refuse_ws_url":"http://127.0.0.1:41236/chsk",
//!  "small_url":"http://127.0.0.1:41238/chsk","control_url":"http://127.0.0.1:41240",
//!  "origin_url":"http://127.0.0.1:41242/chsk","unit_url":"http://127.0.0.1:41244/chsk",
//!  "csrf_token":"tok-123","scenarios":["handshake","echo",...]}
//! ```
//!
//! - `url`: the default server (CSRF token `tok-123`, any origin);
//! - `refuse_ws_url`: the same app behind a proxy that refuses WebSocket upgrades;
//! - `small_url`: messages limited to 16 KiB (oversize scenario);
//! - `origin_url`: only the origin `http://good.example` is allowed (origin-rejected scenario,
//!   for clients that can set an `Origin` header);
//! - `unit_url`: a server of its own for client unit tests (long-poll timeout 1 s, server
//!   WebSocket pings every 300 ms when idle), driven through the control endpoint;
//! - `control_url`: `POST /restart` restarts the default server (server-restart scenario);
//!   `GET /log` returns the default server's uidport log as edn; `POST /unit/drop` cuts every
//!   connection of the unit server (new ones are accepted); `POST /unit/refuse-ws` with body
//!   `on` or `off` makes its proxy refuse WebSocket upgrades (403) or not;
//! - `scenarios`: the names of the conformance scenarios ([`sente_test_kit::scenarios`]), so a
//!   client in another language can check that it implements every one.
//!
//! With `--cors` the servers answer CORS preflights (browser tests served from another origin).
//! It serves until stdin closes, or forever with `--forever`.

use sente::AllowedOrigins;
use sente_test_kit::{CSRF_TOKEN, ServerOptions, TestServer};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut cors = false;
    let mut forever = false;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--cors" => cors = true,
            "--forever" => forever = true,
            other => {
                eprintln!(
                    "unknown argument {other:?}; usage: sente-test-server [--cors] [--forever]"
                );
                std::process::exit(2);
            }
        }
    }
    let base = ServerOptions {
        cors,
        ..ServerOptions::default()
    };
    let main = Arc::new(TestServer::spawn(base.clone()).await?);
    let refuse = TestServer::spawn(ServerOptions {
        refuse_ws_upgrades: true,
        ..base.clone()
    })
    .await?;
    let small = TestServer::spawn(ServerOptions {
        max_message_bytes: 16 * 1024,
        ..base.clone()
    })
    .await?;
    let origin = TestServer::spawn(ServerOptions {
        allowed_origins: AllowedOrigins::list(["http://good.example"]),
        ..base.clone()
    })
    .await?;
    let unit = Arc::new(
        TestServer::spawn(ServerOptions {
            lp_timeout_ms: 1_000,
            ws_kalive_ms: Some(300),
            ..base
        })
        .await?,
    );
    let names: Vec<&str> = sente_test_kit::scenarios().iter().map(|s| s.name).collect();
    let names = serde_json::to_string(&names).map_err(std::io::Error::other)?;
    let control = control_app(main.clone(), unit.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let control_addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, control).await;
    });
    println!(
        "{{\"url\":\"{}\",\"refuse_ws_url\":\"{}\",\"small_url\":\"{}\",\"control_url\":\"http://{control_addr}\",\"origin_url\":\"{}\",\"unit_url\":\"{}\",\"csrf_token\":\"{CSRF_TOKEN}\",\"scenarios\":{names}}}",
        main.url(),
        refuse.url(),
        small.url(),
        origin.url(),
        unit.url()
    );
    if forever {
        std::future::pending::<()>().await;
    }
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}

fn control_app(server: Arc<TestServer>, unit: Arc<TestServer>) -> axum::Router {
    use axum::http::header;
    let s2 = server.clone();
    let u2 = unit.clone();
    axum::Router::new()
        .route(
            "/unit/drop",
            axum::routing::post(move || {
                let unit = unit.clone();
                async move {
                    unit.proxy().drop_connections();
                    "dropped"
                }
            }),
        )
        .route(
            "/unit/refuse-ws",
            axum::routing::post(move |body: String| {
                let unit = u2.clone();
                async move {
                    match body.trim() {
                        "on" => unit.proxy().refuse_ws_upgrades(true),
                        "off" => unit.proxy().refuse_ws_upgrades(false),
                        other => {
                            return (
                                axum::http::StatusCode::BAD_REQUEST,
                                format!("body must be on or off, not {other:?}"),
                            );
                        }
                    }
                    (axum::http::StatusCode::OK, body.trim().to_owned())
                }
            }),
        )
        .route(
            "/restart",
            axum::routing::post(move || {
                let server = server.clone();
                async move {
                    let status = match server.restart().await {
                        Ok(()) => "restarted".to_owned(),
                        Err(e) => format!("restart failed: {e}"),
                    };
                    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], status)
                }
            }),
        )
        .route(
            "/log",
            axum::routing::get(move || {
                let server = s2.clone();
                async move {
                    let log: Vec<_> = server
                        .log()
                        .events()
                        .into_iter()
                        .map(sente_proto::Event::into_value)
                        .collect();
                    let text = sente_proto::Value::Vector(log).to_string();
                    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], text)
                }
            }),
        )
}
