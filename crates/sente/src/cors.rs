//! Cross-origin use (CORS) of the endpoint and of `<mount>/client.js`, driven by the server's
//! [`AllowedOrigins`](crate::AllowedOrigins).
//!
//! A page on another origin may use the server when its origin is allowed:
//!
//! - [`AllowedOrigins::List`](crate::AllowedOrigins::List): the listed origins get
//!   `Access-Control-Allow-Origin: <origin>` with `Access-Control-Allow-Credentials: true`
//!   (cookies and the CSRF token work cross-origin) on every answer of the endpoint and the
//!   script, and their preflights (`OPTIONS`, sent by browsers for the client's
//!   `X-CSRF-Token`/`X-Requested-With` headers) are answered `204`.
//! - [`AllowedOrigins::All`](crate::AllowedOrigins::All): the same for any origin but `null`
//!   (the CSRF token still guards the endpoint: a page on another site cannot read it).
//! - [`AllowedOrigins::SameOrigin`](crate::AllowedOrigins::SameOrigin) (the default): no CORS
//!   headers; cross-origin pages are refused.
//!
//! A refused origin gets no CORS header: its preflight, and its request for the script, are
//! answered `403` with the reason in the body (shown in the browser's network panel); its
//! requests to the endpoint get the usual `403 Unauthorized origin`. WebSocket upgrades are
//! not subject to CORS: the origin check alone applies.

use crate::meters::Meters;
use crate::metrics::Why;
use crate::origin::{AllowedOrigins, Origin, origin_allowed};
use crate::response::{ChskBody, reject};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

/// What a request's `Origin` header asks for.
pub(crate) enum Cors {
    /// No `Origin` header, or the request's own origin: nothing to add.
    None,
    /// An allowed other origin: answer with these CORS headers.
    Allowed(HeaderValue),
    /// A refused other origin (the header's text, for the refusal).
    Refused(String),
}

impl Cors {
    /// Classifies a request by its `Origin` and `Host` headers.
    pub(crate) fn of(allowed: &AllowedOrigins, headers: &HeaderMap) -> Cors {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Cors::None;
        };
        let text = origin.to_str().unwrap_or("");
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if origin_allowed(&AllowedOrigins::SameOrigin, Some(text), None, host) {
            return Cors::None;
        }
        // Never `null` (sandboxed frames, `data:` and `file:` pages of any site), even with
        // `AllowedOrigins::All`: only a real origin is echoed, with credentials.
        if Origin::parse(text).is_some() && origin_allowed(allowed, Some(text), None, host) {
            return Cors::Allowed(origin.clone());
        }
        Cors::Refused(text.to_owned())
    }

    /// Adds the CORS headers of an allowed origin to `resp` (and `Vary: Origin` whenever the
    /// answer depends on it).
    pub(crate) fn apply(&self, resp: &mut Response<ChskBody>) {
        let h = resp.headers_mut();
        if !matches!(self, Cors::None) {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Cors::Allowed(origin) = self {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The `403` of a refused origin, saying why.
    pub(crate) fn refusal(node: &Meters, origin: &str) -> Response<ChskBody> {
        let origin: String = origin.chars().take(200).collect();
        reject(
            node,
            StatusCode::FORBIDDEN,
            Why::CorsOrigin,
            format!(
                "Unauthorized origin: pages at {origin} may not use this server (it is not one \
                 of the server's allowed origins)"
            ),
        )
    }

    /// The answer to a preflight (`OPTIONS` with `Origin`), before [`Cors::apply`].
    pub(crate) fn preflight(&self, node: &Meters, req_headers: &HeaderMap) -> Response<ChskBody> {
        match self {
            Cors::Refused(o) => return Cors::refusal(node, o),
            Cors::None => {
                return crate::response::plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method not allowed",
                );
            }
            Cors::Allowed(_) => (),
        }
        let mut r = crate::response::plain(StatusCode::NO_CONTENT, "");
        let h = r.headers_mut();
        h.remove(header::CONTENT_TYPE);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        let requested = req_headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or_else(|| {
                HeaderValue::from_static("content-type, x-csrf-token, x-requested-with")
            });
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    }
}
