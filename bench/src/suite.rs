//! `all` (every scenario against every target, alternating targets within each round so
//! that a noisy machine hits all of them alike) and `smoke` (tiny sizes, sente-rs and
//! raw-ws only, for CI).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use crate::client::Transport;
use crate::procfs::Machine;
use crate::report::{CaseSpec, Column, Results, Trial, markdown, summarize, timestamp};
use crate::scenario::{self, Endpoint, FanoutOpts, IdleOpts, Metrics, RrOpts, StormOpts};
use crate::server::{Server, Target, check_available};
use crate::{Res, charts, err};

/// How big and long the suite is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// About 15 minutes: 3 s trials, 1-5 rounds, the 1k/15k/10k sizes once.
    Quick,
    /// The sizes (1k/10k/~20k), longer trials, 5 rounds.
    Full,
    /// Seconds: tiny sizes, sente-rs and raw-ws only, fails on any error.
    Smoke,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Quick => "quick",
            Mode::Full => "full",
            Mode::Smoke => "smoke",
        }
    }
}

/// What one case runs.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Request/reply.
    Rr(RrOpts),
    /// Server push to every client.
    Fanout(FanoutOpts),
    /// Idle connections, server memory.
    Idle(IdleOpts),
    /// Kill and restart the server under connected clients.
    Storm(StormOpts),
}

impl Kind {
    fn transport(&self) -> Transport {
        match self {
            Kind::Rr(o) => o.transport,
            Kind::Fanout(o) => o.transport,
            Kind::Idle(_) | Kind::Storm(_) => Transport::Ws,
        }
    }
}

/// One scenario at one size.
#[derive(Debug, Clone)]
pub struct Case {
    /// Table spec (name, title, columns).
    pub spec: CaseSpec,
    /// What runs.
    pub kind: Kind,
    /// How many rounds.
    pub rounds: usize,
}

