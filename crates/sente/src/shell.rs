//! What the transports share: the security guard, the packer registry, the dispatcher (with the
//! server handle) and the transports' timing. Built once by [`crate::Builder`].

use crate::dispatch::Dispatcher;
use crate::guard::{CsrfCheck, Guard, HookResponse, Rejection};
use crate::handle::ServerHandle;
use crate::meters::{self, RejectedRequest};
use crate::metrics::Why;
use crate::packers::Packers;
use crate::params::Params;
use crate::registry::Registry;
use crate::request::ChskRequest;
use crate::response::{ChskBody, refused, reject_noted};
use bytes::Bytes;
use http::{Response, StatusCode};
use sente_proto::Limits;
use sente_proto::server::message::PendingReplies;
use sente_proto::{ClientId, Packer, Uid};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Timing of the transports (Sente's `:ws-kalive-ms`, `:lp-timeout-ms`, ...).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// WebSocket keepalive interval (`None`: no pings).
    pub(crate) ws_kalive: Option<Duration>,
    /// How long to wait for any frame after a ping (`None`: never close).
    pub(crate) ws_ping_timeout: Option<Duration>,
    /// How long an Ajax reply is waited for.
    pub(crate) lp_timeout: Duration,
}

pub(crate) struct Shell {
    pub(crate) guard: Guard,
    pub(crate) packers: Packers,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) timing: Timing,
    /// The Ajax POSTs each client waits on for a reply.
    pub(crate) replies: Mutex<PendingReplies>,
    /// Bounds the large messages being unpacked at once (see [`Shell::unpack`]).
    pub(crate) unpacking: tokio::sync::Semaphore,
    /// The pushes offloaded over HTTP ([`crate::large`]).
    pub(crate) large: crate::large::Large,
}

/// Messages at least this large are unpacked on tokio's blocking pool, not on the worker that
/// serves the connection: a client sending large (costly) messages then slows only itself,
/// never the other connections served by the same worker.
const UNPACK_ELSEWHERE: usize = 64 * 1024;

/// How many large messages may be unpacked at once (the others wait, and their connections
/// with them): about the machine's cores.
pub(crate) fn unpack_slots() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

impl Shell {
    /// Runs `unpack` (a message's decoding, `len` bytes; or a large body's packing) where it
    /// cannot stall other clients:
    /// in place for a small message, on the blocking pool for a large one (at most
    /// [`unpack_slots`] at a time). `None` if the decoder panicked (decoders do not; the caller
    /// treats it as a message that could not be unpacked).
    pub(crate) async fn unpack<T: Send + 'static>(
        &self,
        len: usize,
        unpack: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        if len < UNPACK_ELSEWHERE {
            return Some(unpack());
        }
        let _slot = self.unpacking.acquire().await.ok()?;
        tokio::task::spawn_blocking(unpack).await.ok()
    }

    /// [`Shell::decode`] of a small message, in place and at once (no future to poll);
    /// `Err(decode)` back for a large one, which [`Shell::decode`] must take.
    pub(crate) fn decode_here<T, F>(
        &self,
        data: &[u8],
        packer: &dyn Packer,
        decode: F,
    ) -> Result<T, F>
    where
        F: FnOnce(&dyn Packer, &[u8], &Limits) -> T,
    {
        if data.len() < UNPACK_ELSEWHERE {
            Ok(decode(packer, data, &self.registry().limits().message))
        } else {
            Err(decode)
        }
    }

    /// Decodes the inbound message `data` with `decode` (given the packer and the message
    /// limits) where it cannot stall other clients, as [`Shell::unpack`] does; a small message
    /// is decoded in place without copying anything. `Err(data)` if the decoder panicked.
    pub(crate) async fn decode<T: Send + 'static>(
        &self,
        data: Bytes,
        packer: &Arc<dyn Packer>,
        decode: impl FnOnce(&dyn Packer, &[u8], &Limits) -> T + Send + 'static,
    ) -> Result<T, Bytes> {
        let decode = match self.decode_here(&data, &**packer, decode) {
            Ok(t) => return Ok(t),
            Err(decode) => decode,
        };
        let limits = self.registry().limits().message.clone();
        let (packer, kept) = (packer.clone(), data.clone());
        let len = data.len();
        self.unpack(len, move || decode(&*packer, &data, &limits))
            .await
            .ok_or(kept)
    }

    pub(crate) fn server(&self) -> &ServerHandle {
        self.dispatcher.server()
    }

    pub(crate) fn registry(&self) -> &Arc<Registry> {
        self.server().registry()
    }

    /// The message limit, in bytes.
    pub(crate) fn max_message(&self) -> usize {
        self.registry().limits().message.max_message_bytes
    }
}

