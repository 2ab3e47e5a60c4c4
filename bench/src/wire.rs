//! The three wire protocols the load tool speaks, as plain text frames.
//!
//! * [`Proto::Sente`]: Sente's envelope with the `json` packer (`[payload, cb-id]`).
//! * [`Proto::Raw`]: the raw-ws peer's protocol: `{"id":n,...}` requests echoed verbatim,
//!   `{"ev":"tick",...}` pushes, `{"hello":1}` on open. No protocol at all: our floor.
//! * [`Proto::SocketIo`]: socket.io v5 over engine.io v4 (`0{..}` open, `40` connect,
//!   `42id["echo",..]` / ack `43id[..]`, `2`/`3` ping/pong).
//!
//! Frames are built and recognised by hand, without a JSON parser, and the same way for
//! every protocol, so the client-side cost is equal for all targets.

use std::fmt::Write as _;

use crate::peers::FanoutCfg;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which wire protocol a target speaks.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    /// Sente's envelope with the json packer.
    Sente,
    /// The raw JSON echo protocol of the raw-ws peer.
    Raw,
    /// socket.io v5 / engine.io v4.
    #[value(name = "socketio")]
    SocketIo,
}

/// What an incoming text frame means to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// engine.io open packet: the client must answer with `40` (socket.io only).
    EioOpen,
    /// The application-level handshake is complete (Sente handshake, socket.io connect ack,
    /// raw hello).
    Handshake,
    /// A server keepalive ping that must be answered with [`Proto::pong`].
    Ping,
    /// A reply to the request with this sequence number (masked to the protocol's id width).
    Reply(u64),
    /// A server push carrying one or more timestamped events.
    Push,
    /// Anything else (ignored).
    Other,
}

/// Microseconds since the Unix epoch from the machine's wall clock (servers and clients run
/// on the same machine, so push timestamps compare directly).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Appends the event data object `{"t":<t>,"p":"xxx.."}` to `out`, padded so that the
/// object is about `bytes` long.
pub fn write_data(out: &mut String, t: u64, bytes: usize) {
    let start = out.len();
    let _ = write!(out, "{{\"t\":{t},\"p\":\"");
    const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    let used = out.len() - start + 2;
    let mut pad = bytes.saturating_sub(used);
    while pad > 0 {
        let n = pad.min(PAD.len());
        out.push_str(&PAD[..n]);
        pad -= n;
    }
    out.push_str("\"}");
}

/// The event data object as a new string (see [`write_data`]).
pub fn data(t: u64, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 8);
    write_data(&mut s, t, bytes);
    s
}

/// Mask applied to Sente cb-ids (6 hex chars).
const SENTE_ID_MASK: u64 = 0xff_ffff;