pub(crate) fn col(metric: &str, label: &str, higher_is_better: bool, ratio: bool) -> Column {
    Column {
        metric: metric.into(),
        label: label.into(),
        higher_is_better,
        ratio,
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn rr_case(transport: Transport, clients: usize, warmup: f64, dur: f64, rounds: usize) -> Case {
    Case {
        spec: CaseSpec {
            name: format!("rr-{}-{clients}", transport.name()),
            title: format!(
                "closed-loop request/reply over {}, {clients} client(s), 100-byte payload, {dur} s measured after {warmup} s warm-up",
                transport.name()
            ),
            columns: vec![
                col("req_per_s", "req/s", true, true),
                col("p50_ms", "p50 ms", false, true),
                col("p99_ms", "p99 ms", false, false),
                col("p999_ms", "p99.9 ms", false, false),
                col("server_cpu_us_per_req", "server CPU µs/req", false, true),
                col("tool_cpu_us_per_req", "tool CPU µs/req", false, false),
                col("tool_cpu_pct", "tool CPU %", false, false),
                col("errors", "errors", false, false),
            ],
        },
        kind: Kind::Rr(RrOpts {
            transport,
            clients,
            warmup: secs(warmup),
            duration: secs(dur),
            bytes: 100,
        }),
        rounds,
    }
}

fn fanout_case(transport: Transport, clients: usize, rate: u32, dur: f64, rounds: usize) -> Case {
    let o = FanoutOpts {
        buffered: false,
        transport,
        clients,
        rate,
        warmup: secs(1.0_f64.min(dur)),
        duration: secs(dur),
        bytes: 100,
    };
    fanout_case_named("fanout", o, rounds)
}

/// A fan-out case named `<prefix>-<transport>-<clients>x<rate>`.
pub(crate) fn fanout_case_named(prefix: &str, o: FanoutOpts, rounds: usize) -> Case {
    let (clients, rate, t) = (o.clients, o.rate, o.transport.name());
    Case {
        spec: CaseSpec {
            name: format!("{prefix}-{t}-{clients}x{rate}"),
            title: format!(
                "server pushes to {clients} clients (distinct uids) {rate} times a second over {t}, {} s measured",
                o.duration.as_secs_f64()
            ),
            columns: vec![
                col("delivered_per_s", "delivered/s", true, true),
                col("delivered_ratio", "delivered share", true, false),
                col("p50_ms", "p50 ms", false, false),
                col("p99_ms", "p99 ms", false, true),
                col("max_ms", "max ms", false, false),
                col(
                    "server_cpu_us_per_event",
                    "server CPU µs/event",
                    false,
                    true,
                ),
                col("tool_cpu_us_per_event", "tool CPU µs/event", false, false),
                col("tool_cpu_pct", "tool CPU %", false, false),
            ],
        },
        kind: Kind::Fanout(o),
        rounds,
    }
}

fn idle_case(conns: usize, settle: f64, rounds: usize) -> Case {
    Case {
        spec: CaseSpec {
            name: format!("idle-{conns}"),
            title: format!(
                "{conns} idle WebSocket connections; server VmRSS after minus before, per connection"
            ),
            columns: vec![
                col("conns", "connections", true, false),
                col("kib_per_conn", "KiB/conn", false, true),
                col("rss_before_mib", "RSS before MiB", false, false),
                col("rss_after_mib", "RSS after MiB", false, false),
            ],
        },
        kind: Kind::Idle(IdleOpts {
            conns,
            per_worker: 9000,
            settle: secs(settle),
        }),
        rounds,
    }
}

fn storm_case(clients: usize, timeout: f64, rounds: usize) -> Case {
    Case {
        spec: CaseSpec {
            name: format!("storm-{clients}"),
            title: format!(
                "{clients} connected clients; server SIGKILLed and restarted; clients reconnect with Sente's backoff (capped at 10 s)"
            ),
            columns: vec![
                col("t99_s", "99% back s", false, true),
                col("t100_s", "100% back s", false, true),
                col("back_ratio", "back share", true, false),
                col("failed_attempts", "failed attempts", false, false),
                col("server_cpu_pct", "server CPU %", false, false),
                col("restart_s", "restart s", false, false),
            ],
        },
        kind: Kind::Storm(StormOpts {
            clients,
            timeout: secs(timeout),
            pin: None,
            backoff: scenario::StormBackoff::Sente,
        }),
        rounds,
    }
}

/// The cases of a mode, in run order.
pub fn cases(mode: Mode) -> Vec<Case> {
    use Transport::{Ajax, Ws};
    match mode {
        Mode::Smoke => vec![
            rr_case(Ws, 1, 0.2, 0.8, 1),
            rr_case(Ws, 10, 0.2, 0.8, 1),
            fanout_case(Ws, 10, 20, 1.0, 1),
            idle_case(50, 0.2, 1),
            rr_case(Ajax, 2, 0.2, 0.8, 1),
            fanout_case(Ajax, 5, 10, 1.0, 1),
            storm_case(20, 20.0, 1),
        ],
        Mode::Quick => vec![
            rr_case(Ws, 1, 0.5, 3.0, 5),
            rr_case(Ws, 100, 0.5, 3.0, 5),
            rr_case(Ws, 1000, 1.0, 3.0, 3),
            fanout_case(Ws, 1000, 100, 4.0, 3),
            idle_case(5000, 1.0, 2),
            idle_case(15_000, 1.0, 1),
            rr_case(Ajax, 1, 0.5, 3.0, 3),
            rr_case(Ajax, 100, 0.5, 3.0, 3),
            fanout_case(Ajax, 200, 20, 4.0, 3),
            storm_case(1000, 30.0, 2),
            storm_case(10_000, 60.0, 1),
        ],
        Mode::Full => vec![
            rr_case(Ws, 1, 1.0, 10.0, 5),
            rr_case(Ws, 100, 1.0, 10.0, 5),
            rr_case(Ws, 1000, 2.0, 10.0, 5),
            fanout_case(Ws, 1000, 100, 10.0, 5),
            idle_case(5000, 2.0, 3),
            idle_case(10_000, 2.0, 3),
            idle_case(15_000, 2.0, 3),
            idle_case(19_500, 2.0, 3),
            rr_case(Ajax, 1, 1.0, 10.0, 5),
            rr_case(Ajax, 100, 1.0, 10.0, 5),
            rr_case(Ajax, 1000, 2.0, 10.0, 5),
            fanout_case(Ajax, 1000, 100, 10.0, 5),
            storm_case(10_000, 60.0, 3),
        ],
    }
}

/// Options of a suite run.
#[derive(Debug, Clone)]
pub struct SuiteOpts {
    /// Mode.
    pub mode: Mode,
    /// Targets, in table order.
    pub targets: Vec<Target>,
    /// Override the number of rounds of every case.
    pub rounds: Option<usize>,
    /// Only run cases whose name starts with one of these.
    pub only: Vec<String>,
    /// Where to write `<timestamp>.json`, `.md` and charts (None: write nothing).
    pub out: Option<PathBuf>,
    /// Pin the servers to CPU 0 and the tool to CPU 1.
    pub pin: bool,
    /// The command line, for the report.
    pub command: String,
    /// Show a progress bar.
    pub progress: bool,
}

/// Runs one trial of `case` against `target` (a fresh server).
pub(crate) async fn run_trial(target: Target, case: &Case, pin: Option<&str>) -> Res<Metrics> {
    if let Kind::Storm(o) = &case.kind {
        let mut o = o.clone();
        o.pin = pin.map(str::to_owned);
        return scenario::storm(target, &o).await;
    }
    let server = Server::spawn(target, "127.0.0.1:0".parse()?, pin).await?;
    let ep = Endpoint::from(&server);
    let r = match &case.kind {
        Kind::Rr(o) => scenario::rr(ep, *o).await,
        Kind::Fanout(o) => scenario::fanout(ep, *o).await,
        Kind::Idle(o) => scenario::idle(&server, *o).await,
        Kind::Storm(_) => unreachable!("handled above"),
    };
    server.kill().await;
    r
}

/// Pins this process's threads to `cpus` (a taskset list).
pub(crate) fn pin_self(cpus: &str) {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid])
        .stdout(std::process::Stdio::null())
        .status();
}

