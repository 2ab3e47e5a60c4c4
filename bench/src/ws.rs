//! A minimal WebSocket client for every [`Proto`], written for a low cost per frame.
//!
//! The HTTP upgrade and the frames (RFC 6455) are handled here by hand on a plain
//! [`TcpStream`]: one read syscall fills a reusable buffer with as many frames as have
//! arrived, and every frame in it is parsed in place (no allocation per frame); outgoing
//! frames are masked into a reusable buffer and sent with one write. Control frames are
//! handled like a library client does: pings are answered with pongs, a close ends the
//! connection, fragmented messages are reassembled, binary messages are skipped.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::peers::FanoutCfg;
use crate::wire::{Incoming, Proto};
use crate::{Res, err, net};

/// Initial size of a client's read buffer (the tool holds up to ~10k sockets per process);
/// it grows for larger messages.
const READ_BUF: usize = 4096;
/// Largest message accepted (as the library client was configured before).
const MAX_MESSAGE: usize = 16 << 20;
/// Largest HTTP upgrade response accepted.
const MAX_RESPONSE_HEAD: usize = 16 << 10;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The header of one frame at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Final fragment of its message.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Header length in bytes (payload starts there).
    pub head_len: usize,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl FrameHead {
    /// Header plus payload.
    pub fn total(&self) -> usize {
        self.head_len + self.payload_len
    }
}

/// Parses the header of the server frame at the start of `buf`: `Ok(None)` until the whole
/// header has arrived. Server frames must not be masked.
pub fn parse_head(buf: &[u8]) -> Res<Option<FrameHead>> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err(err("masked frame from the server"));
    }
    if b0 & 0x70 != 0 {
        return Err(err("frame with reserved bits set"));
    }
    let (head_len, payload_len) = match b1 & 0x7f {
        0x7e => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (4, usize::from(u16::from_be_bytes([b[0], b[1]])))
        }
        0x7f => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let n = u64::from_be_bytes(a);
            if n > MAX_MESSAGE as u64 {
                return Err(err("frame too large"));
            }
            (10, n as usize)
        }
        n => (2, usize::from(n)),
    };
    Ok(Some(FrameHead {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        head_len,
        payload_len,
    }))
}

/// Appends a client frame (FIN set, masked with `mask`) carrying `payload` to `out`.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if let Ok(n16) = u16::try_from(n) {
        out.push(0x80 | 0x7e);
        out.extend_from_slice(&n16.to_be_bytes());
    } else {
        out.push(0x80 | 0x7f);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    // Eight bytes at a time, then the rest.
    let mask8 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = out[start..].chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ mask8).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Where the current message's payload is.
#[derive(Debug, Clone)]
enum Msg {
    /// In the read buffer.
    Buf(Range<usize>),
    /// Reassembled from fragments.
    Frag,
}

/// One connected client that has completed its protocol's handshake.
pub struct WsClient {
    stream: TcpStream,
    proto: Proto,
    /// Received bytes; unparsed frames start at `pos`.
    rbuf: Vec<u8>,
    pos: usize,
    /// A fragmented message being reassembled, and whether it is text.
    frag: Vec<u8>,
    frag_text: bool,
    /// The next outgoing frame.
    out: Vec<u8>,
    /// The next outgoing message's text.
    buf: String,
    /// Masking-key generator (xorshift).
    rng: u64,
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
        let mut c = Self {
            stream,
            proto,
            rbuf: Vec::with_capacity(READ_BUF),
            pos: 0,
            frag: Vec::new(),
            frag_text: false,
            out: Vec::with_capacity(256),
            buf: String::with_capacity(256),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (idx + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
        };
        c.upgrade(&addr.to_string(), &proto.ws_path(idx)).await?;
        loop {
            let m = c.next_msg().await?;
            match proto.classify(c.text(&m)?) {
                Incoming::EioOpen => c.send_str("40").await?,
                Incoming::Handshake => return Ok(c),
                Incoming::Ping => c.send_str(proto.pong()).await?,
                _ => {}
            }
        }
    }

