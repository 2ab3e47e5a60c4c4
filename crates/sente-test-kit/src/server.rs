//! The test server: the `sente` crate's [`Server`] with a small demo app, served on
//! `127.0.0.1:0` by one of the [`Adapter`]s (axum by default) behind a [`Proxy`].

use crate::proxy::Proxy;
use sente::{AllowedOrigins, ChskService, CsrfToken, EventMsg, Router, Server, ServerLimits};
use sente_proto::{Event, EventId, Map, Uid, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A server adapter the scenarios run against: the same `sente` server and demo app, served by
/// another HTTP framework.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adapter {
    /// The `sente` crate's tower service mounted in axum (`server.router("/chsk")`).
    Axum,
    /// The tower service on a bare hyper 1 connection (`service_fn`, `with_upgrades`).
    Hyper,
    /// actix-web 4 through the `sente-actix` crate.
    Actix,
    /// poem 3 through an endpoint over `ChskService::call_with_upgrade` (as in
    /// `examples/poem-echo`).
    Poem,
}

impl Adapter {
    /// Every adapter.
    pub const ALL: [Adapter; 4] = [Adapter::Axum, Adapter::Hyper, Adapter::Actix, Adapter::Poem];
}

impl std::fmt::Display for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Adapter::Axum => "axum",
            Adapter::Hyper => "hyper",
            Adapter::Actix => "actix",
            Adapter::Poem => "poem",
        })
    }
}

/// The CSRF token the test server expects unless a scenario says otherwise.
pub const CSRF_TOKEN: &str = "tok-123";

/// Settings of one test server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Expected CSRF token; `None` skips the check.
    pub csrf_token: Option<String>,
    /// Allowed origins (default: any).
    pub allowed_origins: AllowedOrigins,
    /// Largest message in bytes (default 1 MiB).
    pub max_message_bytes: usize,
    /// Answer WebSocket upgrades with 403 (through the proxy).
    pub refuse_ws_upgrades: bool,
    /// WebSocket grace period before `uidport-close` (ms).
    pub ws_grace_ms: u64,
    /// Ajax grace period before `uidport-close` (ms).
    pub ajax_grace_ms: u64,
    /// Ajax long-poll timeout (ms).
    pub lp_timeout_ms: u64,
    /// Server WebSocket keepalive (ms; `None`: the server's default, 25 s).
    pub ws_kalive_ms: Option<u64>,
    /// Answer CORS preflights and allow any origin to read responses (for browser tests whose
    /// page is served from another origin). Axum adapter only.
    pub cors: bool,
    /// Bounds of the resume extension's replay logs (default: the server's).
    pub replay: sente::ReplayConfig,
    /// Offloading of large pushes (`None`: the server's default).
    pub large: Option<sente::large::LargeConfig>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            csrf_token: Some(CSRF_TOKEN.to_owned()),
            allowed_origins: AllowedOrigins::All,
            max_message_bytes: 1 << 20,
            refuse_ws_upgrades: false,
            ws_grace_ms: 300,
            ajax_grace_ms: 600,
            lp_timeout_ms: 5_000,
            ws_kalive_ms: None,
            cors: false,
            replay: sente::ReplayConfig::default(),
            large: None,
        }
    }
}

/// What the demo app saw: uidport events and bad events, in order.
#[derive(Clone, Debug, Default)]
pub struct ServerLog(Arc<Mutex<Vec<Event>>>);

impl ServerLog {
    fn push(&self, ev: Event) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ev);
    }

    /// Everything logged so far.
    pub fn events(&self) -> Vec<Event> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether `[id uid]` was logged.
    pub fn has(&self, id: &str, uid: &Uid) -> bool {
        self.events()
            .iter()
            .any(|e| e.id().as_str() == id && e.data() == &uid.to_value())
    }
}

struct Running {
    server: Server,
    addr: SocketAddr,
    serve: Serving,
}

/// How to stop the HTTP server of an adapter.
enum Serving {
    /// A task serving the listener (axum, hyper, poem).
    Task(JoinHandle<()>),
    /// actix-web's server (its own accept and worker threads); it stops on command.
    Actix(actix_web::dev::ServerHandle),
}

impl Drop for Running {
    fn drop(&mut self) {
        match &self.serve {
            Serving::Task(t) => t.abort(),
            // The command is sent at once; the server task then winds down by itself.
            Serving::Actix(h) => drop(h.stop(false)),
        }
    }
}

