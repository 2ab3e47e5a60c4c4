//! The reader: accepts what Clojure's edn readers (`clojure.edn`, tools.reader edn) accept.
//!
//! It works on an explicit stack (no recursion), so nesting depth can never overflow the call
//! stack, and it checks [`ReadOptions`] limits before growing anything.

use crate::error::{Error, ErrorKind, Form, snippet};
use crate::inst::parse_inst;
use crate::value::{BigDec, BigInt, Keyword, Map, Ratio, Set, Symbol, Tagged, Value};

/// What to do with a tagged literal whose tag is neither `inst` nor `uuid`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UnknownTags {
    /// Keep it as [`Value::Tagged`] (the default).
    #[default]
    Keep,
    /// Fail with [`ErrorKind::UnknownTag`] (what Sente's own edn packer does).
    Error,
}

/// Limits and policies for [`read`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadOptions {
    /// Maximum nesting of collections and prefix forms (`#tag`, `#_`, `^`). Default 64.
    pub max_depth: usize,
    /// Maximum number of elements (map entries for maps) of one collection. Default 100 000.
    pub max_collection_len: usize,
    /// Policy for unknown tags. Default [`UnknownTags::Keep`].
    pub unknown_tags: UnknownTags,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_depth: 64,
            max_collection_len: 100_000,
            unknown_tags: UnknownTags::Keep,
        }
    }
}

/// Reads the first form of `text`.
///
/// Leading whitespace and comments are skipped and anything after the first form is ignored
/// (as Sente's reader does). Empty or whitespace-only input reads as `nil`.
///
/// ```
/// use sente_edn::{read, ReadOptions, Value};
/// let v = read("  [:chsk/ws-ping nil] trailing", &ReadOptions::default()).unwrap();
/// assert_eq!(v, Value::Vector(vec![Value::kw("chsk/ws-ping"), Value::Nil]));
/// assert_eq!(read("", &ReadOptions::default()).unwrap(), Value::Nil);
/// ```
pub fn read(text: &str, opts: &ReadOptions) -> Result<Value, Error> {
    Ok(Parser::new(text, opts).read_form()?.unwrap_or(Value::Nil))
}

/// Reads every form of `text`.
pub fn read_all(text: &str, opts: &ReadOptions) -> Result<Vec<Value>, Error> {
    Reader::new(text, opts).collect()
}

/// An iterator over the forms of a text; stops after the first error.
pub struct Reader<'a> {
    parser: Parser<'a>,
    done: bool,
}

impl<'a> Reader<'a> {
    /// A reader over `text`.
    pub fn new(text: &'a str, opts: &'a ReadOptions) -> Self {
        Reader {
            parser: Parser::new(text, opts),
            done: false,
        }
    }

    /// Byte offset just after the last form read.
    pub fn offset(&self) -> usize {
        self.parser.pos
    }
}

impl Iterator for Reader<'_> {
    type Item = Result<Value, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.parser.read_form() {
            Ok(Some(v)) => Some(Ok(v)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

enum Kind<'a> {
    Vector(Vec<Value>),
    List(Vec<Value>),
    Set(Vec<Value>),
    Map {
        entries: Vec<(Value, Value)>,
        pending: Option<Value>,
        ns: Option<&'a str>,
    },
    Tagged(&'a str),
    Discard,
    Meta {
        seen_meta: bool,
    },
}

struct Frame<'a> {
    start: usize,
    kind: Kind<'a>,
}

impl Frame<'_> {
    fn form(&self) -> Form {
        match self.kind {
            Kind::Vector(_) => Form::Vector,
            Kind::List(_) => Form::List,
            Kind::Set(_) => Form::Set,
            Kind::Map { ns: None, .. } => Form::Map,
            Kind::Map { ns: Some(_), .. } => Form::NamespacedMap,
            Kind::Tagged(_) => Form::Tagged,
            Kind::Discard => Form::Discard,
            Kind::Meta { .. } => Form::Meta,
        }
    }
}

/// What a dispatch (`#`) produced.
enum Step {
    /// A frame was pushed (or a comment skipped): keep reading.
    Continue,
    /// A complete value.
    Value(Value),
}

struct Parser<'a> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    opts: &'a ReadOptions,
    stack: Vec<Frame<'a>>,
}

