//! `#inst` timestamps: RFC 3339 parsing (as `clojure.instant` accepts it) and printing (as
//! Clojure prints `java.util.Date` / `java.sql.Timestamp`).

use std::fmt::{self, Write};

use crate::value::Inst;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Whether `y` is a leap year of the proleptic Gregorian calendar.
pub fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// The number of days of month `m` (1-12) of year `y`.
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Writes the quoted timestamp text (without `#inst `), e.g. `"2024-01-02T03:04:05.678-00:00"`.
pub(crate) fn write_inst<W: Write>(inst: &Inst, out: &mut W) -> fmt::Result {
    out.write_char('"')?;
    write_rfc3339(inst, out)?;
    out.write_char('"')
}

/// Writes `2024-01-02T03:04:05.678-00:00`; 9 fraction digits when not a whole millisecond.
pub(crate) fn write_rfc3339<W: Write>(inst: &Inst, out: &mut W) -> fmt::Result {
    let days = inst.secs.div_euclid(86_400);
    let sod = inst.secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        write!(out, "{y:04}")?;
    } else if y < 0 {
        write!(out, "-{:04}", y.unsigned_abs())?;
    } else {
        write!(out, "{y}")?;
    }
    write!(
        out,
        "-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )?;
    let nanos = inst.nanos.min(999_999_999);
    if nanos % 1_000_000 == 0 {
        write!(out, ".{:03}", nanos / 1_000_000)?;
    } else {
        write!(out, ".{nanos:09}")?;
    }
    out.write_str("-00:00")
}

/// The RFC 3339 text of an instant (as printed inside `#inst "..."`).
pub(crate) fn to_rfc3339(inst: &Inst) -> String {
    let mut s = String::with_capacity(29);
    let _ = write_rfc3339(inst, &mut s);
    s
}

/// A tiny cursor over ASCII digits.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cur<'_> {
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Exactly `n` digits.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let s = self.b.get(self.i..self.i + n)?;
        let mut v = 0u32;
        for &c in s {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        self.i += n;
        Some(v)
    }

    fn at_end(&self) -> bool {
        self.i == self.b.len()
    }
}

/// Parses an `#inst` string the way `clojure.instant/read-instant-date` does:
/// `yyyy[-MM[-dd[THH[:mm[:ss[.fraction]]]]]][Z|±HH:mm]`. A leading `-` and years of more than 4
/// digits are also accepted (so everything this crate prints reads back).
pub(crate) fn parse_inst(text: &str) -> Result<Inst, &'static str> {
    let mut c = Cur {
        b: text.as_bytes(),
        i: 0,
    };
    let negative = c.eat(b'-');
    let start = c.i;
    while c.b.get(c.i).is_some_and(u8::is_ascii_digit) && c.i - start < 10 {
        c.i += 1;
    }
    let ylen = c.i - start;
    if !(4..=9).contains(&ylen) || (ylen > 4 && !negative && text.as_bytes()[start] == b'0') {
        return Err("year must have 4 digits");
    }
    let mut year: i64 = text[start..c.i].parse().map_err(|_| "bad year")?;
    if negative {
        year = -year;
    }
    let (mut month, mut day, mut hour, mut minute, mut second, mut nanos) = (1, 1, 0, 0, 0, 0);
    'fields: {
        if !c.eat(b'-') {
            break 'fields;
        }
        month = c.digits(2).ok_or("bad month")?;
        if !c.eat(b'-') {
            break 'fields;
        }
        day = c.digits(2).ok_or("bad day")?;
        if !c.eat(b'T') {
            break 'fields;
        }
        hour = c.digits(2).ok_or("bad hour")?;
        if !c.eat(b':') {
            break 'fields;
        }
        minute = c.digits(2).ok_or("bad minute")?;
        if !c.eat(b':') {
            break 'fields;
        }
        second = c.digits(2).ok_or("bad second")?;
        if !c.eat(b'.') {
            break 'fields;
        }
        let fstart = c.i;
        while c.b.get(c.i).is_some_and(u8::is_ascii_digit) {
            if c.i - fstart < 9 {
                nanos = nanos * 10 + u32::from(c.b[c.i] - b'0');
            }
            c.i += 1;
        }
        let n = c.i - fstart;
        if n == 0 {
            return Err("empty fraction");
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let mut offset_secs: i64 = 0;
    if c.eat(b'Z') {
    } else if let Some(&sign @ (b'+' | b'-')) = c.b.get(c.i) {
        c.i += 1;
        let oh = c.digits(2).ok_or("bad offset hours")?;
        if !c.eat(b':') {
            return Err("bad offset");
        }
        let om = c.digits(2).ok_or("bad offset minutes")?;
        if oh > 23 || om > 59 {
            return Err("offset out of range");
        }
        offset_secs = i64::from(oh * 3600 + om * 60);
        if sign == b'-' {
            offset_secs = -offset_secs;
        }
    }
    if !c.at_end() {
        return Err("unexpected trailing characters");
    }
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    if hour > 23 {
        return Err("hour out of range");
    }
    if minute > 59 {
        return Err("minute out of range");
    }
    if second > if minute == 59 { 60 } else { 59 } {
        return Err("second out of range");
    }
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_secs;
    Ok(Inst { secs, nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000i64, -1, 0, 1, 19_724, 2_932_896, 3_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 1, 2), 19_724);
    }

    #[test]
    fn parse_and_print() {
        let i = parse_inst("2024-01-02T03:04:05.678-00:00").unwrap();
        assert_eq!(to_rfc3339(&i), "2024-01-02T03:04:05.678-00:00");
        let i = parse_inst("2024-01-02T05:04:05.678+02:00").unwrap();
        assert_eq!(to_rfc3339(&i), "2024-01-02T03:04:05.678-00:00");
        assert_eq!(
            to_rfc3339(&parse_inst("2024").unwrap()),
            "2024-01-01T00:00:00.000-00:00"
        );
        assert_eq!(
            to_rfc3339(&parse_inst("1969-12-31T23:59:59.000000001Z").unwrap()),
            "1969-12-31T23:59:59.000000001-00:00"
        );
        assert!(parse_inst("2023-02-29").is_err());
        assert!(parse_inst("2024-01-02T03:04:05.").is_err());
        assert!(parse_inst("24").is_err());
    }
}
