//! Helpers shared by the packers: limit checks, number and date formatting, a small hasher.

use sente_edn::calendar::{civil_from_days, days_from_civil, days_in_month};

use sente_edn::{Inst, Map, Ratio, Set, Value};

use super::UnpackError;
use crate::limits::Limits;

/// Fails with [`UnpackError::TooLarge`] when `input` is over the message limit.
pub(crate) fn check_size(input: &[u8], limits: &Limits) -> Result<(), UnpackError> {
    if input.len() > limits.max_message_bytes {
        return Err(UnpackError::TooLarge {
            size: input.len(),
            limit: limits.max_message_bytes,
        });
    }
    Ok(())
}

/// Fails with [`UnpackError::TooDeep`] when `depth` (1 = top-level collection) is over the limit.
#[inline]
pub(crate) fn check_depth(depth: usize, limits: &Limits) -> Result<(), UnpackError> {
    if depth > limits.max_depth {
        return Err(UnpackError::TooDeep {
            limit: limits.max_depth,
        });
    }
    Ok(())
}

/// Fails with [`UnpackError::TooLong`] when a collection of `len` elements is over the limit.
#[inline]
pub(crate) fn check_len(len: u64, limits: &Limits) -> Result<usize, UnpackError> {
    if len > limits.max_collection_len as u64 {
        return Err(UnpackError::TooLong {
            len,
            limit: limits.max_collection_len,
        });
    }
    Ok(len as usize)
}

/// Validates UTF-8 for the text packers.
pub(crate) fn utf8(input: &[u8]) -> Result<&str, UnpackError> {
    std::str::from_utf8(input).map_err(|e| UnpackError::NotUtf8 {
        offset: e.valid_up_to(),
    })
}

/// A [`UnpackError::Malformed`].
pub(crate) fn malformed(
    packer: &'static str,
    offset: usize,
    reason: impl Into<String>,
) -> UnpackError {
    UnpackError::Malformed {
        packer,
        offset,
        reason: reason.into(),
    }
}

/// Appends the decimal digits of `n` without going through `fmt`.
pub(crate) fn push_i64(out: &mut String, n: i64) {
    // Two digits per division, from a table of "00" to "99".
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut u = n.unsigned_abs();
    while u >= 100 {
        let pair = (u % 100) as usize * 2;
        u /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if u >= 10 {
        let pair = u as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + u as u8;
    }
    if n < 0 {
        out.push('-');
    }
    // The digits are ASCII.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// Appends a finite float in the shortest form that reads back exactly, always with a fraction
/// or an exponent (`1.0`, `0.1`, `1e300`, `-1.5e-7`): valid JSON and never mistaken for an int.
pub(crate) fn push_f64(out: &mut String, f: f64) {
    use std::fmt::Write;
    let _ = write!(out, "{f:?}");
}

/// Parses an integer: `Int` when it fits `i64`, else `BigInt`; `None` if not an integer.
#[cfg(feature = "transit")]
pub(crate) fn parse_integer(text: &str) -> Option<Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::Int(i));
    }
    sente_edn::BigInt::parse(text).map(Value::BigInt)
}

/// `BigInt` that fits `i64` becomes `Int` (used for ratio parts).
#[cfg(feature = "transit")]
pub(crate) fn normalize_int(v: Value) -> Value {
    match v {
        Value::BigInt(b) => match b.as_str().parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(b),
        },
        other => other,
    }
}