impl Proto {
    /// Short name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Sente => "sente",
            Proto::Raw => "raw",
            Proto::SocketIo => "socketio",
        }
    }

    /// Path and query of the WebSocket endpoint for client `idx`.
    pub fn ws_path(self, idx: u64) -> String {
        match self {
            Proto::Sente => {
                format!("/chsk?client-id=bench-{idx}&csrf-token=bench&packer=json&uid=u{idx}")
            }
            Proto::Raw => format!("/ws?uid=u{idx}"),
            Proto::SocketIo => format!("/socket.io/?EIO=4&transport=websocket&uid=u{idx}"),
        }
    }

    /// The id a reply to request `seq` carries, as [`Incoming::Reply`] reports it.
    pub fn reply_id(self, seq: u64) -> u64 {
        match self {
            Proto::Sente => seq & SENTE_ID_MASK,
            Proto::Raw | Proto::SocketIo => seq,
        }
    }

    /// Writes an echo request with sequence number `seq` and event data `data` (a JSON
    /// object) into `out` (cleared first).
    pub fn encode_echo(self, out: &mut String, seq: u64, data: &str) {
        out.clear();
        match self {
            Proto::Sente => {
                let _ = write!(
                    out,
                    "[[\":demo/echo\",{data}],\"{:06x}\"]",
                    seq & SENTE_ID_MASK
                );
            }
            Proto::Raw => {
                // {"id":n, + the data object's members
                let _ = write!(out, "{{\"id\":{seq},{}", &data[1..]);
            }
            Proto::SocketIo => {
                let _ = write!(out, "42{seq}[\"echo\",{data}]");
            }
        }
    }

    /// Writes the control request that starts the server's push loop: `rate` pushes per
    /// second to every connected client for `ms` milliseconds, `bytes` of event data each.
    pub fn encode_fanout(self, out: &mut String, seq: u64, fanout: &FanoutCfg) {
        out.clear();
        let cfg = fanout.to_json();
        let FanoutCfg {
            rate, ms, bytes, ..
        } = *fanout;
        match self {
            Proto::Sente => {
                let _ = write!(
                    out,
                    "[[\":bench/fanout\",{cfg}],\"{:06x}\"]",
                    seq & SENTE_ID_MASK
                );
            }
            Proto::Raw => {
                let _ = write!(
                    out,
                    "{{\"op\":\"fanout\",\"id\":{seq},\"rate\":{rate},\"ms\":{ms},\"bytes\":{bytes}}}"
                );
            }
            Proto::SocketIo => {
                let _ = write!(out, "42{seq}[\"fanout\",{cfg}]");
            }
        }
    }

    /// The answer to a server keepalive ping.
    pub fn pong(self) -> &'static str {
        match self {
            Proto::Sente => "[[\":chsk/ws-pong\"],null]",
            Proto::Raw => "{\"op\":\"pong\"}",
            Proto::SocketIo => "3",
        }
    }

    /// Whether a frame is a push, from its first bytes alone (what [`Proto::classify`] calls
    /// [`Incoming::Push`]).
    pub fn is_push(self, text: &[u8]) -> bool {
        match self {
            Proto::Sente => text.starts_with(b"[[["),
            Proto::Raw => text.starts_with(b"{\"ev\":"),
            Proto::SocketIo => text.starts_with(b"42"),
        }
    }

    /// Classifies one incoming text frame (WS frame, or one packet of a poll response).
    pub fn classify(self, text: &str) -> Incoming {
        match self {
            Proto::Sente => classify_sente(text),
            Proto::Raw => classify_raw(text),
            Proto::SocketIo => classify_socketio(text),
        }
    }
}

fn classify_sente(text: &str) -> Incoming {
    if text.starts_with("[[[") {
        return Incoming::Push;
    }
    if text.starts_with("[[\":chsk/handshake\"") {
        return Incoming::Handshake;
    }
    if text.starts_with("[\":chsk/ws-ping\"") {
        return Incoming::Ping;
    }
    // A reply: `[<value>,"xxxxxx"]`.
    if let Some(body) = text.strip_suffix("\"]") {
        if body.len() >= 8 {
            let id = &body[body.len() - 6..];
            if body[..body.len() - 6].ends_with(",\"") {
                if let Ok(n) = u64::from_str_radix(id, 16) {
                    return Incoming::Reply(n);
                }
            }
        }
    }
    Incoming::Other
}

fn leading_u64(s: &str) -> Option<u64> {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    s[..end].parse().ok()
}

fn classify_raw(text: &str) -> Incoming {
    if let Some(rest) = text.strip_prefix("{\"id\":") {
        return leading_u64(rest).map_or(Incoming::Other, Incoming::Reply);
    }
    if text.starts_with("{\"ev\":") {
        return Incoming::Push;
    }
    if text.starts_with("{\"hello\"") {
        return Incoming::Handshake;
    }
    if let Some(rest) = text.strip_prefix("{\"op\":\"ok\",\"id\":") {
        return leading_u64(rest).map_or(Incoming::Other, Incoming::Reply);
    }
    Incoming::Other
}

fn classify_socketio(text: &str) -> Incoming {
    let b = text.as_bytes();
    match b.first() {
        Some(b'0') => Incoming::EioOpen,
        Some(b'2') if b.len() == 1 => Incoming::Ping,
        Some(b'4') => match b.get(1) {
            Some(b'0') => Incoming::Handshake,
            Some(b'2') => Incoming::Push,
            Some(b'3') => leading_u64(&text[2..]).map_or(Incoming::Other, Incoming::Reply),
            _ => Incoming::Other,
        },
        _ => Incoming::Other,
    }
}

/// Calls `f` with every event timestamp (`"t":<digits>`) found in a push frame.
pub fn for_each_ts(text: &str, mut f: impl FnMut(u64)) {
    // One pass from quote to quote (eight bytes at a time, so the padding inside strings
    // is skipped fast); at every `"t":`, the digits that follow are parsed on the way
    // (none, or more than fit a u64: skipped, as before).
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(q) = next_quote(b, i) {
        i = q + 1;
        if b.get(i..i + 3) != Some(b"t\":".as_slice()) {
            continue;
        }
        i += 3;
        let mut t: Option<u64> = Some(0);
        let start = i;
        while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
            t = t
                .and_then(|t| t.checked_mul(10))
                .and_then(|t| t.checked_add(u64::from(d - b'0')));
            i += 1;
        }
        if i > start {
            if let Some(t) = t {
                f(t);
            }
        }
    }
}

