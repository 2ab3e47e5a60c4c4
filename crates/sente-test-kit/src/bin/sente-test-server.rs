//! Starts the conformance test server and prints one JSON line with its URL, for clients that
//! run in another process (node, a browser):
//!
//! ```text
//! $ sente-test-server [--refuse-ws] [--no-csrf] [--max-message-bytes N]
//! {"url":"http://127.0.0.1:41234/chsk","csrf_token":"tok-123"}
//! ```
//!
//! It serves until stdin closes (or forever with `--forever`).

use sente_test_kit::{CSRF_TOKEN, ServerOptions, TestServer};
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut opts = ServerOptions::default();
    let mut forever = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--refuse-ws" => opts.refuse_ws_upgrades = true,
            "--no-csrf" => opts.csrf_token = None,
            "--forever" => forever = true,
            "--max-message-bytes" => {
                opts.max_message_bytes =
                    args.next().and_then(|v| v.parse().ok()).unwrap_or(opts.max_message_bytes);
            }
            other => {
                eprintln!("unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let csrf = opts.csrf_token.clone();
    let server = TestServer::spawn(opts).await?;
    let token = csrf.map_or_else(|| "null".to_owned(), |t| format!("\"{t}\""));
    println!("{{\"url\":\"{}\",\"csrf_token\":{token}}}", server.url());
    let _ = CSRF_TOKEN;
    if forever {
        std::future::pending::<()>().await;
    }
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}