/// A running test server. The demo app handles:
/// - `demo/echo`: replies with the data;
/// - `demo/no-reply`: never replies (holds the reply for a minute);
/// - `demo/fail`: its handler returns an error before replying (the client gets `:chsk/error`);
/// - `demo/slow` (data `ms`, at most 60 000): replies `:slow` after `ms`;
/// - `demo/push-me` (data `n`): pushes `[:demo/pushed {:i i}]` for `i` in `0..n` to the caller's
///   uid, then replies `:ok`;
/// - `demo/close-me`: closes every connection of the caller's uid (`[:chsk/close]`);
/// - `demo/uidport-log`: replies with the logged `[:chsk/uidport-open|close uid]` events;
/// - `chsk/bad-event`: logs it, pushes `[:demo/saw-bad-event payload]` to the uid and replies
///   `{:bad-event payload}`;
/// - anything else asking for a reply: `{:unhandled <id>}`.
///
/// The uid is the `uid` query parameter, remembered per client id for Ajax POSTs (anonymous
/// without it); the handshake data is
/// `{:hello "world"}`.
pub struct TestServer {
    adapter: Adapter,
    opts: ServerOptions,
    proxy: Proxy,
    running: Mutex<Option<Running>>,
    log: ServerLog,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("adapter", &self.adapter)
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

fn kw_id(text: &str) -> EventId {
    EventId::new(text).expect("valid event id")
}

/// The uid of a request: its `uid` query parameter, remembered per client id so that Ajax
/// POSTs (which carry no user parameters, as in Sente >= 1.21) get the same uid. This stands in
/// for a session cookie.
fn user_id(req: &sente::ChskRequest, sessions: &Mutex<HashMap<String, Uid>>) -> Uid {
    let client = req.client_id().map(|c| c.as_str().to_owned());
    let mut sessions = sessions.lock().unwrap_or_else(PoisonError::into_inner);
    match (req.param("uid"), client) {
        (Some(uid), Some(client)) => {
            if sessions.len() > 10_000 {
                sessions.clear();
            }
            sessions.insert(client, Uid::from(uid));
            Uid::from(uid)
        }
        (Some(uid), None) => Uid::from(uid),
        (None, Some(client)) => sessions.get(&client).cloned().unwrap_or(Uid::Nil),
        (None, None) => Uid::Nil,
    }
}

async fn start(
    adapter: Adapter,
    opts: &ServerOptions,
    log: &ServerLog,
) -> std::io::Result<Running> {
    let sessions = Arc::new(Mutex::new(HashMap::new()));
    let mut builder = Server::builder()
        .user_id_fn(move |req| user_id(req, &sessions))
        .handshake_data_fn(|_| {
            let mut m = Map::new();
            m.insert(Value::kw("hello"), Value::from("world"));
            Value::Map(m)
        })
        .allowed_origins(opts.allowed_origins.clone())
        .ms_allow_reconnect_before_close_ws(opts.ws_grace_ms)
        .ms_allow_reconnect_before_close_ajax(opts.ajax_grace_ms)
        .lp_timeout_ms(opts.lp_timeout_ms)
        .replay(opts.replay.clone())
        .limits(
            ServerLimits::default()
                .message(sente_proto::Limits::default().max_message_bytes(opts.max_message_bytes)),
        );
    if let Some(ms) = opts.ws_kalive_ms {
        builder = builder.ws_kalive_ms(Some(ms));
    }
    if let Some(large) = &opts.large {
        builder = builder.large(large.clone());
    }
    builder = match &opts.csrf_token {
        Some(t) => {
            let t = t.clone();
            builder.csrf_token_fn(move |_| CsrfToken::Token(t.clone()))
        }
        None => builder.disable_csrf_check().insecure_allow_unprotected(),
    };
    let server = builder
        .handler(app(log))
        .build()
        .map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let serve = match adapter {
        Adapter::Axum => {
            let mut svc = server.router("/chsk");
            if opts.cors {
                svc = svc.layer(axum::middleware::from_fn(cors));
            }
            Serving::Task(tokio::spawn(async move {
                let _ = axum::serve(listener, svc).await;
            }))
        }
        Adapter::Hyper => Serving::Task(tokio::spawn(serve_hyper(
            listener,
            server.service_at("/chsk"),
        ))),
        Adapter::Actix => {
            let s = server.clone();
            let http = actix_web::HttpServer::new(move || {
                actix_web::App::new().service(sente_actix::scope(&s, "/chsk"))
            })
            .workers(1)
            .disable_signals()
            .listen(listener.into_std()?)?
            .run();
            let handle = http.handle();
            tokio::spawn(http);
            Serving::Actix(handle)
        }
        Adapter::Poem => {
            let chsk = PoemChsk(server.service_at("/chsk"));
            let app = poem::Route::new()
                .at("/chsk", chsk.clone())
                .at("/chsk/client.js", chsk);
            let acceptor = poem::listener::TcpAcceptor::from_tokio(listener)?;
            Serving::Task(tokio::spawn(async move {
                let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
            }))
        }
    };
    Ok(Running {
        server,
        addr,
        serve,
    })
}

/// hyper 1 with the tower service: one task per connection, upgrades on.
async fn serve_hyper(listener: tokio::net::TcpListener, svc: ChskService) {
    use tower_service::Service;
    while let Ok((tcp, _)) = listener.accept().await {
        let svc = svc.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req| svc.clone().call(req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), handler)
                .with_upgrades()
                .await;
        });
    }
}

