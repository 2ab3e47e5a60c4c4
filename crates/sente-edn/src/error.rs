//! The crate's error type.

use std::fmt;

/// Where in the input an error was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// 0-based byte offset into the input.
    pub offset: usize,
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to the text's length).
    pub(crate) fn of(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.bytes().filter(|&b| b == b'\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            offset,
        }
    }
}

/// The kind of form the reader was in the middle of when the input ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Form {
    /// `[...]`
    Vector,
    /// `(...)`
    List,
    /// `{...}`
    Map,
    /// `#{...}`
    Set,
    /// `"..."`
    String,
    /// `\c`
    Character,
    /// `#tag form`
    Tagged,
    /// `#_ form`
    Discard,
    /// `^meta form`
    Meta,
    /// `#:ns{...}`
    NamespacedMap,
    /// `## name` or another dispatch form.
    Dispatch,
    /// `:keyword` (a lone `:`).
    Keyword,
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Form::Vector => "vector",
            Form::List => "list",
            Form::Map => "map",
            Form::Set => "set",
            Form::String => "string",
            Form::Character => "character",
            Form::Tagged => "tagged literal",
            Form::Discard => "discarded form (#_)",
            Form::Meta => "metadata form (^)",
            Form::NamespacedMap => "namespaced map",
            Form::Dispatch => "dispatch form (#)",
            Form::Keyword => "keyword",
        })
    }
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ended inside a form; the error position is where that form starts.
    #[error("unexpected EOF while reading {0} starting")]
    UnexpectedEof(Form),
    /// A closing delimiter that matches no open collection (or the wrong one).
    #[error("unmatched delimiter `{0}`")]
    UnmatchedDelimiter(char),
    /// A character that cannot start or continue a form here.
    #[error("unexpected character `{0}`")]
    UnexpectedChar(char),
    /// A number token that is not a valid edn number.
    #[error("invalid number `{0}`")]
    InvalidNumber(String),
    /// A symbol or keyword token that is not valid edn.
    #[error("invalid token `{0}`")]
    InvalidToken(String),
    /// `::auto-resolved` keywords (and `#::{}` maps) do not exist in edn.
    #[error("auto-resolved keyword `{0}` is not valid edn")]
    AutoResolvedKeyword(String),
    /// A bad escape sequence in a string.
    #[error("invalid string escape `{0}`")]
    InvalidEscape(String),
    /// A bad character literal.
    #[error("invalid character literal `{0}`")]
    InvalidCharacter(String),
    /// A dispatch macro edn does not have (`#"regex"`, `#(...)`, `#'var`, ...).
    #[error("unsupported dispatch `#{0}` (not edn)")]
    InvalidDispatch(char),
    /// A map literal with an odd number of forms.
    #[error("map literal must contain an even number of forms")]
    OddMapForms,
    /// A map literal with the same key twice.
    #[error("duplicate key: {0}")]
    DuplicateKey(String),
    /// A set literal with the same element twice.
    #[error("duplicate set element: {0}")]
    DuplicateSetElement(String),
    /// Nesting deeper than [`ReadOptions::max_depth`](crate::ReadOptions::max_depth).
    #[error("nesting deeper than the maximum of {0}")]
    TooDeep(usize),
    /// A collection with more elements than
    /// [`ReadOptions::max_collection_len`](crate::ReadOptions::max_collection_len).
    #[error("collection longer than the maximum of {0} elements")]
    TooLong(usize),
    /// A malformed `#inst` timestamp.
    #[error("invalid #inst: {0}")]
    InvalidInst(String),
    /// A malformed `#uuid`.
    #[error("invalid #uuid: {0}")]
    InvalidUuid(String),
    /// A tag that is not a valid symbol, or `#inst`/`#uuid` applied to a non-string.
    #[error("invalid tag: {0}")]
    InvalidTag(String),
    /// A tag other than `inst`/`uuid` while [`UnknownTags::Error`](crate::UnknownTags::Error)
    /// is in force.
    #[error("no reader function for tag {0}")]
    UnknownTag(String),
    /// [`Value::Bytes`](crate::Value::Bytes) has no edn representation.
    #[error("bytes have no edn representation")]
    BytesNotEdn,
    /// A serde (de)serialization error.
    #[error("{0}")]
    Message(String),
}

/// An error from reading, strict printing or serde conversion.
///
/// Reader errors carry the [`Position`] of the problem; for an unterminated form it is where the
/// form starts. Display looks like
/// `unexpected EOF while reading vector starting at line 1, column 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    position: Option<Position>,
}

impl Error {
    /// An error without a position.
    pub fn new(kind: ErrorKind) -> Error {
        Error {
            kind,
            position: None,
        }
    }

    /// An error at byte `offset` of `text`.
    pub(crate) fn at(kind: ErrorKind, text: &str, offset: usize) -> Error {
        Error {
            kind,
            position: Some(Position::of(text, offset)),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Where it went wrong (reader errors only).
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// 1-based line (reader errors only).
    pub fn line(&self) -> Option<usize> {
        self.position.map(|p| p.line)
    }

    /// 1-based column in characters (reader errors only).
    pub fn column(&self) -> Option<usize> {
        self.position.map(|p| p.column)
    }

    /// 0-based byte offset (reader errors only).
    pub fn offset(&self) -> Option<usize> {
        self.position.map(|p| p.offset)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{} at line {}, column {}", self.kind, p.line, p.column),
            None => fmt::Display::fmt(&self.kind, f),
        }
    }
}

impl std::error::Error for Error {}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error::new(kind)
    }
}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Error {
        Error::new(ErrorKind::Message(msg.to_string()))
    }
}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Error {
        Error::new(ErrorKind::Message(msg.to_string()))
    }
}

/// Shortens attacker-controlled text for error messages.
pub(crate) fn snippet(text: &str) -> String {
    const MAX: usize = 64;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
