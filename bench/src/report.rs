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
    for c in &r.cases {
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
