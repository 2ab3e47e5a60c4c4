//! The scenarios: `rr`, `fanout`, `idle` and `storm` (each over WebSocket or, for `rr` and
//! `fanout`, long-polling). Each returns its metrics as name -> value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};

use crate::client::{Conn, Transport};
use crate::peers::FanoutCfg;
use crate::server::{Server, Target};
use crate::stats::{SharedHistogram, quantile_ms, record};
use crate::wire::{self, Proto};
use crate::ws::WsClient;
use crate::{Res, err, net, procfs};

/// A trial's measurements, by metric name.
pub type Metrics = BTreeMap<String, f64>;

/// Where the clients connect and what they speak.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// Server address (loopback).
    pub addr: SocketAddr,
    /// Its wire protocol.
    pub proto: Proto,
    /// The server's process id, when known (for its CPU time).
    pub pid: Option<u32>,
    /// The server runs under callgrind: count its instructions too.
    pub callgrind: bool,
}

/// The processes whose CPU time a trial reads: the server processes (summed; one, or a
/// cluster's nodes) and, separately, a backplane engine (redis-server, nats-server).
#[derive(Debug, Clone, Default)]
pub struct CpuPids {
    /// Server processes; their CPU times are summed.
    pub servers: Vec<u32>,
    /// The backplane engine's process, if any.
    pub engine: Option<u32>,
    /// A tap counting the cluster's pub/sub messages, if any.
    pub tap: Option<Arc<crate::tap::TapCounters>>,
    /// The servers run under callgrind: count their instructions (see [`crate::callgrind`]).
    pub callgrind: bool,
}

impl From<Endpoint> for CpuPids {
    fn from(ep: Endpoint) -> Self {
        Self {
            servers: ep.pid.into_iter().collect(),
            engine: None,
            tap: None,
            callgrind: ep.callgrind,
        }
    }
}

/// CPU seconds used by the servers (if their pids are known), the engine and this tool at
/// one moment.
#[derive(Debug, Clone, Copy)]
struct CpuWindow {
    server: Option<f64>,
    /// Of `server`, the time in the kernel (system time).
    server_system: Option<f64>,
    engine: Option<f64>,
    tool: Option<f64>,
    /// The tap's (messages, bytes).
    tap: Option<(u64, u64)>,
    /// The servers' instructions since the window opened (read at its end only).
    instructions: Option<u64>,
}

impl CpuWindow {
    fn read(pids: &CpuPids) -> Self {
        let times = if pids.servers.is_empty() {
            None
        } else {
            pids.servers
                .iter()
                .map(|pid| procfs::cpu_times(*pid))
                .try_fold((0.0, 0.0), |(u, s), t| t.map(|(tu, ts)| (u + tu, s + ts)))
        };
        Self {
            server: times.map(|(user, system)| user + system),
            server_system: times.map(|(_, system)| system),
            engine: pids.engine.and_then(procfs::cpu_seconds),
            tool: procfs::cpu_seconds(std::process::id()),
            tap: pids.tap.as_ref().map(|t| t.read()),
            instructions: None,
        }
    }

    /// Reads the CPU counters at `from` and at `to` (in a background task).
    fn spawn(pids: CpuPids, from: Instant, to: Instant) -> tokio::task::JoinHandle<(Self, Self)> {
        tokio::spawn(async move {
            sleep_until(from).await;
            if pids.callgrind {
                for pid in &pids.servers {
                    crate::callgrind::zero(*pid).await;
                }
            }
            let a = Self::read(&pids);
            sleep_until(to).await;
            let mut b = Self::read(&pids);
            if pids.callgrind {
                let mut sum = Some(0u64);
                for pid in &pids.servers {
                    let n = crate::callgrind::dump(*pid).await;
                    sum = sum.zip(n).map(|(s, n)| s + n);
                }
                b.instructions = sum;
            }
            (a, b)
        })
    }

