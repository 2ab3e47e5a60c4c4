//! The sente-rs demo: a chat room with private messages, the live list of connected users, the
//! transport in use, a request/reply ping and a server-pushed clock.
//!
//! Run it with `cargo run -p chat` and open <http://127.0.0.1:3000> in two browsers.
//!
//! It follows Sente's getting-started guide: the user id comes from the session (tower-sessions),
//! and the CSRF token is embedded in the page. The token is a double-submit cookie, so it stays
//! valid across server restarts; the in-memory session does not, and the page logs itself in
//! again after a restart (see `static/app.js`).

use axum::extract::{Form, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use sente::{
    AllowedOrigins, AntiForgeryToken, CsrfToken, EventMsg, Router as EventRouter, Server,
    ServerHandle, UserId,
};
use sente_proto::{Event, EventId, Uid};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower_sessions::{MemoryStore, Session, SessionManagerLayer};

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

/// Cookie holding the CSRF token (double-submit: the page echoes it in every request).
const CSRF_COOKIE: &str = "chat_csrf";
/// Session key of the chosen name.
const NAME_KEY: &str = "name";
/// Longest name and message accepted.
const MAX_NAME: usize = 32;
const MAX_TEXT: usize = 2000;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sente=info".into()),
        )
        .init();
    let addr = parse_addr()?;

    let server = Server::builder()
        // The CSRF token is the double-submit cookie that `identify` below puts in a request
        // extension. A request without any cookie carries no credentials to abuse (a service
        // or the native Rust client, anonymous here), so it needs no token.
        .csrf_token_fn(|req| match req.extensions().get::<AntiForgeryToken>() {
            Some(t) => CsrfToken::Token(t.0.clone()),
            None if req.header("cookie").is_none() => CsrfToken::Skip,
            None => CsrfToken::Missing,
        })
        // Cookie-bearing requests must show the token whatever their origin, so any origin
        // may connect; the user id comes from the session (see `identify`).
        .allowed_origins(AllowedOrigins::All)
        .handler(event_router())
        .build()?;

    tokio::spawn(push_clock(server.handle().clone()));
    tokio::spawn(push_user_list(server.handle().clone()));

    let sessions = SessionManagerLayer::new(MemoryStore::default())
        .with_secure(false)
        .with_same_site(tower_sessions::cookie::SameSite::Lax);
    let app = axum::Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/login", post(login))
        .route("/logout", post(logout))
        .merge(server.router("/chsk"))
        .layer(middleware::from_fn(identify))
        .layer(sessions);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("chat demo listening on http://{}", listener.local_addr()?);
    // Safe settings for a public port: head and keep-alive timeouts, head size and connection
    // caps (see `sente::ServeConfig` for the defaults; the Ajax body timeout and size limit are
    // the sente server's own).
    sente::serve(listener, app, sente::ServeConfig::default()).await?;
    Ok(())
}

/// `--addr HOST:PORT` (default 127.0.0.1:3000).
fn parse_addr() -> Result<SocketAddr, BoxError> {
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = "127.0.0.1:3000".parse()?;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs HOST:PORT")?.parse()?,
            "-h" | "--help" => {
                println!("usage: chat [--addr HOST:PORT]   (default 127.0.0.1:3000)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(addr)
}

// ---- HTTP side ---------------------------------------------------------------------------

/// Puts the session's user id and the CSRF cookie's token where the sente server looks for them.
async fn identify(session: Session, mut req: Request, next: Next) -> Response {
    if let Ok(Some(name)) = session.get::<String>(NAME_KEY).await {
        req.extensions_mut().insert(UserId(Uid::from(name)));
    }
    if let Some(token) = cookie(req.headers(), CSRF_COOKIE).map(str::to_owned) {
        req.extensions_mut().insert(AntiForgeryToken(token));
    }
    next.run(req).await
}

async fn index(session: Session, headers: HeaderMap) -> Response {
    let name = session
        .get::<String>(NAME_KEY)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let (token, new_cookie) = match cookie(&headers, CSRF_COOKIE) {
        Some(t) if is_token(t) => (t.to_owned(), None),
        _ => {
            let t = uuid::Uuid::new_v4().simple().to_string();
            let c = format!("{CSRF_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
            (t, Some(c))
        }
    };
    let page = INDEX_HTML
        .replace("{{CSRF_TOKEN}}", &token)
        .replace("{{NAME}}", &html_escape(&name));
    let mut resp = Html(page).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = new_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(rename = "csrf-token", default)]
    csrf_token: String,
}

async fn login(session: Session, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    if !csrf_ok(&headers, &form.csrf_token) {
        return (StatusCode::FORBIDDEN, "Bad CSRF token").into_response();
    }
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return (
            StatusCode::BAD_REQUEST,
            "A name is 1 to 32 printable characters",
        )
            .into_response();
    }
    // A new session id on login (no session fixation); the uid is fixed per connection, so the
    // page reloads and reconnects with it.
    if session.cycle_id().await.is_err() || session.insert(NAME_KEY, name).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    Redirect::to("/").into_response()
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(rename = "csrf-token", default)]
    csrf_token: String,
}

