//! A tap on a cluster's pub/sub traffic: one extra subscriber that counts the messages and
//! payload bytes published on the cluster's channels (Redis: a pattern subscription to
//! `<cluster>*`, which covers sente-redis's `<cluster>:backplane` and socketioxide-redis's
//! `<cluster>-request#...` channels; NATS: `<cluster>.backplane`, and `<cluster>.seq`, where
//! sente-nats publishes the pushes it numbers for cross-node resume). Payload bytes only, without
//! the engine's protocol framing; the engines' key-value operations (sente's Ajax mailbox
//! appends) are not pub/sub messages and are not counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::peers::Backplane;
use crate::{Res, err};

/// Messages and payload bytes seen so far.
#[derive(Debug, Default)]
pub struct TapCounters {
    msgs: AtomicU64,
    bytes: AtomicU64,
}

impl TapCounters {
    fn add(&self, bytes: usize) {
        self.msgs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// (messages, payload bytes) counted so far.
    pub fn read(&self) -> (u64, u64) {
        (
            self.msgs.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// A running tap; stops when dropped.
pub struct Tap {
    /// What it has counted.
    pub counters: Arc<TapCounters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long subscribing may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

impl Tap {
    /// Subscribes to cluster `cluster`'s channels on the engine at `url`; returns once the
    /// subscription is in place.
    pub async fn start(backplane: Backplane, url: &str, cluster: &str) -> Res<Tap> {
        let counters = Arc::new(TapCounters::default());
        let c = counters.clone();
        let task = match backplane {
            Backplane::Redis => {
                let client = redis::Client::open(url)?;
                let mut pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
                    let mut p = client.get_async_pubsub().await?;
                    p.psubscribe(format!("{cluster}*")).await?;
                    Ok::<_, redis::RedisError>(p)
                })
                .await
                .map_err(|_| err("the Redis tap did not subscribe within 10 s"))??;
                tokio::spawn(async move {
                    let mut messages = pubsub.on_message();
                    while let Some(m) = messages.next().await {
                        c.add(m.get_payload_bytes().len());
                    }
                })
            }
            Backplane::Nats => {
                let (client, mut sub) = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
                    let client = async_nats::connect(url).await?;
                    let plain = client.subscribe(format!("{cluster}.backplane")).await?;
                    let numbered = client.subscribe(format!("{cluster}.seq")).await?;
                    client.flush().await?;
                    Ok::<_, crate::BoxError>((
                        client,
                        futures_util::stream::select(plain, numbered),
                    ))
                })
                .await
                .map_err(|_| err("the NATS tap did not subscribe within 10 s"))??;
                tokio::spawn(async move {
                    let _client = client;
                    while let Some(m) = sub.next().await {
                        c.add(m.payload.len());
                    }
                })
            }
        };
        Ok(Tap { counters, task })
    }
}

/// Removes what cluster `cluster`'s nodes left in the engine once they are gone: on Redis the
/// keys under `<cluster>` (uidport sets live an hour otherwise), on NATS its key-value buckets
/// and numbering stream (`sente_nats::remove_cluster`; the server keeps them otherwise). Best effort:
/// errors are returned for a message, never fatal to a run.
pub async fn cleanup(backplane: Backplane, url: &str, cluster: &str) -> Res<()> {
    let work = async {
        match backplane {
            Backplane::Redis => {
                let client = redis::Client::open(url)?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{cluster}*"))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await?;
                    if !keys.is_empty() {
                        let () = redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async(&mut conn)
                            .await?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Backplane::Nats => {
                let client = async_nats::connect(url).await?;
                sente_nats::remove_cluster(&client, cluster).await?;
            }
        }
        Ok::<_, crate::BoxError>(())
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .map_err(|_| err("cleanup did not finish within 30 s"))?
}
