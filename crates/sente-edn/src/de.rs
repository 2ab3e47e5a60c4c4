//! serde: a [`Value`] to any `Deserialize` type, and `Deserialize` for [`Value`].

use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, SeqDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess,
    SeqAccess, Unexpected, VariantAccess, Visitor,
};
use serde::{Deserialize, forward_to_deserialize_any};

use crate::error::Error;
use crate::inst::to_rfc3339;
use crate::ser::names;
use crate::value::{BigDec, BigInt, Inst, Keyword, Map, Ratio, Set, Symbol, Tagged, Value};

/// Converts a [`Value`] to any `Deserialize` type.
///
/// Lenient the way Clojure users expect: keywords (and symbols) deserialize as strings of their
/// text without the colon (`:ok` → `"ok"`, `:a/b` → `"a/b"`) wherever a string, a map key, a
/// struct field name or an enum variant is expected; vectors, lists and sets are all sequences;
/// integers convert to floats; `#inst` and `#uuid` deserialize as their strings (RFC 3339,
/// hyphenated); `nil` reads as an empty sequence or map. Enums read from a keyword or string
/// (unit variants), a one-entry map `{:variant value}`, a vector `[:variant value]` or a tagged
/// literal `#variant value`.
#[allow(clippy::needless_pass_by_value)] // taking ownership is the natural API
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, Error> {
    T::deserialize(&v)
}

/// Like [`from_value`], borrowing: `&str` fields can point into `v`.
pub fn from_value_ref<'de, T: Deserialize<'de>>(v: &'de Value) -> Result<T, Error> {
    T::deserialize(v)
}

/// Reads the first form of `s` (default [`ReadOptions`](crate::ReadOptions)) and converts it
/// with [`from_value`].
pub fn from_str<T: DeserializeOwned>(s: &str) -> Result<T, Error> {
    from_value(crate::read(s, &crate::ReadOptions::default())?)
}

static NIL: Value = Value::Nil;

fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Nil => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Int(i) => Unexpected::Signed(*i),
        Value::Float(f) => Unexpected::Float(*f),
        Value::Str(s) => Unexpected::Str(s),
        Value::Char(c) => Unexpected::Char(*c),
        Value::Bytes(b) => Unexpected::Bytes(b),
        Value::Vector(_) | Value::List(_) | Value::Set(_) => Unexpected::Seq,
        Value::Map(_) => Unexpected::Map,
        Value::Keyword(_) => Unexpected::Other("keyword"),
        Value::Symbol(_) => Unexpected::Other("symbol"),
        Value::BigInt(_) => Unexpected::Other("big integer"),
        Value::BigDec(_) => Unexpected::Other("big decimal"),
        Value::Ratio(_) => Unexpected::Other("ratio"),
        Value::Inst(_) => Unexpected::Other("#inst"),
        Value::Uuid(_) => Unexpected::Other("#uuid"),
        Value::Tagged(_) => Unexpected::Other("tagged literal"),
    }
}

fn int_of(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::BigInt(b) => b.as_str().parse().ok(),
        _ => None,
    }
}

fn ratio_f64(r: &Ratio) -> f64 {
    let f = |v: &Value| match v {
        Value::Int(i) => *i as f64,
        Value::BigInt(b) => b.as_str().parse().unwrap_or(f64::NAN),
        Value::Float(x) => *x,
        _ => f64::NAN,
    };
    f(&r.numer) / f(&r.denom)
}

impl<'de> IntoDeserializer<'de, Error> for &'de Value {
    type Deserializer = &'de Value;
    fn into_deserializer(self) -> Self {
        self
    }
}

fn visit_big<'de, V: Visitor<'de>>(b: &'de BigInt, visitor: V) -> Result<V::Value, Error> {
    if let Ok(u) = b.as_str().parse::<u64>() {
        visitor.visit_u64(u)
    } else if let Ok(i) = b.as_str().parse::<i128>() {
        visitor.visit_i128(i)
    } else if let Ok(u) = b.as_str().parse::<u128>() {
        visitor.visit_u128(u)
    } else {
        visitor.visit_borrowed_str(b.as_str())
    }
}

/// Visits a sequence and fails if the visitor leaves elements unread.
fn visit_seq_exact<'de, V, I, T>(iter: I, visitor: V) -> Result<V::Value, Error>
where
    V: Visitor<'de>,
    I: Iterator<Item = T>,
    T: IntoDeserializer<'de, Error>,
{
    let mut seq = SeqDeserializer::new(iter);
    let v = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(v)
}

