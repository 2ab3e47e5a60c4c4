//! `cluster`: the `fanout` scenario against a cluster of N server processes sharing a
//! backplane (sente-rs over `sente-redis` or `sente-nats`, socketioxide over
//! `socketioxide-redis`), for N = 1, 2, 3, targets alternating.
//!
//! Every node is its own `sente-load serve <peer> --backplane ...` process, joined to a cluster
//! named for this trial alone (so that nodes of earlier trials, or of other runs sharing the
//! engine, never mix in). The WebSocket clients are spread round-robin over the nodes (client
//! `i` on node `i % N`); client 0, on node 0, sends the fan-out control request, so node 0 runs
//! the push loop and `(N - 1) / N` of the deliveries cross nodes through the backplane. Server
//! CPU is the sum over the node processes; the engine's (redis-server or nats-server, found by
//! name in /proc) is reported apart: it serves every user of that engine on the machine. A
//! [`Tap`](crate::tap::Tap) subscribed to the trial's cluster counts the pub/sub messages and
//! payload bytes per push (heartbeats included). After each trial the cluster's keys (Redis) or
//! key-value buckets (NATS) are removed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::client::Transport;
use crate::peers::Backplane;
use crate::procfs::{self, Machine};
use crate::report::{CaseSpec, Results, Trial, summarize, timestamp};
use crate::scenario::{self, CpuPids, FanoutOpts, Metrics};
use crate::server::{Server, Target};
use crate::suite::{self, col};
use crate::{Res, err};

/// A server implementation joined to a cluster backplane.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterTarget {
    /// sente-rs nodes over `sente-redis`.
    SenteRedis,
    /// sente-rs nodes over `sente-nats`.
    SenteNats,
    /// sente-rs nodes over `sente-redis` with the Ajax mailboxes off (a WebSocket-only
    /// deployment, like the socketioxide peer).
    SenteRedisWs,
    /// sente-rs nodes over `sente-nats` with the Ajax mailboxes off.
    SenteNatsWs,
    /// socketioxide nodes over `socketioxide-redis`.
    SocketioxideRedis,
}

impl ClusterTarget {
    /// Every cluster target, in the order tables list them.
    pub const ALL: [ClusterTarget; 5] = [
        ClusterTarget::SenteRedis,
        ClusterTarget::SenteNats,
        ClusterTarget::SenteRedisWs,
        ClusterTarget::SenteNatsWs,
        ClusterTarget::SocketioxideRedis,
    ];

    /// Name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            ClusterTarget::SenteRedis => "sente-rs+redis",
            ClusterTarget::SenteNats => "sente-rs+nats",
            ClusterTarget::SenteRedisWs => "sente-rs+redis, no mailbox",
            ClusterTarget::SenteNatsWs => "sente-rs+nats, no mailbox",
            ClusterTarget::SocketioxideRedis => "socketioxide+redis",
        }
    }

    /// The peer every node runs.
    pub fn target(self) -> Target {
        match self {
            ClusterTarget::SenteRedis
            | ClusterTarget::SenteNats
            | ClusterTarget::SenteRedisWs
            | ClusterTarget::SenteNatsWs => Target::SenteRs,
            ClusterTarget::SocketioxideRedis => Target::Socketioxide,
        }
    }

    /// The backplane the nodes share.
    pub fn backplane(self) -> Backplane {
        match self {
            ClusterTarget::SenteRedis
            | ClusterTarget::SenteRedisWs
            | ClusterTarget::SocketioxideRedis => Backplane::Redis,
            ClusterTarget::SenteNats | ClusterTarget::SenteNatsWs => Backplane::Nats,
        }
    }

    /// sente-rs: whether the backplane keeps its Ajax mailboxes (the default).
    pub fn mailbox(self) -> bool {
        !matches!(
            self,
            ClusterTarget::SenteRedisWs | ClusterTarget::SenteNatsWs
        )
    }
}

/// Options of a `cluster` run.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// Targets, alternating.
    pub targets: Vec<ClusterTarget>,
    /// Node counts (each a case).
    pub nodes: Vec<usize>,
    /// WebSocket clients in all (spread round-robin over the nodes).
    pub clients: usize,
    /// Pushes per second to every client.
    pub rate: u32,
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Size of each event's data object.
    pub bytes: usize,
    /// Rounds: each runs every node count against every target once.
    pub rounds: usize,
    /// Pin the nodes to CPU 0 and the load tool to CPU 1 (the engine is not pinned).
    pub pin: bool,
    /// Print progress to stderr.
    pub progress: bool,
}

impl ClusterOpts {
    /// Tiny sizes for the smoke test: 20 clients, 10 pushes/s, 1 s, 2 nodes, one round.
    pub fn smoke(targets: Vec<ClusterTarget>) -> Self {
        Self {
            targets,
            nodes: vec![2],
            clients: 20,
            rate: 10,
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(1),
            bytes: 100,
            rounds: 1,
            pin: false,
            progress: false,
        }
    }

    fn case_name(&self, nodes: usize) -> String {
        format!("cluster-ws-{}x{}-n{nodes}", self.clients, self.rate)
    }
}

