//! `sente-load`: load tests for sente-rs and its peers. See `sente-load --help` and
//! BENCHMARKS.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sente_bench::client::Transport;
use sente_bench::cluster::{self, ClusterOpts, ClusterTarget};
use sente_bench::knee::{self, KneeOpts};
use sente_bench::report::fmt_num;
use sente_bench::scenario::{self, Endpoint, FanoutOpts, IdleOpts, Metrics, RrOpts, StormOpts};
use sente_bench::server::{Server, Target, check_available};
use sente_bench::suite::{self, Mode, SuiteOpts};
use sente_bench::wire::Proto;
use sente_bench::{Res, err, peers};

/// Load tool for sente-rs: request/reply, fan-out, idle memory and reconnect storms against
/// sente-rs and peer servers (raw WebSocket, socketioxide, socket.io for Node).
#[derive(Parser)]
#[command(name = "sente-load", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which server to load: a target the tool spawns, or an external one.
#[derive(Args, Clone)]
struct TargetArgs {
    /// Spawn this peer (one fresh process per run).
    #[arg(long, value_enum, default_value = "sente-rs")]
    target: Target,
    /// Use an already running server at this loopback address instead.
    #[arg(long, requires = "proto")]
    addr: Option<SocketAddr>,
    /// Wire protocol of the external server.
    #[arg(long, value_enum)]
    proto: Option<Proto>,
    /// Pin spawned servers to these CPUs (taskset list, e.g. `0`).
    #[arg(long)]
    pin: Option<String>,
    /// Run the spawned server under valgrind's callgrind and report the instructions it
    /// executes per request or event (`server_kinstr_per_req` / `_per_event`, thousands):
    /// repeatable on a noisy machine, but about 50 times slower, so use small scenarios.
    #[arg(long)]
    callgrind: bool,
}

/// One trial's shape, shared by `rr`, `fanout` and `knee`.
#[derive(Args, Clone, Copy)]
struct TrialArgs {
    /// Measured seconds (of every trial).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Warm-up seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Transport.
    #[arg(long, value_enum, default_value = "ws")]
    transport: Transport,
    /// Payload (event data) size in bytes.
    #[arg(long, default_value_t = 100)]
    bytes: usize,
}

