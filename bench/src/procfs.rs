//! Reading a process's memory and CPU time, and the machine's description, from /proc.

use std::sync::OnceLock;

/// Resident set size (`VmRSS`) of process `pid` in KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of process `pid` (all its threads) in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_times(pid).map(|(user, system)| user + system)
}

/// `(user, system)` CPU time of process `pid` (all its threads) in seconds.
pub fn cpu_times(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let utime: u64 = f.nth(11)?.parse().ok()?; // field 14
    let stime: u64 = f.next()?.parse().ok()?; // field 15
    Some((utime as f64 / clock_ticks(), stime as f64 / clock_ticks()))
}

/// The lowest pid whose `/proc/<pid>/comm` is `comm` (e.g. `redis-server`), if any runs.
pub fn pid_by_comm(comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .min()
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The machine the numbers were measured on.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    /// Logical CPUs available to the tool.
    pub nproc: usize,
    /// CPU model name from /proc/cpuinfo.
    pub cpu: String,
    /// Total memory in GiB.
    pub mem_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Open-files limit of the tool's process (soft).
    pub nofile: String,
}

impl Machine {
    /// Reads the description of this machine.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let nofile = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap_or("?")
            .to_owned();
        Self {
            nproc: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            cpu,
            mem_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            nofile,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(super::vm_rss_kib(pid).unwrap() > 0);
        assert!(super::cpu_seconds(pid).is_some());
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert!(super::pid_by_comm(comm.trim()).is_some());
        assert_eq!(super::pid_by_comm("no-such-process-name"), None);
    }
}
