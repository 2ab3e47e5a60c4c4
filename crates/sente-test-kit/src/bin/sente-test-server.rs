//! Starts conformance test servers for clients that run in another process (node, a browser)
//! and prints one JSON line with their URLs:
//!
//! ```text
//! $ sente-test-server [--cors] [--forever]
//! {"url":"http://127.0.0.1:41234/chsk","refuse_ws_url":"http://127.0.0.1:41236/chsk",
//!  "small_url":"http://127.0.0.1:41238/chsk","control_url":"http://127.0.0.1:41240",
//!  "origin_url":"http://127.0.0.1:41242/chsk","csrf_token":"tok-123"}
//! ```
//!
//! - `url`: the default server (CSRF token `tok-123`, any origin);
//! - `refuse_ws_url`: the same app behind a proxy that refuses WebSocket upgrades;
//! - `small_url`: messages limited to 16 KiB (oversize scenario);
//! - `origin_url`: only the origin `http://good.example` is allowed (origin-rejected scenario,
//!   for clients that can set an `Origin` header);
//! - `control_url`: `POST /restart` restarts the default server (server-restart scenario);
//!   `GET /log` returns the default server's uidport log as edn.
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
        ..base
    })
    .await?;
    let control = control_app(main.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let control_addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, control).await;
    });
    println!(
        "{{\"url\":\"{}\",\"refuse_ws_url\":\"{}\",\"small_url\":\"{}\",\"control_url\":\"http://{control_addr}\",\"origin_url\":\"{}\",\"csrf_token\":\"{CSRF_TOKEN}\"}}",
        main.url(),
        refuse.url(),
        small.url(),
        origin.url()
    );
    if forever {
        std::future::pending::<()>().await;
    }
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}

fn control_app(server: Arc<TestServer>) -> axum::Router {
    use axum::http::header;
    let s2 = server.clone();
    axum::Router::new()
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
