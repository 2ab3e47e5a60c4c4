//! [`JsonPacker`]: sente-rs's native JSON format for JavaScript and Rust clients (text).

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sente_edn::{BigDec, BigInt, Keyword, Map, Symbol, Tagged, Value};

use super::json_lex::{Lexer, Number, push_string};
use super::util::{
    check_depth, check_len, check_size, map_from_entries, parse_rfc3339, push_f64, push_i64,
    push_rfc3339, ratio, set_from_vec, utf8, write_batch, write_envelope,
};
use super::{PackError, Packed, Packer, UnpackError};
use crate::event::Event;
use crate::limits::Limits;

const NAME: &str = "json";

/// [`JsonPacker`]: sente-rs's native JSON format for JavaScript and Rust clients (text).
///
/// Plain JSON that a browser can `JSON.parse`, with a few reserved shapes for edn types. Output
/// has no whitespace.
///
/// | edn value | JSON | decodes back to |
/// |---|---|---|
/// | `nil` | `null` | `nil` |
/// | `true` / `false` | `true` / `false` | same |
/// | integer (`i64`) | integer number `42` | `Int` (integers beyond `i64` decode to `BigInt`) |
/// | float (finite) | number with a fraction or exponent: `1.0`, `0.5`, `1e300` | `Float` (non-finite floats cannot be packed) |
/// | bigint `123N` | `{"~#bigint":"123"}` | `BigInt` |
/// | bigdec `1.5M` | `{"~#bigdec":"1.5"}` | `BigDec` |
/// | ratio `1/3` | `{"~#ratio":[1,3]}` | `Ratio` (a zero denominator is an error, as in edn) |
/// | keyword `:ns/name` | `":ns/name"` | keyword |
/// | string `"s"` | `"s"`; a string starting with `:` or `~` gets one extra `~` (`":x"` → `"~:x"`, `"~a"` → `"~~a"`) | string |
/// | vector, list | array | vector (lists come back as vectors) |
/// | map with only keyword / string keys | object; key = keyword text without `:` or the string; a key starting with `~` gets one extra `~` | map with **keyword** keys (string keys come back as keywords: lossy) |
/// | map with any other key | `{"~#map":[[k,v],...]}` | map |
/// | set | `{"~#set":[...]}` | set |
/// | inst | `{"~#inst":"2024-01-02T03:04:05.678Z"}` (9 fraction digits if sub-millisecond) | inst |
/// | uuid | `{"~#uuid":"66d96ab4-9834-40db-a3cd-42b361503ab9"}` | uuid |
/// | char | `{"~#char":"a"}` | char |
/// | symbol | `{"~#sym":"foo/bar"}` | symbol |
/// | bytes | `{"~#bytes":"<standard base64, padded>"}` | bytes |
/// | other tagged `#my/point [1 2]` | `{"~#tag":["my/point",[1,2]]}` | tagged |
///
/// Decoding rules: a JSON string starting with `:` is a keyword (the text after the colon must be
/// non-empty); starting with `~` it is the string without its first `~`; else a string. An
/// object with exactly one key, starting with `~#`, is one of the tagged forms above (an unknown
/// `~#x` is an error); any other object is a map whose keys become keywords (a key starting with
/// `~` loses its first `~`). Duplicate keys: the last one wins.
///
/// Example: `[[:my-app/a {:x [1 2 3], :y "s"}] "3f2a9c"]` ⇄
/// `[[":my-app/a",{"x":[1,2,3],"y":"s"}],"3f2a9c"]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonPacker;

impl JsonPacker {
    /// The packer.
    pub fn new() -> Self {
        JsonPacker
    }

    /// Packs into a `String`.
    pub fn pack_string(value: &Value) -> Result<String, PackError> {
        let mut out = String::with_capacity(128);
        write_value(value, &mut out)?;
        Ok(out)
    }
}

