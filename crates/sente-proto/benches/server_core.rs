//! The server's hot paths besides packing: building and packing a pushed batch, and the
//! registry's fan-out (one event to every uid, as `Server::send_many_flush` / `broadcast` do)
//! with 1 000 and 10 000 WebSocket clients of distinct uids.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use sente_proto::packer::JsonPacker;
use sente_proto::server::{Core, CoreConfig, PushBatch};
use sente_proto::{ClientId, Uid};

mod common;
use common::tick;

fn bench(c: &mut Criterion) {
    let packer = JsonPacker::new();
    let mut g = c.benchmark_group("batch pack (json)");
    for n in [1usize, 10, 100] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            let events: Vec<_> = (0..n as i64).map(tick).collect();
            b.iter(|| {
                // A fresh batch every time: the pack cache only helps the next connection.
                let batch = PushBatch::new(events.clone());
                black_box(batch.packed(&packer, 1 << 20).unwrap())
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("fan-out registry: send_many flushed");
    for clients in [1_000usize, 10_000] {
        let mut core: Core<u32, u32, ()> = Core::new(CoreConfig::default());
        let uids: Vec<Uid> = (0..clients).map(|i| Uid::from(format!("u{i}"))).collect();
        for (i, u) in uids.iter().enumerate() {
            let cid = ClientId::new(format!("c{i}")).unwrap();
            core.handle_ws_open(u, &cid, i as u32, (), 0).unwrap();
        }
        core.take_actions();
        core.take_events();
        let ev = tick(1);
        g.throughput(Throughput::Elements(clients as u64));
        g.bench_function(BenchmarkId::from_parameter(clients), |b| {
            b.iter(|| {
                core.send_many(uids.iter(), &ev, 100, true, 1);
                black_box(core.take_actions())
            });
        });
    }
    g.finish();
}

mod benches {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(benches::benches);
