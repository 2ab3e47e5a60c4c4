//! Packers: how a [`Value`] becomes the bytes of one WebSocket frame or HTTP body, and back.

use std::sync::Arc;

use crate::limits::Limits;
use sente_edn::Value;

mod edn;
#[cfg(feature = "gzip")]
mod gzip;
mod json;
mod json_lex;
#[cfg(feature = "msgpack")]
mod msgpack;
#[cfg(feature = "transit")]
mod transit;
mod util;

pub use edn::EdnPacker;
#[cfg(feature = "gzip")]
pub use gzip::GzipPacker;
pub use json::JsonPacker;
#[cfg(feature = "msgpack")]
pub use msgpack::MsgpackPacker;
#[cfg(feature = "transit")]
pub use transit::TransitPacker;

/// The packer for a `packer` query-parameter value: `edn`, `transit`, `json`, `msgpack`, or one
/// of those with `+gzip` (`edn+gzip`, `transit+gzip`, `json+gzip`, `msgpack+gzip`).
///
/// `None` for an unknown name, and for a packer whose cargo feature (`transit`, `msgpack`,
/// `gzip`) is off.
pub fn by_name(name: &str) -> Option<Arc<dyn Packer>> {
    match name.strip_suffix("+gzip") {
        #[cfg(feature = "gzip")]
        Some(inner) => Some(Arc::new(GzipPacker::new(base_by_name(inner)?))),
        #[cfg(not(feature = "gzip"))]
        Some(_) => None,
        None => base_by_name(name),
    }
}

/// A packer without the `+gzip` suffix.
fn base_by_name(name: &str) -> Option<Arc<dyn Packer>> {
    Some(match name {
        "edn" => Arc::new(EdnPacker),
        "json" => Arc::new(JsonPacker),
        #[cfg(feature = "transit")]
        "transit" => Arc::new(TransitPacker::new()),
        #[cfg(feature = "msgpack")]
        "msgpack" => Arc::new(MsgpackPacker),
        _ => return None,
    })
}

/// The packed form of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packed {
    /// Text packers (edn, transit, json): sent as a WebSocket text frame / UTF-8 body.
    Text(String),
    /// Binary packers (msgpack, gzip): sent as a WebSocket binary frame / octet-stream body.
    Binary(Vec<u8>),
}

impl Packed {
    /// The bytes of the message.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Packed::Text(s) => s.as_bytes(),
            Packed::Binary(b) => b,
        }
    }

    /// Consumes the message into its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Packed::Text(s) => s.into_bytes(),
            Packed::Binary(b) => b,
        }
    }

    /// Whether this is binary output.
    pub fn is_binary(&self) -> bool {
        matches!(self, Packed::Binary(_))
    }
}

/// Why a value could not be packed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PackError {
    /// The value has a type this packer cannot represent (e.g. raw bytes in edn).
    #[error("{packer} packer cannot represent {what}")]
    Unsupported {
        /// The packer's name.
        packer: &'static str,
        /// What could not be represented.
        what: String,
    },
    /// The packed message would exceed [`Limits::max_message_bytes`].
    #[error("packed message is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The size reached.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// Why bytes could not be unpacked. Every decoder returns this instead of panicking.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UnpackError {
    /// The input is larger than [`Limits::max_message_bytes`].
    #[error("message is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The input size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Nesting deeper than [`Limits::max_depth`].
    #[error("nesting deeper than {limit} levels")]
    TooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// A collection longer than [`Limits::max_collection_len`].
    #[error("collection of {len} elements, over the limit of {limit}")]
    TooLong {
        /// The declared or reached length.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A text packer was given bytes that are not UTF-8.
    #[error("message is not valid UTF-8 (at byte {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The input does not follow the format.
    #[error("malformed {packer} at byte {offset}: {reason}")]
    Malformed {
        /// The packer's name.
        packer: &'static str,
        /// Byte offset where decoding failed.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
}

/// The payload `[marker ev1 ev2 ...]` of a push batch (`marker` first when present), as a
/// value: what [`Packer::pack_batch`] packs inside `[payload nil]`. Clones every event's data.
pub fn batch_payload(marker: Option<&Value>, events: &[Arc<crate::event::Event>]) -> Value {
    Value::Vector(
        marker
            .cloned()
            .into_iter()
            .chain(events.iter().map(|e| e.to_value()))
            .collect(),
    )
}

/// A serializer for Sente messages. Implementations are cheap to share (`Send + Sync`).
///
/// Both sides of a connection must use the same packer; our server picks one per connection
/// from the `packer` query parameter.
pub trait Packer: Send + Sync + std::fmt::Debug + 'static {
    /// The name used in the `packer` query parameter: `edn`, `transit`, `json`, `msgpack`, ...
    fn name(&self) -> &'static str;

    /// Whether [`Packer::pack`] produces [`Packed::Binary`].
    fn is_binary(&self) -> bool;

    /// Packs one value.
    fn pack(&self, value: &Value) -> Result<Packed, PackError>;

    /// Packs a push batch's envelope `[[marker ev1 ev2 ...] nil]` (`marker`, e.g. a resume
    /// number's `[:chsk/seq n]`, first when present), borrowing the events: the same bytes
    /// as [`Packer::pack`] of that envelope. The default builds the envelope (cloning every
    /// event's data); the built-in text packers write it directly, so a batch merged for one
    /// Ajax poll costs no copy of its events.
    fn pack_batch(
        &self,
        marker: Option<&Value>,
        events: &[Arc<crate::event::Event>],
    ) -> Result<Packed, PackError> {
        // `[payload nil]`: the envelope's value form, built here (the envelope module uses this one).
        self.pack(&Value::Vector(vec![
            batch_payload(marker, events),
            Value::Nil,
        ]))
    }

    /// Packs a message's envelope `[payload cb]` (`cb` is `nil` when there is none), consuming
    /// it: the same bytes as [`Packer::pack`] of `Value::Vector(vec![payload, cb])`. The
    /// default builds that vector; the built-in text packers write the two values directly.
    fn pack_envelope(&self, payload: Value, cb: Value) -> Result<Packed, PackError> {
        self.pack(&Value::Vector(vec![payload, cb]))
    }

    /// Unpacks one value from `input`, enforcing `limits` before allocating.
    fn unpack(&self, input: &[u8], limits: &Limits) -> Result<Value, UnpackError>;

    /// Whether [`Packer::unpack`] succeeds only on UTF-8 input (a text packer that reads its
    /// input as `str`). A WebSocket server then leaves the UTF-8 check of a text message to
    /// this packer, one pass over the bytes instead of two, and closes the connection with
    /// 1007 when the unpack fails on bytes that are not UTF-8. Default `false`: the server
    /// checks every text message itself. Return `true` only if no input that is not UTF-8
    /// can ever unpack.
    fn checks_utf8(&self) -> bool {
        false
    }
}
