//! [`TransitPacker`]: transit-json, as Sente's `taoensso.sente.packers.transit` (text).

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sente_edn::{BigDec, BigInt, Inst, Keyword, Map, Symbol, Tagged, Value};

use super::json_lex::{Lexer, Number, push_escaped};
use super::util::{
    FastBuild, check_depth, check_len, check_size, map_from_entries, normalize_int, parse_integer,
    parse_rfc3339, push_f64, push_i64, push_rfc3339, ratio, set_from_vec, utf8,
};
use super::{PackError, Packed, Packer, UnpackError};
use crate::limits::Limits;

const NAME: &str = "transit";
const MAX_CACHE_ENTRIES: usize = 44 * 44;
const JSON_INT_MAX: i64 = (1 << 53) - 1;

/// [`TransitPacker`]: transit-json, as Sente's `taoensso.sente.packers.transit` (text).
///
/// | edn value | transit-json (non-verbose) | verbose |
/// |---|---|---|
/// | `nil`, booleans | `null`, `true` / `false` (as map keys `"~_"`, `"~?t"`) | same |
/// | integer | number when within ±(2^53 − 1), else `"~i123"` | same |
/// | bigint / bigdec | `"~n123"` / `"~f1.5"` | same |
/// | float | number (`"~zNaN"`, `"~zINF"`, `"~z-INF"`; map keys `"~d1.5"`) | same |
/// | string | itself; starting with `~`, `^` or `` ` `` gets a `~` in front | same |
/// | keyword / symbol / char | `"~:ns/name"` / `"~$ns/name"` / `"~ca"` | same |
/// | uuid | `"~u66d96ab4-…"` | same |
/// | inst | `"~m<epoch ms>"` (milliseconds only) | `"~t2024-01-02T03:04:05.678Z"` |
/// | bytes | `"~b<base64>"` | same |
/// | vector | array | array |
/// | list / set / ratio | `["~#list",[…]]` / `["~#set",[…]]` / `["~#ratio",["~n1","~n3"]]` | `{"~#set":[…]}` … |
/// | map, stringable keys | `["^ ",k,v,…]` | `{"k":v,…}` |
/// | map, other keys | `["~#cmap",[k,v,…]]` | `{"~#cmap":[k,v,…]}` |
/// | other tagged `#my/point x` | `["~#my/point",x]` | `{"~#my/point":x}` |
/// | top-level scalar | `["~#'",x]` | `{"~#'":x}` |
///
/// The non-verbose writer caches keywords, symbols, tags (`"~:…"`, `"~$…"`, `"~#…"`) and map
/// keys longer than 3 characters: the second occurrence is written as `"^0"`, `"^1"`, …
/// (base-44 codes, at most 1936 entries, then the cache restarts). The cache is per message.
/// The reader accepts both forms and mirrors the cache. Unknown scalar tags `"~x…"` read as
/// tagged values `#x "…"`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TransitPacker {
    verbose: bool,
}

impl TransitPacker {
    /// The `:json` packer (Sente's default transit flavour): caching, `["^ ", …]` maps.
    pub fn new() -> Self {
        TransitPacker { verbose: false }
    }

    /// The `:json-verbose` packer: no cache, JSON objects for maps and tagged values.
    pub fn verbose() -> Self {
        TransitPacker { verbose: true }
    }

    /// Whether this is the verbose flavour.
    pub fn is_verbose(&self) -> bool {
        self.verbose
    }

    /// Packs into a `String`.
    pub fn pack_string(&self, value: &Value) -> Result<String, PackError> {
        let mut w = Writer {
            out: String::with_capacity(128),
            verbose: self.verbose,
            cache: None,
            next: 0,
        };
        if is_scalar(value) {
            w.tagged_open("'");
            w.value(value, false)?;
            w.tagged_close();
        } else {
            w.value(value, false)?;
        }
        Ok(w.out)
    }
}

impl Packer for TransitPacker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn is_binary(&self) -> bool {
        false
    }

    fn pack(&self, value: &Value) -> Result<Packed, PackError> {
        self.pack_string(value).map(Packed::Text)
    }

    fn checks_utf8(&self) -> bool {
        // `unpack` reads nothing before `utf8` accepted the whole input.
        true
    }

    fn unpack(&self, input: &[u8], limits: &Limits) -> Result<Value, UnpackError> {
        check_size(input, limits)?;
        let text = utf8(input)?;
        let mut r = Reader {
            lx: Lexer::new(text, NAME),
            limits,
            cache: Vec::new(),
        };
        let v = r.value(0, false)?;
        if !r.lx.at_end() {
            return Err(r.lx.err("trailing characters"));
        }
        Ok(v)
    }
}

