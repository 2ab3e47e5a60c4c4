//! [`GzipPacker`]: Sente's gzip wrapper around any inner packer (binary output).
//!
//! Output is one flag byte then a body: `0x00` + the inner packer's bytes when they are shorter
//! than [`GzipPacker::THRESHOLD`] (1024) bytes, else `0x01` + one gzip member of them. A text
//! inner packer's output is its UTF-8 bytes. Unpacking: a first byte `0x01` means gunzip (the
//! decompressed size is bounded by [`Limits::max_message_bytes`], so a gzip bomb fails with
//! [`UnpackError::TooLarge`]); any other first byte means the rest is raw.

use std::io::{Read, Write};
use std::sync::Arc;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sente_edn::Value;

use super::util::{check_size, malformed};
use super::{PackError, Packed, Packer, UnpackError};
use crate::event::Event;
use crate::limits::Limits;

/// Gzip wrapper around an inner packer, as Sente's `taoensso.sente.packers.gzip/wrap-packer`.
#[derive(Clone, Debug)]
pub struct GzipPacker {
    inner: Arc<dyn Packer>,
    name: &'static str,
}

impl GzipPacker {
    /// Inner outputs of at least this many bytes are compressed.
    pub const THRESHOLD: usize = 1024;

    /// Wraps `inner`. The name is `<inner>+gzip` for the built-in packers, else `gzip`.
    pub fn new(inner: Arc<dyn Packer>) -> Self {
        let name = match inner.name() {
            "edn" => "edn+gzip",
            "transit" => "transit+gzip",
            "json" => "json+gzip",
            "msgpack" => "msgpack+gzip",
            _ => "gzip",
        };
        GzipPacker { inner, name }
    }

    /// The wrapped packer.
    pub fn inner(&self) -> &Arc<dyn Packer> {
        &self.inner
    }
}

impl Packer for GzipPacker {
    fn name(&self) -> &'static str {
        self.name
    }

    fn is_binary(&self) -> bool {
        true
    }

    fn pack(&self, value: &Value) -> Result<Packed, PackError> {
        compress(&self.inner.pack(value)?)
    }

    fn pack_batch(
        &self,
        marker: Option<&Value>,
        events: &[Arc<Event>],
    ) -> Result<Packed, PackError> {
        compress(&self.inner.pack_batch(marker, events)?)
    }

    fn pack_envelope(&self, payload: Value, cb: Value) -> Result<Packed, PackError> {
        compress(&self.inner.pack_envelope(payload, cb)?)
    }

    fn unpack(&self, input: &[u8], limits: &Limits) -> Result<Value, UnpackError> {
        check_size(input, limits)?;
        match input.split_first() {
            None => Err(malformed("gzip", 0, "empty message (no flag byte)")),
            Some((0x01, body)) => {
                let max = limits.max_message_bytes;
                let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max));
                let mut dec = GzDecoder::new(body).take((max as u64).saturating_add(1));
                dec.read_to_end(&mut out)
                    .map_err(|e| malformed("gzip", 1, format!("bad gzip stream: {e}")))?;
                if out.len() > max {
                    return Err(UnpackError::TooLarge {
                        size: out.len(),
                        limit: max,
                    });
                }
                self.inner.unpack(&out, limits)
            }
            Some((_, body)) => self.inner.unpack(body, limits),
        }
    }
}

/// The flag byte and the inner packer's bytes, gzipped from [`GzipPacker::THRESHOLD`] bytes on.
fn compress(inner: &Packed) -> Result<Packed, PackError> {
    let raw = inner.as_bytes();
    if raw.len() < GzipPacker::THRESHOLD {
        let mut out = Vec::with_capacity(raw.len() + 1);
        out.push(0x00);
        out.extend_from_slice(raw);
        return Ok(Packed::Binary(out));
    }
    let mut out = Vec::with_capacity(raw.len() / 3 + 32);
    out.push(0x01);
    let mut enc = GzEncoder::new(out, Compression::default());
    // Writing into a Vec cannot fail.
    let out = enc
        .write_all(raw)
        .and_then(|()| enc.finish())
        .map_err(|e| PackError::Unsupported {
            packer: "gzip",
            what: format!("gzip failed: {e}"),
        })?;
    Ok(Packed::Binary(out))
}
