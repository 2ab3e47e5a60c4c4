//! One node of a test cluster: a `sente` server over a Redis or NATS backplane, as its own
//! process (so a test can `SIGKILL` it), with a control API; or, with `--proxy`, a round-robin
//! TCP proxy in front of several nodes ([`sente_test_kit::Proxy::round_robin`]). Prints one
//! JSON line once it listens:
//!
//! ```text
//! $ sente-cluster-node --redis redis://127.0.0.1:6379/ --cluster c1 --name n1
//! {"name":"n1","port":41234,"url":"http://127.0.0.1:41234/chsk","control":"http://127.0.0.1:41234/control"}
//! $ sente-cluster-node --proxy 127.0.0.1:41234,127.0.0.1:41236,127.0.0.1:41238
//! {"name":"proxy","port":41240,"url":"http://127.0.0.1:41240/chsk","control":""}
//! ```
//!
//! Options (node): `--addr` (default `127.0.0.1:0`), `--redis URL` or `--nats URL` (one is
//! required), `--cluster NAME` (default `sente-test`), `--name NAME` (default the port; the
//! handshake data is this name, so a client knows which node it reached), `--heartbeat-ms`
//! (200) and `--expiry-ms` (1000) of the presence protocol, `--ws-grace-ms` (300) and
//! `--ajax-grace-ms` (1000) before `uidport-close`, `--lp-timeout-ms` (5000) of the Ajax long
//! poll, `--ack-timeout-ms` (5000) of a push's acknowledgement, `--max-mailbox-events`
//! (1000) of the Ajax mailboxes, `--resume on|off` (on) the backplane's cross-node resume
//! (its global push numbers), `--cors` (answer CORS preflights and let any origin read the
//! responses: for a browser page served from another origin), `--drain-timeout-ms` (5000) and
//! `--shutdown-stagger-ms` (1000) of the graceful shutdown.
//!
//! Events: `[:t/echo {:ms M :n N}]` with a reply is answered `{:n N :node NAME}` after `M` ms
//! (a request with a reply in flight for as long as the test wants).
//!
//! `SIGTERM` (or `SIGINT`) closes the listener and idle keep-alive connections (axum's graceful
//! shutdown), drains the node ([`sente::ServerHandle::shutdown`]: new handshakes and polls
//! refused, in-flight replies finished, clients closed staggered), waits for the last HTTP
//! responses to be written, writes
//! `DRAINED in N ms` to stderr and exits 0.
//!
//! Test auth, permissive: the uid is the `uid` query parameter, else the `x-uid` header (which
//! the native and JS clients send on every request, POSTs included), else nil; the CSRF token
//! is `tok-123`; any origin is allowed.
//!
//! Control API (under `/control`, same port):
//! - `POST /control/push?uid=U&n=N[&wait=0]`: `send(U, [:t/n N])`; answers `200 acked` once the
//!   backplane acknowledged the push's mailbox append (the engine stored it), `503` when it did
//!   not within the ack timeout; with `wait=0` at once (`200 sent`). Pushes of one node are
//!   sent one at a time, in request order, and only control pushes make appends here, so the
//!   first append counted after the send is this push's (an unacknowledged push with `wait=0`
//!   before it would blur that: tests use `wait=0` only where they count nothing).
//! - `GET /control/health`: the backplane's health as JSON (`connected`, `outages`,
//!   `last_error`, `peers`, `appends`, `published`, `dropped`, `expired_nodes`).
//! - `GET /control/uids`: the cluster's connected uids as JSON (`ws`, `ajax`, `any`, sorted).
//! - `GET /control/polls`: the Ajax long polls this node holds now, by uid (JSON object of
//!   counts), so a test can kill the node holding a given client's poll.
//!
//! Logs (`tracing`, filter `RUST_LOG`, default `warn,sente_backplane_kit=info,sente::registry=info`:
//! the drain phases) go to stderr.
//! The process exits when its stdin closes.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use sente::{AllowedOrigins, ConnectedUids, CsrfToken, Server};
use sente_proto::{Event, EventId, Uid, Value};
use sente_redis::Health;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

const USAGE: &str = "usage: sente-cluster-node (--redis URL | --nats URL) [--cluster NAME] \
[--name NAME] [--addr HOST:PORT] [--heartbeat-ms N] [--expiry-ms N] [--ws-grace-ms N] \
[--ajax-grace-ms N] [--lp-timeout-ms N] [--ack-timeout-ms N] [--max-mailbox-events N] \
[--resume on|off] [--cors] [--drain-timeout-ms N] [--shutdown-stagger-ms N]\n   \
or: sente-cluster-node --proxy HOST:PORT,HOST:PORT,...";

