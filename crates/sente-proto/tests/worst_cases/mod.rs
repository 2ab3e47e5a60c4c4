//! Hostile decoder inputs (issue 12): shapes that made the decoders' duplicate checks and the
//! equality of edn maps and sets quadratic, plus a plain input to compare their cost with.
//! Shared by `tests/decoder_cost.rs` and `benches/packers.rs`.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::time::{Duration, Instant};

use sente_edn::{Keyword, Map, Set, Value};
use sente_proto::Limits;
use sente_proto::packer::{self, Packer};

/// The packers under test: every base packer and its `+gzip` wrapper.
pub const PACKERS: [&str; 8] = [
    "edn",
    "json",
    "transit",
    "msgpack",
    "edn+gzip",
    "json+gzip",
    "transit+gzip",
    "msgpack+gzip",
];

/// Marks a string whose digits are zeroed after packing: two values that differ only in such
/// strings become equal on the wire, which a `Value` cannot express (a `Set` never holds two
/// equal elements). Marked entries come first, so building the values stays cheap.
const MARK: &str = "%mark%";
const MARK_DIGITS: usize = 6;

fn mark(i: usize) -> Value {
    Value::Str(format!("{MARK}{i:0MARK_DIGITS$}"))
}

fn kw(s: &str) -> Value {
    Value::Keyword(Keyword::new(s))
}

/// One decoder input: its name and a builder for about `bytes` of input.
pub struct Case {
    /// Short name for messages.
    pub name: &'static str,
    /// Builds the value for about `bytes` bytes of packed input.
    pub build: fn(usize) -> Value,
}

/// The hostile shapes, all about the same size on the wire.
pub const WORST: [Case; 8] = [
    Case {
        name: "reordered-maps",
        build: reordered_maps,
    },
    Case {
        name: "reordered-sets",
        build: reordered_sets,
    },
    Case {
        name: "nested-reordered-maps",
        build: nested_reordered_maps,
    },
    Case {
        name: "sets-of-maps",
        build: sets_of_maps,
    },
    Case {
        name: "hash-colliding-vectors",
        build: colliding_vectors,
    },
    Case {
        name: "many-duplicates",
        build: many_duplicates,
    },
    Case {
        name: "deep-nesting",
        build: deep_nesting,
    },
    Case {
        name: "escapes",
        build: escapes,
    },
];

/// A typical message: a vector of small maps with keyword keys.
pub fn plain(bytes: usize) -> Value {
    let n = bytes / 80;
    Value::Vector(
        (0..n as i64)
            .map(|i| {
                let mut m = Map::new();
                m.insert(kw("id"), Value::Int(i));
                m.insert(kw("name"), Value::Str(format!("user-{i}")));
                m.insert(kw("score"), Value::Float(i as f64 * 1.25));
                m.insert(kw("active?"), Value::Bool(i % 2 == 0));
                m.insert(kw("tags"), Value::Vector(vec![kw("a/b"), kw("c/d")]));
                Value::Map(m)
            })
            .collect(),
    )
}

/// `#{M M'}`: two equal maps of `k` entries, the second in reverse order (the 7 s input).
fn reordered_maps(bytes: usize) -> Value {
    let k = bytes / 30;
    let entries: Vec<(Value, Value)> = (0..k as i64)
        .map(|i| (Value::Int(i), Value::Int(i * 7)))
        .collect();
    let pair = |i: usize, rev: bool| {
        let mut e = entries.clone();
        if rev {
            e.reverse();
        }
        e.insert(0, (Value::Int(-1), mark(i)));
        Value::Map(Map::from_entries(e))
    };
    Value::Set(Set::from_values(vec![pair(0, false), pair(1, true)]))
}

/// `#{S S'}`: two equal sets, the second in reverse order.
fn reordered_sets(bytes: usize) -> Value {
    let k = bytes / 16;
    let items: Vec<Value> = (0..k as i64).map(|i| Value::Int(i * 3)).collect();
    let pair = |i: usize, rev: bool| {
        let mut e = items.clone();
        if rev {
            e.reverse();
        }
        e.insert(0, mark(i));
        Value::Set(Set::from_values(e))
    };
    Value::Set(Set::from_values(vec![pair(0, false), pair(1, true)]))
}

/// `#{X X'}` where `X` maps `i` to a map of `k` entries, and `X'` has every level reversed.
fn nested_reordered_maps(bytes: usize) -> Value {
    let k = ((bytes / 16) as f64).sqrt() as i64;
    let inner = |i: i64, rev: bool| {
        let mut e: Vec<(Value, Value)> = (0..k).map(|j| (Value::Int(j), Value::Int(i))).collect();
        if rev {
            e.reverse();
        }
        Value::Map(Map::from_entries(e))
    };
    let outer = |m: usize, rev: bool| {
        let mut e: Vec<(Value, Value)> = (0..k).map(|i| (Value::Int(i), inner(i, rev))).collect();
        if rev {
            e.reverse();
        }
        e.insert(0, (Value::Int(-1), mark(m)));
        Value::Map(Map::from_entries(e))
    };
    Value::Set(Set::from_values(vec![outer(0, false), outer(1, true)]))
}