/// poem: sente's service through `call_with_upgrade`, the WebSocket over poem's upgrade (its
/// tower compat layer keeps hyper's upgrade away from the service).
#[derive(Clone)]
struct PoemChsk(ChskService);

impl poem::Endpoint for PoemChsk {
    type Output = poem::Response;

    async fn call(&self, req: poem::Request) -> poem::Result<poem::Response> {
        let upgrade = req.take_upgrade().ok();
        let handled = self.0.call_with_upgrade(http::Request::from(req)).await;
        if let (Some(ws), Some(upgrade)) = (handled.websocket, upgrade) {
            tokio::spawn(async move {
                if let Ok(io) = upgrade.await {
                    ws.serve(io).await;
                }
            });
        }
        let (parts, body) = handled.response.into_parts();
        let parts = poem::ResponseParts {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            extensions: parts.extensions,
        };
        Ok(poem::Response::from_parts(
            parts,
            sente::adapter::body_bytes(body).into(),
        ))
    }
}

/// Permissive CORS for browser tests (an axum middleware, `axum::middleware::from_fn(cors)`):
/// preflights are answered, every response may be read.
pub async fn cors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, Method, StatusCode, header};
    let origin = req.headers().get(header::ORIGIN).cloned();
    let requested = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = axum::response::Response::new(axum::body::Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        if let Some(req_headers) = requested {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, req_headers);
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let allow = origin.unwrap_or_else(|| HeaderValue::from_static("*"));
    resp.headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

fn app(log: &ServerLog) -> Router<ServerLog> {
    Router::with_state(log.clone())
        .on("demo/echo", |mut msg: EventMsg| async move {
            let data = msg.data_value().clone();
            msg.reply(data);
        })
        .on("demo/no-reply", |msg: EventMsg| async move {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(msg);
            });
        })
        // Fails before replying: the client is answered `:chsk/error` at once.
        .on("demo/fail", |msg: EventMsg| async move {
            let _held = msg;
            Err::<(), sente::BoxError>("demo/fail: the handler failed on purpose".into())
        })
        // Replies `:slow` after data ms (at most 60 s), holding its client's next events only
        // for the per-client budget (1 s).
        .on("demo/slow", |mut msg: EventMsg| async move {
            let ms = msg.data_value().as_i64().unwrap_or(0).clamp(0, 60_000);
            tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())).await;
            msg.reply(Value::kw("slow"));
        })
        // Data `[key ms]`: logs `[:demo/ran key]`, waits ms (at most 10 s), then replies
        // `{:ran n}`, n the times `key` ran so far: a request retried with the `idem`
        // extension runs once.
        .on(
            "demo/once",
            |mut msg: EventMsg, log: ServerLog| async move {
                let (key, ms) = match msg.data_value().as_seq() {
                    Some([k, Value::Int(ms)]) => (k.clone(), *ms),
                    _ => (msg.data_value().clone(), 0),
                };
                log.push(Event::new(kw_id("demo/ran"), key.clone()));
                tokio::time::sleep(Duration::from_millis(ms.clamp(0, 10_000).unsigned_abs())).await;
                let n = log
                    .events()
                    .iter()
                    .filter(|e| e.id().as_str() == "demo/ran" && e.data() == &key)
                    .count();
                let mut m = Map::new();
                m.insert(
                    Value::kw("ran"),
                    Value::Int(i64::try_from(n).unwrap_or(i64::MAX)),
                );
                msg.reply(Value::Map(m));
            },
        )
        .on("demo/push-me", |mut msg: EventMsg| async move {
            let n = msg.data_value().as_i64().unwrap_or(1);
            for i in 0..n {
                let mut m = Map::new();
                m.insert(Value::kw("i"), Value::Int(i));
                let ev = Event::new(kw_id("demo/pushed"), Value::Map(m));
                let _ = msg.server().send(&msg.uid, ev);
            }
            msg.reply(Value::kw("ok"));
        })
        // Data: a vector of events; pushes them to the caller's uid as one batch, then replies.
        .on("demo/push", |mut msg: EventMsg| async move {
            let events = msg
                .data_value()
                .as_seq()
                .map(<[Value]>::to_vec)
                .unwrap_or_default();
            let mut pushed = 0;
            for ev in events.into_iter().filter_map(|v| Event::from_value(v).ok()) {
                if msg.server().send(&msg.uid, ev).is_ok() {
                    pushed += 1;
                }
            }
            msg.server().flush(&msg.uid);
            msg.reply(Value::Int(pushed));
        })
        .on("demo/close-me", |msg: EventMsg| async move {
            msg.server().close_uid(&msg.uid);
        })
        .on(
            "demo/uidport-log",
            |mut msg: EventMsg, log: ServerLog| async move {
                let evs = log
                    .events()
                    .into_iter()
                    .filter(|e| e.id().as_str().starts_with("chsk/uidport"))
                    .map(Event::into_value)
                    .collect::<Vec<_>>();
                msg.reply(Value::Vector(evs));
            },
        )
        .on(
            "chsk/uidport-open",
            |msg: EventMsg, log: ServerLog| async move {
                log.push(msg.event.clone());
            },
        )
        .on(
            "chsk/uidport-close",
            |msg: EventMsg, log: ServerLog| async move {
                log.push(msg.event.clone());
            },
        )
        .on("chsk/bad-event", |mut msg: EventMsg| async move {
            let payload = msg.data_value().clone();
            let ev = Event::new(kw_id("demo/saw-bad-event"), payload.clone());
            let _ = msg.server().send_flush(&msg.uid, ev);
            let mut m = Map::new();
            m.insert(Value::kw("bad-event"), payload);
            msg.reply(Value::Map(m));
        })
        .fallback(|mut msg: EventMsg| async move {
            if msg.reply.is_some() {
                let mut m = Map::new();
                m.insert(
                    Value::kw("unhandled"),
                    Value::Keyword(msg.id().keyword().clone()),
                );
                msg.reply(Value::Map(m));
            }
        })
}

