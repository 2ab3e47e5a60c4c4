//! The printer: Clojure's `pr-str` in readable mode, byte for byte.

use std::fmt::{self, Write};

use crate::error::{Error, ErrorKind};
use crate::inst::write_inst;
use crate::value::Value;

/// Appends the edn text of `v` to `out`, exactly as Clojure's `pr-str` prints it.
///
/// Nothing is allocated per node: everything is written straight into `out`.
/// [`Value::Bytes`] is printed as a vector of integers `0..=255` (edn has no byte literal); use
/// [`try_to_edn_string`] to reject bytes instead.
pub fn write_edn(v: &Value, out: &mut String) {
    // Writing into a String cannot fail.
    let _ = write_value(v, out);
}

/// The edn text of `v`, exactly as Clojure's `pr-str` prints it (same as `v.to_string()`).
///
/// [`Value::Bytes`] is printed as a vector of integers; see [`write_edn`].
pub fn to_edn_string(v: &Value) -> String {
    let mut s = String::with_capacity(64);
    write_edn(v, &mut s);
    s
}

/// Like [`to_edn_string`], but fails with [`ErrorKind::BytesNotEdn`] if `v` contains
/// [`Value::Bytes`] anywhere.
pub fn try_to_edn_string(v: &Value) -> Result<String, Error> {
    let mut s = String::with_capacity(64);
    try_write_edn(v, &mut s)?;
    Ok(s)
}

/// [`write_edn`], but fails with [`ErrorKind::BytesNotEdn`] (writing nothing) if `v` contains
/// [`Value::Bytes`] anywhere: [`try_to_edn_string`] into a buffer of the caller's.
pub fn try_write_edn(v: &Value, out: &mut String) -> Result<(), Error> {
    if contains_bytes(v) {
        return Err(Error::new(ErrorKind::BytesNotEdn));
    }
    write_edn(v, out);
    Ok(())
}

fn contains_bytes(v: &Value) -> bool {
    match v {
        Value::Bytes(_) => true,
        Value::Vector(xs) | Value::List(xs) => xs.iter().any(contains_bytes),
        Value::Set(s) => s.iter().any(contains_bytes),
        Value::Map(m) => m
            .iter()
            .any(|(k, v)| contains_bytes(k) || contains_bytes(v)),
        Value::Tagged(t) => contains_bytes(&t.value),
        Value::Ratio(r) => contains_bytes(&r.numer) || contains_bytes(&r.denom),
        _ => false,
    }
}

/// Prints like Clojure's `pr-str`; see [`write_edn`].
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value(self, f)
    }
}

fn write_seq<W: Write>(items: &[Value], open: &str, close: char, out: &mut W) -> fmt::Result {
    out.write_str(open)?;
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.write_char(' ')?;
        }
        write_value(x, out)?;
    }
    out.write_char(close)
}

pub(crate) fn write_value<W: Write>(v: &Value, out: &mut W) -> fmt::Result {
    match v {
        Value::Nil => out.write_str("nil"),
        Value::Bool(true) => out.write_str("true"),
        Value::Bool(false) => out.write_str("false"),
        Value::Int(i) => write!(out, "{i}"),
        Value::BigInt(b) => {
            out.write_str(b.as_str())?;
            out.write_char('N')
        }
        Value::Float(x) => write_double(*x, out),
        Value::BigDec(d) => {
            out.write_str(d.as_str())?;
            out.write_char('M')
        }
        Value::Ratio(r) => {
            // Clojure prints a ratio's parts as plain integers (no `N`).
            write_ratio_part(&r.numer, out)?;
            out.write_char('/')?;
            write_ratio_part(&r.denom, out)
        }
        Value::Str(s) => write_string(s, out),
        Value::Char(c) => write_char_literal(*c, out),
        Value::Keyword(k) => {
            out.write_char(':')?;
            out.write_str(k.as_str())
        }
        Value::Symbol(s) => out.write_str(s.as_str()),
        Value::Vector(xs) => write_seq(xs, "[", ']', out),
        Value::List(xs) => write_seq(xs, "(", ')', out),
        Value::Map(m) => {
            out.write_char('{')?;
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.write_str(", ")?;
                }
                write_value(k, out)?;
                out.write_char(' ')?;
                write_value(v, out)?;
            }
            out.write_char('}')
        }
        Value::Set(s) => {
            out.write_str("#{")?;
            for (i, x) in s.iter().enumerate() {
                if i > 0 {
                    out.write_char(' ')?;
                }
                write_value(x, out)?;
            }
            out.write_char('}')
        }
        Value::Inst(i) => {
            out.write_str("#inst ")?;
            write_inst(i, out)
        }
        Value::Uuid(u) => {
            out.write_str("#uuid \"")?;
            let mut buf = uuid::Uuid::encode_buffer();
            out.write_str(u.hyphenated().encode_lower(&mut buf))?;
            out.write_char('"')
        }
        Value::Bytes(b) => {
            out.write_char('[')?;
            for (i, x) in b.iter().enumerate() {
                if i > 0 {
                    out.write_char(' ')?;
                }
                write!(out, "{x}")?;
            }
            out.write_char(']')
        }
        Value::Tagged(t) => {
            out.write_char('#')?;
            out.write_str(t.tag.as_str())?;
            out.write_char(' ')?;
            write_value(&t.value, out)
        }
    }
}

fn write_ratio_part<W: Write>(v: &Value, out: &mut W) -> fmt::Result {
    match v {
        Value::BigInt(b) => out.write_str(b.as_str()),
        other => write_value(other, out),
    }
}

