//! Property tests: `unpack(pack(v)) == v` for every packer, over the values each packer
//! represents exactly. Also runs every fuzz corpus seed through its decoder.

use std::sync::Arc;

use proptest::prelude::*;
use sente_edn::{BigDec, BigInt, Inst, Keyword, Map, Ratio, Set, Symbol, Tagged, Value};
use sente_proto::Limits;
use sente_proto::packer::{self, GzipPacker, Packer, TransitPacker};

/// What a packer represents exactly.
#[derive(Clone, Copy, Debug)]
struct Caps {
    bytes: bool,
    bigdec: bool,
    /// BigInt range: arbitrary digits, or only (i64::MAX, u64::MAX] (msgpack).
    any_bigint: bool,
    /// Inst precision: nanoseconds (else milliseconds).
    inst_nanos: bool,
    tagged: bool,
    /// Map keys may be strings (JSON turns string keys into keywords).
    string_keys: bool,
    /// Arbitrary chars (else alphanumerics).
    any_char: bool,
}

const EDN: Caps = Caps {
    bytes: false,
    bigdec: true,
    any_bigint: true,
    inst_nanos: false,
    tagged: false,
    string_keys: true,
    any_char: false,
};
const TRANSIT: Caps = Caps {
    bytes: true,
    tagged: true,
    any_char: true,
    ..EDN
};
const JSON: Caps = Caps {
    string_keys: false,
    inst_nanos: true,
    ..TRANSIT
};
const MSGPACK: Caps = Caps {
    bigdec: false,
    any_bigint: false,
    tagged: false,
    inst_nanos: true,
    ..TRANSIT
};

fn name_text() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9?!*-]{0,8}(/[a-z][a-z0-9-]{0,8})?"
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn leaf(c: Caps) -> BoxedStrategy<Value> {
    let mut s: Vec<BoxedStrategy<Value>> = vec![
        Just(Value::Nil).boxed(),
        any::<bool>().prop_map(Value::Bool).boxed(),
        any::<i64>().prop_map(Value::Int).boxed(),
        (-1000i64..1000).prop_map(Value::Int).boxed(),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float)
            .boxed(),
        ".{0,12}".prop_map(Value::Str).boxed(),
        name_text()
            .prop_map(|t| Value::Keyword(Keyword::new(t)))
            .boxed(),
        name_text()
            .prop_map(|t| Value::Symbol(Symbol::new(t)))
            .boxed(),
        any::<u128>()
            .prop_map(|u| Value::Uuid(uuid::Uuid::from_u128(u)))
            .boxed(),
        // Normalized ratios (the edn reader normalizes, like Clojure).
        (-1000i64..1000, 2i64..1000)
            .prop_filter_map("normalized", |(n, d)| {
                let g = gcd(n.unsigned_abs(), d.unsigned_abs()) as i64;
                (n != 0 && d / g > 1).then(|| {
                    Value::Ratio(Box::new(Ratio {
                        numer: Value::Int(n / g),
                        denom: Value::Int(d / g),
                    }))
                })
            })
            .boxed(),
    ];
    s.push(
        if c.any_char {
            any::<char>().boxed()
        } else {
            proptest::char::range('a', 'z').boxed()
        }
        .prop_map(Value::Char)
        .boxed(),
    );
    s.push(if c.inst_nanos {
        (-10_000_000_000i64..10_000_000_000, 0u32..1_000_000_000)
            .prop_map(|(secs, nanos)| Value::Inst(Inst { secs, nanos }))
            .boxed()
    } else {
        (-100_000_000_000_000i64..100_000_000_000_000)
            .prop_map(|ms| Value::Inst(Inst::from_millis(ms)))
            .boxed()
    });
    s.push(if c.any_bigint {
        "-?[1-9][0-9]{19,30}"
            .prop_map(|t| Value::BigInt(BigInt::parse(&t).unwrap()))
            .boxed()
    } else {
        ((i64::MAX as u64 + 1)..=u64::MAX)
            .prop_map(|u| Value::BigInt(BigInt::parse(&u.to_string()).unwrap()))
            .boxed()
    });
    if c.bigdec {
        s.push(
            "-?(0|[1-9][0-9]{0,4})\\.[0-9]{1,5}"
                // BigDecimal has no negative zero.
                .prop_filter("no -0", |t| {
                    !(t.starts_with('-') && t.bytes().all(|b| b == b'-' || b == b'0' || b == b'.'))
                })
                .prop_map(|t| Value::BigDec(BigDec::parse(&t).unwrap()))
                .boxed(),
        );
    }
    if c.bytes {
        s.push(
            proptest::collection::vec(any::<u8>(), 0..16)
                .prop_map(Value::Bytes)
                .boxed(),
        );
    }
    proptest::strategy::Union::new(s).boxed()
}

