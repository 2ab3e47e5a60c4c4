//! [`EdnPacker`]: Sente's default packer (text).
//!
//! Packing is Clojure's `pr-str` (see [`sente_edn::write_edn`]). Unpacking checks UTF-8, reads
//! the first form and ignores the rest; empty or whitespace-only input is `nil`. Tags other than
//! `#inst` and `#uuid` are an error, as in Sente. [`Value::Bytes`] cannot be packed.

use std::sync::Arc;

use sente_edn::{ErrorKind, ReadOptions, UnknownTags, Value};

use super::util::{check_size, malformed, utf8, write_batch, write_envelope};
use super::{PackError, Packed, Packer, UnpackError};
use crate::event::Event;
use crate::limits::Limits;

const NAME: &str = "edn";

fn unsupported(e: &sente_edn::Error) -> PackError {
    PackError::Unsupported {
        packer: NAME,
        what: e.to_string(),
    }
}

/// Sente's default edn packer (text).
#[derive(Clone, Copy, Debug, Default)]
pub struct EdnPacker;

impl EdnPacker {
    /// The packer.
    pub fn new() -> Self {
        EdnPacker
    }
}

impl Packer for EdnPacker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn is_binary(&self) -> bool {
        false
    }

    fn pack(&self, value: &Value) -> Result<Packed, PackError> {
        sente_edn::try_to_edn_string(value)
            .map(Packed::Text)
            .map_err(|e| unsupported(&e))
    }

    fn pack_envelope(&self, payload: Value, cb: Value) -> Result<Packed, PackError> {
        write_envelope(&payload, &cb, ' ', |v, out| {
            sente_edn::try_write_edn(v, out).map_err(|e| unsupported(&e))
        })
        .map(Packed::Text)
    }

    fn pack_batch(
        &self,
        marker: Option<&Value>,
        events: &[Arc<Event>],
    ) -> Result<Packed, PackError> {
        write_batch(
            marker,
            events,
            ' ',
            "] nil]",
            |id, out| {
                out.push(':');
                out.push_str(id);
            },
            |v, out| sente_edn::try_write_edn(v, out).map_err(|e| unsupported(&e)),
        )
        .map(Packed::Text)
    }

    fn checks_utf8(&self) -> bool {
        // `unpack` reads nothing before `utf8` accepted the whole input.
        true
    }

    fn unpack(&self, input: &[u8], limits: &Limits) -> Result<Value, UnpackError> {
        check_size(input, limits)?;
        let text = utf8(input)?;
        let opts = ReadOptions {
            max_depth: limits.max_depth,
            max_collection_len: limits.max_collection_len,
            unknown_tags: UnknownTags::Error,
        };
        sente_edn::read(text, &opts).map_err(|e| match e.kind() {
            ErrorKind::TooDeep(_) => UnpackError::TooDeep {
                limit: limits.max_depth,
            },
            ErrorKind::TooLong(_) => UnpackError::TooLong {
                len: limits.max_collection_len as u64 + 1,
                limit: limits.max_collection_len,
            },
            _ => malformed(NAME, e.offset().unwrap_or(0), e.kind().to_string()),
        })
    }
}
