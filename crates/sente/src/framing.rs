//! [`WsSocket`]: the socket under a WebSocket connection, with its frame reader
//! ([`crate::wsread`]) and its write queue ([`crate::wswrite`]).
//!
//! The server reads and writes frames itself (no WebSocket library in between): the reader
//! keeps no buffer between messages and the writer shares the packed bytes of a push among
//! its connections. Control frames the server answers with (the pong of a ping, the close
//! handshake) go through the same write queue as data, so frames never interleave.

use crate::wsread::{FrameReader, Incoming, OP_CLOSE, OP_PONG, ReadError};
use crate::wswrite::FrameQueue;
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};

/// The socket of one WebSocket connection (see the module docs).
#[derive(Debug)]
pub(crate) struct WsSocket<S> {
    io: S,
    read: FrameReader,
    /// The server's frames not written yet.
    out: FrameQueue,
}

impl<S> WsSocket<S> {
    /// A socket whose client may send messages of at most `max_message` bytes.
    pub(crate) fn new(io: S, max_message: usize) -> Self {
        WsSocket {
            io,
            read: FrameReader::new(max_message),
            out: FrameQueue::default(),
        }
    }

    /// See [`FrameReader::leave_text_check`].
    pub(crate) fn leave_text_check(&mut self) {
        self.read.leave_text_check();
    }

    /// The write queue of the server's frames; written by [`WsSocket::poll_drain`].
    pub(crate) fn out(&mut self) -> &mut FrameQueue {
        &mut self.out
    }

    /// Bytes queued and not written yet.
    pub(crate) fn queued(&self) -> usize {
        self.out.len()
    }

    /// Queues the pong of a ping.
    pub(crate) fn pong(&mut self, payload: Bytes) {
        self.out.control(OP_PONG, payload);
    }

    /// Queues a close frame with `payload`: a code and a reason of at most 123 bytes (see
    /// [`close_payload`]), or the client's close frame echoed.
    pub(crate) fn close_frame(&mut self, payload: Bytes) {
        self.out.control(OP_CLOSE, payload);
    }
}

/// A close frame's payload: `code` and `reason`.
pub(crate) fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(reason.as_bytes());
    Bytes::from(p)
}

impl<S: AsyncRead + Unpin> WsSocket<S> {
    /// The client's next message or control frame.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, ReadError>> {
        self.read.poll_next(&mut self.io, cx)
    }
}

impl<S: AsyncWrite + Unpin> WsSocket<S> {
    /// Writes the queued frames; with `flush`, then flushes the socket.
    pub(crate) fn poll_drain(&mut self, cx: &mut Context<'_>, flush: bool) -> Poll<io::Result<()>> {
        std::task::ready!(self.out.poll_write_to(&mut self.io, cx))?;
        if flush {
            Pin::new(&mut self.io).poll_flush(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
}