fn value(c: Caps) -> impl Strategy<Value = Value> {
    leaf(c).prop_recursive(4, 64, 6, move |inner| {
        let key = if c.string_keys {
            inner.clone().boxed()
        } else {
            inner
                .clone()
                .prop_filter("no string keys", |k| !matches!(k, Value::Str(_)))
                .boxed()
        };
        let mut s: Vec<BoxedStrategy<Value>> = vec![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(Value::Vector)
                .boxed(),
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(Value::List)
                .boxed(),
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|v| Value::Set(v.into_iter().collect::<Set>()))
                .boxed(),
            proptest::collection::vec((key, inner.clone()), 0..6)
                .prop_map(|v| Value::Map(v.into_iter().collect::<Map>()))
                .boxed(),
            proptest::collection::vec(
                (
                    name_text().prop_map(|t| Value::Keyword(Keyword::new(t))),
                    inner.clone(),
                ),
                0..6,
            )
            .prop_map(|v| Value::Map(v.into_iter().collect::<Map>()))
            .boxed(),
        ];
        if c.tagged {
            s.push(
                inner
                    .prop_map(|v| {
                        Value::Tagged(Box::new(Tagged {
                            tag: Symbol::new("my/point"),
                            value: v,
                        }))
                    })
                    .boxed(),
            );
        }
        proptest::strategy::Union::new(s)
    })
}

/// `pack_envelope` gives the bytes (or the error) of packing the envelope's vector.
fn check_envelope(p: &dyn Packer, v: &Value) -> Result<(), TestCaseError> {
    for cb in [
        Value::Nil,
        Value::Str("3f2a9c".into()),
        Value::kw("ajax-cb"),
    ] {
        let whole = p.pack(&Value::Vector(vec![v.clone(), cb.clone()]));
        let direct = p.pack_envelope(v.clone(), cb);
        prop_assert_eq!(
            whole
                .as_ref()
                .map(|p| p.as_bytes().to_vec())
                .map_err(ToString::to_string),
            direct
                .as_ref()
                .map(|p| p.as_bytes().to_vec())
                .map_err(ToString::to_string),
            "{}",
            p.name()
        );
    }
    Ok(())
}

fn check(p: &dyn Packer, v: &Value) -> Result<(), TestCaseError> {
    check_envelope(p, v)?;
    let packed = p
        .pack(v)
        .map_err(|e| TestCaseError::fail(format!("{}: pack {v:?}: {e}", p.name())))?;
    prop_assert_eq!(packed.is_binary(), p.is_binary());
    let limits = Limits::default().max_message_bytes(usize::MAX);
    let back = p.unpack(packed.as_bytes(), &limits).map_err(|e| {
        TestCaseError::fail(format!(
            "{}: unpack {:?}: {e}",
            p.name(),
            String::from_utf8_lossy(packed.as_bytes())
        ))
    })?;
    prop_assert_eq!(
        &back,
        v,
        "{}: {:?}",
        p.name(),
        String::from_utf8_lossy(packed.as_bytes())
    );
    Ok(())
}

