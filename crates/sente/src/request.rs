//! The request behind a connection or a message, as hooks and handlers see it.

use crate::params::{Params, cookie};
use sente_proto::ClientId;
use std::collections::BTreeSet;

/// Headers that only describe the WebSocket handshake itself, not kept for the connection's
/// lifetime (each kept header costs about 100 bytes per connection).
const HANDSHAKE_ONLY: [http::header::HeaderName; 5] = [
    http::header::SEC_WEBSOCKET_KEY,
    http::header::SEC_WEBSOCKET_EXTENSIONS,
    http::header::SEC_WEBSOCKET_VERSION,
    http::header::UPGRADE,
    http::header::CONNECTION,
];

/// Whether `uri` is in origin form (`/chsk?..`, what every request but a proxy's carries): its
/// path and query are all of it.
fn origin_form(uri: &http::Uri) -> Option<&str> {
    match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, None, Some(pq)) => Some(pq.as_str()),
        _ => None,
    }
}

/// Copies the URI and header values out of the server's read buffer. hyper parses them as
/// slices of its (8 KiB or larger) read buffer, and keeping one of them keeps that whole buffer
/// alive for as long as a WebSocket connection or a held poll lasts (and makes hyper allocate a
/// fresh one for the connection's next request).
///
/// The kept values and an origin-form URI are copied into one buffer of their own, which they
/// then share: one allocation to make and one to free, however many headers there are. The
/// header map is kept as hyper made it, unless headers that only describe a WebSocket handshake
/// are to be dropped (then a map of just the kept headers is built, the smallest that holds
/// them).
fn compact(mut parts: http::request::Parts) -> http::request::Parts {
    let mut handshake = false;
    for name in &HANDSHAKE_ONLY {
        handshake |= parts.headers.remove(name).is_some();
    }
    let pq = origin_form(&parts.uri);
    let len = parts
        .headers
        .values()
        .map(http::HeaderValue::len)
        .sum::<usize>()
        + pq.map_or(0, str::len);
    let mut buf = Vec::with_capacity(len);
    for v in parts.headers.values() {
        buf.extend_from_slice(v.as_bytes());
    }
    buf.extend_from_slice(pq.unwrap_or_default().as_bytes());
    let buf = bytes::Bytes::from(buf);
    let mut at = 0;
    let mut take = |n: usize| {
        let slice = buf.slice(at..at + n);
        at += n;
        slice
    };
    let own = |value: &mut http::HeaderValue, bytes: bytes::Bytes| {
        if let Ok(mut copy) = http::HeaderValue::from_maybe_shared(bytes) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    };
    if handshake {
        let mut headers = http::HeaderMap::with_capacity(parts.headers.len());
        let mut last = None;
        for (name, mut value) in std::mem::take(&mut parts.headers) {
            let Some(name) = name.or_else(|| last.clone()) else {
                continue;
            };
            let copy = take(value.len());
            own(&mut value, copy);
            headers.append(name.clone(), value);
            last = Some(name);
        }
        parts.headers = headers;
    } else {
        for value in parts.headers.values_mut() {
            let copy = take(value.len());
            own(value, copy);
        }
    }
    let uri = match pq {
        Some(pq) => http::uri::PathAndQuery::from_maybe_shared(take(pq.len()))
            .ok()
            .map(http::Uri::from),
        None => http::Uri::try_from(parts.uri.to_string()).ok(),
    };
    if let Some(uri) = uri {
        parts.uri = uri;
    }
    // hyper's upgrade handle was taken out of the extensions, which kept their table.
    if parts.extensions.is_empty() {
        parts.extensions = http::Extensions::new();
    }
    parts
}

/// The HTTP request that opened a WebSocket, polled, or POSTed an event: method, URI, headers,
/// extensions (so values that middleware put there, such as a session, are reachable), plus the
/// parsed query and form parameters and the client id.
///
/// Sente calls this the `:ring-req`. For WebSocket messages it is the upgrade request.
#[derive(Debug)]
pub struct ChskRequest {
    parts: http::request::Parts,
    params: Params,
    client_id: Option<ClientId>,
    protocol_extensions: BTreeSet<String>,
}

impl ChskRequest {
    /// A request that may be kept past its answer (a WebSocket's for its lifetime, a POST's
    /// event by its handler): its bytes are copied out of hyper's read buffer, so that keeping
    /// it does not pin that buffer.
    pub(crate) fn new(
        parts: http::request::Parts,
        params: Params,
        client_id: Option<ClientId>,
        protocol_extensions: BTreeSet<String>,
    ) -> Self {
        Self::transient(compact(parts), params, client_id, protocol_extensions)
    }

    /// A request dropped once admitted (an Ajax poll's: see [`ChskRequest::kept`]), its bytes
    /// still in hyper's read buffer.
    pub(crate) fn transient(
        parts: http::request::Parts,
        params: Params,
        client_id: Option<ClientId>,
        protocol_extensions: BTreeSet<String>,
    ) -> Self {
        ChskRequest {
            parts,
            params,
            client_id,
            protocol_extensions,
        }
    }

    /// A copy of a [`ChskRequest::transient`] request to keep (as [`ChskRequest::new`]).
    pub(crate) fn kept(&self) -> Self {
        ChskRequest {
            parts: compact(self.parts.clone()),
            params: self.params.clone(),
            client_id: self.client_id.clone(),
            protocol_extensions: self.protocol_extensions.clone(),
        }
    }