/// Deserializes borrowed from a [`Value`]; see [`from_value`] for the mapping.
impl<'de> Deserializer<'de> for &'de Value {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Nil => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::BigInt(b) => visit_big(b, visitor),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::BigDec(d) => visitor.visit_borrowed_str(d.as_str()),
            Value::Ratio(r) => visitor.visit_f64(ratio_f64(r)),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Char(c) => visitor.visit_char(*c),
            Value::Keyword(k) => visitor.visit_borrowed_str(k.as_str()),
            Value::Symbol(s) => visitor.visit_borrowed_str(s.as_str()),
            Value::Vector(xs) | Value::List(xs) => visit_seq_exact(xs.iter(), visitor),
            Value::Set(s) => visit_seq_exact(s.iter(), visitor),
            Value::Map(m) => visitor.visit_map(MapDe::new(m)),
            Value::Inst(i) => visitor.visit_string(to_rfc3339(i)),
            Value::Uuid(u) => visitor.visit_string(u.hyphenated().to_string()),
            Value::Bytes(b) => visitor.visit_borrowed_bytes(b),
            Value::Tagged(t) => t.value.deserialize_any(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match int_of(self) {
            Some(i) => visitor.visit_i128(i),
            None => self.deserialize_any(visitor),
        }
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::BigInt(b) => match b.as_str().parse::<u128>() {
                Ok(u) => visitor.visit_u128(u),
                Err(_) => self.deserialize_i128(visitor),
            },
            _ => self.deserialize_i128(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Int(i) => visitor.visit_f64(*i as f64),
            Value::BigInt(b) => visitor.visit_f64(b.as_str().parse().unwrap_or(f64::NAN)),
            Value::BigDec(d) => visitor.visit_f64(d.as_str().parse().unwrap_or(f64::NAN)),
            Value::Ratio(r) => visitor.visit_f64(ratio_f64(r)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::BigInt(b) => visitor.visit_borrowed_str(b.as_str()),
            Value::Tagged(t) => t.value.deserialize_str(visitor),
            _ => self.deserialize_any(visitor),
        }
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Bytes(b) => visitor.visit_borrowed_bytes(b),
            Value::Str(s) => visitor.visit_borrowed_bytes(s.as_bytes()),
            _ => self.deserialize_any(visitor),
        }
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Nil => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name != names::VALUE {
            return visitor.visit_newtype_struct(self);
        }
        // `Deserialize for Value` asking: hand over the exact value.
        match self {
            Value::Keyword(_)
            | Value::Symbol(_)
            | Value::BigInt(_)
            | Value::BigDec(_)
            | Value::Ratio(_)
            | Value::List(_)
            | Value::Set(_)
            | Value::Inst(_)
            | Value::Uuid(_)
            | Value::Tagged(_) => visitor.visit_enum(Exact(self)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Nil => visit_seq_exact(std::iter::empty::<&Value>(), visitor),
            Value::Bytes(b) => visit_seq_exact(b.iter().copied(), visitor),
            _ => self.deserialize_any(visitor),
        }
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Nil => visitor.visit_map(MapDe { iter: None }),
            _ => self.deserialize_any(visitor),
        }
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self {
            Value::Keyword(_) | Value::Str(_) | Value::Symbol(_) => visitor.visit_enum(EnumDe {
                variant: self,
                value: None,
            }),
            Value::Map(m) if m.len() == 1 => {
                let (k, v) = m.iter().next().unwrap_or((&NIL, &NIL));
                visitor.visit_enum(EnumDe {
                    variant: k,
                    value: Some(v),
                })
            }
            Value::Vector(xs) if matches!(xs.first(), Some(Value::Keyword(_))) && xs.len() <= 2 => {
                visitor.visit_enum(EnumDe {
                    variant: &xs[0],
                    value: xs.get(1),
                })
            }
            Value::Tagged(t) => visitor.visit_enum(TagEnumDe {
                tag: t.tag.as_str(),
                value: &t.value,
            }),
            other => Err(de::Error::invalid_type(
                unexpected(other),
                &format!("enum {name}").as_str(),
            )),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Int(i) if *i >= 0 => visitor.visit_u64(*i as u64),
            _ => self.deserialize_str(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

/// Map entries as serde `MapAccess`.
struct MapDe<'de> {
    iter: Option<std::slice::Iter<'de, (Value, Value)>>,
}

impl<'de> MapDe<'de> {
    fn new(m: &'de Map) -> Self {
        MapDe {
            iter: Some(m.entries().iter()),
        }
    }
}

impl<'de> MapAccess<'de> for MapDe<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.iter.as_ref().and_then(|it| it.as_slice().first()) {
            Some((k, _)) => seed.deserialize(k).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.iter.as_mut().and_then(Iterator::next) {
            Some((_, v)) => seed.deserialize(v),
            None => Err(de::Error::custom(
                "map value requested after the last entry",
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.as_ref().map_or(0, ExactSizeIterator::len))
    }
}

/// An enum from a keyword/string (unit variant) or a `{:variant value}` / `[:variant value]`.
struct EnumDe<'de> {
    variant: &'de Value,
    value: Option<&'de Value>,
}

impl<'de> EnumAccess<'de> for EnumDe<'de> {
    type Error = Error;
    type Variant = VariantDe<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, VariantDe<'de>), Error> {
        Ok((seed.deserialize(self.variant)?, VariantDe(self.value)))
    }
}

