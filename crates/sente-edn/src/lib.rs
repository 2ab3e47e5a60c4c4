//! edn for Rust: a dynamic [`Value`], a reader that accepts what Clojure's edn reader accepts, a
//! printer that matches Clojure's `pr-str` byte for byte, and serde support.
#![forbid(unsafe_code)]

mod value;

pub use value::{BigDec, BigInt, Inst, Keyword, Map, Ratio, Set, Symbol, Tagged, Value};
