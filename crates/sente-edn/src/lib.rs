//! edn for Rust: a dynamic [`Value`], a reader that accepts what Clojure's edn reader accepts, a
//! printer that matches Clojure's `pr-str` byte for byte, and serde support.
//!
//! # Reading and printing
//!
//! [`read`] reads the first form of a text (Sente's rule: trailing text is ignored, empty input
//! is `nil`). [`Value`]'s `Display`, [`to_edn_string`] and [`write_edn`] print exactly like
//! Clojure's `pr-str`, so a canonical text reads and prints back byte for byte:
//!
//! ```
//! use sente_edn::{read, to_edn_string, ReadOptions, Value};
//!
//! let text = r#"[[:my-app/b {:x [1 2 3], :y "s"}] #inst "2024-01-02T03:04:05.678-00:00" 1.0E10]"#;
//! let v = read(text, &ReadOptions::default())?;
//! assert_eq!(to_edn_string(&v), text);
//!
//! // Commas, comments and discards are whitespace; maps print with ", " between entries.
//! let v = read("{:a 1 ; comment\n :b #_ ignored [2]}", &ReadOptions::default())?;
//! assert_eq!(v.to_string(), "{:a 1, :b [2]}");
//! assert_eq!(v.as_map().and_then(|m| m.get_kw("a")), Some(&Value::Int(1)));
//!
//! // Errors say what and where.
//! let err = read("[1 2", &ReadOptions::default()).unwrap_err();
//! assert_eq!(err.to_string(), "unexpected EOF while reading vector starting at line 1, column 1");
//! # Ok::<(), sente_edn::Error>(())
//! ```
//!
//! # serde
//!
//! [`to_value`] / [`to_string`] and [`from_value`] / [`from_str`] convert Rust types. Structs
//! become maps with **keyword** keys named after the fields as written; for Clojure-style keys
//! add `#[serde(rename_all = "kebab-case")]`. Unit enum variants become keywords and other
//! variants one-entry maps `{:variant value}`. Reading is lenient: keywords deserialize as
//! strings without the colon, integers as floats, vectors/lists/sets as sequences.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! #[serde(rename_all = "kebab-case")]
//! struct Reply {
//!     ok: bool,
//!     user_id: Option<u64>,
//!     status: Status,
//! }
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! #[serde(rename_all = "kebab-case")]
//! enum Status {
//!     Active,
//!     Banned { reason: String },
//! }
//!
//! let r = Reply { ok: true, user_id: Some(42), status: Status::Active };
//! let text = sente_edn::to_string(&r)?;
//! assert_eq!(text, "{:ok true, :user-id 42, :status :active}");
//! assert_eq!(sente_edn::from_str::<Reply>(&text)?, r);
//!
//! let banned: Reply =
//!     sente_edn::from_str(r#"{:ok false :user-id nil :status {:banned {:reason "spam"}}}"#)?;
//! assert_eq!(banned.status, Status::Banned { reason: "spam".into() });
//! # Ok::<(), sente_edn::Error>(())
//! ```
//!
//! # Limits
//!
//! The reader never recurses (nesting is kept on an explicit stack) and enforces
//! [`ReadOptions::max_depth`] and [`ReadOptions::max_collection_len`] while reading, so hostile
//! input fails fast with a positioned [`Error`] instead of exhausting the stack or memory. It
//! never panics.
//!
//! # Deviations from Clojure
//!
//! - `#inst` keeps nanoseconds (Clojure's default reader truncates to milliseconds); the printer
//!   writes 9 fraction digits when the instant is not a whole millisecond, like
//!   `java.sql.Timestamp`. Dates use the proleptic Gregorian calendar.
//! - Doubles print with the shortest round-trip digits, as `Double.toString` does since JDK 19.
//! - Metadata (`^{...} form`) is read and dropped.
//! - [`Value::Bytes`] (binary packers only) prints as a vector of integers `0..=255`;
//!   [`try_to_edn_string`] rejects it instead.
#![forbid(unsafe_code)]

mod de;
mod error;
mod inst;

/// Proleptic Gregorian calendar arithmetic behind `#inst` (shared with the packers' RFC 3339
/// codecs).
pub mod calendar {
    pub use crate::inst::{civil_from_days, days_from_civil, days_in_month, is_leap};
}
mod print;
mod read;
mod ser;
mod value;

pub use de::{from_str, from_value, from_value_ref};
pub use error::{Error, ErrorKind, Form, Position};
pub use print::{to_edn_string, try_to_edn_string, try_write_edn, write_edn};
pub use read::{ReadOptions, Reader, UnknownTags, read, read_all};
pub use ser::{to_string, to_value};
pub use value::{BigDec, BigInt, Inst, Keyword, Map, Ratio, Set, Symbol, Tagged, Value};
