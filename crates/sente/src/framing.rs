//! [`FrameBoundedIo`]: the socket under a WebSocket connection, watching the frame boundaries of
//! what the client sends, so that the connection's reader can be replaced after a large
//! message.
//!
//! The WebSocket reader (tungstenite) grows its read buffer to hold a whole frame and keeps
//! that allocation for the connection's lifetime: one 900 KB message would pin 900 KB per
//! connection. This wrapper follows the frame headers in the bytes it hands to the reader, and
//! after a large frame it hands out no byte past that frame's end. When the reader then returns
//! the message, it holds no unread byte, and the connection swaps it for a fresh reader with
//! a small buffer ([`FrameBoundedIo::take_boundary`]). Bytes of small frames pass straight
//! through (no copy).
//!
//! It also holds the connection's write queue ([`FrameQueue`]): the server's own frames are
//! written from there, and tungstenite's writes (pongs, the close handshake) go after them.

use crate::wswrite::FrameQueue;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Frames with at least this many payload bytes make the reader's buffer worth replacing.
pub(crate) const LARGE_FRAME: u64 = 16 * 1024;

/// Where the scan of the incoming bytes is.
#[derive(Clone, Copy, Debug)]
enum Scan {
    /// Reading a frame header: the bytes seen so far.
    Header { bytes: [u8; 14], len: u8 },
    /// Inside a frame's payload: bytes left.
    Payload { left: u64 },
}

impl Scan {
    const START: Scan = Scan::Header {
        bytes: [0; 14],
        len: 0,
    };
}

/// The length of a header from its first two bytes, and the payload length once complete.
fn header(bytes: &[u8]) -> Option<(usize, Option<u64>)> {
    let b1 = *bytes.get(1)?;
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let len = 2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 };
    if bytes.len() < len {
        return Some((len, None));
    }
    let payload = match ext {
        0 => u64::from(b1 & 0x7f),
        2 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
        _ => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[2..10]);
            u64::from_be_bytes(b)
        }
    };
    Some((len, Some(payload)))
}

/// The socket of one WebSocket connection, with the frame scan (see the module docs).
#[derive(Debug)]
pub(crate) struct FrameBoundedIo<S> {
    io: S,
    scan: Scan,
    /// A large frame was handed out since the last [`FrameBoundedIo::take_boundary`].
    grown: bool,
    /// Bytes read from the socket but held back at a large frame's end.
    held: Vec<u8>,
    /// The server's frames not written yet.
    out: FrameQueue,
    /// A write of tungstenite's waited for the socket (see [`FrameBoundedIo::take_deferred`]).
    deferred: bool,
}

impl<S> FrameBoundedIo<S> {
    pub(crate) fn new(io: S) -> Self {
        FrameBoundedIo {
            io,
            scan: Scan::START,
            grown: false,
            held: Vec::new(),
            out: FrameQueue::default(),
            deferred: false,
        }
    }

    /// The write queue of the server's frames; written by [`FrameBoundedIo::poll_drain`].
    pub(crate) fn out(&mut self) -> &mut FrameQueue {
        &mut self.out
    }

    /// Bytes queued and not written yet.
    pub(crate) fn queued(&self) -> usize {
        self.out.len()
    }

    /// Whether a write of tungstenite's (a pong) waited for the socket since the last call:
    /// the reader, which retries it, must then be polled again once the socket took the queue.
    pub(crate) fn take_deferred(&mut self) -> bool {
        std::mem::take(&mut self.deferred)
    }

    /// Whether the reader has been given a large frame and, since, exactly whole frames (so it
    /// holds no unread byte): then it may be replaced. Resets the mark.
    pub(crate) fn take_boundary(&mut self) -> bool {
        let at = self.grown && matches!(self.scan, Scan::Header { len: 0, .. });
        if at {
            self.grown = false;
        }
        at
    }

