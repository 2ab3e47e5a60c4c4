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

fn vector_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/edn-vectors")
}

/// The JSON lines of a shared vector file (`tests/data/edn-vectors`, also read by the JS tests).
fn vector_file(name: &str) -> Vec<serde_json::Value> {
    let path = vector_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
        .collect()
}

fn field<'a>(rec: &'a serde_json::Value, key: &str) -> &'a str {
    rec[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key:?} in {rec}"))
}

/// The canonical texts of one group of `round-trip.jsonl`.
fn round_trip_group(group: &str) -> Vec<String> {
    vector_file("round-trip.jsonl")
        .iter()
        .filter(|r| r["group"] == group)
        .map(|r| field(r, "edn").to_owned())
        .collect()
}

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
    let (envelopes, legacy) = (round_trip_group("envelope"), round_trip_group("legacy"));
    // §12.1 has 17 envelope vectors (including two ping/pong forms), §12.2 three legacy ones.
    assert_eq!((envelopes.len(), legacy.len()), (17, 3));
    for text in envelopes.iter().chain(&legacy) {
        round_trip(text);
    }
}

#[test]
fn shared_vector_files() {
    let mut n = 0;
    for rec in vector_file("round-trip.jsonl") {
        round_trip(field(&rec, "edn"));
        n += 1;
    }
    for rec in vector_file("normalize.jsonl") {
        let (input, out) = (field(&rec, "in"), field(&rec, "out"));
        let v = read(input, &ReadOptions::default()).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(to_edn_string(&v), out, "{input:?}");
        n += 1;
    }
    for rec in vector_file("invalid.jsonl") {
        let input = field(&rec, "in");
        assert!(
            read(input, &ReadOptions::default()).is_err(),
            "{input:?} should not read"
        );
        n += 1;
    }
    assert!(n > 200, "only {n} vectors");
}

#[test]
fn envelope_vector_contents() {
    let (envelopes, legacy) = (round_trip_group("envelope"), round_trip_group("legacy"));
    let v = read(&envelopes[15], &ReadOptions::default()).unwrap();
    let m = &v.as_seq().unwrap()[0].as_seq().unwrap()[0]
        .as_seq()
        .unwrap()[1];
    let m = m.as_map().unwrap();
    assert!(matches!(m.get_kw("id"), Some(Value::Uuid(_))));
    let Some(Value::Inst(at)) = m.get_kw("at") else {
        panic!("no inst")
    };
    assert_eq!(at.as_millis(), 1_704_164_645_678);

    let v = read(&envelopes[16], &ReadOptions::default()).unwrap();
    let s = v.as_seq().unwrap()[0].as_seq().unwrap()[0]
        .as_seq()
        .unwrap()[1]
        .as_str()
        .unwrap();
    assert_eq!(s, "quote\" backslash\\ nl\n tab\t uni é");

    let v = read(&legacy[1], &ReadOptions::default()).unwrap();
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
