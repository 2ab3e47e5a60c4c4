//! The edn test vectors of the protocol spec (§12.1, §12.2) and the recorded Sente transcripts:
//! every canonical text reads and prints back byte for byte.

use sente_edn::{ReadOptions, Symbol, Value, read, to_edn_string};

fn round_trip(text: &str) {
    let v = read(text, &ReadOptions::default()).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(to_edn_string(&v), text, "print(read(x)) != x");
    assert_eq!(v.to_string(), text, "Display differs from to_edn_string");
    assert_eq!(
        read(&to_edn_string(&v), &ReadOptions::default()).unwrap(),
        v
    );
}

/// §12.1 EDN envelope vectors.
const ENVELOPES: &[&str] = &[
    "[[:chsk/handshake [:sente/nil-uid nil nil]] nil]",
    r#"[[:chsk/handshake ["alice" nil {:role :admin}]] nil]"#,
    r#"[[[:my-app/alert {:msg "hi"}]] nil]"#,
    r#"[[[:my-app/a 1] [:my-app/b {:x [1 2 3], :y "s"}]] nil]"#,
    "[:chsk/ws-ping nil]",
    "[[:chsk/ws-pong] nil]",
    r#"[[:chsk/ws-ping] "a1b2c3"]"#,
    r#"["pong" "a1b2c3"]"#,
    "[[:my-app/req {:n 42}] nil]",
    r#"[[:my-app/req {:n 42}] "3f2a9c"]"#,
    r#"[{:ok? true, :n 43} "3f2a9c"]"#,
    "[[:my-app/req {:n 42}] :ajax]",
    "[:chsk/dummy-cb-200 nil]",
    "[{:ok? true} nil]",
    "[:chsk/timeout nil]",
    r#"[[[:my-app/t {:id #uuid "66d96ab4-9834-40db-a3cd-42b361503ab9", :at #inst "2024-01-02T03:04:05.678-00:00"}]] nil]"#,
    r#"[[[:my-app/s "quote\" backslash\\ nl\n tab\t uni é"]] nil]"#,
];

/// §12.2 legacy inputs that are plain edn.
const LEGACY: &[&str] = &[
    "[[:my-app/req {:n 42}]]",
    "[[:my-app/req {:n 42}] 0]",
    "[[:chsk/handshake [:sente/nil-uid nil]]]",
];

/// §12.2 vector 19: prefixed legacy forms.
const PREFIXED: &[&str] = &[
    "-[:my-app/req {:n 42}]",
    r#"+[[:my-app/req {:n 42}] "3f2a9c"]"#,
    "+[[:my-app/req {:n 42}] 0]",
    "-:chsk/ws-ping",
    "-[[:my-app/a 1]]",
    "+[[:my-app/req {:n 42}]]",
    "+[:chsk/ws-ping]",
    "+[[[:my-app/a 1]]]",
];

#[test]
fn envelope_vectors_round_trip() {
    for text in ENVELOPES.iter().chain(LEGACY) {
        round_trip(text);
    }
}

#[test]
fn envelope_vector_contents() {
    let v = read(ENVELOPES[15], &ReadOptions::default()).unwrap();
    let m = &v.as_seq().unwrap()[0].as_seq().unwrap()[0]
        .as_seq()
        .unwrap()[1];
    let m = m.as_map().unwrap();
    assert!(matches!(m.get_kw("id"), Some(Value::Uuid(_))));
    let Some(Value::Inst(at)) = m.get_kw("at") else {
        panic!("no inst")
    };
    assert_eq!(at.as_millis(), 1_704_164_645_678);

    let v = read(ENVELOPES[16], &ReadOptions::default()).unwrap();
    let s = v.as_seq().unwrap()[0].as_seq().unwrap()[0]
        .as_seq()
        .unwrap()[1]
        .as_str()
        .unwrap();
    assert_eq!(s, "quote\" backslash\\ nl\n tab\t uni é");

    let v = read(LEGACY[1], &ReadOptions::default()).unwrap();
    assert_eq!(v.as_seq().unwrap()[1], Value::Int(0));
}

