//! The sans-IO core of sente-rs: Sente's wire protocol (envelopes, reserved events, packers) and
//! the connection state machines shared by the server and the clients. No IO, no clock, no RNG:
//! callers pass `now` and random values in.
#![forbid(unsafe_code)]

pub mod client;
pub mod envelope;
pub mod event;
pub mod limits;
pub mod packer;
pub mod server;
mod transport;

pub use envelope::{
    ClientMsg, Envelope, EnvelopeError, PostReply, ServerMsg, client_msg, server_msg,
};
pub use event::{ClientId, Event, EventId, InvalidClientId, InvalidEventId, Uid, ids};
pub use limits::Limits;
pub use transport::Transport;
pub use packer::{PackError, Packed, Packer, UnpackError};
pub use sente_edn::{self as edn, Keyword, Map, Value};
