//! Connects to a Sente server and prints every event it receives.
//!
//! ```text
//! cargo run -p native-client -- [URL] [--kind auto|ws|ajax] [--packer NAME] [--csrf TOKEN]
//! ```
//!
//! The URL defaults to `http://127.0.0.1:3000/chsk` (the demo server). Once open it sends
//! `[:demo/echo "hello from Rust"]` and prints the reply. Stop it with Ctrl-C.

use futures_util::StreamExt;
use sente_client::{Client, ClientEvent, Event, EventId, Kind};
use std::time::Duration;

fn usage() -> ! {
    eprintln!("usage: native-client [URL] [--kind auto|ws|ajax] [--packer NAME] [--csrf TOKEN]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "sente_client=info".into()),
        )
        .init();
    let mut url = "http://127.0.0.1:3000/chsk".to_owned();
    let mut builder_opts: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
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
                println!("{}", ev.to_event().to_value());
                if let ClientEvent::Handshake(h) = &ev
                    && h.first
                {
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