async fn logout(session: Session, headers: HeaderMap, Form(form): Form<LogoutForm>) -> Response {
    if !csrf_ok(&headers, &form.csrf_token) {
        return (StatusCode::FORBIDDEN, "Bad CSRF token").into_response();
    }
    let _ = session.flush().await;
    Redirect::to("/").into_response()
}

fn csrf_ok(headers: &HeaderMap, sent: &str) -> bool {
    cookie(headers, CSRF_COOKIE).is_some_and(|c| is_token(c) && c == sent)
}

fn is_token(t: &str) -> bool {
    t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// ---- channel socket side -----------------------------------------------------------------

#[derive(Deserialize)]
struct Say {
    text: String,
}

#[derive(Serialize)]
struct ChatMsg<'a> {
    from: &'a str,
    text: &'a str,
    at: u64,
}

#[derive(Deserialize)]
struct PrivateIn {
    to: String,
    text: String,
}

#[derive(Serialize)]
struct PrivateOut<'a> {
    from: &'a str,
    to: &'a str,
    text: &'a str,
    at: u64,
}

#[derive(Serialize)]
struct Users {
    users: Vec<String>,
}

fn event_router() -> EventRouter {
    EventRouter::new()
        .on("chat/say", |mut msg: EventMsg| async move {
            let from = signed_in(&msg)?;
            let Say { text } = msg.data()?;
            let text = checked_text(&text)?;
            let chat = ChatMsg {
                from: &from,
                text,
                at: now_ms(),
            };
            broadcast(msg.server(), &event("chat/msg", &chat)?);
            msg.reply(true);
            Ok::<(), BoxError>(())
        })
        .on("chat/private", |mut msg: EventMsg| async move {
            let from = signed_in(&msg)?;
            let PrivateIn { to, text } = msg.data()?;
            let text = checked_text(&text)?;
            let out = PrivateOut {
                from: &from,
                to: &to,
                text,
                at: now_ms(),
            };
            let ev = event("chat/private", &out)?;
            msg.server().send(&Uid::from(to.as_str()), ev.clone())?;
            if to != from {
                msg.server().send(&Uid::from(from.as_str()), ev)?;
            }
            msg.reply(true);
            Ok::<(), BoxError>(())
        })
        .on("chat/who", |mut msg: EventMsg| async move {
            let users = sente_proto::edn::to_value(&Users {
                users: user_names(msg.server()),
            })?;
            msg.reply(users);
            Ok::<(), BoxError>(())
        })
        // Replies with the data it got: the page's ping button, and scripted checks.
        .on("demo/echo", |mut msg: EventMsg| async move {
            let data = msg.data_value().clone();
            msg.reply(data);
        })
        // Never replies: shows a client-side request timeout.
        .on("demo/no-reply", |mut msg: EventMsg| async move {
            if let Some(reply) = msg.take_reply() {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(reply);
            }
        })
}

/// The sender's name, or an error for anonymous clients.
fn signed_in(msg: &EventMsg) -> Result<String, BoxError> {
    msg.uid
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "pick a name first".into())
}

fn checked_text(text: &str) -> Result<&str, BoxError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_TEXT {
        return Err(format!("a message is 1 to {MAX_TEXT} characters").into());
    }
    Ok(text)
}

fn event<T: Serialize>(id: &str, data: &T) -> Result<Event, BoxError> {
    Ok(Event::typed(EventId::new(id)?, data)?)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The names of the signed-in connected users, sorted.
fn user_names(server: &ServerHandle) -> Vec<String> {
    let mut names: Vec<String> = server
        .connected_uids()
        .borrow()
        .any
        .iter()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Sends `ev` to every connected uid (anonymous clients included), packed once.
fn broadcast(server: &ServerHandle, ev: &Event) {
    if let Err(e) = server.broadcast(ev.clone()) {
        tracing::warn!(error = %e, "broadcast failed");
    }
}

/// Pushes `demo/clock {:now ms}` to everyone once a second.
async fn push_clock(server: ServerHandle) {
    #[derive(Serialize)]
    struct Clock {
        now: u64,
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Ok(ev) = event("demo/clock", &Clock { now: now_ms() }) {
            broadcast(&server, &ev);
        }
    }
}

/// Pushes `chat/users {:users [...]}` to everyone whenever the connected uids change.
async fn push_user_list(server: ServerHandle) {
    let mut uids = server.connected_uids();
    while uids.changed().await.is_ok() {
        let users = Users {
            users: user_names(&server),
        };
        if let Ok(ev) = event("chat/users", &users) {
            broadcast(&server, &ev);
        }
    }
}
