//! `packer::by_name` follows the cargo features: edn and json always, transit, msgpack and gzip
//! only with their feature. Runs with any feature set (`cargo test -p sente-proto
//! --no-default-features` included).

use sente_edn::{Keyword, Map, Value};
use sente_proto::Limits;
use sente_proto::packer;

#[test]
fn by_name_follows_features() {
    for (name, on) in [
        ("edn", true),
        ("json", true),
        ("transit", cfg!(feature = "transit")),
        ("msgpack", cfg!(feature = "msgpack")),
        ("edn+gzip", cfg!(feature = "gzip")),
        ("json+gzip", cfg!(feature = "gzip")),
        (
            "transit+gzip",
            cfg!(all(feature = "transit", feature = "gzip")),
        ),
        (
            "msgpack+gzip",
            cfg!(all(feature = "msgpack", feature = "gzip")),
        ),
    ] {
        let p = packer::by_name(name);
        assert_eq!(p.is_some(), on, "{name}");
        if let Some(p) = p {
            assert_eq!(p.name(), name);
        }
    }
    assert!(packer::by_name("nope").is_none());
    assert!(packer::by_name("nope+gzip").is_none());
}

#[test]
fn edn_and_json_always_round_trip() {
    let mut m = Map::new();
    m.insert(Value::Keyword(Keyword::new("a")), Value::Int(1));
    let value = Value::Vector(vec![
        Value::Keyword(Keyword::new("chsk/ws-ping")),
        Value::Map(m),
    ]);
    for name in ["edn", "json"] {
        let p = packer::by_name(name).unwrap();
        let packed = p.pack(&value).unwrap();
        assert!(!packed.is_binary(), "{name}");
        let back = p.unpack(packed.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(back, value, "{name}");
    }
}
