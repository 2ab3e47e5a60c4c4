//! The packer test vectors of the protocol spec: §12.1 (edn), §12.7 (transit), §12.8 (msgpack),
//! §12.9 (gzip), plus the JSON packer examples.

// Every vector is a raw string, hashes or not, so they read alike.
#![allow(clippy::needless_raw_string_hashes)]

use sente_edn::{Inst, Keyword, Map, Ratio, Set, Symbol, Value};
use sente_proto::Limits;
use sente_proto::packer::{
    self, GzipPacker, JsonPacker, MsgpackPacker, Packed, Packer, TransitPacker,
};
use std::sync::Arc;

fn kw(s: &str) -> Value {
    Value::Keyword(Keyword::new(s))
}
fn s(x: &str) -> Value {
    Value::Str(x.to_owned())
}
fn v(items: Vec<Value>) -> Value {
    Value::Vector(items)
}
fn m(entries: Vec<(Value, Value)>) -> Value {
    let mut map = Map::new();
    for (k, x) in entries {
        map.insert(k, x);
    }
    Value::Map(map)
}
const NIL: Value = Value::Nil;
fn i(n: i64) -> Value {
    Value::Int(n)
}
fn uuid() -> Value {
    Value::Uuid(uuid::Uuid::parse_str("66d96ab4-9834-40db-a3cd-42b361503ab9").unwrap())
}

