//! [`MsgpackPacker`]: Sente's own MessagePack dialect (binary), wire-compatible with

use std::collections::HashMap;

use sente_edn::{BigInt, Inst, Keyword, Symbol, Tagged, Value};

use super::util::{
    FastBuild, check_depth, check_len, check_size, malformed, map_from_entries, ratio, set_from_vec,
};
use super::{PackError, Packed, Packer, UnpackError};
use crate::limits::Limits;

const NAME: &str = "msgpack";
const CACHE_MAX: usize = 256;

/// [`MsgpackPacker`]: Sente's own MessagePack dialect (binary), wire-compatible with
/// `taoensso.sente.packers.msgpack`.
///
/// | edn value | msgpack |
/// |---|---|
/// | `nil`, booleans | `c0`, `c2` / `c3` |
/// | integer | smallest form: fixint, `cc`/`cd`/`ce`, `d3` above u32; negatives fixint, `d0`..`d3` |
/// | bigint | `cf` u64 when in `(i64::MAX, u64::MAX]`, the int forms when it fits `i64`; else unsupported |
/// | float | `cb` f64 (`ca` f32 is accepted on input) |
/// | bigdec | `cb` f64 of its value, like Sente (lossy: decodes to a float) |
/// | string | `a0`..`bf` / `d9` / `da` / `db` |
/// | bytes | `c4` / `c5` / `c6` |
/// | vector, list | array `90`..`9f` / `dc` / `dd` (decode to vectors) |
/// | map | map `80`..`8f` / `de` / `df`, with the per-message map-key cache (ext 8) |
/// | keyword / symbol / char | ext 0 / 1 / 2, UTF-8 text (keyword without `:`) |
/// | ratio | ext 3: numerator then denominator |
/// | set | ext 4: an array |
/// | uuid | ext 9: the 36-char text |
/// | inst | ext −1, 12-byte form (u32 nanos, i64 seconds); the 4- and 8-byte forms are accepted |
/// | — | ext 5 / 6 / 7 (int32 / float32 / float64 arrays, big-endian) decode to vectors |
/// | tagged `#sente/ext-<n>` of bytes | ext `n` with those bytes; any **unknown ext type** decodes to this |
///
/// Map-key cache: while packing, each keyword or string *map key* gets the next index (up to 256
/// entries) on first sight and is written as `d4 08 <idx>` afterwards; traversal is depth-first,
/// key then value. The decoder mirrors it. Decoding reads the first value and ignores trailing
/// bytes (CLJS writers may pad with zeros).
#[derive(Clone, Copy, Debug, Default)]
pub struct MsgpackPacker;

impl MsgpackPacker {
    /// The packer.
    pub fn new() -> Self {
        MsgpackPacker
    }

    /// Packs into a byte vector.
    pub fn pack_bytes(value: &Value) -> Result<Vec<u8>, PackError> {
        let mut w = Writer {
            out: Vec::with_capacity(128),
            cache: None,
        };
        w.value(value)?;
        Ok(w.out)
    }
}

impl Packer for MsgpackPacker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn is_binary(&self) -> bool {
        true
    }

    fn pack(&self, value: &Value) -> Result<Packed, PackError> {
        Self::pack_bytes(value).map(Packed::Binary)
    }

    fn unpack(&self, input: &[u8], limits: &Limits) -> Result<Value, UnpackError> {
        check_size(input, limits)?;
        let mut r = Reader {
            buf: input,
            pos: 0,
            end: input.len(),
            limits,
            cache: Vec::new(),
        };
        r.value(0)
    }
}

fn unsupported(what: impl Into<String>) -> PackError {
    PackError::Unsupported {
        packer: NAME,
        what: what.into(),
    }
}

struct Writer<'v> {
    out: Vec<u8>,
    /// (is keyword, text) -> index.
    cache: Option<HashMap<(bool, &'v str), u8, FastBuild>>,
}