/// The targets that can run here, and why the others cannot; fails if none can.
pub(crate) async fn available(wanted: &[Target]) -> Res<(Vec<Target>, BTreeMap<String, String>)> {
    let mut skipped = BTreeMap::new();
    let mut targets = Vec::new();
    for &t in wanted {
        match check_available(t).await {
            Ok(()) => targets.push(t),
            Err(why) => {
                eprintln!("skipping {}: {why}", t.name());
                skipped.insert(t.name().to_owned(), why);
            }
        }
    }
    if targets.is_empty() {
        return Err(err("no target is available"));
    }
    Ok((targets, skipped))
}

/// With `pin`: pins this process to CPU 1 and returns the servers' CPU list (`0`).
pub(crate) fn pin_split(pin: bool) -> Option<&'static str> {
    pin.then(|| {
        pin_self("1");
        "0"
    })
}

/// Now as Unix seconds.
pub(crate) fn unix_now() -> Res<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

/// Runs a suite and writes its results; returns them.
pub async fn run(opts: &SuiteOpts) -> Res<Results> {
    let started_at = Instant::now();
    let unix = unix_now()?;
    let (targets, skipped) = available(&opts.targets).await?;
    let pin = pin_split(opts.pin);
    let mut cases = cases(opts.mode);
    if !opts.only.is_empty() {
        cases.retain(|c| {
            opts.only
                .iter()
                .any(|p| c.spec.name.starts_with(p.as_str()))
        });
    }
    for c in &mut cases {
        if let Some(r) = opts.rounds {
            c.rounds = r;
        }
    }
    let total: usize = cases
        .iter()
        .map(|c| {
            c.rounds
                * targets
                    .iter()
                    .filter(|t| t.supports(c.kind.transport()))
                    .count()
        })
        .sum();
    let bar = if opts.progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .map_err(|e| err(e.to_string()))?
            .progress_chars("=> "),
    );
    let mut trials = Vec::new();
    for case in &cases {
        let eligible: Vec<Target> = targets
            .iter()
            .copied()
            .filter(|t| t.supports(case.kind.transport()))
            .collect();
        for round in 0..case.rounds {
            for k in 0..eligible.len() {
                let target = eligible[(k + round) % eligible.len()];
                bar.set_message(format!(
                    "{} round {} {}",
                    case.spec.name,
                    round + 1,
                    target.name()
                ));
                let r = run_trial(target, case, pin).await;
                let (metrics, error) = match r {
                    Ok(m) => (m, None),
                    Err(e) => {
                        bar.println(format!("{} {}: {e}", case.spec.name, target.name()));
                        (Metrics::new(), Some(e.to_string()))
                    }
                };
                trials.push(Trial {
                    case: case.spec.name.clone(),
                    target: target.name().to_owned(),
                    round,
                    error,
                    metrics,
                });
                bar.inc(1);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    bar.finish_and_clear();
    let specs: Vec<CaseSpec> = cases.iter().map(|c| c.spec.clone()).collect();
    let names: Vec<String> = targets.iter().map(|t| t.name().to_owned()).collect();
    let summary = summarize(&specs, &names, &trials);
    let results = Results {
        started: timestamp(unix),
        mode: opts.mode.name().to_owned(),
        command: opts.command.clone(),
        machine: Machine::detect(),
        pinned: opts.pin,
        targets: names,
        skipped,
        cases: specs,
        trials,
        summary,
        wall_s: started_at.elapsed().as_secs_f64(),
        knee: None,
    };
    if let Some(dir) = &opts.out {
        write(&results, dir)?;
    }
    Ok(results)
}

/// Writes `<dir>/<stem>.json`, `.md` and the charts (see [`Results::stem`]).
pub fn write(r: &Results, dir: &Path) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let stem = r.stem();
    std::fs::write(
        dir.join(format!("{stem}.json")),
        serde_json::to_string_pretty(r)?,
    )?;
    let mut md = markdown(r);
    match charts::write_all(r, dir, &stem) {
        Ok(files) => {
            md.push('\n');
            for f in files {
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let _ = write!(md, "\n![{name}]({name})\n");
            }
        }
        Err(e) => {
            let _ = write!(md, "\n(no charts: {e})\n");
        }
    }
    std::fs::write(dir.join(format!("{stem}.md")), md)?;
    eprintln!("wrote {}/{stem}.{{json,md}} and charts", dir.display());
    Ok(())
}

/// Checks a smoke run: every trial succeeded and moved data. Returns the problems found.
pub fn smoke_problems(r: &Results) -> Vec<String> {
    let mut problems = Vec::new();
    for t in &r.trials {
        let what = format!("{} {}", t.case, t.target);
        if let Some(e) = &t.error {
            problems.push(format!("{what}: {e}"));
            continue;
        }
        let get = |k: &str| t.metrics.get(k).copied().unwrap_or(f64::NAN);
        let bad = if t.case.starts_with("rr-") {
            (get("errors") != 0.0 || get("req_per_s").is_nan() || get("req_per_s") <= 0.0)
                .then_some("request errors or no replies")
        } else if t.case.starts_with("fanout-") || t.case.starts_with("knee-") {
            (get("errors") != 0.0
                || get("delivered_ratio").is_nan()
                || get("delivered_ratio") <= 0.0)
                .then_some("no pushes delivered")
        } else if t.case.starts_with("idle-") {
            (get("failed") != 0.0).then_some("idle connects failed")
        } else if t.case.starts_with("storm-") {
            (get("back_ratio").is_nan() || get("back_ratio") < 1.0)
                .then_some("not every client came back")
        } else {
            None
        };
        if let Some(b) = bad {
            problems.push(format!("{what}: {b} ({:?})", t.metrics));
        }
    }
    if let Some(k) = &r.knee {
        for t in &r.targets {
            match k.rows.iter().find(|row| &row.target == t) {
                None => problems.push(format!("knee {t}: no result")),
                Some(row) if row.knee_rate.is_none() => problems.push(format!(
                    "knee {t}: even the first rate failed: {}",
                    row.why.as_deref().unwrap_or("?")
                )),
                Some(_) => {}
            }
        }
    }
    problems
}