impl TrialArgs {
    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Closed-loop request/reply: req/s and latency percentiles.
    Rr {
        #[command(flatten)]
        t: TargetArgs,
        /// Client counts to run, one after another.
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
        clients: Vec<usize>,
        #[command(flatten)]
        trial: TrialArgs,
    },
    /// The server pushes to every client at a fixed rate: delivered/s and delivery latency.
    Fanout {
        #[command(flatten)]
        t: TargetArgs,
        /// Number of clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Pushes per second to every client.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[command(flatten)]
        trial: TrialArgs,
        /// sente-rs only: push through the server's send buffer (Sente's batching window)
        /// instead of flushing each push; the latency then includes the window.
        #[arg(long)]
        buffered: bool,
    },
    /// Idle WebSocket connections: the server's resident memory per connection.
    Idle {
        /// Peer to spawn (needs its own process to measure).
        #[arg(long, value_enum, default_value = "sente-rs")]
        target: Target,
        /// Connection counts to run, one after another.
        #[arg(long, value_delimiter = ',', default_value = "5000,10000")]
        conns: Vec<usize>,
        /// Connections per worker process.
        #[arg(long, default_value_t = 9000)]
        per_worker: usize,
        /// Seconds to wait before reading the server's memory.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
        /// Pin the server to these CPUs.
        #[arg(long)]
        pin: Option<String>,
    },
    /// Reconnect storm: kill and restart the server under N connected clients.
    Storm {
        /// Peer to spawn.
        #[arg(long, value_enum, default_value = "sente-rs")]
        target: Target,
        /// Number of clients.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Seconds to wait for everyone to come back.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// Pin the server to these CPUs.
        #[arg(long)]
        pin: Option<String>,
        /// The clients' reconnect backoff.
        #[arg(long, value_enum, default_value = "sente")]
        backoff: scenario::StormBackoff,
    },
    /// Every scenario against every target, alternating targets; writes
    /// `bench/results/<timestamp>.{json,md}` and PNG charts.
    All {
        /// About 15 minutes: 3 s trials, 1-5 rounds per case.
        #[arg(long, conflicts_with = "full")]
        quick: bool,
        /// The full sizes (1k/10k/19.5k), 5 rounds.
        #[arg(long)]
        full: bool,
        /// Targets (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        targets: Vec<Target>,
        /// Override every case's number of rounds.
        #[arg(long)]
        rounds: Option<usize>,
        /// Only cases whose name starts with one of these (e.g. `rr-ws,idle`).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Output directory.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
        out: PathBuf,
        /// Pin the servers to CPU 0 and the load tool to CPU 1.
        #[arg(long)]
        pin: bool,
    },
    /// Fan-out knee search: runs `fanout` at rising per-client rates (targets alternating at
    /// every step, a fresh server per trial) until each target no longer sustains the rate;
    /// writes `bench/results/<timestamp>-knee.{json,md}`.
    Knee {
        /// Targets.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "sente-rs,socketioxide"
        )]
        targets: Vec<Target>,
        /// Number of clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// First rate: pushes per second to every client.
        #[arg(long, default_value_t = 100)]
        start: u32,
        /// Each step multiplies the rate by this.
        #[arg(long, default_value_t = 1.5)]
        factor: f64,
        /// Highest rate to try (at most 10000, where the push loops clamp).
        #[arg(long, default_value_t = knee::MAX_RATE)]
        max_rate: u32,
        /// Sustained: delivery p99 at most this many milliseconds...
        #[arg(long, default_value_t = 100.0)]
        p99_ms: f64,
        /// ... and at least this percentage of the expected events delivered.
        #[arg(long, default_value_t = 99.0)]
        min_delivered_pct: f64,
        /// Extra attempts at a failing rate before a target stops.
        #[arg(long, default_value_t = 1)]
        retries: usize,
        /// sente-rs pushes through Sente's send window (`send-buf-ms-ws`, 30 ms by default)
        /// instead of flushing each push; the other targets have no window.
        #[arg(long)]
        buffered: bool,
        #[command(flatten)]
        trial: TrialArgs,
        /// Output directory.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
        out: PathBuf,
        /// Pin the servers to CPU 0 and the load tool to CPU 1.
        #[arg(long)]
        pin: bool,
    },
    /// Fan-out over a cluster: N = 1, 2, 3 server processes sharing a backplane (sente-rs over
    /// sente-redis and sente-nats, socketioxide over socketioxide-redis), clients round-robin
    /// over the nodes, node 0 pushing; targets alternating; writes
    /// `bench/results/<timestamp>-cluster.{json,md}`.
    Cluster {
        /// Targets.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "sente-redis,sente-nats,sente-redis-ws,sente-nats-ws,socketioxide-redis"
        )]
        targets: Vec<ClusterTarget>,
        /// Node counts.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        nodes: Vec<usize>,
        /// WebSocket clients in all.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Pushes per second to every client.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Measured seconds of every trial.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Warm-up seconds.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Payload (event data) size in bytes.
        #[arg(long, default_value_t = 100)]
        bytes: usize,
        /// Rounds (every node count against every target once per round).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Output directory.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
        out: PathBuf,
        /// Pin the nodes to CPU 0 and the load tool to CPU 1.
        #[arg(long)]
        pin: bool,
    },
    /// Every scenario at tiny sizes against sente-rs and raw-ws, and a two-step knee search;
    /// exits non-zero on failure.
    Smoke {
        /// Also write results here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rewrite the markdown and the charts of a results JSON file (next to it).
    Report {
        /// A `<timestamp>.json` written by `all` or `smoke`.
        json: PathBuf,
    },
    /// Run a peer server (prints `LISTENING <addr>` once it accepts connections).
    Serve {
        /// Which peer (socketio-node runs under node, not here).
        #[arg(value_enum)]
        peer: Target,
        /// Loopback address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
        /// Join a cluster over this backplane (sente-rs: redis or nats; socketioxide: redis).
        #[arg(long, value_enum)]
        backplane: Option<peers::Backplane>,
        /// The backplane's URL (default: Redis or NATS on 127.0.0.1, default port).
        #[arg(long, requires = "backplane")]
        backplane_url: Option<String>,
        /// The cluster's name (sente: the channel/subject prefix; socketioxide-redis: the
        /// channel prefix).
        #[arg(long, default_value = "sente-load")]
        cluster: String,
        /// sente-rs: turn the backplane's Ajax mailboxes off (a WebSocket-only deployment).
        #[arg(long, requires = "backplane")]
        no_mailbox: bool,
    },
    /// Internal: a child process holding idle connections for `idle`.
    #[command(hide = true)]
    IdleWorker {
        #[arg(long, value_enum)]
        proto: Proto,
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        first: u64,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        src_first: u64,
        #[arg(long, default_value_t = 900)]
        max_secs: u64,
    },
}

