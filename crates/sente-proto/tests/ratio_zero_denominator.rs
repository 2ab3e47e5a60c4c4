//! Issue 12, finding 7: a ratio with a zero denominator is refused by every packer with
//! [`UnpackError::Malformed`] (edn always refused it; json, transit and msgpack accepted it).

use sente_edn::{BigInt, Ratio, Value};
use sente_proto::packer::{self, Packer};
use sente_proto::{Limits, UnpackError};

const PACKERS: [&str; 8] = [
    "edn",
    "json",
    "transit",
    "msgpack",
    "edn+gzip",
    "json+gzip",
    "transit+gzip",
    "msgpack+gzip",
];

fn ratio(numer: Value, denom: Value) -> Value {
    Value::Vector(vec![Value::Ratio(Box::new(Ratio { numer, denom }))])
}

fn refused(p: &dyn Packer, wire: &[u8], what: &str) {
    match p.unpack(wire, &Limits::default()) {
        Err(UnpackError::Malformed { reason, .. }) => {
            assert!(reason.contains("zero"), "{} {what}: {reason}", p.name());
        }
        other => panic!("{} {what}: {other:?}", p.name()),
    }
}

#[test]
fn every_packer_refuses_a_zero_denominator() {
    let zeros = [
        Value::Int(0),
        Value::BigInt(BigInt::parse("0").unwrap()),
        Value::BigInt(BigInt::parse("-000").unwrap()),
    ];
    for name in PACKERS {
        let p = packer::by_name(name).unwrap();
        for zero in &zeros {
            // The packers write such a value; reading it back is what must fail.
            let wire = p.pack(&ratio(Value::Int(1), zero.clone())).unwrap();
            refused(&*p, wire.as_bytes(), &format!("1/{zero:?}"));
        }
        // Non-zero denominators still decode.
        let ok = ratio(Value::Int(1), Value::Int(3));
        let wire = p.pack(&ok).unwrap();
        assert_eq!(
            p.unpack(wire.as_bytes(), &Limits::default()),
            Ok(ok),
            "{name}"
        );
    }
}

#[test]
fn hand_written_zero_denominators_are_refused() {
    let cases: [(&str, &[&str]); 3] = [
        ("edn", &["1/0", "[-7/000]", "{:a 0/0}"]),
        (
            "json",
            &[
                r#"{"~#ratio":[1,0]}"#,
                r#"[{"~#ratio":[1,{"~#bigint":"0"}]}]"#,
                r#"{"~#ratio":[1,0.0]}"#,
                r#"{"~#ratio":[1,{"~#bigdec":"0.00E5"}]}"#,
            ],
        ),
        (
            "transit",
            &[
                r#"["~#ratio",["~n1","~n0"]]"#,
                r#"["~#ratio",[1,0]]"#,
                r#"{"~#ratio":["~n1","~n0"]}"#,
                r#"[["~#ratio",["~n5","~i0"]]]"#,
            ],
        ),
    ];
    for (name, inputs) in cases {
        let p = packer::by_name(name).unwrap();
        for input in inputs {
            refused(&*p, input.as_bytes(), input);
        }
    }
    // msgpack: ext 3 holding the ints 1 and 0.
    let p = packer::by_name("msgpack").unwrap();
    refused(&*p, &[0xd5, 0x03, 0x01, 0x00], "ext 3 [1 0]");
}
