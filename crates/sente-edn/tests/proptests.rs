//! Property tests: print → read round trips, and the reader never panics.

use proptest::prelude::*;
use sente_edn::{
    BigDec, BigInt, Inst, Keyword, Map, ReadOptions, Set, Symbol, Tagged, Value, from_value, read,
    to_edn_string, to_value,
};

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z*!_?<>=][a-zA-Z0-9*+!_?<>=.#'-]{0,8}".prop_filter("reserved", |s| {
        !matches!(s.as_str(), "nil" | "true" | "false")
    })
}

fn qualified() -> impl Strategy<Value = String> {
    (proptest::option::of("[a-z][a-z0-9.-]{0,6}"), name()).prop_map(|(ns, n)| match ns {
        Some(ns) => format!("{ns}/{n}"),
        None => n,
    })
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        "-?[0-9]{1,40}".prop_map(|s| Value::BigInt(BigInt::parse(&s).unwrap())),
        any::<f64>()
            .prop_filter("NaN has many bit patterns", |f| !f.is_nan())
            .prop_map(Value::Float),
        "-?[1-9][0-9]{0,8}(\\.[0-9]{1,6})?".prop_map(|s| Value::BigDec(BigDec::parse(&s).unwrap())),
        (any::<i32>(), 1..10_000i64).prop_map(|(n, d)| read(
            &format!("{n}/{d}"),
            &ReadOptions::default()
        )
        .unwrap()),
        any::<String>().prop_map(Value::Str),
        any::<char>().prop_map(Value::Char),
        qualified().prop_map(|s| Value::Keyword(Keyword::new(s))),
        qualified()
            .prop_filter("not a number", |s| !s
                .starts_with(|c: char| c.is_ascii_digit()))
            .prop_map(|s| Value::Symbol(Symbol::new(s))),
        (-62_167_219_200i64..253_402_300_800, 0u32..1_000_000_000)
            .prop_map(|(secs, nanos)| Value::Inst(Inst { secs, nanos })),
        (-62_167_219_200_000i64..253_402_300_800_000)
            .prop_map(|ms| Value::Inst(Inst::from_millis(ms))),
        any::<u128>().prop_map(|u| Value::Uuid(uuid::Uuid::from_u128(u))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Vector),
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            prop::collection::vec((inner.clone(), inner.clone()), 0..8)
                .prop_map(|kv| Value::Map(kv.into_iter().collect::<Map>())),
            prop::collection::vec(inner.clone(), 0..8)
                .prop_map(|xs| Value::Set(xs.into_iter().collect::<Set>())),
            ("[a-z][a-z0-9.-]{0,5}/[a-z][a-z0-9-]{0,5}", inner).prop_map(|(tag, value)| {
                Value::Tagged(Box::new(Tagged {
                    tag: Symbol::new(tag),
                    value,
                }))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn print_read_round_trip(v in value()) {
        let text = to_edn_string(&v);
        let back = read(&text, &ReadOptions::default());
        prop_assert!(back.is_ok(), "{text}: {:?}", back);
        let back = back.unwrap();
        prop_assert_eq!(&back, &v, "{}", text);
        prop_assert_eq!(to_edn_string(&back), text);
    }

    #[test]
    fn serde_value_round_trip(v in value()) {
        prop_assert_eq!(&to_value(&v).unwrap(), &v);
        prop_assert_eq!(&from_value::<Value>(v.clone()).unwrap(), &v);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = read(&text, &ReadOptions::default());
        let _ = sente_edn::read_all(&text, &ReadOptions::default());
    }

    #[test]
    fn edn_soup_never_panics(parts in prop::collection::vec(prop_oneof![
        Just("["), Just("]"), Just("("), Just(")"), Just("{"), Just("}"), Just("#{"), Just("#_"), Just("#"),
        Just("##"), Just("#:"), Just("^"), Just("\""), Just("\\"), Just("\\u"), Just(":"), Just("::"), Just("/"),
        Just(" "), Just(","), Just(";"), Just("\n"), Just("1"), Just("-"), Just("+"), Just("."), Just("e"),
        Just("N"), Just("M"), Just("0x"), Just("r"), Just("a"), Just("é"), Just("inst"), Just("uuid"),
        Just("nil"), Just("Inf"), Just("NaN"), Just("\"2024\""), Just("@"), Just("`"),
    ], 0..64)) {
        let text: String = parts.concat();
        if let Ok(v) = read(&text, &ReadOptions::default()) {
            // Whatever reads must print to something that reads back the same.
            let printed = to_edn_string(&v);
            let again = read(&printed, &ReadOptions::default());
            prop_assert!(again.is_ok(), "{text:?} -> {printed:?}: {:?}", again);
            let again = again.unwrap();
            let nan = |v: &Value| to_edn_string(v).contains("NaN");
            if !nan(&v) {
                prop_assert_eq!(again, v);
            }
        }
    }
}

proptest! {
    /// `Map::from_entries` and `Set::from_values` keep each key once, at its first position,
    /// with a map key's last value: whether the entries are few and distinct (kept as they
    /// are), few with repeats, or many.
    #[test]
    fn from_entries_keeps_first_position_last_value(
        keys in proptest::collection::vec(0i64..6, 0..12),
    ) {
        let entries: Vec<(Value, Value)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (Value::Int(*k), Value::Int(i as i64)))
            .collect();
        let mut expected: Vec<(Value, Value)> = Vec::new();
        for (k, v) in entries.clone() {
            match expected.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => expected.push((k, v)),
            }
        }
        let map = Map::from_entries(entries);
        prop_assert_eq!(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>(), expected.clone());
        let set = Set::from_values(keys.iter().map(|k| Value::Int(*k)).collect());
        let firsts: Vec<Value> = expected.into_iter().map(|(k, _)| k).collect();
        prop_assert_eq!(set.iter().cloned().collect::<Vec<_>>(), firsts);
    }
}