/// The command line.
struct Args {
    addr: String,
    redis: Option<String>,
    nats: Option<String>,
    proxy: Option<Vec<SocketAddr>>,
    cluster: String,
    name: Option<String>,
    heartbeat_ms: u64,
    expiry_ms: u64,
    ws_grace_ms: u64,
    ajax_grace_ms: u64,
    lp_timeout_ms: u64,
    ack_timeout_ms: u64,
    max_mailbox_events: usize,
    resume: bool,
    cors: bool,
    drain_timeout_ms: u64,
    shutdown_stagger_ms: u64,
}

fn fail(msg: &str) -> ! {
    eprintln!("{msg}\n{USAGE}");
    std::process::exit(2)
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| fail(&format!("{flag}: not a number: {value:?}")))
}

fn parse_args() -> Args {
    let mut args = Args {
        addr: "127.0.0.1:0".to_owned(),
        redis: None,
        nats: None,
        proxy: None,
        cluster: "sente-test".to_owned(),
        name: None,
        heartbeat_ms: 200,
        expiry_ms: 1000,
        ws_grace_ms: 300,
        ajax_grace_ms: 1000,
        lp_timeout_ms: 5000,
        ack_timeout_ms: 5000,
        max_mailbox_events: 1000,
        resume: true,
        cors: false,
        drain_timeout_ms: 5000,
        shutdown_stagger_ms: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--cors" {
            args.cors = true;
            continue;
        }
        let value = it
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--addr" => args.addr = value,
            "--redis" => args.redis = Some(value),
            "--nats" => args.nats = Some(value),
            "--cluster" => args.cluster = value,
            "--name" => args.name = Some(value),
            "--heartbeat-ms" => args.heartbeat_ms = number(&flag, &value),
            "--expiry-ms" => args.expiry_ms = number(&flag, &value),
            "--ws-grace-ms" => args.ws_grace_ms = number(&flag, &value),
            "--ajax-grace-ms" => args.ajax_grace_ms = number(&flag, &value),
            "--lp-timeout-ms" => args.lp_timeout_ms = number(&flag, &value),
            "--ack-timeout-ms" => args.ack_timeout_ms = number(&flag, &value),
            "--max-mailbox-events" => args.max_mailbox_events = number(&flag, &value),
            "--drain-timeout-ms" => args.drain_timeout_ms = number(&flag, &value),
            "--shutdown-stagger-ms" => args.shutdown_stagger_ms = number(&flag, &value),
            "--resume" => args.resume = value != "off",
            "--proxy" => {
                let addrs = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse()
                            .unwrap_or_else(|_| fail(&format!("--proxy: bad address {s:?}")))
                    })
                    .collect::<Vec<SocketAddr>>();
                if addrs.is_empty() {
                    fail("--proxy needs at least one upstream");
                }
                args.proxy = Some(addrs);
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    args
}

/// The backplane of this node, whichever engine.
#[derive(Clone)]
enum Engine {
    Redis(sente_redis::RedisBackplane),
    Nats(sente_nats::NatsBackplane),
}

impl Engine {
    fn health(&self) -> Health {
        match self {
            Engine::Redis(b) => b.health(),
            Engine::Nats(b) => b.health(),
        }
    }

    fn backplane(&self) -> Arc<dyn sente_proto::backplane::Backplane> {
        match self {
            Engine::Redis(b) => Arc::new(b.clone()),
            Engine::Nats(b) => Arc::new(b.clone()),
        }
    }
}

/// The Ajax long polls held by this node, by uid.
type Polls = Arc<std::sync::Mutex<HashMap<String, usize>>>;

fn lock_polls(polls: &Polls) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    polls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts a held poll until its response is ready (or the request is dropped).
struct PollCount {
    polls: Polls,
    uid: String,
}

impl Drop for PollCount {
    fn drop(&mut self) {
        let mut p = lock_polls(&self.polls);
        if let Some(n) = p.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                p.remove(&self.uid);
            }
        }
    }
}

