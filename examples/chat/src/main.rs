//! The sente-rs demo: a chat room with private messages, the live list of connected users, the
//! transport in use, a request/reply ping and a server-pushed clock.
//!
//! Run it with `cargo run -p chat` and open <http://127.0.0.1:3000> in two browsers.
//!
//! It follows Sente's getting-started guide and shows the safe setup:
//! - the user id comes from the session (tower-sessions), and a name belongs to one session at a
//!   time: while "bob" is online (or just signed in), a second "bob" is refused;
//! - the CSRF token is generated per session, kept in the session, embedded in the page and
//!   checked on `/chsk` by the library's default `csrf_token_fn` (the `AntiForgeryToken` request
//!   extension that `identify` inserts), and by `/login` and `/logout`;
//! - the library's default Origin check (same origin only);
//! - logging out closes every connection of that user (`close_uid`), so no tab stays identified,
//!   and marks the session signed out, so that another tab does not sign itself in again;
//! - one limit for names and one for messages ([`MAX_NAME`], [`MAX_TEXT`]): the page gets them
//!   from the server, shows them, and shows the server's refusals;
//! - chat messages are rate limited per user (5 a second, bursts of 10).
//!
//! Delivery across reconnects: the page resumes its stream after a short disconnect (the sente
//! replay window, `--replay-window-ms`, default 60 s): what it missed arrives once, in order. The
//! server also keeps the room's last messages ([`History`]: `--history N`, default
//! [`DEFAULT_HISTORY`]), each with an id; the page shows them on join and reload, and fetches
//! them again (without duplicates) with a "you may have missed messages" marker after a
//! reconnect that could not resume (`recovered: false`).
//!
//! Sessions and name claims live in memory: after a server restart the page fetches its new
//! session's token from `/session` and signs in again under the same name (see `static/app.js`).
//! A private message is marked delivered when a tab of its recipient confirms it
//! (`chat/delivered`).
//!
//! Several nodes: `chat --addr 127.0.0.1:3001 --redis redis://127.0.0.1:6379` (or `--nats
//! nats://127.0.0.1:4222`) on each node. The sente server then uses that backplane, and the
//! sessions and name claims live in Redis or a NATS KV bucket ([`shared`]), so any request may
//! land on any node (round-robin behind a proxy, no sticky sessions: see `nginx/` and the
//! README). The rate limit is shared too. Every response carries `x-chat-node: <addr>`, and the
//! `demo/node` request answers `{:node "<addr>"}` from the node that holds the connection.
//!
//! The admin page ([`sente::admin`]) is mounted at `/admin`, behind the app's own check: only
//! the user signed in under the admin name (`--admin-name`, default `admin`) sees it, others get
//! 403. (A demo: in the chat anybody may take a free name, so a real app checks a role.)

use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use sente::{
    AntiForgeryToken, EventMsg, ReplayConfig, Router as EventRouter, Server, ServerHandle, UserId,
};
use sente_proto::{Event, EventId, Uid, Value};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower_sessions::{Session, SessionManagerLayer};

mod shared;
use shared::{SessionKv, Shared};

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

