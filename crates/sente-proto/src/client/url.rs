//! URLs, query strings and form bodies exactly as Sente's ClojureScript client writes them
//! (spec 5.1, 6.1-6.3).

/// Percent-encodes like JavaScript's `encodeURIComponent`, plus `*` -> `%2A` (encore's
/// `url-encode`): only `A-Z a-z 0-9 - _ . ! ~ ' ( )` stay as they are.
pub fn url_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
    }
    out
}

/// `k1=v1&k2=v2`, both sides encoded with [`url_encode`].
pub fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&url_encode(k));
        out.push('=');
        out.push_str(&url_encode(v));
    }
    out
}

/// Appends a query string to a URL that may already have one.
pub fn with_query(base: &str, query: &str) -> String {
    if query.is_empty() {
        return base.to_owned();
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

/// Why a chsk URL was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid chsk url {url:?}: expected http://, https://, ws:// or wss:// followed by a host")]
pub struct InvalidUrl {
    /// The url that was given.
    pub url: String,
}

/// The two forms of one endpoint: `http(s)://host/path` for Ajax, `ws(s)://host/path` for
/// WebSocket (spec 8.2: the same path serves both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChskUrl {
    http: String,
    ws: String,
}

impl ChskUrl {
    /// Parses a base URL given with any of the four schemes.
    pub fn parse(url: &str) -> Result<Self, InvalidUrl> {
        let bad = || InvalidUrl {
            url: url.to_owned(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad());
        }
        let (http, ws) = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => ("http", "ws"),
            "https" | "wss" => ("https", "wss"),
            _ => return Err(bad()),
        };
        Ok(ChskUrl {
            http: format!("{http}://{rest}"),
            ws: format!("{ws}://{rest}"),
        })
    }

    /// The Ajax form (`http://` or `https://`).
    pub fn http(&self) -> &str {
        &self.http
    }

    /// The WebSocket form (`ws://` or `wss://`).
    pub fn ws(&self) -> &str {
        &self.ws
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_encode_uri_component() {
        assert_eq!(url_encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
        assert_eq!(url_encode("handshake?"), "handshake%3F");
        assert_eq!(url_encode("-_.!~*'() é"), "-_.!~%2A'()%20%C3%A9");
        assert_eq!(
            url_encode("[[:my-app/hello {:x 1}] nil]"),
            "%5B%5B%3Amy-app%2Fhello%20%7B%3Ax%201%7D%5D%20nil%5D"
        );
    }

    #[test]
    fn urls() {
        let u = ChskUrl::parse("http://localhost:3000/chsk").unwrap();
        assert_eq!(u.ws(), "ws://localhost:3000/chsk");
        let u = ChskUrl::parse("wss://x.org/chsk?a=1").unwrap();
        assert_eq!(u.http(), "https://x.org/chsk?a=1");
        assert_eq!(with_query(u.http(), "b=2"), "https://x.org/chsk?a=1&b=2");
        assert!(ChskUrl::parse("ftp://x").is_err());
        assert!(ChskUrl::parse("/chsk").is_err());
    }
}
