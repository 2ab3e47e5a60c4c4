//! One client of any transport: [`Conn`].

use std::net::{Ipv4Addr, SocketAddr};

use crate::Res;
use crate::ajax::AjaxClient;
use crate::peers::FanoutCfg;
use crate::wire::Proto;
use crate::ws::WsClient;

/// Which transport the clients use.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// WebSocket.
    Ws,
    /// HTTP long-polling (Sente Ajax, engine.io polling).
    Ajax,
}

impl Transport {
    /// Short name used in scenario names.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Ajax => "ajax",
        }
    }
}

/// A connected, handshaken client.
pub enum Conn {
    /// Over WebSocket.
    Ws(Box<WsClient>),
    /// Over long-polling.
    Ajax(Box<AjaxClient>),
}

impl Conn {
    /// Connects client `idx` and completes the handshake.
    pub async fn connect(
        transport: Transport,
        proto: Proto,
        addr: SocketAddr,
        src: Option<Ipv4Addr>,
        idx: u64,
    ) -> Res<Self> {
        Ok(match transport {
            Transport::Ws => Conn::Ws(Box::new(WsClient::connect(proto, addr, src, idx).await?)),
            Transport::Ajax => {
                Conn::Ajax(Box::new(AjaxClient::connect(proto, addr, src, idx).await?))
            }
        })
    }

    /// Sends echo request `seq` and waits for the reply.
    pub async fn request(&mut self, seq: u64, data: &str) -> Res<()> {
        match self {
            Conn::Ws(c) => c.request(seq, data).await,
            Conn::Ajax(c) => c.request(seq, data).await,
        }
    }

    /// Starts the server's push loop.
    pub async fn start_fanout(&mut self, seq: u64, cfg: &FanoutCfg) -> Res<()> {
        match self {
            Conn::Ws(c) => c.start_fanout(seq, cfg).await,
            Conn::Ajax(c) => c.start_fanout(seq, cfg).await,
        }
    }

    /// Waits for the next push; its text is valid until the next call.
    pub async fn next_push(&mut self) -> Res<&str> {
        match self {
            Conn::Ws(c) => c.next_push().await,
            Conn::Ajax(c) => c.next_push().await,
        }
    }

    /// Closes the client.
    pub async fn close(self) {
        match self {
            Conn::Ws(c) => c.close().await,
            Conn::Ajax(c) => drop(c),
        }
    }
}