/// Session keys: the CSRF token, the chosen name, the owner key of that name (see [`Names`]), a
/// one-time login error for the next page, and whether the user logged out.
const CSRF_KEY: &str = "csrf";
const NAME_KEY: &str = "name";
const OWNER_KEY: &str = "owner";
const FLASH_KEY: &str = "flash";
const SIGNED_OUT_KEY: &str = "signed-out";
/// Longest name and message accepted, in characters (Unicode scalar values, what the page counts
/// with `[...text].length`). The page shows them (see `index`).
const MAX_NAME: usize = 32;
const MAX_TEXT: usize = 2000;
/// A name stays reserved this long after its owner was last seen, so that signing in (the page
/// reloads) or reloading does not free it for someone else in between.
const NAME_GRACE: Duration = Duration::from_secs(10);
/// Chat messages (room and private) per user: a bucket of `RATE_BURST`, refilled `RATE_PER_SEC`
/// a second.
const RATE_PER_SEC: f64 = 5.0;
const RATE_BURST: f64 = 10.0;
/// Room messages kept for the page's history by default (`--history`), and the most accepted.
const DEFAULT_HISTORY: usize = 50;
const MAX_HISTORY: usize = 1000;
/// The history's other bounds: at most this many bytes (oldest messages dropped first), and
/// forgotten this long after the room's last message.
const HISTORY_MAX_BYTES: usize = 256 * 1024;
const HISTORY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    // (A one-shot command: its one line of output is the answer.)
    if args.remove_cluster {
        let (removed, what) = match &args.engine {
            Engine::Redis(url) => (Shared::remove_redis(url, &args.cluster).await?, "keys"),
            Engine::Nats(url) => (Shared::remove_nats(url, &args.cluster).await?, "streams"),
            Engine::Memory => return Err("--remove-cluster needs --redis or --nats".into()),
        };
        println!("removed {removed} {what} of cluster {:?}", args.cluster);
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sente=info".into()),
        )
        .init();
    // The listener first: with `--addr 127.0.0.1:0` the node's name is its real address.
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let node = listener.local_addr()?.to_string();
    let mut builder =
        Server::builder().replay(ReplayConfig::default().max_age_ms(args.replay_window_ms));
    let shared = match &args.engine {
        Engine::Memory => Shared::Memory(shared::Memory::default()),
        Engine::Redis(url) => {
            let config = sente_redis::RedisConfig::new(url.as_str()).cluster(args.cluster.as_str());
            builder = builder.backplane(Arc::new(sente_redis::RedisBackplane::start(config)?));
            Shared::redis(url, &args.cluster).await?
        }
        Engine::Nats(url) => {
            let config = sente_nats::NatsConfig::new(url.as_str()).cluster(args.cluster.as_str());
            builder = builder.backplane(Arc::new(sente_nats::NatsBackplane::start(config)?));
            Shared::nats(url, &args.cluster).await?
        }
    };
    let shared = Arc::new(shared);
    let app_state = Arc::new(App {
        names: Names(shared.clone()),
        limiter: RateLimiter(shared.clone()),
        history: History {
            shared: shared.clone(),
            max: args.history,
        },
        node: node.clone(),
    });

    // The library's defaults do the checks: the CSRF token is the `AntiForgeryToken` request
    // extension (the session's token, put there by `identify`; no session, no token: 403), and
    // only pages of this origin may connect (`AllowedOrigins::SameOrigin`).
    let server = builder.handler(event_router(app_state.clone())).build()?;

    tokio::spawn(push_clock(server.handle().clone()));
    tokio::spawn(push_user_list(server.handle().clone()));
    tokio::spawn(keep_online_names(
        server.handle().clone(),
        app_state.clone(),
    ));

    let http = Http {
        app: app_state.clone(),
        server: server.handle().clone(),
    };
    let sessions = SessionManagerLayer::new(SessionKv(shared))
        .with_secure(false)
        .with_same_site(tower_sessions::cookie::SameSite::Lax);
    let node_header = HeaderValue::from_str(&node)?;
    let app = axum::Router::new()
        .route("/", get(index))
        .route("/session", get(session_info))
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
        .with_state(http.clone())
        .merge(server.router("/chsk"))
        .merge(admin_routes(&server, args.admin_name.clone()))
        .layer(middleware::from_fn_with_state(http, identify))
        .layer(sessions)
        .layer(middleware::from_fn(chsk_keeps_the_cookie))
        .layer(middleware::map_response(move |mut resp: Response| {
            let node = node_header.clone();
            async move {
                resp.headers_mut().insert("x-chat-node", node);
                resp
            }
        }));

    // (Not the engine's URL: it may hold a password.)
    let over = match &args.engine {
        Engine::Memory => String::new(),
        Engine::Redis(_) => format!(" (node of cluster {:?} over Redis)", args.cluster),
        Engine::Nats(_) => format!(" (node of cluster {:?} over NATS)", args.cluster),
    };
    // A node of a cluster announces itself once its backplane has joined (until then its
    // /chsk holds new clients: served before, they would miss the other nodes' pushes).
    let joined = server.handle().clone();
    tokio::spawn(async move {
        joined.serving().await;
        println!("chat demo listening on http://{node}{over}");
    });
    // Safe settings for a public port: head and keep-alive timeouts, head size and connection
    // caps (see `sente::ServeConfig` for the defaults; the Ajax body timeout and size limit are
    // the sente server's own).
    // Ctrl-C / SIGTERM: the listener closes (new connections go to the other nodes), the sente
    // server drains (in-flight replies finish, clients are let go staggered and reconnect
    // elsewhere), the last responses are written, then the process exits.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = server.handle().clone();
    let drain = tokio::spawn(async move {
        sente::shutdown_signal().await;
        println!("draining...");
        let _ = stop.send(());
        handle.shutdown().await;
    });
    sente::serve_with_shutdown(listener, app, sente::ServeConfig::default(), async {
        let _ = stopped.await;
    })
    .await?;
    let _ = drain.await;
    println!("drained; bye");
    Ok(())
}