/// The index of the first `"` in `b` at or after `from`: eight bytes at a time (the lowest
/// byte flagged by the has-zero-byte trick is always a true match).
fn next_quote(bytes: &[u8], from: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = LO * b'"' as u64;
    let mut at = from;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let diff = u64::from_le_bytes(word) ^ QUOTES;
        let zeros = diff.wrapping_sub(LO) & !diff & HI;
        if zeros != 0 {
            return Some(at + (zeros.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes
        .get(at..)?
        .iter()
        .position(|&c| c == b'"')
        .map(|p| at + p)
}

/// Percent-encodes `s` for a URL query or a form body (everything but unreserved chars).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_padded() {
        let d = data(1_732_800_000_000_000, 100);
        assert_eq!(d.len(), 100);
        assert!(d.starts_with("{\"t\":1732800000000000,\"p\":\"xx"));
    }

    #[test]
    fn sente_frames() {
        let mut s = String::new();
        Proto::Sente.encode_echo(&mut s, 0x3f_2a9c, "{\"t\":123}");
        assert_eq!(s, "[[\":demo/echo\",{\"t\":123}],\"3f2a9c\"]");
        assert_eq!(
            Proto::Sente.classify("[{\"t\":123},\"3f2a9c\"]"),
            Incoming::Reply(0x3f_2a9c)
        );
        assert_eq!(
            Proto::Sente.classify("[[\":chsk/handshake\",[\"u1\",null,null]],null]"),
            Incoming::Handshake
        );
        assert_eq!(
            Proto::Sente.classify("[\":chsk/ws-ping\",null]"),
            Incoming::Ping
        );
        assert_eq!(
            Proto::Sente.classify("[[[\":demo/tick\",{\"t\":123}]],null]"),
            Incoming::Push
        );
    }

    #[test]
    fn raw_and_socketio_frames() {
        let mut s = String::new();
        Proto::Raw.encode_echo(&mut s, 7, "{\"t\":1,\"p\":\"\"}");
        assert_eq!(s, "{\"id\":7,\"t\":1,\"p\":\"\"}");
        assert_eq!(Proto::Raw.classify(&s), Incoming::Reply(7));
        Proto::SocketIo.encode_echo(&mut s, 12, "{\"t\":1}");
        assert_eq!(s, "4212[\"echo\",{\"t\":1}]");
        assert_eq!(
            Proto::SocketIo.classify("4312[{\"t\":1}]"),
            Incoming::Reply(12)
        );
        assert_eq!(
            Proto::SocketIo.classify("0{\"sid\":\"a\"}"),
            Incoming::EioOpen
        );
        assert_eq!(
            Proto::SocketIo.classify("40{\"sid\":\"a\"}"),
            Incoming::Handshake
        );
        assert_eq!(Proto::SocketIo.classify("2"), Incoming::Ping);
    }

    #[test]
    fn timestamps() {
        let mut v = Vec::new();
        for_each_ts(
            "[[[\":demo/tick\",{\"t\":5,\"p\":\"\"}],[\":demo/tick\",{\"t\":6}]],null]",
            |t| {
                v.push(t);
            },
        );
        assert_eq!(v, [5, 6]);
        v.clear();
        for_each_ts(
            "\"t\":1 \"t\": 2 \"t\":99999999999999999999 \"\"t\":7\"t\":8\"",
            |t| v.push(t),
        );
        assert_eq!(v, [1, 7, 8]);
        // Quotes found at every offset of the eight-byte steps.
        for pad in 0..20 {
            let s = format!("{}\"t\":42,\"p\":\"{}\"", "y".repeat(pad), "x".repeat(pad));
            v.clear();
            for_each_ts(&s, |t| v.push(t));
            assert_eq!(v, [42], "{s}");
        }
        for (p, frame) in [
            (Proto::Sente, "[[[\":demo/tick\",{\"t\":1}]],null]"),
            (Proto::Raw, "{\"ev\":\"tick\",\"t\":1}"),
            (Proto::SocketIo, "42[\"tick\",{\"t\":1}]"),
        ] {
            assert!(p.is_push(frame.as_bytes()));
            assert_eq!(p.classify(frame), Incoming::Push);
        }
    }
}
