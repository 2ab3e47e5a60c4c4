//! Results: the JSON document and the markdown tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::procfs::Machine;
use crate::scenario::Metrics;
use crate::stats::median;

/// One measured run of one scenario against one target.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Trial {
    /// Scenario case name, e.g. `rr-ws-100`.
    pub case: String,
    /// Target name, e.g. `raw-ws`.
    pub target: String,
    /// Round number (targets alternate within a round).
    pub round: usize,
    /// Why the trial failed, if it did.
    pub error: Option<String>,
    /// Measurements (NaN is written as `null`).
    #[serde(deserialize_with = "nan_as_null")]
    pub metrics: Metrics,
}

/// A column of a scenario's table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Column {
    /// Metric name in [`Trial::metrics`].
    pub metric: String,
    /// Column heading.
    pub label: String,
    /// Whether a larger value is better (decides nothing but the ratio's reading).
    pub higher_is_better: bool,
    /// Whether the table shows "sente-rs / target" for this metric.
    pub ratio: bool,
}

/// Describes one scenario case for the tables.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaseSpec {
    /// Case name, e.g. `rr-ws-100`.
    pub name: String,
    /// One-line description with its parameters.
    pub title: String,
    /// Table columns.
    pub columns: Vec<Column>,
}

/// Medians of one case for one target.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Case name.
    pub case: String,
    /// Target name.
    pub target: String,
    /// Successful trials.
    pub ok_trials: usize,
    /// Failed trials.
    pub failed_trials: usize,
    /// Median of every metric over the successful trials (NaN is written as `null`).
    #[serde(deserialize_with = "nan_as_null")]
    pub medians: Metrics,
    /// First error, if any trial failed.
    pub first_error: Option<String>,
}

/// Everything one run of the tool produced.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Results {
    /// When the run started (UTC, `YYYY-MM-DDTHH-MM-SSZ`).
    pub started: String,
    /// Mode: quick, full or smoke.
    pub mode: String,
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// Whether servers were pinned to CPU 0 and the tool to CPU 1.
    pub pinned: bool,
    /// Targets in table order.
    pub targets: Vec<String>,
    /// Targets that were skipped, with the reason.
    pub skipped: BTreeMap<String, String>,
    /// The cases in run order.
    pub cases: Vec<CaseSpec>,
    /// Every trial.
    pub trials: Vec<Trial>,
    /// Medians per case and target.
    pub summary: Vec<Summary>,
    /// Wall time of the whole run in seconds.
    pub wall_s: f64,
    /// The fan-out knee search, if the run did one (its trials are the `knee-*` cases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knee: Option<Knee>,
}

impl Results {
    /// File name stem of the run's outputs: the start time, plus `-knee` for a knee search
    /// and `-cluster` for a cluster run.
    pub fn stem(&self) -> String {
        match self.mode.as_str() {
            "knee" | "cluster" => format!("{}-{}", self.started, self.mode),
            _ => self.started.clone(),
        }
    }
}

/// A fan-out knee search: for each target, the highest per-client push rate on a ladder that
/// it sustains (delivered share and p99 within bounds).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Knee {
    /// Transport of the clients.
    pub transport: String,
    /// Number of clients.
    pub clients: usize,
    /// The rates tried, per client and second, in order.
    pub rates: Vec<u32>,
    /// A rate is sustained when at least this share of the expected events is delivered...
    pub min_share: f64,
    /// ... and the delivery p99 is at most this many milliseconds.
    pub p99_ms: f64,
    /// How many times a failing step is run again before the target stops.
    pub retries: usize,
    /// sente-rs pushed through Sente's send window (`send-buf-ms-ws`, its default) instead of
    /// flushing every push; the other targets have no window.
    #[serde(default)]
    pub buffered: bool,
    /// One row per target.
    pub rows: Vec<KneeRow>,
}

/// The knee of one target.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KneeRow {
    /// Target name.
    pub target: String,
    /// The highest rate sustained below the first failing one (None: the first rate failed).
    pub knee_rate: Option<u32>,
    /// The metrics of the passing trial at the knee (NaN is written as `null`).
    #[serde(deserialize_with = "nan_as_null")]
    pub at_knee: Metrics,
    /// The first rate that failed every attempt (None: none up to the last rate).
    pub failed_rate: Option<u32>,
    /// Why it failed.
    pub why: Option<String>,
    /// Trials run for this target.
    pub trials: usize,
}