/// An enum from a tagged literal `#variant value`.
struct TagEnumDe<'de> {
    tag: &'de str,
    value: &'de Value,
}

impl<'de> EnumAccess<'de> for TagEnumDe<'de> {
    type Error = Error;
    type Variant = VariantDe<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, VariantDe<'de>), Error> {
        let d: BorrowedStrDeserializer<'de, Error> = BorrowedStrDeserializer::new(self.tag);
        Ok((seed.deserialize(d)?, VariantDe(Some(self.value))))
    }
}

struct VariantDe<'de>(Option<&'de Value>);

impl<'de> VariantAccess<'de> for VariantDe<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.0 {
            None | Some(Value::Nil) => Ok(()),
            Some(other) => Err(de::Error::invalid_type(unexpected(other), &"unit variant")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self.0.unwrap_or(&NIL))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.0.unwrap_or(&NIL).deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.unwrap_or(&NIL).deserialize_map(visitor)
    }
}

/// Hands an edn-only value to `Deserialize for Value` as an enum whose variant names it.
struct Exact<'de>(&'de Value);

impl<'de> EnumAccess<'de> for Exact<'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let name = match self.0 {
            Value::Keyword(_) => names::KEYWORD,
            Value::Symbol(_) => names::SYMBOL,
            Value::BigInt(_) => names::BIGINT,
            Value::BigDec(_) => names::BIGDEC,
            Value::Ratio(_) => names::RATIO,
            Value::List(_) => names::LIST,
            Value::Set(_) => names::SET,
            Value::Inst(_) => names::INST,
            Value::Uuid(_) => names::UUID,
            Value::Tagged(_) => names::TAGGED,
            _ => names::VALUE,
        };
        let d: BorrowedStrDeserializer<'de, Error> = BorrowedStrDeserializer::new(name);
        Ok((seed.deserialize(d)?, self))
    }
}

impl<'de> VariantAccess<'de> for Exact<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Err(de::Error::custom("unexpected unit variant"))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        match self.0 {
            Value::Keyword(k) => seed.deserialize(BorrowedStrDeserializer::new(k.as_str())),
            Value::Symbol(s) => seed.deserialize(BorrowedStrDeserializer::new(s.as_str())),
            Value::BigInt(b) => seed.deserialize(BorrowedStrDeserializer::new(b.as_str())),
            Value::BigDec(d) => seed.deserialize(BorrowedStrDeserializer::new(d.as_str())),
            Value::Ratio(r) => {
                seed.deserialize(SeqDeserializer::new([&r.numer, &r.denom].into_iter()))
            }
            Value::List(xs) => seed.deserialize(SeqDeserializer::new(xs.iter())),
            Value::Set(s) => seed.deserialize(SeqDeserializer::new(s.iter())),
            Value::Inst(i) => seed.deserialize(SeqDeserializer::new(
                [i.secs, i64::from(i.nanos)].into_iter(),
            )),
            Value::Uuid(u) => seed.deserialize(u.as_u128().into_deserializer()),
            Value::Tagged(t) => seed.deserialize(TagPairDe {
                tag: Some(t.tag.as_str()),
                value: Some(&t.value),
            }),
            other => seed.deserialize(other),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("unexpected tuple variant"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(de::Error::custom("unexpected struct variant"))
    }
}

/// `(tag, value)` as a two-element sequence.
struct TagPairDe<'de> {
    tag: Option<&'de str>,
    value: Option<&'de Value>,
}

impl<'de> Deserializer<'de> for TagPairDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

impl<'de> SeqAccess<'de> for TagPairDe<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if let Some(tag) = self.tag.take() {
            return seed
                .deserialize(BorrowedStrDeserializer::new(tag))
                .map(Some);
        }
        match self.value.take() {
            Some(v) => seed.deserialize(v).map(Some),
            None => Ok(None),
        }
    }
}

/// The private variant names `Deserialize for Value` understands.
enum ExactTag {
    Keyword,
    Symbol,
    BigInt,
    BigDec,
    Ratio,
    List,
    Set,
    Inst,
    Uuid,
    Tagged,
}