/// Java's `Character.isWhitespace`, plus the comma.
fn is_ws_char(c: char) -> bool {
    matches!(
        c,
        ' ' | ','
            | '\t'..='\r'
            | '\u{1c}'..='\u{1f}'
            | '\u{1680}'
            | '\u{2000}'..='\u{2006}'
            | '\u{2008}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Macro characters that end a symbol token.
fn is_terminating(b: u8) -> bool {
    matches!(
        b,
        b'"' | b';' | b'^' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'\\'
    )
}

/// Macro characters that end a number token (all edn macros).
fn is_macro(b: u8) -> bool {
    is_terminating(b) || b == b'#' || b == b':'
}

/// tools.reader's `parse-symbol`: whether `token` is a valid symbol / keyword body.
fn valid_symbol(token: &str) -> bool {
    if token.is_empty() || token.ends_with(':') || token.starts_with("::") {
        return false;
    }
    match token.find('/') {
        Some(i) if i > 0 => {
            let (ns, name) = (&token[..i], &token[i + 1..]);
            !name.is_empty()
                && !name.as_bytes()[0].is_ascii_digit()
                && !ns.ends_with(':')
                && (name == "/" || !name.contains('/'))
        }
        Some(_) => token == "/",
        None => true,
    }
}

/// Whether `token` can begin a symbol read on its own (edn: not with a digit, `#` or `:`, nor
/// with `+`, `-` or `.` followed by a digit, which reads as a number).
fn starts_symbol(token: &str) -> bool {
    let b = token.as_bytes();
    match b.first() {
        None | Some(b'0'..=b'9' | b'#' | b':') => false,
        Some(b'+' | b'-' | b'.') => !b.get(1).is_some_and(u8::is_ascii_digit),
        Some(_) => true,
    }
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, opts: &'a ReadOptions) -> Self {
        Parser {
            text,
            b: text.as_bytes(),
            pos: 0,
            opts,
            stack: Vec::new(),
        }
    }

    fn err(&self, kind: ErrorKind, at: usize) -> Error {
        Error::at(kind, self.text, at)
    }

    /// The char starting at byte `i` (which must be a char boundary inside the text).
    fn char_at(&self, i: usize) -> char {
        self.text[i..].chars().next().unwrap_or('\u{fffd}')
    }

    /// Whether the char at `i` is whitespace; also returns its UTF-8 length.
    fn ws_at(&self, i: usize) -> (bool, usize) {
        let b = self.b[i];
        if b < 0x80 {
            (
                b == b' '
                    || b == b','
                    || (b'\t'..=b'\r').contains(&b)
                    || (0x1c..=0x1f).contains(&b),
                1,
            )
        } else {
            let c = self.char_at(i);
            (is_ws_char(c), c.len_utf8())
        }
    }

    fn skip_ws(&mut self) {
        while self.pos < self.b.len() {
            let b = self.b[self.pos];
            if b == b';' {
                self.skip_line();
                continue;
            }
            let (ws, len) = self.ws_at(self.pos);
            if !ws {
                return;
            }
            self.pos += len;
        }
    }

    fn skip_line(&mut self) {
        match self.b[self.pos..].iter().position(|&b| b == b'\n') {
            Some(i) => self.pos += i + 1,
            None => self.pos = self.b.len(),
        }
    }

    /// End of the token starting at `start`; `number` tokens also stop at `#` and `:`.
    fn token_end(&self, start: usize, number: bool) -> Result<usize, Error> {
        let mut i = start;
        while i < self.b.len() {
            let b = self.b[i];
            if b < 0x80 {
                if is_terminating(b) || (number && is_macro(b)) || self.ws_at(i).0 {
                    break;
                }
                if matches!(b, b'@' | b'`' | b'~') {
                    return Err(self.err(ErrorKind::UnexpectedChar(b as char), i));
                }
                i += 1;
            } else {
                let (ws, len) = self.ws_at(i);
                if ws {
                    break;
                }
                i += len;
            }
        }
        Ok(i)
    }

    fn push(&mut self, start: usize, kind: Kind<'a>) -> Result<(), Error> {
        if self.stack.len() >= self.opts.max_depth {
            return Err(self.err(ErrorKind::TooDeep(self.opts.max_depth), start));
        }
        self.stack.push(Frame { start, kind });
        Ok(())
    }

    /// Reads the next complete form; `None` at the end of the input.
    fn read_form(&mut self) -> Result<Option<Value>, Error> {
        self.stack.clear();
        loop {
            self.skip_ws();
            let Some(&c) = self.b.get(self.pos) else {
                return match self.stack.last() {
                    None => Ok(None),
                    Some(f) => Err(self.err(ErrorKind::UnexpectedEof(f.form()), f.start)),
                };
            };
            let start = self.pos;
            let value = match c {
                b'[' | b'(' | b'{' => {
                    let kind = match c {
                        b'[' => Kind::Vector(Vec::new()),
                        b'(' => Kind::List(Vec::new()),
                        _ => Kind::Map {
                            entries: Vec::new(),
                            pending: None,
                            ns: None,
                        },
                    };
                    self.push(start, kind)?;
                    self.pos += 1;
                    continue;
                }
                b'^' => {
                    self.push(start, Kind::Meta { seen_meta: false })?;
                    self.pos += 1;
                    continue;
                }
                b']' | b')' | b'}' => {
                    self.pos += 1;
                    self.close(c, start)?
                }
                b'"' => self.read_string()?,
                b'\\' => self.read_char()?,
                b':' => self.read_keyword()?,
                b'#' => match self.dispatch(start)? {
                    Step::Continue => continue,
                    Step::Value(v) => v,
                },
                b'0'..=b'9' => self.read_number()?,
                b'+' | b'-' if self.b.get(start + 1).is_some_and(u8::is_ascii_digit) => {
                    self.read_number()?
                }
                _ => self.read_symbol()?,
            };
            if let Some(v) = self.deliver(value)? {
                return Ok(Some(v));
            }
        }
    }

    /// Hands a complete value to the innermost open frame; returns it if no frame is open.
    fn deliver(&mut self, mut value: Value) -> Result<Option<Value>, Error> {
        let max_len = self.opts.max_collection_len;
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(Some(value));
            };
            let start = top.start;
            match &mut top.kind {
                Kind::Vector(v) | Kind::List(v) | Kind::Set(v) => {
                    if v.len() >= max_len {
                        return Err(self.err(ErrorKind::TooLong(max_len), start));
                    }
                    v.push(value);
                    return Ok(None);
                }
                Kind::Map {
                    entries, pending, ..
                } => {
                    match pending.take() {
                        None => *pending = Some(value),
                        Some(k) => {
                            if entries.len() >= max_len {
                                return Err(self.err(ErrorKind::TooLong(max_len), start));
                            }
                            entries.push((k, value));
                        }
                    }
                    return Ok(None);
                }
                Kind::Discard => {
                    self.stack.pop();
                    return Ok(None);
                }
                Kind::Meta { seen_meta } => {
                    if !*seen_meta {
                        *seen_meta = true;
                        return Ok(None);
                    }
                    // Metadata is dropped; the annotated form goes to the enclosing frame.
                    self.stack.pop();
                }
                Kind::Tagged(tag) => {
                    let tag = *tag;
                    self.stack.pop();
                    value = self.tagged(tag, value, start)?;
                }
            }
        }
    }

    fn tagged(&self, tag: &str, value: Value, start: usize) -> Result<Value, Error> {
        match tag {
            "inst" => match &value {
                Value::Str(s) => parse_inst(s).map(Value::Inst).map_err(|e| {
                    self.err(
                        ErrorKind::InvalidInst(format!("{e}: {:?}", snippet(s))),
                        start,
                    )
                }),
                _ => Err(self.err(
                    ErrorKind::InvalidTag("#inst expects a string".into()),
                    start,
                )),
            },
            "uuid" => match &value {
                Value::Str(s) => uuid::Uuid::try_parse(s).map(Value::Uuid).map_err(|_| {
                    self.err(ErrorKind::InvalidUuid(format!("{:?}", snippet(s))), start)
                }),
                _ => Err(self.err(
                    ErrorKind::InvalidTag("#uuid expects a string".into()),
                    start,
                )),
            },
            _ => match self.opts.unknown_tags {
                UnknownTags::Keep => Ok(Value::Tagged(Box::new(Tagged {
                    tag: Symbol::new(tag),
                    value,
                }))),
                UnknownTags::Error => Err(self.err(ErrorKind::UnknownTag(snippet(tag)), start)),
            },
        }
    }

    /// Closes the innermost collection with delimiter `c` found at `at`.
    fn close(&mut self, c: u8, at: usize) -> Result<Value, Error> {
        let expected = match self.stack.last().map(|f| &f.kind) {
            Some(Kind::Vector(_)) => b']',
            Some(Kind::List(_)) => b')',
            Some(Kind::Map { .. } | Kind::Set(_)) => b'}',
            _ => 0,
        };
        if expected != c {
            return Err(self.err(ErrorKind::UnmatchedDelimiter(c as char), at));
        }
        let Some(frame) = self.stack.pop() else {
            return Err(self.err(ErrorKind::UnmatchedDelimiter(c as char), at));
        };
        Ok(match frame.kind {
            Kind::Vector(v) => Value::Vector(v),
            Kind::List(v) => Value::List(v),
            Kind::Set(v) => {
                if let Some(i) = first_duplicate(&v, |x| x) {
                    let shown = snippet(&v[i].to_string());
                    return Err(self.err(ErrorKind::DuplicateSetElement(shown), frame.start));
                }
                Value::Set(Set::from_vec_unchecked(v))
            }
            Kind::Map {
                mut entries,
                pending,
                ns,
            } => {
                if pending.is_some() {
                    return Err(self.err(ErrorKind::OddMapForms, frame.start));
                }
                if let Some(ns) = ns {
                    for (k, _) in &mut entries {
                        qualify_key(k, ns);
                    }
                }
                if let Some(i) = first_duplicate(&entries, |(k, _)| k) {
                    let shown = snippet(&entries[i].0.to_string());
                    return Err(self.err(ErrorKind::DuplicateKey(shown), frame.start));
                }
                Value::Map(Map::from_entries_unchecked(entries))
            }
            Kind::Tagged(_) | Kind::Discard | Kind::Meta { .. } => {
                return Err(self.err(ErrorKind::UnmatchedDelimiter(c as char), at));
            }
        })
    }

    fn dispatch(&mut self, start: usize) -> Result<Step, Error> {
        let Some(&c) = self.b.get(start + 1) else {
            return Err(self.err(ErrorKind::UnexpectedEof(Form::Dispatch), start));
        };
        match c {
            b'{' => {
                self.push(start, Kind::Set(Vec::new()))?;
                self.pos = start + 2;
                Ok(Step::Continue)
            }
            b'_' => {
                self.push(start, Kind::Discard)?;
                self.pos = start + 2;
                Ok(Step::Continue)
            }
            b'^' => {
                self.push(start, Kind::Meta { seen_meta: false })?;
                self.pos = start + 2;
                Ok(Step::Continue)
            }
            b'!' => {
                self.pos = start + 2;
                self.skip_line();
                Ok(Step::Continue)
            }
            b'#' => {
                self.pos = start + 2;
                self.skip_ws();
                let tstart = self.pos;
                let end = self.token_end(tstart, false)?;
                self.pos = end;
                match &self.text[tstart..end] {
                    "Inf" => Ok(Step::Value(Value::Float(f64::INFINITY))),
                    "-Inf" => Ok(Step::Value(Value::Float(f64::NEG_INFINITY))),
                    "NaN" => Ok(Step::Value(Value::Float(f64::NAN))),
                    "" if end == self.b.len() => {
                        Err(self.err(ErrorKind::UnexpectedEof(Form::Dispatch), start))
                    }
                    t => Err(self.err(ErrorKind::InvalidToken(format!("##{}", snippet(t))), start)),
                }
            }
            b':' => {
                let tstart = start + 2;
                if self.b.get(tstart) == Some(&b':') {
                    return Err(self.err(ErrorKind::AutoResolvedKeyword("#::".into()), start));
                }
                let end = self.token_end(tstart, false)?;
                let ns = &self.text[tstart..end];
                // The namespace must read back as the start of the symbols and keywords it
                // qualifies (`#:#a{b 1}` would make `#a/b`, which does not).
                if ns.contains('/') || !valid_symbol(ns) || !starts_symbol(ns) {
                    return Err(
                        self.err(ErrorKind::InvalidToken(format!("#:{}", snippet(ns))), start)
                    );
                }
                self.pos = end;
                self.skip_ws();
                if self.b.get(self.pos) != Some(&b'{') {
                    if self.pos >= self.b.len() {
                        return Err(self.err(ErrorKind::UnexpectedEof(Form::NamespacedMap), start));
                    }
                    return Err(
                        self.err(ErrorKind::UnexpectedChar(self.char_at(self.pos)), self.pos)
                    );
                }
                self.push(
                    start,
                    Kind::Map {
                        entries: Vec::new(),
                        pending: None,
                        ns: Some(ns),
                    },
                )?;
                self.pos += 1;
                Ok(Step::Continue)
            }
            _ => {
                let tstart = start + 1;
                let end = self.token_end(tstart, false)?;
                let tag = &self.text[tstart..end];
                // Like clojure.edn, a tag must start with a letter (so `#=`, `#+x` are errors).
                if !self.char_at(tstart).is_alphabetic()
                    || matches!(tag, "nil" | "true" | "false")
                    || !valid_symbol(tag)
                {
                    if !self.char_at(tstart).is_alphabetic() {
                        return Err(
                            self.err(ErrorKind::InvalidDispatch(self.char_at(tstart)), start)
                        );
                    }
                    return Err(self.err(ErrorKind::InvalidTag(snippet(tag)), start));
                }
                self.push(start, Kind::Tagged(tag))?;
                self.pos = end;
                Ok(Step::Continue)
            }
        }
    }

    fn read_symbol(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        let end = self.token_end(start, false)?;
        if end == start {
            // Only non-token characters reach here (e.g. a stray `@`).
            return Err(self.err(ErrorKind::UnexpectedChar(self.char_at(start)), start));
        }
        self.pos = end;
        let token = &self.text[start..end];
        Ok(match token {
            "nil" => Value::Nil,
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            t if valid_symbol(t) => Value::Symbol(Symbol::new(t)),
            t => return Err(self.err(ErrorKind::InvalidToken(snippet(t)), start)),
        })
    }

    fn read_keyword(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        let end = self.token_end(start + 1, false)?;
        self.pos = end;
        let token = &self.text[start + 1..end];
        if token.is_empty() {
            if end >= self.b.len() {
                return Err(self.err(ErrorKind::UnexpectedEof(Form::Keyword), start));
            }
            return Err(self.err(ErrorKind::InvalidToken(":".into()), start));
        }
        if token.starts_with(':') {
            return Err(self.err(
                ErrorKind::AutoResolvedKeyword(snippet(&self.text[start..end])),
                start,
            ));
        }
        if token.contains("::") || !valid_symbol(token) {
            return Err(self.err(
                ErrorKind::InvalidToken(snippet(&self.text[start..end])),
                start,
            ));
        }
        Ok(Value::Keyword(Keyword::new(token)))
    }

    #[allow(clippy::many_single_char_names)]
    fn read_string(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        let mut i = start + 1;
        // Fast path: no escapes.
        while i < self.b.len() {
            match self.b[i] {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(Value::Str(self.text[start + 1..i].to_owned()));
                }
                b'\\' => break,
                _ => i += 1,
            }
        }
        let mut out = String::with_capacity(i - start + 16);
        out.push_str(&self.text[start + 1..i]);
        let mut pending_high: Option<u32> = None;
        loop {
            let Some(&b) = self.b.get(i) else {
                return Err(self.err(ErrorKind::UnexpectedEof(Form::String), start));
            };
            if b == b'"' {
                if pending_high.take().is_some() {
                    out.push('\u{fffd}');
                }
                self.pos = i + 1;
                return Ok(Value::Str(out));
            }
            if b != b'\\' {
                if pending_high.take().is_some() {
                    out.push('\u{fffd}');
                }
                let run_end = self.b[i..]
                    .iter()
                    .position(|&x| x == b'"' || x == b'\\')
                    .map_or(self.b.len(), |p| i + p);
                out.push_str(&self.text[i..run_end]);
                i = run_end;
                continue;
            }
            let esc_start = i;
            let Some(&e) = self.b.get(i + 1) else {
                return Err(self.err(ErrorKind::UnexpectedEof(Form::String), start));
            };
            i += 2;
            let simple = match e {
                b't' => Some('\t'),
                b'r' => Some('\r'),
                b'n' => Some('\n'),
                b'\\' => Some('\\'),
                b'"' => Some('"'),
                b'b' => Some('\u{8}'),
                b'f' => Some('\u{c}'),
                _ => None,
            };
            if let Some(ch) = simple {
                if pending_high.take().is_some() {
                    out.push('\u{fffd}');
                }
                out.push(ch);
                continue;
            }
            let code = match e {
                b'u' => {
                    let hex = self
                        .b
                        .get(i..i + 4)
                        .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                    let Some(hex) = hex else {
                        let end = (i + 4).min(self.b.len());
                        let end = (end..=self.b.len())
                            .find(|&k| self.text.is_char_boundary(k))
                            .unwrap_or(end);
                        return Err(self.err(
                            ErrorKind::InvalidEscape(self.text[esc_start..end].to_owned()),
                            esc_start,
                        ));
                    };
                    i += 4;
                    hex.iter().fold(0u32, |acc, &h| {
                        acc * 16 + (h as char).to_digit(16).unwrap_or(0)
                    })
                }
                b'0'..=b'7' => {
                    let mut v = u32::from(e - b'0');
                    let mut n = 1;
                    while n < 3 && self.b.get(i).is_some_and(|d| (b'0'..=b'7').contains(d)) {
                        v = v * 8 + u32::from(self.b[i] - b'0');
                        i += 1;
                        n += 1;
                    }
                    if v > 0o377 {
                        return Err(self.err(
                            ErrorKind::InvalidEscape(self.text[esc_start..i].to_owned()),
                            esc_start,
                        ));
                    }
                    v
                }
                _ => {
                    let ch = if e < 0x80 {
                        e as char
                    } else {
                        self.char_at(i - 1)
                    };
                    return Err(self.err(ErrorKind::InvalidEscape(format!("\\{ch}")), esc_start));
                }
            };
            // UTF-16 surrogate pairs written as two \u escapes form one char; a lone surrogate
            // (which a Rust string cannot hold) becomes U+FFFD.
            if (0xDC00..0xE000).contains(&code) {
                match pending_high.take() {
                    Some(high) => {
                        let c = 0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00);
                        out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                    }
                    None => out.push('\u{fffd}'),
                }
            } else {
                if pending_high.take().is_some() {
                    out.push('\u{fffd}');
                }
                if (0xD800..0xDC00).contains(&code) {
                    pending_high = Some(code);
                } else {
                    out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                }
            }
        }
    }

    fn read_char(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        let first = start + 1;
        if first >= self.b.len() {
            return Err(self.err(ErrorKind::UnexpectedEof(Form::Character), start));
        }
        let c = self.char_at(first);
        let after_first = first + c.len_utf8();
        let b0 = self.b[first];
        let end = if (b0 < 0x80 && (is_terminating(b0) || matches!(b0, b'@' | b'`' | b'~')))
            || is_ws_char(c)
        {
            after_first
        } else {
            self.token_end(after_first, false)?
        };
        self.pos = end;
        let token = &self.text[first..end];
        if end == after_first {
            return Ok(Value::Char(c));
        }
        let bad = || {
            self.err(
                ErrorKind::InvalidCharacter(format!("\\{}", snippet(token))),
                start,
            )
        };
        let ch = match token {
            "newline" => '\n',
            "space" => ' ',
            "tab" => '\t',
            "backspace" => '\u{8}',
            "formfeed" => '\u{c}',
            "return" => '\r',
            t if t.len() == 5 && t.starts_with('u') => {
                let code = u32::from_str_radix(&t[1..], 16).map_err(|_| bad())?;
                if !t[1..].bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                char::from_u32(code).ok_or_else(bad)?
            }
            t if (2..=4).contains(&t.len()) && t.starts_with('o') => {
                if !t[1..].bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    return Err(bad());
                }
                let code = u32::from_str_radix(&t[1..], 8).map_err(|_| bad())?;
                if code > 0o377 {
                    return Err(bad());
                }
                char::from_u32(code).ok_or_else(bad)?
            }
            _ => return Err(bad()),
        };
        Ok(Value::Char(ch))
    }

    fn read_number(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        let end = self.token_end(start, true)?;
        self.pos = end;
        let token = &self.text[start..end];
        match parse_number(token) {
            Ok(v) => Ok(v),
            Err(kind) => Err(self.err(kind, start)),
        }
    }
}