/// The admin page ([`sente::admin`]) at `/admin` (and its `/admin/snapshot.json`), for the user
/// signed in as `admin_name` only: the route itself has no auth, this layer is the check (the
/// `UserId` extension is the session's signed-in name, put there by [`identify`]).
fn admin_routes(server: &Server, admin_name: String) -> axum::Router {
    let admin = Arc::new(Uid::from(admin_name));
    sente::admin::AdminPage::new(server.handle())
        .router("/admin")
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let admin = admin.clone();
            async move {
                let is_admin = req
                    .extensions()
                    .get::<UserId>()
                    .is_some_and(|u| u.0 == *admin);
                if !is_admin {
                    return (
                        StatusCode::FORBIDDEN,
                        "Forbidden: the admin page is for the admin user (sign in as the admin name)",
                    )
                        .into_response();
                }
                next.run(req).await
            }
        }))
}

/// The command line.
struct Args {
    addr: SocketAddr,
    engine: Engine,
    cluster: String,
    /// The name whose user may open `/admin`.
    admin_name: String,
    /// Room messages kept ([`History`]).
    history: usize,
    /// How long a disconnected page may resume its stream (the sente replay window), in ms.
    replay_window_ms: u64,
    /// `--remove-cluster`: delete what the cluster keeps in its engine, then exit.
    remove_cluster: bool,
}

/// Where the backplane and the shared state are.
enum Engine {
    /// A single node (the default).
    Memory,
    /// `--redis URL`.
    Redis(String),
    /// `--nats URL`.
    Nats(String),
}

const USAGE: &str = "usage: chat [--addr HOST:PORT] [--redis URL | --nats URL] [--cluster NAME]
            [--admin-name NAME] [--history N] [--replay-window-ms MS]
       chat (--redis URL | --nats URL) [--cluster NAME] --remove-cluster
  --addr     where to listen (default 127.0.0.1:3000)
  --redis    a node of a cluster over Redis, e.g. redis://127.0.0.1:6379
  --nats     a node of a cluster over NATS (JetStream on), e.g. nats://127.0.0.1:4222
  --cluster  the cluster's name: its backplane channel, keys or KV bucket (default chat;
             letters, digits, - and _)
  --admin-name  the user (signed-in name) who may open /admin, the admin page (default admin)
  --history  room messages kept and shown on join, reload and after a gap (default 50, at most
             1000, 0: none; also at most 256 KiB)
  --replay-window-ms  how long a disconnected page may come back and get what it missed, in
             order, once (default 60000; past it, the page shows a gap marker and the history)
  --remove-cluster  delete what the cluster keeps in Redis or NATS (sessions, names, history,
             the backplane's numbering and buckets), then exit; never while a node of it runs";

/// Parses the command line (see [`USAGE`]).
fn parse_args() -> Result<Args, BoxError> {
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        addr: "127.0.0.1:3000".parse()?,
        engine: Engine::Memory,
        cluster: "chat".to_owned(),
        admin_name: "admin".to_owned(),
        history: DEFAULT_HISTORY,
        replay_window_ms: ReplayConfig::default().max_age_ms,
        remove_cluster: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().ok_or(format!("{arg} needs {what}"));
        match arg.as_str() {
            "--addr" => out.addr = value("HOST:PORT")?.parse()?,
            "--redis" | "--nats" => {
                if !matches!(out.engine, Engine::Memory) {
                    return Err("give one of --redis and --nats".into());
                }
                let url = value("a URL")?;
                out.engine = if arg == "--redis" {
                    Engine::Redis(url)
                } else {
                    Engine::Nats(url)
                };
            }
            "--cluster" => out.cluster = value("a name")?,
            "--admin-name" => out.admin_name = value("a name")?,
            "--history" => out.history = value("a number")?.parse()?,
            "--replay-window-ms" => out.replay_window_ms = value("milliseconds")?.parse()?,
            "--remove-cluster" => out.remove_cluster = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if out.cluster.is_empty() || out.cluster.len() > 64 || !out.cluster.chars().all(name_ok) {
        return Err("--cluster: 1 to 64 letters, digits, - and _".into());
    }
    if out.history > MAX_HISTORY {
        return Err(format!("--history: at most {MAX_HISTORY}").into());
    }
    Ok(out)
}

// ---- application state -------------------------------------------------------------------

/// What the HTTP routes and the event handlers share.
struct App {
    names: Names,
    limiter: RateLimiter,
    history: History,
    /// This node's address (`x-chat-node`, `demo/node`).
    node: String,
}

/// State of the HTTP routes.
#[derive(Clone)]
struct Http {
    app: Arc<App>,
    server: ServerHandle,
}

/// Who holds which name, in the shared state (one claim per name, the same on every node). A
/// session that signs in gets a random owner key; the name is its own while the claim carries
/// that key. A claim lasts [`NAME_GRACE`] after its owner was last seen, and is renewed while the
/// name is connected (see [`keep_online_names`]). Names compare case-insensitively ("Bob" is
/// "bob").
struct Names(Arc<Shared>);

/// The shared-state key of a name's claim.
fn name_key(name: &str) -> String {
    hex_key("name.", &name.to_lowercase())
}

/// `prefix` and `s` in hex, so that any name is a valid Redis or NATS key.
fn hex_key(prefix: &str, s: &str) -> String {
    let mut key = String::from(prefix);
    for byte in s.bytes() {
        let _ = write!(key, "{byte:02x}");
    }
    key
}

impl Names {
    /// Whether `owner` holds `name` now (noting that it was seen): its claim is there, or the
    /// name is free (nobody else's claim, nobody of that name online) and becomes its own.
    async fn hold(&self, name: &str, owner: &str, server: &ServerHandle) -> Result<bool, BoxError> {
        let key = name_key(name);
        if self
            .0
            .touch(&key, Some(owner.as_bytes()), NAME_GRACE)
            .await?
        {
            return Ok(true);
        }
        if online_names(server).contains(&name.to_lowercase()) {
            return Ok(false);
        }
        self.0.create(&key, owner.as_bytes(), NAME_GRACE).await
    }

    /// Gives `name` to `owner`, unless someone else holds it and is online or was seen within
    /// [`NAME_GRACE`].
    async fn claim(&self, name: &str, owner: &str, server: &ServerHandle) -> Result<(), String> {
        match self.hold(name, owner, server).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "The name \"{name}\" is taken: someone with that name is online. Pick another name."
            )),
            Err(e) => {
                tracing::warn!(error = %e, "name claim failed");
                Err("The server cannot reach its shared state; try again in a moment.".to_owned())
            }
        }
    }

    /// Frees `name` if `owner` holds it.
    async fn release(&self, name: &str, owner: &str) {
        if let Err(e) = self.0.delete_if(&name_key(name), owner.as_bytes()).await {
            tracing::warn!(error = %e, "name release failed");
        }
    }
}

