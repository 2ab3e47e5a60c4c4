//! The write side of a WebSocket connection: the server's frames, queued as a header and the
//! payload's bytes (shared, never copied), written to the socket in one vectored write per
//! flush.
//!
//! Server frames are not masked (RFC 6455 5.1), so a frame is a 2-10 byte header before the
//! payload as it is. Going through tungstenite's `feed` and `flush` cost about 930
//! instructions per event in `sente-load fanout --callgrind` (a message built, encoded into its
//! write buffer, copied, and the socket polled through two layers of wrappers); this queue
//! costs the header and one `writev`. The server's control frames (the pong of a ping, the
//! close handshake) go through the same queue, so frames never interleave.

use crate::wsread::{OP_BINARY, OP_CONTINUE, OP_TEXT};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// The most slices one vectored write is given (two per frame).
const MAX_SLICES: usize = 32;

/// Bytes copied into one write when the socket takes no vectored writes.
const STAGE: usize = 4096;

const FIN: u8 = 0x80;

/// The opcode of a data message's frame: the message's own on its first frame, a
/// continuation on the others.
fn data_opcode(binary: bool, first: bool) -> u8 {
    match (first, binary) {
        (true, true) => OP_BINARY,
        (true, false) => OP_TEXT,
        (false, _) => OP_CONTINUE,
    }
}

/// One queued frame: its header and payload.
#[derive(Debug)]
struct Frame {
    head: [u8; 10],
    head_len: u8,
    payload: Bytes,
}

impl Frame {
    fn new(opcode: u8, fin: bool, payload: Bytes) -> Self {
        let mut head = [0u8; 10];
        head[0] = opcode | if fin { FIN } else { 0 };
        let len = payload.len();
        let head_len = if len < 126 {
            head[1] = len as u8;
            2
        } else if let Ok(len) = u16::try_from(len) {
            head[1] = 126;
            head[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Frame {
            head,
            head_len,
            payload,
        }
    }

    fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }

    fn len(&self) -> usize {
        usize::from(self.head_len) + self.payload.len()
    }

    /// What is left of the header and the payload once `sent` bytes of the frame were written.
    fn unwritten(&self, sent: usize) -> (&[u8], &[u8]) {
        let head = self.head();
        match sent.checked_sub(head.len()) {
            None => (&head[sent..], &self.payload[..]),
            Some(into) => (&[], &self.payload[into..]),
        }
    }
}

/// The frames a connection wrote and the socket has not taken yet, in order. The first frame
/// is kept inline: a flush of one frame (a push, a reply) allocates nothing, and an idle
/// connection's queue holds no memory.
#[derive(Debug, Default)]
pub(crate) struct FrameQueue {
    /// The first frame; `None` only when the queue is empty.
    front: Option<Frame>,
    /// The frames after it.
    rest: VecDeque<Frame>,
    /// Bytes of the first frame already written.
    sent: usize,
    /// Bytes queued and not written.
    bytes: usize,
}

impl FrameQueue {
    /// Whether every queued byte was written.
    pub(crate) fn is_empty(&self) -> bool {
        self.front.is_none()
    }

    /// Bytes queued and not written yet.
    pub(crate) fn len(&self) -> usize {
        self.bytes
    }

    fn push(&mut self, frame: Frame) {
        self.bytes += frame.len();
        if self.front.is_none() {
            self.front = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    /// Queues one data message as frames of at most `fragment` payload bytes (the first with
    /// the message's opcode, the others continuations; clients reassemble them). The frames
    /// share the message's bytes.
    pub(crate) fn message(&mut self, bytes: Bytes, binary: bool, fragment: usize) {
        if bytes.len() <= fragment {
            // One frame (most messages): the bytes moved in, not sliced.
            self.push(Frame::new(data_opcode(binary, true), true, bytes));
            return;
        }
        let bytes = &bytes;
        let mut at = 0;
        loop {
            at = self.fragment(bytes, binary, at, fragment);
            if at == bytes.len() {
                return;
            }
        }
    }

    /// Queues the frame of message `msg` that starts at byte `start`: at most `fragment`
    /// payload bytes, the message's opcode on the first frame and a continuation on the others,
    /// the last one final. Returns where the next frame starts (`msg.len()` after the last).
    fn fragment(&mut self, msg: &Bytes, binary: bool, start: usize, fragment: usize) -> usize {
        let len = msg.len();
        let end = start.saturating_add(fragment.max(1)).min(len);
        let op = data_opcode(binary, start == 0);
        self.push(Frame::new(op, end == len, msg.slice(start..end)));
        end
    }

    /// Queues a control frame (a pong, a close).
    pub(crate) fn control(&mut self, opcode: u8, payload: Bytes) {
        self.push(Frame::new(opcode, true, payload));
    }

    /// Marks `n` more bytes written.
    fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        while let Some(front) = &self.front {
            let left = front.len() - self.sent;
            if n < left {
                self.sent += n;
                return;
            }
            n -= left;
            self.sent = 0;
            self.front = self.rest.pop_front();
        }
        // Written: a queue that grew for a burst gives its memory back.
        if self.rest.capacity() > 0 {
            self.rest = VecDeque::new();
        }
    }

    /// The queued bytes from the first unwritten one, as slices (at most `MAX_SLICES`).
    fn slices<'a>(&'a self, out: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let front = self.front.iter().map(|f| f.unwritten(self.sent));
        let rest = self.rest.iter().map(|f| f.unwritten(0));
        let mut n = 0;
        for (head, payload) in front.chain(rest) {
            for part in [head, payload] {
                if part.is_empty() {
                    continue;
                }
                out[n] = IoSlice::new(part);
                n += 1;
                if n == MAX_SLICES {
                    return n;
                }
            }
        }
        n
    }

