//! The dynamic edn [`Value`] and its building blocks.

use std::hash::{Hash, Hasher};

/// A keyword such as `:chsk/handshake`, stored without the leading colon (`chsk/handshake`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Keyword(String);

impl Keyword {
    /// A keyword from its text without the colon: `Keyword::new("my-app/req")`.
    pub fn new(text: impl Into<String>) -> Self {
        Keyword(text.into())
    }

    /// The full text without the colon, e.g. `my-app/req`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace part (`my-app` in `:my-app/req`), if any.
    pub fn namespace(&self) -> Option<&str> {
        split_ns(&self.0).0
    }

    /// The name part (`req` in `:my-app/req`).
    pub fn name(&self) -> &str {
        split_ns(&self.0).1
    }
}

/// A symbol such as `foo/bar`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(String);

impl Symbol {
    /// A symbol from its text.
    pub fn new(text: impl Into<String>) -> Self {
        Symbol(text.into())
    }

    /// The full text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace part, if any.
    pub fn namespace(&self) -> Option<&str> {
        split_ns(&self.0).0
    }

    /// The name part.
    pub fn name(&self) -> &str {
        split_ns(&self.0).1
    }
}

/// Splits `ns/name` at the first `/`; a lone `/` is a name without namespace.
fn split_ns(text: &str) -> (Option<&str>, &str) {
    match text.find('/') {
        Some(i) if i > 0 && i + 1 < text.len() => (Some(&text[..i]), &text[i + 1..]),
        _ => (None, text),
    }
}

/// An integer outside `i64`, kept as its decimal digits (optional leading `-`), printed with `N`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BigInt(pub(crate) String);

impl BigInt {
    /// Parses decimal digits with an optional sign; `None` if the text is not an integer.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let negative = text.starts_with('-');
        let trimmed = digits.trim_start_matches('0');
        let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
        Some(BigInt(if negative && trimmed != "0" {
            format!("-{trimmed}")
        } else {
            trimmed.to_owned()
        }))
    }

    /// The decimal digits, with a leading `-` when negative.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An exact decimal (`1.5M`), kept as its text without the `M` suffix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BigDec(pub(crate) String);

impl BigDec {
    /// Wraps decimal text such as `1.5` or `-2E+3`; `None` if it is not a decimal number.
    pub fn parse(text: &str) -> Option<Self> {
        let body = text.strip_prefix(['-', '+']).unwrap_or(text);
        let ok = !body.is_empty()
            && body.bytes().next().is_some_and(|b| b.is_ascii_digit())
            && body
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
        ok.then(|| BigDec(text.strip_prefix('+').unwrap_or(text).to_owned()))
    }

    /// The decimal text without the `M`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An instant (`#inst`): seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Inst {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before it).
    pub secs: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Inst {
    /// An instant from milliseconds since the epoch.
    pub fn from_millis(ms: i64) -> Self {
        Inst {
            secs: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) as u32) * 1_000_000,
        }
    }

    /// Milliseconds since the epoch (sub-millisecond digits are dropped).
    pub fn as_millis(&self) -> i64 {
        self.secs * 1000 + i64::from(self.nanos / 1_000_000)
    }
}

/// A tagged literal with a tag this crate does not interpret, e.g. `#my/point [1 2]`; kept as is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tagged {
    /// The tag symbol without `#`.
    pub tag: Symbol,
    /// The tagged form.
    pub value: Value,
}

/// A ratio such as `1/3` (numerator and denominator as written).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ratio {
    /// Numerator.
    pub numer: Value,
    /// Denominator.
    pub denom: Value,
}

/// An edn map. Keys may be any value. Entries keep insertion order (which is also how Clojure
/// prints maps of up to 8 entries); equality ignores order.
#[derive(Clone, Debug, Default)]
pub struct Map(Vec<(Value, Value)>);

impl Map {
    /// An empty map.
    pub fn new() -> Self {
        Map(Vec::new())
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Map(Vec::with_capacity(n))
    }