/// One trial: `nodes` fresh server processes of `t` in a cluster of their own, the fan-out
/// scenario over them.
pub async fn trial(
    t: ClusterTarget,
    nodes: usize,
    o: &ClusterOpts,
    pin: Option<&str>,
) -> Res<Metrics> {
    if nodes == 0 {
        return Err(err("a cluster needs at least one node"));
    }
    let bp = t.backplane();
    let name = format!(
        "sente-load-{}-{}",
        std::process::id(),
        NEXT_CLUSTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let tap = crate::tap::Tap::start(bp, bp.default_url(), &name).await?;
    let mut extra = vec![
        "--backplane".to_owned(),
        bp.name().to_owned(),
        "--cluster".to_owned(),
        name.clone(),
    ];
    if !t.mailbox() {
        extra.push("--no-mailbox".to_owned());
    }
    let mut servers = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        match Server::spawn_with(t.target(), "127.0.0.1:0".parse()?, pin, &extra).await {
            Ok(s) => servers.push(s),
            Err(e) => {
                for s in servers {
                    s.kill().await;
                }
                return Err(e);
            }
        }
    }
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let pids = CpuPids {
        servers: servers.iter().map(|s| s.pid).collect(),
        engine: procfs::pid_by_comm(bp.engine_comm()),
        tap: Some(tap.counters.clone()),
        callgrind: false,
    };
    let fo = FanoutOpts {
        transport: Transport::Ws,
        clients: o.clients,
        rate: o.rate,
        warmup: o.warmup,
        duration: o.duration,
        bytes: o.bytes,
        buffered: false,
    };
    let r = async {
        let conns =
            scenario::connect_spread(&addrs, t.target().proto(), Transport::Ws, o.clients).await?;
        scenario::fanout_on(conns, fo, pids).await
    }
    .await;
    for s in servers {
        s.kill().await;
    }
    drop(tap);
    if let Err(e) = crate::tap::cleanup(bp, bp.default_url(), &name).await {
        eprintln!("cleaning up cluster {name}: {e}");
    }
    let mut m = r?;
    m.insert("nodes".into(), nodes as f64);
    Ok(m)
}

static NEXT_CLUSTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn spec(o: &ClusterOpts, nodes: usize) -> CaseSpec {
    CaseSpec {
        name: o.case_name(nodes),
        title: format!(
            "fan-out over {nodes} node(s) sharing a backplane: {} WebSocket clients round-robin over the nodes, node 0 pushes {} events/s to all ({}-byte data), {} s measured after {} s warm-up",
            o.clients,
            o.rate,
            o.bytes,
            o.duration.as_secs_f64(),
            o.warmup.as_secs_f64()
        ),
        columns: vec![
            col("delivered_per_s", "delivered/s", true, false),
            col("delivered_ratio", "share", true, false),
            col("p50_ms", "p50 ms", false, false),
            col("p99_ms", "p99 ms", false, false),
            col(
                "server_cpu_us_per_event",
                "server CPU µs/event",
                false,
                false,
            ),
            col(
                "engine_cpu_us_per_event",
                "engine CPU µs/event",
                false,
                false,
            ),
            col(
                "backplane_msgs_per_push",
                "pub/sub msgs / push",
                false,
                false,
            ),
            col(
                "backplane_bytes_per_push",
                "pub/sub bytes / push",
                false,
                false,
            ),
            col("server_cpu_pct", "server CPU %", false, false),
            col("engine_cpu_pct", "engine CPU %", false, false),
            col("tool_cpu_us_per_event", "tool CPU µs/event", false, false),
            col("tool_cpu_pct", "tool CPU %", false, false),
        ],
    }
}

/// One line of progress for a finished trial.
fn progress_line(round: usize, target: ClusterTarget, nodes: usize, r: &Res<Metrics>) -> String {
    match r {
        Ok(metrics) => {
            let get = |k: &str| metrics.get(k).copied().unwrap_or(f64::NAN);
            format!(
                "round {} {} x{nodes}: {:.0} ev/s, p50 {:.2} ms, p99 {:.2} ms, server {:.2} µs/ev, engine {:.2} µs/ev, {:.2} msgs/push",
                round + 1,
                target.name(),
                get("delivered_per_s"),
                get("p50_ms"),
                get("p99_ms"),
                get("server_cpu_us_per_event"),
                get("engine_cpu_us_per_event"),
                get("backplane_msgs_per_push"),
            )
        }
        Err(e) => format!(
            "round {} {} x{nodes}: failed: {e}",
            round + 1,
            target.name()
        ),
    }
}

/// Runs every node count against every target for `rounds` rounds; within a round the node
/// counts run in turn and, for each, the targets in an order that rotates from step to step.
pub async fn run(o: &ClusterOpts, command: String) -> Res<Results> {
    let started_at = Instant::now();
    let started = timestamp(suite::unix_now()?);
    // Before pinning: the machine's CPUs, not the tool's.
    let machine = Machine::detect();
    let pin = suite::pin_split(o.pin);
    let cases: Vec<CaseSpec> = o.nodes.iter().map(|&n| spec(o, n)).collect();
    let mut trials = Vec::new();
    let mut step = 0usize;
    let count = o.targets.len().max(1);
    for round in 0..o.rounds {
        for &nodes in &o.nodes {
            for slot in 0..o.targets.len() {
                let target = o.targets[(slot + step) % count];
                let result = trial(target, nodes, o, pin).await;
                if o.progress {
                    eprintln!("{}", progress_line(round, target, nodes, &result));
                }
                let (metrics, error) = match result {
                    Ok(metrics) => (metrics, None),
                    Err(e) => (Metrics::new(), Some(e.to_string())),
                };
                trials.push(Trial {
                    case: o.case_name(nodes),
                    target: target.name().to_owned(),
                    round,
                    error,
                    metrics,
                });
            }
            step += 1;
        }
    }
    let targets: Vec<String> = o.targets.iter().map(|t| t.name().to_owned()).collect();
    let summary = summarize(&cases, &targets, &trials);
    Ok(Results {
        started,
        mode: "cluster".to_owned(),
        command,
        machine,
        pinned: o.pin,
        targets,
        skipped: BTreeMap::new(),
        cases,
        trials,
        summary,
        wall_s: started_at.elapsed().as_secs_f64(),
        knee: None,
    })
}
