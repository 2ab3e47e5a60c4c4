//! The two transports of Sente, shared by the client and the server state machines.

use crate::client::Kind;
use std::fmt;

/// A concrete transport: what a connection runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// WebSocket.
    Ws,
    /// Ajax long-polling.
    Ajax,
}

impl Transport {
    /// `"ws"` or `"ajax"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Ajax => "ajax",
        }
    }

    /// The same transport as a client [`Kind`].
    pub fn kind(self) -> Kind {
        match self {
            Transport::Ws => Kind::Ws,
            Transport::Ajax => Kind::Ajax,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