impl Packer for JsonPacker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn is_binary(&self) -> bool {
        false
    }

    fn pack(&self, value: &Value) -> Result<Packed, PackError> {
        Self::pack_string(value).map(Packed::Text)
    }

    fn pack_envelope(&self, payload: Value, cb: Value) -> Result<Packed, PackError> {
        write_envelope(&payload, &cb, ',', write_value).map(Packed::Text)
    }

    fn pack_batch(
        &self,
        marker: Option<&Value>,
        events: &[Arc<Event>],
    ) -> Result<Packed, PackError> {
        write_batch(
            marker,
            events,
            ',',
            "],null]",
            |id, out| push_string(out, ":", id),
            write_value,
        )
        .map(Packed::Text)
    }

    fn checks_utf8(&self) -> bool {
        // `unpack` reads nothing before `utf8` accepted the whole input.
        true
    }

    fn unpack(&self, input: &[u8], limits: &Limits) -> Result<Value, UnpackError> {
        check_size(input, limits)?;
        let text = utf8(input)?;
        let mut lx = Lexer::new(text, NAME);
        let v = read_value(&mut lx, 0, limits)?;
        if !lx.at_end() {
            return Err(lx.err("trailing characters"));
        }
        Ok(v)
    }
}

fn unsupported(what: &str) -> PackError {
    PackError::Unsupported {
        packer: NAME,
        what: what.to_owned(),
    }
}

fn tagged_open(out: &mut String, tag: &str) {
    out.push_str("{\"~#");
    out.push_str(tag);
    out.push_str("\":");
}

fn write_str_value(s: &str, out: &mut String) {
    let prefix = if s.starts_with([':', '~']) { "~" } else { "" };
    push_string(out, prefix, s);
}

fn write_key(text: &str, out: &mut String) {
    let prefix = if text.starts_with('~') { "~" } else { "" };
    push_string(out, prefix, text);
}

fn write_seq<'a>(
    items: impl Iterator<Item = &'a Value>,
    out: &mut String,
) -> Result<(), PackError> {
    out.push('[');
    let mut first = true;
    for v in items {
        if !first {
            out.push(',');
        }
        first = false;
        write_value(v, out)?;
    }
    out.push(']');
    Ok(())
}

fn write_value(v: &Value, out: &mut String) -> Result<(), PackError> {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(i) => push_i64(out, *i),
        Value::Float(f) => {
            if !f.is_finite() {
                return Err(unsupported("a non-finite float"));
            }
            push_f64(out, *f);
        }
        Value::BigInt(b) => {
            tagged_open(out, "bigint");
            push_string(out, "", b.as_str());
            out.push('}');
        }
        Value::BigDec(d) => {
            tagged_open(out, "bigdec");
            push_string(out, "", d.as_str());
            out.push('}');
        }
        Value::Ratio(r) => {
            tagged_open(out, "ratio");
            out.push('[');
            write_value(&r.numer, out)?;
            out.push(',');
            write_value(&r.denom, out)?;
            out.push_str("]}");
        }
        Value::Str(s) => write_str_value(s, out),
        Value::Char(c) => {
            tagged_open(out, "char");
            let mut buf = [0u8; 4];
            push_string(out, "", c.encode_utf8(&mut buf));
            out.push('}');
        }
        Value::Keyword(k) => push_string(out, ":", k.as_str()),
        Value::Symbol(s) => {
            tagged_open(out, "sym");
            push_string(out, "", s.as_str());
            out.push('}');
        }
        Value::Vector(items) | Value::List(items) => write_seq(items.iter(), out)?,
        Value::Map(m) => {
            if m.iter()
                .all(|(k, _)| matches!(k, Value::Keyword(_) | Value::Str(_)))
            {
                out.push('{');
                let mut first = true;
                for (k, v) in m.iter() {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    match k {
                        Value::Keyword(k) => write_key(k.as_str(), out),
                        Value::Str(s) => write_key(s, out),
                        _ => unreachable!("checked above"),
                    }
                    out.push(':');
                    write_value(v, out)?;
                }
                out.push('}');
            } else {
                tagged_open(out, "map");
                out.push('[');
                let mut first = true;
                for (k, v) in m.iter() {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    out.push('[');
                    write_value(k, out)?;
                    out.push(',');
                    write_value(v, out)?;
                    out.push(']');
                }
                out.push_str("]}");
            }
        }
        Value::Set(s) => {
            tagged_open(out, "set");
            write_seq(s.iter(), out)?;
            out.push('}');
        }
        Value::Inst(i) => {
            tagged_open(out, "inst");
            out.push('"');
            push_rfc3339(out, *i);
            out.push_str("\"}");
        }
        Value::Uuid(u) => {
            tagged_open(out, "uuid");
            out.push('"');
            out.push_str(
                u.hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer()),
            );
            out.push_str("\"}");
        }
        Value::Bytes(b) => {
            tagged_open(out, "bytes");
            out.push('"');
            B64.encode_string(b, out);
            out.push_str("\"}");
        }
        Value::Tagged(t) => {
            tagged_open(out, "tag");
            out.push('[');
            write_str_value(t.tag.as_str(), out);
            out.push(',');
            write_value(&t.value, out)?;
            out.push_str("]}");
        }
    }
    Ok(())
}

