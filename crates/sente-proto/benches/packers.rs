//! Pack/unpack throughput of every packer on small (~100 B), medium (~4 KiB) and large
//! (~256 KiB) events, with serde_json (to/from `serde_json::Value` of the same data as JSON) as
//! the baseline. `unpack-worst/*`: the hostile decoder inputs of issue 12 (tests/worst_cases)
//! at 1 MiB, next to a plain input of the same size.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use sente_edn::{Keyword, Map, Value};
use sente_proto::Limits;
use sente_proto::packer::{self, JsonPacker, Packer, TransitPacker};

#[path = "../tests/worst_cases/mod.rs"]
mod worst_cases;

fn kw(s: &str) -> Value {
    Value::Keyword(Keyword::new(s))
}

fn item(i: i64) -> Value {
    let mut m = Map::new();
    m.insert(kw("id"), Value::Int(i));
    m.insert(kw("name"), Value::Str(format!("user-{i}")));
    m.insert(kw("score"), Value::Float(i as f64 * 1.25));
    m.insert(kw("active?"), Value::Bool(i % 2 == 0));
    m.insert(
        kw("tags"),
        Value::Vector(vec![kw("my-app/a"), kw("my-app/b")]),
    );
    Value::Map(m)
}

/// `[[:my-app/event {:items [...]}] "3f2a9c"]` with `n` items.
fn event(n: i64) -> Value {
    let mut m = Map::new();
    m.insert(kw("seq"), Value::Int(n));
    m.insert(kw("items"), Value::Vector((0..n).map(item).collect()));
    Value::Vector(vec![
        Value::Vector(vec![kw("my-app/event"), Value::Map(m)]),
        Value::Str("3f2a9c".into()),
    ])
}

fn small() -> Value {
    let mut m = Map::new();
    m.insert(kw("user-id"), Value::Int(42));
    m.insert(
        kw("msg"),
        Value::Str("hello, world! this is a chat line".into()),
    );
    Value::Vector(vec![
        Value::Vector(vec![kw("my-app/chat"), Value::Map(m)]),
        Value::Str("3f2a9c".into()),
    ])
}

fn packers() -> Vec<(String, Arc<dyn Packer>)> {
    let mut v: Vec<(String, Arc<dyn Packer>)> = Vec::new();
    for name in ["edn", "transit", "json", "msgpack", "msgpack+gzip"] {
        if let Some(p) = packer::by_name(name) {
            v.push((name.to_owned(), p));
        }
    }
    v.push((
        "transit-verbose".to_owned(),
        Arc::new(TransitPacker::verbose()),
    ));
    v
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default().max_message_bytes(usize::MAX);
    for (size, value) in [
        ("small", small()),
        ("medium", event(36)),
        ("large", event(2300)),
    ] {
        let mut g = c.benchmark_group(format!("pack/{size}"));
        for (name, p) in packers() {
            let bytes = p.pack(&value).unwrap().into_bytes().len();
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter(|| p.pack(black_box(&value)).unwrap());
            });
        }
        let json_text = JsonPacker::pack_string(&value).unwrap();
        let json: serde_json::Value = serde_json::from_str(&json_text).unwrap();
        g.throughput(Throughput::Bytes(json_text.len() as u64));
        g.bench_function(BenchmarkId::from_parameter("serde_json"), |b| {
            b.iter(|| serde_json::to_string(black_box(&json)).unwrap());
        });
        g.finish();

        let mut g = c.benchmark_group(format!("unpack/{size}"));
        for (name, p) in packers() {
            let bytes = p.pack(&value).unwrap().into_bytes();
            g.throughput(Throughput::Bytes(bytes.len() as u64));
            g.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter(|| p.unpack(black_box(&bytes), &limits).unwrap());
            });
        }
        g.throughput(Throughput::Bytes(json_text.len() as u64));
        g.bench_function(BenchmarkId::from_parameter("serde_json"), |b| {
            b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(&json_text)).unwrap());
        });
        g.finish();
    }
}

/// Decode cost of the hostile shapes at 1 MiB, per packer (throughput in decoded bytes).
fn worst(c: &mut Criterion) {
    let limits = worst_cases::limits();
    let bytes = 1 << 20;
    let shapes = std::iter::once(("plain", worst_cases::plain(bytes))).chain(
        worst_cases::WORST
            .iter()
            .map(|c| (c.name, (c.build)(bytes))),
    );
    for (shape, value) in shapes {
        let mut g = c.benchmark_group(format!("unpack-worst/{shape}"));
        g.sample_size(10);
        for name in worst_cases::PACKERS {
            let p = packer::by_name(name).unwrap();
            let wire = worst_cases::wire(name, &value);
            g.throughput(Throughput::Bytes(
                worst_cases::decoded_len(name, &wire) as u64
            ));
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| p.unpack(black_box(&wire), &limits));
            });
        }
        g.finish();
    }
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench, super::worst);
}
criterion_main!(group::benches);
