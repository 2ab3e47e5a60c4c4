//! Where the state that every node must see lives: the sessions (with their CSRF tokens), the
//! name claims, the rate limits and the room's recent messages. One node keeps it in memory; a
//! cluster keeps it in Redis or in a NATS key-value bucket, so that a request may land on any
//! node (round-robin, no sticky sessions).
//!
//! [`Shared`] offers the few operations the demo needs, each atomic in every engine: `create`
//! only if absent (Redis `SET NX PX`, NATS KV `create`), `touch` and `delete_if` only while the
//! value is the expected one (Redis: a short Lua script; NATS: compare-and-set on the entry's
//! revision). Every value expires: Redis keys carry a TTL; NATS KV values carry their expiry
//! time in their first 8 bytes (the NATS server this project runs, 2.9, has no per-key TTL),
//! which assumes the nodes' clocks agree to within a fraction of [`crate::NAME_GRACE`].
//! A bounded list (the room's history) is one value updated by compare-and-set
//! ([`Shared::push_capped`]). [`SessionKv`] is tower-sessions' `SessionStore` over it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a NATS KV bucket keeps a value after its last write: past the longest session
/// (tower-sessions' default expiry, two weeks), so that only dead values are dropped.
const NATS_MAX_AGE: Duration = Duration::from_secs(15 * 24 * 3600);
/// Expired values dropped from memory every this many writes.
const MEMORY_PRUNE_EVERY: u64 = 1024;
/// Attempts at a fresh session id when the random one is taken.
const CREATE_ATTEMPTS: usize = 8;
/// Attempts at a NATS KV compare-and-set that other writes to the same key keep beating.
const CAS_ATTEMPTS: usize = 8;
/// Attempts at appending to a list (see [`Shared::push_capped`]) that other appends to the same
/// list keep beating (every chat message of the room appends to one list).
const LIST_ATTEMPTS: usize = 32;

/// The demo's NATS KV bucket of cluster `cluster`.
fn nats_bucket(cluster: &str) -> String {
    format!("{cluster}-chat")
}

/// The stream behind [`nats_bucket`].
fn nats_stream(cluster: &str) -> String {
    sente_nats::kv_stream_name(&nats_bucket(cluster))
}

/// The store of the shared state (see the module docs).
pub(crate) enum Shared {
    /// One node: a map in this process.
    Memory(Memory),
    /// Redis keys `<cluster>:chat:<key>`.
    Redis(RedisKv),
    /// The NATS KV bucket `<cluster>-chat`.
    Nats(Box<NatsKv>),
}

impl Shared {
    /// Connects to Redis (and checks it answers).
    pub(crate) async fn redis(url: &str, cluster: &str) -> Result<Shared, BoxError> {
        let kv = RedisKv {
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
            prefix: format!("{cluster}:chat:"),
        };
        let _: String = kv.run(&redis::cmd("PING")).await?;
        Ok(Shared::Redis(kv))
    }

    /// Deletes what cluster `cluster` keeps in Redis, the backplane's and the demo's (every key
    /// under `<cluster>:`); how many keys were deleted.
    pub(crate) async fn remove_redis(url: &str, cluster: &str) -> Result<usize, BoxError> {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        Ok(sente_redis::remove_cluster(&mut conn, cluster).await?)
    }

    /// Deletes what cluster `cluster` keeps in NATS: the backplane's buckets and numbering
    /// stream, and the demo's bucket; how many streams were deleted.
    pub(crate) async fn remove_nats(url: &str, cluster: &str) -> Result<usize, BoxError> {
        let client = async_nats::connect(url).await?;
        let deleted = sente_nats::remove_cluster(&client, cluster).await?
            + sente_nats::remove_streams(&client, [nats_stream(cluster)]).await?;
        Ok(deleted)
    }

