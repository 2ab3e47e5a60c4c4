//! A Sente-compatible realtime server for Rust: an unmodified Sente ClojureScript client (or the
//! sente-rs Rust and JavaScript clients) talks to it over WebSocket or Ajax long-polling.
//!
//! - [`Server::builder`] takes the options of Sente's `make-channel-socket-server!` (snake case,
//!   same defaults, with secure defaults for CSRF and Origin) and the handler of every event (a
//!   [`Router`], or any [`Dispatch`]); it gives a [`Server`]. Prefer a stream of events (Sente's
//!   `ch-recv`)? [`Builder::build_with_events`] gives an [`EventStream`] of [`EventMsg`]s.
//! - One tower service serves GET (Ajax handshake and long-poll), POST (Ajax send), the WebSocket
//!   upgrade and `GET <mount>/client.js`; [`Server::router`] mounts it in axum.
//!   Other frameworks (hyper, actix-web, poem...): see [`adapter`], with a table of setups.
//! - [`serve`] runs it (or your axum app) on hyper with safe settings for a public port
//!   ([`ServeConfig`]: request-head and keep-alive timeouts, head size and connection caps).
//! - [`ServerHandle::send`] (on the server, and on every event as [`EventMsg::server`]) pushes
//!   to every client of a uid, in order, batched like Sente, through the [`backplane`] so that
//!   several nodes can share the work; [`ServerHandle::shutdown`] drains (see "Deploying" below).
//! - [`ServerHandle::send_to_client`] pushes to one client (one tab) of a uid, and
//!   [`ServerHandle::request`] asks each client of a uid and gathers their answers (a
//!   negotiated extension: see [`s2c`]).
//! - Large pushes (over 64 KiB by default) reach the sente-rs clients by a one-time HTTP fetch
//!   instead of through their socket, which stays free for small events (a negotiated
//!   extension, see [`large`]; a Sente client gets them inline).
//! - [`Router`] dispatches events to handlers by event id, WebSocket and Ajax alike.
//! - [`ServerHandle::stats`] (connections, events in and out, reply latency, drops, refusals)
//!   and [`ServerHandle::recent_rejections`]; [`admin::AdminPage`] shows them live in a page
//!   with charts (mount it behind your own authentication).
//!
//! The packer is chosen per connection by the `packer` query parameter (`edn`, `transit`,
//! `json`, `msgpack`); without it the server's default (edn) is used, as in Sente.
//!
//! ```no_run
//! use sente::{AllowedOrigins, CsrfToken, Event, EventMsg, Router, ServeConfig, Server, Value, event_id};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let router = Router::new()
//!         .on("echo/req", |mut msg: EventMsg| async move {
//!             let data = msg.data_value().clone();
//!             msg.reply(data);
//!         })
//!         .on("echo/push-me", |msg: EventMsg| async move {
//!             let ev = Event::new(event_id!("echo/pushed"), Value::from("hi"));
//!             msg.server().send(&msg.uid, ev) // every tab of this user gets it
//!         });
//!     let server = Server::builder()
//!         .csrf_token_fn(|_req| CsrfToken::Skip) // use your session's anti-forgery token
//!         .allowed_origins(AllowedOrigins::list(["http://localhost:3000"]))
//!         .handler(router)
//!         .build()?;
//!     let app = server.router("/chsk");
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     // hyper with safe settings: head and keep-alive timeouts, head size and connection caps.
//!     sente::serve(listener, app, ServeConfig::default()).await?;
//!     Ok(())
//! }
//! ```
//!
//! # Deploying: drain on `SIGTERM`
//!
//! An orchestrator (Kubernetes, systemd, `docker stop`) sends `SIGTERM` and kills the process
//! some seconds later. Wire the signal to a drain, then exit:
//!
//! ```no_run
//! # async fn run(server: sente::Server) -> std::io::Result<()> {
//! let app = server.router::<()>("/chsk");
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let handle = server.handle().clone();
//! let drain = tokio::spawn(async move {
//!     sente::shutdown_signal().await; // SIGTERM or Ctrl-C
//!     let _ = stop.send(()); // stop accepting: new connections go to the other nodes
//!     handle.shutdown().await; // in-flight replies finish, clients are let go, staggered
//! });
//! sente::serve_with_shutdown(listener, app, sente::ServeConfig::default(), async {
//!     let _ = stopped.await;
//! })
//! .await?; // every HTTP response is written
//! let _ = drain.await; // every WebSocket is closed
//! # Ok(()) }
//! ```
//!
//! [`ServerHandle::shutdown`] drains in phases (each logged at info on `sente::registry` and
//! set in the `sente_drain_phase` gauge; [`ServerHandle::is_draining`] tells a readiness probe):
//! new handshakes and polls get `503` with `Retry-After: 1`; the handlers still running send
//! their replies (at most [`Builder::drain_timeout`], default 5 s); what is buffered is
//! flushed; clients are let go over [`Builder::shutdown_stagger`] (default 1 s), WebSockets
//! closed after the replies they are owed, held Ajax polls answered empty so they poll again
//! elsewhere; then it waits for connections to end (at most [`Builder::shutdown_timeout`],
//! default 10 s, from the call). Keep the orchestrator's grace period above that timeout.
//! With axum's own server, `axum::serve(..).with_graceful_shutdown(..)` plays the part of
//! [`serve_with_shutdown`].
//!
//! With a cluster backplane (Redis, NATS) a rolling restart loses nothing for Ajax clients
//! (their mailboxes keep what arrives while they move); WebSocket clients reconnect to another
//! node, where the sente-rs clients resume: the pushes sent while they moved are replayed
//! under the cluster's numbers (cross-node resume, `sente-redis` / `sente-nats`, on by
//! default; a plain Sente client is not replayed). Measured: BENCHMARKS.md, "Drain and rolling
//! restart".
//!
//! At the start, a node of a cluster serves no new client until its backplane has joined
//! (subscribed, its place in the numbering read): a client it served before would miss the
//! pushes the other nodes make meanwhile. Until then handshakes, upgrades and polls are held
//! (a join takes milliseconds), for at most [`Builder::join_wait`] (default 10 s; past it the
//! node serves without the cluster, as during an outage). Await [`ServerHandle::serving`]
//! before announcing the node; [`ServerHandle::is_serving`] tells a readiness probe.
//!
//! # Differences from Sente (deliberate)
//!
//! - Pushes to a uid arrive in `send` order at each client, across batches and flushes, and
//!   WebSocket replies never overtake earlier pushes (Sente #446).
//! - CSRF on and Origin = same origin by default; both off needs
//!   [`Builder::insecure_allow_unprotected`]. Origin matching is exact on scheme, host and port.
//! - A request without `client-id` gets `400` (Sente: 500 on GET; a POST was silently dropped).
//!   An unknown `packer` gets `400`. A POST whose message cannot be unpacked gets `400` with the
//!   reason (Sente: 500). A WebSocket frame that cannot be unpacked reaches the app as
//!   `[:chsk/bad-package text-or-byte-length]` and the socket stays usable.
//! - Limits on every transport ([`ServerLimits`]), and bounded memory for slow clients: a
//!   WebSocket whose send queue is full is closed (1013), a stalled write times out, an Ajax
//!   POST body must arrive within 10 s and is read only after the Origin, CSRF (token in the
//!   head), `reject_fn` and `authorized_fn` checks passed; a query or form has at most 64 fields.
//! - Lean: an idle WebSocket costs about 5.4 KB of RSS on the server
//!   (`cargo test --release -p sente --test memory -- --ignored --nocapture`); a batch is packed
//!   once per packer and shared by every connection it goes to, broadcasts included.
//! - `[:chsk/close]` answers a held Ajax poll `410 Gone` (Sente leaves it hanging for 60 s).
//! - An Ajax POST whose [`Reply`] is dropped unanswered gets `[:chsk/timeout nil]` at once.
//! - A [`Router`] handler that fails (returns an error or panics) before replying answers its
//!   request `:chsk/error` at once (Sente: the client waits for its timeout); Sente clients see
//!   a callback error, ours `RequestError::Error` / a `SenteError` with code `"error"`.
//! - A handler that runs past its [`Budget`] (default 1 s) no longer holds its client's later
//!   events ([`Concurrency::PerClient`], the default; [`Concurrency::PerClientSerial`] for the
//!   strict order).
//! - Cross-origin pages listed in [`AllowedOrigins`] get CORS headers (with credentials) and
//!   preflight answers for the endpoint and `<mount>/client.js`; other origins get a `403` that
//!   says why.
//! - Pushes wait for a client between two polls or during a reconnect for as long as the client
//!   is known (its grace period), bounded by `max_pending_events_per_client`.
#![forbid(unsafe_code)]

