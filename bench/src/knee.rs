//! `knee`: the highest fan-out rate each target sustains. The `fanout` scenario runs with N
//! clients at per-client rates rising by a factor (a fresh server per trial); at every rate
//! step the targets still in the race take turns in a rotating order, so that a noisy machine
//! hits all of them alike. A rate is sustained when the delivered share and the delivery p99
//! are within bounds ([`Knee::verdict`]); a target stops at its first rate that fails every
//! attempt (1 + `retries`), and its knee is the rate before.

use std::time::{Duration, Instant};

use crate::client::Transport;
use crate::procfs::Machine;
use crate::report::{
    CaseSpec, Knee, KneeRow, Results, Trial, fmt_num, share_pct, summarize, timestamp,
};
use crate::scenario::{FanoutOpts, Metrics};
use crate::server::Target;
use crate::{Res, err, suite};

/// The push loops clamp their rate to this (see [`crate::peers::FanoutCfg::ticker`]).
pub const MAX_RATE: u32 = 10_000;

/// Options of a knee search.
#[derive(Debug, Clone)]
pub struct KneeOpts {
    /// Targets, in table order.
    pub targets: Vec<Target>,
    /// Transport of the clients.
    pub transport: Transport,
    /// Number of clients.
    pub clients: usize,
    /// First rate (pushes per client and second).
    pub start: u32,
    /// Each step multiplies the rate by this (> 1).
    pub factor: f64,
    /// No rate above this.
    pub max_rate: u32,
    /// At most this many rate steps.
    pub max_steps: usize,
    /// Warm-up of every trial.
    pub warmup: Duration,
    /// Measured time of every trial.
    pub duration: Duration,
    /// Event data size in bytes.
    pub bytes: usize,
    /// Sustained: at least this share of the expected events delivered...
    pub min_share: f64,
    /// ... and a delivery p99 of at most this many milliseconds.
    pub p99_ms: f64,
    /// Extra attempts at a failing rate before a target stops.
    pub retries: usize,
    /// Pin the servers to CPU 0 and the tool to CPU 1.
    pub pin: bool,
    /// sente-rs pushes through Sente's send window instead of flushing every push.
    pub buffered: bool,
}

impl KneeOpts {
    /// The tiny search `smoke` runs: 20 clients, 2 steps, short trials, loose bounds (it
    /// checks that the search works, not speed).
    pub fn smoke(targets: Vec<Target>) -> Self {
        Self {
            targets,
            transport: Transport::Ws,
            clients: 20,
            start: 50,
            factor: 2.0,
            max_rate: MAX_RATE,
            max_steps: 2,
            warmup: Duration::from_millis(200),
            duration: Duration::from_millis(600),
            bytes: 100,
            min_share: 0.9,
            p99_ms: 1000.0,
            retries: 1,
            pin: false,
            buffered: false,
        }
    }
}

/// The rates: `start`, then multiplied by `factor` (rounded, strictly increasing) while at
/// most `max`, at most `max_steps` of them.
pub fn ladder(start: u32, factor: f64, max: u32, max_steps: usize) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    let mut r = f64::from(start.max(1));
    while out.len() < max_steps && r.round() <= f64::from(max) {
        let v = r.round() as u32;
        if out.last().is_none_or(|&last| v > last) {
            out.push(v);
        }
        r *= factor;
    }
    out
}

/// Where one target stands in the search.
struct State {
    target: Target,
    knee: Option<(u32, Metrics)>,
    failed: Option<(u32, String)>,
    trials: usize,
}

fn progress_line(case: &str, target: Target, attempt: usize, m: &Metrics, verdict: &str) -> String {
    let get = |k: &str| fmt_num(m.get(k).copied().unwrap_or(f64::NAN));
    format!(
        "{case} {} (attempt {}): delivered {}/s ({}), p99 {} ms, server {} µs/event, tool {} µs/event, tool CPU {}% -> {verdict}",
        target.name(),
        attempt + 1,
        get("delivered_per_s"),
        share_pct(m.get("delivered_ratio").copied().unwrap_or(f64::NAN)),
        get("p99_ms"),
        get("server_cpu_us_per_event"),
        get("tool_cpu_us_per_event"),
        get("tool_cpu_pct"),
    )
}

