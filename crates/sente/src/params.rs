//! Query-string / urlencoded-form parsing and cookies (no external URL crate needed).

/// Decoded `name=value` pairs of a query string or an `application/x-www-form-urlencoded` body,
/// in order. Names and values are percent-decoded (`+` is a space); invalid UTF-8 is replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(input: &str) -> Self {
        let mut out = Vec::new();
        for pair in input.split('&') {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.push((decode(k), decode(v)));
        }
        Params(out)
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `name` is present (any value, even empty: Sente's truthiness of strings).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// Appends the pairs of `other` (query first, then form: the query wins on `get`).
    pub(crate) fn extend(&mut self, other: Params) {
        self.0.extend(other.0);
    }

    /// Removes every pair named `name`, returning the first value.
    pub(crate) fn take(&mut self, name: &str) -> Option<String> {
        let mut first = None;
        self.0.retain_mut(|(k, v)| {
            if k == name {
                if first.is_none() {
                    first = Some(std::mem::take(v));
                }
                false
            } else {
                true
            }
        });
        first
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
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
pub(crate) fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
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
            other => out.push(other),
        }
        pos += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
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

    #[test]
    fn parses_sente_post_body() {
        let p = Params::parse(
            "udt=1718600000123&client-id=7d0c&ppstr=%5B%5B%3Amy-app%2Fhello%20%7B%3Ax%201%7D%5D%20nil%5D",
        );
        assert_eq!(p.get("ppstr"), Some("[[:my-app/hello {:x 1}] nil]"));
        assert_eq!(p.get("client-id"), Some("7d0c"));
    }

    #[test]
    fn handshake_param_presence_and_edge_cases() {
        let p = Params::parse("handshake%3F=&a=b+c&bad=%zz%&t=%4");
        assert!(p.has("handshake?"));
        assert_eq!(p.get("a"), Some("b c"));
        assert_eq!(p.get("bad"), Some("%zz%"));
        assert_eq!(p.get("t"), Some("%4"));
        assert_eq!(Params::parse("x=%E9%FF").get("x"), Some("\u{fffd}\u{fffd}"));
    }

    #[test]
    fn cookies() {
        assert_eq!(cookie("a=1; sid=\"xyz\"; b=2", "sid"), Some("xyz"));
        assert_eq!(cookie("a=1", "sid"), None);
    }
}
