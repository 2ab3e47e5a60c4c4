//! A small strict JSON lexer over a UTF-8 slice and a JSON string writer, shared by the transit
//! and json packers. The decoders drive it directly, building [`sente_edn::Value`]s without an
//! intermediate tree.

use std::borrow::Cow;

use super::UnpackError;
use super::util::malformed;

/// A JSON number as read.
pub(crate) enum Number<'a> {
    /// An integer that fits `i64`.
    Int(i64),
    /// An integer beyond `i64`: its text.
    BigInt(&'a str),
    /// A number with a fraction or an exponent.
    Float(f64),
}

/// Cursor over JSON text.
pub(crate) struct Lexer<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// Current byte offset.
    pub(crate) pos: usize,
    packer: &'static str,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(text: &'a str, packer: &'static str) -> Self {
        Lexer {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            packer,
        }
    }

    /// A malformed-input error at the current position.
    pub(crate) fn err(&self, reason: impl Into<String>) -> UnpackError {
        malformed(self.packer, self.pos, reason)
    }

    /// Skips whitespace and returns the next byte without consuming it.
    #[inline]
    pub(crate) fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                self.pos += 1;
            } else {
                return Some(b);
            }
        }
        None
    }

    /// Skips whitespace, then consumes `b` or fails.
    #[inline]
    pub(crate) fn expect(&mut self, b: u8) -> Result<(), UnpackError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected `{}`", b as char)))
        }
    }

    /// After an element: consumes `,` (returns true) or the closing `close` (returns false).
    #[inline]
    pub(crate) fn comma_or(&mut self, close: u8) -> Result<bool, UnpackError> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.err(format!("expected `,` or `{}`", close as char))),
        }
    }

    /// Consumes `lit` (`true`, `false`, `null`).
    pub(crate) fn literal(&mut self, lit: &str) -> Result<(), UnpackError> {
        if self.bytes[self.pos..].starts_with(lit.as_bytes()) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    /// Whether only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Reads a string; the cursor must be on its opening quote (after whitespace).
    /// Moves past the bytes a string holds as they are (see [`plain_len`]).
    fn skip_plain(&mut self) {
        self.pos += plain_len(self.bytes.get(self.pos..).unwrap_or_default());
    }

    pub(crate) fn string(&mut self) -> Result<Cow<'a, str>, UnpackError> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a string"));
        }
        self.pos += 1;
        let start = self.pos;
        // Fast path: no escapes.
        self.skip_plain();
        match self.bytes.get(self.pos) {
            None => return Err(self.err("unterminated string")),
            Some(b'"') => {
                let s = &self.text[start..self.pos];
                self.pos += 1;
                return Ok(Cow::Borrowed(s));
            }
            Some(b'\\') => {}
            Some(_) => return Err(self.err("control character in string")),
        }
        let mut out = String::with_capacity(self.pos - start + 16);
        out.push_str(&self.text[start..self.pos]);
        loop {
            let run = self.pos;
            self.skip_plain();
            out.push_str(&self.text[run..self.pos]);
            match self.bytes.get(self.pos) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(&e) = self.bytes.get(self.pos) else {
                        return Err(self.err("unterminated escape"));
                    };
                    self.pos += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return Err(self.err("lone surrogate in string"));
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("invalid surrogate pair"));
                                }
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            } else {
                                char::from_u32(hi)
                            };
                            out.push(c.ok_or_else(|| self.err("lone surrogate in string"))?);
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, UnpackError> {
        let Some(h) = self.bytes.get(self.pos..self.pos + 4) else {
            return Err(self.err("short \\u escape"));
        };
        let mut v = 0u32;
        for &c in h {
            let d = (c as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + d;
        }
        self.pos += 4;
        Ok(v)
    }

    /// Reads a number (strict JSON grammar).
    pub(crate) fn number(&mut self) -> Result<Number<'a>, UnpackError> {
        let start = self.pos;
        let b = self.bytes;
        let mut i = self.pos;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return Err(self.err("invalid number")),
        }
        let mut float = false;
        if b.get(i) == Some(&b'.') {
            float = true;
            i += 1;
            if !b.get(i).is_some_and(u8::is_ascii_digit) {
                self.pos = i;
                return Err(self.err("invalid number"));
            }
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            float = true;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !b.get(i).is_some_and(u8::is_ascii_digit) {
                self.pos = i;
                return Err(self.err("invalid number"));
            }
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        self.pos = i;
        let text = &self.text[start..i];
        if float {
            return text
                .parse::<f64>()
                .map(Number::Float)
                .map_err(|_| self.err("invalid number"));
        }
        Ok(match parse_i64(text) {
            Some(n) => Number::Int(n),
            None => Number::BigInt(text),
        })
    }
}

