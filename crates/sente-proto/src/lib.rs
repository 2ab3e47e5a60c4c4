//! The sans-IO core of sente-rs: Sente's wire protocol (envelopes, reserved events, packers) and
//! the connection state machines shared by the server and the clients. No IO, no clock, no RNG:
//! callers pass `now` and random values in.
#![forbid(unsafe_code)]

pub mod backplane;
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
pub use packer::{PackError, Packed, Packer, UnpackError};
pub use sente_edn::{self as edn, Keyword, Map, Value};
pub use transport::Transport;

/// A checked [`EventId`] from a string literal: `event_id!("my-app/notice")`. An invalid id is
/// a compile-time error.
///
/// ```
/// let id = sente_proto::event_id!("my-app/notice");
/// assert_eq!(id.as_str(), "my-app/notice");
/// ```
///
/// ```compile_fail
/// let id = sente_proto::event_id!("no-namespace");
/// ```
#[macro_export]
macro_rules! event_id {
    ($text:literal) => {{
        const _: () = assert!(
            $crate::event::valid_id_literal($text),
            concat!(
                "invalid event id ",
                stringify!($text),
                ": an event id is a namespaced keyword such as \"my-app/some-req\""
            )
        );
        $crate::EventId::from_static($text)
    }};
}