/// Renews the claims of the connected names (on every node: a name stays reserved while its
/// user is connected anywhere, however long ago its last HTTP request was).
async fn keep_online_names(server: ServerHandle, app: Arc<App>) {
    let mut tick = tokio::time::interval(NAME_GRACE / 3);
    loop {
        tick.tick().await;
        for name in online_names(&server) {
            if let Err(e) = app.names.0.touch(&name_key(&name), None, NAME_GRACE).await {
                tracing::warn!(error = %e, "name renewal failed");
                break;
            }
        }
    }
}

/// The lower-cased names of the connected users.
fn online_names(server: &ServerHandle) -> Vec<String> {
    server
        .connected_uids()
        .borrow()
        .any
        .iter()
        .filter_map(|u| u.as_str().map(str::to_lowercase))
        .collect()
}

/// A token bucket per user for chat messages, in the shared state (so the limit holds however
/// a user's messages spread over the nodes): `"<tokens> <unix ms>"` under `rate.<hex name>`,
/// gone once full again (a missing bucket is a full one), updated by compare-and-set.
struct RateLimiter(Arc<Shared>);

/// Compare-and-set attempts on a bucket before a message is refused (other messages of the same
/// user kept changing it).
const RATE_ATTEMPTS: usize = 8;

impl RateLimiter {
    /// Takes one token of `user`'s bucket, or says how to behave.
    async fn check(&self, user: &str) -> Result<(), BoxError> {
        let key = hex_key("rate.", user);
        // A bucket refills completely in this time: then it may go.
        let ttl = Duration::from_secs_f64(RATE_BURST / RATE_PER_SEC);
        for _ in 0..RATE_ATTEMPTS {
            let now = now_ms();
            let old = self.0.get(&key).await.map_err(unavailable)?;
            let (tokens, at) = old
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.split_once(' '))
                .and_then(|(t, at)| Some((t.parse::<f64>().ok()?, at.parse::<u64>().ok()?)))
                .unwrap_or((RATE_BURST, now));
            let elapsed = now.saturating_sub(at) as f64 / 1000.0;
            let tokens = (tokens + elapsed * RATE_PER_SEC).min(RATE_BURST);
            if tokens < 1.0 {
                return Err(format!(
                    "Slow down: at most {RATE_PER_SEC} messages a second (bursts of {RATE_BURST}). \
                     This one was not sent."
                )
                .into());
            }
            let new = format!("{} {now}", tokens - 1.0);
            if self
                .0
                .compare_and_set(&key, old.as_deref(), new.as_bytes(), ttl)
                .await
                .map_err(unavailable)?
            {
                return Ok(());
            }
        }
        Err("Too many messages at once; this one was not sent.".into())
    }
}

/// What the user is told when the shared state cannot be reached (the cause goes to the log).
#[allow(clippy::needless_pass_by_value)] // for `map_err`
fn unavailable(e: BoxError) -> BoxError {
    tracing::warn!(error = %e, "shared state unavailable");
    "The server cannot reach its shared state; try again in a moment.".into()
}

