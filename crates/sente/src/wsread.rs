//! The read side of a WebSocket connection: the client's frames (RFC 6455 5), parsed by hand.
//!
//! A connection keeps no read buffer of its own between messages. Each read goes into a
//! buffer shared by all connections of the thread ([`SCRATCH`]), whole frames are parsed
//! straight out of it, and only the bytes of a frame still arriving (or of frames after the
//! message returned) are kept, in a buffer that is freed again once parsed. An idle connection
//! so costs no read buffer at all (tungstenite kept 1 KiB, grown to the largest message and
//! kept), and a request costs one read, one parse and the payload's copy.
//!
//! What the server accepts (it negotiates no extension): masked frames, the RSV bits clear,
//! control frames final and at most 125 bytes, continuations only inside a fragmented message,
//! text that is UTF-8 once whole, and no frame or message over the message limit. Anything
//! else is a [`ReadError`] naming the close code to answer with.

use bytes::Bytes;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read per syscall at most.
const SCRATCH_LEN: usize = 8 * 1024;

thread_local! {
    /// The read buffer of every connection polled on this thread (used only within one poll).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
}

/// Opcodes (RFC 6455 5.2).
pub(crate) const OP_CONTINUE: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xa;

/// Why a text message that is not UTF-8 closes its connection (with [`code::INVALID`]), here
/// or after the packer found it (`WsConn::serve`).
pub(crate) const INVALID_TEXT: &str = "invalid UTF-8 in a text message";

/// Close codes (RFC 6455 7.4.1) the server sends.
pub(crate) mod code {
    /// The connection is done with.
    pub(crate) const NORMAL: u16 = 1000;
    /// A frame broke the protocol.
    pub(crate) const PROTOCOL: u16 = 1002;
    /// A text message was not UTF-8.
    pub(crate) const INVALID: u16 = 1007;
    /// A message over the size limit.
    pub(crate) const TOO_BIG: u16 = 1009;
    /// Try again later (the send queue overflowed).
    pub(crate) const AGAIN: u16 = 1013;
}

/// One message or control frame from the client.
#[derive(Debug, PartialEq)]
pub(crate) enum Incoming {
    /// A whole data message (fragments joined): its bytes and whether it was binary. A text
    /// message's bytes are valid UTF-8.
    Data(Bytes, bool),
    /// A ping: its payload, for the pong.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame: its payload (nothing, or a valid code and a UTF-8 reason), which the
    /// server's answer echoes.
    Close(Bytes),
}

/// Why the read side ended.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The socket failed.
    Io(io::Error),
    /// The client closed the connection (end of stream).
    Eof,
    /// A frame broke the protocol: the close code to answer with, and what broke.
    Protocol(u16, &'static str),
}

/// A data message of several frames being joined.
#[derive(Debug)]
struct Partial {
    binary: bool,
    data: Vec<u8>,
}

/// The parse state of one connection's incoming bytes (see the module docs).
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// Bytes read and not parsed yet; no allocation when empty.
    held: Vec<u8>,
    /// A fragmented data message so far.
    partial: Option<Partial>,
    /// The most bytes a frame or a message may have.
    max_message: usize,
    /// Whether text messages are checked for UTF-8 here; off when the packer that reads them
    /// checks ([`FrameReader::leave_text_check`]).
    check_text: bool,
}

/// Messages at least this large that arrive as one frame are unmasked in the read buffer and
/// handed out from it ([`FrameReader::take_whole_frame`]); smaller ones are copied out.
const IN_PLACE: usize = 4 * 1024;

/// A frame's header, checked.
struct Header {
    fin: bool,
    opcode: u8,
    /// The header's length (with the mask).
    head: usize,
    /// The frame's length.
    total: usize,
    mask: [u8; 4],
}

/// What one parse step found at the start of the bytes.
enum Step {
    /// More bytes are needed: the frame's whole length once its header is known, else 0.
    More(usize),
    /// A whole frame of `len` bytes was parsed; it gave a message or not.
    Frame(usize, Option<Incoming>),
}