fn hex(h: &str) -> Vec<u8> {
    h.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn text_vector(p: &dyn Packer, value: &Value, wire: &str) {
    assert_eq!(
        p.pack(value).unwrap(),
        Packed::Text(wire.to_owned()),
        "pack {value:?}"
    );
    assert_eq!(
        &p.unpack(wire.as_bytes(), &Limits::default()).unwrap(),
        value,
        "unpack {wire}"
    );
}

fn bin_vector(value: &Value, wire: &str) {
    let p = MsgpackPacker;
    assert_eq!(
        p.pack(value).unwrap(),
        Packed::Binary(hex(wire)),
        "pack {value:?}"
    );
    assert_eq!(
        &p.unpack(&hex(wire), &Limits::default()).unwrap(),
        value,
        "unpack {wire}"
    );
}

// ---- §12.1 edn ----

const EDN_VECTORS: &[&str] = &[
    r#"[[:chsk/handshake [:sente/nil-uid nil nil]] nil]"#,
    r#"[[:chsk/handshake ["alice" nil {:role :admin}]] nil]"#,
    r#"[[[:my-app/alert {:msg "hi"}]] nil]"#,
    r#"[[[:my-app/a 1] [:my-app/b {:x [1 2 3], :y "s"}]] nil]"#,
    r#"[:chsk/ws-ping nil]"#,
    r#"[[:chsk/ws-pong] nil]"#,
    r#"[[:chsk/ws-ping] "a1b2c3"]"#,
    r#"["pong" "a1b2c3"]"#,
    r#"[[:my-app/req {:n 42}] nil]"#,
    r#"[[:my-app/req {:n 42}] "3f2a9c"]"#,
    r#"[{:ok? true, :n 43} "3f2a9c"]"#,
    r#"[[:my-app/req {:n 42}] :ajax]"#,
    r#"[:chsk/dummy-cb-200 nil]"#,
    r#"[{:ok? true} nil]"#,
    r#"[:chsk/timeout nil]"#,
    r#"[[[:my-app/t {:id #uuid "66d96ab4-9834-40db-a3cd-42b361503ab9", :at #inst "2024-01-02T03:04:05.678-00:00"}]] nil]"#,
    "[[[:my-app/s \"quote\\\" backslash\\\\ nl\\n tab\\t uni é\"]] nil]",
];

fn edn() -> Arc<dyn Packer> {
    packer::by_name("edn").expect("edn packer")
}

#[test]
fn edn_vectors_12_1() {
    let p = edn();
    for wire in EDN_VECTORS {
        let value = p.unpack(wire.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            p.pack(&value).unwrap(),
            Packed::Text((*wire).to_owned()),
            "{wire}"
        );
    }
}

#[test]
fn edn_vector_1_value() {
    let value = v(vec![
        v(vec![
            kw("chsk/handshake"),
            v(vec![kw("sente/nil-uid"), NIL, NIL]),
        ]),
        NIL,
    ]);
    text_vector(
        &*edn(),
        &value,
        "[[:chsk/handshake [:sente/nil-uid nil nil]] nil]",
    );
    let tagged = edn()
        .unpack(EDN_VECTORS[15].as_bytes(), &Limits::default())
        .unwrap();
    let ev = &tagged.as_seq().unwrap()[0].as_seq().unwrap()[0]
        .as_seq()
        .unwrap()[1];
    let map = ev.as_map().unwrap();
    assert_eq!(map.get_kw("id"), Some(&uuid()));
    assert_eq!(
        map.get_kw("at"),
        Some(&Value::Inst(Inst::from_millis(1_704_164_645_678)))
    );
}

#[test]
fn edn_rules() {
    let p = edn();
    let l = Limits::default();
    assert_eq!(p.unpack(b"", &l).unwrap(), NIL);
    assert_eq!(p.unpack(b" \n\t ", &l).unwrap(), NIL);
    assert_eq!(
        p.unpack(b"[:a 1] trailing junk", &l).unwrap(),
        v(vec![kw("a"), i(1)])
    );
    assert!(
        p.unpack(b"#my/tag 1", &l).is_err(),
        "unknown tags are an error"
    );
    assert!(p.pack(&Value::Bytes(vec![1])).is_err());
    assert!(matches!(
        p.unpack(b"\xff", &l),
        Err(sente_proto::UnpackError::NotUtf8 { offset: 0 })
    ));
    // Vector 20: legacy prefixes read as a symbol.
    assert_eq!(
        p.unpack(b"+[[:my/ev 1] \"abc123\"]", &l).unwrap(),
        Value::Symbol(Symbol::new("+"))
    );
}

// ---- §12.7 transit ----

fn handshake_alice() -> Value {
    v(vec![
        v(vec![
            kw("chsk/handshake"),
            v(vec![s("alice"), NIL, m(vec![(kw("role"), kw("admin"))])]),
        ]),
        NIL,
    ])
}

#[test]
fn transit_vector_51() {
    let value = v(vec![
        v(vec![
            kw("chsk/handshake"),
            v(vec![kw("sente/nil-uid"), NIL, NIL]),
        ]),
        NIL,
    ]);
    text_vector(
        &TransitPacker::new(),
        &value,
        r#"[["~:chsk/handshake",["~:sente/nil-uid",null,null]],null]"#,
    );
}

#[test]
fn transit_vector_52() {
    text_vector(
        &TransitPacker::new(),
        &handshake_alice(),
        r#"[["~:chsk/handshake",["alice",null,["^ ","~:role","~:admin"]]],null]"#,
    );
    text_vector(
        &TransitPacker::verbose(),
        &handshake_alice(),
        r#"[["~:chsk/handshake",["alice",null,{"~:role":"~:admin"}]],null]"#,
    );
}

#[test]
fn transit_vector_53_cache() {
    let value = v(vec![
        v(vec![
            v(vec![kw("my-app/a"), i(1)]),
            v(vec![
                kw("my-app/a"),
                m(vec![
                    (kw("x"), v(vec![i(1), i(2), i(3)])),
                    (kw("y"), s("s")),
                ]),
            ]),
        ]),
        NIL,
    ]);
    text_vector(
        &TransitPacker::new(),
        &value,
        r#"[[["~:my-app/a",1],["^0",["^ ","~:x",[1,2,3],"~:y","s"]]],null]"#,
    );
}

#[test]
fn transit_vector_54_55() {
    let p = TransitPacker::new();
    text_vector(
        &p,
        &v(vec![kw("chsk/ws-ping"), NIL]),
        r#"["~:chsk/ws-ping",null]"#,
    );
    text_vector(&p, &v(vec![s("pong"), s("a1b2c3")]), r#"["pong","a1b2c3"]"#);
    text_vector(
        &p,
        &v(vec![v(vec![kw("chsk/ws-ping")]), s("a1b2c3")]),
        r#"[["~:chsk/ws-ping"],"a1b2c3"]"#,
    );
    text_vector(
        &p,
        &v(vec![v(vec![kw("chsk/ws-pong")]), NIL]),
        r#"[["~:chsk/ws-pong"],null]"#,
    );
    text_vector(
        &p,
        &v(vec![
            v(vec![kw("my-app/req"), m(vec![(kw("n"), i(42))])]),
            kw("ajax"),
        ]),
        r#"[["~:my-app/req",["^ ","~:n",42]],"~:ajax"]"#,
    );
    text_vector(
        &p,
        &v(vec![kw("chsk/dummy-cb-200"), NIL]),
        r#"["~:chsk/dummy-cb-200",null]"#,
    );
    text_vector(
        &p,
        &v(vec![kw("chsk/timeout"), NIL]),
        r#"["~:chsk/timeout",null]"#,
    );
}

#[test]
fn transit_vector_56_uuid_set() {
    let tags: Set = [i(1)].into_iter().collect();
    let value = v(vec![
        v(vec![v(vec![
            kw("my-app/t"),
            m(vec![(kw("id"), uuid()), (kw("tags"), Value::Set(tags))]),
        ])]),
        NIL,
    ]);
    text_vector(
        &TransitPacker::new(),
        &value,
        r#"[[["~:my-app/t",["^ ","~:id","~u66d96ab4-9834-40db-a3cd-42b361503ab9","~:tags",["~#set",[1]]]]],null]"#,
    );
}

#[test]
fn transit_vector_57_map_key_cache() {
    let value = v(vec![
        v(vec![
            m(vec![(kw("abcd"), i(1))]),
            m(vec![(kw("abcd"), i(2))]),
        ]),
        NIL,
    ]);
    text_vector(
        &TransitPacker::new(),
        &value,
        r#"[[["^ ","~:abcd",1],["^ ","^0",2]],null]"#,
    );
    // String map keys over 3 chars are cached too; shorter ones are not.
    let value = v(vec![
        m(vec![(s("long"), i(1)), (s("abc"), i(2))]),
        m(vec![(s("long"), i(3)), (s("abc"), i(4))]),
    ]);
    text_vector(
        &TransitPacker::new(),
        &value,
        r#"[["^ ","long",1,"abc",2],["^ ","^0",3,"abc",4]]"#,
    );
}

#[test]
fn transit_scalars_and_escapes() {
    let p = TransitPacker::new();
    let value = v(vec![
        s("~tilde"),
        s("^caret"),
        s("`tick"),
        Value::Char('a'),
        Value::Symbol(Symbol::new("foo/bar")),
        Value::Inst(Inst::from_millis(1_704_164_645_678)),
        Value::Float(1.5),
        i(1 << 60),
        Value::List(vec![i(1)]),
        Value::Ratio(Box::new(Ratio {
            numer: i(1),
            denom: i(3),
        })),
        m(vec![(v(vec![i(1)]), i(2))]),
        Value::Bytes(vec![1, 2, 3]),
    ]);
    text_vector(
        &p,
        &value,
        r#"["~~tilde","~^caret","~`tick","~ca","~$foo/bar","~m1704164645678",1.5,"~i1152921504606846976",["~#list",[1]],["~#ratio",["~n1","~n3"]],["~#cmap",[[1],2]],"~bAQID"]"#,
    );
    // Top-level scalars are quoted.
    text_vector(&p, &NIL, r#"["~#'",null]"#);
    text_vector(&TransitPacker::verbose(), &kw("a"), r#"{"~#'":"~:a"}"#);
    text_vector(
        &TransitPacker::verbose(),
        &v(vec![Value::Inst(Inst::from_millis(1_704_164_645_678))]),
        r#"["~t2024-01-02T03:04:05.678Z"]"#,
    );
}

// ---- §12.8 msgpack ----

#[test]
fn msgpack_vectors_58_to_61() {
    bin_vector(
        &v(vec![kw("chsk/ws-ping"), NIL]),
        "92 c7 0c 00 63 68 73 6b 2f 77 73 2d 70 69 6e 67 c0",
    );
    bin_vector(
        &v(vec![v(vec![kw("chsk/ws-pong")]), NIL]),
        "92 91 c7 0c 00 63 68 73 6b 2f 77 73 2d 70 6f 6e 67 c0",
    );
    bin_vector(
        &v(vec![v(vec![kw("chsk/ws-ping")]), s("a1b2c3")]),
        "92 91 c7 0c 00 63 68 73 6b 2f 77 73 2d 70 69 6e 67 a6 61 31 62 32 63 33",
    );
    bin_vector(
        &v(vec![s("pong"), s("a1b2c3")]),
        "92 a4 70 6f 6e 67 a6 61 31 62 32 63 33",
    );
}

#[test]
fn msgpack_vectors_62_to_64() {
    bin_vector(
        &v(vec![
            v(vec![
                kw("chsk/handshake"),
                v(vec![kw("sente/nil-uid"), NIL, NIL]),
            ]),
            NIL,
        ]),
        "92 92 c7 0e 00 63 68 73 6b 2f 68 61 6e 64 73 68 61 6b 65 93 c7 0d 00 73 65 6e 74 65 2f 6e 69 6c 2d 75 69 64 c0 c0 c0",
    );
    bin_vector(
        &handshake_alice(),
        "92 92 c7 0e 00 63 68 73 6b 2f 68 61 6e 64 73 68 61 6b 65 93 a5 61 6c 69 63 65 c0 81 d6 00 72 6f 6c 65 c7 05 00 61 64 6d 69 6e c0",
    );
    bin_vector(
        &v(vec![
            v(vec![
                v(vec![kw("my-app/a"), i(1)]),
                v(vec![
                    kw("my-app/b"),
                    m(vec![
                        (kw("x"), v(vec![i(1), i(2), i(3)])),
                        (kw("y"), s("s")),
                    ]),
                ]),
            ]),
            NIL,
        ]),
        "92 92 92 d7 00 6d 79 2d 61 70 70 2f 61 01 92 d7 00 6d 79 2d 61 70 70 2f 62 82 d4 00 78 93 01 02 03 d4 00 79 a1 73 c0",
    );
}

const V65: &str = "92 92 c7 0a 00 6d 79 2d 61 70 70 2f 72 65 71 81 d4 00 6e 2a d6 00 61 6a 61 78";

fn v65_value() -> Value {
    v(vec![
        v(vec![kw("my-app/req"), m(vec![(kw("n"), i(42))])]),
        kw("ajax"),
    ])
}

#[test]
fn msgpack_vectors_65_to_67() {
    bin_vector(&v65_value(), V65);
    bin_vector(
        &v(vec![m(vec![(kw("ok?"), Value::Bool(true))]), s("3f2a9c")]),
        "92 81 c7 03 00 6f 6b 3f c3 a6 33 66 32 61 39 63",
    );
    bin_vector(
        &v(vec![kw("chsk/dummy-cb-200"), NIL]),
        "92 c7 11 00 63 68 73 6b 2f 64 75 6d 6d 79 2d 63 62 2d 32 30 30 c0",
    );
    bin_vector(
        &v(vec![kw("chsk/timeout"), NIL]),
        "92 c7 0c 00 63 68 73 6b 2f 74 69 6d 65 6f 75 74 c0",
    );
}

#[test]
fn msgpack_vector_68_key_cache() {
    bin_vector(
        &v(vec![
            v(vec![m(vec![(kw("a"), i(1))]), m(vec![(kw("a"), i(2))])]),
            NIL,
        ]),
        "92 92 81 d4 00 61 01 81 d4 08 00 02 c0",
    );
    let decoded = MsgpackPacker
        .unpack(&hex("92 81 a1 6b 01 81 d4 08 00 02"), &Limits::default())
        .unwrap();
    assert_eq!(
        decoded,
        v(vec![m(vec![(s("k"), i(1))]), m(vec![(s("k"), i(2))])])
    );
    // And packing string keys caches them the same way.
    assert_eq!(
        MsgpackPacker.pack(&decoded).unwrap().into_bytes(),
        hex("92 81 a1 6b 01 81 d4 08 00 02")
    );
}

#[test]
fn msgpack_vector_69_ext_types() {
    let one: Set = [i(1)].into_iter().collect();
    bin_vector(&Value::Set(one), "d5 04 91 01");
    let uuid_hex: String = b"66d96ab4-9834-40db-a3cd-42b361503ab9"
        .iter()
        .fold(String::from("c7 24 09"), |acc, b| {
            acc + &format!(" {b:02x}")
        });
    bin_vector(&uuid(), &uuid_hex);
    bin_vector(
        &Value::Inst(Inst {
            secs: 1,
            nanos: 500,
        }),
        "c7 0c ff 00 00 01 f4 00 00 00 00 00 00 00 01",
    );
}

#[test]
fn msgpack_vector_70_scalars() {
    bin_vector(
        &v(vec![
            Value::Symbol(Symbol::new("foo/bar")),
            Value::Char('a'),
            Value::Ratio(Box::new(Ratio {
                numer: i(1),
                denom: i(3),
            })),
        ]),
        "93 c7 07 01 66 6f 6f 2f 62 61 72 d4 02 61 d5 03 01 03",
    );
    bin_vector(&Value::Bytes(vec![1, 2, 3]), "c4 03 01 02 03");
    bin_vector(&Value::Float(1.5), "cb 3f f8 00 00 00 00 00 00");
    assert_eq!(
        MsgpackPacker
            .unpack(&hex("ca 3f c0 00 00"), &Limits::default())
            .unwrap(),
        Value::Float(1.5)
    );
    bin_vector(&i(4_294_967_296), "d3 00 00 00 01 00 00 00 00");
    bin_vector(&i(-33), "d0 df");
}

#[test]
fn msgpack_vector_71_trailing_zeros() {
    let mut bytes = hex(V65);
    bytes.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        MsgpackPacker.unpack(&bytes, &Limits::default()).unwrap(),
        v65_value()
    );
}

#[test]
fn msgpack_int_forms_and_unknown_ext() {
    for (n, h) in [
        (0, "00"),
        (127, "7f"),
        (128, "cc 80"),
        (255, "cc ff"),
        (256, "cd 01 00"),
        (65_536, "ce 00 01 00 00"),
        (-1, "ff"),
        (-32, "e0"),
        (-128, "d0 80"),
        (-129, "d1 ff 7f"),
        (-32_769, "d2 ff ff 7f ff"),
        (i64::MIN, "d3 80 00 00 00 00 00 00 00"),
    ] {
        bin_vector(&i(n), h);
    }
    let big = Value::BigInt(sente_edn::BigInt::parse("18446744073709551615").unwrap());
    bin_vector(&big, "cf ff ff ff ff ff ff ff ff");
    assert_eq!(
        MsgpackPacker
            .unpack(&hex("cf 00 00 00 00 00 00 00 05"), &Limits::default())
            .unwrap(),
        i(5)
    );
    let ext = Value::Tagged(Box::new(sente_edn::Tagged {
        tag: Symbol::new("sente/ext-42"),
        value: Value::Bytes(vec![7, 8, 9]),
    }));
    bin_vector(&ext, "c7 03 2a 07 08 09");
    // Typed arrays decode to vectors.
    assert_eq!(
        MsgpackPacker
            .unpack(&hex("d7 05 00 00 00 01 ff ff ff ff"), &Limits::default())
            .unwrap(),
        v(vec![i(1), i(-1)])
    );
}

// ---- §12.9 gzip ----

#[test]
fn gzip_vector_72() {
    let p = packer::by_name("edn+gzip").unwrap();
    assert_eq!(p.name(), "edn+gzip");
    let value = v(vec![kw("chsk/ws-ping"), NIL]);
    let mut expected = vec![0u8];
    expected.extend_from_slice(b"[:chsk/ws-ping nil]");
    assert_eq!(p.pack(&value).unwrap(), Packed::Binary(expected.clone()));
    assert_eq!(p.unpack(&expected, &Limits::default()).unwrap(), value);
}

#[test]
fn gzip_vector_73_round_trip() {
    for inner in ["edn", "transit", "json", "msgpack"] {
        let p = GzipPacker::new(packer::by_name(inner).unwrap());
        let value = v(vec![v(vec![kw("my-app/big"), s(&"x".repeat(5000))]), NIL]);
        let packed = p.pack(&value).unwrap().into_bytes();
        assert_eq!(packed[0], 1, "{inner}");
        assert_eq!(&packed[1..3], &[0x1f, 0x8b], "a gzip member follows");
        assert!(packed.len() < 1000);
        assert_eq!(p.unpack(&packed, &Limits::default()).unwrap(), value);
        let unlimited = Limits::default().max_message_bytes(usize::MAX);
        assert_eq!(p.unpack(&packed, &unlimited).unwrap(), value);
    }
    // Exactly at the threshold compresses; one below does not.
    let p = GzipPacker::new(Arc::new(JsonPacker));
    let at = s(&"y".repeat(1022)); // `"` + 1022 + `"` = 1024 bytes
    assert_eq!(p.pack(&at).unwrap().as_bytes()[0], 1);
    let below = s(&"y".repeat(1021));
    assert_eq!(p.pack(&below).unwrap().as_bytes()[0], 0);
}

// ---- JSON packer ----

#[test]
fn json_examples() {
    let p = JsonPacker;
    text_vector(
        &p,
        &v(vec![
            v(vec![
                kw("chsk/handshake"),
                v(vec![kw("sente/nil-uid"), NIL, NIL]),
            ]),
            NIL,
        ]),
        r#"[[":chsk/handshake",[":sente/nil-uid",null,null]],null]"#,
    );
    text_vector(
        &p,
        &v(vec![
            v(vec![
                kw("my-app/a"),
                m(vec![
                    (kw("x"), v(vec![i(1), i(2), i(3)])),
                    (kw("y"), s("s")),
                ]),
            ]),
            s("3f2a9c"),
        ]),
        r#"[[":my-app/a",{"x":[1,2,3],"y":"s"}],"3f2a9c"]"#,
    );
}

#[test]
fn json_mapping_table() {
    let p = JsonPacker;
    let value = v(vec![
        Value::Float(1.0),
        Value::Bool(false),
        s(":x"),
        s("~a"),
        Value::BigInt(sente_edn::BigInt::parse("123456789012345678901234567890").unwrap()),
        Value::BigDec(sente_edn::BigDec::parse("1.5").unwrap()),
        Value::Ratio(Box::new(Ratio {
            numer: i(1),
            denom: i(3),
        })),
        Value::Set([i(1)].into_iter().collect()),
        Value::Inst(Inst::from_millis(1_704_164_645_678)),
        uuid(),
        Value::Char('a'),
        Value::Symbol(Symbol::new("foo/bar")),
        Value::Bytes(vec![1, 2, 3]),
        Value::Tagged(Box::new(sente_edn::Tagged {
            tag: Symbol::new("my/point"),
            value: v(vec![i(1), i(2)]),
        })),
        m(vec![(i(1), kw("a"))]),
        m(vec![(kw("~k"), i(1))]),
    ]);
    text_vector(
        &p,
        &value,
        concat!(
            r#"[1.0,false,"~:x","~~a",{"~#bigint":"123456789012345678901234567890"},{"~#bigdec":"1.5"},"#,
            r#"{"~#ratio":[1,3]},{"~#set":[1]},{"~#inst":"2024-01-02T03:04:05.678Z"},"#,
            r#"{"~#uuid":"66d96ab4-9834-40db-a3cd-42b361503ab9"},{"~#char":"a"},{"~#sym":"foo/bar"},"#,
            r#"{"~#bytes":"AQID"},{"~#tag":["my/point",[1,2]]},{"~#map":[[1,":a"]]},{"~~k":1}]"#
        ),
    );
    // String keys come back as keywords; lists come back as vectors.
    let lossy = m(vec![(s("name"), Value::List(vec![i(1)]))]);
    let packed = p.pack(&lossy).unwrap();
    assert_eq!(packed.as_bytes(), br#"{"name":[1]}"#);
    assert_eq!(
        p.unpack(packed.as_bytes(), &Limits::default()).unwrap(),
        m(vec![(kw("name"), v(vec![i(1)]))])
    );
    // Non-finite floats cannot be packed; unknown tags and empty keywords are errors.
    assert!(p.pack(&Value::Float(f64::NAN)).is_err());
    assert!(p.unpack(br#"{"~#nope":1}"#, &Limits::default()).is_err());
    assert!(p.unpack(br#"":""#, &Limits::default()).is_err());
    // A `~#` key in a multi-key object is an ordinary (escaped) key.
    assert_eq!(
        p.unpack(br#"{"~#set":1,"b":2}"#, &Limits::default())
            .unwrap(),
        m(vec![(kw("#set"), i(1)), (kw("b"), i(2))])
    );
}

#[test]
fn by_name_knows_all() {
    for (name, binary) in [
        ("edn", false),
        ("transit", false),
        ("json", false),
        ("msgpack", true),
        ("edn+gzip", true),
        ("msgpack+gzip", true),
        ("json+gzip", true),
        ("transit+gzip", true),
    ] {
        let p = packer::by_name(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(p.name(), name);
        assert_eq!(p.is_binary(), binary);
    }
    assert!(packer::by_name("nope").is_none());
    assert!(packer::by_name("nope+gzip").is_none());
}