    /// Connects to NATS and opens (or makes) the bucket.
    pub(crate) async fn nats(url: &str, cluster: &str) -> Result<Shared, BoxError> {
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client);
        let bucket = nats_bucket(cluster);
        // The bucket's stream is made here, as `create_key_value` would (its first step, asking
        // for the account's details, fails on older servers such as 2.9); memory storage, like
        // sente-nats' buckets. Another node may make it at the same moment: then it is found.
        let config = async_nats::jetstream::stream::Config {
            name: sente_nats::kv_stream_name(&bucket),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: NATS_MAX_AGE,
            storage: async_nats::jetstream::stream::StorageType::Memory,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: 1,
            ..Default::default()
        };
        let created = js.get_or_create_stream(config).await.err();
        let kv = js
            .get_key_value(bucket.as_str())
            .await
            .map_err(|e| match created {
                Some(c) => format!("NATS KV bucket {bucket}: {c}; {e}"),
                None => format!("NATS KV bucket {bucket}: {e}"),
            })?;
        Ok(Shared::Nats(Box::new(NatsKv { kv })))
    }

    /// The live value of `key`.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        match self {
            Shared::Memory(m) => Ok(m.live(key).map(|(v, _)| v.clone())),
            Shared::Redis(r) => r.run(redis::cmd("GET").arg(r.key(key))).await,
            Shared::Nats(n) => Ok(n.live(key).await?.map(|(v, _)| v)),
        }
    }

    /// Sets `key` to `value` for `ttl`.
    pub(crate) async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BoxError> {
        match self {
            Shared::Memory(m) => {
                m.insert(key, value, ttl);
                Ok(())
            }
            Shared::Redis(r) => {
                let cmd = redis::cmd("SET")
                    .arg(r.key(key))
                    .arg(value)
                    .arg("PX")
                    .arg(millis(ttl))
                    .to_owned();
                r.run::<()>(&cmd).await
            }
            Shared::Nats(n) => {
                n.kv.put(key, with_expiry(value, ttl)).await?;
                Ok(())
            }
        }
    }

    /// Sets `key` to `value` for `ttl` if it has no live value; says whether it did.
    pub(crate) async fn create(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, BoxError> {
        match self {
            Shared::Memory(m) => {
                if m.live(key).is_some() {
                    return Ok(false);
                }
                m.insert(key, value, ttl);
                Ok(true)
            }
            Shared::Redis(r) => {
                let cmd = redis::cmd("SET")
                    .arg(r.key(key))
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .to_owned();
                Ok(r.run::<Option<String>>(&cmd).await?.is_some())
            }
            Shared::Nats(n) => n.create(key, value, ttl).await,
        }
    }

    /// Deletes `key`.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), BoxError> {
        match self {
            Shared::Memory(m) => {
                m.lock().remove(key);
                Ok(())
            }
            Shared::Redis(r) => r.run::<()>(redis::cmd("DEL").arg(r.key(key))).await,
            Shared::Nats(n) => Ok(n.kv.delete(key).await?),
        }
    }

    /// Makes the live value of `key` last `ttl` from now, if it is `expect` (any value if
    /// `None`); says whether it did. Never creates `key`.
    pub(crate) async fn touch(
        &self,
        key: &str,
        expect: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BoxError> {
        match self {
            Shared::Memory(m) => {
                let mut map = m.lock();
                let now = Instant::now();
                match map.get_mut(key) {
                    Some((v, until))
                        if *until > now && expect.is_none_or(|e| e == v.as_slice()) =>
                    {
                        *until = now + ttl;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            Shared::Redis(r) => {
                let cmd = match expect {
                    None => redis::cmd("PEXPIRE")
                        .arg(r.key(key))
                        .arg(millis(ttl))
                        .to_owned(),
                    Some(e) => redis::cmd("EVAL")
                        .arg(
                            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                             return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
                        )
                        .arg(1)
                        .arg(r.key(key))
                        .arg(e)
                        .arg(millis(ttl))
                        .to_owned(),
                };
                Ok(r.run::<i64>(&cmd).await? == 1)
            }
            Shared::Nats(n) => {
                // Compare-and-set on the revision; lost to another write (e.g. the same
                // session's Ajax poll and POST renewing its name at once on two nodes): read
                // again and retry, so that a concurrent renewal is not taken for a loss.
                for _ in 0..CAS_ATTEMPTS {
                    let Some((value, revision)) = n.live(key).await? else {
                        return Ok(false);
                    };
                    if expect.is_some_and(|e| e != value.as_slice()) {
                        return Ok(false);
                    }
                    if cas(n.kv.update(key, with_expiry(&value, ttl), revision).await)? {
                        return Ok(true);
                    }
                }
                Err("too many concurrent writes".into())
            }
        }
    }

    /// Sets `key` to `new` for `ttl` if its live value is `expect` (`None`: it has none); says
    /// whether it did. For a read-modify-write loop (see the chat's rate limit).
    pub(crate) async fn compare_and_set(
        &self,
        key: &str,
        expect: Option<&[u8]>,
        new: &[u8],
        ttl: Duration,
    ) -> Result<bool, BoxError> {
        match self {
            Shared::Memory(m) => {
                let now = Instant::now();
                let mut map = m.lock();
                let live = map.get(key).filter(|(_, until)| *until > now);
                if live.map(|(v, _)| v.as_slice()) != expect {
                    return Ok(false);
                }
                map.insert(key.to_owned(), (new.to_vec(), now + ttl));
                Ok(true)
            }
            Shared::Redis(r) => {
                let cmd = redis::cmd("EVAL")
                    .arg(
                        "local cur = redis.call('GET', KEYS[1]) \
                         if (ARGV[1] == '0' and not cur) or (ARGV[1] == '1' and cur == ARGV[2]) \
                         then redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) return 1 end \
                         return 0",
                    )
                    .arg(1)
                    .arg(r.key(key))
                    .arg(if expect.is_some() { "1" } else { "0" })
                    .arg(expect.unwrap_or_default())
                    .arg(new)
                    .arg(millis(ttl))
                    .to_owned();
                Ok(r.run::<i64>(&cmd).await? == 1)
            }
            Shared::Nats(n) => {
                let Some(expect) = expect else {
                    return n.create(key, new, ttl).await;
                };
                match n.live(key).await? {
                    Some((value, revision)) if value == expect => {
                        cas(n.kv.update(key, with_expiry(new, ttl), revision).await)
                    }
                    _ => Ok(false),
                }
            }
        }
    }

    /// Appends `item` to the list under `key` (made if absent) and keeps its newest items: at
    /// most `max_items` of them, together at most `max_bytes`; the list lives `ttl` from this
    /// write. A read and a compare-and-set (see [`Shared::compare_and_set`]), retried while other
    /// appends come first, so it works the same in every engine; an error after
    /// [`LIST_ATTEMPTS`] lost races.
    pub(crate) async fn push_capped(
        &self,
        key: &str,
        item: &[u8],
        max_items: usize,
        max_bytes: usize,
        ttl: Duration,
    ) -> Result<(), BoxError> {
        for _ in 0..LIST_ATTEMPTS {
            let old = self.get(key).await?;
            let mut items = old.as_deref().map(decode_list).unwrap_or_default();
            items.push(item);
            let mut bytes: usize = items.iter().map(|i| i.len()).sum();
            let mut drop = items.len().saturating_sub(max_items);
            bytes -= items[..drop].iter().map(|i| i.len()).sum::<usize>();
            while drop < items.len() && bytes > max_bytes {
                bytes -= items[drop].len();
                drop += 1;
            }
            let new = encode_list(&items[drop..]);
            if self.compare_and_set(key, old.as_deref(), &new, ttl).await? {
                return Ok(());
            }
        }
        Err("too many concurrent writes".into())
    }

    /// The items of the list under `key` (see [`Shared::push_capped`]), oldest first.
    pub(crate) async fn list(&self, key: &str) -> Result<Vec<Vec<u8>>, BoxError> {
        let value = self.get(key).await?.unwrap_or_default();
        Ok(decode_list(&value)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// Deletes `key` if its live value is `expect`; says whether it did.
    pub(crate) async fn delete_if(&self, key: &str, expect: &[u8]) -> Result<bool, BoxError> {
        match self {
            Shared::Memory(m) => {
                let mut map = m.lock();
                let live = map
                    .get(key)
                    .is_some_and(|(v, until)| *until > Instant::now() && v.as_slice() == expect);
                if live {
                    map.remove(key);
                }
                Ok(live)
            }
            Shared::Redis(r) => {
                let cmd = redis::cmd("EVAL")
                    .arg(
                        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                         return redis.call('DEL', KEYS[1]) else return 0 end",
                    )
                    .arg(1)
                    .arg(r.key(key))
                    .arg(expect)
                    .to_owned();
                Ok(r.run::<i64>(&cmd).await? == 1)
            }
            Shared::Nats(n) => {
                for _ in 0..CAS_ATTEMPTS {
                    let Some((value, revision)) = n.live(key).await? else {
                        return Ok(false);
                    };
                    if value != expect {
                        return Ok(false);
                    }
                    if cas(n.kv.delete_expect_revision(key, Some(revision)).await)? {
                        return Ok(true);
                    }
                }
                Err("too many concurrent writes".into())
            }
        }
    }
}

/// A list as one value: each item is its length (4 bytes, big-endian) and its bytes.
fn encode_list(items: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|i| 4 + i.len()).sum());
    for item in items {
        let len = u32::try_from(item.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&item[..len as usize]);
    }
    out
}

/// The items of [`encode_list`]'s value (a damaged tail is left out).
fn decode_list(mut value: &[u8]) -> Vec<&[u8]> {
    let mut items = Vec::new();
    while let Some((head, rest)) = value.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*head) as usize;
        let Some((item, rest)) = rest.split_at_checked(len) else {
            break;
        };
        items.push(item);
        value = rest;
    }
    items
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The map of a single node: value and expiry per key.
#[derive(Default)]
pub(crate) struct Memory {
    map: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
    writes: std::sync::atomic::AtomicU64,
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, Instant)>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self, key: &str) -> Option<(Vec<u8>, Instant)> {
        self.lock()
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .cloned()
    }

    fn insert(&self, key: &str, value: &[u8], ttl: Duration) {
        let now = Instant::now();
        let mut map = self.lock();
        let n = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % MEMORY_PRUNE_EVERY == MEMORY_PRUNE_EVERY - 1 {
            map.retain(|_, (_, until)| *until > now);
        }
        map.insert(key.to_owned(), (value.to_vec(), now + ttl));
    }
}