/// Writes a string literal with Clojure's escapes (`\"`, `\\`, `\n`, `\t`, `\r`, `\b`, `\f`);
/// everything else, including other control characters and non-ASCII, is written raw.
fn write_string<W: Write>(s: &str, out: &mut W) -> fmt::Result {
    out.write_char('"')?;
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\t' => "\\t",
            b'\r' => "\\r",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => continue,
        };
        // `i` is at an ASCII byte, hence a char boundary.
        out.write_str(&s[start..i])?;
        out.write_str(esc)?;
        start = i + 1;
    }
    out.write_str(&s[start..])?;
    out.write_char('"')
}

fn write_char_literal<W: Write>(c: char, out: &mut W) -> fmt::Result {
    out.write_char('\\')?;
    match c {
        '\n' => out.write_str("newline"),
        ' ' => out.write_str("space"),
        '\t' => out.write_str("tab"),
        '\r' => out.write_str("return"),
        '\u{8}' => out.write_str("backspace"),
        '\u{c}' => out.write_str("formfeed"),
        c if c.is_control() => write!(out, "u{:04x}", u32::from(c)),
        c => out.write_char(c),
    }
}

/// A fixed stack buffer for formatting a double's shortest digits without allocating.
struct StackBuf {
    buf: [u8; 48],
    len: usize,
}

impl Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes a double like Java's `Double.toString` (shortest round-trip digits, as in JDK 19+),
/// with Clojure's `##Inf`, `##-Inf` and `##NaN`.
pub(crate) fn write_double<W: Write>(x: f64, out: &mut W) -> fmt::Result {
    if x.is_nan() {
        return out.write_str("##NaN");
    }
    if x.is_infinite() {
        return out.write_str(if x > 0.0 { "##Inf" } else { "##-Inf" });
    }
    if x == 0.0 {
        return out.write_str(if x.is_sign_negative() { "-0.0" } else { "0.0" });
    }
    let mut sb = StackBuf {
        buf: [0; 48],
        len: 0,
    };
    // `{:e}` gives the shortest digits that round-trip: `1.2345e-7`.
    write!(sb, "{:e}", x.abs())?;
    if x.abs() < f64::MIN_POSITIVE && !sb.buf[..sb.len].contains(&b'.') {
        // Java prints at least two significant digits and then picks the two-digit decimal
        // closest to the exact value; that differs from `d.0` only for subnormals.
        sb.len = 0;
        write!(sb, "{:.1e}", x.abs())?;
    }
    let text = &sb.buf[..sb.len];
    let epos = text.iter().position(|&b| b == b'e').ok_or(fmt::Error)?;
    let (mantissa, exp_text) = (&text[..epos], &text[epos + 1..]);
    let mut exp: i32 = 0;
    let (neg_exp, exp_digits) = match exp_text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, exp_text),
    };
    for &d in exp_digits {
        exp = exp * 10 + i32::from(d - b'0');
    }
    if neg_exp {
        exp = -exp;
    }
    // Digits without the decimal point, as ASCII.
    let mut digits = [0u8; 24];
    let mut n = 0;
    for &b in mantissa {
        if b != b'.' && n < digits.len() {
            digits[n] = b;
            n += 1;
        }
    }
    let digits = &digits[..n];
    let digit_str = |range: std::ops::Range<usize>| -> &str {
        std::str::from_utf8(&digits[range]).unwrap_or("0")
    };
    if x.is_sign_negative() {
        out.write_char('-')?;
    }
    if (-3..7).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if n <= int_len {
                out.write_str(digit_str(0..n))?;
                for _ in n..int_len {
                    out.write_char('0')?;
                }
                out.write_str(".0")
            } else {
                out.write_str(digit_str(0..int_len))?;
                out.write_char('.')?;
                out.write_str(digit_str(int_len..n))
            }
        } else {
            out.write_str("0.")?;
            for _ in 0..(-exp - 1) {
                out.write_char('0')?;
            }
            out.write_str(digit_str(0..n))
        }
    } else {
        out.write_str(digit_str(0..1))?;
        out.write_char('.')?;
        if n > 1 {
            out.write_str(digit_str(1..n))?;
        } else {
            out.write_char('0')?;
        }
        write!(out, "E{exp}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(x: f64) -> String {
        let mut s = String::new();
        write_double(x, &mut s).unwrap();
        s
    }

    #[test]
    fn doubles_like_java() {
        assert_eq!(d(1.0), "1.0");
        assert_eq!(d(1.5), "1.5");
        assert_eq!(d(-1.5), "-1.5");
        assert_eq!(d(100.0), "100.0");
        assert_eq!(d(1e10), "1.0E10");
        assert_eq!(d(1e-5), "1.0E-5");
        assert_eq!(d(1.234e-5), "1.234E-5");
        assert_eq!(d(0.001), "0.001");
        assert_eq!(d(0.0001), "1.0E-4");
        assert_eq!(d(9_999_999.0), "9999999.0");
        assert_eq!(d(10_000_000.0), "1.0E7");
        assert_eq!(d(123_456.789), "123456.789");
        assert_eq!(d(0.1), "0.1");
        assert_eq!(d(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(d(f64::MAX), "1.7976931348623157E308");
        assert_eq!(d(f64::MIN_POSITIVE), "2.2250738585072014E-308");
        assert_eq!(d(5e-324), "4.9E-324");
        assert_eq!(d(-0.0), "-0.0");
        assert_eq!(d(f64::NAN), "##NaN");
        assert_eq!(d(f64::NEG_INFINITY), "##-Inf");
    }
}
