//! Starts conformance test servers for clients that run in another process (node, a browser)
//! and prints one JSON line with their URLs:
//!
//! ```text
//! $ sente-test-server [--cors] [--forever]
//! {"url":"http://127.0.0.1:41234/chsk","refuse_ws_url":"http://127.0.0.1:41236/chsk",
//!  "small_url":"http://127.0.0.1:41238/chsk","control_url":"http://127.0.0.1:41240",
//!  "origin_url":"http://127.0.0.1:41242/chsk","unit_url":"http://127.0.0.1:41244/chsk",
//!  "window_url":"http://127.0.0.1:41246/chsk","csrf_token":"tok-123",
//!  "scenarios":["handshake","echo",...]}
//! ```
//!
//! - `url`: the default server (CSRF token `tok-123`, any origin);
//! - `refuse_ws_url`: the same app behind a proxy that refuses WebSocket upgrades;
//! - `small_url`: messages limited to 16 KiB (oversize scenario);
//! - `origin_url`: only the origin `http://good.example` is allowed (origin-rejected scenario,
//!   for clients that can set an `Origin` header);
//! - `unit_url`: a server of its own for client unit tests (long-poll timeout 1 s, messages up
//!   to 4 MiB, server WebSocket pings every 300 ms when idle), driven through the control
//!   endpoint;
//! - `window_url`: like `unit_url`, with a resume replay window of 3 pushes per uid (resume
//!   outside the window);
//! - `control_url`: `POST /restart` restarts the default server (server-restart scenario);
//!   `GET /log` returns the default server's uidport log as edn; for the unit server (under
//!   `/unit`) and the window server (under `/window`): `POST /unit/drop` cuts every connection
//!   (new ones are accepted); `POST /unit/refuse-ws` with body `on` or `off` makes its proxy
//!   refuse WebSocket upgrades (403) or not; `POST /unit/blackhole` with body `on` or `off`
//!   makes its proxy throw away every byte of the open connections (a network path that died
//!   unnoticed) or not; `POST /unit/push` with the JSON body
//!   `{"uid": "u1", "id": "my-app/n", "data": [1, "two", {"large": 1048576}]}` pushes one event
//!   per element of `data` (integers, strings, or `{"large": n}`: [`sente_test_kit::large_text`]
//!   of `n` bytes, at most 8 MiB) to the uid, each flushed, in order; `POST /unit/request` with
//!   `{"uid": "u1", "id": "my-app/ask", "data": 7, "timeout_ms": 2000}` asks each client of the
//!   uid (`ServerHandle::request`) and answers a JSON array of `{"client": .., "ok": edn}` or
//!   `{"client": .., "error": "unsupported" | "timeout" | "client: <reason>" | ..}`;
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
    let unit_opts = ServerOptions {
        lp_timeout_ms: 1_000,
        // Large pushes (the `large` extension's tests) of 1 MiB and more.
        max_message_bytes: 4 << 20,
        ws_kalive_ms: Some(300),
        ..base
    };
    let unit = Arc::new(TestServer::spawn(unit_opts.clone()).await?);
    let window = Arc::new(
        TestServer::spawn(ServerOptions {
            replay: sente::ReplayConfig::default().max_events(3),
            ..unit_opts
        })
        .await?,
    );
    let names: Vec<&str> = sente_test_kit::scenarios().iter().map(|s| s.name).collect();
    let names = serde_json::to_string(&names).map_err(std::io::Error::other)?;
    let control = control_app(main.clone())
        .nest("/unit", proxy_app(unit.clone()))
        .nest("/window", proxy_app(window.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let control_addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, control).await;
    });
    println!(
        "{{\"url\":\"{}\",\"refuse_ws_url\":\"{}\",\"small_url\":\"{}\",\"control_url\":\"http://{control_addr}\",\"origin_url\":\"{}\",\"unit_url\":\"{}\",\"window_url\":\"{}\",\"csrf_token\":\"{CSRF_TOKEN}\",\"scenarios\":{names}}}",
        main.url(),
        refuse.url(),
        small.url(),
        origin.url(),
        unit.url(),
        window.url()
    );
    if forever {
        std::future::pending::<()>().await;
    }
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}

/// `on` or `off` (a control body), else a 400 answer.
fn on_off(body: &str) -> Result<bool, (axum::http::StatusCode, String)> {
    match body.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err((
            axum::http::StatusCode::BAD_REQUEST,
            format!("body must be on or off, not {other:?}"),
        )),
    }
}