/// Applies a `#:ns{}` namespace to an unqualified keyword or symbol key (`_` removes it).
fn qualify_key(k: &mut Value, ns: &str) {
    let qualified = |text: &str| -> Option<String> {
        if text.contains('/') && text != "/" {
            // `_/name` drops the namespace; a remainder that would not read back on its own
            // (`_/:b` would print as `::b`) keeps the key as written.
            return text
                .strip_prefix("_/")
                .filter(|rest| {
                    !rest.is_empty()
                        && !rest
                            .starts_with([':', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
                        && !rest.contains('/')
                })
                .map(str::to_owned);
        }
        // A qualified name may not start with a digit (`:a/1n` does not read back): keep such a
        // key as written.
        (!text.starts_with(|c: char| c.is_ascii_digit())).then(|| format!("{ns}/{text}"))
    };
    match k {
        Value::Keyword(kw) => {
            if let Some(t) = qualified(kw.as_str()) {
                *kw = Keyword::new(t);
            }
        }
        Value::Symbol(s) => {
            if let Some(t) = qualified(s.as_str()) {
                *s = Symbol::new(t);
            }
        }
        _ => {}
    }
}

/// The least index of an item whose key equals an earlier item's key, in O(n log n) whatever the
/// items: only items whose keys hash alike (under a random key) are compared, each against the
/// distinct keys before it in its hash group, so many duplicates cost one comparison each.
pub(crate) fn first_duplicate<T>(items: &[T], key: impl Fn(&T) -> &Value) -> Option<usize> {
    // A few scalars: comparing them all is cheaper than hashing. (Comparing nested values
    // pairwise would compound across levels.)
    if items.len() <= 16 && items.iter().all(|x| key(x).is_scalar()) {
        for i in 1..items.len() {
            if items[..i].iter().any(|x| key(x) == key(&items[i])) {
                return Some(i);
            }
        }
        return None;
    }
    let mut hashed: Vec<(u64, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, x)| (crate::value::keyed_hash(key(x)), i))
        .collect();
    // By hash, then by index: each group lists its items in input order.
    hashed.sort_unstable();
    let mut found: Option<usize> = None;
    let mut distinct: Vec<usize> = Vec::new();
    for group in hashed.chunk_by(|a, b| a.0 == b.0) {
        distinct.clear();
        for &(_, i) in group {
            if found.is_some_and(|f| i >= f) {
                break;
            }
            if distinct.iter().any(|&d| key(&items[d]) == key(&items[i])) {
                found = Some(i);
                break;
            }
            distinct.push(i);
        }
    }
    found
}

fn invalid_number(token: &str) -> ErrorKind {
    ErrorKind::InvalidNumber(snippet(token))
}

/// Parses a number token the way tools.reader's `match-number` does.
pub(crate) fn parse_number(token: &str) -> Result<Value, ErrorKind> {
    let (negative, body) = match token.as_bytes().first() {
        Some(b'-') => (true, &token[1..]),
        Some(b'+') => (false, &token[1..]),
        _ => (false, token),
    };
    let bytes = body.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_digit() {
        return Err(invalid_number(token));
    }
    // Integers.
    let (int_body, big) = match body.strip_suffix('N') {
        Some(b) => (b, true),
        None => (body, false),
    };
    if let Some(res) = parse_int(int_body, negative, big) {
        return res.map_err(|()| invalid_number(token));
    }
    // Floats: [0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?M?
    if let Some(v) = parse_float(token, body) {
        return v.map_err(|()| invalid_number(token));
    }
    // Ratios: [0-9]+/[0-9]+
    if let Some((n, d)) = body.split_once('/')
        && !n.is_empty()
        && !d.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && d.bytes().all(|b| b.is_ascii_digit())
    {
        return make_ratio(negative, n, d).ok_or(ErrorKind::Message(format!(
            "divide by zero: {}",
            snippet(token)
        )));
    }
    Err(invalid_number(token))
}

/// `None`: not an integer token. `Some(Err)`: looks like one but is invalid (e.g. `09`).
fn parse_int(body: &str, negative: bool, big: bool) -> Option<Result<Value, ()>> {
    let b = body.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let (radix, digits) = if b == b"0" || (b[0] != b'0' && b.iter().all(u8::is_ascii_digit)) {
        (10, body)
    } else if b.len() > 2 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') {
        if !b[2..].iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        (16, &body[2..])
    } else if b[0] == b'0' && b[1..].iter().all(|d| (b'0'..=b'7').contains(d)) {
        (8, &body[1..])
    } else if b[0] == b'0' && b.iter().all(u8::is_ascii_digit) {
        return Some(Err(()));
    } else if let Some(r) = b.iter().position(|&c| c == b'r' || c == b'R') {
        let radix_text = &body[..r];
        let digits = &body[r + 1..];
        if !(1..=2).contains(&radix_text.len())
            || radix_text.starts_with('0')
            || !radix_text.bytes().all(|c| c.is_ascii_digit())
            || digits.is_empty()
        {
            return None;
        }
        let radix: u32 = radix_text.parse().ok()?;
        if !(2..=36).contains(&radix) || !digits.chars().all(|c| c.is_digit(radix)) {
            return Some(Err(()));
        }
        (radix, digits)
    } else {
        return None;
    };
    Some(int_value(radix, digits, negative, big))
}