fn read_value(lx: &mut Lexer<'_>, depth: usize, limits: &Limits) -> Result<Value, UnpackError> {
    match lx.peek() {
        Some(b'"') => {
            let at = lx.pos;
            let s = lx.string()?;
            decode_str(s).ok_or_else(|| {
                lx.pos = at;
                lx.err("empty keyword")
            })
        }
        Some(b'[') => {
            lx.pos += 1;
            check_depth(depth + 1, limits)?;
            if lx.peek() == Some(b']') {
                lx.pos += 1;
                return Ok(Value::Vector(Vec::new()));
            }
            // Room for a few items up front (an event, an envelope).
            let mut items = Vec::with_capacity(4);
            loop {
                check_len(items.len() as u64 + 1, limits)?;
                items.push(read_value(lx, depth + 1, limits)?);
                if !lx.comma_or(b']')? {
                    return Ok(Value::Vector(items));
                }
            }
        }
        Some(b'{') => read_object(lx, depth + 1, limits),
        Some(b't') => lx.literal("true").map(|()| Value::Bool(true)),
        Some(b'f') => lx.literal("false").map(|()| Value::Bool(false)),
        Some(b'n') => lx.literal("null").map(|()| Value::Nil),
        Some(b'-' | b'0'..=b'9') => Ok(match lx.number()? {
            Number::Int(i) => Value::Int(i),
            Number::Float(f) => Value::Float(f),
            Number::BigInt(t) => BigInt::parse(t)
                .map(Value::BigInt)
                .ok_or_else(|| lx.err("invalid number"))?,
        }),
        Some(_) => Err(lx.err("unexpected character")),
        None => Err(lx.err("unexpected end of input")),
    }
}

/// A JSON string value: `:kw`, `~escaped`, or a plain string. `None` for `":"`.
fn decode_str(s: Cow<'_, str>) -> Option<Value> {
    match s.as_bytes().first() {
        Some(b':') => (s.len() > 1).then(|| Value::Keyword(Keyword::new(&s[1..]))),
        Some(b'~') => Some(Value::Str(s[1..].to_owned())),
        _ => Some(Value::Str(s.into_owned())),
    }
}

fn key_keyword(k: &str) -> Value {
    Value::Keyword(Keyword::new(k.strip_prefix('~').unwrap_or(k)))
}