    /// Follows `bytes` (handed to the reader in this order); returns how many may be handed
    /// out now: all of them, except after the end of a large frame, where it stops.
    fn advance(&mut self, bytes: &[u8]) -> usize {
        let mut pos = 0;
        while pos < bytes.len() {
            match &mut self.scan {
                Scan::Payload { left } => {
                    let n = (*left).min((bytes.len() - pos) as u64) as usize;
                    *left -= n as u64;
                    pos += n;
                    if *left == 0 {
                        self.scan = Scan::START;
                        if self.grown {
                            return pos;
                        }
                    }
                }
                Scan::Header { bytes: h, len } => {
                    h[usize::from(*len)] = bytes[pos];
                    *len += 1;
                    pos += 1;
                    let seen = &h[..usize::from(*len)];
                    if let Some((_, Some(payload))) = header(seen) {
                        if payload >= LARGE_FRAME {
                            self.grown = true;
                        }
                        if payload == 0 {
                            self.scan = Scan::START;
                            if self.grown {
                                return pos;
                            }
                        } else {
                            self.scan = Scan::Payload { left: payload };
                        }
                    }
                }
            }
        }
        pos
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameBoundedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.held.is_empty() {
            let mut held = std::mem::take(&mut this.held);
            let room = buf.remaining().min(held.len());
            let n = this.advance(&held[..room]);
            buf.put_slice(&held[..n]);
            held.drain(..n);
            if !held.is_empty() {
                this.held = held;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let read = &buf.filled()[before..];
        let n = this.advance(read);
        if n < read.len() {
            this.held.extend_from_slice(&read[n..]);
            buf.set_filled(before + n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> FrameBoundedIo<S> {
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

/// tungstenite's writes: after the queued frames, and taken whole (see
/// [`FrameQueue::poll_write_after`]).
impl<S: AsyncWrite + Unpin> AsyncWrite for FrameBoundedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = this.out.poll_write_after(&mut this.io, cx, buf);
        if r.is_pending() {
            this.deferred = true;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx, true)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.out.poll_write_to(&mut this.io, cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A masked client frame with `len` payload bytes (all zero, so the mask does not matter).
    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0x82];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=65_535 => {
                f.push(0x80 | 0x7e);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 0x7f);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.resize(f.len() + len, 0);
        f
    }

    async fn read_some(io: &mut FrameBoundedIo<&[u8]>, max: usize) -> usize {
        let mut buf = vec![0; max];
        io.read(&mut buf).await.unwrap()
    }

    #[tokio::test]
    async fn stops_at_the_end_of_a_large_frame_only() {
        let (small, large) = (frame(10), frame(70_000));
        let mut wire = small.clone();
        wire.extend_from_slice(&large);
        wire.extend_from_slice(&small);
        wire.extend_from_slice(&small);
        let mut io = FrameBoundedIo::new(&wire[..]);
        // Small frames pass with what follows them; the large frame's end is a stop.
        let mut got = 0;
        while got < small.len() + large.len() {
            got += read_some(&mut io, 1 << 20).await;
        }
        assert_eq!(got, small.len() + large.len());
        assert!(io.take_boundary());
        assert!(!io.take_boundary(), "the mark is taken once");
        // The bytes held back come next, then the rest: nothing is lost.
        let rest = read_some(&mut io, 1 << 20).await + read_some(&mut io, 1 << 20).await;
        assert_eq!(rest, 2 * small.len());
        assert!(!io.take_boundary());
    }

    #[tokio::test]
    async fn a_header_split_across_reads_is_followed() {
        let large = frame(20_000);
        let mut io = FrameBoundedIo::new(&large[..]);
        let mut got = 0;
        for max in [1, 1, 3, 2, 7] {
            got += read_some(&mut io, max).await;
            assert!(!io.take_boundary());
        }
        while got < large.len() {
            got += read_some(&mut io, 4096).await;
        }
        assert!(io.take_boundary());
    }
}