fn int_value(radix: u32, digits: &str, negative: bool, big: bool) -> Result<Value, ()> {
    // Fast path: fits u64.
    if let Ok(mag) = u64::from_str_radix(digits, radix) {
        if !big {
            if !negative && let Ok(i) = i64::try_from(mag) {
                return Ok(Value::Int(i));
            }
            if negative && mag <= i64::MAX as u64 + 1 {
                return Ok(Value::Int((mag as i64).wrapping_neg()));
            }
        }
        let text = if negative && mag != 0 {
            format!("-{mag}")
        } else {
            mag.to_string()
        };
        return Ok(Value::BigInt(BigInt(text)));
    }
    let decimal = if radix == 10 {
        digits.trim_start_matches('0').to_owned()
    } else {
        to_decimal(radix, digits).ok_or(())?
    };
    let text = if negative {
        format!("-{decimal}")
    } else {
        decimal
    };
    Ok(Value::BigInt(BigInt(text)))
}

/// Converts digits in `radix` to decimal text; `None` if too long to convert cheaply.
fn to_decimal(radix: u32, digits: &str) -> Option<String> {
    use std::fmt::Write as _;
    const BASE: u64 = 1_000_000_000;
    if digits.len() > 4096 {
        return None;
    }
    // Little-endian limbs in base 1e9.
    let mut limbs: Vec<u64> = vec![0];
    for c in digits.chars() {
        let mut carry = u64::from(c.to_digit(radix)?);
        for limb in &mut limbs {
            let x = *limb * u64::from(radix) + carry;
            *limb = x % BASE;
            carry = x / BASE;
        }
        while carry > 0 {
            limbs.push(carry % BASE);
            carry /= BASE;
        }
    }
    let mut out = String::with_capacity(limbs.len() * 9);
    let mut iter = limbs.iter().rev().skip_while(|&&l| l == 0);
    match iter.next() {
        None => return Some("0".into()),
        Some(first) => out.push_str(&first.to_string()),
    }
    for l in iter {
        let _ = write!(out, "{l:09}");
    }
    Some(out)
}