/// The room's last messages, in the shared state (any node answers `chat/history`): one list of
/// JSON [`ChatMsg`]s, at most `max` of them and [`HISTORY_MAX_BYTES`], oldest first.
struct History {
    shared: Arc<Shared>,
    max: usize,
}

/// The shared-state key of the room's history.
const HISTORY_KEY: &str = "history.room";

impl History {
    /// Keeps `msg` (nothing with `--history 0`).
    async fn push(&self, msg: &ChatMsg) -> Result<(), BoxError> {
        if self.max == 0 {
            return Ok(());
        }
        let item = serde_json::to_vec(msg)?;
        self.shared
            .push_capped(HISTORY_KEY, &item, self.max, HISTORY_MAX_BYTES, HISTORY_TTL)
            .await
    }

    /// The kept messages, oldest first.
    async fn recent(&self) -> Result<Vec<ChatMsg>, BoxError> {
        let items = self.shared.list(HISTORY_KEY).await?;
        Ok(items
            .iter()
            .filter_map(|item| serde_json::from_slice(item).ok())
            .collect())
    }
}

// ---- HTTP side ---------------------------------------------------------------------------

/// The channel socket's responses never change the session cookie. A `/chsk` request sent with
/// a cookie the server no longer knows (it restarted, or a login just gave the session a new id)
/// would otherwise answer with the cookie's removal, and that removal can reach the browser
/// after a concurrent `/session` or `/login` response set the new cookie, signing the page out.
async fn chsk_keeps_the_cookie(
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let chsk = request.uri().path() == "/chsk";
    let mut response = next.run(request).await;
    if chsk {
        response
            .headers_mut()
            .remove(axum::http::header::SET_COOKIE);
    }
    response
}

/// Puts the session's CSRF token and user id where the sente server looks for them: the
/// `AntiForgeryToken` and `UserId` request extensions.
async fn identify(
    State(http): State<Http>,
    session: Session,
    mut req: Request,
    next: Next,
) -> Response {
    if let Ok(Some(token)) = session.get::<String>(CSRF_KEY).await {
        req.extensions_mut().insert(AntiForgeryToken(token));
    }
    if let Some(name) = signed_in_name(&http, &session).await {
        req.extensions_mut().insert(UserId(Uid::from(name)));
    }
    next.run(req).await
}

/// The session's name, if the session still holds it.
async fn signed_in_name(http: &Http, session: &Session) -> Option<String> {
    let name = session.get::<String>(NAME_KEY).await.ok().flatten()?;
    let owner = session.get::<String>(OWNER_KEY).await.ok().flatten()?;
    match http.app.names.hold(&name, &owner, &http.server).await {
        Ok(held) => held.then_some(name),
        Err(e) => {
            tracing::warn!(error = %e, "name check failed");
            None
        }
    }
}

/// The session's CSRF token, made on first use.
async fn session_token(session: &Session) -> Result<String, tower_sessions::session::Error> {
    if let Some(t) = session.get::<String>(CSRF_KEY).await? {
        return Ok(t);
    }
    let t = random_token();
    session.insert(CSRF_KEY, &t).await?;
    Ok(t)
}

fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `sent` is this session's CSRF token.
async fn csrf_ok(session: &Session, sent: &str) -> bool {
    match session.get::<String>(CSRF_KEY).await {
        Ok(Some(t)) => !sent.is_empty() && constant_time_eq(t.as_bytes(), sent.as_bytes()),
        _ => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A login error shown once on the next page.
#[derive(Serialize, Deserialize, Default)]
struct Flash {
    error: String,
    name: String,
}

async fn index(State(http): State<Http>, session: Session) -> Response {
    let Ok(token) = session_token(&session).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let name = signed_in_name(&http, &session).await.unwrap_or_default();
    let flash: Flash = session
        .remove(FLASH_KEY)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let page = INDEX_HTML
        .replace("{{CSRF_TOKEN}}", &token)
        .replace("{{NAME}}", &html_escape(&name))
        .replace("{{LOGIN_ERROR}}", &html_escape(&flash.error))
        .replace("{{WANTED_NAME}}", &html_escape(&flash.name))
        .replace("{{MAX_NAME}}", &MAX_NAME.to_string())
        .replace("{{MAX_TEXT}}", &MAX_TEXT.to_string());
    no_store(Html(page).into_response())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionInfo {
    csrf_token: String,
    name: String,
}

/// The session's CSRF token and name, for the page to recover after its session was lost (a
/// server restart). Other origins cannot read it (no CORS), like the page itself.
async fn session_info(State(http): State<Http>, session: Session) -> Response {
    let Ok(csrf_token) = session_token(&session).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let name = signed_in_name(&http, &session).await.unwrap_or_default();
    no_store(axum::Json(SessionInfo { csrf_token, name }).into_response())
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(rename = "csrf-token", default)]
    csrf_token: String,
    /// Set by the page when it signs in again by itself (its session was lost): refused once the
    /// user logged out, so that a tab reconnecting later does not undo the logout.
    #[serde(default)]
    rejoin: bool,
}

#[derive(Serialize)]
struct LoginAnswer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Whether the client asked for JSON (the page's `fetch`) rather than a page.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

const BAD_TOKEN: &str = "This page's session has expired (the server restarted or you logged out \
                         in another tab). Reload the page and try again.";

/// Signs in. The page posts with `Accept: application/json` and gets `{}` or `{"error": ".."}`;
/// a plain form post (no JavaScript) is redirected to `/`, with the error shown there. A wrong
/// CSRF token gets [`bad_token`].
async fn login(
    State(http): State<Http>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let json = wants_json(&headers);
    let name = form.name.trim();
    if !csrf_ok(&session, &form.csrf_token).await {
        return bad_token(json);
    }
    if form.rejoin && session.get::<bool>(SIGNED_OUT_KEY).await.ok().flatten() == Some(true) {
        let error = "You logged out in another tab. Join again to chat.".to_owned();
        return refuse(json, &session, StatusCode::CONFLICT, error, name).await;
    }
    if let Err(error) = check_name(name) {
        return refuse(json, &session, StatusCode::BAD_REQUEST, error, name).await;
    }
    let old_name = session.get::<String>(NAME_KEY).await.ok().flatten();
    let owner = match session.get::<String>(OWNER_KEY).await {
        Ok(Some(o)) => o,
        _ => random_token(),
    };
    if let Err(error) = http.app.names.claim(name, &owner, &http.server).await {
        return refuse(json, &session, StatusCode::CONFLICT, error, name).await;
    }
    if let Some(old) = old_name.filter(|old| old.to_lowercase() != name.to_lowercase()) {
        // This session's other tabs were signed in under the old name: let them go.
        http.app.names.release(&old, &owner).await;
        http.server.close_uid(&Uid::from(old));
    }
    // A new session id on login (no session fixation); the uid is fixed per connection, so the
    // page reloads and reconnects with it.
    if session.cycle_id().await.is_err()
        || session.remove_value(SIGNED_OUT_KEY).await.is_err()
        || session.insert(NAME_KEY, name).await.is_err()
        || session.insert(OWNER_KEY, &owner).await.is_err()
    {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if json {
        return axum::Json(LoginAnswer { error: None }).into_response();
    }
    Redirect::to("/").into_response()
}

/// A name is 1 to [`MAX_NAME`] printable characters.
fn check_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || name.chars().any(char::is_control) || name == "sente/nil-uid" {
        return Err(format!("A name is 1 to {MAX_NAME} printable characters."));
    }
    if n > MAX_NAME {
        return Err(format!(
            "A name is at most {MAX_NAME} characters; this one has {n}."
        ));
    }
    Ok(())
}

/// `403` for a wrong CSRF token on `/login` or `/logout`: JSON for `fetch`, else a short page that
/// says what happened (the session is left as it is).
fn bad_token(json: bool) -> Response {
    if json {
        let body = LoginAnswer {
            error: Some(BAD_TOKEN),
        };
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>sente-rs chat</title>\
         <link rel=stylesheet href=/style.css><main class=login><div class=\"card login-card\">\
         <p class=error>{BAD_TOKEN}</p><a href=/>Back to the chat</a></div></main>"
    );
    (StatusCode::FORBIDDEN, Html(page)).into_response()
}

/// A refused login: JSON for `fetch`, else back to the login page with the error shown there.
async fn refuse(
    json: bool,
    session: &Session,
    status: StatusCode,
    error: String,
    name: &str,
) -> Response {
    if json {
        let body = LoginAnswer {
            error: Some(&error),
        };
        return (status, axum::Json(body)).into_response();
    }
    let flash = Flash {
        error,
        name: name.to_owned(),
    };
    if session.insert(FLASH_KEY, flash).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    Redirect::to("/").into_response()
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(rename = "csrf-token", default)]
    csrf_token: String,
}

/// Signs out: frees the name, tells every tab of the user and closes their connections (they
/// would otherwise stay identified until they reconnect), and empties the session, marked signed
/// out so that no tab of it signs in again by itself (see `rejoin` in [`LoginForm`]).
async fn logout(
    State(http): State<Http>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf_token).await {
        return bad_token(wants_json(&headers));
    }
    let name = session.get::<String>(NAME_KEY).await.ok().flatten();
    let owner = session.get::<String>(OWNER_KEY).await.ok().flatten();
    if let (Some(name), Some(owner)) = (name, owner)
        && http
            .app
            .names
            .hold(&name, &owner, &http.server)
            .await
            .unwrap_or(false)
    {
        let uid = Uid::from(name.as_str());
        if let Ok(id) = EventId::new("chat/signed-out") {
            let _ = http.server.send_flush(&uid, Event::new(id, Value::Nil));
        }
        http.server.close_uid(&uid);
        http.app.names.release(&name, &owner).await;
    }
    session.clear().await;
    if session.cycle_id().await.is_err() || session.insert(SIGNED_OUT_KEY, true).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    Redirect::to("/").into_response()
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

/// A room message (`chat/msg`, and an item of `chat/history`). `id` is made by the server: the
/// page shows each message once however often it gets it (live, and in the history).
#[derive(Serialize, Deserialize)]
struct ChatMsg {
    id: String,
    from: String,
    text: String,
    at: u64,
}

/// The answer to `chat/history`: `{:messages [..]}`, oldest first.
#[derive(Serialize)]
struct HistoryAnswer {
    messages: Vec<ChatMsg>,
}

/// `id` is made by the sending page: it finds its message again in the copy, and in the
/// recipient's `chat/delivered`.
#[derive(Deserialize)]
struct PrivateIn {
    to: String,
    text: String,
    #[serde(default)]
    id: String,
}

#[derive(Serialize)]
struct PrivateOut<'a> {
    from: &'a str,
    to: &'a str,
    text: &'a str,
    at: u64,
    id: &'a str,
}

/// `chat/delivered {:from "sender" :id ".."}`: a tab of the recipient got private message `id`.
#[derive(Deserialize, Serialize)]
struct Delivered {
    #[serde(default)]
    from: String,
    id: String,
}

/// Longest message id accepted.
const MAX_ID: usize = 64;

#[derive(Serialize)]
struct Node<'a> {
    node: &'a str,
}