    /// Writes the queued frames to `io` until all are written (`Ready(Ok)`), the socket is full
    /// (`Pending`) or fails.
    pub(crate) fn poll_write_to<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let vectored = io.is_write_vectored();
        while !self.is_empty() {
            let written =
                if let (Some(f), true, true) = (&self.front, self.rest.is_empty(), vectored) {
                    // One frame queued (a push, a reply: the common case): its header and payload
                    // from where the last write stopped, without building the general slice list.
                    let (head, payload) = f.unwritten(self.sent);
                    let parts = [IoSlice::new(head), IoSlice::new(payload)];
                    std::task::ready!(Pin::new(&mut *io).poll_write_vectored(cx, &parts))?
                } else if vectored {
                    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                    let n = self.slices(&mut slices);
                    std::task::ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))?
                } else {
                    // One write of the first bytes (copied), not one per header and payload.
                    let mut stage = [0u8; STAGE];
                    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                    let n = self.slices(&mut slices);
                    let mut filled = 0;
                    for s in &slices[..n] {
                        let take = s.len().min(STAGE - filled);
                        stage[filled..filled + take].copy_from_slice(&s[..take]);
                        filled += take;
                        if filled == STAGE {
                            break;
                        }
                    }
                    std::task::ready!(Pin::new(&mut *io).poll_write(cx, &stage[..filled]))?
                };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Reads one unmasked frame: (first byte, payload).
    async fn read_frame(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        r.read_exact(&mut h).await.unwrap();
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                r.read_exact(&mut b).await.unwrap();
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                r.read_exact(&mut b).await.unwrap();
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0; len as usize];
        r.read_exact(&mut payload).await.unwrap();
        (h[0], payload)
    }

    #[tokio::test]
    async fn frames_of_every_length_class_in_order_through_a_small_pipe() {
        // A pipe of 1 KiB: the writes are partial and wait for the reader.
        let (mut writer, mut reader_io) = tokio::io::duplex(1024);
        let sizes = [0usize, 1, 125, 126, 65_535, 65_536, 70_000];
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..sizes.len() + 2 {
                got.push(read_frame(&mut reader_io).await);
            }
            got
        });
        let mut queue = FrameQueue::default();
        for (i, n) in sizes.iter().enumerate() {
            queue.message(Bytes::from(vec![i as u8; *n]), i % 2 == 1, 1 << 20);
        }
        // A large message in fragments.
        queue.message(Bytes::from(vec![9u8; 20_000]), false, 16 * 1024);
        std::future::poll_fn(|cx| queue.poll_write_to(&mut writer, cx))
            .await
            .unwrap();
        assert!(queue.is_empty());
        assert_eq!(queue.len(), 0);
        let got = reader.await.unwrap();
        for (i, n) in sizes.iter().enumerate() {
            let op = if i % 2 == 1 { OP_BINARY } else { OP_TEXT };
            assert_eq!(got[i].0, FIN | op, "frame {i}");
            assert_eq!(got[i].1, vec![i as u8; *n], "frame {i}");
        }
        let (first, last) = (&got[sizes.len()], &got[sizes.len() + 1]);
        assert_eq!(first.0, OP_TEXT, "first fragment: the opcode, no FIN");
        assert_eq!(first.1.len(), 16 * 1024);
        assert_eq!(
            last.0,
            FIN | OP_CONTINUE,
            "last fragment: a continuation with FIN"
        );
        assert_eq!(last.1.len(), 20_000 - 16 * 1024);
    }

    #[tokio::test]
    async fn a_single_frame_through_a_pipe_of_three_bytes() {
        // The one-frame path: the 10-byte header and the payload written a few bytes at a time.
        let (mut writer, mut reader_io) = tokio::io::duplex(3);
        let reader = tokio::spawn(async move { read_frame(&mut reader_io).await });
        let mut queue = FrameQueue::default();
        let payload: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        queue.message(Bytes::from(payload.clone()), true, 1 << 20);
        std::future::poll_fn(|cx| queue.poll_write_to(&mut writer, cx))
            .await
            .unwrap();
        assert!(queue.is_empty());
        assert_eq!(reader.await.unwrap(), (FIN | OP_BINARY, payload));
    }
}
