//! Origin checks (spec 4.2), exact and conservative, and the constant-time token comparison.

use std::collections::HashSet;

/// Which page origins may talk to the server (checked on every GET, POST and WebSocket upgrade).
///
/// Browsers send `Origin` on POSTs and WebSocket upgrades, but not on same-origin GETs; without
/// it the `Referer`'s origin is checked instead, as Sente does. Matching is exact on scheme, host
/// (ASCII case-insensitive, as hosts are) and port (default ports made explicit), so
/// `http://site.com.evil.com`, `http://evil.site.com`, `http://site.com:81` and `null` never match
/// `http://site.com`.
///
/// # Cross-origin pages (CORS)
///
/// The same list governs pages served from another origin (another host or port) that load
/// `<mount>/client.js` (an ES module: browsers fetch it with CORS) and talk to the endpoint:
///
/// - [`AllowedOrigins::List`]: each listed origin gets `Access-Control-Allow-Origin: <origin>`
///   and `Access-Control-Allow-Credentials: true` on the script and every endpoint answer
///   (cookies and the CSRF token work cross-origin; the JS client sends cookies with its
///   requests), and its preflights (`OPTIONS`) are answered `204`.
/// - [`AllowedOrigins::All`]: the same for any origin but `null` (the CSRF token still guards
///   the endpoint: a page on another site cannot read it).
/// - [`AllowedOrigins::SameOrigin`]: no CORS headers.
///
/// Any other origin gets no CORS header: its preflight and its request for the script are
/// answered `403 Unauthorized origin: pages at <origin> may not use this server ...`, its
/// endpoint requests `403 Unauthorized origin` (the reason shows in the browser's network
/// panel; the page itself only sees a failed request, which the JS client reports in
/// `state.lastClose.message`). WebSocket upgrades are not subject to CORS: the origin check
/// alone applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Same origin as the request's `Host` header (scheme `http` or `https`). The default.
    #[default]
    SameOrigin,
    /// These origins, e.g. `"https://example.com"` or `"http://localhost:3000"`.
    List(HashSet<String>),
    /// Any origin (Sente's default `:all`). Combined with a disabled CSRF check the builder
    /// requires [`crate::Builder::insecure_allow_unprotected`].
    All,
}

impl AllowedOrigins {
    /// A list of allowed origins.
    pub fn list<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AllowedOrigins::List(origins.into_iter().map(Into::into).collect())
    }
}

/// A parsed origin: scheme, lower-cased host, port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]` (IPv6 in brackets), lower-casing the host.
fn host_port(authority: &str, scheme: &str) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains(['@', ' ', '\\']) {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &authority[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
        None => default_port(scheme)?,
    };
    Some((host.to_ascii_lowercase(), port))
}

impl Origin {
    /// Parses `scheme://host[:port]` with an optional path (for a Referer). `null`, opaque and
    /// malformed values give `None`.
    pub(crate) fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return None;
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (host, port) = host_port(&rest[..end], &scheme)?;
        Some(Origin { scheme, host, port })
    }

    /// The origins a request with this `Host` header is served from (`http` and `https`).
    fn same_as_host(host: &str) -> impl Iterator<Item = Origin> + '_ {
        ["http", "https"].into_iter().filter_map(move |scheme| {
            let (h, port) = host_port(host.trim(), scheme)?;
            Some(Origin {
                scheme: scheme.to_owned(),
                host: h,
                port,
            })
        })
    }
}

/// The origin check: `origin` is the `Origin` header, else the `Referer`'s origin is used.
pub(crate) fn origin_allowed(
    allowed: &AllowedOrigins,
    origin: Option<&str>,
    referer: Option<&str>,
    host: Option<&str>,
) -> bool {
    if *allowed == AllowedOrigins::All {
        return true;
    }
    let claimed = match (origin, referer) {
        (Some(o), _) => Origin::parse(o),
        (None, Some(r)) => Origin::parse(r),
        (None, None) => None,
    };
    let Some(claimed) = claimed else { return false };
    match allowed {
        AllowedOrigins::All => true,
        AllowedOrigins::SameOrigin => {
            host.is_some_and(|h| Origin::same_as_host(h).any(|o| o == claimed))
        }
        AllowedOrigins::List(list) => list
            .iter()
            .filter_map(|o| Origin::parse(o))
            .any(|o| o == claimed),
    }
}

/// Which `Host` headers the server answers (checked on every GET, POST and WebSocket upgrade,
/// before the other checks).
///
/// [`AllowedOrigins::SameOrigin`] compares the page's origin with the request's own `Host`
/// header, which the browser sets from the page's address. A DNS-rebinding page (an attacker's
/// domain that resolves to your server's address) is then "same origin" with itself. Listing
/// your server's host names closes that door: a request for any other `Host` gets `421
/// Misdirected Request`. Set it for every server reachable beyond loopback: until it is set,
/// the server logs a warning (once) when it answers a request for a non-loopback host with
/// the same-origin check on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllowedHosts {
    /// Any `Host` (the default).
    #[default]
    Any,
    /// These hosts: `example.com` (any port) or `example.com:8443` (that port only); IPv6 in
    /// brackets. Case-insensitive.
    List(Vec<String>),
}

