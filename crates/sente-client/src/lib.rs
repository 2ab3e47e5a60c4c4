//! The Rust client for Sente (and sente-rs) servers: Sente's `make-channel-socket-client!` for
//! native apps (tokio) and the browser (wasm32).
//!
//! All protocol logic lives in the sans-IO [`sente_proto::client::ClientMachine`]; this crate
//! is the IO around it: tokio-tungstenite and hyper natively, `WebSocket` and `fetch` in the
//! browser, chosen by `target_arch`.
//!
//! [`ClientBuilder`] wraps the machine's [`ClientConfig`](sente_proto::client::ClientConfig),
//! whose `new` holds every default. Errors are typed: [`RequestError`] (Sente's `chsk/closed`,
//! `chsk/timeout`, `chsk/error`, the last with a [`RequestFailure`] to match on), [`SendError`]
//! and [`ConnectError`]; the state's `last_close` carries a [`CloseReason`].
//!
//! Natively the builder can also send what a browser page would: [`ClientBuilder::origin`],
//! [`ClientBuilder::cookie`] and [`ClientBuilder::header`], on the WebSocket upgrade and every
//! Ajax request. `https://` and `wss://` URLs go through rustls (cargo feature `tls`, on by
//! default; certificates are always verified, against the webpki roots and the CAs given to
//! `ClientBuilder::add_root_certificate`); a TLS failure is reported in the state
//! ([`WsErrorInfo::tls`], [`AjaxErrorInfo`] with [`HttpFailure::Tls`]). A server's close frame
//! (Sente's `[:chsk/close]`) is answered and reported at once (`last_ws_close` with its code,
//! `last_close` `clean` for 1000), then the client reconnects; the server gets 2 s to close TCP.
//!
//! Resume after a reconnect (a sente-rs extension, on by default, over WebSocket and Ajax and
//! across a switch between them, natively and in the browser alike): the pushes a sente-rs server wrote while the connection was dying or
//! down arrive after the reconnect, before anything newer, in order and each once, when it
//! falls within the server's replay window; [`State::recovered`] (`:recovered?` in the
//! `chsk/state` event's maps) is then `Some(true)`, or `Some(false)` when some may be lost
//! (refetch what matters), and `None` on the first connection, or against a server that does
//! not resume (Sente ignores the request). [`ClientBuilder::resume`]`(false)` turns
//! it off. The JS client (`clients/js`) speaks the same extension.
//!
//! Server-to-client requests (a sente-rs extension, `sente::ServerHandle::request`):
//! [`ClientBuilder::on_request`] registers a handler per event id and announces the extension;
//! the handler's value is the client's answer, and a request for an event with no handler is
//! answered `"no-handler"`. Without a handler the client never announces it, and the server
//! never asks.
//!
//! Large pushes (a sente-rs extension, on by default, [`ClientBuilder::large`]): a push the
//! server offloads (over its threshold, 64 KiB by default) comes as a small reference on the
//! socket and is fetched with one HTTP GET, then delivered as the usual
//! [`ClientEvent::Push`] in its place (the pushes after it wait for it), or as
//! [`ClientEvent::LargeFailed`] when the fetch fails.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use sente_client::{Client, ClientEvent, Event, Kind};
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder("http://127.0.0.1:3000/chsk")
//!     .kind(Kind::Auto)
//!     .csrf_token("tok-123")
//!     .connect()?;
//! let mut events = client.events();
//! client.wait_open().await;
//!
//! // Fire and forget, or ask for a reply.
//! client.send(Event::new("demo/hello".parse()?, "hi"))?;
//! let reply = client.request(Event::new("demo/echo".parse()?, 42), Duration::from_secs(5)).await?;
//! println!("echo: {reply}");
//!
//! // Typed requests go through serde (edn maps with keyword keys).
//! #[derive(serde::Serialize)]
//! struct Greet { name: String }
//! let ev = Event::typed("demo/echo".parse()?, &Greet { name: "ann".into() })?;
//! let name: std::collections::HashMap<String, String> =
//!     client.request_as(ev, Duration::from_secs(5)).await?;
//! println!("{name:?}");
//!
//! while let Some(ev) = events.next().await {
//!     match ev {
//!         ClientEvent::Push(ev) => println!("push {}", ev.to_value()),
//!         ClientEvent::State(change) => println!("open: {}", change.new.open),
//!         other => println!("{:?}", other.to_event()),
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
// In the browser everything runs on one thread and the shared state holds JS objects.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

