//! The sharded core ([`Shards`]) under 1, 2, 4 and 8 threads: each thread runs connection
//! lifecycles of its own uids — connect (a WebSocket opens), push (one event, buffered), flush,
//! disconnect (with no grace, so the uid is gone after the next timer poll) — each step one
//! lock of the uid's shard, as the registry takes it (`Registry::with_core`: the core call,
//! then its actions and events taken). Every 64 lifecycles a thread also broadcasts one event
//! to every uid through all the shards, coupled in index order (`Registry::with_shards`).
//!
//! Criterion measures the lifecycles per second; a second pass (printed as `hold:` lines)
//! measures, per lock taken, the time spent holding it and waiting for it, from which
//! BENCHMARKS.md ("Many cores") derives the serial fraction.
//!
//! `cargo bench -p sente-proto --bench shards -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use sente_proto::server::{Core, CoreConfig, Shards};
use sente_proto::{ClientId, Event, Uid};

mod common;
use common::tick;

type TestCore = Core<u32, u32, ()>;

/// Uids per thread (each thread cycles through its own).
const UIDS: usize = 256;
/// A broadcast every this many lifecycles, per thread.
const BROADCAST_EVERY: usize = 64;

/// Time spent holding and waiting for shard locks, summed over threads.
#[derive(Default)]
struct Meter {
    locks: AtomicU64,
    hold_ns: AtomicU64,
    wait_ns: AtomicU64,
}

/// One thread's sums, added to the [`Meter`] at its end.
#[derive(Default)]
struct Local {
    locks: u64,
    hold: Duration,
    wait: Duration,
}

struct Bench {
    shards: Shards<u32, u32, ()>,
    clock: AtomicU64,
    event: Arc<Event>,
    cids: Vec<ClientId>,
}

impl Bench {
    fn new(shards: usize) -> Self {
        let cfg = CoreConfig::default()
            .ms_allow_reconnect_before_close_ws(0)
            .send_buf_ms_ws(0);
        Bench {
            shards: Shards::new(&cfg, shards, |i| i as u64),
            clock: AtomicU64::new(1),
            event: tick(1),
            cids: (0..UIDS)
                .map(|i| ClientId::new(format!("c{i}")).unwrap())
                .collect(),
        }
    }

