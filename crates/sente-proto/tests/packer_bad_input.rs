//! Hostile input for every unpacker: limits hold, nothing panics.

use std::io::Write;
use std::sync::Arc;

use proptest::prelude::*;
use sente_proto::packer::{self, GzipPacker, MsgpackPacker, Packer, TransitPacker};
use sente_proto::{Limits, UnpackError};

const NAMES: &[&str] = &[
    "edn",
    "transit",
    "json",
    "msgpack",
    "edn+gzip",
    "transit+gzip",
    "json+gzip",
    "msgpack+gzip",
];

fn all() -> Vec<Arc<dyn Packer>> {
    let mut v: Vec<Arc<dyn Packer>> = NAMES.iter().map(|n| packer::by_name(n).unwrap()).collect();
    v.push(Arc::new(TransitPacker::verbose()));
    v
}

fn text_packers() -> Vec<Arc<dyn Packer>> {
    ["edn", "transit", "json"]
        .iter()
        .map(|n| packer::by_name(n).unwrap())
        .collect()
}

/// Wraps raw inner bytes for a gzip packer (flag 0x00).
fn raw(p: &dyn Packer, bytes: &[u8]) -> Vec<u8> {
    if p.name().ends_with("+gzip") {
        let mut v = vec![0u8];
        v.extend_from_slice(bytes);
        v
    } else {
        bytes.to_vec()
    }
}

fn is_text_inner(p: &dyn Packer) -> bool {
    !p.name().starts_with("msgpack")
}

#[test]
fn too_large_is_rejected_before_work() {
    let limits = Limits::default().max_message_bytes(100);
    for p in all() {
        let input = vec![b' '; 101];
        assert_eq!(
            p.unpack(&input, &limits),
            Err(UnpackError::TooLarge {
                size: 101,
                limit: 100
            }),
            "{}",
            p.name()
        );
    }
}

#[test]
fn deep_nesting_is_too_deep() {
    let limits = Limits::default();
    for p in all() {
        let (open, close): (&[u8], &[u8]) = if is_text_inner(&*p) {
            (b"[", b"]")
        } else {
            (&[0x91], &[])
        };
        let mut input = open.repeat(10_000);
        input.extend_from_slice(b"1");
        input.extend_from_slice(&close.repeat(10_000));
        let input = raw(&*p, &input);
        assert_eq!(
            p.unpack(&input, &limits),
            Err(UnpackError::TooDeep { limit: 64 }),
            "{}",
            p.name()
        );
        // 64 levels are fine.
        let mut ok = open.repeat(64);
        ok.extend_from_slice(b"1");
        ok.extend_from_slice(&close.repeat(64));
        assert!(p.unpack(&raw(&*p, &ok), &limits).is_ok(), "{}", p.name());
    }
    // Transit maps and JSON objects count too.
    let deep_obj = "{\"a\":".repeat(100) + "1" + &"}".repeat(100);
    for p in [
        packer::by_name("json").unwrap(),
        Arc::new(TransitPacker::verbose()) as Arc<dyn Packer>,
    ] {
        assert_eq!(
            p.unpack(deep_obj.as_bytes(), &limits),
            Err(UnpackError::TooDeep { limit: 64 })
        );
    }
    // msgpack nested sets (ext 4) and maps.
    let mut sets = Vec::new();
    for _ in 0..100 {
        sets.extend_from_slice(&[0x81, 0xa1, b'k']);
    }
    sets.push(0xc0);
    assert_eq!(
        MsgpackPacker.unpack(&sets, &limits),
        Err(UnpackError::TooDeep { limit: 64 })
    );
}

#[test]
fn one_megabyte_of_open_brackets() {
    let limits = Limits::default();
    let input = vec![b'['; 1 << 20];
    for p in all() {
        let r = p.unpack(&raw(&*p, &input), &limits);
        if is_text_inner(&*p) {
            let r = if p.name().ends_with("+gzip") {
                // One extra flag byte puts it over the limit.
                assert!(
                    matches!(r, Err(UnpackError::TooLarge { .. })),
                    "{}: {r:?}",
                    p.name()
                );
                p.unpack(&raw(&*p, &input[1..]), &limits)
            } else {
                r
            };
            assert_eq!(r, Err(UnpackError::TooDeep { limit: 64 }), "{}", p.name());
        }
    }
}

