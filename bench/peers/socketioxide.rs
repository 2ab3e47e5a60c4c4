//! Peer (b): socketioxide 0.18 on axum, default settings (websocket and polling
//! transports), `serde_json::Value` payloads as a typical application would use.
//!
//! In a cluster (`serve socketioxide --backplane redis`, used by `sente-load cluster`) it runs
//! with the `socketioxide-redis` adapter (its `redis` driver, RESP3, the cluster name as the
//! channel prefix): `io.emit` then publishes every push to Redis and every node emits it to its
//! own sockets. socket.io's long-polling needs sticky sessions behind a cluster, so the load
//! tool's clients connect with `transport=websocket` directly (they always do).

use std::net::SocketAddr;
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide_redis::drivers::redis::redis_client;
use socketioxide_redis::{RedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

use crate::peers::{Backplane, ClusterCfg, FanoutCfg};
use crate::wire;

#[derive(serde::Serialize)]
struct Tick {
    t: u64,
    p: String,
}

/// Registers the echo and fan-out handlers on the `/` namespace of `$io` (a `SocketIo<$A>`);
/// evaluates to the adapter's init result. (A macro: `SocketIo::ns` needs socketioxide-core's
/// `DefinedAdapter`, which socketioxide does not re-export.)
macro_rules! handlers {
    ($io:expr, $A:ty) => {
        $io.ns("/", async |s: SocketRef<$A>| {
            s.on(
                "echo",
                async |Data(d): Data<serde_json::Value>, ack: AckSender<$A>| {
                    let _ = ack.send(&d);
                },
            );
            s.on(
                "fanout",
                async |io: SocketIo<$A>, Data(cfg): Data<FanoutCfg>, ack: AckSender<$A>| {
                    tokio::spawn(push_loop(io, cfg));
                    let _ = ack.send("ok");
                },
            );
        })
    };
}

/// Runs the server on `addr` until the process is killed; with `cluster` (Redis only), as
/// one node of that cluster.
pub async fn run(addr: SocketAddr, cluster: Option<ClusterCfg>) -> std::io::Result<()> {
    let app = match cluster {
        None => {
            let (layer, io) = SocketIo::new_layer();
            handlers!(io, socketioxide::adapter::LocalAdapter);
            axum::Router::new().layer(layer)
        }
        Some(cluster) => {
            if cluster.backplane != Backplane::Redis {
                return Err(std::io::Error::other(
                    "socketioxide has a Redis adapter only (no NATS)",
                ));
            }
            // The adapter's redis driver speaks RESP3.
            let sep = if cluster.url.contains('?') { '&' } else { '?' };
            let url = format!("{}{sep}protocol=resp3", cluster.url);
            let client = redis_client::Client::open(url).map_err(std::io::Error::other)?;
            let config = RedisAdapterConfig::new().with_prefix(cluster.name);
            let adapter = RedisAdapterCtr::new_with_redis_config(&client, config)
                .await
                .map_err(std::io::Error::other)?;
            let (layer, io) = SocketIo::builder()
                .with_adapter::<RedisAdapter<_>>(adapter)
                .build_layer();
            tokio::time::timeout(
                Duration::from_secs(10),
                handlers!(io, RedisAdapter<socketioxide::adapter::Emitter>),
            )
            .await
            .map_err(|_| std::io::Error::other("the Redis adapter did not start within 10 s"))?
            .map_err(std::io::Error::other)?;
            axum::Router::new().layer(layer)
        }
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    crate::peers::announce(listener.local_addr()?);
    axum::serve(listener, app).await
}

async fn push_loop<A: Adapter>(io: SocketIo<A>, cfg: FanoutCfg) {
    let (mut ticker, end) = cfg.ticker();
    let pad = "x".repeat(cfg.bytes.saturating_sub(30));
    while tokio::time::Instant::now() < end {
        ticker.tick().await;
        let tick = Tick {
            t: wire::now_us(),
            p: pad.clone(),
        };
        let _ = io.emit("tick", &tick).await;
    }
}