impl FrameReader {
    /// A reader that accepts frames and messages of at most `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Self {
        FrameReader {
            held: Vec::new(),
            partial: None,
            max_message,
            check_text: true,
        }
    }

    /// Hands text messages out without checking that they are UTF-8: for a connection whose
    /// packer checks ([`sente_proto::packer::Packer::checks_utf8`]), so the bytes are walked
    /// once. The connection must then close with 1007 when the packer finds they are not
    /// ([`sente_proto::server::message::ws_undecodable`]).
    pub(crate) fn leave_text_check(&mut self) {
        self.check_text = false;
    }

    /// A whole data message; text must be UTF-8 (unless the packer checks).
    fn data(&self, bytes: Bytes, binary: bool) -> Result<Incoming, ReadError> {
        if self.check_text && !binary && std::str::from_utf8(&bytes).is_err() {
            return Err(ReadError::Protocol(code::INVALID, INVALID_TEXT));
        }
        Ok(Incoming::Data(bytes, binary))
    }

    /// The next message or control frame read from `io`.
    pub(crate) fn poll_next<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Incoming, ReadError>> {
        loop {
            // Whole frames already held first.
            if let Some(msg) = self.parse_held()? {
                return Poll::Ready(Ok(msg));
            }
            let got = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ReadError::Io(e))),
                    Poll::Ready(Ok(())) => {}
                }
                let read = buf.filled();
                if read.is_empty() {
                    return Poll::Ready(Err(ReadError::Eof));
                }
                if !self.held.is_empty() {
                    self.held.extend_from_slice(read);
                    return Poll::Ready(Ok(None));
                }
                // Nothing held: parse straight from the scratch buffer, keep only the rest.
                let (at, found, need) = self.parse(read)?;
                self.held.extend_from_slice(&read[at..]);
                self.held
                    .reserve(room(need).saturating_sub(self.held.len()));
                Poll::Ready(Ok(found))
            });
            match got {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(Some(msg))) => return Poll::Ready(Ok(msg)),
                Poll::Ready(Ok(None)) => {}
            }
        }
    }

    /// Parses the held bytes up to the first message; frees them once all are parsed.
    fn parse_held(&mut self) -> Result<Option<Incoming>, ReadError> {
        if let Some(msg) = self.take_whole_frame()? {
            return Ok(Some(msg));
        }
        let held = std::mem::take(&mut self.held);
        let parsed = self.parse(&held);
        self.held = held;
        let (at, found, need) = parsed?;
        if at == self.held.len() {
            // All parsed: give the memory back (an idle connection holds none).
            self.held = Vec::new();
        } else if at > 0 {
            self.held.drain(..at);
        }
        self.held
            .reserve(room(need).saturating_sub(self.held.len()));
        Ok(found)
    }

    /// Parses whole frames from the start of `b` up to the first message: how many bytes were
    /// parsed, the message, and what the next frame needs ([`Step::More`]).
    fn parse(&mut self, b: &[u8]) -> Result<(usize, Option<Incoming>, usize), ReadError> {
        let mut at = 0;
        while at < b.len() {
            match self.step(&b[at..])? {
                Step::More(need) => return Ok((at, None, need)),
                Step::Frame(len, msg) => {
                    at += len;
                    if msg.is_some() {
                        return Ok((at, msg, 0));
                    }
                }
            }
        }
        Ok((at, None, 0))
    }

    /// The header of the frame at the start of `b`, checked; `Err(need)` while it is not
    /// whole (`need`: the frame's whole length once known, else 0).
    fn header(&self, b: &[u8]) -> Result<Result<Header, usize>, ReadError> {
        let proto = |why| Err(ReadError::Protocol(code::PROTOCOL, why));
        if b.len() < 2 {
            return Ok(Err(0));
        }
        let (b0, b1) = (b[0], b[1]);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        if b0 & 0x70 != 0 {
            return proto("reserved bits set (no extension was negotiated)");
        }
        if b1 & 0x80 == 0 {
            return proto("a client frame must be masked");
        }
        let (head, len) = match b1 & 0x7f {
            126 => {
                let Some(l) = b.get(2..4) else {
                    return Ok(Err(0));
                };
                (8, u64::from(u16::from_be_bytes([l[0], l[1]])))
            }
            127 => {
                let Some(l) = b.get(2..10) else {
                    return Ok(Err(0));
                };
                let mut n = [0u8; 8];
                n.copy_from_slice(l);
                (14, u64::from_be_bytes(n))
            }
            n => (6, u64::from(n)),
        };
        let control = opcode & 0x08 != 0;
        if control && (!fin || len > 125) {
            return proto("a control frame must be final and at most 125 bytes");
        }
        let so_far = self.partial.as_ref().map_or(0, |p| p.data.len() as u64);
        if len.saturating_add(so_far) > self.max_message as u64 {
            return Err(ReadError::Protocol(
                code::TOO_BIG,
                "message over the size limit",
            ));
        }
        let total = head + len as usize;
        if b.len() < total {
            return Ok(Err(total));
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&b[head - 4..head]);
        Ok(Ok(Header {
            fin,
            opcode,
            head,
            total,
            mask,
        }))
    }

    /// A large message in one frame that fills the held bytes exactly (how a large message
    /// usually arrives): unmasked where it lies and handed out without a copy.
    fn take_whole_frame(&mut self) -> Result<Option<Incoming>, ReadError> {
        if self.partial.is_some() || self.held.len() < IN_PLACE {
            return Ok(None);
        }
        let Ok(h) = self.header(&self.held)? else {
            return Ok(None);
        };
        if !h.fin || h.total != self.held.len() || !matches!(h.opcode, OP_TEXT | OP_BINARY) {
            return Ok(None);
        }
        let mut frame = std::mem::take(&mut self.held);
        unmask(&mut frame[h.head..], h.mask);
        let payload = Bytes::from(frame).slice(h.head..);
        self.data(payload, h.opcode == OP_BINARY).map(Some)
    }

    /// Parses one frame at the start of `b`, if it is whole.
    fn step(&mut self, b: &[u8]) -> Result<Step, ReadError> {
        let proto = |why| Err(ReadError::Protocol(code::PROTOCOL, why));
        let Header {
            fin,
            opcode,
            head,
            total,
            mask,
        } = match self.header(b)? {
            Ok(h) => h,
            Err(need) => return Ok(Step::More(need)),
        };
        let payload = &b[head..total];
        let msg = match opcode {
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return proto("a new message inside a fragmented one");
                }
                let binary = opcode == OP_BINARY;
                if fin {
                    Some(self.data(Bytes::from(unmasked(payload, mask)), binary)?)
                } else {
                    let mut data = Vec::with_capacity(payload.len());
                    unmask_into(&mut data, payload, mask);
                    self.partial = Some(Partial { binary, data });
                    None
                }
            }
            OP_CONTINUE => {
                let Some(p) = &mut self.partial else {
                    return proto("a continuation outside a fragmented message");
                };
                unmask_into(&mut p.data, payload, mask);
                if fin {
                    let p = self.partial.take().expect("checked above");
                    Some(self.data(Bytes::from(p.data), p.binary)?)
                } else {
                    None
                }
            }
            OP_PING => Some(Incoming::Ping(Bytes::from(unmasked(payload, mask)))),
            OP_PONG => Some(Incoming::Pong),
            OP_CLOSE => Some(close(unmasked(payload, mask))?),
            _ => return proto("a reserved opcode"),
        };
        Ok(Step::Frame(total, msg))
    }
}

