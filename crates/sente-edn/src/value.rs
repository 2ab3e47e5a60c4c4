//! The dynamic edn [`Value`] and its building blocks.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

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
///
/// Equality and hashing cost O(n log n) in the size of the map, whatever its nesting: a map
/// remembers its own hash once computed, and compares entries through their hashes.
#[derive(Default)]
pub struct Map(Vec<(Value, Value)>, HashCache);

impl Map {
    /// An empty map.
    pub fn new() -> Self {
        Map(Vec::new(), HashCache::default())
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Map(Vec::with_capacity(n), HashCache::default())
    }

    /// Inserts or replaces the value for `key`, returning the old value. This scans the entries
    /// (O(n)); build large maps with [`Map::from_entries`] or `collect`.
    pub fn insert(&mut self, key: Value, value: Value) -> Option<Value> {
        self.1.clear();
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == key) {
            return Some(std::mem::replace(&mut slot.1, value));
        }
        self.0.push((key, value));
        None
    }

    /// Appends an entry without checking for an existing key (readers check duplicates).
    pub(crate) fn push_unchecked(&mut self, key: Value, value: Value) {
        self.1.clear();
        self.0.push((key, value));
    }

    /// A map from entries whose keys are known to be distinct.
    pub(crate) fn from_entries_unchecked(entries: Vec<(Value, Value)>) -> Self {
        Map(entries, HashCache::default())
    }

    /// Builds a map from entries in expected O(n log n) (decoders use this: `insert` scans
    /// linearly). A repeated key keeps its first position and its last value.
    pub fn from_entries(entries: Vec<(Value, Value)>) -> Self {
        if few_distinct(&entries, |e| &e.0) {
            return Map(entries, HashCache::default());
        }
        let mut out: Vec<(Value, Value)> = Vec::with_capacity(entries.len());
        dedup_into(entries, &mut out, |e| &e.0, |slot, e| slot.1 = e.1);
        Map(out, HashCache::default())
    }

    /// This map's hash under the process-wide key, computed once: the number of entries and the
    /// (order-independent) sum of the entries' hashes.
    fn structural_hash(&self) -> u64 {
        self.1.get_or_compute(|| {
            let sum = self
                .0
                .iter()
                .map(|(k, v)| keyed_hash(&(k, v)))
                .fold(0, u64::wrapping_add);
            keyed_hash(&(self.0.len(), sum))
        })
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

impl Clone for Map {
    fn clone(&self) -> Self {
        Map(self.0.clone(), self.1.clone())
    }
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Map").field(&self.0).finish()
    }
}

impl PartialEq for Map {
    fn eq(&self, other: &Self) -> bool {
        if std::ptr::eq(self, other) {
            return true;
        }
        self.len() == other.len()
            && self.structural_hash() == other.structural_hash()
            && same_members(&self.0, &other.0, |e| &e.0, |a, b| a.1 == b.1)
    }
}
impl Eq for Map {}

impl Hash for Map {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.structural_hash());
    }
}

impl FromIterator<(Value, Value)> for Map {
    /// A repeated key keeps its first position and its last value, as with [`Map::insert`].
    fn from_iter<I: IntoIterator<Item = (Value, Value)>>(iter: I) -> Self {
        Map::from_entries(iter.into_iter().collect())
    }
}

/// An edn set. Elements keep insertion order; equality ignores order.
///
/// Equality and hashing cost O(n log n) in the size of the set, whatever its nesting (see
/// [`Map`]).
#[derive(Default)]
pub struct Set(Vec<Value>, HashCache);

impl Set {
    /// An empty set.
    pub fn new() -> Self {
        Set(Vec::new(), HashCache::default())
    }

    /// Adds `value`; returns false if it was already present. This scans the elements (O(n));
    /// build large sets with [`Set::from_values`] or `collect`.
    pub fn insert(&mut self, value: Value) -> bool {
        if self.contains(&value) {
            return false;
        }
        self.1.clear();
        self.0.push(value);
        true
    }

    /// Appends without checking for duplicates (readers check duplicates).
    #[allow(dead_code)]
    pub(crate) fn push_unchecked(&mut self, value: Value) {
        self.1.clear();
        self.0.push(value);
    }

    /// A set from elements known to be distinct.
    pub(crate) fn from_vec_unchecked(items: Vec<Value>) -> Self {
        Set(items, HashCache::default())
    }

    /// Builds a set from values in expected O(n log n), dropping repeated elements (decoders use
    /// this: `insert` scans linearly).
    pub fn from_values(items: Vec<Value>) -> Self {
        if few_distinct(&items, |v| v) {
            return Set(items, HashCache::default());
        }
        let mut out = Vec::with_capacity(items.len());
        dedup_into(items, &mut out, |v| v, |_, _| {});
        Set(out, HashCache::default())
    }

    /// This set's hash under the process-wide key, computed once (see [`Map`]).
    fn structural_hash(&self) -> u64 {
        self.1.get_or_compute(|| {
            let sum = self.0.iter().map(keyed_hash).fold(0, u64::wrapping_add);
            keyed_hash(&(self.0.len(), sum))
        })
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

impl Clone for Set {
    fn clone(&self) -> Self {
        Set(self.0.clone(), self.1.clone())
    }
}

impl std::fmt::Debug for Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Set").field(&self.0).finish()
    }
}

impl PartialEq for Set {
    fn eq(&self, other: &Self) -> bool {
        if std::ptr::eq(self, other) {
            return true;
        }
        self.len() == other.len()
            && self.structural_hash() == other.structural_hash()
            && same_members(&self.0, &other.0, |v| v, |_, _| true)
    }
}
impl Eq for Set {}

