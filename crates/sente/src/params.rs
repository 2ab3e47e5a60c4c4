//! Query-string / urlencoded-form parsing and cookies (no external URL crate needed).

/// Decoded `name=value` pairs of a query string or an `application/x-www-form-urlencoded` body,
/// in order. Names and values are percent-decoded (`+` is a space); invalid UTF-8 is replaced.
///
/// All names and values share one buffer (a WebSocket connection keeps its handshake's
/// parameters for its lifetime: two allocations, not two per field).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params {
    /// The decoded names and values, one after the other.
    text: String,
    /// Per pair: where its name starts, where its value starts, where its value ends.
    spans: Vec<[u32; 3]>,
}

/// More than the allowed number of fields in one query string or form body
/// ([`ServerLimits::max_form_fields`](sente_proto::server::ServerLimits::max_form_fields)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooManyFields {
    /// The limit.
    pub(crate) max: usize,
}

impl std::fmt::Display for TooManyFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Too many fields: a query string or a form body may carry at most {} fields",
            self.max
        )
    }
}

impl Params {
    /// The pairs of `input`, at most `max_fields` of them (empty pieces between two `&` do not
    /// count and are skipped). Over the limit it stops at once: at most `max_fields` pairs are
    /// ever decoded, so the memory used is bounded by the input plus `max_fields` pairs.
    pub(crate) fn parse(input: &str, max_fields: usize) -> Result<Self, TooManyFields> {
        // Decoding never makes text longer (invalid UTF-8 aside, rare).
        let mut p = Params {
            text: String::with_capacity(input.len()),
            spans: Vec::new(),
        };
        let bytes = input.as_bytes();
        let mut start = 0;
        while start <= bytes.len() {
            // One pass over the pair: where it ends, its first `=`, whether it needs decoding.
            let (mut end, mut eq, mut encoded) = (start, None, false);
            while let Some(&b) = bytes.get(end) {
                match b {
                    b'&' => break,
                    b'=' if eq.is_none() => eq = Some(end),
                    b'+' | b'%' => encoded = true,
                    _ => {}
                }
                end += 1;
            }
            if end > start {
                if p.spans.len() == max_fields {
                    return Err(TooManyFields { max: max_fields });
                }
                // `&` and `=` are ASCII: the pieces start and end on character boundaries.
                let (k, v) = match eq {
                    Some(eq) => (&input[start..eq], &input[eq + 1..end]),
                    None => (&input[start..end], ""),
                };
                let at = p.text.len();
                let add = |text: &mut String, piece: &str| {
                    if encoded {
                        decode_into(text, piece);
                    } else {
                        text.push_str(piece);
                    }
                };
                add(&mut p.text, k);
                let mid = p.text.len();
                add(&mut p.text, v);
                p.spans.push(offsets(at, mid, p.text.len()));
            }
            start = end + 1;
        }
        Ok(p)
    }

    fn pair(&self, [a, b, c]: [u32; 3]) -> (&str, &str) {
        let (a, b, c) = (a as usize, b as usize, c as usize);
        (&self.text[a..b], &self.text[b..c])
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.find(name).map(|s| self.pair(s).1)
    }

    /// Whether `name` is present (any value, even empty: Sente's truthiness of strings).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// The spans of the first pair named `name`: names compared as bytes, without slicing
    /// every pair's text.
    fn find(&self, name: &str) -> Option<[u32; 3]> {
        let text = self.text.as_bytes();
        let name = name.as_bytes();
        self.spans
            .iter()
            .find(|&&[a, b, _]| text.get(a as usize..b as usize) == Some(name))
            .copied()
    }

    /// Appends the pairs of `other` (query first, then form: the query wins on `get`).
    pub(crate) fn extend(&mut self, other: Params) {
        if self.spans.is_empty() {
            *self = other;
            return;
        }
        for (k, v) in other.iter() {
            self.push(k, v);
        }
    }

    fn push(&mut self, k: &str, v: &str) {
        let start = self.text.len();
        self.text.push_str(k);
        let mid = self.text.len();
        self.text.push_str(v);
        self.spans.push(offsets(start, mid, self.text.len()));
    }

    /// Removes every pair named `name`, returning the first value.
    pub(crate) fn take(&mut self, name: &str) -> Option<String> {
        let first = self.get(name).map(str::to_owned)?;
        let old = std::mem::take(self);
        for (k, v) in old.iter().filter(|(k, _)| *k != name) {
            self.push(k, v);
        }
        Some(first)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|s| self.pair(*s))
    }
}

