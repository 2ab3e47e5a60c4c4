//! Peer (d): our own server, crates/sente, as an application would set it up: a fixed CSRF
//! token (`bench`, sent by the load tool as `csrf-token` / `X-CSRF-Token`), any Origin, the uid
//! from the `uid` query parameter, a [`Router`] that echoes `demo/echo` through its reply and
//! starts a push loop on `bench/fanout`, mounted in axum at `/chsk`. Clients choose the json
//! packer with `packer=json`.
//!
//! The push loop sends one `[:demo/tick {:t .. :p ..}]` to every connected uid per tick with
//! [`ServerHandle::send_many_flush`](sente::ServerHandle::send_many_flush) (Sente's `{:flush? true}` for each uid, the event packed once):
//! each tick has one event per uid, so the default 30 ms batching window would only add latency.
//! With `buffered` in the control request it calls [`ServerHandle::send_many`](sente::ServerHandle::send_many) instead: every push
//! waits in the send buffer for Sente's window (`send-buf-ms-ws` 30 ms, `send-buf-ms-ajax`
//! 100 ms), which `sente-load fanout --buffered` measures.

use std::net::SocketAddr;

use sente::{AllowedOrigins, CsrfToken, EventMsg, Router, Server};
use sente_proto::Map;
use sente_proto::{Event, EventId, Uid, Value};

use crate::peers::FanoutCfg;
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

/// Runs the server on `addr` until the process is killed. With `metrics`, a Prometheus
/// recorder is installed first and its text format is served at `/metrics` (target
/// `sente-rs-metrics`).
pub async fn run(addr: SocketAddr, metrics: bool) -> std::io::Result<()> {
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
        .on("bench/fanout", |mut msg: EventMsg| async move {
            let cfg = cfg_from(msg.data_value());
            tokio::spawn(push_loop(msg.server().clone(), cfg));
            msg.reply("ok");
        });
    let server = Server::builder()
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

async fn push_loop(server: sente::ServerHandle, cfg: FanoutCfg) {
    let Ok(id) = EventId::new("demo/tick") else {
        return;
    };
    let (mut ticker, end) = cfg.ticker();
    let pad = "x".repeat(cfg.bytes.saturating_sub(30));
    let mut uids_rx = server.connected_uids();
    let mut uids: Vec<Uid> = uids_rx.borrow_and_update().any.iter().cloned().collect();
    while tokio::time::Instant::now() < end {
        ticker.tick().await;
        if uids_rx.has_changed().unwrap_or(false) {
            uids = uids_rx.borrow_and_update().any.iter().cloned().collect();
        }
        let mut data = Map::with_capacity(2);
        data.insert(Value::kw("t"), Value::Int(wire::now_us() as i64));
        data.insert(Value::kw("p"), Value::Str(pad.clone()));
        let event = Event::new(id.clone(), Value::Map(data));
        let _ = if cfg.buffered {
            server.send_many(&uids, event)
        } else {
            server.send_many_flush(&uids, event)
        };
    }
}