impl Hash for Set {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.structural_hash());
    }
}

impl FromIterator<Value> for Set {
    /// A repeated element keeps its first position, as with [`Set::insert`].
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Self {
        Set::from_values(iter.into_iter().collect())
    }
}

/// A map's or set's hash once computed (0: not yet). Recomputing is harmless, so relaxed
/// atomics suffice, and `Value` stays `Sync`.
#[derive(Default)]
struct HashCache(AtomicU64);

impl HashCache {
    fn get_or_compute(&self, compute: impl FnOnce() -> u64) -> u64 {
        match self.0.load(Ordering::Relaxed) {
            0 => {
                let h = compute().max(1);
                self.0.store(h, Ordering::Relaxed);
                h
            }
            h => h,
        }
    }

    fn clear(&mut self) {
        *self.0.get_mut() = 0;
    }
}

impl Clone for HashCache {
    fn clone(&self) -> Self {
        HashCache(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

/// Hashes with a key chosen at random once per process, so hostile input cannot aim for
/// collisions (the cached hashes of maps and sets must all use the same key).
pub(crate) fn keyed_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    KEY.get_or_init(std::collections::hash_map::RandomState::new)
        .hash_one(value)
}

/// Whether every item of `a` has an item of `b` with an equal key for which `matches` holds.
/// Both hold distinct keys and have the same length. O(n log n): items are paired through their
/// keys' hashes, so only equal keys (or a 64-bit hash collision) are ever compared.
fn same_members<T>(
    a: &[T],
    b: &[T],
    key: impl Fn(&T) -> &Value,
    matches: impl Fn(&T, &T) -> bool,
) -> bool {
    let mut index: Vec<(u64, usize)> = b
        .iter()
        .enumerate()
        .map(|(i, x)| (keyed_hash(key(x)), i))
        .collect();
    index.sort_unstable();
    a.iter().all(|x| {
        let (k, h) = (key(x), keyed_hash(key(x)));
        let from = index.partition_point(|&(hb, _)| hb < h);
        index[from..]
            .iter()
            .take_while(|&&(hb, _)| hb == h)
            .any(|&(_, i)| key(&b[i]) == k && matches(x, &b[i]))
    })
}

/// Whether `items` are a few (at most 8) with scalar keys, all distinct: kept as they are, the
/// common case of a decoded map or set (no copy into a new vector).
fn few_distinct<T>(items: &[T], key: impl Fn(&T) -> &Value) -> bool {
    items.len() <= 8
        && items.iter().all(|x| key(x).is_scalar())
        && items
            .iter()
            .enumerate()
            .all(|(i, a)| items[..i].iter().all(|b| key(a) != key(b)))
}

/// Moves `items` into `out`, merging items with an equal key via `merge` (expected O(n log n)
/// whatever the items: a randomly keyed hash indexes `out`, so hostile input cannot aim for
/// collisions, and only items with equal hashes are compared).
fn dedup_into<T>(
    items: Vec<T>,
    out: &mut Vec<T>,
    key: impl Fn(&T) -> &Value,
    merge: impl Fn(&mut T, T),
) {
    // A few scalars: comparing them all is cheaper than hashing. (Comparing nested values
    // pairwise would compound across levels.)
    if items.len() <= 8 && items.iter().all(|x| key(x).is_scalar()) {
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

    /// Whether this value holds no other value (so comparing it never recurses).
    pub(crate) fn is_scalar(&self) -> bool {
        !matches!(
            self,
            Value::Vector(_)
                | Value::List(_)
                | Value::Map(_)
                | Value::Set(_)
                | Value::Ratio(_)
                | Value::Tagged(_)
        )
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
    /// Every kind writes its own tag first (vectors and lists share one, as they are equal), so
    /// values that are not equal do not hash alike by construction (`0` and `0.0`, `nil` and
    /// `false`, a string and a symbol with the same text).
    fn hash<H: Hasher>(&self, state: &mut H) {
        use Value as V;
        match self {
            V::Nil => state.write_u8(0),
            V::Bool(b) => {
                state.write_u8(1);
                b.hash(state);
            }
            V::Int(i) => {
                state.write_u8(2);
                i.hash(state);
            }
            V::BigInt(b) => {
                state.write_u8(3);
                b.hash(state);
            }
            V::Float(f) => {
                state.write_u8(4);
                f.to_bits().hash(state);
            }
            V::BigDec(d) => {
                state.write_u8(5);
                d.hash(state);
            }
            V::Ratio(r) => {
                state.write_u8(6);
                r.hash(state);
            }
            V::Str(s) => {
                state.write_u8(7);
                s.hash(state);
            }
            V::Char(c) => {
                state.write_u8(8);
                c.hash(state);
            }
            V::Keyword(k) => {
                state.write_u8(9);
                k.hash(state);
            }
            V::Symbol(s) => {
                state.write_u8(10);
                s.hash(state);
            }
            V::Vector(v) | V::List(v) => {
                state.write_u8(11);
                v.hash(state);
            }
            V::Map(m) => {
                state.write_u8(12);
                m.hash(state);
            }
            V::Set(s) => {
                state.write_u8(13);
                s.hash(state);
            }
            V::Inst(i) => {
                state.write_u8(14);
                i.hash(state);
            }
            V::Uuid(u) => {
                state.write_u8(15);
                u.hash(state);
            }
            V::Bytes(b) => {
                state.write_u8(16);
                b.hash(state);
            }
            V::Tagged(t) => {
                state.write_u8(17);
                t.hash(state);
            }
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