/// Appends an instant as RFC 3339 UTC: `2024-01-02T03:04:05.678Z`; 9 fraction digits when the
/// instant has sub-millisecond precision; years outside 0..=9999 as `+YYYYYY` / `-YYYYYY`.
pub(crate) fn push_rfc3339(out: &mut String, inst: Inst) {
    use std::fmt::Write;
    let days = inst.secs.div_euclid(86_400);
    let sod = inst.secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        let _ = write!(out, "{y:04}");
    } else {
        let _ = write!(out, "{y:+07}");
    }
    let _ = write!(
        out,
        "-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if inst.nanos % 1_000_000 == 0 {
        let _ = write!(out, ".{:03}Z", inst.nanos / 1_000_000);
    } else {
        let _ = write!(out, ".{:09}Z", inst.nanos);
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` (also `+YYYYYY` years).
#[allow(clippy::many_single_char_names)]
pub(crate) fn parse_rfc3339(s: &str) -> Option<Inst> {
    let b = s.as_bytes();
    let mut i = 0;
    let sign = match b.first()? {
        b'+' => {
            i = 1;
            1
        }
        b'-' => {
            i = 1;
            -1
        }
        _ => 1,
    };
    let ystart = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let ylen = i - ystart;
    if !(4..=12).contains(&ylen) || (ystart == 0 && ylen != 4) {
        return None;
    }
    let year: i64 = sign * s[ystart..i].parse::<i64>().ok()?;
    let rest = &b[i..];
    let num2 = |at: usize| -> Option<u32> {
        let (x, y) = (*rest.get(at)?, *rest.get(at + 1)?);
        (x.is_ascii_digit() && y.is_ascii_digit())
            .then(|| u32::from(x - b'0') * 10 + u32::from(y - b'0'))
    };
    // -MM-DDTHH:MM:SS
    if rest.len() < 15 || rest[0] != b'-' || rest[3] != b'-' || !matches!(rest[6], b'T' | b't') {
        return None;
    }
    if rest[9] != b':' || rest[12] != b':' {
        return None;
    }
    let (mo, d, h, mi, se) = (num2(1)?, num2(4)?, num2(7)?, num2(10)?, num2(13)?);
    if !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(year, mo)
        || h > 23
        || mi > 59
        || se > 59
    {
        return None;
    }
    let mut j = 15;
    let mut nanos = 0u32;
    if rest.get(j) == Some(&b'.') {
        j += 1;
        let start = j;
        while j < rest.len() && rest[j].is_ascii_digit() {
            j += 1;
        }
        let n = j - start;
        if n == 0 || n > 9 {
            return None;
        }
        for &c in &rest[start..j] {
            nanos = nanos * 10 + u32::from(c - b'0');
        }
        nanos *= 10u32.pow((9 - n) as u32);
    }
    let offset: i64 = match rest.get(j)? {
        b'Z' | b'z' if j + 1 == rest.len() => 0,
        c @ (b'+' | b'-') if j + 6 == rest.len() && rest[j + 3] == b':' => {
            let (oh, om) = (num2(j + 1)?, num2(j + 4)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = i64::from(oh * 3600 + om * 60);
            if *c == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, mo, d);
    let secs = days
        .checked_mul(86_400)?
        .checked_add(i64::from(h * 3600 + mi * 60 + se))?
        .checked_sub(offset)?;
    Some(Inst { secs, nanos })
}

/// Why [`ratio`] refuses a ratio (the same words in every packer).
pub(crate) const ZERO_DENOMINATOR: &str = "ratio with a zero denominator";

/// A decoded ratio, refused (like the edn reader does) when its denominator is zero.
pub(crate) fn ratio(numer: Value, denom: Value) -> Result<Value, &'static str> {
    let zero = match &denom {
        Value::Int(i) => *i == 0,
        Value::BigInt(b) => b.as_str() == "0",
        Value::Float(f) => *f == 0.0,
        Value::BigDec(d) => d
            .as_str()
            .split(['e', 'E'])
            .next()
            .is_some_and(|m| m.bytes().all(|b| matches!(b, b'0' | b'.' | b'-' | b'+'))),
        _ => false,
    };
    if zero {
        return Err(ZERO_DENOMINATOR);
    }
    Ok(Value::Ratio(Box::new(Ratio { numer, denom })))
}

/// Builds a map from decoded entries in expected O(n); a repeated key keeps the last value.
pub(crate) fn map_from_entries(entries: Vec<(Value, Value)>) -> Map {
    Map::from_entries(entries)
}

/// Builds a set from decoded elements in expected O(n) (duplicates collapse).
pub(crate) fn set_from_vec(items: Vec<Value>) -> Set {
    Set::from_values(items)
}

/// FxHash-style hasher for the small per-message caches (keys are short strings).
#[cfg(any(feature = "transit", feature = "msgpack"))]
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

#[cfg(any(feature = "transit", feature = "msgpack"))]
impl std::hash::Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Build-hasher for [`FastHasher`].
#[cfg(any(feature = "transit", feature = "msgpack"))]
pub(crate) type FastBuild = std::hash::BuildHasherDefault<FastHasher>;

/// A text packer's envelope `[payload<sep>cb]`, values written by `value` (see
/// [`super::Packer::pack_envelope`]).
pub(crate) fn write_envelope(
    payload: &Value,
    cb: &Value,
    sep: char,
    value: impl Fn(&Value, &mut String) -> Result<(), super::PackError>,
) -> Result<String, super::PackError> {
    let mut out = String::with_capacity(128);
    out.push('[');
    value(payload, &mut out)?;
    out.push(sep);
    value(cb, &mut out)?;
    out.push(']');
    Ok(out)
}

/// A text packer's push batch `[[marker ev1 ev2 ...] <tail>`: `sep` between elements, each
/// event as `[` + `id(name)` + (`sep` + its data)? + `]`, values written by `value` (see
/// [`super::Packer::pack_batch`]).
pub(crate) fn write_batch(
    marker: Option<&Value>,
    events: &[std::sync::Arc<crate::event::Event>],
    sep: char,
    tail: &str,
    id: impl Fn(&str, &mut String),
    value: impl Fn(&Value, &mut String) -> Result<(), super::PackError>,
) -> Result<String, super::PackError> {
    let mut out = String::with_capacity(128);
    out.push_str("[[");
    let mut first = true;
    if let Some(m) = marker {
        value(m, &mut out)?;
        first = false;
    }
    for e in events {
        if !first {
            out.push(sep);
        }
        first = false;
        out.push('[');
        id(e.id().as_str(), &mut out);
        if e.has_data() {
            out.push(sep);
            value(e.data(), &mut out)?;
        }
        out.push(']');
    }
    out.push_str(tail);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        for ms in [
            0i64,
            1_704_164_645_678,
            -1,
            -86_400_001,
            253_402_300_799_999,
            4_102_444_800_000,
        ] {
            let inst = Inst::from_millis(ms);
            let mut s = String::new();
            push_rfc3339(&mut s, inst);
            assert_eq!(parse_rfc3339(&s), Some(inst), "{s}");
        }
        let mut s = String::new();
        push_rfc3339(&mut s, Inst::from_millis(1_704_164_645_678));
        assert_eq!(s, "2024-01-02T03:04:05.678Z");
        assert_eq!(
            parse_rfc3339("2024-01-02T03:04:05.678-00:00"),
            Some(Inst::from_millis(1_704_164_645_678))
        );
        assert_eq!(parse_rfc3339("2024-02-30T03:04:05Z"), None);
    }

    #[test]
    fn ints() {
        let mut cases = vec![0, -1, 42, i64::MIN, i64::MAX, i64::MIN + 1];
        // Every length, and the edges of each (9, 10, 99, 100, ...), both signs.
        let mut p: i64 = 1;
        for _ in 0..19 {
            cases.extend([p - 1, p, p + 1, -p, 1 - p, 7 * (p / 3) + 5]);
            p = p.saturating_mul(10);
        }
        cases.extend((-1000..1000).step_by(7));
        for n in cases {
            let mut s = String::from("x");
            push_i64(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }
}
