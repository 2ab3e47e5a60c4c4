//! The server [`Core`] split into shards by uid (see [`Shards`]).

use super::core::{Core, CoreConfig};
use crate::event::Uid;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The number of shards used when none is configured: the machine's available parallelism
/// (1 if it cannot be read).
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The server [`Core`] split into shards by uid, so that connections of different uids are
/// handled on different cores at once.
///
/// A uid lives in one shard for the life of the process (its clients, send buffers, queues,
/// timers and replay log), picked by a hash of the uid seeded at random per process, so clients
/// cannot aim many uids at one shard. An operation on one uid (a connection opening or closing,
/// a poll, a push to a uid, a flush) locks that uid's shard only.
///
/// What spans shards:
/// - Broadcasts, pushes to several uids, and the cluster's numbered messages visit the shards
///   in index order, locking shard `i + 1` before letting go of shard `i` (lock coupling). One
///   such operation can never overtake another, so every shard sees them in the same order and
///   clients of different shards see broadcasts in one order, as with one core; yet two of
///   them run at once on different shards, one behind the other.
/// - The cluster sequence (`Core::sequenced`, the announced epoch, the broadcasts' log) is kept
///   by every shard: a numbered message is checked by every shard, in that order, so all
///   shards agree on gaps, duplicates and epochs; the push itself is applied by the shards of
///   its uids (all of them for a broadcast).
/// - Presence (connected uids) is per uid, so each shard reports its own uids.
///
/// Lock order: shards by increasing index, at most two at once (`i`, then `i + 1`). An
/// operation on one uid holds its shard only.
#[derive(Debug)]
pub struct Shards<W, A, C> {
    shards: Box<[Mutex<Core<W, A, C>>]>,
    hasher: foldhash::fast::RandomState,
}

impl<W: Clone, A, C: Clone> Shards<W, A, C> {
    /// `n` empty cores (at least one) with the same configuration; shard `i`'s replay-log
    /// epochs are seeded from `seed(i)` (give each its own, see [`Core::set_epoch_seed`]).
    pub fn new(cfg: &CoreConfig, n: usize, mut seed: impl FnMut(usize) -> u64) -> Self {
        let shards = (0..n.max(1))
            .map(|i| {
                let mut core = Core::new(cfg.clone());
                core.set_epoch_seed(seed(i));
                Mutex::new(core)
            })
            .collect();
        Shards {
            shards,
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl<W, A, C> Shards<W, A, C> {
    /// How many shards there are.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard that holds `uid`.
    pub fn index(&self, uid: &Uid) -> usize {
        match self.shards.len() {
            1 => 0,
            n => (self.hasher.hash_one(uid) % n as u64) as usize,
        }
    }

    /// Locks shard `i` (a poisoned lock is taken over: the core's state is kept consistent
    /// by each call, and a panic in one connection's task must not stop the server).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn lock(&self, i: usize) -> MutexGuard<'_, Core<W, A, C>> {
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the shard of `uid`.
    pub fn lock_uid(&self, uid: &Uid) -> MutexGuard<'_, Core<W, A, C>> {
        self.lock(self.index(uid))
    }

    /// `uids` grouped by shard: entry `i` holds the uids of shard `i`, in their given order.
    pub fn partition<'a>(&self, uids: impl IntoIterator<Item = &'a Uid>) -> Vec<Vec<&'a Uid>> {
        let mut parts = vec![Vec::new(); self.shards.len()];
        for uid in uids {
            parts[self.index(uid)].push(uid);
        }
        parts
    }
}