// Floors, bottom up (a module imports only from floors below it):
// meters | metrics | wsread | params, origin, outbox, packers, response, wswrite, serve | framing |
// request |
// guard, registry, large |
// handle | msg | dispatch | router, stream, shell | ajax, ws, cors | adapter, service | server, axum_glue |
// builder, admin.
pub mod adapter;
pub mod admin;
mod ajax;
#[cfg(feature = "axum")]
mod axum_glue;
mod builder;
mod claim;
mod cors;
mod dispatch;
mod framing;
mod gate;
mod guard;
mod handle;
pub mod idem;
pub mod large;
mod meters;
pub mod metrics;
mod msg;
mod origin;
mod outbox;
mod packers;
mod params;
mod registry;
mod request;
mod response;
mod router;
pub mod s2c;
mod serve;
mod server;
mod service;
mod shell;
mod stream;
mod ws;
mod wsread;
mod wswrite;

/// The seam for several server nodes (re-exported from `sente-proto`, which backplane crates
/// depend on alone).
pub mod backplane {
    pub use sente_proto::backplane::*;
}

/// The packers (re-exported from `sente-proto`): choose the default with
/// [`Builder::packer`](crate::Builder::packer) or [`Builder::packer_name`](crate::Builder::packer_name).
pub mod packer {
    pub use sente_proto::packer::*;
}

pub use builder::{BuildError, Builder};
pub use dispatch::{Budget, Concurrency, Dispatch};
pub use guard::{AntiForgeryToken, CsrfToken, HookResponse, Rejection, UserId};
pub use handle::{ServerHandle, WeakServerHandle};
pub use meters::{LatencyHistogram, RejectedRequest};
pub use msg::{EventMsg, Reply};
pub use origin::{AllowedHosts, AllowedOrigins};
pub use registry::{ConnectedUids, Stats};
pub use request::ChskRequest;
pub use response::ChskBody;
pub use router::{
    BoxError, EventAndState, EventInfo, EventOnly, Handler, HandlerError, HandlerResult, Router,
};
pub use s2c::ClientSendError;
pub use sente_proto::server::replay::ReplayConfig;
pub use sente_proto::server::{SendError, ServerLimits};
pub use sente_proto::{
    ClientId, Event, EventId, InvalidEventId, Keyword, Limits, Packer, Transport, Uid, Value,
    event_id,
};
pub use serve::{ServeConfig, serve, serve_with_shutdown, shutdown_signal};
pub use server::Server;
pub use service::ChskService;
pub use stream::EventStream;
