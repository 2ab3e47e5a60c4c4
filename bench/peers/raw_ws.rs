//! Peer (a): a raw WebSocket server on tokio-tungstenite, the floor.
//!
//! No protocol: a text frame starting with `{"id":` is echoed back as is (no parsing), a
//! `{"op":"fanout",...}` frame starts the push loop, and the server greets every socket with
//! `{"hello":1}` so that clients know when it is accepted. Tuned for low overhead: 4 KiB read
//! buffer, eager writes, one task per socket (no split), and pushes are encoded once and
//! shared by every socket through a broadcast channel (no per-socket copy).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::peers::FanoutCfg;
use crate::wire;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Runs the server on `addr` until the process is killed.
pub async fn run(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    crate::peers::announce(listener.local_addr()?);
    let (tx, _) = broadcast::channel::<Utf8Bytes>(4096);
    loop {
        let (stream, _) = listener.accept().await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = serve(stream, tx).await;
        });
    }
}

async fn serve(
    stream: TcpStream,
    tx: broadcast::Sender<Utf8Bytes>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    stream.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config())).await?;
    let mut rx = tx.subscribe();
    ws.send(Message::text("{\"hello\":1}")).await?;
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(msg) = msg else { return Ok(()) };
                match msg? {
                    Message::Text(t) => {
                        if t.as_str().starts_with("{\"op\":\"fanout\"") {
                            let cfg: FanoutCfg = serde_json::from_str(t.as_str())?;
                            tokio::spawn(push_loop(tx.clone(), cfg));
                            let ack = format!("{{\"op\":\"ok\",\"id\":{}}}", cfg.id);
                            ws.send(Message::text(ack)).await?;
                        } else if t.as_str().starts_with("{\"id\":") {
                            ws.send(Message::Text(t)).await?;
                        }
                    }
                    Message::Close(_) => return Ok(()),
                    _ => {}
                }
            }
            push = rx.recv() => {
                match push {
                    Ok(frame) => ws.send(Message::Text(frame)).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
    }
}

async fn push_loop(tx: broadcast::Sender<Utf8Bytes>, cfg: FanoutCfg) {
    let (mut ticker, end) = cfg.ticker();
    let mut frame = String::with_capacity(cfg.bytes + 32);
    while tokio::time::Instant::now() < end {
        ticker.tick().await;
        frame.clear();
        frame.push_str("{\"ev\":\"tick\",\"d\":");
        wire::write_data(&mut frame, wire::now_us(), cfg.bytes);
        frame.push('}');
        let _ = tx.send(Utf8Bytes::from(frame.clone()));
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
}
