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

/// A copy of `uri` that shares no bytes with it. An origin-form URI (`/chsk?..`, what every
/// request but a proxy's carries) is its path and query alone: copied as they are, without
/// formatting the whole URI.
fn copy_uri(uri: &http::Uri) -> Option<http::Uri> {
    match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, None, Some(pq)) => {
            let bytes = bytes::Bytes::copy_from_slice(pq.as_str().as_bytes());
            http::uri::PathAndQuery::from_maybe_shared(bytes)
                .ok()
                .map(http::Uri::from)
        }
        _ => http::Uri::try_from(uri.to_string()).ok(),
    }
}

/// Copies the URI and header values out of the server's read buffer. hyper parses them as
/// slices of its (8 KiB or larger) read buffer, and keeping one of them keeps that whole buffer
/// alive for as long as a WebSocket connection lasts.
fn compact(mut parts: http::request::Parts) -> http::request::Parts {
    let kept = parts
        .headers
        .iter()
        .filter(|(name, _)| !HANDSHAKE_ONLY.contains(name))
        .count();
    let mut headers = http::HeaderMap::with_capacity(kept);
    let mut last = None;
    for (name, value) in std::mem::take(&mut parts.headers) {
        let name = match name {
            Some(n) => n,
            None => match &last {
                Some(n) => http::header::HeaderName::clone(n),
                None => continue,
            },
        };
        if HANDSHAKE_ONLY.contains(&name) {
            last = Some(name);
            continue;
        }
        let sensitive = value.is_sensitive();
        let mut copy = http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or(value);
        copy.set_sensitive(sensitive);
        headers.append(name.clone(), copy);
        last = Some(name);
    }
    parts.headers = headers;
    if let Some(uri) = copy_uri(&parts.uri) {
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
    pub(crate) fn new(
        parts: http::request::Parts,
        params: Params,
        client_id: Option<ClientId>,
        protocol_extensions: BTreeSet<String>,
    ) -> Self {
        ChskRequest {
            parts: compact(parts),
            params,
            client_id,
            protocol_extensions,
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

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
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