/// Values whose transit handler tag is one character (they can be map keys as strings).
fn is_scalar(v: &Value) -> bool {
    !matches!(
        v,
        Value::Vector(_)
            | Value::List(_)
            | Value::Map(_)
            | Value::Set(_)
            | Value::Ratio(_)
            | Value::Tagged(_)
    )
}

fn unsupported(what: impl Into<String>) -> PackError {
    PackError::Unsupported {
        packer: NAME,
        what: what.into(),
    }
}

/// Write-cache key: the emitted string is `prefix + body` and the prefix class makes that
/// decomposition unique, so no string is built for lookups.
#[derive(Hash, PartialEq, Eq)]
struct CacheKey<'v> {
    prefix: &'static str,
    body: Cow<'v, str>,
}

struct Writer<'v> {
    out: String,
    verbose: bool,
    cache: Option<HashMap<CacheKey<'v>, u32, FastBuild>>,
    next: u32,
}

fn push_code(out: &mut String, idx: u32) {
    out.push_str("\"^");
    let (hi, lo) = (idx / 44, idx % 44);
    if hi > 0 {
        out.push(char::from(48 + hi as u8));
    }
    out.push(char::from(48 + lo as u8));
    out.push('"');
}

impl<'v> Writer<'v> {
    /// Emits the transit string `prefix + body` (body JSON-escaped), through the cache when
    /// cacheable.
    fn emit(&mut self, prefix: &'static str, body: Cow<'v, str>, as_map_key: bool) {
        let cacheable = !self.verbose
            && prefix.len() + body.len() > 3
            && (as_map_key || matches!(prefix, "~:" | "~$" | "~#"));
        if cacheable {
            let cache = self.cache.get_or_insert_with(HashMap::default);
            let key = CacheKey { prefix, body };
            if let Some(&idx) = cache.get(&key) {
                push_code(&mut self.out, idx);
                return;
            }
            if self.next as usize == MAX_CACHE_ENTRIES {
                cache.clear();
                self.next = 0;
            }
            self.out.push('"');
            self.out.push_str(prefix);
            push_escaped(&mut self.out, &key.body);
            self.out.push('"');
            cache.insert(key, self.next);
            self.next += 1;
        } else {
            self.out.push('"');
            self.out.push_str(prefix);
            push_escaped(&mut self.out, &body);
            self.out.push('"');
        }
    }

    fn tagged_open(&mut self, tag: &'v str) {
        if self.verbose {
            self.out.push_str("{\"~#");
            push_escaped(&mut self.out, tag);
            self.out.push_str("\":");
        } else {
            self.out.push('[');
            self.emit("~#", Cow::Borrowed(tag), false);
            self.out.push(',');
        }
    }

    fn tagged_close(&mut self) {
        self.out.push(if self.verbose { '}' } else { ']' });
    }

