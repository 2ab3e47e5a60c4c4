//! serde: any `Serialize` type to a [`Value`], and `Serialize` for [`Value`].

use serde::ser::{self, Serialize, SerializeMap as _, SerializeSeq as _, SerializeTuple as _};

use crate::error::{Error, ErrorKind};
use crate::inst::{parse_inst, to_rfc3339};
use crate::value::{BigDec, BigInt, Keyword, Map, Ratio, Set, Symbol, Tagged, Value};

/// Newtype-struct names `Serialize for Value` uses for edn types serde has no notion of.
/// [`ValueSerializer`] recognizes them and rebuilds the exact [`Value`]; other serializers see
/// the inner value (a string, or a sequence).
pub(crate) mod names {
    pub(crate) const KEYWORD: &str = "$sente_edn::Keyword";
    pub(crate) const SYMBOL: &str = "$sente_edn::Symbol";
    pub(crate) const BIGINT: &str = "$sente_edn::BigInt";
    pub(crate) const BIGDEC: &str = "$sente_edn::BigDec";
    pub(crate) const RATIO: &str = "$sente_edn::Ratio";
    pub(crate) const INST: &str = "$sente_edn::Inst";
    pub(crate) const UUID: &str = "$sente_edn::Uuid";
    pub(crate) const LIST: &str = "$sente_edn::List";
    pub(crate) const SET: &str = "$sente_edn::Set";
    pub(crate) const TAGGED: &str = "$sente_edn::Tagged";
    pub(crate) const VALUE: &str = "$sente_edn::Value";
}

/// Converts any `Serialize` value to a [`Value`].
///
/// Mapping: structs become maps with **keyword** keys named after the fields (use
/// `#[serde(rename_all = "kebab-case")]` for Clojure-style `:user-id` keys); maps keep their keys'
/// own mapping (so `HashMap<String, _>` has string keys); `None`, `()` and unit structs become
/// `nil`; unit variants become keywords (`:variant`); newtype, tuple and struct variants become
/// one-entry maps `{:variant value}`; sequences and tuples become vectors; bytes become
/// [`Value::Bytes`]; `char` becomes [`Value::Char`]; integers beyond `i64` become
/// [`Value::BigInt`].
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value, Error> {
    v.serialize(ValueSerializer)
}

/// The edn text of any `Serialize` value: `pr-str` of [`to_value`].
pub fn to_string<T: Serialize + ?Sized>(v: &T) -> Result<String, Error> {
    Ok(crate::to_edn_string(&to_value(v)?))
}

fn custom(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Message(msg.to_string()))
}

/// The serializer behind [`to_value`].
struct ValueSerializer;

fn big_from_i128(v: i128) -> Value {
    match i64::try_from(v) {
        Ok(i) => Value::Int(i),
        Err(_) => Value::BigInt(BigInt(v.to_string())),
    }
}

fn big_from_u128(v: u128) -> Value {
    match i64::try_from(v) {
        Ok(i) => Value::Int(i),
        Err(_) => Value::BigInt(BigInt(v.to_string())),
    }
}

fn variant_map(variant: &'static str, value: Value) -> Value {
    let mut m = Map::with_capacity(1);
    m.push_unchecked(Value::kw(variant), value);
    Value::Map(m)
}

