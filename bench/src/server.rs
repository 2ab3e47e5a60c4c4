//! Targets (peer servers) and spawning them as child processes.
//!
//! Every peer prints `LISTENING <addr>` on its first stdout line once it accepts
//! connections; the tool reads that line to learn the port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::client::Transport;
use crate::wire::Proto;
use crate::{Res, err, procfs};

/// A server implementation under test.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Our server (crates/sente) with the json packer.
    SenteRs,
    /// The same with a Prometheus recorder installed and its route mounted (the cost of
    /// metrics: `all --targets sente-rs,sente-rs-metrics`). Not in `all`'s default targets.
    SenteRsMetrics,
    /// Raw WebSocket echo on tokio-tungstenite, tuned: the floor.
    RawWs,
    /// socketioxide 0.18 on axum.
    Socketioxide,
    /// Node's socket.io 4.8.
    SocketioNode,
}

impl Target {
    /// Every target, in the order tables list them.
    pub const ALL: [Target; 4] = [
        Target::SenteRs,
        Target::RawWs,
        Target::Socketioxide,
        Target::SocketioNode,
    ];

    /// Name used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::SenteRs => "sente-rs",
            Target::SenteRsMetrics => "sente-rs-metrics",
            Target::RawWs => "raw-ws",
            Target::Socketioxide => "socketioxide",
            Target::SocketioNode => "socketio-node",
        }
    }

    /// The wire protocol this target speaks.
    pub fn proto(self) -> Proto {
        match self {
            Target::SenteRs | Target::SenteRsMetrics => Proto::Sente,
            Target::RawWs => Proto::Raw,
            Target::Socketioxide | Target::SocketioNode => Proto::SocketIo,
        }
    }

    /// Whether this target has the given transport (raw-ws has no long-polling).
    pub fn supports(self, transport: Transport) -> bool {
        transport == Transport::Ws || self != Target::RawWs
    }
}

/// Where the node peer lives.
pub fn node_peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join("socketio-node")
}

/// Checks that a target can run here; installs the node peer's npm dependencies on first
/// use. Returns why not otherwise.
pub async fn check_available(target: Target) -> Result<(), String> {
    if target != Target::SocketioNode {
        return Ok(());
    }
    let node = Command::new("node").arg("--version").output().await;
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("node is not installed".to_owned());
    }
    let dir = node_peer_dir();
    if dir.join("node_modules").join("socket.io").exists() {
        return Ok(());
    }
    eprintln!(
        "installing the socket.io peer's npm packages in {}",
        dir.display()
    );
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .status()
        .await
        .map_err(|e| format!("npm: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("npm install failed: {status}"))
    }
}

fn self_exe() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("SENTE_LOAD_EXE") {
        return Ok(PathBuf::from(p));
    }
    Ok(std::env::current_exe()?)
}

/// A running peer server process.
pub struct Server {
    child: Child,
    /// Its process id (for /proc measurements).
    pub pid: u32,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Which implementation it is.
    pub target: Target,
    /// It runs under callgrind (see [`crate::callgrind`]).
    pub callgrind: bool,
}

impl Server {
    /// Starts `target` listening on `addr` (port 0 picks a free port), optionally pinned
    /// to the CPUs in `pin` (a taskset list such as `0`).
    pub async fn spawn(target: Target, addr: SocketAddr, pin: Option<&str>) -> Res<Self> {
        Self::spawn_with(target, addr, pin, &[]).await
    }

    /// [`Server::spawn`] with extra arguments for `sente-load serve` (e.g. `--backplane
    /// redis --cluster NAME`; not for socketio-node).
    pub async fn spawn_with(
        target: Target,
        addr: SocketAddr,
        pin: Option<&str>,
        extra: &[String],
    ) -> Res<Self> {
        Self::spawn_opts(target, addr, pin, extra, false).await
    }

    /// [`Server::spawn_with`], under callgrind when `callgrind` (not for socketio-node).
    pub async fn spawn_opts(
        target: Target,
        addr: SocketAddr,
        pin: Option<&str>,
        extra: &[String],
        callgrind: bool,
    ) -> Res<Self> {
        if callgrind && target == Target::SocketioNode {
            return Err(err("--callgrind runs the Rust peers only"));
        }
        if !addr.ip().is_loopback() {
            return Err(err("peers listen on loopback addresses only"));
        }
        let (program, mut args): (PathBuf, Vec<String>) = match target {
            Target::SocketioNode => (
                PathBuf::from("node"),
                vec![node_peer_dir().join("server.js").display().to_string()],
            ),
            _ => (
                self_exe()?,
                vec!["serve".to_owned(), target.name().to_owned()],
            ),
        };
        args.extend(["--addr".to_owned(), addr.to_string()]);
        args.extend(extra.iter().cloned());
        let (program, args) = if callgrind {
            crate::callgrind::wrap(&program, &args)
        } else {
            (program, args)
        };
        let mut cmd = if let Some(cpus) = pin {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(&program).args(&args);
            c
        } else {
            let mut c = Command::new(&program);
            c.args(&args);
            c
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| err(format!("spawn {}: {e}", program.display())))?;
        let pid = child.id().ok_or_else(|| err("child exited"))?;
        let stdout = child.stdout.take().ok_or_else(|| err("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let start_timeout = if callgrind {
            crate::callgrind::START_TIMEOUT
        } else {
            Duration::from_secs(20)
        };
        let first = tokio::time::timeout(start_timeout, lines.next_line())
            .await
            .map_err(|_| {
                let secs = start_timeout.as_secs();
                err(format!("{} did not start within {secs} s", target.name()))
            })??
            .ok_or_else(|| err(format!("{} exited before listening", target.name())))?;
        let addr: SocketAddr = first
            .strip_prefix("LISTENING ")
            .ok_or_else(|| {
                err(format!(
                    "unexpected first line from {}: {first}",
                    target.name()
                ))
            })?
            .trim()
            .parse()?;
        // Keep draining stdout so that the peer never blocks or dies on a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            addr,
            target,
            callgrind,
        })
    }

    /// Resident memory of the server process in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        procfs::vm_rss_kib(self.pid)
    }

    /// CPU seconds the server process has used.
    pub fn cpu_seconds(&self) -> Option<f64> {
        procfs::cpu_seconds(self.pid)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}