extern crate tokio_sync as tokio;

mod builder;
mod events;
mod shared;
#[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
mod tls;

#[cfg(not(target_arch = "wasm32"))]
#[path = "native.rs"]
mod platform;
#[cfg(target_arch = "wasm32")]
#[path = "wasm.rs"]
mod platform;

pub use builder::ClientBuilder;
pub use events::EventStream;
pub use sente_proto::client::{
    AjaxErrorInfo, Backoff, ClientEvent, CloseInfo, CloseReason, Handshake, HttpFailure, Kind,
    LargeFailure, QueueConfig, RequestError, RequestFailure, SendError, State, StateChange,
    Transport, WsCloseInfo, WsErrorInfo,
};
pub use sente_proto::{ClientId, Event, EventId, Limits, Packer, Uid, Value, edn};
pub use sente_proto::{EnvelopeError, PackError, UnpackError};
#[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
pub use tls::{Certificate, TlsError};

use serde::de::DeserializeOwned;
use shared::Shared;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not `http(s)://` or `ws(s)://` with a host.
    #[error(transparent)]
    Url(#[from] sente_proto::client::InvalidUrl),
    /// The client id is blank or too long.
    #[error(transparent)]
    ClientId(#[from] sente_proto::InvalidClientId),
    /// No packer has this name.
    #[error("unknown packer {0:?}")]
    UnknownPacker(String),
    /// The TLS setup is unusable (a bad root certificate, no roots at all).
    #[cfg(all(feature = "tls", not(target_arch = "wasm32")))]
    #[error(transparent)]
    Tls(#[from] TlsError),
}

struct Handle {
    shared: Arc<Shared>,
    first_events: Mutex<Option<EventStream>>,
    client_id: ClientId,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        inner.machine.disconnect(now);
        inner.shutdown = true;
        drop(inner);
        self.shared.notify.notify_one();
    }
}

/// A connection to a Sente server: cheap to clone; the connection closes cleanly (WebSocket
/// close 1000) when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.handle.client_id)
            .field("state", &*self.handle.shared.state_tx.borrow())
            .finish()
    }
}

