//! The seeds of the `inbound` fuzz target (`fuzz/corpus/inbound`) go through the server's
//! per-message step in ordinary `cargo test`: no panic on any packer or frame kind, and no
//! client message passes for one of the server's own events.

use sente_proto::Limits;
use sente_proto::packer::by_name;
use sente_proto::server::message::{ajax_post, ws_message};

const SERVER_MADE: [&str; 3] = ["chsk/uidport-open", "chsk/uidport-close", "chsk/handshake"];

#[test]
fn inbound_corpus_seeds_are_classified_safely() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/inbound");
    let limits = Limits::default();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus present") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        n += 1;
        for name in ["edn", "json", "transit", "msgpack"] {
            let packer = by_name(name).unwrap();
            let mut events = Vec::new();
            for binary in [false, true] {
                events.extend(ws_message(&*packer, &data, binary, &limits).event);
            }
            if let Ok(i) = ajax_post(&*packer, &data, &limits) {
                events.extend(i.event);
            }
            for ev in events {
                assert!(
                    !SERVER_MADE.contains(&ev.id().as_str()),
                    "{name} let {} through",
                    ev.id()
                );
            }
        }
    }
    assert!(n >= 8, "expected the seed corpus, found {n} files");
}