fn gz(name: &str) -> GzipPacker {
    GzipPacker::new(packer::by_name(name).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn edn_round_trip(v in value(EDN)) {
        check(&*packer::by_name("edn").unwrap(), &v)?;
        check(&gz("edn"), &v)?;
    }

    #[test]
    fn transit_round_trip(v in value(TRANSIT)) {
        check(&TransitPacker::new(), &v)?;
        check(&TransitPacker::verbose(), &v)?;
        check(&gz("transit"), &v)?;
    }

    #[test]
    fn json_round_trip(v in value(JSON)) {
        check(&*packer::by_name("json").unwrap(), &v)?;
        check(&gz("json"), &v)?;
    }

    #[test]
    fn msgpack_round_trip(v in value(MSGPACK)) {
        check(&*packer::by_name("msgpack").unwrap(), &v)?;
        check(&gz("msgpack"), &v)?;
    }
}

/// `pack_envelope` fails as packing the envelope's vector does, with the same error, whichever
/// half holds what the packer cannot write (edn has no bytes, JSON no non-finite floats).
#[test]
fn pack_envelope_fails_as_the_vector_does() {
    let cases: [(&str, Value); 2] = [
        ("edn", Value::Bytes(vec![1, 2])),
        ("json", Value::Float(f64::NAN)),
    ];
    for (name, bad) in cases {
        for p in [
            packer::by_name(name).unwrap(),
            std::sync::Arc::new(gz(name)),
        ] {
            for (payload, cb) in [
                (bad.clone(), Value::Str("3f2a9c".into())),
                (Value::Int(1), bad.clone()),
                (bad.clone(), bad.clone()),
            ] {
                let whole = p.pack(&Value::Vector(vec![payload.clone(), cb.clone()]));
                let direct = p.pack_envelope(payload, cb);
                let (Err(w), Err(d)) = (whole, direct) else {
                    panic!("{}: both fail", p.name());
                };
                assert_eq!(w.to_string(), d.to_string(), "{}", p.name());
            }
        }
    }
}

/// Many repeated keys: exercises the transit cache past 44 (two-digit codes) and its 1936-entry
/// reset, and the msgpack key cache past 256 entries.
#[test]
fn caches_overflow_round_trip() {
    let mut entries = Vec::new();
    for i in 0..2500 {
        let mut m = Map::new();
        m.insert(
            Value::Keyword(Keyword::new(format!("key-{}", i % 2100))),
            Value::Int(i),
        );
        m.insert(
            Value::Str(format!("skey-{}", i % 300)),
            Value::Keyword(Keyword::new(format!("v-{}", i % 1999))),
        );
        entries.push(Value::Map(m));
    }
    let v = Value::Vector(entries);
    let all: Vec<Arc<dyn Packer>> = vec![
        Arc::new(TransitPacker::new()),
        packer::by_name("msgpack").unwrap(),
        packer::by_name("msgpack+gzip").unwrap(),
    ];
    for p in all {
        let packed = p.pack(&v).unwrap();
        assert_eq!(
            p.unpack(packed.as_bytes(), &Limits::default()).unwrap(),
            v,
            "{}",
            p.name()
        );
    }
}

/// Every seed in `fuzz/corpus/<target>/` goes through its decoder without panicking.
#[test]
fn fuzz_corpus_seeds_decode_without_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return;
    };
    let mut n = 0;
    for dir in dirs.flatten() {
        let target = dir.file_name().to_string_lossy().into_owned();
        let name = match target.strip_suffix("_unpack") {
            Some("gzip") => "json+gzip",
            Some(other) => other,
            None => continue,
        };
        let Some(p) = packer::by_name(name) else {
            continue;
        };
        // Our targets' seeds must decode unless their name starts with `bad`.
        let strict = ["transit", "json", "msgpack", "gzip"]
            .iter()
            .any(|t| target.starts_with(t));
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let bytes = std::fs::read(f.path()).unwrap();
            let r = p.unpack(&bytes, &Limits::default());
            let file = f.file_name().to_string_lossy().into_owned();
            if strict && !file.starts_with("bad") {
                assert!(r.is_ok(), "{target}/{file}: {r:?}");
            }
            n += 1;
        }
    }
    assert!(
        n > 0 || !root.exists(),
        "no seeds found under {}",
        root.display()
    );
}