/// A pair's offsets in the buffer. Parameters come from a request line or a body bounded far
/// below 4 GiB by the server's limits.
fn offsets(start: usize, mid: usize, end: usize) -> [u32; 3] {
    let o = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    [o(start), o(mid), o(end)]
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes form text (`+` is a space).
#[cfg(test)]
pub(crate) fn decode(text: &str) -> String {
    let mut out = String::new();
    decode_into(&mut out, text);
    out
}

/// Percent-decodes form text (`+` is a space) onto the end of `into`.
fn decode_into(into: &mut String, text: &str) {
    let bytes = text.as_bytes();
    if !bytes.iter().any(|b| matches!(b, b'+' | b'%')) {
        // Nothing to decode (most names and values): a copy, already UTF-8.
        into.push_str(text);
        return;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut pos = 0;
    while pos < bytes.len() {
        match bytes[pos] {
            b'+' => out.push(b' '),
            b'%' if pos + 2 < bytes.len() => match (hex(bytes[pos + 1]), hex(bytes[pos + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    pos += 2;
                }
                _ => out.push(b'%'),
            },
            _ => {
                // This byte (plain, or a `%` too close to the end to start an escape) and the
                // plain run after it, copied at once.
                let end = bytes[pos + 1..]
                    .iter()
                    .position(|b| matches!(b, b'+' | b'%'))
                    .map_or(bytes.len(), |n| pos + 1 + n);
                out.extend_from_slice(&bytes[pos..end]);
                pos = end;
                continue;
            }
        }
        pos += 1;
    }
    match String::from_utf8(out) {
        Ok(text) => into.push_str(&text),
        Err(e) => into.push_str(&String::from_utf8_lossy(e.as_bytes())),
    }
}

/// The value of cookie `name` in a `Cookie` header value.
pub(crate) fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Params {
        Params::parse(input, 64).unwrap()
    }

    #[test]
    fn parses_sente_post_body() {
        let p = parse(
            "udt=1718600000123&client-id=7d0c&ppstr=%5B%5B%3Amy-app%2Fhello%20%7B%3Ax%201%7D%5D%20nil%5D",
        );
        assert_eq!(p.get("ppstr"), Some("[[:my-app/hello {:x 1}] nil]"));
        assert_eq!(p.get("client-id"), Some("7d0c"));
    }

    #[test]
    fn handshake_param_presence_and_edge_cases() {
        let p = parse("handshake%3F=&a=b+c&bad=%zz%&t=%4");
        assert!(p.has("handshake?"));
        assert_eq!(p.get("a"), Some("b c"));
        assert_eq!(p.get("bad"), Some("%zz%"));
        assert_eq!(p.get("t"), Some("%4"));
        assert_eq!(parse("x=%E9%FF").get("x"), Some("\u{fffd}\u{fffd}"));
    }

    #[test]
    fn field_cap() {
        let at_cap = "a&".repeat(64);
        assert_eq!(Params::parse(&at_cap, 64).unwrap().iter().count(), 64);
        let over = "a&".repeat(65);
        assert_eq!(Params::parse(&over, 64), Err(TooManyFields { max: 64 }));
        // Empty pieces are free: they are neither kept nor counted.
        let empties = format!("{}x=1", "&".repeat(100_000));
        assert_eq!(Params::parse(&empties, 1).unwrap().get("x"), Some("1"));
        // 1.5M empty fields (the issue 12 body) are refused after 64 pairs.
        let flood = "=&".repeat(1_500_000);
        assert!(Params::parse(&flood, 64).is_err());
        assert!(
            TooManyFields { max: 64 }
                .to_string()
                .contains("at most 64 fields")
        );
    }

    /// A test-side reference parser: the same grammar written the obvious way.
    fn reference(input: &str) -> Vec<(String, String)> {
        input
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any input: no panic; within the cap it equals the reference; over it, an error.
        #[test]
        fn parse_any_input(input in "[a-z0-9=&%+.\\-\u{e9}\u{1F600}]{0,200}", max in 0usize..12) {
            let want = reference(&input);
            match Params::parse(&input, max) {
                Ok(p) => {
                    proptest::prop_assert!(want.len() <= max);
                    let got: Vec<(String, String)> =
                        p.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                    for (k, _) in &want {
                        let first = want.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                        proptest::prop_assert_eq!(p.get(k), first);
                        proptest::prop_assert!(p.has(k));
                    }
                    proptest::prop_assert_eq!(got, want);
                }
                Err(e) => {
                    proptest::prop_assert!(want.len() > max);
                    proptest::prop_assert_eq!(e.max, max);
                }
            }
        }

        /// Encoding then parsing gives back the fields (what a browser's form encoding sends).
        #[test]
        fn encoded_fields_round_trip(fields in proptest::collection::vec(("\\PC{0,12}", "\\PC{0,24}"), 0..10)) {
            let enc = |s: &str| -> String {
                s.bytes().fold(String::new(), |mut out, b| {
                    let _ = std::fmt::Write::write_fmt(&mut out, format_args!("%{b:02X}"));
                    out
                })
            };
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
            let p = Params::parse(&body.join("&"), 64).unwrap();
            let got: Vec<(String, String)> =
                p.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            // Pairs whose encoded form is empty (empty name and value still give "=") all stay.
            proptest::prop_assert_eq!(got, fields);
        }
    }

    /// Every seed of the `form_parse` fuzz target goes through the parser (issue 12).
    #[test]
    fn fuzz_corpus_seeds_parse() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/form_parse");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz corpus present") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for max in [0, 1, 64] {
                if let Ok(p) = Params::parse(&text, max) {
                    assert!(p.iter().count() <= max);
                }
            }
            n += 1;
        }
        assert!(n >= 5, "expected the seed corpus, found {n} files");
    }

    #[test]
    fn cookies() {
        assert_eq!(cookie("a=1; sid=\"xyz\"; b=2", "sid"), Some("xyz"));
        assert_eq!(cookie("a=1", "sid"), None);
    }
}