#[derive(Serialize)]
struct Users {
    users: Vec<String>,
}

/// The answer to `chat/say` and `chat/private`: `{:ok true}` or `{:error "why"}`, shown by the
/// page.
#[derive(Serialize)]
struct Answer {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Replies with `result` (if the client asked for a reply).
fn answer(msg: &mut EventMsg, result: Result<(), BoxError>) {
    let answer = match result {
        Ok(()) => Answer {
            ok: true,
            error: None,
        },
        Err(e) => Answer {
            ok: false,
            error: Some(e.to_string()),
        },
    };
    match sente_proto::edn::to_value(&answer) {
        Ok(v) => {
            msg.reply(v);
        }
        Err(e) => tracing::warn!(error = %e, "answer not encodable"),
    }
}

fn event_router(app: Arc<App>) -> EventRouter<Arc<App>> {
    EventRouter::with_state(app)
        .on("chat/say", |mut msg: EventMsg, app: Arc<App>| async move {
            let result = say(&msg, &app).await;
            answer(&mut msg, result);
        })
        .on(
            "chat/private",
            |mut msg: EventMsg, app: Arc<App>| async move {
                let result = whisper(&msg, &app).await;
                answer(&mut msg, result);
            },
        )
        .on(
            "chat/delivered",
            |msg: EventMsg| async move { delivered(&msg) },
        )
        .on(
            "chat/history",
            |mut msg: EventMsg, app: Arc<App>| async move {
                let answer = match app.history.recent().await {
                    Ok(messages) => sente_proto::edn::to_value(&HistoryAnswer { messages }),
                    Err(e) => sente_proto::edn::to_value(&Answer {
                        ok: false,
                        error: Some(unavailable(e).to_string()),
                    }),
                }?;
                msg.reply(answer);
                Ok::<(), BoxError>(())
            },
        )
        .on("chat/who", |mut msg: EventMsg| async move {
            let users = sente_proto::edn::to_value(&Users {
                users: user_names(msg.server()),
            })?;
            msg.reply(users);
            Ok::<(), BoxError>(())
        })
        // Which node holds this connection (WebSocket) or got this POST (Ajax).
        .on("demo/node", |mut msg: EventMsg, app: Arc<App>| async move {
            let node = sente_proto::edn::to_value(&Node { node: &app.node })?;
            msg.reply(node);
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

/// `chat/say {:text ".."}`: a message to the room.
async fn say(msg: &EventMsg, app: &App) -> Result<(), BoxError> {
    let from = signed_in(msg)?;
    app.limiter.check(&from).await?;
    let Say { text } = msg.data().map_err(|_| "expected {:text \"..\"}")?;
    let text = checked_text(&text)?;
    let chat = ChatMsg {
        id: random_token(),
        from,
        text: text.to_owned(),
        at: now_ms(),
    };
    // Kept first: a message that is sent is also in the history.
    app.history.push(&chat).await.map_err(unavailable)?;
    broadcast(msg.server(), &event("chat/msg", &chat)?);
    Ok(())
}

/// `chat/private {:to "name" :text ".."}`: a message to every tab of one user (and a copy to
/// the sender's tabs).
async fn whisper(msg: &EventMsg, app: &App) -> Result<(), BoxError> {
    let from = signed_in(msg)?;
    app.limiter.check(&from).await?;
    let PrivateIn { to, text, id } = msg
        .data()
        .map_err(|_| "expected {:to \"name\" :text \"..\" :id \"..\"}")?;
    let text = checked_text(&text)?;
    if id.len() > MAX_ID {
        return Err("message id too long".into());
    }
    let to_uid = Uid::from(to.as_str());
    if !msg.server().connected_uids().borrow().any.contains(&to_uid) {
        return Err(format!("{to} is not online: the message was not sent").into());
    }
    let out = PrivateOut {
        from: &from,
        to: &to,
        text,
        at: now_ms(),
        id: &id,
    };
    let ev = event("chat/private", &out)?;
    msg.server().send(&to_uid, ev.clone())?;
    if to != from {
        msg.server().send(&Uid::from(from.as_str()), ev)?;
    }
    Ok(())
}

/// `chat/delivered`: tells the sender's tabs that a tab of the recipient got the message.
fn delivered(msg: &EventMsg) -> Result<(), BoxError> {
    let me = signed_in(msg)?;
    let Delivered { from, id } = msg.data()?;
    if id.len() > MAX_ID || from.is_empty() {
        return Err("bad chat/delivered".into());
    }
    let ev = event("chat/delivered", &Delivered { from: me, id })?;
    msg.server().send(&Uid::from(from.as_str()), ev)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_1_to_max_name_characters() {
        assert!(check_name("bob").is_ok());
        // Characters, not bytes: 32 two-byte letters pass.
        assert!(check_name(&"é".repeat(MAX_NAME)).is_ok());
        let err = check_name(&"x".repeat(MAX_NAME + 8)).unwrap_err();
        assert_eq!(err, "A name is at most 32 characters; this one has 40.");
        for bad in ["", "a\nb", "sente/nil-uid"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_message_is_1_to_max_text_characters() {
        assert_eq!(checked_text("  hi  ").unwrap(), "hi");
        assert!(checked_text(&"😀".repeat(MAX_TEXT)).is_ok());
        assert!(checked_text(&"a".repeat(MAX_TEXT + 1)).is_err());
        assert!(checked_text("   ").is_err());
    }

    fn msg(i: usize, text: &str) -> ChatMsg {
        ChatMsg {
            id: format!("id{i}"),
            from: "ann".to_owned(),
            text: text.to_owned(),
            at: i as u64,
        }
    }

    #[tokio::test]
    async fn the_history_keeps_the_newest_messages_within_its_bounds() {
        let shared = Arc::new(Shared::Memory(shared::Memory::default()));
        let history = History {
            shared: shared.clone(),
            max: 3,
        };
        assert!(history.recent().await.unwrap().is_empty());
        for i in 0..5 {
            history.push(&msg(i, &format!("m{i}"))).await.unwrap();
        }
        let ids: Vec<String> = history
            .recent()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["id2", "id3", "id4"], "the last 3, oldest first");

        // The byte bound: a few long messages push the oldest ones out.
        let long = "x".repeat(MAX_TEXT);
        let n = HISTORY_MAX_BYTES / MAX_TEXT + 5;
        let history = History { shared, max: n };
        for i in 0..n {
            history.push(&msg(i, &long)).await.unwrap();
        }
        let kept = history.recent().await.unwrap();
        assert!(kept.len() < n, "{} kept", kept.len());
        assert_eq!(kept.last().unwrap().id, format!("id{}", n - 1));
        let bytes: usize = kept
            .iter()
            .map(|m| serde_json::to_vec(m).unwrap().len())
            .sum();
        assert!(bytes <= HISTORY_MAX_BYTES, "{bytes} bytes");

        // None kept with `--history 0`.
        let none = History {
            shared: Arc::new(Shared::Memory(shared::Memory::default())),
            max: 0,
        };
        none.push(&msg(0, "hi")).await.unwrap();
        assert!(none.recent().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_rate_limit_allows_a_burst_then_refuses() {
        let limiter = RateLimiter(Arc::new(Shared::Memory(shared::Memory::default())));
        for i in 0..10 {
            assert!(
                limiter.check("ann").await.is_ok(),
                "message {i} of the burst"
            );
        }
        let err = limiter.check("ann").await.unwrap_err().to_string();
        assert!(err.starts_with("Slow down"), "{err}");
        // Per user: someone else is not affected.
        assert!(limiter.check("ben").await.is_ok());
        // Refilled at 5 a second.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(limiter.check("ann").await.is_ok());
        assert!(limiter.check("ann").await.is_err());
    }
}