/// A request the guard let in: who it is and how to talk to it.
pub(crate) struct Admitted {
    pub(crate) request: Arc<ChskRequest>,
    pub(crate) uid: Uid,
    pub(crate) client_id: ClientId,
    pub(crate) packer: Arc<dyn Packer>,
    /// The request named its packer (`packer` parameter).
    pub(crate) packer_named: bool,
}

const MISSING_CLIENT_ID: &str = "Missing client-id: every Sente request (Ajax GET, WebSocket upgrade and POST) \
must carry a non-blank `client-id` parameter of at most 128 bytes.";

/// The protocol extensions a client asked for (`ext` parameter, comma-separated): the
/// negotiation point of extensions (`req`: server-to-client requests, [`crate::s2c`]; `idem`:
/// retried requests run once, [`crate::idem`]).
fn requested_extensions(params: &Params) -> BTreeSet<String> {
    params
        .get("ext")
        .map(|e| {
            e.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .take(16)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A POST whose head passed the guard's checks that need no body: its body may be read.
pub(crate) struct HeadAdmitted {
    request: ChskRequest,
    csrf: CsrfCheck,
}

/// Which request a rejection refused (for [`RejectedRequest::transport`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    Ws,
    AjaxGet,
    AjaxPost,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Ws => "ws",
            Via::AjaxGet => "ajax-get",
            Via::AjaxPost => "ajax-post",
        }
    }
}