/// Middleware on `/chsk`: a `GET` that is neither a handshake nor a WebSocket upgrade is a
/// long poll, counted while the server holds it.
async fn track_polls(
    State(polls): State<Polls>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let query = req.uri().query().unwrap_or("");
    let poll = req.method() == axum::http::Method::GET
        && !req.headers().contains_key(axum::http::header::UPGRADE)
        && !query
            .split('&')
            .any(|kv| kv.starts_with("handshake%3F=") || kv.starts_with("handshake?="));
    let uid = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("uid="))
        .map(str::to_owned)
        .or_else(|| {
            req.headers()
                .get("x-uid")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    let _count = match (poll, uid) {
        (true, Some(uid)) => {
            *lock_polls(&polls).entry(uid.clone()).or_insert(0) += 1;
            Some(PollCount { polls, uid })
        }
        _ => None,
    };
    next.run(req).await
}

/// What the control routes share.
#[derive(Clone)]
struct Node {
    server: Server,
    engine: Engine,
    /// Pushes through the control API go one at a time.
    one: Arc<tokio::sync::Mutex<()>>,
    ack_timeout: Duration,
    polls: Polls,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = parse_args();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,sente_backplane_kit=info,sente::registry=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    if let Some(upstreams) = args.proxy {
        let proxy = sente_test_kit::Proxy::round_robin(upstreams).await?;
        let port = proxy.addr().port();
        println!(
            "{{\"name\":\"proxy\",\"port\":{port},\"url\":\"http://127.0.0.1:{port}/chsk\",\"control\":\"\"}}"
        );
        wait_stdin().await;
        return Ok(());
    }
    let presence = sente_proto::backplane::cluster::ClusterConfig::default()
        .heartbeat(Duration::from_millis(args.heartbeat_ms))
        .expiry(Duration::from_millis(args.expiry_ms));
    let reconnect = (Duration::from_millis(50), Duration::from_millis(500));
    let engine = match (&args.redis, &args.nats) {
        (Some(url), None) => {
            let mailbox = sente_redis::MailboxConfig::default().max_events(args.max_mailbox_events);
            let cfg = sente_redis::RedisConfig::new(url.clone())
                .cluster(args.cluster.clone())
                .presence(presence)
                .reconnect(reconnect.0, reconnect.1)
                .mailbox(mailbox)
                .resume(args.resume);
            Engine::Redis(sente_redis::RedisBackplane::start(cfg).map_err(std::io::Error::other)?)
        }
        (None, Some(url)) => {
            let mailbox = sente_nats::MailboxConfig::default().max_events(args.max_mailbox_events);
            let cfg = sente_nats::NatsConfig::new(url.clone())
                .cluster(args.cluster.clone())
                .presence(presence)
                .reconnect(reconnect.0, reconnect.1)
                .mailbox(mailbox)
                .resume(args.resume);
            Engine::Nats(sente_nats::NatsBackplane::start(cfg).map_err(std::io::Error::other)?)
        }
        _ => fail("give exactly one of --redis and --nats"),
    };
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let port = listener.local_addr()?.port();
    let name = args.name.unwrap_or_else(|| port.to_string());
    let hs_name = name.clone();
    let server = Server::builder()
        .user_id_fn(|req| {
            req.param("uid")
                .or_else(|| req.header("x-uid"))
                .map_or(Uid::Nil, Uid::from)
        })
        .handshake_data_fn(move |_| Value::from(hs_name.as_str()))
        .csrf_token_fn(|_| CsrfToken::from(sente_test_kit::CSRF_TOKEN))
        .allowed_origins(AllowedOrigins::All)
        .ms_allow_reconnect_before_close_ws(args.ws_grace_ms)
        .ms_allow_reconnect_before_close_ajax(args.ajax_grace_ms)
        .lp_timeout_ms(args.lp_timeout_ms)
        .drain_timeout(Duration::from_millis(args.drain_timeout_ms))
        .shutdown_stagger(Duration::from_millis(args.shutdown_stagger_ms))
        .handler(echo_router(name.clone()))
        .backplane(engine.backplane())
        .build()
        .map_err(std::io::Error::other)?;
    let polls: Polls = Arc::default();
    let node = Node {
        polls: polls.clone(),
        server: server.clone(),
        engine,
        one: Arc::new(tokio::sync::Mutex::new(())),
        ack_timeout: Duration::from_millis(args.ack_timeout_ms),
    };
    let control = axum::Router::new()
        .route("/control/push", axum::routing::post(push))
        .route("/control/health", axum::routing::get(health))
        .route("/control/uids", axum::routing::get(uids))
        .route("/control/polls", axum::routing::get(held_polls))
        .with_state(node);
    let mut chsk = server
        .router::<()>("/chsk")
        .layer(axum::middleware::from_fn_with_state(polls, track_polls));
    if args.cors {
        chsk = chsk.layer(axum::middleware::from_fn(sente_test_kit::cors));
    }
    let app = chsk.merge(control);
    let (stop_accepting, stop) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await;
    });
    // Announced once the backplane has joined (see `Builder::join_wait`).
    server.serving().await;
    println!(
        "{{\"name\":{},\"port\":{port},\"url\":\"http://127.0.0.1:{port}/chsk\",\"control\":\"http://127.0.0.1:{port}/control\"}}",
        serde_json::Value::from(name)
    );
    tokio::select! {
        () = wait_stdin() => {}
        () = terminated() => {
            let t = std::time::Instant::now();
            // The listener closes (the load balancer sends new connections elsewhere) and idle
            // keep-alive connections are closed; requests in progress go on.
            let _ = stop_accepting.send(());
            server.shutdown().await;
            // The last responses are written before the process exits.
            let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
            eprintln!("DRAINED in {} ms", t.elapsed().as_millis());
            // Not a return: the runtime would wait for the blocking read of stdin.
            std::process::exit(0);
        }
    }
    Ok(())
}

