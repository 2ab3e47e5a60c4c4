//! Connects to a Sente server, sends one echo request and prints the reply. Every event it
//! receives is logged at debug (target `native_client`): `RUST_LOG=native_client=debug` shows
//! them, `RUST_LOG=debug` the client library's own logs too.
//!
//! ```text
//! cargo run -p native-client -- [URL] [--kind auto|ws|ajax] [--packer NAME] [--csrf TOKEN]
//!                               [--no-session]
//! ```
//!
//! The URL defaults to `http://127.0.0.1:3000/chsk` (the demo server). Like a page of the demo,
//! it first gets a session (`GET /session`: the session cookie and its CSRF token), then
//! connects with that cookie, the token and the page's `Origin` (the demo checks all three).
//! `--no-session` skips that, for servers without one. Once open it sends
//! `[:demo/echo "hello from Rust"]` and prints the reply. Stop it with Ctrl-C.

use futures_util::StreamExt;
use sente_client::{Client, ClientEvent, Event, EventId, Kind};
use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage: native-client [URL] [--kind auto|ws|ajax] [--packer NAME] [--csrf TOKEN] [--no-session]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "native_client=info,sente_client=warn".into()),
        )
        .init();
    let mut url = "http://127.0.0.1:3000/chsk".to_owned();
    let mut builder_opts: Vec<(String, String)> = Vec::new();
    let mut session = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-session" => session = false,
            "--kind" | "--packer" | "--csrf" => {
                let v = args.next().unwrap_or_else(|| usage());
                builder_opts.push((arg, v));
            }
            "-h" | "--help" => usage(),
            other if !other.starts_with('-') => other.clone_into(&mut url),
            _ => usage(),
        }
    }
    let mut builder = Client::builder(&url);
    if session {
        let origin = origin_of(&url);
        match fetch_session(&origin).await {
            Ok((cookie, token)) => {
                builder = builder.origin(&origin).csrf_token(token);
                if let Some((name, value)) = cookie.split_once('=') {
                    builder = builder.cookie(name, value);
                }
            }
            Err(e) => eprintln!("no session from {origin}/session ({e}); connecting without"),
        }
    }
    for (k, v) in builder_opts {
        builder = match (k.as_str(), v.as_str()) {
            ("--kind", "auto") => builder.kind(Kind::Auto),
            ("--kind", "ws") => builder.kind(Kind::Ws),
            ("--kind", "ajax") => builder.kind(Kind::Ajax),
            ("--packer", name) => builder.packer_name(name),
            ("--csrf", token) => builder.csrf_token(token),
            _ => usage(),
        };
    }
    let client = match builder.connect() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        }
    };
    println!("connecting to {url} as client {}", client.client_id());
    let mut events = client.events();
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { break };
                tracing::debug!(target: "native_client", "{}", ev.to_event().to_value());
                if let ClientEvent::Handshake(h) = &ev
                    && h.first
                {
                    tracing::info!(target: "native_client", "connected");
                    let c = client.clone();
                    tokio::spawn(async move {
                        let ev = Event::new(EventId::new("demo/echo").expect("valid id"), "hello from Rust");
                        match c.request(ev, Duration::from_secs(5)).await {
                            Ok(v) => println!("echo reply: {v}"),
                            Err(e) => println!("echo failed: {e}"),
                        }
                    });
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.disconnect();
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// `scheme://host:port` of a URL.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

/// What a page of the demo gets first: a session cookie (`name=value`) and the session's CSRF
/// token (`GET /session`, JSON `{"csrfToken": ..}`).
async fn fetch_session(
    origin: &str,
) -> Result<(String, String), Box<dyn std::error::Error + Send + Sync>> {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<hyper::body::Bytes>>();
    let resp = client.get(format!("{origin}/session").parse()?).await?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()).into());
    }
    let cookie = resp
        .headers()
        .get(hyper::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or("no session cookie")?
        .to_owned();
    let body = resp.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    let token = json["csrfToken"].as_str().ok_or("no csrfToken")?.to_owned();
    Ok((cookie, token))
}
