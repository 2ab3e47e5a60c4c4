//! Several `sente::Server` nodes over a real Redis (127.0.0.1:6379; skipped with a message
//! when unreachable). The scenarios are in `cluster/mod.rs`, shared with `sente-nats`.

mod cluster;

use cluster::{Flavor, H};
use sente_proto::backplane::cluster::ClusterConfig;
use sente_redis::{RedisBackplane, RedisConfig};
use std::time::Duration;

struct Redis;

impl Flavor for Redis {
    type B = RedisBackplane;
    const NAME: &'static str = "redis";

    fn url() -> String {
        std::env::var("SENTE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
    }

    fn url_on(port: u16) -> String {
        format!("redis://127.0.0.1:{port}/")
    }

    fn spawn_service(port: u16) -> Option<std::process::Child> {
        std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()
    }

    fn start(url: &str, cluster: &str, presence: ClusterConfig) -> RedisBackplane {
        RedisBackplane::start(
            RedisConfig::new(url)
                .cluster(cluster)
                .reconnect(Duration::from_millis(50), Duration::from_millis(500))
                .presence(presence)
                .mailbox(sente_redis::MailboxConfig::default().enabled(!cluster::no_mailbox())),
        )
        .unwrap()
    }

    fn start_small_mailbox(url: &str, cluster: &str, max_events: usize) -> RedisBackplane {
        RedisBackplane::start(
            RedisConfig::new(url)
                .cluster(cluster)
                .presence(cluster::fast())
                .mailbox(sente_redis::MailboxConfig::default().max_events(max_events)),
        )
        .unwrap()
    }

    fn health(b: &RedisBackplane) -> H {
        let h = b.health();
        H {
            appends: h.appends,
            append_bytes: h.append_bytes,
            ops: h.ops,
            connected: h.connected,
            outages: h.outages,
            last_error: h.last_error.map(|(_, e)| e),
            published: h.published,
            published_bytes: h.published_bytes,
            dropped: h.dropped,
        }
    }
}

macro_rules! scenario {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn".into()),
                )
                .with_test_writer()
                .try_init();
            if !cluster::reachable("127.0.0.1:6379").await {
                eprintln!(
                    "SKIPPED {}: Redis is not reachable on 127.0.0.1:6379",
                    stringify!($name)
                );
                return;
            }
            cluster::$name::<Redis>().await;
        }
    };
}

scenario!(push_crosses_nodes_in_order);
scenario!(push_to_one_client_crosses_nodes);
scenario!(send_many_and_broadcast_reach_every_node);
scenario!(close_uid_closes_remote_clients);
scenario!(connected_uids_follow_a_graceful_shutdown);
scenario!(dead_node_expires);
scenario!(service_restart);
scenario!(node_serves_once_joined);
scenario!(uidport_once_per_cluster);
scenario!(uidport_close_for_a_dead_node);
scenario!(ajax_round_robin);
scenario!(ajax_mailbox_bound);
scenario!(delivered_mark_jumps_the_queue);
scenario!(request_reaches_every_node);
scenario!(retried_request_runs_once_in_the_cluster);
scenario!(ajax_request_answered_on_any_node);

/// Cross-node vs same-node latency and bytes per push:
/// `cargo test -p sente-redis --release --test redis_cluster -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run in release with --ignored --nocapture"]
async fn latency() {
    if !cluster::reachable("127.0.0.1:6379").await {
        eprintln!("SKIPPED latency: Redis is not reachable on 127.0.0.1:6379");
        return;
    }
    cluster::measure_latency::<Redis>(2000).await;
}

/// Backplane messages and bytes per push (1-client uid, 1000-uid broadcast):
/// `cargo test -p sente-redis --release --test redis_cluster -- --ignored --nocapture per_push`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --ignored --nocapture"]
async fn per_push() {
    if !cluster::reachable("127.0.0.1:6379").await {
        eprintln!("SKIPPED per_push: Redis is not reachable on 127.0.0.1:6379");
        return;
    }
    cluster::measure_messages_per_push::<Redis>(1000).await;
}