    /// The protocol extensions the client asked for (`ext` query parameter, comma-separated).
    /// The negotiation point for sente-rs extensions: `req` (server-to-client requests,
    /// [`ServerHandle::request`](crate::ServerHandle::request)), `idem` (retried requests run
    /// once, [`crate::idem`]); a plain Sente client asks for none.
    pub fn protocol_extensions(&self) -> &BTreeSet<String> {
        &self.protocol_extensions
    }

    /// Method, URI, version, headers and extensions of the request.
    pub fn parts(&self) -> &http::request::Parts {
        &self.parts
    }

    /// The method.
    pub fn method(&self) -> &http::Method {
        &self.parts.method
    }

    /// The URI.
    pub fn uri(&self) -> &http::Uri {
        &self.parts.uri
    }

    /// The headers.
    pub fn headers(&self) -> &http::HeaderMap {
        &self.parts.headers
    }

    /// The extensions (values inserted by middleware, e.g. a session).
    pub fn extensions(&self) -> &http::Extensions {
        &self.parts.extensions
    }

    /// A header as text, by its name as text (`"x-token"`) or as a [`http::HeaderName`] (a
    /// constant such as `http::header::HOST` is found without parsing a name).
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter, or (on a POST) a form field; the query wins. The packed message
    /// (`ppstr`) is not kept.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// Every query parameter and form field, in order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter()
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| cookie(h, name))
    }

    /// The client id (`client-id` parameter), if valid.
    pub fn client_id(&self) -> Option<&ClientId> {
        self.client_id.as_ref()
    }

    /// Adds a POST's form fields once its body is read (after the query's: the query wins).
    pub(crate) fn add_form(&mut self, form: Params) {
        self.params.extend(form);
    }

    /// Sets what the form fields gave: the client id and the protocol extensions.
    pub(crate) fn set_client(
        &mut self,
        client_id: ClientId,
        protocol_extensions: BTreeSet<String>,
    ) {
        self.client_id = Some(client_id);
        self.protocol_extensions = protocol_extensions;
    }

    pub(crate) fn params_inner(&self) -> &Params {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::compact;
    use bytes::Bytes;
    use http::{HeaderValue, Request, header};

    /// A request whose URI and header values are slices of one read buffer, as hyper parses
    /// them; the buffer is returned too.
    fn parsed(uri: &str, headers: &[(&str, &str)]) -> (http::request::Parts, Bytes) {
        let mut text = uri.to_owned();
        for (_, v) in headers {
            text.push_str(v);
        }
        let read = Bytes::from(text);
        let mut at = uri.len();
        let mut b = Request::builder()
            .uri(http::Uri::from_maybe_shared(read.slice(0..uri.len())).expect("a valid URI"));
        for (n, v) in headers {
            let value = HeaderValue::from_maybe_shared(read.slice(at..at + v.len()))
                .expect("a valid value");
            at += v.len();
            b = b.header(*n, value);
        }
        let (parts, ()) = b.body(()).expect("a valid request").into_parts();
        (parts, read)
    }

    fn outside(read: &Bytes, bytes: &[u8]) -> bool {
        let r = read.as_ptr_range();
        !r.contains(&bytes.as_ptr())
    }

    #[test]
    fn keeps_every_value_in_order_and_shares_nothing_with_the_read_buffer() {
        let (mut parts, read) = parsed(
            "/chsk?client-id=c1&uid=u",
            &[
                ("host", "127.0.0.1:3000"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
                ("x-csrf-token", "tok"),
            ],
        );
        parts
            .headers
            .get_mut("x-csrf-token")
            .expect("set")
            .set_sensitive(true);
        let parts = compact(parts);
        assert_eq!(parts.uri.path(), "/chsk");
        assert_eq!(parts.uri.query(), Some("client-id=c1&uid=u"));
        let cookies: Vec<_> = parts.headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(parts.headers[header::HOST], "127.0.0.1:3000");
        assert!(parts.headers["x-csrf-token"].is_sensitive());
        assert!(!parts.headers[header::HOST].is_sensitive());
        assert!(outside(&read, parts.uri.path().as_bytes()));
        for v in parts.headers.values() {
            assert!(
                outside(&read, v.as_bytes()),
                "{v:?} still in the read buffer"
            );
        }
    }

    #[test]
    fn drops_what_only_describes_a_websocket_handshake() {
        let (parts, read) = parsed(
            "/chsk?client-id=c1",
            &[
                ("host", "h"),
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
                ("origin", "http://h"),
                ("origin", "http://second"),
            ],
        );
        let parts = compact(parts);
        let names: Vec<_> = parts.headers.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names, ["host", "origin"]);
        let origins: Vec<_> = parts.headers.get_all(header::ORIGIN).iter().collect();
        assert_eq!(origins, ["http://h", "http://second"]);
        for v in parts.headers.values() {
            assert!(outside(&read, v.as_bytes()));
        }
    }

    #[test]
    fn an_absolute_uri_is_copied_whole() {
        let (parts, read) = parsed("http://example.com/chsk?x=1", &[("host", "example.com")]);
        let parts = compact(parts);
        assert_eq!(parts.uri.to_string(), "http://example.com/chsk?x=1");
        assert!(outside(&read, parts.uri.path().as_bytes()));
    }
}