impl AllowedHosts {
    /// A list of allowed hosts.
    pub fn list<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AllowedHosts::List(hosts.into_iter().map(Into::into).collect())
    }
}

/// Splits `host[:port]` without defaulting the port.
fn split_host(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']')?;
        (&text[..end + 2], rest[end + 1..].strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.contains(['@', ' ', '/', '\\']) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// The host check: whether `host` (the `Host` header) is one the server answers.
pub(crate) fn host_allowed(allowed: &AllowedHosts, host: Option<&str>) -> bool {
    let AllowedHosts::List(list) = allowed else {
        return true;
    };
    let Some((host, port)) = host.and_then(split_host) else {
        return false;
    };
    list.iter()
        .filter_map(|h| split_host(h))
        .any(|(h, p)| h == host && (p.is_none() || p == port))
}

/// Constant-time string equality.
pub(crate) fn token_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> AllowedOrigins {
        AllowedOrigins::list(["http://site.com"])
    }

    #[test]
    fn spec_12_4_vector_30() {
        let a = site();
        assert!(origin_allowed(&a, Some("http://site.com"), None, None));
        assert!(origin_allowed(&a, None, Some("http://site.com/x"), None));
        assert!(!origin_allowed(&a, None, None, None));
        assert!(!origin_allowed(&a, Some("http://evil.com"), None, None));
        assert!(!origin_allowed(
            &a,
            None,
            Some("http://site.com.evil.com/"),
            None
        ));
    }

    #[test]
    fn spoofing_and_edge_cases() {
        let a = site();
        for bad in [
            "http://site.com.evil.com",
            "http://evil-site.com",
            "http://evilsite.com",
            "http://evil.site.com",
            "https://site.com",
            "http://site.com:81",
            "http://site.com@evil.com",
            "http://evil.com#http://site.com",
            "null",
            "",
            "site.com",
            "http://",
            "http://site.com:x",
        ] {
            assert!(!origin_allowed(&a, Some(bad), None, None), "{bad}");
        }
        for ok in [
            "http://site.com",
            "HTTP://SITE.com",
            "http://site.com:80",
            "http://Site.Com/",
        ] {
            assert!(origin_allowed(&a, Some(ok), None, None), "{ok}");
        }
        // Referer prefix spoofing and userinfo tricks.
        for bad in [
            "http://site.com.evil.com/x",
            "http://site.com@evil.com/",
            "http://evil.com/http://site.com/",
        ] {
            assert!(!origin_allowed(&a, None, Some(bad), None), "{bad}");
        }
        // An Origin header that is present wins over the Referer.
        assert!(!origin_allowed(
            &a,
            Some("http://evil.com"),
            Some("http://site.com/"),
            None
        ));
    }

    #[test]
    fn same_origin_default() {
        let a = AllowedOrigins::SameOrigin;
        assert!(origin_allowed(
            &a,
            Some("http://127.0.0.1:8300"),
            None,
            Some("127.0.0.1:8300")
        ));
        assert!(origin_allowed(
            &a,
            Some("https://example.com"),
            None,
            Some("example.com")
        ));
        assert!(origin_allowed(
            &a,
            Some("http://example.com"),
            None,
            Some("Example.com:80")
        ));
        assert!(origin_allowed(
            &a,
            None,
            Some("http://[::1]:3000/p"),
            Some("[::1]:3000")
        ));
        assert!(!origin_allowed(
            &a,
            Some("http://127.0.0.1:8301"),
            None,
            Some("127.0.0.1:8300")
        ));
        assert!(!origin_allowed(
            &a,
            Some("http://example.com.evil.com"),
            None,
            Some("example.com")
        ));
        assert!(!origin_allowed(&a, Some("null"), None, Some("example.com")));
        assert!(!origin_allowed(&a, Some("http://example.com"), None, None));
        assert!(!origin_allowed(&a, None, None, Some("example.com")));
    }

    #[test]
    fn allowed_hosts() {
        let a = AllowedHosts::list(["example.com", "localhost:3000", "[::1]:3000"]);
        for ok in [
            "example.com",
            "EXAMPLE.com:443",
            "localhost:3000",
            "[::1]:3000",
        ] {
            assert!(host_allowed(&a, Some(ok)), "{ok}");
        }
        for bad in [
            "evil.com",
            "localhost:3001",
            "localhost",
            "example.com.evil.com",
            "example.com@evil.com",
            "",
            "[::1]:3001",
        ] {
            assert!(!host_allowed(&a, Some(bad)), "{bad}");
        }
        assert!(!host_allowed(&a, None));
        assert!(host_allowed(&AllowedHosts::Any, None));
    }

    #[test]
    fn all() {
        assert!(origin_allowed(&AllowedOrigins::All, None, None, None));
    }

    #[test]
    fn token_equality() {
        assert!(token_eq("tok-123", "tok-123"));
        assert!(!token_eq("tok-123", "tok-124"));
        assert!(!token_eq("tok", "tok-123"));
    }
}
