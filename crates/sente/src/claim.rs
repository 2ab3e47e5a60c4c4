//! The cluster's say on a retried request's copy before it runs (see [`crate::idem`]): its
//! claim in the engine ([`sente_proto::backplane::IdemStore`]), asked again while another node
//! runs it.

use sente_proto::backplane::{Claim, IdemStore};
use sente_proto::{ClientId, Uid, Value};
use std::sync::Arc;
use std::time::Duration;

/// How soon a copy whose run another node holds asks the cluster again; each later ask waits
/// twice as long, up to [`CLAIM_POLL_MAX`] (so copies a client keeps waiting cost the shared
/// engine less and less).
pub const CLAIM_POLL: Duration = Duration::from_millis(50);

/// The longest wait between two asks of a copy whose run another node holds.
pub const CLAIM_POLL_MAX: Duration = Duration::from_secs(1);

/// The cluster's dedupe of retried requests: its store, and how long entries live there.
#[derive(Clone)]
pub(crate) struct ClusterIdem {
    pub(crate) store: Arc<dyn IdemStore>,
    pub(crate) ttl: Duration,
}

impl std::fmt::Debug for ClusterIdem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIdem")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A copy's claim in the cluster, decided before it runs ([`Claiming::decide`]).
#[derive(Debug)]
pub(crate) struct Claiming {
    pub(crate) cluster: ClusterIdem,
    pub(crate) uid: Uid,
    pub(crate) client_id: ClientId,
    pub(crate) id: String,
}

impl Claiming {
    /// `None`: run the copy here; else the outcome of its run on another node.
    pub(crate) async fn decide(&self) -> Option<Option<Value>> {
        // A claim outlives its ttl only if the engine keeps it longer: then run it.
        let ClusterIdem { store, ttl } = &self.cluster;
        let deadline = tokio::time::Instant::now() + *ttl * 2;
        let mut wait = CLAIM_POLL;
        loop {
            let claim = store.claim(&self.uid, &self.client_id, &self.id, *ttl);
            match claim.await {
                Claim::Done(outcome) => return Some(outcome),
                Claim::Running if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(CLAIM_POLL_MAX);
                }
                Claim::Run | Claim::Running => return None,
            }
        }
    }
}
