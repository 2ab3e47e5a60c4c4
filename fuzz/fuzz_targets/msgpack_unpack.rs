//! Fuzz target: `msgpack` unpacking never panics and respects the limits; whatever decodes
//! re-packs without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sente_proto::Limits;
use sente_proto::packer::{MsgpackPacker, Packer};

fuzz_target!(|data: &[u8]| {
    let packer = MsgpackPacker;
    let limits = Limits::default().max_message_bytes(1 << 16).max_collection_len(10_000);
    if let Ok(value) = packer.unpack(data, &limits) {
        let _ = packer.pack(&value);
    }
});