    /// Inserts or replaces the value for `key`, returning the old value.
    pub fn insert(&mut self, key: Value, value: Value) -> Option<Value> {
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == key) {
            return Some(std::mem::replace(&mut slot.1, value));
        }
        self.0.push((key, value));
        None
    }

    /// Appends an entry without checking for an existing key (readers check duplicates).
    pub(crate) fn push_unchecked(&mut self, key: Value, value: Value) {
        self.0.push((key, value));
    }

    /// A map from entries whose keys are known to be distinct.
    pub(crate) fn from_entries_unchecked(entries: Vec<(Value, Value)>) -> Self {
        Map(entries)
    }

    /// Builds a map from entries in expected O(n) (decoders use this: `insert` scans linearly).
    /// A repeated key keeps its first position and its last value.
    pub fn from_entries(entries: Vec<(Value, Value)>) -> Self {
        let mut out: Vec<(Value, Value)> = Vec::with_capacity(entries.len());
        dedup_into(entries, &mut out, |e| &e.0, |slot, e| slot.1 = e.1);
        Map(out)
    }

    /// The value for `key`.
    pub fn get(&self, key: &Value) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value for the keyword `:name` (text without colon).
    pub fn get_kw(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| matches!(k, Value::Keyword(kw) if kw.as_str() == name))
            .map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &Value) -> bool {
        self.get(key).is_some()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Value, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The entries in insertion order, as a slice.
    pub fn entries(&self) -> &[(Value, Value)] {
        &self.0
    }

    /// The entries in insertion order.
    pub fn into_entries(self) -> Vec<(Value, Value)> {
        self.0
    }
}

impl PartialEq for Map {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}
impl Eq for Map {}

impl Hash for Map {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        state.write_u64(
            self.iter()
                .map(|(k, v)| hash_one(&(k, v)))
                .fold(0, u64::wrapping_add),
        );
    }
}

impl FromIterator<(Value, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (Value, Value)>>(iter: I) -> Self {
        let mut m = Map::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

/// An edn set. Elements keep insertion order; equality ignores order.
#[derive(Clone, Debug, Default)]
pub struct Set(Vec<Value>);

impl Set {
    /// An empty set.
    pub fn new() -> Self {
        Set(Vec::new())
    }

    /// Adds `value`; returns false if it was already present.
    pub fn insert(&mut self, value: Value) -> bool {
        if self.contains(&value) {
            return false;
        }
        self.0.push(value);
        true
    }

    /// Appends without checking for duplicates (readers check duplicates).
    #[allow(dead_code)]
    pub(crate) fn push_unchecked(&mut self, value: Value) {
        self.0.push(value);
    }

    /// A set from elements known to be distinct.
    pub(crate) fn from_vec_unchecked(items: Vec<Value>) -> Self {
        Set(items)
    }

    /// Builds a set from values in expected O(n), dropping repeated elements (decoders use this:
    /// `insert` scans linearly).
    pub fn from_values(items: Vec<Value>) -> Self {
        let mut out = Vec::with_capacity(items.len());
        dedup_into(items, &mut out, |v| v, |_, _| {});
        Set(out)
    }

    /// Whether `value` is an element.
    pub fn contains(&self, value: &Value) -> bool {
        self.0.contains(value)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Elements in insertion order.
    pub fn iter(&self) -> std::slice::Iter<'_, Value> {
        self.0.iter()
    }

    /// The elements in insertion order.
    pub fn into_vec(self) -> Vec<Value> {
        self.0
    }
}

impl<'a> IntoIterator for &'a Set {
    type Item = &'a Value;
    type IntoIter = std::slice::Iter<'a, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl PartialEq for Set {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|v| other.contains(v))
    }
}
impl Eq for Set {}

impl Hash for Set {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        state.write_u64(self.iter().map(hash_one).fold(0, u64::wrapping_add));
    }
}

impl FromIterator<Value> for Set {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Self {
        let mut s = Set::new();
        for v in iter {
            s.insert(v);
        }
        s
    }
}

/// Moves `items` into `out`, merging items with an equal key via `merge` (expected O(n): a
/// randomly keyed hash indexes `out`, so hostile input cannot aim for collisions).
fn dedup_into<T>(
    items: Vec<T>,
    out: &mut Vec<T>,
    key: impl Fn(&T) -> &Value,
    merge: impl Fn(&mut T, T),
) {
    use std::hash::BuildHasher;
    if items.len() <= 8 {
        for item in items {
            match out.iter_mut().find(|o| key(o) == key(&item)) {
                Some(slot) => merge(slot, item),
                None => out.push(item),
            }
        }
        return;
    }
    let hasher = std::collections::hash_map::RandomState::new();
    let mut index: std::collections::HashMap<u64, Vec<usize>> =
        std::collections::HashMap::with_capacity(items.len());
    for item in items {
        let bucket = index.entry(hasher.hash_one(key(&item))).or_default();
        if let Some(i) = bucket.iter().copied().find(|&i| key(&out[i]) == key(&item)) {
            merge(&mut out[i], item);
        } else {
            bucket.push(out.len());
            out.push(item);
        }
    }
}