/// Redis: one multiplexed connection, made again after an error.
pub(crate) struct RedisKv {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    prefix: String,
}

impl RedisKv {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BoxError> {
        let mut conn = {
            let mut slot = self.conn.lock().await;
            if let Some(c) = slot.as_ref() {
                c.clone()
            } else {
                let c = self.client.get_multiplexed_async_connection().await?;
                *slot = Some(c.clone());
                c
            }
        };
        match cmd.query_async(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *self.conn.lock().await = None;
                }
                Err(e.into())
            }
        }
    }
}

/// NATS: a KV bucket whose values start with their expiry time (unix ms, big-endian).
pub(crate) struct NatsKv {
    kv: async_nats::jetstream::kv::Store,
}

fn with_expiry(value: &[u8], ttl: Duration) -> bytes::Bytes {
    let until = now_ms().saturating_add(millis(ttl));
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&until.to_be_bytes());
    out.extend_from_slice(value);
    out.into()
}

impl NatsKv {
    /// The live value of `key` and its revision (`None` if absent, deleted or expired).
    async fn live(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, BoxError> {
        Ok(self
            .entry(key)
            .await?
            .and_then(|(v, rev, live)| live.then_some((v, rev))))
    }

    /// The value of `key`, its revision and whether it is live.
    async fn entry(&self, key: &str) -> Result<Option<(Vec<u8>, u64, bool)>, BoxError> {
        use async_nats::jetstream::kv::Operation;
        let Some(entry) = self.kv.entry(key).await? else {
            return Ok(None);
        };
        if entry.operation != Operation::Put || entry.value.len() < 8 {
            return Ok(Some((Vec::new(), entry.revision, false)));
        }
        let (head, value) = entry.value.split_at(8);
        let until = u64::from_be_bytes(head.try_into().unwrap_or([0; 8]));
        Ok(Some((value.to_vec(), entry.revision, until > now_ms())))
    }

    async fn create(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BoxError> {
        use async_nats::jetstream::kv::CreateErrorKind;
        match self.kv.create(key, with_expiry(value, ttl)).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                // Present: free only if expired, then taken by compare-and-set on its revision.
                match self.entry(key).await? {
                    Some((_, revision, false)) => {
                        cas(self.kv.update(key, with_expiry(value, ttl), revision).await)
                    }
                    Some((_, _, true)) => Ok(false),
                    None => Ok(self.kv.create(key, with_expiry(value, ttl)).await.is_ok()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `true` if a compare-and-set succeeded, `false` if another write came first.
fn cas<T>(result: Result<T, async_nats::jetstream::kv::UpdateError>) -> Result<bool, BoxError> {
    use async_nats::jetstream::kv::UpdateErrorKind;
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// tower-sessions' `SessionStore` over [`Shared`]: a record is JSON under `session.<id>`, and
/// lives until its expiry date.
#[derive(Clone)]
pub(crate) struct SessionKv(pub(crate) std::sync::Arc<Shared>);

impl std::fmt::Debug for SessionKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKv")
    }
}

fn session_key(id: &Id) -> String {
    // Ids print as URL-safe base64: valid in Redis and NATS KV keys.
    format!("session.{id}")
}

/// Time left until `record` expires (at least 1 ms).
fn time_left(record: &Record) -> Duration {
    let until = record.expiry_date.unix_timestamp_nanos() / 1_000_000;
    let left = until - i128::from(now_ms());
    Duration::from_millis(u64::try_from(left.max(1)).unwrap_or(u64::MAX))
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))
}

fn backend(e: &BoxError) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

#[async_trait::async_trait]
impl session_store::SessionStore for SessionKv {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        for _ in 0..CREATE_ATTEMPTS {
            let made = self
                .0
                .create(
                    &session_key(&record.id),
                    &encode(record)?,
                    time_left(record),
                )
                .await
                .map_err(|e| backend(&e))?;
            if made {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(session_store::Error::Backend(
            "no free session id".to_owned(),
        ))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.0
            .put(
                &session_key(&record.id),
                &encode(record)?,
                time_left(record),
            )
            .await
            .map_err(|e| backend(&e))
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(bytes) = self
            .0
            .get(&session_key(id))
            .await
            .map_err(|e| backend(&e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| session_store::Error::Decode(e.to_string()))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.0
            .delete(&session_key(id))
            .await
            .map_err(|e| backend(&e))
    }
}