    /// Adds `server_cpu_pct`, `engine_cpu_pct` and `tool_cpu_pct` (100 = one core busy) over
    /// `secs`, and `server_kernel_pct` (the share of the servers' CPU time spent in the
    /// kernel: system calls, and on loopback most of the TCP work of both ends); returns the
    /// servers', the engine's and the tool's CPU seconds.
    fn record(a: Self, b: Self, secs: f64, m: &mut Metrics) -> WindowCpu {
        let server = a.server.zip(b.server).map(|(x, y)| y - x);
        if let Some(cpu) = server {
            m.insert("server_cpu_pct".into(), 100.0 * cpu / secs);
            let system = a.server_system.zip(b.server_system).map(|(x, y)| y - x);
            if let Some(system) = system.filter(|_| cpu > 0.0) {
                m.insert("server_kernel_pct".into(), 100.0 * system / cpu);
            }
        }
        let engine = a.engine.zip(b.engine).map(|(x, y)| y - x);
        if let Some(cpu) = engine {
            m.insert("engine_cpu_pct".into(), 100.0 * cpu / secs);
        }
        let tool = a.tool.zip(b.tool).map(|(x, y)| y - x);
        if let Some(cpu) = tool {
            m.insert("tool_cpu_pct".into(), 100.0 * cpu / secs);
        }
        if let Some(n) = b.instructions {
            m.insert("server_instructions".into(), n as f64);
        }
        if let Some(((m0, b0), (m1, b1))) = a.tap.zip(b.tap) {
            m.insert("backplane_msgs".into(), (m1 - m0) as f64);
            m.insert("backplane_bytes".into(), (b1 - b0) as f64);
        }
        WindowCpu {
            server,
            engine,
            tool,
        }
    }
}

/// CPU seconds used inside one measured window (None: not known).
#[derive(Debug, Clone, Copy)]
struct WindowCpu {
    /// The server processes, summed.
    server: Option<f64>,
    /// The backplane engine.
    engine: Option<f64>,
    /// This tool's process (all its threads; `rr` and `fan-out` run their clients in it, no
    /// child processes).
    tool: Option<f64>,
}

/// Adds `key`: `cpu` seconds in microseconds per unit (request or delivered event).
fn per_unit_cpu(m: &mut Metrics, key: &str, cpu: Option<f64>, units: u64) {
    if let Some(cpu) = cpu {
        if units > 0 {
            m.insert(key.into(), cpu * 1e6 / units as f64);
        }
    }
}

/// Adds `key`: the window's server instructions (when counted, see [`crate::callgrind`]) per
/// request or delivered event, in thousands.
fn per_unit_instructions(m: &mut Metrics, key: &str, units: u64) {
    if let Some(n) = m.get("server_instructions").copied() {
        if units > 0 {
            m.insert(key.into(), n / 1e3 / units as f64);
        }
    }
}

impl From<&Server> for Endpoint {
    fn from(s: &Server) -> Self {
        Self {
            addr: s.addr,
            proto: s.target.proto(),
            pid: Some(s.pid),
            callgrind: s.callgrind,
        }
    }
}

/// How long one connect + handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request may wait for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How many connects are in flight at once.
const CONNECT_CONCURRENCY: usize = 128;

/// Connects `n` clients (ids `0..n`, spread over source addresses) and completes their
/// handshakes; fails if any of them fails.
pub async fn connect_many(ep: Endpoint, transport: Transport, n: usize) -> Res<Vec<Conn>> {
    connect_spread(&[ep.addr], ep.proto, transport, n).await
}