impl Client {
    /// A builder for a client of the chsk endpoint at `url`, e.g.
    /// `http://127.0.0.1:3000/chsk` (`ws://` URLs work too).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    fn start(
        cfg: sente_proto::client::ClientConfig,
        seed: u64,
        event_buffer: usize,
        io: platform::IoConfig,
        handlers: shared::RequestHandlers,
    ) -> Client {
        let client_id = cfg.client_id.clone();
        let clock = platform::Clock::new();
        let mut machine =
            sente_proto::client::ClientMachine::new(cfg, seed, clock.now_ms(), platform::unix_ms());
        machine.connect(clock.now_ms());
        let (tx, rx) = events::channel(event_buffer);
        let shared = Arc::new(Shared::new(
            machine,
            clock,
            platform::Io::new(io),
            tx,
            event_buffer,
            handlers,
        ));
        platform::spawn_driver(shared.clone());
        Client {
            handle: Arc::new(Handle {
                shared,
                first_events: Mutex::new(Some(rx)),
                client_id,
            }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// This client's id.
    pub fn client_id(&self) -> &ClientId {
        &self.handle.client_id
    }

    /// The state map (Sente's `state` atom), updated on every change.
    pub fn state(&self) -> watch::Receiver<State> {
        self.shared().state_tx.subscribe()
    }

    /// Whether the connection is open (a handshake was received).
    pub fn is_open(&self) -> bool {
        self.shared().lock().machine.is_open()
    }

    /// The events of this client. The first call returns a stream holding everything since
    /// the client started (so the first handshake is never missed); later calls return
    /// streams that start now.
    pub fn events(&self) -> EventStream {
        if let Some(first) = self
            .handle
            .first_events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return first;
        }
        let (tx, rx) = events::channel(self.shared().event_buffer);
        self.shared().lock().subscribers.push(tx);
        rx
    }

    /// Waits until the connection is open.
    pub async fn wait_open(&self) {
        let mut rx = self.state();
        let _ = rx.wait_for(|s| s.open).await;
    }

    /// Sends an event without asking for a reply (Sente's `(send-fn ev)`).
    pub fn send(&self, event: Event) -> Result<(), SendError> {
        self.shared().with(|m, now| m.send(event, now))
    }

    /// Sends an event and waits for the reply (Sente's `(send-fn ev timeout-ms cb)`):
    /// [`RequestError::Closed`] when the connection is not open, [`RequestError::Timeout`] when
    /// no reply came within `timeout`, [`RequestError::Error`] when the transport failed.
    /// Dropping the future forgets the request. With
    /// [`ClientBuilder::retry_requests`] on, a lost connection does not fail it: see
    /// [`request_with_retry`](Self::request_with_retry).
    pub async fn request(&self, event: Event, timeout: Duration) -> Result<Value, RequestError> {
        let retry = self.shared().lock().machine.config().retry_requests;
        self.request_with_retry(event, timeout, retry).await
    }

    /// [`request`](Self::request), choosing for this request whether it is retried across
    /// reconnects (rather than [`ClientBuilder::retry_requests`]): when the connection is lost
    /// before the reply, it is re-sent with the same request id once the client is connected
    /// again (over either transport), within `timeout`. A server with the `idem` extension
    /// (sente-rs) runs it once and answers the retry with the original reply, so the result
    /// comes once. Over Ajax, the server's `:chsk/timeout` (it holds a POST only for its
    /// long-poll timeout) does not end it either: it asks again within `timeout`. Against a
    /// server that did not acknowledge the extension it fails with `Error` as usual.
    pub async fn request_with_retry(
        &self,
        event: Event,
        timeout: Duration,
        retry: bool,
    ) -> Result<Value, RequestError> {
        let (tx, rx) = oneshot::channel();
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let id = {
            let mut inner = self.shared().lock();
            let now = self.shared().now();
            let id = inner.machine.request_with_retry(event, ms, retry, now);
            inner.waiters.insert(id, tx);
            id
        };
        self.shared().notify.notify_one();
        let mut guard = CancelOnDrop {
            shared: self.shared().clone(),
            id: Some(id),
        };
        let result = rx.await.unwrap_or(Err(RequestError::Closed));
        guard.id = None;
        result
    }

    /// [`request`](Self::request), converting the reply through serde
    /// ([`RequestError::Decode`] when it does not fit `T`).
    pub async fn request_as<T: DeserializeOwned>(
        &self,
        event: Event,
        timeout: Duration,
    ) -> Result<T, RequestError> {
        let v = self.request(event, timeout).await?;
        sente_edn::from_value(v).map_err(RequestError::Decode)
    }

    /// Starts connecting again after [`disconnect`](Self::disconnect) (Sente's
    /// `chsk-connect!`).
    pub fn connect(&self) {
        self.shared()
            .with(sente_proto::client::ClientMachine::connect);
    }

    /// Closes the connection and stops reconnecting (Sente's `chsk-disconnect!`).
    pub fn disconnect(&self) {
        self.shared()
            .with(sente_proto::client::ClientMachine::disconnect);
    }

    /// While waiting to reconnect, tries now instead of when the backoff says (a "retry now"
    /// button; the WASM client also does it by itself on the browser's `online` event and when
    /// the tab becomes visible). Does nothing when connected or connecting.
    pub fn retry_now(&self) {
        self.shared()
            .with(sente_proto::client::ClientMachine::retry_now);
    }

    /// Closes the connection and connects again at once (Sente's `chsk-reconnect!`), e.g. to
    /// pick up a new session uid after login.
    pub fn reconnect(&self) {
        self.shared()
            .with(sente_proto::client::ClientMachine::reconnect);
    }
}

struct CancelOnDrop {
    shared: Arc<Shared>,
    id: Option<sente_proto::client::RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut inner = self.shared.lock();
            inner.waiters.remove(&id);
            inner.machine.cancel_request(id);
            drop(inner);
            self.shared.notify.notify_one();
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn native_handles_are_send_and_sync() {
        send_sync::<super::Client>();
        send_sync::<super::EventStream>();
        send_sync::<super::ClientBuilder>();
    }

    #[test]
    fn builder_errors() {
        use super::{Client, ConnectError};
        assert!(matches!(
            Client::builder("ftp://x").config(),
            Err(ConnectError::Url(_))
        ));
        assert!(matches!(
            Client::builder("http://x/chsk").client_id(" ").config(),
            Err(ConnectError::ClientId(_))
        ));
        assert!(matches!(
            Client::builder("http://x/chsk").packer_name("nope").config(),
            Err(ConnectError::UnknownPacker(n)) if n == "nope"
        ));
        let cfg = Client::builder("http://x/chsk")
            .packer_name("msgpack")
            .config()
            .unwrap();
        assert_eq!(cfg.packer.name(), "msgpack");
        assert_eq!(cfg.url.ws(), "ws://x/chsk");
        assert_eq!(
            uuid::Uuid::parse_str(cfg.client_id.as_str()).map(|u| u.get_version_num()),
            Ok(4)
        );
    }

    #[test]
    fn builder_wraps_the_machine_config() {
        use super::Client;
        use sente_proto::client::{ClientConfig, Kind, QueueConfig};
        use std::time::Duration;
        let built = Client::builder("http://x/chsk").config().unwrap();
        let defaults = ClientConfig::new(
            built.url.clone(),
            built.client_id.clone(),
            built.packer.clone(),
        );
        assert_eq!(format!("{built:?}"), format!("{defaults:?}"));
        assert_eq!(built.packer.name(), "edn");

        let cfg = Client::builder("ws://x/chsk")
            .client_id(" ")
            .client_id("c-1")
            .packer_name("nope")
            .packer_name("json")
            .kind(Kind::Ajax)
            .keepalive(None)
            .ping_timeout(Duration::from_secs(2))
            .ajax_timeout(Duration::from_secs(30))
            .rejected_retry(Duration::from_secs(3))
            .ws_reprobe(Some(Duration::from_secs(60)))
            .queue_while_connecting(5, Duration::from_millis(1500))
            .param("k", "v")
            .header("h", "w")
            .config()
            .unwrap();
        assert_eq!(cfg.client_id.as_str(), "c-1");
        assert_eq!(cfg.packer.name(), "json");
        assert_eq!(cfg.kind, Kind::Ajax);
        assert_eq!(cfg.ws_kalive_ms, None);
        assert_eq!(cfg.ws_ping_timeout_ms, 2000);
        assert_eq!(cfg.ajax_timeout_ms, 30_000);
        assert_eq!(cfg.rejected_retry_ms, 3000);
        assert_eq!(cfg.ws_reprobe_ms, Some(60_000));
        assert_eq!(cfg.queue, Some(QueueConfig::new(5, 1500)));
        assert_eq!(cfg.params, [("k".to_owned(), "v".to_owned())]);
        assert_eq!(cfg.headers, [("h".to_owned(), "w".to_owned())]);

        let again = super::ClientBuilder::from_config(cfg.clone())
            .config()
            .unwrap();
        assert_eq!(format!("{again:?}"), format!("{cfg:?}"));
    }
}