/// Parses an optional `-` and digits into `i64`, `None` on overflow.
fn parse_i64(text: &str) -> Option<i64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let mut acc: i64 = 0;
    for &c in digits.as_bytes() {
        let d = i64::from(c - b'0');
        acc = acc.checked_mul(10)?;
        acc = if neg {
            acc.checked_sub(d)?
        } else {
            acc.checked_add(d)?
        };
    }
    Some(acc)
}

/// Appends `s` JSON-escaped (without quotes): `"`, `\`, and control characters, like
/// `JSON.stringify`.
#[inline]
pub(crate) fn push_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    loop {
        i += plain_len(bytes.get(i..).unwrap_or_default());
        let Some(&b) = bytes.get(i) else { break };
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => "",
        };
        out.push_str(&s[run..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        } else {
            out.push_str(esc);
        }
        i += 1;
        run = i;
    }
    out.push_str(&s[run..]);
}

/// The length of the longest prefix of `bytes` that a JSON string holds as it is: no `"`, no
/// `\` and no control character (below 0x20). Eight bytes at a time: a word's bytes equal to a
/// value or below 0x20 are found with the borrow of a subtraction, and the lowest flagged byte
/// is always a true one (a false flag needs a borrow from a true one below it); bytes of 0x80
/// and above (UTF-8 beyond ASCII) are never flagged.
pub(crate) fn plain_len(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH;
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*chunk);
        let found = below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1);
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// Appends `"` + `prefix` + escaped `s` + `"`.
#[inline]
pub(crate) fn push_string(out: &mut String, prefix: &str, s: &str) {
    out.push('"');
    out.push_str(prefix);
    push_escaped(out, s);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    fn plain_len_bytewise(bytes: &[u8]) -> usize {
        bytes
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(bytes.len())
    }

    #[test]
    fn plain_len_finds_the_first_special_byte_at_every_offset() {
        let fillers: [&[u8]; 3] = [b"x", "é".as_bytes(), "\u{1F600}".as_bytes()];
        let specials = [b'"', b'\\', 0x00, 0x01, 0x1f, b'\n'];
        for filler in fillers {
            for len in 0..40 {
                let mut plain = Vec::new();
                while plain.len() < len {
                    plain.extend_from_slice(filler);
                }
                assert_eq!(plain_len(&plain), plain_len_bytewise(&plain));
                for &sp in &specials {
                    for at in 0..=plain.len() {
                        let mut v = plain.clone();
                        v.insert(at, sp);
                        // A second special byte after the first must not move the answer.
                        v.push(0);
                        assert_eq!(plain_len(&v), plain_len_bytewise(&v), "{v:?}");
                        assert_eq!(plain_len(&v), at);
                    }
                }
            }
        }
        // Bytes around the thresholds: 0x1f/0x20, 0x21/0x22/0x23, 0x5b/0x5c/0x5d, 0x7f/0x80/0xff.
        for b in 0u8..=255 {
            let v = [b'a', b'b', b, b'c', b'd', b'e', b'f', b'g', b'h', b];
            assert_eq!(plain_len(&v), plain_len_bytewise(&v), "byte {b:#x}");
        }
    }

    #[test]
    fn escaping_matches_the_bytewise_rules() {
        for s in [
            "",
            "plain",
            "a\"b",
            "\\",
            "tab\there",
            "\u{1}\u{1f}",
            "é\"\u{1F600}\n",
        ] {
            let mut out = String::new();
            push_escaped(&mut out, s);
            let mut want = String::new();
            for c in s.chars() {
                match c {
                    '"' => want.push_str("\\\""),
                    '\\' => want.push_str("\\\\"),
                    '\n' => want.push_str("\\n"),
                    '\r' => want.push_str("\\r"),
                    '\t' => want.push_str("\\t"),
                    '\u{8}' => want.push_str("\\b"),
                    '\u{c}' => want.push_str("\\f"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(want, "\\u{:04x}", c as u32);
                    }
                    c => want.push(c),
                }
            }
            assert_eq!(out, want);
            let quoted = format!("\"{out}\"");
            let mut lexer = Lexer::new(&quoted, "json");
            assert_eq!(lexer.string().ok().as_deref(), Some(s));
        }
    }
}
