//! The printer matches Clojure's `pr-str`.

use sente_edn::{
    BigDec, BigInt, ErrorKind, Inst, Keyword, Map, Ratio, Set, Symbol, Tagged, Value,
    to_edn_string, try_to_edn_string, write_edn,
};

fn kw(s: &str) -> Value {
    Value::kw(s)
}

#[test]
fn scalars() {
    assert_eq!(Value::Nil.to_string(), "nil");
    assert_eq!(Value::Bool(true).to_string(), "true");
    assert_eq!(Value::Bool(false).to_string(), "false");
    assert_eq!(Value::Int(-42).to_string(), "-42");
    assert_eq!(Value::Int(i64::MIN).to_string(), "-9223372036854775808");
    assert_eq!(
        Value::BigInt(BigInt::parse("10000000000000000000").unwrap()).to_string(),
        "10000000000000000000N"
    );
    assert_eq!(
        Value::BigInt(BigInt::parse("-007").unwrap()).to_string(),
        "-7N"
    );
    assert_eq!(
        Value::BigDec(BigDec::parse("1.5").unwrap()).to_string(),
        "1.5M"
    );
    assert_eq!(
        Value::Ratio(Box::new(Ratio {
            numer: Value::Int(1),
            denom: Value::Int(3)
        }))
        .to_string(),
        "1/3"
    );
    assert_eq!(kw("chsk/handshake").to_string(), ":chsk/handshake");
    assert_eq!(Value::Symbol(Symbol::new("foo/bar")).to_string(), "foo/bar");
}

#[test]
fn doubles() {
    for (x, s) in [
        (1.0, "1.0"),
        (1.5, "1.5"),
        (-2.25, "-2.25"),
        (1e10, "1.0E10"),
        (1e-5, "1.0E-5"),
        (1e7, "1.0E7"),
        (9_999_999.0, "9999999.0"),
        (0.001, "0.001"),
        (0.000_999, "9.99E-4"),
        (123.456, "123.456"),
        (1e21, "1.0E21"),
        (1e22, "1.0E22"),
        (1.234_567_890_123_456_8e-300, "1.2345678901234568E-300"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (f64::INFINITY, "##Inf"),
        (f64::NEG_INFINITY, "##-Inf"),
        (f64::NAN, "##NaN"),
        (f64::MAX, "1.7976931348623157E308"),
        (f64::MIN_POSITIVE, "2.2250738585072014E-308"),
        (5e-324, "4.9E-324"),
        (1e-323, "9.9E-324"),
    ] {
        assert_eq!(Value::Float(x).to_string(), s, "{x:e}");
    }
}

#[test]
fn strings_escape_like_clojure() {
    assert_eq!(
        Value::from("quote\" backslash\\ nl\n tab\t cr\r bs\u{8} ff\u{c} uni é 😀").to_string(),
        r#""quote\" backslash\\ nl\n tab\t cr\r bs\b ff\f uni é 😀""#
    );
    // Other control characters are printed raw, as Clojure does.
    assert_eq!(
        Value::from("\u{0}\u{1}\u{7f}").to_string(),
        "\"\u{0}\u{1}\u{7f}\""
    );
    assert_eq!(Value::from("").to_string(), "\"\"");
}

#[test]
fn characters() {
    for (c, s) in [
        ('a', r"\a"),
        ('\n', r"\newline"),
        (' ', r"\space"),
        ('\t', r"\tab"),
        ('\r', r"\return"),
        ('\u{8}', r"\backspace"),
        ('\u{c}', r"\formfeed"),
        ('\u{0}', r"\u0000"),
        ('\u{1b}', r"\u001b"),
        ('\u{85}', r"\u0085"),
        ('é', r"\é"),
        ('\\', r"\\"),
        ('(', r"\("),
    ] {
        assert_eq!(Value::Char(c).to_string(), s);
    }
}

#[test]
fn collections() {
    let v = Value::Vector(vec![Value::Int(1), Value::Int(2), Value::Int(3)]);
    assert_eq!(v.to_string(), "[1 2 3]");
    assert_eq!(
        Value::List(vec![Value::Int(1), Value::Int(2)]).to_string(),
        "(1 2)"
    );
    assert_eq!(Value::List(vec![]).to_string(), "()");
    let mut m = Map::new();
    m.insert(kw("x"), v);
    m.insert(kw("y"), Value::from("s"));
    assert_eq!(Value::Map(m).to_string(), r#"{:x [1 2 3], :y "s"}"#);
    assert_eq!(Value::Map(Map::new()).to_string(), "{}");
    let s: Set = [Value::Int(1), Value::Int(2)].into_iter().collect();
    assert_eq!(Value::Set(s).to_string(), "#{1 2}");
    assert_eq!(Value::Set(Set::new()).to_string(), "#{}");
}

#[test]
fn tagged() {
    let inst = Inst {
        secs: 1_704_164_645,
        nanos: 678_000_000,
    };
    assert_eq!(
        Value::Inst(inst).to_string(),
        r#"#inst "2024-01-02T03:04:05.678-00:00""#
    );
    assert_eq!(
        Value::Inst(Inst::from_millis(0)).to_string(),
        r#"#inst "1970-01-01T00:00:00.000-00:00""#
    );
    assert_eq!(
        Value::Inst(Inst::from_millis(-1)).to_string(),
        r#"#inst "1969-12-31T23:59:59.999-00:00""#
    );
    let inst = Inst {
        secs: 1_704_164_645,
        nanos: 678_901_234,
    };
    assert_eq!(
        Value::Inst(inst).to_string(),
        r#"#inst "2024-01-02T03:04:05.678901234-00:00""#
    );
    let inst = Inst {
        secs: 951_782_400,
        nanos: 1_000,
    };
    assert_eq!(
        Value::Inst(inst).to_string(),
        r#"#inst "2000-02-29T00:00:00.000001000-00:00""#
    );
    let u = uuid::Uuid::parse_str("66d96ab4-9834-40db-a3cd-42b361503ab9").unwrap();
    assert_eq!(
        Value::Uuid(u).to_string(),
        r#"#uuid "66d96ab4-9834-40db-a3cd-42b361503ab9""#
    );
    let t = Tagged {
        tag: Symbol::new("my/point"),
        value: Value::Vector(vec![Value::Int(1), Value::Int(2)]),
    };
    assert_eq!(Value::Tagged(Box::new(t)).to_string(), "#my/point [1 2]");
}

#[test]
fn bytes() {
    let v = Value::Vector(vec![Value::Bytes(vec![0, 1, 255])]);
    assert_eq!(v.to_string(), "[[0 1 255]]");
    assert_eq!(to_edn_string(&v), "[[0 1 255]]");
    let e = try_to_edn_string(&v).unwrap_err();
    assert_eq!(*e.kind(), ErrorKind::BytesNotEdn);
    let mut m = Map::new();
    m.insert(Value::Bytes(vec![]), Value::Nil);
    assert!(try_to_edn_string(&Value::Map(m)).is_err());
    assert_eq!(try_to_edn_string(&kw("ok")).unwrap(), ":ok");
}

#[test]
fn write_edn_appends() {
    let mut out = String::from("prefix:");
    write_edn(&Value::Vector(vec![kw("a"), Value::Nil]), &mut out);
    write_edn(&Value::Int(1), &mut out);
    assert_eq!(out, "prefix:[:a nil]1");
    assert_eq!(Value::Keyword(Keyword::new("a")).to_string(), ":a");
}