#[test]
fn prefixed_legacy_forms_read_as_a_symbol() {
    for text in PREFIXED {
        let v = read(text, &ReadOptions::default()).unwrap();
        let prefix = &text[..1];
        if text[1..].starts_with(':') {
            // `:` continues a symbol token, as in tools.reader: `-:chsk/ws-ping` is one symbol.
            assert_eq!(v, Value::Symbol(Symbol::new(*text)), "{text}");
            continue;
        }
        assert_eq!(v, Value::Symbol(Symbol::new(prefix)), "{text}");
        // What follows the prefix is itself canonical edn.
        round_trip(&text[1..]);
    }
}

fn transcript_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/sente-transcripts")
}

/// Text ws-frame payloads of one transcript file: `(dir, payload)`.
fn ws_text_frames(file: &str) -> Vec<(String, String)> {
    let path = transcript_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        if rec["kind"] == "ws-frame" && rec["opcode"] == "text" {
            let dir = rec["dir"].as_str().unwrap_or_default().to_owned();
            if let Some(payload) = rec["payload"].as_str() {
                out.push((dir, payload.to_owned()));
            }
        }
    }
    out
}

#[test]
fn transcripts_canonical_frames_round_trip() {
    let mut checked = 0;
    for file in [
        "1-ws.jsonl",
        "2-ajax.jsonl",
        "4-keepalive.jsonl",
        "6-close.jsonl",
    ] {
        for (dir, payload) in ws_text_frames(file) {
            assert!(dir == "s2c" || dir == "c2s", "{file}: {dir}");
            round_trip(&payload);
            checked += 1;
        }
    }
    // Server frames of the raw-client scenario are canonical too.
    for (dir, payload) in ws_text_frames("7-raw-ws.jsonl") {
        if dir == "s2c" {
            round_trip(&payload);
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} frames found");
}

#[test]
fn transcripts_ajax_bodies_round_trip() {
    // Ajax response bodies from the real server are pr-str output as well.
    let mut checked = 0;
    for file in [
        "2-ajax.jsonl",
        "2b-ajax-uid-param.jsonl",
        "3-auto-downgrade.jsonl",
    ] {
        let text = std::fs::read_to_string(transcript_dir().join(file)).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let rec: serde_json::Value = serde_json::from_str(line).unwrap();
            if rec["dir"] == "s2c" && rec["kind"] == "http-response" && rec["status"] == 200 {
                // http-kit sends these as text/html; the edn ones are the envelopes.
                let body = rec["body"].as_str().unwrap_or_default();
                if body.starts_with('[') {
                    round_trip(body);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 10, "only {checked} ajax bodies found");
}

#[test]
fn raw_client_frames_never_panic() {
    let strict = ReadOptions {
        unknown_tags: sente_edn::UnknownTags::Error,
        ..ReadOptions::default()
    };
    let mut n = 0;
    for (_, payload) in ws_text_frames("7-raw-ws.jsonl") {
        let _ = read(&payload, &ReadOptions::default());
        let _ = read(&payload, &strict);
        n += 1;
    }
    assert!(n > 30);
    // A few specific ones.
    let r = |s: &str| read(s, &ReadOptions::default());
    assert_eq!(r("").unwrap(), Value::Nil);
    assert!(r(r#"[[:test/echo "x""#).is_err());
    assert!(read(r#"[[:test/echo #foo/bar 1] "cb0018"]"#, &strict).is_err());
    assert!(r(r#"[[:test/echo #foo/bar 1] "cb0018"]"#).is_ok());
    assert_eq!(
        r(r#"[[:test/echo "trailing garbage"] "cb0006"] trailing ]]"#)
            .unwrap()
            .to_string(),
        r#"[[:test/echo "trailing garbage"] "cb0006"]"#
    );
    assert_eq!(
        r(r#"   [[:test/echo "leading whitespace"] "cb0005"]"#)
            .unwrap()
            .to_string(),
        r#"[[:test/echo "leading whitespace"] "cb0005"]"#
    );
}
