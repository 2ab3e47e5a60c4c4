//! Large payloads offloaded over plain HTTP (wire: [`sente_proto::large`]): a push estimated
//! over [`LargeConfig::threshold`] (default 64 KiB) reaches a client that announced the
//! `large` extension as a small `[:chsk/large {:id .. :size n}]` in its place, and the client
//! fetches the event with `GET <chsk path>?large=<id>` (admitted like an Ajax poll: CSRF,
//! Origin, `authorized_fn`), so its socket stays free for small events meanwhile. A plain
//! Sente client gets the event inline.
//!
//! The event is stored once per server, however many clients it goes to, under a random
//! 128-bit id, for [`LargeConfig::ttl_ms`] (default 60 s); each delivery of the reference
//! allows the client it went to one fetch, and only that client (of that uid) may fetch it.
//! Over [`LargeConfig::max_stored_bytes`] (default 64 MiB) events go inline, counted in
//! `sente_large_inline_total`. This applies to pushes ([`ServerHandle::send`](crate::ServerHandle::send)
//! and its kin, [`ServerHandle::send_to_client`](crate::ServerHandle::send_to_client), the
//! replays of the resume extension); replies to a client's requests always go inline.

use crate::ajax::sent;
use crate::metrics::ConnMetrics;
use crate::registry::Registry;
use crate::request::ChskRequest;
use crate::response::{ChskBody, packed, plain};
use crate::shell::{Admitted, Shell};
use http::{Response, StatusCode};
use sente_proto::large::{self, LargeStore};
use sente_proto::server::{PushBatch, Transport};
use sente_proto::{ClientId, Uid};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub use sente_proto::large::LargeConfig;

/// The server's offloaded events.
pub(crate) struct Large {
    store: Mutex<LargeStore>,
    on: bool,
}

impl Large {
    pub(crate) fn new(cfg: LargeConfig) -> Self {
        Large {
            on: cfg.threshold.is_some(),
            store: Mutex::new(LargeStore::new(cfg)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LargeStore> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The batch `b` as client `cid` of `uid` gets it: with its large events replaced by
    /// references when the client announced the extension (and allowed to fetch them).
    pub(crate) fn outgoing(
        &self,
        registry: &Registry,
        b: &Arc<PushBatch>,
        request: &ChskRequest,
        uid: &Uid,
        cid: &ClientId,
    ) -> Arc<PushBatch> {
        if !self.on || !request.protocol_extensions().contains(large::EXTENSION) {
            return b.clone();
        }
        let off = b.offloaded(|events| {
            let (off, counts) = self.lock().offload(events, registry.now(), || {
                uuid::Uuid::new_v4().simple().to_string()
            });
            crate::metrics::large_offloaded(counts);
            off
        });
        match off {
            Some(o) => {
                self.lock().grant(&o.ids, uid, cid);
                o.batch.clone()
            }
            None => b.clone(),
        }
    }
}

/// Whether a GET is a fetch of an offloaded event (`large` parameter).
pub(crate) fn is_fetch(request: &ChskRequest) -> bool {
    request.param(large::PARAM).is_some()
}

/// `GET ?large=<id>` (admitted like an Ajax poll): the event as a one-event batch, packed with
/// the client's packer; `404` unknown or expired, `403` not sent to this client, `410`
/// fetched already.
pub(crate) async fn fetch(shell: Arc<Shell>, a: Admitted) -> Response<ChskBody> {
    let registry = shell.registry();
    let id = a.request.param(large::PARAM).unwrap_or_default();
    let got = shell
        .large
        .lock()
        .fetch(id, &a.uid, &a.client_id, registry.now());
    let body = match got {
        Ok(b) => b,
        Err(e) => {
            crate::metrics::large_fetch(e.as_str());
            tracing::debug!(uid = %a.uid, client_id = %a.client_id, error = %e,
                "large event fetch refused");
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::NOT_FOUND);
            return plain(status, e.to_string());
        }
    };
    crate::metrics::large_fetch("ok");
    let m = ConnMetrics::new(Transport::Ajax, a.packer.name(), registry.meters());
    // Packed once per packer, however many clients fetch it.
    match body.packed(&*a.packer, shell.max_message()) {
        Ok(p) => {
            m.batch_sent(body.len());
            sent(&m, packed(p))
        }
        Err(e) => {
            registry.count_dropped_push(&e, 1);
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("The event could not be packed: {e}"),
            )
        }
    }
}