fn hash_one<T: Hash>(value: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Any edn value.
///
/// Floats compare and hash by their bits, so `Value` is `Eq + Hash` and can be a map key.
#[derive(Clone, Debug)]
pub enum Value {
    /// `nil`
    Nil,
    /// `true` / `false`
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// An integer beyond `i64` (`123N` or a long literal).
    BigInt(BigInt),
    /// A double.
    Float(f64),
    /// An exact decimal (`1.5M`).
    BigDec(BigDec),
    /// A ratio (`1/3`).
    Ratio(Box<Ratio>),
    /// A string.
    Str(String),
    /// A character (`\a`, `\newline`).
    Char(char),
    /// A keyword (`:ns/name`).
    Keyword(Keyword),
    /// A symbol (`ns/name`).
    Symbol(Symbol),
    /// A vector `[...]`.
    Vector(Vec<Value>),
    /// A list `(...)`.
    List(Vec<Value>),
    /// A map `{...}`.
    Map(Map),
    /// A set `#{...}`.
    Set(Set),
    /// `#inst "..."`
    Inst(Inst),
    /// `#uuid "..."`
    Uuid(uuid::Uuid),
    /// Raw bytes (binary packers only; edn has no literal for them).
    Bytes(Vec<u8>),
    /// Any other tagged literal, kept as read.
    Tagged(Box<Tagged>),
}

impl Value {
    /// A keyword value from its text without the colon.
    pub fn kw(text: &str) -> Value {
        Value::Keyword(Keyword::new(text))
    }

    /// Whether this is `nil`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// Clojure truthiness: everything except `nil` and `false`.
    pub fn is_truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The keyword, if this is a keyword.
    pub fn as_keyword(&self) -> Option<&Keyword> {
        match self {
            Value::Keyword(k) => Some(k),
            _ => None,
        }
    }

    /// Whether this is the keyword with text `text` (no colon).
    pub fn is_kw(&self, text: &str) -> bool {
        matches!(self, Value::Keyword(k) if k.as_str() == text)
    }

    /// The integer, if this is an `i64` integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements, if this is a vector or a list.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Vector(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// The map, if this is a map.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value as V;
        match (self, other) {
            (V::Nil, V::Nil) => true,
            (V::Bool(a), V::Bool(b)) => a == b,
            (V::Int(a), V::Int(b)) => a == b,
            (V::BigInt(a), V::BigInt(b)) => a == b,
            (V::Float(a), V::Float(b)) => a.to_bits() == b.to_bits(),
            (V::BigDec(a), V::BigDec(b)) => a == b,
            (V::Ratio(a), V::Ratio(b)) => a == b,
            (V::Str(a), V::Str(b)) => a == b,
            (V::Char(a), V::Char(b)) => a == b,
            (V::Keyword(a), V::Keyword(b)) => a == b,
            (V::Symbol(a), V::Symbol(b)) => a == b,
            // Clojure: a vector equals a list with the same elements.
            (V::Vector(a) | V::List(a), V::Vector(b) | V::List(b)) => a == b,
            (V::Map(a), V::Map(b)) => a == b,
            (V::Set(a), V::Set(b)) => a == b,
            (V::Inst(a), V::Inst(b)) => a == b,
            (V::Uuid(a), V::Uuid(b)) => a == b,
            (V::Bytes(a), V::Bytes(b)) => a == b,
            (V::Tagged(a), V::Tagged(b)) => a == b,
            _ => false,
        }
    }
}
impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        use Value as V;
        match self {
            V::Nil => state.write_u8(0),
            V::Bool(b) => b.hash(state),
            V::Int(i) => i.hash(state),
            V::BigInt(b) => b.hash(state),
            V::Float(f) => f.to_bits().hash(state),
            V::BigDec(d) => d.hash(state),
            V::Ratio(r) => r.hash(state),
            V::Str(s) => s.hash(state),
            V::Char(c) => c.hash(state),
            V::Keyword(k) => {
                state.write_u8(1);
                k.hash(state);
            }
            V::Symbol(s) => {
                state.write_u8(2);
                s.hash(state);
            }
            V::Vector(v) | V::List(v) => v.hash(state),
            V::Map(m) => m.hash(state),
            V::Set(s) => s.hash(state),
            V::Inst(i) => i.hash(state),
            V::Uuid(u) => u.hash(state),
            V::Bytes(b) => b.hash(state),
            V::Tagged(t) => t.hash(state),
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value { Value::Int(i64::from(v)) }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Str(v)
    }
}
impl From<Keyword> for Value {
    fn from(v: Keyword) -> Value {
        Value::Keyword(v)
    }
}
impl From<Map> for Value {
    fn from(v: Map) -> Value {
        Value::Map(v)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Value {
        Value::Vector(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Nil, Into::into)
    }
}