/// Pushes the events of `body` (`{"uid": .., "id": .., "data": [..]}`) to its uid, each
/// flushed, in order.
fn push(server: &TestServer, body: &str) -> Result<String, String> {
    let body: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let field = |name: &str| body.get(name).ok_or(format!("no {name:?}"));
    let (Some(uid), Some(id), Some(data)) = (
        field("uid")?.as_str(),
        field("id")?.as_str(),
        field("data")?.as_array(),
    ) else {
        return Err("uid and id must be strings, data an array".to_owned());
    };
    let id = sente_proto::EventId::new(id).map_err(|e| e.to_string())?;
    let running = server.server().ok_or("no sente-rs server")?;
    let handle = running.handle();
    let uid = sente_proto::Uid::from(uid);
    for data in data {
        let value = match data {
            serde_json::Value::String(text) => sente_proto::Value::Str(text.clone()),
            serde_json::Value::Number(n) => {
                sente_proto::Value::Int(n.as_i64().ok_or("integers only")?)
            }
            serde_json::Value::Object(o) if o.len() == 1 => {
                let n = o.get("large").and_then(serde_json::Value::as_u64);
                let n = n.ok_or("an object is {\"large\": n}")?;
                let n = usize::try_from(n).map_err(|e| e.to_string())?;
                sente_proto::Value::Str(sente_test_kit::large_text(n.min(8 << 20)))
            }
            other => {
                return Err(format!(
                    "integers, strings and {{\"large\": n}} only, not {other}"
                ));
            }
        };
        handle
            .send_flush(&uid, sente_proto::Event::new(id.clone(), value))
            .map_err(|e| e.to_string())?;
    }
    Ok(format!("pushed {}", data.len()))
}

/// Asks each client of a uid (`{"uid": .., "id": .., "data": .., "timeout_ms": ..}`) and
/// answers what each one said, as JSON.
async fn request(server: &TestServer, body: &str) -> Result<String, String> {
    use sente::s2c::RequestError as E;
    let body: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let (Some(uid), Some(id)) = (
        body.get("uid").and_then(|v| v.as_str()),
        body.get("id").and_then(|v| v.as_str()),
    ) else {
        return Err("uid and id must be strings".to_owned());
    };
    let data = match body.get("data") {
        Some(serde_json::Value::String(t)) => sente_proto::Value::Str(t.clone()),
        Some(serde_json::Value::Number(n)) => {
            sente_proto::Value::Int(n.as_i64().ok_or("integers only")?)
        }
        _ => sente_proto::Value::Nil,
    };
    let timeout = body
        .get("timeout_ms")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(2_000);
    let event = sente_proto::Event::new(
        sente_proto::EventId::new(id).map_err(|e| e.to_string())?,
        data,
    );
    let running = server.server().ok_or("no sente-rs server")?;
    let got = running
        .handle()
        .request(
            &sente_proto::Uid::from(uid),
            event,
            std::time::Duration::from_millis(timeout),
        )
        .await;
    let out: Vec<serde_json::Value> = got
        .into_iter()
        .map(|(cid, r)| {
            let client = cid.as_str().to_owned();
            match r {
                Ok(v) => {
                    serde_json::json!({"client": client, "ok": sente_proto::edn::to_edn_string(&v)})
                }
                Err(e) => {
                    let error = match e {
                        E::Unsupported => "unsupported".to_owned(),
                        E::Timeout => "timeout".to_owned(),
                        E::Client(reason) => format!("client: {reason}"),
                        other => other.to_string(),
                    };
                    serde_json::json!({"client": client, "error": error})
                }
            }
        })
        .collect();
    Ok(serde_json::Value::Array(out).to_string())
}

/// The controls of one server behind its proxy: `/drop`, `/refuse-ws`, `/blackhole`, `/push`
/// (readable from any origin: the browser tests call them).
fn proxy_app(server: Arc<TestServer>) -> axum::Router {
    use axum::http::StatusCode;
    let (s1, s2, s3, s4) = (
        server.clone(),
        server.clone(),
        server.clone(),
        server.clone(),
    );
    let s5 = server;
    axum::Router::new()
        .route(
            "/drop",
            axum::routing::post(move || {
                let server = s1.clone();
                async move {
                    server.proxy().drop_connections();
                    "dropped"
                }
            }),
        )
        .route(
            "/refuse-ws",
            axum::routing::post(move |body: String| {
                let server = s2.clone();
                async move {
                    server.proxy().refuse_ws_upgrades(on_off(&body)?);
                    Ok::<_, (StatusCode, String)>(body.trim().to_owned())
                }
            }),
        )
        .route(
            "/blackhole",
            axum::routing::post(move |body: String| {
                let server = s3.clone();
                async move {
                    server.proxy().blackhole(on_off(&body)?);
                    Ok::<_, (StatusCode, String)>(body.trim().to_owned())
                }
            }),
        )
        .route(
            "/push",
            axum::routing::post(move |body: String| {
                let server = s4.clone();
                async move { push(&server, &body).map_err(|e| (StatusCode::BAD_REQUEST, e)) }
            }),
        )
        .route(
            "/request",
            axum::routing::post(move |body: String| {
                let server = s5.clone();
                async move {
                    request(&server, &body)
                        .await
                        .map_err(|e| (StatusCode::BAD_REQUEST, e))
                }
            }),
        )
        .layer(axum::middleware::map_response(
            |mut response: axum::response::Response| async move {
                response.headers_mut().insert(
                    axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    axum::http::HeaderValue::from_static("*"),
                );
                response
            },
        ))
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
