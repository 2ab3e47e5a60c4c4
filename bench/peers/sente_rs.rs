//! Peer (d): our own server, crates/sente, as an application would set it up: a fixed CSRF
//! token (`bench`, sent by the load tool as `csrf-token` / `X-CSRF-Token`), any Origin, the uid
//! from the `uid` query parameter, a [`Router`] that echoes `demo/echo` through its reply and
//! starts a push loop on `bench/fanout`, mounted in axum at `/chsk`. Clients choose the json
//! packer with `packer=json`.
//!
//! The push loop sends one `[:demo/tick {:t .. :p ..}]` to every connected client per tick with
//! [`ServerHandle::broadcast_flush`](sente::ServerHandle::broadcast_flush) (every connected uid,
//! Sente's `{:flush? true}`, the event packed once), what the peers do (socket.io's `io.emit`,
//! the raw floor's broadcast channel): each tick has one event per uid, so the default 30 ms
//! batching window would only add latency. With `buffered` in the control request it calls
//! [`ServerHandle::broadcast`](sente::ServerHandle::broadcast) instead: every push waits in the
//! send buffer for Sente's window (`send-buf-ms-ws` 30 ms, `send-buf-ms-ajax` 100 ms), which
//! `sente-load fanout --buffered` measures. With `SENTE_BENCH_SEND_MANY=1` in the server's
//! environment it names the uids itself ([`ServerHandle::send_many_flush`](sente::ServerHandle::send_many_flush)
//! / [`ServerHandle::send_many`](sente::ServerHandle::send_many)), as the runs before 2026-12-03
//! 18:00 UTC did: that also costs cloning the list of uids for every push.
//!
//! In a cluster (`serve sente-rs --backplane redis|nats`, used by `sente-load cluster`) the
//! server joins the cluster through `sente-redis` or `sente-nats`: one backplane frame per
//! push, which every node delivers to its own clients (what socket.io's `io.emit` does through
//! its adapter).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sente::{AllowedOrigins, CsrfToken, EventMsg, Router, Server};
use sente_proto::Map;
use sente_proto::{Event, EventId, Uid, Value};

use crate::peers::{Backplane, ClusterCfg, FanoutCfg};
use crate::wire;

fn cfg_from(v: &Value) -> FanoutCfg {
    let get = |k: &str| {
        v.as_map()
            .and_then(|m| m.get_kw(k))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    FanoutCfg {
        id: 0,
        rate: u32::try_from(get("rate")).unwrap_or(1),
        ms: u64::try_from(get("ms")).unwrap_or(0),
        bytes: usize::try_from(get("bytes")).unwrap_or(100),
        buffered: v
            .as_map()
            .and_then(|m| m.get_kw("buffered"))
            .is_some_and(|b| *b == Value::Bool(true)),
    }
}

/// Starts the backplane `cluster` asks for and waits (up to 10 s) until it is connected.
async fn join(cluster: &ClusterCfg) -> std::io::Result<Arc<dyn sente_proto::backplane::Backplane>> {
    let wait = Duration::from_secs(10);
    let (bp, connected): (Arc<dyn sente_proto::backplane::Backplane>, bool) =
        match cluster.backplane {
            Backplane::Redis => {
                let cfg = sente_redis::RedisConfig::new(cluster.url.clone())
                    .cluster(cluster.name.clone())
                    .mailbox(sente_redis::MailboxConfig::default().enabled(cluster.mailbox));
                let bp = sente_redis::RedisBackplane::start(cfg).map_err(std::io::Error::other)?;
                let ok = bp.wait_connected(wait).await;
                (Arc::new(bp), ok)
            }
            Backplane::Nats => {
                let cfg = sente_nats::NatsConfig::new(cluster.url.clone())
                    .cluster(cluster.name.clone())
                    .mailbox(sente_nats::MailboxConfig::default().enabled(cluster.mailbox));
                let bp = sente_nats::NatsBackplane::start(cfg).map_err(std::io::Error::other)?;
                let ok = bp.wait_connected(wait).await;
                (Arc::new(bp), ok)
            }
        };
    if connected {
        Ok(bp)
    } else {
        Err(std::io::Error::other(format!(
            "the {} backplane at {} did not connect within 10 s",
            cluster.backplane.name(),
            cluster.url
        )))
    }
}

/// Runs the server on `addr` until the process is killed; with `cluster`, as one node of
/// that cluster. With `metrics`, a Prometheus recorder is installed first and its text format
/// is served at `/metrics` (target `sente-rs-metrics`).
pub async fn run(
    addr: SocketAddr,
    cluster: Option<ClusterCfg>,
    metrics: bool,
) -> std::io::Result<()> {
    let clustered = cluster.is_some();
    let prometheus = if metrics {
        Some(sente::metrics::prometheus().map_err(std::io::Error::other)?)
    } else {
        None
    };
    let router = Router::new()
        .on("demo/echo", |msg: EventMsg| async move {
            // The data moves into the reply (socketioxide's handler owns its data too).
            let EventMsg { event, reply, .. } = msg;
            if let Some(reply) = reply {
                reply.send(event.into_parts().1);
            }
        })
        .on("bench/fanout", move |mut msg: EventMsg| async move {
            let cfg = cfg_from(msg.data_value());
            tokio::spawn(push_loop(msg.server().clone(), cfg, clustered));
            msg.reply("ok");
        });
    let mut builder = Server::builder();
    if let Some(cluster) = &cluster {
        builder = builder.backplane(join(cluster).await?);
    }
    let server = builder
        .csrf_token_fn(|_req| CsrfToken::Token("bench".to_owned()))
        .allowed_origins(AllowedOrigins::All)
        .user_id_fn(|req| req.param("uid").map_or(Uid::Nil, Uid::from))
        .handler(router)
        .build()
        .map_err(std::io::Error::other)?;
    let mut app = server.router("/chsk");
    if let Some(p) = prometheus {
        app = app.route_service("/metrics", p.service());
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    crate::peers::announce(listener.local_addr()?);
    axum::serve(listener, app).await
}

async fn push_loop(server: sente::ServerHandle, cfg: FanoutCfg, clustered: bool) {
    let Ok(id) = EventId::new("demo/tick") else {
        return;
    };
    let (mut ticker, end) = cfg.ticker();
    let pad = "x".repeat(cfg.bytes.saturating_sub(30));
    let by_uid = !clustered && std::env::var_os("SENTE_BENCH_SEND_MANY").is_some_and(|v| v == "1");
    let mut uids_rx = server.connected_uids();
    let mut uids: Vec<Uid> = uids_rx.borrow_and_update().any.iter().cloned().collect();
    while tokio::time::Instant::now() < end {
        ticker.tick().await;
        if by_uid && uids_rx.has_changed().unwrap_or(false) {
            uids = uids_rx.borrow_and_update().any.iter().cloned().collect();
        }
        let mut data = Map::with_capacity(2);
        data.insert(Value::kw("t"), Value::Int(wire::now_us() as i64));
        data.insert(Value::kw("p"), Value::Str(pad.clone()));
        let event = Event::new(id.clone(), Value::Map(data));
        let _ = match (by_uid, cfg.buffered) {
            (false, false) => server.broadcast_flush(event),
            (false, true) => server.broadcast(event),
            (true, false) => server.send_many_flush(&uids, event),
            (true, true) => server.send_many(&uids, event),
        };
    }
}