impl Knee {
    /// Why a fan-out trial's metrics do not sustain the rate, or None if they do.
    pub fn verdict(&self, m: &Metrics) -> Option<String> {
        let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        let mut why = Vec::new();
        let share = get("delivered_ratio");
        if share.is_nan() || share < self.min_share {
            why.push(format!(
                "delivered {} < {}%",
                share_pct(share),
                fmt_num(self.min_share * 100.0)
            ));
        }
        let p99 = get("p99_ms");
        if p99.is_nan() || p99 > self.p99_ms {
            why.push(format!(
                "p99 {} ms > {} ms",
                fmt_num(p99),
                fmt_num(self.p99_ms)
            ));
        }
        let errors = m.get("errors").copied().unwrap_or(0.0);
        if errors > 0.0 {
            why.push(format!("{errors} client(s) lost their connection"));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }

    /// The knee table, the ratios of sente-rs's knee to the others', and every trial.
    fn markdown(&self, trials: &[Trial], s: &mut String) {
        let ladder: Vec<String> = self.rates.iter().map(u32::to_string).collect();
        let _ = writeln!(
            s,
            "\n#### Fan-out knee: {} clients over {}\n\nRates tried (pushes per client and second): {}. \
             Sustained: >= {}% of the expected events delivered in the measured window and delivery \
             p99 <= {} ms; a failing rate is run {} more time(s) before the target stops.\n",
            self.clients,
            self.transport,
            ladder.join(", "),
            fmt_num(self.min_share * 100.0),
            fmt_num(self.p99_ms),
            self.retries
        );
        if self.buffered {
            let _ = writeln!(
                s,
                "sente-rs pushes through Sente's send window (`send-buf-ms-ws` 30 ms, Sente's \
                 default): a client's pushes of one window leave in one frame, and the latency \
                 includes the wait. The other targets have no window and send every push at once.\n"
            );
        }
        let _ = writeln!(
            s,
            "| target | knee /s per client | delivered/s at knee | p99 ms at knee | server CPU µs/event at knee | tool CPU µs/event at knee | tool CPU % at knee | first failing /s | why |\n|---|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for row in &self.rows {
            let at = |k: &str| fmt_num(row.at_knee.get(k).copied().unwrap_or(f64::NAN));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.target,
                row.knee_rate.map_or("none".to_owned(), |r| r.to_string()),
                at("delivered_per_s"),
                at("p99_ms"),
                at("server_cpu_us_per_event"),
                at("tool_cpu_us_per_event"),
                at("tool_cpu_pct"),
                row.failed_rate.map_or("none".to_owned(), |r| r.to_string()),
                row.why.as_deref().unwrap_or("sustained every rate tried")
            );
        }
        if let Some(ours) = self.rows.iter().find(|r| r.target == "sente-rs") {
            for theirs in self.rows.iter().filter(|r| r.target != "sente-rs") {
                let _ = writeln!(s, "\n{}", knee_ratio(ours, theirs));
            }
        }
        let _ = writeln!(
            s,
            "\n| rate /s | target | attempt | delivered/s | share | p99 ms | server CPU µs/event | tool CPU µs/event | tool CPU % | verdict |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for t in trials.iter().filter(|t| t.case.starts_with("knee-")) {
            let val = |k: &str| t.metrics.get(k).copied().unwrap_or(f64::NAN);
            let get = |k: &str| fmt_num(val(k));
            let verdict = match &t.error {
                Some(e) => format!("error: {}", e.replace('\n', " ")),
                None => self
                    .verdict(&t.metrics)
                    .map_or("ok".to_owned(), |w| format!("fail: {w}")),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {verdict} |",
                val("rate"),
                t.target,
                t.round + 1,
                get("delivered_per_s"),
                share_pct(val("delivered_ratio")),
                get("p99_ms"),
                get("server_cpu_us_per_event"),
                get("tool_cpu_us_per_event"),
                get("tool_cpu_pct"),
            );
        }
    }
}

/// A delivered share as a percentage with one decimal (`99.4%`).
pub fn share_pct(share: f64) -> String {
    if share.is_finite() {
        format!("{:.1}%", share * 100.0)
    } else {
        "n/a".to_owned()
    }
}

/// "sente-rs / them: R x the knee rate", qualified when a side never failed or never passed.
pub fn knee_ratio(ours: &KneeRow, theirs: &KneeRow) -> String {
    let head = format!("{} / {}:", ours.target, theirs.target);
    let (Some(a), Some(b)) = (ours.knee_rate, theirs.knee_rate) else {
        return format!("{head} n/a (a target failed the first rate)");
    };
    let ratio = f64::from(a) / f64::from(b);
    let bound = match (ours.failed_rate.is_none(), theirs.failed_rate.is_none()) {
        (true, true) => " (neither failed up to the last rate: no ratio)",
        (true, false) => " or more (sente-rs never failed)",
        (false, true) => " or less (it never failed)",
        (false, false) => "",
    };
    if bound.starts_with(" (") {
        return format!("{head} n/a{bound}");
    }
    let delivered = |r: &KneeRow| {
        r.at_knee
            .get("delivered_per_s")
            .copied()
            .unwrap_or(f64::NAN)
    };
    format!(
        "{head} **{ratio:.2}x** the knee rate{bound} ({a} against {b} pushes per client and second; delivered/s at the knee {:.2}x)",
        delivered(ours) / delivered(theirs)
    )
}

