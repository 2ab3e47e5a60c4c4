//! Several `sente::Server` nodes over a real NATS (127.0.0.1:4222; skipped with a message when
//! unreachable). The scenarios are shared with `sente-redis`.

#[path = "../../sente-redis/tests/cluster/mod.rs"]
mod cluster;

use cluster::{Flavor, H};
use sente_nats::{NatsBackplane, NatsConfig};
use sente_proto::backplane::cluster::ClusterConfig;
use std::time::Duration;

struct Nats;

impl Nats {
    /// The core subject of the cluster `name`.
    fn start_subject(name: &str) -> String {
        NatsConfig::new(Self::url()).cluster(name).subject()
    }
}

impl Flavor for Nats {
    type B = NatsBackplane;
    const NAME: &'static str = "nats";

    fn url() -> String {
        std::env::var("SENTE_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
    }

    fn url_on(port: u16) -> String {
        format!("nats://127.0.0.1:{port}")
    }

    fn spawn_service(port: u16) -> Option<std::process::Child> {
        let bin = [
            "nats-server",
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
        ]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok()
        })?;
        std::process::Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(std::env::temp_dir().join(format!("sente-nats-test-{port}")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
    }

    fn start(url: &str, cluster: &str, presence: ClusterConfig) -> NatsBackplane {
        NatsBackplane::start(
            NatsConfig::new(url)
                .cluster(cluster)
                .reconnect(Duration::from_millis(50), Duration::from_millis(500))
                .presence(presence)
                .mailbox(sente_nats::MailboxConfig::default().enabled(!cluster::no_mailbox())),
        )
        .unwrap()
    }

    fn start_small_mailbox(url: &str, cluster: &str, max_events: usize) -> NatsBackplane {
        NatsBackplane::start(
            NatsConfig::new(url)
                .cluster(cluster)
                .presence(cluster::fast())
                .mailbox(sente_nats::MailboxConfig::default().max_events(max_events)),
        )
        .unwrap()
    }

    async fn remove_cluster(cluster: &str) {
        if let Ok(client) = async_nats::connect(Self::url()).await {
            let _ = sente_nats::remove_cluster(&client, cluster).await;
        }
    }

    fn health(b: &NatsBackplane) -> H {
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
            if !cluster::reachable("127.0.0.1:4222").await {
                eprintln!(
                    "SKIPPED {}: NATS is not reachable on 127.0.0.1:4222",
                    stringify!($name)
                );
                return;
            }
            cluster::cleaned::<Nats>(Box::pin(cluster::$name::<Nats>())).await;
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

/// A node that publishes a push plain after numbered ones (its numbering blinked) marks it
/// with its last number; every other node holds it until its consumer applied that number, so
/// the push does not overtake the numbered ones on the slower consumer path. Here a fake node
/// (a plain NATS client) publishes numbered pushes 1 and 2, then push 5 plain marked after the
/// number that push 4 gets, then, 300 ms later, pushes 3 and 4 numbered: the client on node B
/// gets 1, 2, 3, 4, 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_push_waits_for_the_numbered_ones_before_it() {
    use cluster::{Node, ev, fast, recv_numbers, uid, ws_open};
    use sente_proto::backplane::BackplaneMsg;
    use sente_proto::backplane::codec::{self, Frame};
    use std::sync::Arc;
    if !cluster::reachable("127.0.0.1:4222").await {
        eprintln!("SKIPPED: NATS is not reachable on 127.0.0.1:4222");
        return;
    }
    let name = cluster::cluster_name("after");
    let b = Node::<Nats>::start(&Nats::url(), &name, fast());
    b.wait_connected().await;
    let mut on_b = ws_open(b.addr, "ub", "B1").await;
    let client = async_nats::connect(Nats::url()).await.expect("NATS");
    let js = async_nats::jetstream::new(client.clone());
    let origin = 0x5eed_u64;
    let push = |n: i64| BackplaneMsg::Push {
        uid: uid("ub"),
        event: Arc::new(ev(n)),
        estimate: 16,
        flush: true,
    };
    let seq_subject = format!("{name}.seq");
    let numbered = |n: i64| {
        let (js, subject) = (js.clone(), seq_subject.clone());
        let frame = codec::encode_msg(origin, &push(n)).expect("frame");
        async move {
            js.publish(subject, frame.into())
                .await
                .expect("publish")
                .await
                .expect("stored")
                .sequence
        }
    };
    // Node B makes the stream `<cluster>_SEQ` after it connects: a publish before that is
    // stored nowhere (and refused).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while js.get_stream(format!("{name}_SEQ")).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "node B makes the numbering stream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Probes (numbers from 100) until node B's consumer runs (it starts after the node
    // connects); a probe published before it started may come later: they are skipped below.
    // The 200 ms timeout ends a probe's wait (`recv_numbers` itself would panic at its own
    // deadline, so that one is longer).
    let mut up = false;
    for probe in 100..150 {
        numbered(probe).await;
        if tokio::time::timeout(Duration::from_millis(200), recv_numbers(&mut on_b, 1, 5000))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
    }
    assert!(up, "node B's consumer brings numbered pushes");
    numbered(1).await;
    let two = numbered(2).await;
    // The stream `<cluster>_SEQ` (the cluster's name is letters, digits and `-`).
    let stream = js
        .get_stream(format!("{name}_SEQ"))
        .await
        .expect("the numbering stream");
    let created = stream.cached_info().created.unix_timestamp_nanos();
    let epoch = u64::try_from(created).unwrap() | 1;
    let plain = codec::encode(
        origin,
        &Frame::After {
            epoch,
            seq: two + 2,
            msg: push(5),
        },
    )
    .expect("frame");
    client
        .publish(Nats::start_subject(&name), plain.into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;
    numbered(3).await;
    numbered(4).await;
    let mut got = Vec::new();
    while got.len() < 5 {
        got.extend(
            recv_numbers(&mut on_b, 1, 5000)
                .await
                .into_iter()
                .filter(|n| *n < 100),
        );
    }
    assert_eq!(got, [1, 2, 3, 4, 5]);
    drop(b);
    let _ = sente_nats::remove_cluster(&client, &name).await;
}

/// Cross-node vs same-node latency and bytes per push:
/// `cargo test -p sente-nats --release --test nats_cluster -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run in release with --ignored --nocapture"]
async fn latency() {
    if !cluster::reachable("127.0.0.1:4222").await {
        eprintln!("SKIPPED latency: NATS is not reachable on 127.0.0.1:4222");
        return;
    }
    cluster::cleaned::<Nats>(Box::pin(cluster::measure_latency::<Nats>(2000))).await;
}

/// Backplane messages and bytes per push (1-client uid, 1000-uid broadcast):
/// `cargo test -p sente-nats --release --test nats_cluster -- --ignored --nocapture per_push`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --ignored --nocapture"]
async fn per_push() {
    if !cluster::reachable("127.0.0.1:4222").await {
        eprintln!("SKIPPED per_push: NATS is not reachable on 127.0.0.1:4222");
        return;
    }
    cluster::cleaned::<Nats>(Box::pin(cluster::measure_messages_per_push::<Nats>(1000))).await;
}

/// Broadcasts at 100/s with Ajax mailboxes on (issue 14): `clients` registered Ajax clients
/// (distinct uids); reports
/// how many broadcasts' mailbox appends were stored per second and how far the appends lagged
/// behind when publishing stopped (`SENTE_BCAST_CLIENTS=N`: N clients, default 10):
/// `cargo test -p sente-nats --test nats_cluster -- --ignored --nocapture broadcast_rate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --ignored --nocapture"]
async fn broadcast_rate() {
    use sente_proto::backplane::{Backplane, BackplaneMsg};
    use sente_proto::{ClientId, Event, EventId, Uid, Value};
    use std::sync::Arc;
    if !cluster::reachable("127.0.0.1:4222").await {
        eprintln!("SKIPPED broadcast_rate: NATS is not reachable on 127.0.0.1:4222");
        return;
    }
    const RATE: u64 = 100;
    const SECS: u64 = 5;
    let clients: usize = std::env::var("SENTE_BCAST_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let name = format!("bcast-{}", std::process::id());
    let b = NatsBackplane::start(
        NatsConfig::new("nats://127.0.0.1:4222")
            .cluster(name)
            .presence(cluster::fast()),
    )
    .unwrap();
    assert!(b.wait_connected(Duration::from_secs(10)).await);
    b.subscribe(Arc::new(|_| {}));
    let mb = b.mailbox().expect("mailboxes on");
    // Registrations first (they also make the buckets ready).
    for i in 0..clients {
        let cid = ClientId::new(format!("c{i}")).unwrap();
        mb.register(&Uid::from(format!("u{i}")), &cid, Duration::from_secs(60))
            .await;
    }
    let before = b.health().appends;
    let started = std::time::Instant::now();
    let every = Duration::from_micros(1_000_000 / RATE);
    let mut tick = tokio::time::interval(every);
    let total = RATE * SECS;
    for n in 0..total {
        tick.tick().await;
        let event = Event::new(EventId::new("t/b").unwrap(), Value::Int(n as i64));
        b.publish(BackplaneMsg::Broadcast {
            event: Arc::new(event),
            estimate: 16,
            flush: true,
        });
    }
    let published = started.elapsed();
    let at_stop = b.health().appends - before;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while b.health().appends - before < total && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all = started.elapsed();
    let done = b.health().appends - before;
    eprintln!(
        "NATS broadcast_rate: {total} broadcasts to {clients} Ajax clients at {RATE}/s in \
         {published:.2?}: {at_stop} appended when publishing stopped, {done} after {all:.2?} \
         ({:.0} broadcasts/s appended; lag at the end {:.2?})",
        done as f64 / all.as_secs_f64(),
        all.saturating_sub(published),
    );
    assert_eq!(done, total, "every broadcast appended");
    // Each client's mailbox holds every broadcast, in order.
    let got = mb
        .take(
            &Uid::from("u0"),
            &ClientId::new("c0").unwrap(),
            10_000,
            1 << 24,
        )
        .await;
    assert_eq!(got.len() as u64, total.min(1000), "u0's mailbox");
}