/// `t/echo`: replies `{:n N :node NAME}` after `{:ms M}` milliseconds.
fn echo_router(node: String) -> sente::Router {
    sente::Router::new().on("t/echo", move |mut msg: sente::EventMsg| {
        let node = node.clone();
        async move {
            let field = |k: &str| match msg.data_value() {
                Value::Map(m) => m.get(&Value::kw(k)).and_then(Value::as_i64).unwrap_or(0),
                _ => 0,
            };
            let (ms, n) = (field("ms"), field("n"));
            tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())).await;
            let mut m = sente_proto::edn::Map::new();
            m.insert(Value::kw("n"), Value::Int(n));
            m.insert(Value::kw("node"), Value::from(node.as_str()));
            msg.reply(Value::Map(m));
        }
    })
}

/// Returns on `SIGTERM` or `SIGINT`.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Returns when stdin closes (the test that started this process is gone).
async fn wait_stdin() {
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
}

async fn push(
    State(node): State<Node>,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let (Some(uid), Some(n)) = (q.get("uid"), q.get("n").and_then(|n| n.parse::<i64>().ok()))
    else {
        return (StatusCode::BAD_REQUEST, "needs uid and n".to_owned());
    };
    let wait = q.get("wait").is_none_or(|w| w != "0");
    let Ok(id) = EventId::new("t/n") else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "event id".to_owned());
    };
    // One push at a time: the acknowledgement awaited is the next append after this send.
    let _one = node.one.lock().await;
    let before = node.engine.health().appends;
    if let Err(e) = node
        .server
        .send(&Uid::from(uid.as_str()), Event::new(id, Value::Int(n)))
    {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("send failed: {e}"));
    }
    if !wait {
        return (StatusCode::OK, "sent".to_owned());
    }
    let deadline = tokio::time::Instant::now() + node.ack_timeout;
    while node.engine.health().appends <= before {
        if tokio::time::Instant::now() >= deadline {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not acknowledged by the backplane".to_owned(),
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (StatusCode::OK, "acked".to_owned())
}

async fn health(State(node): State<Node>) -> String {
    let h = node.engine.health();
    serde_json::json!({
        "connected": h.connected,
        "outages": h.outages,
        "last_error": h.last_error.map(|(_, e)| e),
        "peers": h.peers,
        "appends": h.appends,
        "published": h.published,
        "published_bytes": h.published_bytes,
        "sequenced": h.sequenced,
        "unsequenced": h.unsequenced,
        "dropped": h.dropped,
        "expired_nodes": h.expired_nodes,
    })
    .to_string()
}

async fn uids(State(node): State<Node>) -> String {
    let c: ConnectedUids = node.server.connected_uids().borrow().clone();
    let sorted = |set: &std::collections::HashSet<Uid>| {
        let mut v: Vec<String> = set.iter().map(ToString::to_string).collect();
        v.sort();
        v
    };
    serde_json::json!({ "ws": sorted(&c.ws), "ajax": sorted(&c.ajax), "any": sorted(&c.any) })
        .to_string()
}

async fn held_polls(State(node): State<Node>) -> String {
    let p = lock_polls(&node.polls).clone();
    serde_json::to_string(&p).unwrap_or_default()
}
