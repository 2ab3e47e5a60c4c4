//! Peer (b): socketioxide 0.18 on axum, default settings (websocket and polling
//! transports), `serde_json::Value` payloads as a typical application would use.

use std::net::SocketAddr;

use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};

use crate::peers::FanoutCfg;
use crate::wire;

#[derive(serde::Serialize)]
struct Tick {
    t: u64,
    p: String,
}

/// Runs the server on `addr` until the process is killed.
pub async fn run(addr: SocketAddr) -> std::io::Result<()> {
    let (layer, io) = SocketIo::new_layer();
    io.ns("/", async |s: SocketRef| {
        s.on(
            "echo",
            async |Data(d): Data<serde_json::Value>, ack: AckSender| {
                let _ = ack.send(&d);
            },
        );
        s.on(
            "fanout",
            async |io: SocketIo, Data(cfg): Data<FanoutCfg>, ack: AckSender| {
                tokio::spawn(push_loop(io, cfg));
                let _ = ack.send("ok");
            },
        );
    });
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    crate::peers::announce(listener.local_addr()?);
    axum::serve(listener, app).await
}

async fn push_loop(io: SocketIo, cfg: FanoutCfg) {
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