fn read_object(lx: &mut Lexer<'_>, depth: usize, limits: &Limits) -> Result<Value, UnpackError> {
    lx.pos += 1; // `{`
    check_depth(depth, limits)?;
    if lx.peek() == Some(b'}') {
        lx.pos += 1;
        return Ok(Value::Map(Map::new()));
    }
    let mut map = Vec::with_capacity(4);
    let key_at = lx.pos;
    let key = lx.string()?;
    lx.expect(b':')?;
    let val = if let Some(tag) = key.strip_prefix("~#") {
        // The string reps of tagged forms are raw (not `:`/`~`-decoded).
        let val_at = lx.peek().map(|_| lx.pos);
        let raw = if lx.peek() == Some(b'"') {
            Some(lx.string()?)
        } else {
            None
        };
        let val = match raw {
            Some(s) => Err(s),
            None => Ok(read_value(lx, depth, limits)?),
        };
        if lx.peek() == Some(b'}') {
            lx.pos += 1;
            let rep = val.unwrap_or_else(|s| Value::Str(s.into_owned()));
            return decode_tagged(tag, rep).map_err(|reason| {
                lx.pos = key_at;
                lx.err(reason)
            });
        }
        match val {
            Ok(v) => v,
            Err(s) => decode_str(s).ok_or_else(|| {
                lx.pos = val_at.unwrap_or(key_at);
                lx.err("empty keyword")
            })?,
        }
    } else {
        read_value(lx, depth, limits)?
    };
    map.push((key_keyword(&key), val));
    while lx.comma_or(b'}')? {
        check_len(map.len() as u64 + 1, limits)?;
        let key = lx.string()?;
        lx.expect(b':')?;
        let val = read_value(lx, depth, limits)?;
        map.push((key_keyword(&key), val));
    }
    Ok(Value::Map(map_from_entries(map)))
}

fn take_str(v: Value) -> Result<String, String> {
    match v {
        Value::Str(s) => Ok(s),
        // Inside `~#tag`'s array the tag string went through `:` decoding.
        Value::Keyword(k) => Ok(format!(":{}", k.as_str())),
        _ => Err("expected a string".to_owned()),
    }
}

fn take_vec(v: Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Vector(items) => Ok(items),
        _ => Err("expected an array".to_owned()),
    }
}

fn decode_tagged(tag: &str, rep: Value) -> Result<Value, String> {
    let bad = |what: &str| format!("invalid ~#{tag}: {what}");
    Ok(match tag {
        "bigint" => {
            Value::BigInt(BigInt::parse(&take_str(rep)?).ok_or_else(|| bad("not an integer"))?)
        }
        "bigdec" => {
            Value::BigDec(BigDec::parse(&take_str(rep)?).ok_or_else(|| bad("not a decimal"))?)
        }
        "ratio" => {
            let items = take_vec(rep)?;
            let [numer, denom]: [Value; 2] =
                items.try_into().map_err(|_| bad("expected [n, d]"))?;
            ratio(numer, denom)?
        }
        "map" => {
            let entries = take_vec(rep)?;
            let mut map = Vec::with_capacity(entries.len());
            for e in entries {
                let [k, v]: [Value; 2] = take_vec(e)?
                    .try_into()
                    .map_err(|_| bad("expected [k, v] entries"))?;
                map.push((k, v));
            }
            Value::Map(map_from_entries(map))
        }
        "set" => Value::Set(set_from_vec(take_vec(rep)?)),
        "inst" => Value::Inst(
            parse_rfc3339(&take_str(rep)?).ok_or_else(|| bad("not an RFC 3339 instant"))?,
        ),
        "uuid" => {
            Value::Uuid(uuid::Uuid::try_parse(&take_str(rep)?).map_err(|_| bad("not a UUID"))?)
        }
        "char" => {
            let s = take_str(rep)?;
            let mut it = s.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => Value::Char(c),
                _ => return Err(bad("expected one character")),
            }
        }
        "sym" => {
            let s = take_str(rep)?;
            if s.is_empty() {
                return Err(bad("empty symbol"));
            }
            Value::Symbol(Symbol::new(s))
        }
        "bytes" => Value::Bytes(B64.decode(take_str(rep)?).map_err(|_| bad("not base64"))?),
        "tag" => {
            let [t, value]: [Value; 2] = take_vec(rep)?
                .try_into()
                .map_err(|_| bad("expected [tag, value]"))?;
            let t = take_str(t)?;
            if t.is_empty() {
                return Err(bad("empty tag"));
            }
            Value::Tagged(Box::new(Tagged {
                tag: Symbol::new(t),
                value,
            }))
        }
        _ => return Err(format!("unknown tag ~#{tag}")),
    })
}
