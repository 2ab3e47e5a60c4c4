//! Fuzz target: the server's per-message step (`sente_proto::server::message`) never panics on
//! any bytes, for every packer and both WebSocket frame kinds and Ajax POSTs, and never lets a
//! client's message pass for one of the server's own events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sente_proto::Limits;
use sente_proto::packer::by_name;
use sente_proto::server::message::{ajax_post, ws_message};

const SERVER_MADE: [&str; 3] = ["chsk/uidport-open", "chsk/uidport-close", "chsk/handshake"];

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default().max_message_bytes(1 << 16).max_collection_len(10_000);
    for name in ["edn", "json", "transit", "msgpack"] {
        let packer = by_name(name).expect("packer");
        for binary in [false, true] {
            let inbound = ws_message(&*packer, data, binary, &limits);
            if let Some(ev) = &inbound.event {
                assert!(!SERVER_MADE.contains(&ev.id().as_str()), "forged {}", ev.id());
            }
        }
        if let Ok(inbound) = ajax_post(&*packer, data, &limits) {
            if let Some(ev) = &inbound.event {
                assert!(!SERVER_MADE.contains(&ev.id().as_str()), "forged {}", ev.id());
            }
        }
    }
});