/// Room to reserve for a frame of `need` bytes: all of it at once (not one doubling per read),
/// up to [`RESERVE_MAX`]; past that the buffer grows as the bytes arrive, so a header alone
/// (a few bytes announcing a large frame) never makes the server allocate the whole frame.
fn room(need: usize) -> usize {
    need.min(RESERVE_MAX)
}

/// The most reserved ahead for a frame whose bytes have not arrived.
const RESERVE_MAX: usize = 64 * 1024;

/// A close frame's payload: nothing, or a code and a UTF-8 reason (RFC 6455 5.5.1).
fn close(payload: Vec<u8>) -> Result<Incoming, ReadError> {
    match &payload[..] {
        [] => Ok(Incoming::Close(Bytes::new())),
        [_] => Err(ReadError::Protocol(
            code::PROTOCOL,
            "a close frame of one byte",
        )),
        [a, b, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err(ReadError::Protocol(
                    code::INVALID,
                    "invalid UTF-8 in a close reason",
                ));
            }
            let c = u16::from_be_bytes([*a, *b]);
            // Codes an endpoint may send (7.4.1 and the IANA registry): 1000-1003, 1007-1014,
            // 3000-4999.
            if matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                Ok(Incoming::Close(Bytes::from(payload)))
            } else {
                Err(ReadError::Protocol(code::PROTOCOL, "an invalid close code"))
            }
        }
    }
}

fn unmasked(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len());
    unmask_into(&mut v, payload, mask);
    v
}

/// Appends `payload` unmasked.
fn unmask_into(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask);
}