/// Runs the search against `targets` (already checked to be available) and returns the knee,
/// the cases (one per rate tried) and every trial. Prints a line per trial.
pub async fn search(
    o: &KneeOpts,
    targets: &[Target],
    pin: Option<&str>,
) -> Res<(Knee, Vec<CaseSpec>, Vec<Trial>)> {
    if o.factor.is_nan() || o.factor < 1.01 {
        return Err(err("--factor must be at least 1.01"));
    }
    if o.max_rate > MAX_RATE {
        return Err(err(format!(
            "--max-rate above {MAX_RATE}: the peers' push loops clamp the rate there"
        )));
    }
    let mut knee = Knee {
        transport: o.transport.name().to_owned(),
        clients: o.clients,
        rates: ladder(o.start, o.factor, o.max_rate, o.max_steps),
        min_share: o.min_share,
        p99_ms: o.p99_ms,
        retries: o.retries,
        buffered: o.buffered,
        rows: Vec::new(),
    };
    let mut states: Vec<State> = targets
        .iter()
        .map(|&target| State {
            target,
            knee: None,
            failed: None,
            trials: 0,
        })
        .collect();
    let mut specs = Vec::new();
    let mut trials = Vec::new();
    for (step, &rate) in knee.rates.iter().enumerate() {
        let active: Vec<usize> = (0..states.len())
            .filter(|&i| states[i].failed.is_none())
            .collect();
        if active.is_empty() {
            break;
        }
        let case = suite::fanout_case_named(
            "knee",
            FanoutOpts {
                transport: o.transport,
                clients: o.clients,
                rate,
                warmup: o.warmup,
                duration: o.duration,
                bytes: o.bytes,
                buffered: o.buffered,
            },
            1 + o.retries,
        );
        specs.push(case.spec.clone());
        for k in 0..active.len() {
            let st = &mut states[active[(k + step) % active.len()]];
            for attempt in 0..=o.retries {
                let (mut metrics, error, why) = match suite::run_trial(st.target, &case, pin).await
                {
                    Ok(m) => {
                        let why = knee.verdict(&m);
                        (m, None, why)
                    }
                    Err(e) => (
                        Metrics::new(),
                        Some(e.to_string()),
                        Some(format!("error: {e}")),
                    ),
                };
                metrics.insert("rate".into(), f64::from(rate));
                st.trials += 1;
                let last = attempt == o.retries;
                let verdict = match (&why, last) {
                    (None, _) => "ok".to_owned(),
                    (Some(w), false) => format!("FAIL: {w}; trying again"),
                    (Some(w), true) => format!("FAIL: {w}"),
                };
                println!(
                    "{}",
                    progress_line(&case.spec.name, st.target, attempt, &metrics, &verdict)
                );
                trials.push(Trial {
                    case: case.spec.name.clone(),
                    target: st.target.name().to_owned(),
                    round: attempt,
                    error,
                    metrics: metrics.clone(),
                });
                tokio::time::sleep(Duration::from_millis(200)).await;
                match why {
                    None => {
                        st.knee = Some((rate, metrics));
                        break;
                    }
                    Some(w) if last => st.failed = Some((rate, w)),
                    Some(_) => {}
                }
            }
        }
    }
    knee.rows = states
        .into_iter()
        .map(|st| KneeRow {
            target: st.target.name().to_owned(),
            knee_rate: st.knee.as_ref().map(|(r, _)| *r),
            at_knee: st.knee.map(|(_, m)| m).unwrap_or_default(),
            failed_rate: st.failed.as_ref().map(|(r, _)| *r),
            why: st.failed.map(|(_, w)| w),
            trials: st.trials,
        })
        .collect();
    Ok((knee, specs, trials))
}

/// Runs the search and adds it to `r` (its cases, trials, summary, `knee` and wall time), for
/// `smoke`. Uses `r`'s targets.
pub async fn append(r: &mut Results, o: &KneeOpts) -> Res<()> {
    let started = Instant::now();
    let targets: Vec<Target> = o
        .targets
        .iter()
        .copied()
        .filter(|t| r.targets.iter().any(|n| n == t.name()))
        .collect();
    let (knee, specs, trials) = search(o, &targets, suite::pin_split(o.pin)).await?;
    r.cases.extend(specs);
    r.trials.extend(trials);
    r.summary = summarize(&r.cases, &r.targets, &r.trials);
    r.knee = Some(knee);
    r.wall_s += started.elapsed().as_secs_f64();
    Ok(())
}

/// The `knee` command: runs the search and returns its results (mode `knee`; written as
/// `<timestamp>-knee.{json,md}` by [`suite::write`]).
pub async fn run(o: &KneeOpts, command: String) -> Res<Results> {
    let (targets, skipped) = suite::available(&o.targets).await?;
    let mut r = Results {
        started: timestamp(suite::unix_now()?),
        mode: "knee".to_owned(),
        command,
        machine: Machine::detect(),
        pinned: o.pin,
        targets: targets.iter().map(|t| t.name().to_owned()).collect(),
        skipped,
        cases: Vec::new(),
        trials: Vec::new(),
        summary: Vec::new(),
        wall_s: 0.0,
        knee: None,
    };
    append(&mut r, o).await?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::ladder;

    #[test]
    fn ladders() {
        assert_eq!(ladder(100, 1.5, 1000, 99), [100, 150, 225, 338, 506, 759]);
        assert_eq!(ladder(50, 2.0, 10_000, 2), [50, 100]);
        assert_eq!(ladder(1, 1.1, 3, 99), [1, 2, 3]);
        assert!(ladder(200, 1.5, 100, 9).is_empty());
    }
}