    fn now(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `f` on shard `i` as the registry does: the core call, then its output taken
    /// (and dropped: the registry hands it to the connections' tasks).
    fn with<R>(
        &self,
        i: usize,
        m: &mut Option<Local>,
        f: impl FnOnce(&mut TestCore, u64) -> R,
    ) -> R {
        let now = self.now();
        let t0 = m.as_ref().map(|_| Instant::now());
        let mut core = self.shards.lock(i);
        let t1 = m.as_ref().map(|_| Instant::now());
        let r = f(&mut core, now);
        black_box(core.take_actions());
        black_box(core.take_events());
        measured(core, m, t0, t1);
        r
    }

    /// One connection's life: connect, push, flush, disconnect (then the grace timer).
    fn lifecycle(&self, uid: &Uid, cid: &ClientId, m: &mut Option<Local>) {
        let i = self.shards.index(uid);
        let conn = self.with(i, m, |c, now| {
            c.handle_ws_open(uid, cid, 7, (), now).unwrap()
        });
        self.with(i, m, |c, now| c.send(uid, &self.event, 100, false, now));
        self.with(i, m, |c, now| c.flush(uid, now));
        self.with(i, m, |c, now| {
            c.handle_ws_closed(uid, cid, conn, now);
            // The shard's timer task: the grace (0 ms) ends, the uid is gone.
            c.poll(now + 1);
        });
    }

    /// A broadcast through every shard, coupled in index order.
    fn broadcast(&self, m: &mut Option<Local>) {
        let mut held: Option<(MutexGuard<'_, TestCore>, Option<Instant>)> = None;
        for i in 0..self.shards.len() {
            let now = self.now();
            let t0 = m.as_ref().map(|_| Instant::now());
            let mut core = self.shards.lock(i);
            let t1 = m.as_ref().map(|_| Instant::now());
            if let Some((prev, pt1)) = held.take() {
                measured(prev, m, None, pt1);
            }
            core.broadcast(&self.event, 100, true, now);
            black_box(core.take_actions());
            if let (Some(l), Some(t0), Some(t1)) = (m.as_mut(), t0, t1) {
                l.wait += t1 - t0;
            }
            held = Some((core, t1));
        }
        if let Some((prev, pt1)) = held {
            measured(prev, m, None, pt1);
        }
    }

    /// `n` lifecycles on each of `threads` threads (thread `t` on uids `t-0`, `t-1`, ...).
    fn run(&self, threads: usize, n: u64, meter: Option<&Meter>) -> Duration {
        let uids: Vec<Vec<Uid>> = (0..threads)
            .map(|t| (0..UIDS).map(|i| Uid::from(format!("{t}-{i}"))).collect())
            .collect();
        let start = Instant::now();
        std::thread::scope(|s| {
            for mine in &uids {
                s.spawn(move || {
                    let mut m = meter.map(|_| Local::default());
                    for k in 0..n as usize {
                        let j = k % UIDS;
                        self.lifecycle(&mine[j], &self.cids[j], &mut m);
                        if k % BROADCAST_EVERY == BROADCAST_EVERY - 1 {
                            self.broadcast(&mut m);
                        }
                    }
                    if let (Some(meter), Some(l)) = (meter, m) {
                        meter.locks.fetch_add(l.locks, Ordering::Relaxed);
                        meter
                            .hold_ns
                            .fetch_add(l.hold.as_nanos() as u64, Ordering::Relaxed);
                        meter
                            .wait_ns
                            .fetch_add(l.wait.as_nanos() as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        start.elapsed()
    }
}

/// Lets go of a shard, adding the time it was held (from `t1`) and waited for (`t0` to `t1`,
/// when `t0` is given: a coupled broadcast adds its waits itself).
fn measured(
    core: MutexGuard<'_, TestCore>,
    m: &mut Option<Local>,
    t0: Option<Instant>,
    t1: Option<Instant>,
) {
    let t2 = m.as_ref().map(|_| Instant::now());
    drop(core);
    if let (Some(l), Some(t1), Some(t2)) = (m.as_mut(), t1, t2) {
        l.locks += 1;
        l.hold += t2 - t1;
        if let Some(t0) = t0 {
            l.wait += t1 - t0;
        }
    }
}

fn bench(c: &mut Criterion) {
    let cases: Vec<(usize, usize)> = [1usize, 2, 4, 8]
        .into_iter()
        .flat_map(|t| [(t, 1usize), (t, 8)])
        .collect();
    let mut g = c.benchmark_group("shards: lifecycles (connect, push, flush, disconnect)");
    for &(threads, shards) in &cases {
        g.throughput(Throughput::Elements(threads as u64));
        let id = BenchmarkId::new(format!("{shards} shard(s)"), format!("{threads} thread(s)"));
        g.bench_function(id, |b| {
            let bench = Bench::new(shards);
            // One iteration: one lifecycle on every thread (the threads run `iters` each).
            b.iter_custom(|iters| bench.run(threads, iters, None));
        });
    }
    g.finish();

    // Lock hold and wait per lock, and the share of the wall time a shard is held.
    for &(threads, shards) in &cases {
        let bench = Bench::new(shards);
        let meter = Meter::default();
        let n = 40_000;
        let wall = bench.run(threads, n, Some(&meter));
        let locks = meter.locks.load(Ordering::Relaxed).max(1);
        let hold = meter.hold_ns.load(Ordering::Relaxed);
        let wait = meter.wait_ns.load(Ordering::Relaxed);
        let cycles = n * threads as u64;
        eprintln!(
            "hold: threads {threads} shards {shards}: {:.0} ns/lifecycle wall, {locks} locks, \
             hold {:.0} ns/lock, wait {:.0} ns/lock, held {:.0}% of wall x shards",
            wall.as_nanos() as f64 / cycles as f64,
            hold as f64 / locks as f64,
            wait as f64 / locks as f64,
            100.0 * hold as f64 / (wall.as_nanos() as f64 * shards as f64),
        );
    }
}

mod benches {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(benches::benches);