/// Unmasks a frame's payload where it lies (RFC 6455 5.3: the payload's first byte goes
/// with the mask's first).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![first];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65_535 => {
                f.push(0x80 | 0x7e);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 0x7f);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Everything `wire` gives, fed in reads of at most `chunk` bytes.
    async fn read_all(wire: Vec<u8>, chunk: usize, max: usize) -> Vec<Result<Incoming, String>> {
        let (mut tx, mut rx) = tokio::io::duplex(chunk);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for c in wire.chunks(chunk) {
                tx.write_all(c).await.unwrap();
            }
        });
        let mut r = FrameReader::new(max);
        let mut out = Vec::new();
        loop {
            match std::future::poll_fn(|cx| r.poll_next(&mut rx, cx)).await {
                Ok(m) => out.push(Ok(m)),
                Err(ReadError::Eof) => return out,
                Err(ReadError::Protocol(c, why)) => {
                    out.push(Err(format!("{c} {why}")));
                    return out;
                }
                Err(ReadError::Io(e)) => panic!("{e}"),
            }
        }
    }

    #[tokio::test]
    async fn messages_of_every_length_class_fragments_and_controls_in_any_reads() {
        let big = vec![b'x'; 70_000];
        let mid = vec![7u8; 300];
        let mut wire = frame(0x81, b"hello");
        wire.extend(frame(0x82, &mid));
        wire.extend(frame(0x01, b"frag"));
        wire.extend(frame(0x89, b"p!"));
        wire.extend(frame(0x80, b"mented"));
        wire.extend(frame(0x81, &big));
        wire.extend(frame(0x8a, b""));
        wire.extend(frame(0x88, &[0x03, 0xe8, b'o', b'k']));
        let want = vec![
            Ok(Incoming::Data(Bytes::from_static(b"hello"), false)),
            Ok(Incoming::Data(Bytes::from(mid.clone()), true)),
            Ok(Incoming::Ping(Bytes::from_static(b"p!"))),
            Ok(Incoming::Data(Bytes::from_static(b"fragmented"), false)),
            Ok(Incoming::Data(Bytes::from(big.clone()), false)),
            Ok(Incoming::Pong),
            Ok(Incoming::Close(Bytes::from_static(&[
                0x03, 0xe8, b'o', b'k',
            ]))),
        ];
        for chunk in [1, 3, 7, 100, 4096, 1 << 20] {
            assert_eq!(
                read_all(wire.clone(), chunk, 1 << 20).await,
                want,
                "{chunk}"
            );
        }
    }

    #[tokio::test]
    async fn protocol_errors_name_their_close_code() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                vec![0x81, 0x02, b'h', b'i'],
                "1002 a client frame must be masked",
            ),
            (frame(0xc1, b"x"), "1002 reserved bits"),
            (frame(0x83, b"x"), "1002 a reserved opcode"),
            (frame(0x80, b"x"), "1002 a continuation outside"),
            (
                [frame(0x01, b"a"), frame(0x81, b"b")].concat(),
                "1002 a new message inside",
            ),
            (frame(0x09, b"x"), "1002 a control frame must be final"),
            (frame(0x89, &[0; 126]), "1002 a control frame must be final"),
            (frame(0x81, &[0xff, 0xfe]), "1007 invalid UTF-8"),
            (frame(0x88, &[0x03]), "1002 a close frame of one byte"),
            (frame(0x88, &[0x03, 0xed]), "1002 an invalid close code"),
            (frame(0x82, &[0; 101]), "1009 message over the size limit"),
            (
                [frame(0x02, &[0; 60]), frame(0x80, &[0; 60])].concat(),
                "1009 message over the size limit",
            ),
        ];
        for (wire, want) in cases {
            let got = read_all(wire, 4096, 100).await;
            let last = got.last().expect("an answer");
            assert!(
                matches!(last, Err(e) if e.starts_with(want)),
                "{want}: {got:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_from_its_header() {
        // Only the header arrives: the length alone is refused, nothing is buffered.
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&(u64::MAX / 2).to_be_bytes());
        head.extend_from_slice(&[0; 4]);
        let got = read_all(head, 4096, 1 << 20).await;
        assert!(
            matches!(&got[..], [Err(e)] if e.starts_with("1009")),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn nothing_is_held_between_messages() {
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        let mut r = FrameReader::new(1 << 20);
        use tokio::io::AsyncWriteExt;
        // Two messages in one read, the second split: the rest is held, then freed.
        let mut wire = frame(0x81, b"one");
        wire.extend(frame(0x82, &[5; 2000]));
        tx.write_all(&wire[..wire.len() - 10]).await.unwrap();
        let m = std::future::poll_fn(|cx| r.poll_next(&mut rx, cx))
            .await
            .unwrap();
        assert_eq!(m, Incoming::Data(Bytes::from_static(b"one"), false));
        assert!(r.held.capacity() > 0);
        tx.write_all(&wire[wire.len() - 10..]).await.unwrap();
        let m = std::future::poll_fn(|cx| r.poll_next(&mut rx, cx))
            .await
            .unwrap();
        assert_eq!(m, Incoming::Data(Bytes::from(vec![5; 2000]), true));
        assert_eq!(r.held.capacity(), 0, "freed once parsed");
    }
}
