//! A minimal WebSocket client for every [`Proto`].

use std::net::{Ipv4Addr, SocketAddr};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::peers::FanoutCfg;
use crate::wire::{Incoming, Proto};
use crate::{Res, err, net};

/// Client-side socket settings: small buffers (the tool holds up to ~10k sockets per
/// process) and eager writes.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
}

/// One connected client that has completed its protocol's handshake.
pub struct WsClient {
    ws: WebSocketStream<TcpStream>,
    proto: Proto,
    buf: String,
}

impl WsClient {
    /// Connects client number `idx` (used for its client-id and uid) and waits for the
    /// protocol's handshake.
    pub async fn connect(
        proto: Proto,
        addr: SocketAddr,
        src: Option<Ipv4Addr>,
        idx: u64,
    ) -> Res<Self> {
        let stream = net::connect(addr, src).await?;
        let url = format!("ws://{addr}{}", proto.ws_path(idx));
        let (ws, _resp) = client_async_with_config(url, stream, Some(client_config())).await?;
        let mut c = Self {
            ws,
            proto,
            buf: String::with_capacity(256),
        };
        loop {
            let text = c.next_text().await?;
            match proto.classify(&text) {
                Incoming::EioOpen => c.send_str("40").await?,
                Incoming::Handshake => return Ok(c),
                Incoming::Ping => c.send_str(proto.pong()).await?,
                _ => {}
            }
        }
    }

    async fn send_str(&mut self, s: &str) -> Res<()> {
        self.ws.send(Message::text(s)).await?;
        Ok(())
    }

    async fn send_buf(&mut self) -> Res<()> {
        let text = std::mem::replace(&mut self.buf, String::with_capacity(256));
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    async fn next_text(&mut self) -> Res<Utf8Bytes> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t),
                Some(Ok(Message::Close(_))) | None => return Err(err("connection closed")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends echo request `seq` with event data `data` and waits for its reply, answering
    /// pings and skipping pushes meanwhile.
    pub async fn request(&mut self, seq: u64, data: &str) -> Res<()> {
        self.proto.encode_echo(&mut self.buf, seq, data);
        self.send_buf().await?;
        self.wait_reply(seq).await
    }

    async fn wait_reply(&mut self, seq: u64) -> Res<()> {
        let want = self.proto.reply_id(seq);
        loop {
            let text = self.next_text().await?;
            match self.proto.classify(&text) {
                Incoming::Reply(id) if id == want => return Ok(()),
                Incoming::Ping => self.send_str(self.proto.pong()).await?,
                _ => {}
            }
        }
    }

    /// Asks the server to push `rate` events per second to every client for `ms`
    /// milliseconds and waits for its acknowledgement.
    pub async fn start_fanout(&mut self, seq: u64, cfg: &FanoutCfg) -> Res<()> {
        self.proto.encode_fanout(&mut self.buf, seq, cfg);
        self.send_buf().await?;
        self.wait_reply(seq).await
    }

    /// Waits for the next push frame, answering pings meanwhile.
    pub async fn next_push(&mut self) -> Res<Utf8Bytes> {
        loop {
            let text = self.next_text().await?;
            match self.proto.classify(&text) {
                Incoming::Push => return Ok(text),
                Incoming::Ping => self.send_str(self.proto.pong()).await?,
                _ => {}
            }
        }
    }

    /// Keeps the connection open, answering pings, until the server closes it.
    pub async fn hold(&mut self) -> Res<()> {
        loop {
            let text = self.next_text().await?;
            if self.proto.classify(&text) == Incoming::Ping {
                self.send_str(self.proto.pong()).await?;
            }
        }
    }

    /// Closes the connection (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.ws.close(None)).await;
    }
}