/// Reads metrics written by serde_json, which writes NaN as `null`.
fn nan_as_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Metrics, D::Error> {
    let m: BTreeMap<String, Option<f64>> = serde::Deserialize::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// Computes [`Results::summary`] from the trials.
pub fn summarize(cases: &[CaseSpec], targets: &[String], trials: &[Trial]) -> Vec<Summary> {
    let mut out = Vec::new();
    for c in cases {
        for t in targets {
            let mine: Vec<&Trial> = trials
                .iter()
                .filter(|x| x.case == c.name && &x.target == t)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let ok: Vec<&&Trial> = mine.iter().filter(|x| x.error.is_none()).collect();
            let mut names: Vec<&String> = ok.iter().flat_map(|x| x.metrics.keys()).collect();
            names.sort();
            names.dedup();
            let medians = names
                .into_iter()
                .map(|n| {
                    let v: Vec<f64> = ok
                        .iter()
                        .filter_map(|x| x.metrics.get(n).copied())
                        .collect();
                    (n.clone(), median(&v))
                })
                .collect();
            out.push(Summary {
                case: c.name.clone(),
                target: t.clone(),
                ok_trials: ok.len(),
                failed_trials: mine.len() - ok.len(),
                medians,
                first_error: mine.iter().find_map(|x| x.error.clone()),
            });
        }
    }
    out
}

/// Formats a number for a table: 3 significant digits, k/M suffixes for large values.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".to_owned()
    } else {
        format!("{v:.3}")
    }
}

/// The markdown tables of a run: one table per case, medians, and sente-rs's ratio to each
/// target for the ratio columns.
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Run `{}` ({} mode), started {}.",
        r.command, r.mode, r.started
    );
    let _ = writeln!(
        s,
        "Machine: {} x {}, {} GiB RAM, Linux {}, open-files limit {}{}.",
        r.machine.nproc,
        r.machine.cpu,
        r.machine.mem_gib,
        r.machine.kernel,
        r.machine.nofile,
        if r.pinned {
            "; servers pinned to CPU 0, the load tool to CPU 1"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "Total wall time {:.0} s.", r.wall_s);
    for (t, why) in &r.skipped {
        let _ = writeln!(s, "\nSkipped `{t}`: {why}.");
    }
    // Knee steps are listed trial by trial in the knee section instead.
    for c in r.cases.iter().filter(|c| !c.name.starts_with("knee-")) {
        let rows: Vec<&Summary> = r.summary.iter().filter(|x| x.case == c.name).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n#### `{}`: {}\n", c.name, c.title);
        let mut head = String::from("| target | trials |");
        let mut sep = String::from("|---|---|");
        for col in &c.columns {
            let _ = write!(head, " {} |", col.label);
            sep.push_str("---:|");
        }
        for col in c.columns.iter().filter(|c| c.ratio) {
            let _ = write!(head, " sente-rs / this, {} |", col.label);
            sep.push_str("---:|");
        }
        let _ = writeln!(s, "{head}\n{sep}");
        let ours = rows.iter().find(|x| x.target == "sente-rs");
        for row in &rows {
            let _ = write!(s, "| {} | {}", row.target, row.ok_trials);
            if row.failed_trials > 0 {
                let _ = write!(s, " (+{} failed)", row.failed_trials);
            }
            s.push_str(" |");
            for col in &c.columns {
                let v = row.medians.get(&col.metric).copied().unwrap_or(f64::NAN);
                let _ = write!(s, " {} |", fmt_num(v));
            }
            for col in c.columns.iter().filter(|c| c.ratio) {
                let theirs = row.medians.get(&col.metric).copied().unwrap_or(f64::NAN);
                let mine = ours
                    .and_then(|o| o.medians.get(&col.metric).copied())
                    .unwrap_or(f64::NAN);
                let ratio = mine / theirs;
                if ratio.is_finite() {
                    let _ = write!(s, " {ratio:.2}x |");
                } else {
                    s.push_str(" n/a |");
                }
            }
            s.push('\n');
        }
        for row in rows.iter().filter(|x| x.first_error.is_some()) {
            let _ = writeln!(
                s,
                "\n`{}` failed {} trial(s): {}",
                row.target,
                row.failed_trials,
                row.first_error
                    .as_deref()
                    .unwrap_or_default()
                    .replace('\n', " ")
            );
        }
    }
    if let Some(k) = &r.knee {
        k.markdown(&r.trials, &mut s);
    }
    s
}

/// `YYYY-MM-DDTHH-MM-SSZ` (UTC) for a Unix time in seconds (file-name safe).
pub fn timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::timestamp(0), "1970-01-01T00-00-00Z");
        assert_eq!(super::timestamp(1_709_251_199), "2024-02-29T23-59-59Z");
    }

    #[test]
    fn nan_metrics_round_trip() {
        let mut metrics = super::Metrics::new();
        metrics.insert("t100_s".into(), f64::NAN);
        let t = super::Trial {
            case: "c".into(),
            target: "t".into(),
            round: 0,
            error: None,
            metrics,
        };
        let text = serde_json::to_string(&t).unwrap();
        let back: super::Trial = serde_json::from_str(&text).unwrap();
        assert!(back.metrics["t100_s"].is_nan());
    }

    #[test]
    fn numbers() {
        assert_eq!(super::fmt_num(69_600.0), "69.6k");
        assert_eq!(super::fmt_num(0.088), "0.088");
        assert_eq!(super::fmt_num(f64::NAN), "n/a");
    }
}
