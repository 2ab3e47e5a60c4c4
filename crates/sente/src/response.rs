//! The HTTP answers of the service: plain-text errors, rejections (logged), and packed
//! messages.

use crate::guard::{HookResponse, Rejection};
use crate::meters::{Meters, RejectedRequest};
use crate::metrics::Why;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use sente_proto::server::PackedBytes;
use sente_proto::server::message;
use sente_proto::{Envelope, Packer};

/// The response body of the service.
pub type ChskBody = Full<Bytes>;

pub(crate) fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<ChskBody> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A refused request, counted (`sente_rejections_total` and the node's stats) and logged
/// (debug) with its reason.
pub(crate) fn reject(
    node: &Meters,
    status: StatusCode,
    why: Why,
    body: impl Into<Bytes>,
) -> Response<ChskBody> {
    reject_noted(node, status, why, body, None)
}

/// [`reject`], keeping `noted` in the recent rejections (its status is filled in here).
pub(crate) fn reject_noted(
    node: &Meters,
    status: StatusCode,
    why: Why,
    body: impl Into<Bytes>,
    noted: Option<RejectedRequest>,
) -> Response<ChskBody> {
    why.count(
        node,
        noted.map(|mut n| {
            n.status = status.as_u16();
            n
        }),
    );
    let (reason, detail) = why.labels();
    tracing::debug!(status = status.as_u16(), reason, detail, "request rejected");
    plain(status, body)
}

/// A request the guard refused: the hook's response, counted and logged with the reason, and
/// `noted` kept in the recent rejections (its status is filled in here).
pub(crate) fn refused(
    node: &Meters,
    (why, resp): (Rejection, HookResponse),
    noted: Option<RejectedRequest>,
) -> Response<ChskBody> {
    let why = Why::Guard(why);
    why.count(
        node,
        noted.map(|mut n| {
            n.status = resp.status().as_u16();
            n
        }),
    );
    let (reason, detail) = why.labels();
    tracing::debug!(
        status = resp.status().as_u16(),
        reason,
        detail,
        "request rejected"
    );
    resp.map(Full::new)
}

/// A packed message as a response body.
pub(crate) fn packed(p: PackedBytes) -> Response<ChskBody> {
    let ct = if p.binary {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut r = Response::new(Full::new(p.bytes));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `env` packed within the message limit, or a `500` saying why not.
pub(crate) fn envelope(packer: &dyn Packer, env: Envelope, max: usize) -> Response<ChskBody> {
    match message::pack(env, packer, max) {
        Ok(p) => packed(p),
        Err(e) => {
            tracing::warn!(error = %e, "response could not be packed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Response could not be packed: {e}"),
            )
        }
    }
}
