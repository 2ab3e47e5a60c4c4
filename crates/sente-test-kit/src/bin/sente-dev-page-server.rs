//! The server of the browser tests' "developer page" (`e2e/dev-page/index.html`, issue 16
//! items 6 to 9): a `sente` server as an app developer would set one up, serving the page at
//! `/`, the channel socket at `/chsk` and the JS client at `/chsk/client.js`, with the CSRF
//! check on and the allowed origins given on the command line. Prints one JSON line:
//!
//! ```text
//! $ sente-dev-page-server --page e2e/dev-page/index.html [--allow-origin http://127.0.0.1:4000]...
//! {"url":"http://127.0.0.1:41234","csrf_token":"dev-page-token"}
//! ```
//!
//! The page gets the CSRF token in its `<meta name="csrf-token">` (the server fills in
//! `{{csrf-token}}`); the uid is the `uid` query parameter of the channel socket. Allowed
//! origins: the server's own and each `--allow-origin`. Event handlers:
//!
//! - `dev/echo`: replies with the data;
//! - `dev/slow` (data `ms`, at most 60 000): replies `:slow` after `ms` (a handler past the
//!   default 1 s budget no longer holds the client's next requests);
//! - `dev/never`: never replies (holds the reply for a minute);
//! - `dev/fail`: returns an error before replying (the client gets `:chsk/error` at once).
//!
//! `--port` picks the port (default: any free one; a test restarts the server on the same port to
//! make an outage). It serves until stdin closes, or forever with `--forever`.

use sente::{AllowedOrigins, BoxError, CsrfToken, EventMsg, Router, Server};
use sente_proto::{Uid, Value};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The CSRF token of the page.
const TOKEN: &str = "dev-page-token";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut page = None;
    let mut origins = Vec::new();
    let mut forever = false;
    let mut port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.len()) {
            ("--page", 1..) => page = args.next(),
            ("--allow-origin", 1..) => origins.extend(args.next()),
            ("--port", 1..) => {
                let Some(p) = args.next().and_then(|p| p.parse().ok()) else {
                    eprintln!("--port needs a port number");
                    std::process::exit(2);
                };
                port = p;
            }
            ("--forever", _) => forever = true,
            _ => {
                eprintln!(
                    "unexpected argument {a:?}; usage: sente-dev-page-server --page <index.html> \
                     [--allow-origin <origin>]... [--port <port>] [--forever]"
                );
                std::process::exit(2);
            }
        }
    }
    let Some(page) = page else {
        eprintln!("--page <index.html> is required");
        std::process::exit(2);
    };
    let html = std::fs::read_to_string(&page)?.replace("{{csrf-token}}", TOKEN);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    origins.push(format!("http://{addr}"));
    let server = Server::builder()
        .user_id_fn(|r| r.param("uid").map_or(Uid::Nil, Uid::from))
        .csrf_token_fn(|_| CsrfToken::from(TOKEN))
        .allowed_origins(AllowedOrigins::list(origins))
        .handler(app())
        .build()
        .map_err(std::io::Error::other)?;
    let app = server.router::<()>("/chsk").route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(html) }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    println!("{{\"url\":\"http://{addr}\",\"csrf_token\":\"{TOKEN}\"}}");
    if forever {
        std::future::pending::<()>().await;
    }
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}

fn app() -> Router {
    Router::new()
        .on("dev/echo", |mut msg: EventMsg| async move {
            let data = msg.data_value().clone();
            msg.reply(data);
        })
        .on("dev/slow", |mut msg: EventMsg| async move {
            let ms = msg.data_value().as_i64().unwrap_or(0).clamp(0, 60_000);
            tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())).await;
            msg.reply(Value::kw("slow"));
        })
        .on("dev/never", |msg: EventMsg| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(msg);
        })
        .on("dev/fail", |msg: EventMsg| async move {
            let _held = msg;
            Err::<(), BoxError>("dev/fail: the handler failed on purpose".into())
        })
        .on_error(|err, info| eprintln!("handler error ({}): {err}", info.id))
}
