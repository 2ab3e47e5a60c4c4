//! Instruction counts of a server process: the repeatable form of "server CPU per event".
//!
//! CPU seconds read from `/proc` move with whatever else the machine runs (these machines
//! are shared); the number of instructions a server executes for a fixed scenario does not.
//! The machines here expose no hardware counters (`perf stat -e instructions` is "not
//! supported" in the VM), so the count comes from valgrind's callgrind: `--callgrind` on
//! `rr` and `fanout` starts the spawned server under `valgrind --tool=callgrind` (about 50
//! times slower, so run small scenarios), zeroes its counters when the measured window opens
//! (`vgdb --pid=P zero`) and dumps them when it closes (`vgdb --pid=P dump`). The dump's
//! `totals:` line is the instructions executed in the window (every thread, user space).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// Where callgrind writes its dumps (one file per dump: `cg.<pid>.<n>`).
pub fn out_dir() -> PathBuf {
    std::env::temp_dir().join("sente-load-callgrind")
}

/// The program and arguments that run `program args` under callgrind.
pub fn wrap(program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
    let dir = out_dir();
    let _ = std::fs::create_dir_all(&dir);
    let mut v = vec![
        "--tool=callgrind".to_owned(),
        "--quiet".to_owned(),
        format!("--callgrind-out-file={}/cg.%p", dir.display()),
        program.display().to_string(),
    ];
    v.extend(args.iter().cloned());
    (PathBuf::from("valgrind"), v)
}

/// How long a server under callgrind may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

async fn vgdb(pid: u32, command: &str) -> bool {
    Command::new("vgdb")
        .arg(format!("--pid={pid}"))
        .arg(command)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Zeroes the counters of the callgrind run `pid`.
pub async fn zero(pid: u32) -> bool {
    vgdb(pid, "zero").await
}

/// Dumps the counters of the callgrind run `pid` and returns the instructions executed since
/// the last [`zero`] (the newest dump's `totals:`).
pub async fn dump(pid: u32) -> Option<u64> {
    if !vgdb(pid, "dump").await {
        return None;
    }
    let prefix = format!("cg.{pid}.");
    let newest = std::fs::read_dir(out_dir())
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u64 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)?
        .1;
    totals(&std::fs::read_to_string(newest).ok()?)
}

/// The `totals:` (or, failing that, `summary:`) count of a callgrind dump.
pub fn totals(dump: &str) -> Option<u64> {
    let find = |key: &str| {
        dump.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    find("totals:").or_else(|| find("summary:"))
}

#[cfg(test)]
mod tests {
    use super::totals;

    #[test]
    fn reads_the_totals_line() {
        let dump = "version: 1\nevents: Ir\nfn=main\n1 5\nsummary: 41\ntotals: 40\n";
        assert_eq!(totals(dump), Some(40));
        assert_eq!(totals("summary: 7\n"), Some(7));
        assert_eq!(totals("events: Ir\n"), None);
    }
}