#[test]
fn huge_declared_lengths() {
    let limits = Limits::default().max_collection_len(usize::MAX);
    for input in [
        &[0xdd, 0xff, 0xff, 0xff, 0xff][..],      // array of 2^32-1
        &[0xdf, 0xff, 0xff, 0xff, 0xff],          // map
        &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],    // str
        &[0xc6, 0xff, 0xff, 0xff, 0xff, 0],       // bin
        &[0xc9, 0xff, 0xff, 0xff, 0xff, 4, 0x91], // ext set
        &[0xc9, 0x00, 0x10, 0x00, 0x00, 5, 0],    // typed array
        &[0xdc, 0xff, 0xff],
        &[0xd5, 4, 0xdd, 0xff],
        &[0xc7, 0x01, 0x04, 0xdd, 0xff, 0xff, 0xff, 0xff],
    ] {
        let r = MsgpackPacker.unpack(input, &limits);
        assert!(
            matches!(r, Err(UnpackError::Malformed { .. })),
            "{input:x?}: {r:?}"
        );
        let r = MsgpackPacker.unpack(input, &Limits::default());
        assert!(
            matches!(
                r,
                Err(UnpackError::Malformed { .. } | UnpackError::TooLong { .. })
            ),
            "{r:?}"
        );
    }
    // Over the collection limit, even with the bytes present.
    let limits = Limits::default().max_collection_len(3);
    assert!(matches!(
        MsgpackPacker.unpack(&[0x94, 1, 2, 3, 4], &limits),
        Err(UnpackError::TooLong { len: 4, limit: 3 })
    ));
    for p in text_packers() {
        assert!(
            matches!(
                p.unpack(b"[1,2,3,4]", &limits),
                Err(UnpackError::TooLong { .. })
            ),
            "{}",
            p.name()
        );
    }
    assert!(matches!(
        packer::by_name("transit")
            .unwrap()
            .unpack(br#"["^ ","a",1,"b",2,"c",3,"d",4]"#, &limits),
        Err(UnpackError::TooLong { .. })
    ));
    assert!(matches!(
        packer::by_name("json")
            .unwrap()
            .unpack(br#"{"a":1,"b":2,"c":3,"d":4}"#, &limits),
        Err(UnpackError::TooLong { .. })
    ));
}

#[test]
fn gzip_bomb_is_too_large() {
    let mut enc = flate2::write::GzEncoder::new(vec![1u8], flate2::Compression::best());
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..16 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 100_000);
    let p = GzipPacker::new(packer::by_name("json").unwrap());
    assert!(matches!(
        p.unpack(&bomb, &Limits::default()),
        Err(UnpackError::TooLarge { .. })
    ));
    // Truncated and garbage gzip bodies are malformed, not panics.
    assert!(
        p.unpack(&bomb[..bomb.len() / 2], &Limits::default())
            .is_err()
    );
    assert!(
        p.unpack(&[1, 0x1f, 0x8b, 0, 0], &Limits::default())
            .is_err()
    );
    assert!(p.unpack(&[], &Limits::default()).is_err());
}

#[test]
fn malformed_text() {
    let l = Limits::default();
    for p in text_packers() {
        for bad in [
            &b"[1,"[..],
            b"[1 2",
            b"{\"a\"",
            b"\"\\u12",
            b"\"\\ud800\"",
            b"[tru]",
            b"\xff\xfe",
            b"01x",
        ] {
            let _ = p.unpack(bad, &l); // must not panic
        }
        assert!(
            matches!(
                p.unpack(b"[\"\xff\"]", &l),
                Err(UnpackError::NotUtf8 { offset: 2 })
            ),
            "{}",
            p.name()
        );
    }
    let t = packer::by_name("transit").unwrap();
    for bad in [
        r#"["^9"]"#,
        r#"["^"]"#,
        r#"["~#set"]"#,
        r#"["~#cmap",[1]]"#,
        r#""~""#,
        r#"["~uX"]"#,
        r#"["~#"]"#,
    ] {
        assert!(t.unpack(bad.as_bytes(), &l).is_err(), "{bad}");
    }
    let j = packer::by_name("json").unwrap();
    for bad in [
        r#"{"~#uuid":"x"}"#,
        r#"{"~#ratio":[1]}"#,
        r#"{"~#char":"ab"}"#,
        "[1]x",
        "1.",
        "-",
        "[01]",
    ] {
        assert!(j.unpack(bad.as_bytes(), &l).is_err(), "{bad}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let limits = Limits::default().max_collection_len(1000);
        for p in all() {
            let _ = p.unpack(&bytes, &limits);
        }
    }

    #[test]
    fn random_json_like_text_never_panics(text in "[\\[\\]{}\",:~^#0-9a-z\\\\ .eE+-]{0,64}") {
        for p in all() {
            let _ = p.unpack(&raw(&*p, text.as_bytes()), &Limits::default());
        }
    }

    #[test]
    fn random_msgpack_like_bytes_never_panic(
        bytes in proptest::collection::vec(prop_oneof![
            Just(0x90u8), Just(0x81), Just(0xd4), Just(0x08), Just(0x00), Just(0x04), Just(0xc7),
            Just(0xff), Just(0xa1), Just(0x61), Just(0xd5), Just(0x03), Just(0x91), Just(0xdd), any::<u8>()
        ], 0..64)
    ) {
        let _ = MsgpackPacker.unpack(&bytes, &Limits::default());
    }
}