impl<'de> Deserialize<'de> for ExactTag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ExactTag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an edn value kind")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ExactTag, E> {
                Ok(match s {
                    names::KEYWORD => ExactTag::Keyword,
                    names::SYMBOL => ExactTag::Symbol,
                    names::BIGINT => ExactTag::BigInt,
                    names::BIGDEC => ExactTag::BigDec,
                    names::RATIO => ExactTag::Ratio,
                    names::LIST => ExactTag::List,
                    names::SET => ExactTag::Set,
                    names::INST => ExactTag::Inst,
                    names::UUID => ExactTag::Uuid,
                    names::TAGGED => ExactTag::Tagged,
                    other => return Err(E::unknown_variant(other, &[])),
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Builds a [`Value`] from any self-describing format; exact for [`from_value`].
struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any edn value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Value::BigInt(BigInt(v.to_string())), Value::Int))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.visit_u128(u128::from(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Value::BigInt(BigInt(v.to_string())), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<Value, E> {
        Ok(Value::Char(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut xs = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(x) = seq.next_element::<Value>()? {
            xs.push(x);
        }
        Ok(Value::Vector(xs))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(e) = map.next_entry::<Value, Value>()? {
            entries.push(e);
        }
        if crate::read::first_duplicate(&entries, |(k, _)| k).is_some() {
            // Last one wins, as in most formats.
            return Ok(Value::Map(entries.into_iter().collect()));
        }
        Ok(Value::Map(Map::from_entries_unchecked(entries)))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, variant) = data.variant::<ExactTag>()?;
        let bad = |what: &str| <A::Error as de::Error>::custom(format!("invalid {what}"));
        Ok(match tag {
            ExactTag::Keyword => Value::Keyword(Keyword::new(variant.newtype_variant::<String>()?)),
            ExactTag::Symbol => Value::Symbol(Symbol::new(variant.newtype_variant::<String>()?)),
            ExactTag::BigInt => Value::BigInt(
                BigInt::parse(&variant.newtype_variant::<String>()?)
                    .ok_or_else(|| bad("bigint"))?,
            ),
            ExactTag::BigDec => Value::BigDec(
                BigDec::parse(&variant.newtype_variant::<String>()?)
                    .ok_or_else(|| bad("bigdec"))?,
            ),
            ExactTag::Ratio => {
                let (numer, denom) = variant.newtype_variant::<(Value, Value)>()?;
                Value::Ratio(Box::new(Ratio { numer, denom }))
            }
            ExactTag::List => Value::List(variant.newtype_variant::<Vec<Value>>()?),
            ExactTag::Set => {
                let xs = variant.newtype_variant::<Vec<Value>>()?;
                if crate::read::first_duplicate(&xs, |x| x).is_some() {
                    Value::Set(xs.into_iter().collect())
                } else {
                    Value::Set(Set::from_vec_unchecked(xs))
                }
            }
            ExactTag::Inst => {
                let (secs, nanos) = variant.newtype_variant::<(i64, u32)>()?;
                if nanos >= 1_000_000_000 {
                    return Err(bad("inst"));
                }
                Value::Inst(Inst { secs, nanos })
            }
            ExactTag::Uuid => {
                Value::Uuid(uuid::Uuid::from_u128(variant.newtype_variant::<u128>()?))
            }
            ExactTag::Tagged => {
                let (tag, value) = variant.newtype_variant::<(String, Value)>()?;
                Value::Tagged(Box::new(Tagged {
                    tag: Symbol::new(tag),
                    value,
                }))
            }
        })
    }
}

/// Deserializes from any self-describing format; exact (lossless) from [`from_value`], which
/// recognizes a private newtype name. From other formats, strings stay strings (a JSON
/// `":kw"` is the string `":kw"`, not a keyword), sequences become vectors and maps keep
/// whatever keys the format gives.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_newtype_struct(names::VALUE, ValueVisitor)
    }
}

/// Deserializes from a keyword, or from a string with or without the leading colon.
impl<'de> Deserialize<'de> for Keyword {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.strip_prefix(':') {
            Some(rest) => Keyword::new(rest),
            None => Keyword::new(s),
        })
    }
}

/// Deserializes from a symbol or a string.
impl<'de> Deserialize<'de> for Symbol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Symbol::new(String::deserialize(d)?))
    }
}

/// Deserializes from an `#inst` or an RFC 3339 string.
impl<'de> Deserialize<'de> for Inst {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::inst::parse_inst(&s)
            .map_err(|e| de::Error::custom(format!("invalid inst {s:?}: {e}")))
    }
}