impl<'v> Writer<'v> {
    fn int(&mut self, n: i64) {
        let o = &mut self.out;
        if n >= 0 {
            if n <= 127 {
                o.push(n as u8);
            } else if n <= 0xff {
                o.extend_from_slice(&[0xcc, n as u8]);
            } else if n <= 0xffff {
                o.push(0xcd);
                o.extend_from_slice(&(n as u16).to_be_bytes());
            } else if n <= 0xffff_ffff {
                o.push(0xce);
                o.extend_from_slice(&(n as u32).to_be_bytes());
            } else {
                o.push(0xd3);
                o.extend_from_slice(&n.to_be_bytes());
            }
        } else if n >= -32 {
            o.push(n as u8);
        } else if n >= -0x80 {
            o.extend_from_slice(&[0xd0, n as u8]);
        } else if n >= -0x8000 {
            o.push(0xd1);
            o.extend_from_slice(&(n as i16).to_be_bytes());
        } else if n >= -0x8000_0000 {
            o.push(0xd2);
            o.extend_from_slice(&(n as i32).to_be_bytes());
        } else {
            o.push(0xd3);
            o.extend_from_slice(&n.to_be_bytes());
        }
    }

    fn len_header(
        &mut self,
        len: usize,
        fix: u8,
        fix_max: usize,
        m8: Option<u8>,
        m16: u8,
        m32: u8,
    ) -> Result<(), PackError> {
        let o = &mut self.out;
        if len <= fix_max {
            o.push(fix | len as u8);
        } else if let (Some(m8), true) = (m8, len <= 0xff) {
            o.extend_from_slice(&[m8, len as u8]);
        } else if len <= 0xffff {
            o.push(m16);
            o.extend_from_slice(&(len as u16).to_be_bytes());
        } else if let Ok(l) = u32::try_from(len) {
            o.push(m32);
            o.extend_from_slice(&l.to_be_bytes());
        } else {
            return Err(unsupported("a collection or string over 2^32 - 1"));
        }
        Ok(())
    }

