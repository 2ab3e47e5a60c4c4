//! Issue 12: equality of maps and sets, and the reader's duplicate check, cost O(n log n)
//! whatever the order and nesting, and keep edn's equality semantics.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use sente_edn::{Map, ReadOptions, Set, Value, read};

fn h(v: &Value) -> u64 {
    let mut s = DefaultHasher::new();
    v.hash(&mut s);
    s.finish()
}

/// Least time of a few runs of `f` (each batch long enough to measure).
fn cost(mut f: impl FnMut()) -> Duration {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            let mut n = 0u32;
            while start.elapsed() < Duration::from_millis(30) {
                f();
                n += 1;
            }
            start.elapsed() / n
        })
        .min()
        .unwrap()
}

fn big_map(n: i64, reversed: bool) -> Map {
    let mut e: Vec<(Value, Value)> = (0..n).map(|i| (Value::Int(i), Value::Int(-i))).collect();
    if reversed {
        e.reverse();
    }
    Map::from_entries(e)
}

#[test]
fn reordered_equality_is_not_quadratic() {
    // Old code: 60k reordered entries took seconds. Baseline: comparing the entries as lists.
    let (a, b, c) = (
        big_map(60_000, false),
        big_map(60_000, true),
        big_map(60_000, false),
    );
    assert_eq!(a, b);
    let reordered = cost(|| assert!(Map::clone(&a) == Map::clone(&b)));
    let same = cost(|| assert!(Map::clone(&a).entries() == Map::clone(&c).entries()));
    let ratio = reordered.as_secs_f64() / same.as_secs_f64();
    assert!(
        ratio < 20.0,
        "reordered {reordered:?} vs entry lists {same:?}"
    );

    let s1 = Set::from_values((0..60_000).map(Value::Int).collect());
    let s2 = Set::from_values((0..60_000).rev().map(Value::Int).collect());
    assert_eq!(s1, s2);
    assert_eq!(h(&Value::Set(s1)), h(&Value::Set(s2)));
}

#[test]
fn equality_semantics_are_unchanged() {
    let v = |s: &str| read(s, &ReadOptions::default()).unwrap();
    // Unequal values that the old hash did not tell apart.
    assert_ne!(v("0"), v("0.0"));
    assert_ne!(v("nil"), v("false"));
    assert_ne!(v("#{[0 0.0]}"), v("#{[0.0 0]}"));
    // Vectors equal lists, and hash alike.
    assert_eq!(v("[1 2]"), v("(1 2)"));
    assert_eq!(h(&v("[1 2]")), h(&v("(1 2)")));
    // Order never matters in maps and sets, at any depth.
    let (a, b) = (
        v("{#{1 2 {:a [1 #{3 4}]}} 1, :b {:c #{5 6}}}"),
        v("{:b {:c #{6 5}}, #{{:a (1 #{4 3})} 2 1} 1}"),
    );
    assert_eq!(a, b);
    assert_eq!(h(&a), h(&b));
    assert_ne!(a, v("{:b {:c #{6 5}}, #{{:a (1 #{4 3})} 2 1} 2}"));
    // Floats compare by bits: NaN equals NaN, 0.0 differs from -0.0.
    assert_eq!(v("##NaN"), v("##NaN"));
    assert_ne!(v("0.0"), v("-0.0"));
    // A map's hash follows insertions.
    let mut m = Map::new();
    m.insert(Value::kw("a"), Value::Int(1));
    let before = Value::Map(m.clone());
    let _ = h(&before);
    m.insert(Value::kw("a"), Value::Int(2));
    assert_ne!(before, Value::Map(m.clone()));
    assert_eq!(Value::Map(m), v("{:a 2}"));
}

#[test]
fn duplicate_checks_stay_linear_and_exact() {
    let opts = ReadOptions {
        max_collection_len: 1 << 20,
        ..ReadOptions::default()
    };
    // 40k equal elements: the first duplicate is reported, fast.
    let text = format!("#{{{}}}", "[0] ".repeat(40_000));
    let start = Instant::now();
    let e = read(&text, &opts).unwrap_err();
    assert!(e.to_string().contains("duplicate set element: [0]"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Distinct vectors that differ only in 0 / 0.0 are all kept.
    let items: Vec<String> = (0..512)
        .map(|i| {
            let bits: Vec<&str> = (0..9)
                .map(|b| if i >> b & 1 == 1 { "0.0" } else { "0" })
                .collect();
            format!("[{}]", bits.join(" "))
        })
        .collect();
    let set = read(&format!("#{{{}}}", items.join(" ")), &opts).unwrap();
    assert!(matches!(&set, Value::Set(s) if s.len() == 512));
    // Equal maps in different orders are duplicates.
    let e = read("#{{:a 1 :b 2 :c #{1 2}} {:c #{2 1} :b 2 :a 1}}", &opts).unwrap_err();
    assert!(e.to_string().contains("duplicate set element"), "{e}");
}
