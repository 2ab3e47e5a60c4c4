//! A Sente-compatible realtime server for Rust: an unmodified Sente ClojureScript client (or the
//! sente-rs Rust and JavaScript clients) talks to it over WebSocket or Ajax long-polling.
//!
//! - [`Server::builder`] takes the options of Sente's `make-channel-socket-server!` (snake case,
//!   same defaults, with secure defaults for CSRF and Origin) and gives a [`Server`] handle plus
//!   an [`EventStream`] of [`EventMsg`]s.
//! - One tower service serves GET (Ajax handshake and long-poll), POST (Ajax send), the WebSocket
//!   upgrade and `GET <mount>/client.js`; [`Server::router`] mounts it in axum.
//!   Other frameworks (hyper, actix-web, poem...): see [`adapter`], with a table of setups.
//! - [`Server::send`] pushes to every client of a uid, in order, batched like Sente.
//! - [`Router`] dispatches events to handlers by event id.
//!
//! The packer is chosen per connection by the `packer` query parameter (`edn`, `transit`,
//! `json`, `msgpack`); without it the server's default (edn) is used, as in Sente.
//!
//! ```no_run
//! use sente::{AllowedOrigins, CsrfToken, EventMsg, Router, Server};
//! use sente_proto::{Event, EventId, Uid, Value};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let (server, events) = Server::builder()
//!         .csrf_token_fn(|_req| CsrfToken::Skip) // use your session's anti-forgery token
//!         .allowed_origins(AllowedOrigins::list(["http://localhost:3000"]))
//!         .build()?;
//!     let push = server.clone();
//!     Router::new()
//!         .on("echo/req", |mut msg: EventMsg| async move {
//!             let data = msg.data_value().clone();
//!             msg.reply(data);
//!         })
//!         .on("echo/push-me", move |msg: EventMsg| {
//!             let server = push.clone();
//!             async move {
//!                 let ev = Event::new(EventId::new("echo/pushed")?, Value::from("hi"));
//!                 server.send(&msg.uid, ev)?;
//!                 Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//!             }
//!         })
//!         .spawn(events);
//!     let app = server.router("/chsk");
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
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
//!   WebSocket whose send queue is full is closed (1013), a stalled write times out.
//! - Lean: an idle WebSocket costs about 5.4 KB of RSS on the server
//!   (`cargo test --release -p sente --test memory -- --ignored --nocapture`); a batch is packed
//!   once per packer and shared by every connection it goes to, broadcasts included.
//! - `[:chsk/close]` answers a held Ajax poll `410 Gone` (Sente leaves it hanging for 60 s).
//! - An Ajax POST whose [`Reply`] is dropped unanswered gets `[:chsk/timeout nil]` at once.
//! - Pushes wait for a client between two polls or during a reconnect for as long as the client
//!   is known (its grace period), bounded by `max_pending_events_per_client`.
#![forbid(unsafe_code)]

pub mod adapter;
#[cfg(feature = "axum")]
mod axum_glue;
pub mod backplane;
mod config;
mod msg;
mod params;
mod request;
mod router;
mod security;
mod server;
mod service;
mod ws;

pub use config::{AntiForgeryToken, BuildError, Builder, CsrfToken, HookResponse, UserId};
pub use msg::{EventMsg, Reply};
pub use request::ChskRequest;
pub use router::{BoxError, Concurrency, EventInfo, HandlerError, HandlerResult, Router};
pub use security::AllowedOrigins;
pub use sente_proto::server::{ServerLimits, Transport};
pub use sente_proto::{ClientId, Event, EventId, Limits, Uid, Value};
pub use server::{ConnectedUids, EventStream, SendError, Server, Stats};
pub use service::{ChskBody, ChskService};
