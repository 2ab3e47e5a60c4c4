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

use crate::request::ChskRequest;
use sente_proto::large::{self, FetchError, LargeStore};
use sente_proto::server::PushBatch;
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
    /// references when the client `announced` the extension ([`announced`]; allowed to fetch
    /// them). The clock (`now`) is read only when something is offloaded.
    pub(crate) fn outgoing(
        &self,
        now: impl FnOnce() -> u64,
        b: &Arc<PushBatch>,
        announced: bool,
        uid: &Uid,
        cid: &ClientId,
    ) -> Arc<PushBatch> {
        if !self.on || !announced {
            return b.clone();
        }
        let off = b.offloaded(|events| {
            let (off, counts) = self
                .lock()
                .offload(events, now(), || uuid::Uuid::new_v4().simple().to_string());
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

    /// Client `cid` of `uid` fetches `id` (see [`LargeStore::fetch`]), counted by result.
    pub(crate) fn fetch(
        &self,
        id: &str,
        uid: &Uid,
        cid: &ClientId,
        now: u64,
    ) -> Result<Arc<PushBatch>, FetchError> {
        let got = self.lock().fetch(id, uid, cid, now);
        crate::metrics::large_fetch(got.as_ref().map_or_else(|e| e.as_str(), |_| "ok"));
        got
    }
}

/// Whether the client of `request` announced the large-event extension.
pub(crate) fn announced(request: &ChskRequest) -> bool {
    request.protocol_extensions().contains(large::EXTENSION)
}

/// Whether a GET is a fetch of an offloaded event (`large` parameter).
pub(crate) fn is_fetch(request: &ChskRequest) -> bool {
    request.param(large::PARAM).is_some()
}