/// A vector of many small sets, each holding two equal maps (in different orders) whose keys are
/// sets in different orders.
fn sets_of_maps(bytes: usize) -> Value {
    let groups = bytes / 600;
    let map = |g: usize, rev: bool| {
        let mut e: Vec<(Value, Value)> = (0..8i64)
            .map(|j| {
                let mut key: Vec<Value> = (0..4).map(|x| Value::Int(j * 4 + x)).collect();
                if rev {
                    key.reverse();
                }
                (Value::Set(Set::from_values(key)), Value::Int(j))
            })
            .collect();
        if rev {
            e.reverse();
        }
        e.insert(0, (Value::Int(-1), mark(g * 2 + usize::from(rev))));
        Value::Map(Map::from_entries(e))
    };
    Value::Vector(
        (0..groups)
            .map(|g| Value::Set(Set::from_values(vec![map(g, false), map(g, true)])))
            .collect(),
    )
}

/// A set of distinct vectors sharing a long prefix, that differ only in whether some elements are
/// `0` or `0.0` (and `nil` or `false`): with a hash that does not tell those apart, they all
/// collide, and a hash-bucket duplicate check compares every pair.
fn colliding_vectors(bytes: usize) -> Value {
    let len = 48usize;
    let n = (bytes / (len * 2 + 16)).max(2);
    let bits = usize::BITS - n.leading_zeros();
    let items = (0..n)
        .map(|i| {
            let mut v = vec![Value::Int(0); len - bits as usize];
            for b in 0..bits {
                v.push(if i >> b & 1 == 1 {
                    Value::Float(0.0)
                } else {
                    Value::Int(0)
                });
            }
            v.push(if i % 2 == 0 {
                Value::Nil
            } else {
                Value::Bool(false)
            });
            Value::Vector(v)
        })
        .collect();
    Value::Set(Set::from_values(items))
}

/// A set whose elements are all equal on the wire (`#{"@@000000" "@@000000" ...}`).
fn many_duplicates(bytes: usize) -> Value {
    Value::Set(Set::from_values((0..bytes / 12).map(mark).collect()))
}

/// Sets nested 30 deep (60 levels in json and transit, under the default limit of 64), each
/// level ten elements (so the duplicate check hashes) holding the next level; the innermost holds
/// a wide vector.
fn deep_nesting(bytes: usize) -> Value {
    let mut v = Value::Vector((0..(bytes / 8) as i64).map(Value::Int).collect());
    for level in 0..30 {
        let mut items: Vec<Value> = (1..10).map(|x| Value::Int(x * 1000 + level)).collect();
        items.push(v);
        v = Value::Set(Set::from_values(items));
    }
    v
}

/// One long string made of escapes (`\n`, `\"`, `\\`, `\t`, `\u0001`).
fn escapes(bytes: usize) -> Value {
    let unit = "\n\"\\\t\u{1}";
    Value::Vector(vec![Value::Str(unit.repeat(bytes / 12))])
}

/// Packs `value` with the packer called `name`, then zeroes the digits of every marked string
/// (see [`MARK`]) so values that differed only there become equal; `+gzip` compresses the result.
pub fn wire(name: &str, value: &Value) -> Vec<u8> {
    let base = name.strip_suffix("+gzip");
    let inner = packer::by_name(base.unwrap_or(name)).expect("packer");
    let mut raw = inner.pack(value).expect("pack").into_bytes();
    let mut i = 0;
    while let Some(at) = find(&raw[i..], MARK.as_bytes()) {
        let start = i + at + MARK.len();
        raw[start..start + MARK_DIGITS].fill(b'0');
        i = start + MARK_DIGITS;
    }
    if base.is_none() {
        return raw;
    }
    let mut enc = flate2::write::GzEncoder::new(vec![0x01], flate2::Compression::default());
    enc.write_all(&raw).expect("gzip");
    enc.finish().expect("gzip")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Limits for the measurements: the defaults with room for the inputs.
pub fn limits() -> Limits {
    Limits::default()
        .max_message_bytes(4 << 20)
        .max_collection_len(1 << 20)
}

/// The size the packer decodes: the gzip body's decompressed size for `+gzip`.
pub fn decoded_len(name: &str, wire: &[u8]) -> usize {
    if name.ends_with("+gzip") {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&wire[1..])
            .read_to_end(&mut out)
            .expect("gunzip");
        out.len()
    } else {
        wire.len()
    }
}

/// CPU time of this thread so far (falls back to wall time where the kernel does not say).
pub fn thread_cpu() -> Duration {
    static WALL: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(
            || WALL.get_or_init(Instant::now).elapsed(),
            Duration::from_nanos,
        )
}

/// CPU time of one decode of `wire`: the least of three batch averages, each batch running
/// for at least 40 ms of CPU (the kernel's per-thread clock only moves at scheduler ticks).
pub fn decode_cpu(p: &dyn Packer, wire: &[u8], limits: &Limits) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let start = thread_cpu();
        let mut runs = 0u32;
        loop {
            drop(p.unpack(wire, limits));
            runs += 1;
            let spent = thread_cpu().saturating_sub(start);
            if spent >= Duration::from_millis(40) {
                best = best.min(spent / runs);
                break;
            }
        }
        if best > Duration::from_millis(200) {
            break;
        }
    }
    best
}