fn print_metrics(label: &str, m: &Metrics) {
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", fmt_num(*v)))
        .collect();
    println!("{label}: {}", parts.join(" "));
}

async fn with_server<F, Fut>(t: &TargetArgs, f: F) -> Res<Metrics>
where
    F: FnOnce(Endpoint) -> Fut,
    Fut: Future<Output = Res<Metrics>>,
{
    if let (Some(addr), Some(proto)) = (t.addr, t.proto) {
        return f(Endpoint {
            addr,
            proto,
            pid: None,
            callgrind: false,
        })
        .await;
    }
    check_available(t.target).await.map_err(err)?;
    let server = Server::spawn_opts(
        t.target,
        "127.0.0.1:0".parse()?,
        t.pin.as_deref(),
        &[],
        t.callgrind,
    )
    .await?;
    let r = f(Endpoint::from(&server)).await;
    server.kill().await;
    r
}

async fn run(cli: Cli) -> Res<ExitCode> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    match cli.cmd {
        Cmd::Rr { t, clients, trial } => {
            let transport = trial.transport;
            for n in clients {
                let o = RrOpts {
                    transport,
                    clients: n,
                    warmup: trial.warmup(),
                    duration: trial.duration(),
                    bytes: trial.bytes,
                };
                let m = with_server(&t, |ep| scenario::rr(ep, o)).await?;
                print_metrics(
                    &format!("rr-{}-{n} {}", transport.name(), t.target.name()),
                    &m,
                );
            }
        }
        Cmd::Fanout {
            t,
            clients,
            rate,
            trial,
            buffered,
        } => {
            let transport = trial.transport;
            let o = FanoutOpts {
                transport,
                clients,
                rate,
                warmup: trial.warmup(),
                duration: trial.duration(),
                bytes: trial.bytes,
                buffered,
            };
            let m = with_server(&t, |ep| scenario::fanout(ep, o)).await?;
            print_metrics(
                &format!(
                    "fanout-{}-{clients}x{rate} {}",
                    transport.name(),
                    t.target.name()
                ),
                &m,
            );
        }
        Cmd::Idle {
            target,
            conns,
            per_worker,
            settle,
            pin,
        } => {
            check_available(target).await.map_err(err)?;
            for n in conns {
                let server = Server::spawn(target, "127.0.0.1:0".parse()?, pin.as_deref()).await?;
                let o = IdleOpts {
                    conns: n,
                    per_worker,
                    settle: Duration::from_secs_f64(settle),
                };
                let r = scenario::idle(&server, o).await;
                server.kill().await;
                print_metrics(&format!("idle-{n} {}", target.name()), &r?);
            }
        }
        Cmd::Storm {
            target,
            clients,
            timeout,
            pin,
            backoff,
        } => {
            check_available(target).await.map_err(err)?;
            let o = StormOpts {
                clients,
                timeout: Duration::from_secs_f64(timeout),
                pin,
                backoff,
            };
            let m = scenario::storm(target, &o).await?;
            print_metrics(&format!("storm-{clients} {}", target.name()), &m);
        }
        Cmd::All {
            quick: _,
            full,
            targets,
            rounds,
            only,
            out,
            pin,
        } => {
            let opts = SuiteOpts {
                mode: if full { Mode::Full } else { Mode::Quick },
                targets: if targets.is_empty() {
                    Target::ALL.to_vec()
                } else {
                    targets
                },
                rounds,
                only,
                out: Some(out),
                pin,
                command,
                progress: true,
            };
            let r = suite::run(&opts).await?;
            println!("{}", sente_bench::report::markdown(&r));
        }
        Cmd::Knee {
            targets,
            clients,
            start,
            factor,
            max_rate,
            p99_ms,
            min_delivered_pct,
            retries,
            buffered,
            trial,
            out,
            pin,
        } => {
            let o = KneeOpts {
                targets,
                transport: trial.transport,
                clients,
                start,
                factor,
                max_rate,
                max_steps: usize::MAX,
                warmup: trial.warmup(),
                duration: trial.duration(),
                bytes: trial.bytes,
                min_share: min_delivered_pct / 100.0,
                p99_ms,
                retries,
                pin,
                buffered,
            };
            let r = knee::run(&o, command).await?;
            suite::write(&r, &out)?;
            println!("{}", sente_bench::report::markdown(&r));
        }
        Cmd::Cluster {
            targets,
            nodes,
            clients,
            rate,
            secs,
            warmup,
            bytes,
            rounds,
            out,
            pin,
        } => {
            let o = ClusterOpts {
                targets,
                nodes,
                clients,
                rate,
                warmup: Duration::from_secs_f64(warmup),
                duration: Duration::from_secs_f64(secs),
                bytes,
                rounds,
                pin,
                progress: true,
            };
            let r = cluster::run(&o, command).await?;
            suite::write(&r, &out)?;
            println!("{}", sente_bench::report::markdown(&r));
        }
        Cmd::Smoke { out } => {
            let targets = vec![Target::SenteRs, Target::RawWs];
            let opts = SuiteOpts {
                mode: Mode::Smoke,
                targets: targets.clone(),
                rounds: None,
                only: Vec::new(),
                out: None,
                pin: false,
                command,
                progress: false,
            };
            let mut r = suite::run(&opts).await?;
            knee::append(&mut r, &KneeOpts::smoke(targets)).await?;
            if let Some(dir) = &out {
                suite::write(&r, dir)?;
            }
            println!("{}", sente_bench::report::markdown(&r));
            let problems = suite::smoke_problems(&r);
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("smoke: {p}");
                }
                return Ok(ExitCode::FAILURE);
            }
            println!("smoke: {} trials passed, 0 failed", r.trials.len());
        }
        Cmd::Report { json } => {
            let r: sente_bench::report::Results =
                serde_json::from_str(&std::fs::read_to_string(&json)?)?;
            let dir = json
                .parent()
                .map_or_else(|| PathBuf::from("."), PathBuf::from);
            suite::write(&r, &dir)?;
        }
        Cmd::Serve {
            peer,
            addr,
            backplane,
            backplane_url,
            cluster,
            no_mailbox,
        } => {
            if !addr.ip().is_loopback() {
                return Err(err("peers listen on loopback addresses only"));
            }
            let cluster = backplane.map(|bp| peers::ClusterCfg {
                backplane: bp,
                url: backplane_url.unwrap_or_else(|| bp.default_url().to_owned()),
                name: cluster,
                mailbox: !no_mailbox,
            });
            match peer {
                Target::RawWs if cluster.is_some() => {
                    return Err(err("raw-ws has no cluster backplane"));
                }
                Target::RawWs => peers::raw_ws::run(addr).await?,
                Target::Socketioxide => peers::socketioxide::run(addr, cluster).await?,
                Target::SenteRs => peers::sente_rs::run(addr, cluster, false).await?,
                Target::SenteRsMetrics => peers::sente_rs::run(addr, cluster, true).await?,
                Target::SocketioNode => {
                    return Err(err(
                        "run `node bench/peers/socketio-node/server.js --addr ...`",
                    ));
                }
            }
        }
        Cmd::IdleWorker {
            proto,
            addr,
            first,
            count,
            src_first,
            max_secs,
        } => {
            scenario::idle_worker(proto, addr, first, count, src_first, max_secs).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sente-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sente-load: {e}");
            ExitCode::FAILURE
        }
    };
    // Do not wait for lingering client tasks.
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}