impl Shell {
    /// A refused request as the recent rejections keep it (redacted: see
    /// [`RejectedRequest`]; the status is filled in when it is counted).
    fn note(
        via: Via,
        why: Why,
        head: (&http::Method, &http::Uri, &http::HeaderMap),
        uid: Option<String>,
    ) -> RejectedRequest {
        let (method, uri, headers) = head;
        let origin = headers
            .get(http::header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        RejectedRequest {
            at_ms: 0,
            reason: why.ring_reason(),
            status: 0,
            transport: via.as_str(),
            detail: meters::detail(method, uri.path(), origin),
            uid,
        }
    }

    /// A request the guard refused: counted and noted, then answered.
    fn refuse(
        &self,
        via: Via,
        req: &ChskRequest,
        refusal: (Rejection, HookResponse),
    ) -> Box<Response<ChskBody>> {
        let uid = self
            .guard
            .record_rejected_uids
            .then(|| (self.guard.user_id_fn)(req).to_string());
        let noted = Self::note(
            via,
            Why::Guard(refusal.0),
            (req.method(), req.uri(), req.headers()),
            uid,
        );
        Box::new(refused(self.registry().meters(), refusal, Some(noted)))
    }

    /// A request refused before the guard (no client id, unknown packer): counted and noted,
    /// then answered `400`.
    fn refuse_early(
        &self,
        via: Via,
        why: Why,
        head: (&http::Method, &http::Uri, &http::HeaderMap),
        body: impl Into<bytes::Bytes>,
    ) -> Box<Response<ChskBody>> {
        let noted = Self::note(via, why, head, None);
        Box::new(reject_noted(
            self.registry().meters(),
            StatusCode::BAD_REQUEST,
            why,
            body,
            Some(noted),
        ))
    }

    /// The packer `params` name (the default without one); `Err` (counted and noted) for an
    /// unknown one.
    fn resolve_packer(
        &self,
        params: &Params,
        via: Via,
        head: (&http::Method, &http::Uri, &http::HeaderMap),
    ) -> Result<Arc<dyn Packer>, Box<Response<ChskBody>>> {
        self.packers
            .resolve(params.get("packer"))
            .map_err(|e| self.refuse_early(via, Why::UnknownPacker, head, e.to_string()))
    }

    /// The admission of every GET, POST and WebSocket upgrade: the client id, the packer, then
    /// the guard's rejection pipeline. `Err` is the answer to send.
    pub(crate) fn admit(
        &self,
        parts: http::request::Parts,
        params: Params,
        via: Via,
    ) -> Result<Admitted, Box<Response<ChskBody>>> {
        let head = (&parts.method, &parts.uri, &parts.headers);
        let Some(client_id) = params
            .get("client-id")
            .and_then(|c| c.parse::<ClientId>().ok())
        else {
            return Err(self.refuse_early(via, Why::MissingClientId, head, MISSING_CLIENT_ID));
        };
        let packer = self.resolve_packer(&params, via, head)?;
        let packer_named = params.get("packer").is_some();
        let exts = requested_extensions(&params);
        let cid = Some(client_id.clone());
        // A poll keeps its request only as long as its admission: the client's entry keeps its
        // handshake's (see `ajax::get`).
        let request = Arc::new(match via {
            Via::AjaxGet => ChskRequest::transient(parts, params, cid, exts),
            _ => ChskRequest::new(parts, params, cid, exts),
        });
        let uid = self
            .guard
            .admit(&request)
            .map_err(|r| self.refuse(via, &request, *r))?;
        Ok(Admitted {
            request,
            uid,
            client_id,
            packer,
            packer_named,
        })
    }

    /// The first half of a POST's admission, before its body is read: the guard's checks that
    /// need only the head (`reject_fn`, CSRF when the head carries a token, Origin,
    /// `authorized_fn`), and the client id and packer when the query carries them. The hooks
    /// see the query parameters only: the form fields are not read yet.
    pub(crate) fn admit_head(
        &self,
        parts: http::request::Parts,
        query: Params,
    ) -> Result<HeadAdmitted, Box<Response<ChskBody>>> {
        let head = (&parts.method, &parts.uri, &parts.headers);
        let client_id = match query.get("client-id") {
            Some(c) => Some(c.parse::<ClientId>().map_err(|_| {
                self.refuse_early(Via::AjaxPost, Why::MissingClientId, head, MISSING_CLIENT_ID)
            })?),
            None => None,
        };
        if query.has("packer") {
            self.resolve_packer(&query, Via::AjaxPost, head)?;
        }
        let exts = requested_extensions(&query);
        let request = ChskRequest::new(parts, query, client_id, exts);
        let csrf = self
            .guard
            .admit_head(&request, true)
            .map_err(|r| self.refuse(Via::AjaxPost, &request, *r))?;
        Ok(HeadAdmitted { request, csrf })
    }

    /// The second half, once the form body is read (`form`: its fields, without `ppstr`): the
    /// client id, the packer, a CSRF check the head could not do, and the uid.
    pub(crate) fn admit_body(
        &self,
        head: HeadAdmitted,
        form: Params,
    ) -> Result<Admitted, Box<Response<ChskBody>>> {
        let HeadAdmitted { mut request, csrf } = head;
        request.add_form(form);
        let params = request.params_inner();
        let head = (request.method(), request.uri(), request.headers());
        let Some(client_id) = params
            .get("client-id")
            .and_then(|c| c.parse::<ClientId>().ok())
        else {
            return Err(self.refuse_early(
                Via::AjaxPost,
                Why::MissingClientId,
                head,
                MISSING_CLIENT_ID,
            ));
        };
        let packer = self.resolve_packer(params, Via::AjaxPost, head)?;
        let packer_named = params.get("packer").is_some();
        let exts = requested_extensions(params);
        request.set_client(client_id.clone(), exts);
        let uid = self
            .guard
            .admit_rest(&request, csrf)
            .map_err(|r| self.refuse(Via::AjaxPost, &request, *r))?;
        Ok(Admitted {
            request: Arc::new(request),
            uid,
            client_id,
            packer,
            packer_named,
        })
    }
}