/// Rebuilds an edn value from the inner value of one of the [`names`] newtypes.
fn from_marker(name: &str, inner: Value) -> Result<Value, Error> {
    let text = |v: Value| match v {
        Value::Str(s) => Ok(s),
        other => Err(custom(format!("{name}: expected a string, got {other}"))),
    };
    let seq = |v: Value| match v {
        Value::Vector(xs) | Value::List(xs) => Ok(xs),
        other => Err(custom(format!("{name}: expected a sequence, got {other}"))),
    };
    Ok(match name {
        names::KEYWORD => {
            let s = text(inner)?;
            Value::Keyword(Keyword::new(
                s.strip_prefix(':').map_or_else(|| s.clone(), str::to_owned),
            ))
        }
        names::SYMBOL => Value::Symbol(Symbol::new(text(inner)?)),
        names::BIGINT => {
            let s = text(inner)?;
            Value::BigInt(BigInt::parse(&s).ok_or_else(|| custom(format!("invalid bigint {s:?}")))?)
        }
        names::BIGDEC => {
            let s = text(inner)?;
            Value::BigDec(BigDec::parse(&s).ok_or_else(|| custom(format!("invalid bigdec {s:?}")))?)
        }
        names::INST => {
            let s = text(inner)?;
            Value::Inst(parse_inst(&s).map_err(|e| custom(format!("invalid inst {s:?}: {e}")))?)
        }
        names::UUID => {
            let s = text(inner)?;
            Value::Uuid(
                uuid::Uuid::try_parse(&s).map_err(|_| custom(format!("invalid uuid {s:?}")))?,
            )
        }
        names::LIST => Value::List(seq(inner)?),
        names::SET => {
            let xs = seq(inner)?;
            if crate::read::first_duplicate(&xs, |x| x).is_some() {
                Value::Set(xs.into_iter().collect::<Set>())
            } else {
                Value::Set(Set::from_vec_unchecked(xs))
            }
        }
        names::RATIO => {
            let mut xs = seq(inner)?.into_iter();
            match (xs.next(), xs.next(), xs.next()) {
                (Some(numer), Some(denom), None) => Value::Ratio(Box::new(Ratio { numer, denom })),
                _ => return Err(custom("ratio: expected [numerator denominator]")),
            }
        }
        names::TAGGED => {
            let mut xs = seq(inner)?.into_iter();
            match (xs.next(), xs.next(), xs.next()) {
                (Some(Value::Str(tag)), Some(value), None) => Value::Tagged(Box::new(Tagged {
                    tag: Symbol::new(tag),
                    value,
                })),
                _ => return Err(custom("tagged: expected [tag value]")),
            }
        }
        _ => inner,
    })
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = VariantBuilder<SeqBuilder>;
    type SerializeMap = MapBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = VariantBuilder<StructBuilder>;

    fn serialize_bool(self, v: bool) -> Result<Value, Error> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Error> {
        Ok(Value::Int(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, Error> {
        Ok(big_from_i128(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Error> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Error> {
        Ok(big_from_u128(v.into()))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, Error> {
        Ok(big_from_u128(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, Error> {
        Ok(Value::Char(v))
    }
    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, Error> {
        Ok(Value::Nil)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Value, Error> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, Error> {
        Ok(Value::Nil)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Error> {
        Ok(Value::Nil)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, Error> {
        Ok(Value::kw(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<Value, Error> {
        let inner = v.serialize(self)?;
        if name.starts_with("$sente_edn::") {
            from_marker(name, inner)
        } else {
            Ok(inner)
        }
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Value, Error> {
        Ok(variant_map(variant, v.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, Error> {
        Ok(SeqBuilder(Vec::with_capacity(len.unwrap_or(0).min(4096))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqBuilder, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantBuilder<SeqBuilder>, Error> {
        Ok(VariantBuilder {
            variant,
            inner: self.serialize_seq(Some(len))?,
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder, Error> {
        Ok(MapBuilder {
            map: Map::with_capacity(len.unwrap_or(0).min(4096)),
            key: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<StructBuilder, Error> {
        Ok(StructBuilder(Map::with_capacity(len)))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantBuilder<StructBuilder>, Error> {
        Ok(VariantBuilder {
            variant,
            inner: StructBuilder(Map::with_capacity(len)),
        })
    }
}

/// Builds a vector.
#[doc(hidden)]
pub(crate) struct SeqBuilder(Vec<Value>);

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.0.push(v.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::Vector(self.0))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

/// Builds a map.
pub(crate) struct MapBuilder {
    map: Map,
    key: Option<Value>,
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Error> {
        self.key = Some(k.serialize(ValueSerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| custom("serialize_value called before serialize_key"))?;
        // Serialized maps have distinct keys; skipping the check keeps building O(n).
        self.map.push_unchecked(key, v.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::Map(self.map))
    }
}

/// Builds a map with keyword keys.
pub(crate) struct StructBuilder(Map);

impl ser::SerializeStruct for StructBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.0
            .push_unchecked(Value::kw(key), v.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::Map(self.0))
    }
}

/// Wraps a tuple or struct variant's body as `{:variant body}`.
pub(crate) struct VariantBuilder<B> {
    variant: &'static str,
    inner: B,
}

impl ser::SerializeTupleVariant for VariantBuilder<SeqBuilder> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(&mut self.inner, v)
    }
    fn end(self) -> Result<Value, Error> {
        Ok(variant_map(
            self.variant,
            ser::SerializeSeq::end(self.inner)?,
        ))
    }
}

impl ser::SerializeStructVariant for VariantBuilder<StructBuilder> {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(&mut self.inner, key, v)
    }
    fn end(self) -> Result<Value, Error> {
        Ok(variant_map(
            self.variant,
            ser::SerializeStruct::end(self.inner)?,
        ))
    }
}

/// Serializes through `Display` (`collect_str`), so nothing is allocated for other serializers.
struct DisplayStr<T>(T);

impl<T: std::fmt::Display> Serialize for DisplayStr<T> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

struct Seq<'a>(&'a [Value]);

impl Serialize for Seq<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for x in self.0 {
            seq.serialize_element(x)?;
        }
        seq.end()
    }
}

struct Pair<'a>(&'a Value, &'a Value);

impl Serialize for Pair<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(self.0)?;
        t.serialize_element(self.1)?;
        t.end()
    }
}

struct TagPair<'a>(&'a str, &'a Value);

impl Serialize for TagPair<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(self.0)?;
        t.serialize_element(self.1)?;
        t.end()
    }
}

/// Serializes losslessly through [`to_value`] (`to_value(&v) == v` for every value).
///
/// To other serializers (e.g. `serde_json`) edn-only types look like this: keywords are strings
/// with their colon (`":ns/name"`), symbols, big integers, big decimals, `#inst` (RFC 3339) and
/// `#uuid` are strings, lists and sets are sequences, ratios are `[numerator, denominator]`,
/// tagged literals are `[tag, value]`, chars are chars and bytes are bytes. Each travels inside a
/// newtype struct with a private `$sente_edn::...` name, which is how [`to_value`] tells them
/// apart.
impl Serialize for Value {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(x) => s.serialize_str(x),
            Value::Char(c) => s.serialize_char(*c),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::Keyword(k) => s.serialize_newtype_struct(
                names::KEYWORD,
                &DisplayStr(format_args!(":{}", k.as_str())),
            ),
            Value::Symbol(x) => s.serialize_newtype_struct(names::SYMBOL, x.as_str()),
            Value::BigInt(b) => s.serialize_newtype_struct(names::BIGINT, b.as_str()),
            Value::BigDec(d) => s.serialize_newtype_struct(names::BIGDEC, d.as_str()),
            Value::Ratio(r) => s.serialize_newtype_struct(names::RATIO, &Pair(&r.numer, &r.denom)),
            Value::Inst(i) => s.serialize_newtype_struct(names::INST, &to_rfc3339(i)),
            Value::Uuid(u) => s.serialize_newtype_struct(names::UUID, &DisplayStr(u.hyphenated())),
            Value::Vector(xs) => Seq(xs).serialize(s),
            Value::List(xs) => s.serialize_newtype_struct(names::LIST, &Seq(xs.iter().as_slice())),
            Value::Set(xs) => s.serialize_newtype_struct(names::SET, &Seq(xs.iter().as_slice())),
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m.iter() {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Value::Tagged(t) => {
                s.serialize_newtype_struct(names::TAGGED, &TagPair(t.tag.as_str(), &t.value))
            }
        }
    }
}

/// Serializes as the keyword itself through [`to_value`], and as the string `":ns/name"`
/// elsewhere.
impl Serialize for Keyword {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(
            names::KEYWORD,
            &DisplayStr(format_args!(":{}", self.as_str())),
        )
    }
}

/// Serializes as the symbol itself through [`to_value`], and as its text elsewhere.
impl Serialize for Symbol {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(names::SYMBOL, self.as_str())
    }
}

/// Serializes as the instant itself through [`to_value`], and as an RFC 3339 string elsewhere.
impl Serialize for crate::value::Inst {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(names::INST, &to_rfc3339(self))
    }
}