impl TestServer {
    /// Starts a server with `opts`, served by axum.
    pub async fn spawn(opts: ServerOptions) -> std::io::Result<TestServer> {
        Self::spawn_on(Adapter::Axum, opts).await
    }

    /// Starts a server with `opts`, served by `adapter`.
    pub async fn spawn_on(adapter: Adapter, opts: ServerOptions) -> std::io::Result<TestServer> {
        let log = ServerLog::default();
        let running = start(adapter, &opts, &log).await?;
        let proxy = Proxy::start(running.addr).await?;
        proxy.refuse_ws_upgrades(opts.refuse_ws_upgrades);
        Ok(TestServer {
            adapter,
            opts,
            proxy,
            running: Mutex::new(Some(running)),
            log,
        })
    }

    /// The chsk URL clients use, e.g. `http://127.0.0.1:41234/chsk`.
    pub fn url(&self) -> String {
        format!("http://{}/chsk", self.proxy.addr())
    }

    /// The adapter serving it.
    pub fn adapter(&self) -> Adapter {
        self.adapter
    }

    /// The proxy in front of the server.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The demo app's log.
    pub fn log(&self) -> &ServerLog {
        &self.log
    }

    /// The address the server listens on, behind the proxy (for [`Proxy::set_target`] after a
    /// [`Proxy::cut`]).
    pub fn upstream(&self) -> Option<SocketAddr> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|r| r.addr)
    }

    /// The running `sente` server.
    pub fn server(&self) -> Option<Server> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|r| r.server.clone())
    }

    /// Stops the server (cutting every connection) and starts a fresh one with the same options
    /// and no memory of its clients, behind the same URL.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.proxy.cut();
        let old = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(old);
        let running = start(self.adapter, &self.opts, &self.log).await?;
        self.proxy.set_target(running.addr);
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some(running);
        Ok(())
    }
}
