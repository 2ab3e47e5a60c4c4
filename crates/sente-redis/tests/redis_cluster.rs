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

    async fn remove_cluster(cluster: &str) {
        if let Ok(client) = redis::Client::open(Self::url())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let _ = sente_redis::remove_cluster(&mut conn, cluster).await;
        }
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
            cluster::cleaned::<Redis>(Box::pin(cluster::$name::<Redis>())).await;
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
    cluster::cleaned::<Redis>(Box::pin(cluster::measure_latency::<Redis>(2000))).await;
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
    cluster::cleaned::<Redis>(Box::pin(cluster::measure_messages_per_push::<Redis>(1000))).await;
}

/// `remove_cluster` deletes every key under `<cluster>:` (a node's own and an application's),
/// and none of another cluster whose name starts alike; the name is matched literally (a `*` in
/// it is no wildcard), and a name with `:` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_cluster_deletes_what_a_cluster_keeps() {
    if !cluster::reachable("127.0.0.1:6379").await {
        eprintln!("SKIPPED: Redis is not reachable on 127.0.0.1:6379");
        return;
    }
    let cluster = cluster::cluster_name("remove");
    let client = redis::Client::open(Redis::url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = |pattern: String| {
        let client = client.clone();
        async move {
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut conn)
                .await
                .unwrap();
            keys
        }
    };
    let node = RedisBackplane::start(RedisConfig::new(Redis::url()).cluster(&cluster)).unwrap();
    assert!(node.wait_connected(Duration::from_secs(5)).await);
    // The node's liveness key appears with its first heartbeat.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while keys(format!("{cluster}:node:*")).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no liveness key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(node);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sibling = format!("{cluster}-b:app");
    for k in [format!("{cluster}:app"), sibling.clone()] {
        let () = redis::cmd("SET")
            .arg(k)
            .arg(1)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // A name with `:` is no cluster's (it would prefix another's keys): refused, here and at
    // start.
    assert!(matches!(
        sente_redis::remove_cluster(&mut conn, &format!("{cluster}:app")).await,
        Err(sente_redis::Error::ClusterName(_))
    ));
    assert!(matches!(
        RedisBackplane::start(RedisConfig::new(Redis::url()).cluster("a:b")),
        Err(sente_redis::Error::ClusterName(_))
    ));
    let wildcard = format!("{}*", &cluster[..cluster.len() - 1]);
    assert_eq!(
        sente_redis::remove_cluster(&mut conn, &wildcard)
            .await
            .unwrap(),
        0
    );
    let had = keys(format!("{cluster}:*")).await;
    assert!(had.len() >= 2, "{had:?}");
    assert_eq!(
        sente_redis::remove_cluster(&mut conn, &cluster)
            .await
            .unwrap(),
        had.len()
    );
    assert_eq!(keys(format!("{cluster}:*")).await, Vec::<String>::new());
    assert_eq!(keys(sibling.clone()).await, vec![sibling.clone()]);
    assert_eq!(
        sente_redis::remove_cluster(&mut conn, &cluster)
            .await
            .unwrap(),
        0
    );
    let () = redis::cmd("DEL")
        .arg(sibling)
        .query_async(&mut conn)
        .await
        .unwrap();
}