    fn str(&mut self, s: &str) -> Result<(), PackError> {
        self.len_header(s.len(), 0xa0, 31, Some(0xd9), 0xda, 0xdb)?;
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    /// Ext header for content of known length.
    fn ext_header(&mut self, len: usize, ty: i8) -> Result<(), PackError> {
        let o = &mut self.out;
        match len {
            1 => o.push(0xd4),
            2 => o.push(0xd5),
            4 => o.push(0xd6),
            8 => o.push(0xd7),
            16 => o.push(0xd8),
            _ if len <= 0xff => o.extend_from_slice(&[0xc7, len as u8]),
            _ if len <= 0xffff => {
                o.push(0xc8);
                o.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                let l =
                    u32::try_from(len).map_err(|_| unsupported("an ext over 2^32 - 1 bytes"))?;
                o.push(0xc9);
                o.extend_from_slice(&l.to_be_bytes());
            }
        }
        o.push(ty as u8);
        Ok(())
    }

    fn ext_bytes(&mut self, ty: i8, content: &[u8]) -> Result<(), PackError> {
        self.ext_header(content.len(), ty)?;
        self.out.extend_from_slice(content);
        Ok(())
    }

    /// Writes an ext whose content is produced by `body`: reserves the largest header, writes the
    /// content, then writes the real header and moves the content down.
    fn ext_with(
        &mut self,
        ty: i8,
        body: impl FnOnce(&mut Self) -> Result<(), PackError>,
    ) -> Result<(), PackError> {
        const RESERVED: usize = 6;
        let start = self.out.len();
        self.out.extend_from_slice(&[0; RESERVED]);
        body(self)?;
        let len = self.out.len() - start - RESERVED;
        let mut hdr = Writer {
            out: Vec::with_capacity(RESERVED),
            cache: None,
        };
        hdr.ext_header(len, ty)?;
        let h = hdr.out.len();
        self.out[start..start + h].copy_from_slice(&hdr.out);
        if h < RESERVED {
            self.out.copy_within(start + RESERVED.., start + h);
            self.out.truncate(start + h + len);
        }
        Ok(())
    }

    fn seq(&mut self, len: usize, items: impl Iterator<Item = &'v Value>) -> Result<(), PackError> {
        self.len_header(len, 0x90, 15, None, 0xdc, 0xdd)?;
        for v in items {
            self.value(v)?;
        }
        Ok(())
    }

    fn map_key(&mut self, k: &'v Value) -> Result<(), PackError> {
        let key = match k {
            Value::Keyword(kw) => (true, kw.as_str()),
            Value::Str(s) => (false, s.as_str()),
            _ => return self.value(k),
        };
        let cache = self.cache.get_or_insert_with(HashMap::default);
        if let Some(&idx) = cache.get(&key) {
            self.out.extend_from_slice(&[0xd4, 0x08, idx]);
            return Ok(());
        }
        if cache.len() < CACHE_MAX {
            let idx = cache.len() as u8;
            cache.insert(key, idx);
        }
        self.value(k)
    }

    fn value(&mut self, v: &'v Value) -> Result<(), PackError> {
        match v {
            Value::Nil => self.out.push(0xc0),
            Value::Bool(b) => self.out.push(if *b { 0xc3 } else { 0xc2 }),
            Value::Int(i) => self.int(*i),
            Value::BigInt(b) => {
                if let Ok(i) = b.as_str().parse::<i64>() {
                    self.int(i);
                } else if let Ok(u) = b.as_str().parse::<u64>() {
                    self.out.push(0xcf);
                    self.out.extend_from_slice(&u.to_be_bytes());
                } else {
                    return Err(unsupported(format!(
                        "bigint {}N outside the u64/i64 range",
                        b.as_str()
                    )));
                }
            }
            Value::Float(f) => {
                self.out.push(0xcb);
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::BigDec(d) => {
                let f: f64 = d
                    .as_str()
                    .parse()
                    .map_err(|_| unsupported(format!("bigdec {}M", d.as_str())))?;
                self.out.push(0xcb);
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Ratio(r) => {
                let (n, d) = (&r.numer, &r.denom);
                self.ext_with(3, |w| {
                    w.value(n)?;
                    w.value(d)
                })?;
            }
            Value::Str(s) => self.str(s)?,
            Value::Char(c) => {
                let mut buf = [0u8; 4];
                self.ext_bytes(2, c.encode_utf8(&mut buf).as_bytes())?;
            }
            Value::Keyword(k) => self.ext_bytes(0, k.as_str().as_bytes())?,
            Value::Symbol(s) => self.ext_bytes(1, s.as_str().as_bytes())?,
            Value::Vector(items) | Value::List(items) => self.seq(items.len(), items.iter())?,
            Value::Map(m) => {
                self.len_header(m.len(), 0x80, 15, None, 0xde, 0xdf)?;
                for (k, v) in m.iter() {
                    self.map_key(k)?;
                    self.value(v)?;
                }
            }
            Value::Set(s) => self.ext_with(4, |w| w.seq(s.len(), s.iter()))?,
            Value::Inst(i) => {
                self.out.extend_from_slice(&[0xc7, 12, 0xff]);
                self.out.extend_from_slice(&i.nanos.to_be_bytes());
                self.out.extend_from_slice(&i.secs.to_be_bytes());
            }
            Value::Uuid(u) => {
                let mut buf = uuid::Uuid::encode_buffer();
                self.ext_bytes(9, u.hyphenated().encode_lower(&mut buf).as_bytes())?;
            }
            Value::Bytes(b) => {
                if b.len() <= 0xff {
                    self.out.extend_from_slice(&[0xc4, b.len() as u8]);
                } else {
                    self.len_header(b.len(), 0, 0, None, 0xc5, 0xc6)?;
                }
                self.out.extend_from_slice(b);
            }
            Value::Tagged(t) => {
                let ty = t
                    .tag
                    .as_str()
                    .strip_prefix("sente/ext-")
                    .and_then(|n| n.parse::<i8>().ok())
                    .filter(|_| matches!(t.value, Value::Bytes(_)));
                match (ty, &t.value) {
                    (Some(ty), Value::Bytes(b)) => self.ext_bytes(ty, b)?,
                    _ => return Err(unsupported(format!("tagged value #{}", t.tag.as_str()))),
                }
            }
        }
        Ok(())
    }
}

struct Reader<'a, 'l> {
    buf: &'a [u8],
    pos: usize,
    /// End of the current region (the input, or an ext's content).
    end: usize,
    limits: &'l Limits,
    cache: Vec<Value>,
}

impl<'a> Reader<'a, '_> {
    fn err(&self, reason: impl Into<String>) -> UnpackError {
        malformed(NAME, self.pos, reason)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], UnpackError> {
        if n > self.end - self.pos {
            return Err(self.err(format!("needs {n} bytes, {} left", self.end - self.pos)));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, UnpackError> {
        Ok(self.take(1)?[0])
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N], UnpackError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u16(&mut self) -> Result<usize, UnpackError> {
        Ok(usize::from(u16::from_be_bytes(self.arr()?)))
    }

    fn u32(&mut self) -> Result<usize, UnpackError> {
        Ok(u32::from_be_bytes(self.arr()?) as usize)
    }

    fn utf8(&mut self, n: usize) -> Result<&'a str, UnpackError> {
        let at = self.pos;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map_err(|e| malformed(NAME, at + e.valid_up_to(), "invalid UTF-8 in string"))
    }

    /// Checks a declared element count against the limits and the bytes left (each element
    /// takes at least `min_bytes_each`).
    fn check_count(&self, n: usize, min_bytes_each: usize) -> Result<usize, UnpackError> {
        let n = check_len(n as u64, self.limits)?;
        if n.saturating_mul(min_bytes_each) > self.end - self.pos {
            return Err(self.err(format!(
                "declared {n} elements, only {} bytes left",
                self.end - self.pos
            )));
        }
        Ok(n)
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Vec<Value>, UnpackError> {
        check_depth(depth + 1, self.limits)?;
        let n = self.check_count(n, 1)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(items)
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, UnpackError> {
        check_depth(depth + 1, self.limits)?;
        let n = self.check_count(n, 2)?;
        let mut map = Vec::with_capacity(n);
        for _ in 0..n {
            let key = if self.end - self.pos >= 3
                && self.buf[self.pos] == 0xd4
                && self.buf[self.pos + 1] == 8
            {
                self.pos += 2;
                self.cached()?
            } else {
                let k = self.value(depth + 1)?;
                if matches!(k, Value::Keyword(_) | Value::Str(_)) && self.cache.len() < CACHE_MAX {
                    self.cache.push(k.clone());
                }
                k
            };
            let val = self.value(depth + 1)?;
            map.push((key, val));
        }
        Ok(Value::Map(map_from_entries(map)))
    }

    fn cached(&mut self) -> Result<Value, UnpackError> {
        let at = self.pos;
        let idx = usize::from(self.u8()?);
        self.cache
            .get(idx)
            .cloned()
            .ok_or_else(|| malformed(NAME, at, format!("map-key cache has no entry {idx}")))
    }

    fn value(&mut self, depth: usize) -> Result<Value, UnpackError> {
        let at = self.pos;
        let b = self.u8()?;
        Ok(match b {
            0x00..=0x7f => Value::Int(i64::from(b)),
            0x80..=0x8f => self.map(usize::from(b & 0x0f), depth)?,
            0x90..=0x9f => Value::Vector(self.array(usize::from(b & 0x0f), depth)?),
            0xa0..=0xbf => Value::Str(self.utf8(usize::from(b & 0x1f))?.to_owned()),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => {
                let n = usize::from(self.u8()?);
                Value::Bytes(self.take(n)?.to_vec())
            }
            0xc5 => {
                let n = self.u16()?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            0xc6 => {
                let n = self.u32()?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            0xc7 => {
                let n = usize::from(self.u8()?);
                self.ext(n, depth)?
            }
            0xc8 => {
                let n = self.u16()?;
                self.ext(n, depth)?
            }
            0xc9 => {
                let n = self.u32()?;
                self.ext(n, depth)?
            }
            0xca => Value::Float(f64::from(f32::from_be_bytes(self.arr()?))),
            0xcb => Value::Float(f64::from_be_bytes(self.arr()?)),
            0xcc => Value::Int(i64::from(self.u8()?)),
            0xcd => Value::Int(self.u16()? as i64),
            0xce => Value::Int(self.u32()? as i64),
            0xcf => {
                let u = u64::from_be_bytes(self.arr()?);
                match i64::try_from(u) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::BigInt(
                        BigInt::parse(&u.to_string()).unwrap_or_else(|| unreachable!()),
                    ),
                }
            }
            0xd0 => Value::Int(i64::from(i8::from_be_bytes(self.arr()?))),
            0xd1 => Value::Int(i64::from(i16::from_be_bytes(self.arr()?))),
            0xd2 => Value::Int(i64::from(i32::from_be_bytes(self.arr()?))),
            0xd3 => Value::Int(i64::from_be_bytes(self.arr()?)),
            0xd4 => self.ext(1, depth)?,
            0xd5 => self.ext(2, depth)?,
            0xd6 => self.ext(4, depth)?,
            0xd7 => self.ext(8, depth)?,
            0xd8 => self.ext(16, depth)?,
            0xd9 => {
                let n = usize::from(self.u8()?);
                Value::Str(self.utf8(n)?.to_owned())
            }
            0xda => {
                let n = self.u16()?;
                Value::Str(self.utf8(n)?.to_owned())
            }
            0xdb => {
                let n = self.u32()?;
                Value::Str(self.utf8(n)?.to_owned())
            }
            0xdc => {
                let n = self.u16()?;
                Value::Vector(self.array(n, depth)?)
            }
            0xdd => {
                let n = self.u32()?;
                Value::Vector(self.array(n, depth)?)
            }
            0xde => {
                let n = self.u16()?;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.u32()?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(i64::from(b as i8)),
            0xc1 => return Err(malformed(NAME, at, "invalid byte 0xc1")),
        })
    }

    /// Reads an ext of `len` content bytes (the type byte is next).
    fn ext(&mut self, len: usize, depth: usize) -> Result<Value, UnpackError> {
        let ty = self.u8()? as i8;
        let start = self.pos;
        if len > self.end - self.pos {
            return Err(self.err(format!(
                "ext of {len} bytes, only {} left",
                self.end - self.pos
            )));
        }
        let content_end = start + len;
        let content = &self.buf[start..content_end];
        let text = || {
            std::str::from_utf8(content)
                .map_err(|e| malformed(NAME, start + e.valid_up_to(), "invalid UTF-8 in ext"))
        };
        let v = match ty {
            0 => Value::Keyword(Keyword::new(text()?)),
            1 => Value::Symbol(Symbol::new(text()?)),
            2 => Value::Char(
                text()?
                    .chars()
                    .next()
                    .ok_or_else(|| malformed(NAME, start, "empty char"))?,
            ),
            9 => {
                let s = text()?;
                Value::Uuid(
                    uuid::Uuid::try_parse(s).map_err(|_| malformed(NAME, start, "invalid UUID"))?,
                )
            }
            -1 => Value::Inst(match len {
                4 => Inst {
                    secs: i64::from(u32::from_be_bytes(content.try_into().unwrap_or_default())),
                    nanos: 0,
                },
                8 => {
                    let x = u64::from_be_bytes(content.try_into().unwrap_or_default());
                    let nanos = (x >> 34) as u32;
                    if nanos >= 1_000_000_000 {
                        return Err(malformed(NAME, start, "timestamp nanoseconds out of range"));
                    }
                    Inst {
                        secs: (x & 0x3_ffff_ffff) as i64,
                        nanos,
                    }
                }
                12 => {
                    let nanos =
                        u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
                    if nanos >= 1_000_000_000 {
                        return Err(malformed(NAME, start, "timestamp nanoseconds out of range"));
                    }
                    let mut s = [0u8; 8];
                    s.copy_from_slice(&content[4..12]);
                    Inst {
                        secs: i64::from_be_bytes(s),
                        nanos,
                    }
                }
                _ => return Err(malformed(NAME, start, format!("timestamp of {len} bytes"))),
            }),
            5..=7 => {
                let w = if ty == 7 { 8 } else { 4 };
                if len % w != 0 {
                    return Err(malformed(
                        NAME,
                        start,
                        "typed array length not a multiple of its element",
                    ));
                }
                check_depth(depth + 1, self.limits)?;
                check_len((len / w) as u64, self.limits)?;
                let items = content
                    .chunks_exact(w)
                    .map(|c| match ty {
                        5 => Value::Int(i64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]]))),
                        6 => Value::Float(f64::from(f32::from_be_bytes([c[0], c[1], c[2], c[3]]))),
                        _ => Value::Float(f64::from_be_bytes([
                            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
                        ])),
                    })
                    .collect();
                Value::Vector(items)
            }
            3 | 4 | 8 => {
                // Structured content: decode in place within the ext's bounds.
                let outer_end = self.end;
                self.end = content_end;
                let v = match ty {
                    3 => {
                        check_depth(depth + 1, self.limits)?;
                        let numer = self.value(depth + 1)?;
                        let denom = self.value(depth + 1)?;
                        ratio(numer, denom).map_err(|why| malformed(NAME, start, why))?
                    }
                    4 => {
                        let b = self.u8()?;
                        let n = match b {
                            0x90..=0x9f => usize::from(b & 0x0f),
                            0xdc => self.u16()?,
                            0xdd => self.u32()?,
                            _ => {
                                return Err(malformed(
                                    NAME,
                                    self.pos - 1,
                                    "set ext must hold an array",
                                ));
                            }
                        };
                        Value::Set(set_from_vec(self.array(n, depth)?))
                    }
                    _ => self.cached()?,
                };
                if self.pos != content_end {
                    return Err(self.err("ext content has extra bytes"));
                }
                self.end = outer_end;
                v
            }
            _ => Value::Tagged(Box::new(Tagged {
                tag: Symbol::new(format!("sente/ext-{ty}")),
                value: Value::Bytes(content.to_vec()),
            })),
        };
        self.pos = content_end;
        Ok(v)
    }
}