    /// The HTTP/1.1 upgrade; bytes after the response head stay in the read buffer.
    async fn upgrade(&mut self, host: &str, path: &str) -> Res<()> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        self.stream.write_all(req.as_bytes()).await?;
        loop {
            if let Some(i) = self.rbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = &self.rbuf[..i];
                let status = head.split(|&b| b == b'\r').next().unwrap_or_default();
                if !status.starts_with(b"HTTP/1.1 101") {
                    return Err(err(format!(
                        "WebSocket upgrade refused: {}",
                        String::from_utf8_lossy(status)
                    )));
                }
                self.pos = i + 4;
                return Ok(());
            }
            if self.rbuf.len() > MAX_RESPONSE_HEAD {
                return Err(err("WebSocket upgrade response too long"));
            }
            self.fill().await?;
        }
    }

    /// Reads once (one syscall when data is there) into the read buffer, after dropping the
    /// parsed bytes; makes room for at least `need` unparsed bytes.
    async fn fill_for(&mut self, need: usize) -> Res<()> {
        if self.pos == self.rbuf.len() {
            self.rbuf.clear();
        } else if self.pos > 0 {
            self.rbuf.copy_within(self.pos.., 0);
            self.rbuf.truncate(self.rbuf.len() - self.pos);
        }
        self.pos = 0;
        let want = need.max(self.rbuf.len() + READ_BUF / 2);
        if self.rbuf.capacity() < want {
            self.rbuf.reserve(want - self.rbuf.len());
        }
        if self.stream.read_buf(&mut self.rbuf).await? == 0 {
            return Err(err("connection closed"));
        }
        Ok(())
    }

    async fn fill(&mut self) -> Res<()> {
        self.fill_for(0).await
    }

    /// The next complete text message (answering WebSocket pings, skipping pongs and binary
    /// messages, reassembling fragments).
    async fn next_msg(&mut self) -> Res<Msg> {
        loop {
            let rest = &self.rbuf[self.pos..];
            let head = match parse_head(rest)? {
                Some(h) if h.total() <= rest.len() => h,
                Some(h) => {
                    let need = h.total();
                    self.fill_for(need).await?;
                    continue;
                }
                None => {
                    self.fill().await?;
                    continue;
                }
            };
            let payload = self.pos + head.head_len..self.pos + head.total();
            self.pos = payload.end;
            match head.opcode {
                OP_TEXT | OP_BINARY if head.fin => {
                    if head.opcode == OP_TEXT {
                        return Ok(Msg::Buf(payload));
                    }
                }
                OP_TEXT | OP_BINARY => {
                    self.frag.clear();
                    self.frag.extend_from_slice(&self.rbuf[payload]);
                    self.frag_text = head.opcode == OP_TEXT;
                }
                OP_CONT => {
                    if self.frag.len() + payload.len() > MAX_MESSAGE {
                        return Err(err("message too large"));
                    }
                    self.frag.extend_from_slice(&self.rbuf[payload]);
                    if head.fin && self.frag_text {
                        return Ok(Msg::Frag);
                    }
                }
                OP_PING => {
                    let mask = self.next_mask();
                    self.out.clear();
                    write_frame(&mut self.out, OP_PONG, &self.rbuf[payload], mask);
                    self.stream.write_all(&self.out).await?;
                }
                OP_PONG => {}
                OP_CLOSE => {
                    // Echo the close (best effort) like a library client does.
                    let mask = self.next_mask();
                    self.out.clear();
                    write_frame(&mut self.out, OP_CLOSE, &[], mask);
                    let _ = self.stream.try_write(&self.out);
                    return Err(err("connection closed"));
                }
                op => return Err(err(format!("unknown opcode {op}"))),
            }
        }
    }

    /// The payload of message `m` (valid until the next read).
    fn bytes(&self, m: &Msg) -> &[u8] {
        match m {
            Msg::Buf(r) => &self.rbuf[r.clone()],
            Msg::Frag => &self.frag[..],
        }
    }

    /// The text of message `m` (valid until the next read).
    fn text(&self, m: &Msg) -> Res<&str> {
        Ok(std::str::from_utf8(self.bytes(m))?)
    }

    fn next_mask(&mut self) -> [u8; 4] {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng as u32).to_ne_bytes()
    }

    async fn send_str(&mut self, s: &str) -> Res<()> {
        let mask = self.next_mask();
        self.out.clear();
        write_frame(&mut self.out, OP_TEXT, s.as_bytes(), mask);
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    async fn send_buf(&mut self) -> Res<()> {
        let mask = self.next_mask();
        self.out.clear();
        write_frame(&mut self.out, OP_TEXT, self.buf.as_bytes(), mask);
        self.stream.write_all(&self.out).await?;
        Ok(())
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
            let m = self.next_msg().await?;
            match self.proto.classify(self.text(&m)?) {
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

    /// Waits for the next push frame, answering pings meanwhile; the text is valid until
    /// the next call.
    pub async fn next_push(&mut self) -> Res<&str> {
        loop {
            let m = self.next_msg().await?;
            // Pushes are recognised by their first bytes, so their text is checked once.
            if self.proto.is_push(self.bytes(&m)) {
                return self.text(&m);
            }
            if self.proto.classify(self.text(&m)?) == Incoming::Ping {
                self.send_str(self.proto.pong()).await?;
            }
        }
    }

    /// Keeps the connection open, answering pings, until the server closes it.
    pub async fn hold(&mut self) -> Res<()> {
        loop {
            let m = self.next_msg().await?;
            if self.proto.classify(self.text(&m)?) == Incoming::Ping {
                self.send_str(self.proto.pong()).await?;
            }
        }
    }

    /// Closes the connection (best effort): sends a close frame and drops the socket.
    pub async fn close(mut self) {
        let mask = self.next_mask();
        self.out.clear();
        write_frame(&mut self.out, OP_CLOSE, &[], mask);
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.stream.write_all(&self.out)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for n in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            write_frame(&mut out, OP_TEXT, &payload, [1, 2, 3, 4]);
            // As the server would see it: masked; unmask and re-parse as a server frame.
            assert_eq!(out[0], 0x81);
            assert!(out[1] & 0x80 != 0);
            let mut server = out.clone();
            server[1] &= 0x7f;
            let h = parse_head(&server).unwrap().unwrap();
            let key_at = h.head_len;
            let body: Vec<u8> = server[key_at + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i & 3])
                .collect();
            assert!(h.fin);
            assert_eq!(h.opcode, OP_TEXT);
            assert_eq!(h.payload_len, n);
            assert_eq!(body, payload);
            assert_eq!(parse_head(&server[..key_at - 1]).unwrap(), None);
        }
    }

    #[test]
    fn rejects_masked_and_reserved() {
        assert!(parse_head(&[0x81, 0x85]).is_err());
        assert!(parse_head(&[0xc1, 0x05]).is_err());
        assert_eq!(parse_head(&[0x81]).unwrap(), None);
    }
}
