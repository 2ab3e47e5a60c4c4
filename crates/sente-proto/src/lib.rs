//! The sans-IO core of sente-rs: Sente's wire protocol (envelopes, reserved events, packers) and
//! the connection state machines shared by the server and the clients. No IO, no clock, no RNG:
//! callers pass `now` and random values in.
//!
//! # Cargo features
//!
//! The edn and json packers are always compiled in. The others are features, all on by default:
//!
//! | feature | adds |
//! |---|---|
//! | `transit` | `packer::TransitPacker` (`packer=transit`) |
//! | `msgpack` | `packer::MsgpackPacker` (`packer=msgpack`) |
//! | `gzip` | `packer::GzipPacker` (`packer=<name>+gzip`) and the `flate2` dependency |
//!
//! Without one, [`packer::by_name`] returns `None` for its names. `sente` and `sente-client`
//! forward the three features (default on), so a browser client that only speaks edn or json can
//! build with `default-features = false` and leave them out: it saves 117 KB of wasm (55 KB
//! gzipped) when the client picks its packer by name (`packer_name`), which links every packer
//! compiled in (the repository's `BENCHMARKS.md`).
#![forbid(unsafe_code)]

pub mod backplane;
pub mod client;
pub mod envelope;
pub mod event;
pub mod idem;
pub mod large;
pub mod limits;
pub mod packer;
pub mod s2c;
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