    fn seq(&mut self, items: impl Iterator<Item = &'v Value>) -> Result<(), PackError> {
        self.out.push('[');
        for (i, v) in items.enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.value(v, false)?;
        }
        self.out.push(']');
        Ok(())
    }

    fn value(&mut self, v: &'v Value, key: bool) -> Result<(), PackError> {
        match v {
            Value::Nil if key => self.emit("~_", Cow::Borrowed(""), true),
            Value::Nil => self.out.push_str("null"),
            Value::Bool(b) if key => {
                self.emit("~?", Cow::Borrowed(if *b { "t" } else { "f" }), true);
            }
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                if key || !(-JSON_INT_MAX..=JSON_INT_MAX).contains(i) {
                    let mut s = String::new();
                    push_i64(&mut s, *i);
                    self.emit("~i", Cow::Owned(s), key);
                } else {
                    push_i64(&mut self.out, *i);
                }
            }
            Value::BigInt(b) => self.emit("~n", Cow::Borrowed(b.as_str()), key),
            Value::BigDec(d) => self.emit("~f", Cow::Borrowed(d.as_str()), key),
            Value::Float(f) => {
                if f.is_nan() {
                    self.emit("~z", Cow::Borrowed("NaN"), key);
                } else if f.is_infinite() {
                    self.emit(
                        "~z",
                        Cow::Borrowed(if *f > 0.0 { "INF" } else { "-INF" }),
                        key,
                    );
                } else if key {
                    let mut s = String::new();
                    push_f64(&mut s, *f);
                    self.emit("~d", Cow::Owned(s), key);
                } else {
                    push_f64(&mut self.out, *f);
                }
            }
            Value::Str(s) => {
                let prefix = if s.starts_with(['~', '^', '`']) {
                    "~"
                } else {
                    ""
                };
                self.emit(prefix, Cow::Borrowed(s), key);
            }
            Value::Char(c) => self.emit("~c", Cow::Owned(c.to_string()), key),
            Value::Keyword(k) => self.emit("~:", Cow::Borrowed(k.as_str()), key),
            Value::Symbol(s) => self.emit("~$", Cow::Borrowed(s.as_str()), key),
            Value::Uuid(u) => self.emit("~u", Cow::Owned(u.hyphenated().to_string()), key),
            Value::Inst(i) => {
                let mut s = String::new();
                if self.verbose {
                    push_rfc3339(&mut s, *i);
                    self.emit("~t", Cow::Owned(s), key);
                } else {
                    push_i64(&mut s, i.as_millis());
                    self.emit("~m", Cow::Owned(s), key);
                }
            }
            Value::Bytes(b) => self.emit("~b", Cow::Owned(B64.encode(b)), key),
            Value::Vector(items) => self.seq(items.iter())?,
            Value::List(items) => {
                self.tagged_open("list");
                self.seq(items.iter())?;
                self.tagged_close();
            }
            Value::Set(s) => {
                self.tagged_open("set");
                self.seq(s.iter())?;
                self.tagged_close();
            }
            Value::Ratio(r) => {
                self.tagged_open("ratio");
                self.out.push('[');
                self.ratio_part(&r.numer)?;
                self.out.push(',');
                self.ratio_part(&r.denom)?;
                self.out.push(']');
                self.tagged_close();
            }
            Value::Tagged(t) => {
                self.tagged_open(t.tag.as_str());
                self.value(&t.value, false)?;
                self.tagged_close();
            }
            Value::Map(m) => {
                if m.iter().all(|(k, _)| is_scalar(k)) {
                    if self.verbose {
                        self.out.push('{');
                        for (i, (k, v)) in m.iter().enumerate() {
                            if i > 0 {
                                self.out.push(',');
                            }
                            self.value(k, true)?;
                            self.out.push(':');
                            self.value(v, false)?;
                        }
                        self.out.push('}');
                    } else {
                        self.out.push_str("[\"^ \"");
                        for (k, v) in m.iter() {
                            self.out.push(',');
                            self.value(k, true)?;
                            self.out.push(',');
                            self.value(v, false)?;
                        }
                        self.out.push(']');
                    }
                } else {
                    self.tagged_open("cmap");
                    self.out.push('[');
                    for (i, (k, v)) in m.iter().enumerate() {
                        if i > 0 {
                            self.out.push(',');
                        }
                        self.value(k, false)?;
                        self.out.push(',');
                        self.value(v, false)?;
                    }
                    self.out.push(']');
                    self.tagged_close();
                }
            }
        }
        Ok(())
    }

    /// Ratio parts are written as bigints (`"~n1"`), like transit-clj.
    fn ratio_part(&mut self, v: &'v Value) -> Result<(), PackError> {
        match v {
            Value::Int(i) => {
                let mut s = String::new();
                push_i64(&mut s, *i);
                self.emit("~n", Cow::Owned(s), false);
                Ok(())
            }
            Value::BigInt(_) => self.value(v, false),
            _ => Err(unsupported("a ratio with non-integer parts")),
        }
    }
}

struct Reader<'a, 'l> {
    lx: Lexer<'a>,
    limits: &'l Limits,
    /// Read cache: the transit strings as they first appeared.
    cache: Vec<Cow<'a, str>>,
}

fn is_cacheable(s: &str, as_map_key: bool) -> bool {
    s.len() > 3
        && (as_map_key || (s.starts_with('~') && matches!(s.as_bytes()[1], b':' | b'$' | b'#')))
}

