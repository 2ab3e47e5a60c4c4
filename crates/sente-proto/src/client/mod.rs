//! The client side of Sente (spec 8) as a sans-IO state machine.
//!
//! [`ClientMachine`] holds everything Sente's `make-channel-socket-client!` keeps in its state
//! atom and timers: the state map, WebSocket and Ajax transports, the `:auto` downgrade,
//! keepalive pings, reply correlation and timeouts, and reconnect backoff. It performs no IO and
//! reads no clock: the shells in `sente-client` (tokio, wasm32) feed it inputs with the current
//! time and carry out its [`Action`]s. Timing is therefore tested in virtual time.
//!
//! Improvements over Sente, all opt-out or opt-in through [`ClientConfig`]:
//! - reconnect backoff with full jitter and a cap ([`Backoff`]), first retry immediate;
//! - a refused handshake (HTTP 401/403) closes with [`CloseReason::Rejected`] and is retried on
//!   a slow timer instead of the backoff curve;
//! - [`Kind::Auto`] re-probes WebSocket periodically after falling back to Ajax;
//! - an optional bounded queue for messages sent while reconnecting ([`QueueConfig`]).
//!
//! ```
//! use sente_proto::client::{Action, ChskUrl, ClientConfig, ClientMachine, Kind, Output};
//! use sente_proto::{ClientId, Packer};
//! # use std::sync::Arc;
//! # fn demo(packer: Arc<dyn Packer>) {
//! let url = ChskUrl::parse("http://127.0.0.1:3000/chsk").unwrap();
//! let mut config = ClientConfig::new(url, ClientId::new("my-client").unwrap(), packer);
//! config.kind = Kind::Ws;
//! let mut m = ClientMachine::new(config, 42, 0, 1_700_000_000_000);
//! m.connect(0);
//! match m.poll_output() {
//!     Some(Output::Action(Action::WsOpen { url, .. })) => {
//!         assert!(url.starts_with("ws://127.0.0.1:3000/chsk?client-id=my-client"));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # }
//! ```

mod config;
mod machine;
mod rng;
mod state;
pub mod url;

pub use config::{Backoff, ClientConfig, CsrfToken, Kind, QueueConfig, Transport};
pub use machine::{
    Action, ClientMachine, ConnId, HttpId, HttpMethod, HttpRequest, LargeUnpacker, LogLevel,
    Output, RequestId, WsClosed, WsFailure,
};
pub use state::{
    AjaxErrorInfo, ClientEvent, CloseInfo, CloseReason, Handshake, HttpFailure, LargeFailure,
    RequestError, RequestFailure, SendError, State, StateChange, WsCloseInfo, WsErrorInfo,
};
pub use url::{ChskUrl, InvalidUrl};