/// Like [`connect_many`], client `i` connecting to `addrs[i % addrs.len()]` (round-robin
/// over a cluster's nodes).
pub async fn connect_spread(
    addrs: &[SocketAddr],
    proto: Proto,
    transport: Transport,
    n: usize,
) -> Res<Vec<Conn>> {
    if addrs.is_empty() {
        return Err(err("no server address to connect to"));
    }
    let first_src = net::reserve_sources(n as u64);
    let results: Vec<Res<Conn>> = futures_util::stream::iter(0..n as u64)
        .map(|i| async move {
            let src = Some(net::source_ip(first_src, i));
            let addr = addrs[(i % addrs.len() as u64) as usize];
            match timeout(
                CONNECT_TIMEOUT,
                Conn::connect(transport, proto, addr, src, i),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(err("connect timed out")),
            }
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut conns = Vec::with_capacity(n);
    let mut first_err = None;
    let mut failed = 0;
    for r in results {
        match r {
            Ok(c) => conns.push(c),
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        for c in conns {
            c.close().await;
        }
        return Err(err(format!(
            "{failed} of {n} clients failed to connect; first error: {e}"
        )));
    }
    Ok(conns)
}

/// Options of the closed-loop request/reply scenario.
#[derive(Debug, Clone, Copy)]
pub struct RrOpts {
    /// Transport of the clients.
    pub transport: Transport,
    /// Number of clients, each with one request in flight.
    pub clients: usize,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Size of each request's data object.
    pub bytes: usize,
}

/// `rr`: every client sends a request, waits for the reply, and repeats. Reports req/s and
/// latency percentiles over the measured window.
pub async fn rr(ep: Endpoint, o: RrOpts) -> Res<Metrics> {
    let conns = connect_many(ep, o.transport, o.clients).await?;
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + o.warmup;
    let end = measure_from + o.duration;
    let cpu = CpuWindow::spawn(ep.into(), measure_from, end);
    let shared = Arc::new(SharedHistogram::default());
    let mut set = JoinSet::new();
    for mut c in conns {
        let shared = shared.clone();
        set.spawn(async move {
            let mut errors = 0u64;
            let mut buf = String::with_capacity(o.bytes + 16);
            // One lazily moved timer instead of one per request: it fires at the deadline
            // of an earlier request, and moves on to the current one's if that is later.
            let watchdog = sleep_until(start + REQUEST_TIMEOUT);
            tokio::pin!(watchdog);
            sleep_until(start).await;
            for seq in 1u64.. {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                buf.clear();
                wire::write_data(&mut buf, wire::now_us(), o.bytes);
                let deadline = t0 + REQUEST_TIMEOUT;
                let req = c.request(seq, &buf);
                tokio::pin!(req);
                let ok = loop {
                    tokio::select! {
                        biased;
                        r = &mut req => break r.is_ok(),
                        () = &mut watchdog => {
                            if Instant::now() >= deadline {
                                break false;
                            }
                            watchdog.as_mut().reset(deadline);
                        }
                    }
                };
                if ok {
                    if t0 >= measure_from {
                        record(&mut shared.local(), t0.elapsed().as_micros() as u64);
                    }
                } else {
                    errors += 1;
                    break;
                }
            }
            c.close().await;
            errors
        });
    }
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        errors += r?;
    }
    let hist = Arc::into_inner(shared)
        .ok_or_else(|| err("a client task still holds the histogram"))?
        .merge();
    let mut m = Metrics::new();
    m.insert(
        "req_per_s".into(),
        hist.len() as f64 / o.duration.as_secs_f64(),
    );
    m.insert("p50_ms".into(), quantile_ms(&hist, 0.5));
    m.insert("p99_ms".into(), quantile_ms(&hist, 0.99));
    m.insert("p999_ms".into(), quantile_ms(&hist, 0.999));
    m.insert("errors".into(), errors as f64);
    let (cpu_from, cpu_to) = cpu.await?;
    let cpu = CpuWindow::record(cpu_from, cpu_to, o.duration.as_secs_f64(), &mut m);
    per_unit_instructions(&mut m, "server_kinstr_per_req", hist.len());
    per_unit_cpu(&mut m, "server_cpu_us_per_req", cpu.server, hist.len());
    per_unit_cpu(&mut m, "tool_cpu_us_per_req", cpu.tool, hist.len());
    Ok(m)
}

/// Options of the fan-out scenario.
#[derive(Debug, Clone, Copy)]
pub struct FanoutOpts {
    /// Transport of the clients.
    pub transport: Transport,
    /// Number of clients (distinct uids).
    pub clients: usize,
    /// Pushes per second the server sends to every client.
    pub rate: u32,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Size of each event's data object.
    pub bytes: usize,
    /// sente-rs: push through Sente's send buffer instead of flushing each push.
    pub buffered: bool,
}

/// `fanout`: the server pushes `rate` events per second to every client; the clients count
/// events stamped inside the measured window and their delivery latency (server stamp to
/// client receipt, same machine clock).
///
/// A client stops listening once it has received an event stamped at or after the window's
/// end (every peer delivers a connection's pushes in order, so nothing from the window can
/// follow), or 2 s after the push loop's end: events from the window that have not arrived by
/// then count as not delivered.
pub async fn fanout(ep: Endpoint, o: FanoutOpts) -> Res<Metrics> {
    let conns = connect_many(ep, o.transport, o.clients).await?;
    fanout_on(conns, o, ep.into()).await
}

/// The `fanout` scenario on clients already connected (to one server or spread over a
/// cluster's nodes): `conns[0]` sends the control request, so its server runs the push loop.
/// CPU is read from `pids`: `server_cpu_us_per_event` sums the server processes,
/// `engine_cpu_us_per_event` is the backplane engine's.
pub async fn fanout_on(mut conns: Vec<Conn>, o: FanoutOpts, pids: CpuPids) -> Res<Metrics> {
    if conns.is_empty() {
        return Err(err("fanout needs at least one client"));
    }
    let run = o.warmup + o.duration + Duration::from_millis(100);
    timeout(
        REQUEST_TIMEOUT,
        conns[0].start_fanout(
            u64::from(u32::MAX),
            &FanoutCfg {
                id: 0,
                rate: o.rate,
                ms: run.as_millis() as u64,
                bytes: o.bytes,
                buffered: o.buffered,
            },
        ),
    )
    .await
    .map_err(|_| err("fanout control request timed out"))??;
    let start_us = wire::now_us();
    let win_from = start_us + o.warmup.as_micros() as u64;
    let win_to = win_from + o.duration.as_micros() as u64;
    // Events stamped in the window may still arrive a little later.
    let now = Instant::now();
    let stop_at = now + run + Duration::from_secs(2);
    let cpu = CpuWindow::spawn(pids, now + o.warmup, now + o.warmup + o.duration);
    let shared = Arc::new(SharedHistogram::default());
    let mut set = JoinSet::new();
    for mut c in conns {
        let shared = shared.clone();
        set.spawn(async move {
            let mut errors = 0u64;
            // One timer for the whole loop (not one per push): it stops listening at
            // `stop_at` wherever it waits.
            let _ = timeout_at(stop_at, async {
                loop {
                    let Ok(text) = c.next_push().await else {
                        errors += 1;
                        break;
                    };
                    let now = wire::now_us();
                    let mut past_window = false;
                    let mut h = shared.local();
                    wire::for_each_ts(text, |t| {
                        if (win_from..win_to).contains(&t) {
                            record(&mut h, now.saturating_sub(t));
                        }
                        past_window |= t >= win_to;
                    });
                    if past_window {
                        break;
                    }
                }
            })
            .await;
            c.close().await;
            errors
        });
    }
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        errors += r?;
    }
    let hist = Arc::into_inner(shared)
        .ok_or_else(|| err("a client task still holds the histogram"))?
        .merge();
    let expected = o.clients as f64 * f64::from(o.rate) * o.duration.as_secs_f64();
    let mut m = Metrics::new();
    m.insert(
        "delivered_per_s".into(),
        hist.len() as f64 / o.duration.as_secs_f64(),
    );
    m.insert("delivered_ratio".into(), hist.len() as f64 / expected);
    m.insert("p50_ms".into(), quantile_ms(&hist, 0.5));
    m.insert("p99_ms".into(), quantile_ms(&hist, 0.99));
    m.insert("max_ms".into(), quantile_ms(&hist, 1.0));
    m.insert("errors".into(), errors as f64);
    let (cpu_from, cpu_to) = cpu.await?;
    let cpu = CpuWindow::record(cpu_from, cpu_to, o.duration.as_secs_f64(), &mut m);
    per_unit_instructions(&mut m, "server_kinstr_per_event", hist.len());
    per_unit_cpu(&mut m, "server_cpu_us_per_event", cpu.server, hist.len());
    per_unit_cpu(&mut m, "engine_cpu_us_per_event", cpu.engine, hist.len());
    per_unit_cpu(&mut m, "tool_cpu_us_per_event", cpu.tool, hist.len());
    // Per push: the push loop's nominal pushes inside the window.
    let pushes = f64::from(o.rate) * o.duration.as_secs_f64();
    for (total, per) in [
        ("backplane_msgs", "backplane_msgs_per_push"),
        ("backplane_bytes", "backplane_bytes_per_push"),
    ] {
        if let Some(v) = m.get(total).copied() {
            m.insert(per.into(), v / pushes);
        }
    }
    Ok(m)
}

/// Options of the idle-connections scenario.
#[derive(Debug, Clone, Copy)]
pub struct IdleOpts {
    /// Number of idle connections.
    pub conns: usize,
    /// At most this many connections per worker process (open-files limit).
    pub per_worker: usize,
    /// Wait after the last connect before reading the server's memory.
    pub settle: Duration,
}

/// `idle`: opens `conns` idle WebSocket connections from worker processes and reports the
/// server's resident memory per connection (VmRSS after minus before).
pub async fn idle(server: &Server, o: IdleOpts) -> Res<Metrics> {
    let ep = Endpoint::from(server);
    // Warm the server's code paths and allocator first.
    for c in connect_many(ep, Transport::Ws, 16).await? {
        c.close().await;
    }
    sleep(Duration::from_millis(300)).await;
    let before = server
        .rss_kib()
        .ok_or_else(|| err("cannot read the server's VmRSS"))?;
    let exe = match std::env::var_os("SENTE_LOAD_EXE") {
        Some(p) => p.into(),
        None => std::env::current_exe()?,
    };
    let first_src = net::reserve_sources(o.conns as u64);
    let mut workers = Vec::new();
    let mut first = 0usize;
    while first < o.conns {
        let count = o.per_worker.min(o.conns - first);
        let mut child = tokio::process::Command::new(&exe)
            .args([
                "idle-worker",
                "--proto",
                ep.proto.name(),
                "--addr",
                &ep.addr.to_string(),
                "--first",
                &first.to_string(),
                "--count",
                &count.to_string(),
                "--src-first",
                &first_src.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let out = child.stdout.take().ok_or_else(|| err("no worker stdout"))?;
        workers.push((child, BufReader::new(out).lines()));
        first += count;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut ok, mut failed) = (0u64, 0u64);
    for (_, lines) in &mut workers {
        let line = timeout_at(deadline, lines.next_line())
            .await
            .map_err(|_| err("idle workers did not connect within 300 s"))??
            .ok_or_else(|| err("idle worker exited"))?;
        let mut parts = line.split_whitespace().skip(1);
        ok += parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        failed += parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    }
    sleep(o.settle).await;
    let after = server
        .rss_kib()
        .ok_or_else(|| err("cannot read the server's VmRSS"))?;
    for (mut child, _) in workers {
        drop(child.stdin.take());
        let _ = child.start_kill();
        let _ = timeout(Duration::from_secs(10), child.wait()).await;
    }
    let mut m = Metrics::new();
    m.insert("conns".into(), ok as f64);
    m.insert("failed".into(), failed as f64);
    m.insert("rss_before_mib".into(), before as f64 / 1024.0);
    m.insert("rss_after_mib".into(), after as f64 / 1024.0);
    m.insert(
        "kib_per_conn".into(),
        if ok == 0 {
            f64::NAN
        } else {
            after.saturating_sub(before) as f64 / ok as f64
        },
    );
    Ok(m)
}

/// The `idle-worker` child process: connects `count` WebSocket clients (ids
/// `first..first+count`), prints `READY <ok> <failed>`, answers pings, and exits when its
/// stdin closes or after `max_secs`.
pub async fn idle_worker(
    proto: Proto,
    addr: SocketAddr,
    first: u64,
    count: u64,
    src_first: u64,
    max_secs: u64,
) -> Res<()> {
    let results: Vec<Res<WsClient>> = futures_util::stream::iter(first..first + count)
        .map(|i| async move {
            let src = Some(net::source_ip(src_first, i));
            timeout(CONNECT_TIMEOUT, WsClient::connect(proto, addr, src, i))
                .await
                .unwrap_or_else(|_| Err(err("connect timed out")))
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut set = JoinSet::new();
    let mut failed = 0;
    let mut first_err = None;
    for r in results {
        match r {
            Ok(mut c) => {
                set.spawn(async move {
                    let _ = c.hold().await;
                });
            }
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        eprintln!("idle-worker: {failed} connects failed; first: {e}");
    }
    println!("READY {} {failed}", set.len());
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    let _ = timeout(Duration::from_secs(max_secs), async {
        while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    set.abort_all();
    Ok(())
}

/// Options of the reconnect-storm scenario.
#[derive(Debug, Clone)]
pub struct StormOpts {
    /// Number of connected clients.
    pub clients: usize,
    /// How long to wait for everyone to come back.
    pub timeout: Duration,
    /// taskset CPU list for the server, if pinned.
    pub pin: Option<String>,
    /// The clients' reconnect backoff.
    pub backoff: StormBackoff,
}

/// The reconnect backoff of the storm's clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StormBackoff {
    /// Sente's (see [`backoff`]): what every peer is measured with.
    #[default]
    Sente,
    /// The sente-rs clients' default (`sente_proto::client::Backoff::default()`: fast first
    /// attempts under 2 s, then full jitter up to 30 s).
    SenteRs,
}

impl StormBackoff {
    fn delay(self, attempt: u32, rng: &mut u64) -> Duration {
        match self {
            StormBackoff::Sente => backoff(attempt, rng),
            StormBackoff::SenteRs => {
                let unit = xorshift_unit(rng);
                Duration::from_millis(
                    sente_proto::client::Backoff::default().delay_ms(attempt, unit),
                )
            }
        }
    }
}

/// The next uniform number in `[0, 1)` of a xorshift64 generator.
fn xorshift_unit(rng: &mut u64) -> f64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    (*rng >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Default)]
struct StormState {
    killed_at: OnceLock<Instant>,
    initial: AtomicU64,
    back: AtomicU64,
    failed: AtomicU64,
    back_times: Mutex<Vec<Duration>>,
    stop: AtomicBool,
}

/// Sente's default reconnect backoff (`encore/exp-backoff`): attempt 1 at once, attempt
/// `n >= 2` after a uniform `[2^(n-1), 2^n)` seconds; capped at 10 s because Sente's client
/// keepalive re-triggers a connect about every 10 s during an outage.
pub fn backoff(attempt: u32, rng: &mut u64) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let unit = xorshift_unit(rng);
    let base = 2f64.powi(attempt.min(30) as i32 - 1);
    Duration::from_secs_f64((base + unit * base).min(10.0))
}

async fn storm_client(
    proto: Proto,
    addr: SocketAddr,
    src: std::net::Ipv4Addr,
    idx: u64,
    st: Arc<StormState>,
    policy: StormBackoff,
) {
    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (idx + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut attempt = 0u32;
    let mut connected_once = false;
    let mut counted_back = false;
    while !st.stop.load(Ordering::Relaxed) {
        match timeout(
            CONNECT_TIMEOUT,
            WsClient::connect(proto, addr, Some(src), idx),
        )
        .await
        {
            Ok(Ok(mut c)) => {
                attempt = 0;
                if !connected_once {
                    connected_once = true;
                    st.initial.fetch_add(1, Ordering::Relaxed);
                } else if let (Some(k), false) = (st.killed_at.get(), counted_back) {
                    counted_back = true;
                    st.back_times
                        .lock()
                        .expect("not poisoned")
                        .push(k.elapsed());
                    st.back.fetch_add(1, Ordering::Relaxed);
                }
                let _ = c.hold().await;
            }
            _ => {
                if st.killed_at.get().is_some() {
                    st.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        attempt += 1;
        sleep(policy.delay(attempt, &mut rng)).await;
    }
}

/// `storm`: `clients` connected WebSocket clients; the server is killed (SIGKILL) and
/// restarted on the same port; reports the time until 99% and 100% have handshaken again
/// (from the kill), failed connect attempts, and the new server's CPU use meanwhile.
pub async fn storm(target: Target, o: &StormOpts) -> Res<Metrics> {
    let server = Server::spawn(target, "127.0.0.1:0".parse()?, o.pin.as_deref()).await?;
    let addr = server.addr;
    let proto = target.proto();
    let st = Arc::new(StormState::default());
    let first_src = net::reserve_sources(o.clients as u64);
    let mut set = JoinSet::new();
    for i in 0..o.clients as u64 {
        let st = st.clone();
        set.spawn(storm_client(
            proto,
            addr,
            net::source_ip(first_src, i),
            i,
            st,
            o.backoff,
        ));
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    let n = o.clients as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while st.initial.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            set.abort_all();
            return Err(err(format!(
                "only {} of {n} clients connected before the storm",
                st.initial.load(Ordering::Relaxed)
            )));
        }
        sleep(Duration::from_millis(20)).await;
    }
    sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    let _ = st.killed_at.set(killed);
    server.kill().await;
    let mut restarted = None;
    for _ in 0..50 {
        match Server::spawn(target, addr, o.pin.as_deref()).await {
            Ok(s) => {
                restarted = Some(s);
                break;
            }
            Err(_) => sleep(Duration::from_millis(100)).await,
        }
    }
    let server = restarted.ok_or_else(|| err("the server did not restart"))?;
    let up_at = killed.elapsed();
    let cpu0 = server.cpu_seconds().unwrap_or(0.0);
    let end = Instant::now() + o.timeout;
    while st.back.load(Ordering::Relaxed) < n && Instant::now() < end {
        sleep(Duration::from_millis(10)).await;
    }
    let busy = killed.elapsed().saturating_sub(up_at);
    let cpu = server.cpu_seconds().unwrap_or(0.0) - cpu0;
    st.stop.store(true, Ordering::Relaxed);
    set.abort_all();
    while set.join_next().await.is_some() {}
    server.kill().await;
    let mut times = st.back_times.lock().expect("not poisoned").clone();
    times.sort();
    let at = |frac: f64| {
        let need = (frac * n as f64).ceil() as usize;
        if need == 0 {
            0.0
        } else {
            times.get(need - 1).map_or(f64::NAN, Duration::as_secs_f64)
        }
    };
    let mut m = Metrics::new();
    m.insert("restart_s".into(), up_at.as_secs_f64());
    m.insert("t99_s".into(), at(0.99));
    m.insert("t100_s".into(), at(1.0));
    m.insert("back_ratio".into(), times.len() as f64 / n as f64);
    m.insert(
        "failed_attempts".into(),
        st.failed.load(Ordering::Relaxed) as f64,
    );
    m.insert("server_cpu_s".into(), cpu);
    m.insert(
        "server_cpu_pct".into(),
        if busy.is_zero() {
            f64::NAN
        } else {
            100.0 * cpu / busy.as_secs_f64()
        },
    );
    Ok(m)
}
