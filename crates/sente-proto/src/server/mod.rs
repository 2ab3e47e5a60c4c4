//! The server's sans-IO state: everything that decides *what* a Sente server sends and *when*,
//! with no IO and no clock of its own. Time is a `u64` count of milliseconds from any origin the
//! caller picks (the `sente` crate uses the server's start), passed into every `handle_*` /
//! `poll*` call, so the behaviour is tested in virtual time.
//!
//! - [`Keepalive`]: the WebSocket liveness check of one connection (spec 5.5).
//! - [`Core`]: the registry of uid -> clients on both transports, per-uid send buffers
//!   (spec 7.5), connected uids with their grace periods and `chsk/uidport-*` events (spec 7.4),
//!   the Ajax long-poll hold (spec 6.2) and the per-client queues that carry pushes across the gap
//!   between two polls or a WebSocket reconnect.
//! - [`PushBatch`]: one flushed batch, packed at most once per packer.
//! - [`message`]: what one client message means (deliver, pong, `chsk/bad-package`, a reply to
//!   wait for), what a push is, replies a client waits for, and handshake packing.
//! - [`Shards`]: the core split by uid hash, so that different uids are handled on different
//!   cores at once.
//! - [`ServerLimits`]: the server's bounds, on top of the message [`Limits`](crate::Limits).

mod batch;
mod clients;
mod core;
mod keepalive;
mod limits;
pub mod message;
pub mod replay;
mod shards;

pub use batch::{PackedBytes, PushBatch, estimate_event_size, estimate_size};
pub use core::{
    Action, ConnId, ConnectError, Core, CoreConfig, CoreEvent, MailboxResume, PollAnswer,
    RECYCLED_ACTIONS, SendError, SeqCheck, Transport, WakeDone,
};
pub use keepalive::{Keepalive, KeepaliveAction};
pub use limits::ServerLimits;
pub use shards::{Shards, default_shards};