impl<'a> Reader<'a, '_> {
    /// Reads a JSON string and resolves it through the read cache.
    fn token(&mut self, as_map_key: bool) -> Result<Cow<'a, str>, UnpackError> {
        let at = self.lx.pos;
        let s = self.lx.string()?;
        if s.starts_with('^') && &*s != "^ " {
            let b = s.as_bytes();
            let digit = |c: u8| (48..48 + 44).contains(&c).then(|| usize::from(c - 48));
            let idx = match b.len() {
                2 => digit(b[1]),
                3 => digit(b[1]).zip(digit(b[2])).map(|(h, l)| h * 44 + l),
                _ => None,
            };
            return idx.and_then(|i| self.cache.get(i)).cloned().ok_or_else(|| {
                self.lx.pos = at;
                self.lx.err(format!("invalid cache reference {s:?}"))
            });
        }
        if is_cacheable(&s, as_map_key) {
            if self.cache.len() == MAX_CACHE_ENTRIES {
                self.cache.clear();
            }
            self.cache.push(s.clone());
        }
        Ok(s)
    }

    fn value(&mut self, depth: usize, as_map_key: bool) -> Result<Value, UnpackError> {
        match self.lx.peek() {
            Some(b'"') => {
                let at = self.lx.pos;
                let s = self.token(as_map_key)?;
                Self::decode(&s).map_err(|reason| {
                    self.lx.pos = at;
                    self.lx.err(reason)
                })
            }
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(b't') => self.lx.literal("true").map(|()| Value::Bool(true)),
            Some(b'f') => self.lx.literal("false").map(|()| Value::Bool(false)),
            Some(b'n') => self.lx.literal("null").map(|()| Value::Nil),
            Some(b'-' | b'0'..=b'9') => Ok(match self.lx.number()? {
                Number::Int(i) => Value::Int(i),
                Number::Float(f) => Value::Float(f),
                Number::BigInt(t) => BigInt::parse(t)
                    .map(Value::BigInt)
                    .ok_or_else(|| self.lx.err("invalid number"))?,
            }),
            Some(_) => Err(self.lx.err("unexpected character")),
            None => Err(self.lx.err("unexpected end of input")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, UnpackError> {
        self.lx.pos += 1;
        check_depth(depth, self.limits)?;
        let mut items = Vec::new();
        match self.lx.peek() {
            Some(b']') => {
                self.lx.pos += 1;
                return Ok(Value::Vector(items));
            }
            Some(b'"') => {
                let at = self.lx.pos;
                let s = self.token(false)?;
                if &*s == "^ " {
                    return self.map_as_array(depth);
                }
                if let Some(tag) = s.strip_prefix("~#") {
                    self.lx.expect(b',')?;
                    let rep = self.value(depth, false)?;
                    self.lx.expect(b']')?;
                    return apply_tag(tag, rep).map_err(|reason| {
                        self.lx.pos = at;
                        self.lx.err(reason)
                    });
                }
                let first = Self::decode(&s).map_err(|reason| {
                    self.lx.pos = at;
                    self.lx.err(reason)
                })?;
                items.push(first);
                if !self.lx.comma_or(b']')? {
                    return Ok(Value::Vector(items));
                }
            }
            _ => {}
        }
        loop {
            check_len(items.len() as u64 + 1, self.limits)?;
            items.push(self.value(depth, false)?);
            if !self.lx.comma_or(b']')? {
                return Ok(Value::Vector(items));
            }
        }
    }

    /// After `["^ "`: key/value pairs up to `]`.
    fn map_as_array(&mut self, depth: usize) -> Result<Value, UnpackError> {
        let mut entries = Vec::new();
        while self.lx.comma_or(b']')? {
            check_len(entries.len() as u64 + 1, self.limits)?;
            let k = self.value(depth, true)?;
            self.lx.expect(b',')?;
            let v = self.value(depth, false)?;
            entries.push((k, v));
        }
        Ok(Value::Map(map_from_entries(entries)))
    }

    /// Verbose maps `{"k": v}` and verbose tagged values `{"~#tag": rep}`.
    fn object(&mut self, depth: usize) -> Result<Value, UnpackError> {
        self.lx.pos += 1;
        check_depth(depth, self.limits)?;
        if self.lx.peek() == Some(b'}') {
            self.lx.pos += 1;
            return Ok(Value::Map(Map::new()));
        }
        let mut entries = Vec::new();
        let mut first = true;
        loop {
            let at = self.lx.pos;
            let s = self.token(true)?;
            self.lx.expect(b':')?;
            if first {
                if let Some(tag) = s.strip_prefix("~#") {
                    let rep = self.value(depth, false)?;
                    self.lx.expect(b'}')?;
                    return apply_tag(tag, rep).map_err(|reason| {
                        self.lx.pos = at;
                        self.lx.err(reason)
                    });
                }
            }
            first = false;
            check_len(entries.len() as u64 + 1, self.limits)?;
            let k = Self::decode(&s).map_err(|reason| {
                self.lx.pos = at;
                self.lx.err(reason)
            })?;
            let v = self.value(depth, false)?;
            entries.push((k, v));
            if !self.lx.comma_or(b'}')? {
                return Ok(Value::Map(map_from_entries(entries)));
            }
        }
    }

    /// A transit string (already resolved through the cache) as a value.
    fn decode(s: &str) -> Result<Value, String> {
        let Some(rest) = s.strip_prefix('~') else {
            return Ok(Value::Str(s.to_owned()));
        };
        let Some(tag) = rest.chars().next() else {
            return Err("lone `~`".to_owned());
        };
        let rep = &rest[tag.len_utf8()..];
        let bad = |what: &str| format!("invalid ~{tag} value: {what}");
        Ok(match tag {
            '~' | '^' | '`' => Value::Str(rest.to_owned()),
            ':' => Value::Keyword(Keyword::new(rep)),
            '$' => Value::Symbol(Symbol::new(rep)),
            '_' => Value::Nil,
            '?' => match rep {
                "t" => Value::Bool(true),
                "f" => Value::Bool(false),
                _ => return Err(bad("not t or f")),
            },
            'i' => parse_integer(rep).ok_or_else(|| bad("not an integer"))?,
            'n' => Value::BigInt(BigInt::parse(rep).ok_or_else(|| bad("not an integer"))?),
            'f' => Value::BigDec(BigDec::parse(rep).ok_or_else(|| bad("not a decimal"))?),
            'd' => Value::Float(rep.parse().map_err(|_| bad("not a number"))?),
            'z' => Value::Float(match rep {
                "NaN" => f64::NAN,
                "INF" => f64::INFINITY,
                "-INF" => f64::NEG_INFINITY,
                _ => return Err(bad("not NaN/INF/-INF")),
            }),
            'c' => {
                let mut it = rep.chars();
                match (it.next(), it.next()) {
                    (Some(c), None) => Value::Char(c),
                    _ => return Err(bad("expected one character")),
                }
            }
            'u' => Value::Uuid(uuid::Uuid::try_parse(rep).map_err(|_| bad("not a UUID"))?),
            'm' => Value::Inst(Inst::from_millis(
                rep.parse().map_err(|_| bad("not milliseconds"))?,
            )),
            't' => Value::Inst(parse_rfc3339(rep).ok_or_else(|| bad("not an RFC 3339 instant"))?),
            'b' => Value::Bytes(B64.decode(rep).map_err(|_| bad("not base64"))?),
            '#' => return Err("a tag outside a tagged value".to_owned()),
            _ => Value::Tagged(Box::new(Tagged {
                tag: Symbol::new(tag.to_string()),
                value: Value::Str(rep.to_owned()),
            })),
        })
    }
}

fn apply_tag(tag: &str, rep: Value) -> Result<Value, String> {
    let items = |rep: Value| match rep {
        Value::Vector(items) => Ok(items),
        _ => Err(format!("~#{tag} expects an array")),
    };
    Ok(match tag {
        "'" => rep,
        "set" => Value::Set(set_from_vec(items(rep)?)),
        "list" => Value::List(items(rep)?),
        "cmap" => {
            let flat = items(rep)?;
            if flat.len() % 2 != 0 {
                return Err("~#cmap expects an even number of elements".to_owned());
            }
            let mut entries = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                entries.push((k, v));
            }
            Value::Map(map_from_entries(entries))
        }
        "ratio" => {
            let [n, d]: [Value; 2] = items(rep)?
                .try_into()
                .map_err(|_| "~#ratio expects [n, d]".to_owned())?;
            ratio(normalize_int(n), normalize_int(d))?
        }
        "" => return Err("empty tag".to_owned()),
        _ => Value::Tagged(Box::new(Tagged {
            tag: Symbol::new(tag),
            value: rep,
        })),
    })
}