/// `None`: not a float token; `Some(Err)`: float-shaped but invalid.
fn parse_float(token: &str, body: &str) -> Option<Result<Value, ()>> {
    let (num, exact) = match body.strip_suffix('M') {
        Some(b) => (b, true),
        None => (body, false),
    };
    let b = num.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let int_end = i;
    let mut frac = (i, i);
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let fs = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac = (fs, i);
    }
    let mut exp: Option<&str> = None;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let es = i + 1;
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let ds = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == ds {
            return None;
        }
        exp = Some(&num[es..i]);
    }
    if i != b.len() {
        return None;
    }
    let negative = token.starts_with('-');
    if exact {
        return Some(
            canonical_bigdec(negative, &num[..int_end], &num[frac.0..frac.1], exp)
                .map(Value::BigDec)
                .ok_or(()),
        );
    }
    let text = token.strip_suffix('M').unwrap_or(token);
    Some(text.parse::<f64>().map(Value::Float).map_err(|_| ()))
}

/// The text Java's `BigDecimal.toString` gives for the decimal `int.frac E exp`.
fn canonical_bigdec(negative: bool, int: &str, frac: &str, exp: Option<&str>) -> Option<BigDec> {
    let exp: i64 = match exp {
        None => 0,
        Some(e) => {
            let digits = e.trim_start_matches(['+', '-']).trim_start_matches('0');
            if digits.len() > 10 {
                return None;
            }
            let v: i64 = if digits.is_empty() {
                0
            } else {
                digits.parse().ok()?
            };
            if e.starts_with('-') { -v } else { v }
        }
    };
    let scale = frac.len() as i64 - exp;
    if scale > i64::from(i32::MAX) || scale < i64::from(i32::MIN) {
        return None;
    }
    let mut coeff = String::with_capacity(int.len() + frac.len());
    coeff.push_str(int);
    coeff.push_str(frac);
    let trimmed = coeff.trim_start_matches('0');
    let coeff = if trimmed.is_empty() { "0" } else { trimmed };
    let len = coeff.len() as i64;
    let adjusted = -scale + (len - 1);
    let mut out = String::with_capacity(coeff.len() + 16);
    if negative && coeff != "0" {
        out.push('-');
    }
    if scale >= 0 && adjusted >= -6 {
        let scale = scale as usize;
        if scale == 0 {
            out.push_str(coeff);
        } else if coeff.len() > scale {
            out.push_str(&coeff[..coeff.len() - scale]);
            out.push('.');
            out.push_str(&coeff[coeff.len() - scale..]);
        } else {
            out.push_str("0.");
            for _ in 0..scale - coeff.len() {
                out.push('0');
            }
            out.push_str(coeff);
        }
    } else {
        out.push_str(&coeff[..1]);
        if coeff.len() > 1 {
            out.push('.');
            out.push_str(&coeff[1..]);
        }
        out.push('E');
        if adjusted >= 0 {
            out.push('+');
        }
        out.push_str(&adjusted.to_string());
    }
    Some(BigDec(out))
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn int_or_big(negative: bool, mag: u128) -> Value {
    if negative {
        if mag <= i64::MAX as u128 + 1 {
            return Value::Int((mag as i64).wrapping_neg());
        }
        Value::BigInt(BigInt(format!("-{mag}")))
    } else if let Ok(i) = i64::try_from(mag) {
        Value::Int(i)
    } else {
        Value::BigInt(BigInt(mag.to_string()))
    }
}

/// A normalized ratio (or integer, like Clojure); `None` for a zero denominator.
fn make_ratio(negative: bool, n: &str, d: &str) -> Option<Value> {
    let dn = d.trim_start_matches('0');
    if dn.is_empty() {
        return None;
    }
    if let (Ok(n), Ok(d)) = (n.parse::<u128>(), dn.parse::<u128>()) {
        let g = gcd(n, d).max(1);
        let (n, d) = (n / g, d / g);
        let negative = negative && n != 0;
        if d == 1 {
            return Some(int_or_big(negative, n));
        }
        return Some(Value::Ratio(Box::new(Ratio {
            numer: int_or_big(negative, n),
            denom: int_or_big(false, d),
        })));
    }
    // Too big to normalize cheaply: keep as written.
    let nt = n.trim_start_matches('0');
    let nt = if nt.is_empty() { "0" } else { nt };
    let big = |neg: bool, t: &str| match t.parse::<i64>() {
        Ok(i) => Value::Int(if neg { -i } else { i }),
        Err(_) => Value::BigInt(BigInt(if neg { format!("-{t}") } else { t.to_owned() })),
    };
    Some(Value::Ratio(Box::new(Ratio {
        numer: big(negative && nt != "0", nt),
        denom: big(false, dn),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let n = |s: &str| parse_number(s).unwrap().to_string();
        assert_eq!(n("42"), "42");
        assert_eq!(n("-0"), "0");
        assert_eq!(n("+7"), "7");
        assert_eq!(n("42N"), "42N");
        assert_eq!(n("0x1F"), "31");
        assert_eq!(n("-0x1F"), "-31");
        assert_eq!(n("017"), "15");
        assert_eq!(n("16r1F"), "31");
        assert_eq!(n("2r101N"), "5N");
        assert_eq!(n("9223372036854775807"), "9223372036854775807");
        assert_eq!(n("9223372036854775808"), "9223372036854775808N");
        assert_eq!(n("-9223372036854775808"), "-9223372036854775808");
        assert_eq!(n("-9223372036854775809"), "-9223372036854775809N");
        assert_eq!(
            n("100000000000000000000000000000"),
            "100000000000000000000000000000N"
        );
        assert_eq!(n("0xFFFFFFFFFFFFFFFFFFFF"), "1208925819614629174706175N");
        assert_eq!(n("1.5"), "1.5");
        assert_eq!(n("1."), "1.0");
        assert_eq!(n("1e3"), "1000.0");
        assert_eq!(n("1.e3"), "1000.0");
        assert_eq!(n("-1.5E-7"), "-1.5E-7");
        assert_eq!(n("1.5M"), "1.5M");
        assert_eq!(n("1M"), "1M");
        assert_eq!(n("1.50M"), "1.50M");
        assert_eq!(n("1e5M"), "1E+5M");
        assert_eq!(n("-0.0000001M"), "-1E-7M");
        assert_eq!(n("0.000001M"), "0.000001M");
        assert_eq!(n("-0.0M"), "0.0M");
        assert_eq!(n("123.456e2M"), "12345.6M");
        assert_eq!(n("1/3"), "1/3");
        assert_eq!(n("2/4"), "1/2");
        assert_eq!(n("-4/2"), "-2");
        assert_eq!(n("0/5"), "0");
        assert!(parse_number("1/0").is_err());
        assert!(parse_number("09").is_err());
        assert!(parse_number("1a").is_err());
        assert!(parse_number("37r1").is_err());
        assert!(parse_number("1e").is_err());
        assert!(parse_number("1.5N").is_err());
        assert!(parse_number("1/2.0").is_err());
    }
}
