//! A [`CacheStore`] in Redis: one cache shared by every process. What
//! is stored and how failures are handled: see [`RedisStore`].

mod codec;

use std::fmt;
use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::{Script, Value};
use tokio::time::Instant;
use xxhash_rust::xxh3::xxh3_128;

use super::Redis;
use crate::cache::{CacheKey, CacheStore, CachedResponse};
use crate::error::InvalidConfig;

/// The default largest entry, encoded: 1 MiB. Every hit carries the whole
/// value over the network within the handle's timeout; larger answers are
/// rare and better served from upstream than from a slow shared read.
pub const DEFAULT_MAX_ENTRY: usize = 1024 * 1024;

/// Redis's default `proto-max-bulk-len`: the largest value it accepts.
const REDIS_MAX_VALUE: usize = 512 * 1024 * 1024;

/// Reads a value and its remaining time to live in one step, unless it is
/// longer than `ARGV[1]` (then its length alone).
static GET: LazyLock<Script> = LazyLock::new(|| {
    Redis::script(
        r"local n = redis.call('STRLEN', KEYS[1])
if n == 0 then return false end
if n > tonumber(ARGV[1]) then return n end
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}",
    )
});

/// A cache store in Redis, shared by every process that uses the same
/// server and key prefix. Cheap to clone (clones share the handle and
/// the counts).
///
/// - **Keys.** An entry lives at `{prefix}cache:{h}`, where `h` is 32 hex
///   digits of xxh3-128 over the encoded [`CacheKey`] — its tenant
///   (the keyed [`KeyId`](crate::request::KeyId), a named tenant, or
///   anonymous), method, path (the default key policy has already removed
///   `key=` values), version headers, flags and canonical body hash. No
///   request byte and no key material reaches a Redis key: only that
///   hash. The whole encoded key is also stored in the value and compared
///   on every read, so tenant A's entry is never served to tenant B even
///   if two keys shared a hash (isolation does not rest on the hash, as in
///   memory). A credentials tenant is stored as its keyed identity, which
///   leads back to no key; processes that share a cache must share the
///   [`KeyIdentity`](crate::request::KeyIdentity) secret
///   (`KeyIdentity::with_secret`), or they never meet on such entries.
/// - **Values** are a compact binary form (`codec.rs`): the key, TTL and
///   retention, status, headers (less any marked sensitive, whose values
///   never leave the process) and the body's chunks as they arrived.
/// - **Expiry** is Redis's: `SET … PX` with the retention the layer asks
///   (the TTL plus the stale-if-error window). A read takes the value and
///   its `PTTL` in one script, so an entry's age is the retention less
///   what Redis has left — measured by the server's clock, never by a
///   client's (clients with skewed clocks agree on ages). The layer then
///   judges freshness and stale-if-error as it does for memory.
/// - **Size.** [`max_entry_size`](RedisStoreBuilder::max_entry_size)
///   (default 1 MiB, encoded) is checked before anything is copied or
///   sent: an oversized entry is not stored (counted). A read checks the
///   value's length first (`STRLEN`, in the same script) and does not fetch
///   one over the limit, so a value written by another writer cannot make
///   this process allocate more than the limit.
/// - **Memory** is bounded by Redis: every entry has a TTL, and the
///   server's `maxmemory` with an eviction policy (`volatile-ttl` or
///   `allkeys-lru`) bounds the whole.
/// - **Failures.** Every read and write is bounded by the [`Redis`]
///   handle's timeout (default 50 ms). A slow or down Redis makes a read a
///   miss and a write a no-op — counted in [`RedisStoreStats`] and the
///   handle's [`errors`](Redis::errors) — never an error to the caller or
///   a wait past the timeout; the handle reconnects, and hits resume when
///   Redis is back. A value that cannot be decoded, or was stored under
///   another key, is a miss (counted).
/// - **Coalescing across processes: none.** Each process coalesces its own
///   identical misses (the layer's flight table); two processes missing
///   the same key at once both go upstream, and the later write wins. A
///   cross-process lock would add a round trip to every miss and a wait
///   bounded only by a lock timeout for a benefit limited to simultaneous
///   first requests.
/// - **No `try_get`.** Every read is a round trip, so a hit is served from
///   the cache layer's response future, not inside `call`.
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_llm_resilience::BoxError> {
/// use tower_llm_resilience::cache::CacheLayer;
/// use tower_llm_resilience::redis::{Redis, RedisStore};
///
/// let redis = Redis::new("redis://127.0.0.1:6379")?;
/// let cache = CacheLayer::builder()
///     .store(RedisStore::new(redis))
///     .build()?;
/// # let _ = cache; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    max_entry: usize,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
    failures: AtomicU64,
    oversized: AtomicU64,
    refused: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What a [`RedisStore`] has done since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RedisStoreStats {
    /// Reads that found an entry of their key.
    pub hits: u64,
    /// Reads that found none (absent, oversized, refused or failed reads
    /// included).
    pub misses: u64,
    /// Entries written.
    pub writes: u64,
    /// Reads and writes Redis did not answer within the timeout, or
    /// answered with an error.
    pub failures: u64,
    /// Entries not written, or not read, because they were over the size
    /// limit.
    pub oversized: u64,
    /// Values read that could not be decoded or belonged to another key.
    pub refused: u64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("redis", &self.inner.redis)
            .field("max_entry", &self.inner.max_entry)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RedisStore {
    /// A store on `redis` with the default entry size limit (1 MiB).
    pub fn new(redis: Redis) -> Self {
        RedisStore::from_parts(redis, DEFAULT_MAX_ENTRY)
    }

    /// A builder for the store's settings.
    pub fn builder(redis: Redis) -> RedisStoreBuilder {
        RedisStoreBuilder {
            redis,
            max_entry: DEFAULT_MAX_ENTRY,
        }
    }

    fn from_parts(redis: Redis, max_entry: usize) -> Self {
        RedisStore {
            inner: Arc::new(Inner {
                redis,
                max_entry,
                stats: Counters::default(),
            }),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> RedisStoreStats {
        let s = &self.inner.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RedisStoreStats {
            hits: get(&s.hits),
            misses: get(&s.misses),
            writes: get(&s.writes),
            failures: get(&s.failures),
            oversized: get(&s.oversized),
            refused: get(&s.refused),
        }
    }

    /// The handle the store uses.
    pub fn redis(&self) -> &Redis {
        &self.inner.redis
    }
}

/// Builds a [`RedisStore`].
#[derive(Debug)]
#[must_use]
pub struct RedisStoreBuilder {
    redis: Redis,
    max_entry: usize,
}

impl RedisStoreBuilder {
    /// The largest entry stored or read, in encoded bytes — key, headers,
    /// body and a few bytes of framing (default 1 MiB).
    pub fn max_entry_size(mut self, bytes: usize) -> Self {
        self.max_entry = bytes;
        self
    }

    /// The store.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] for a zero entry size, or one over 512 MiB (the
    /// largest value Redis accepts by default).
    pub fn build(self) -> Result<RedisStore, InvalidConfig> {
        if self.max_entry == 0 {
            return Err(InvalidConfig::new("max_entry_size", "must be positive"));
        }
        if self.max_entry > REDIS_MAX_VALUE {
            return Err(InvalidConfig::new(
                "max_entry_size",
                "must be at most 512 MiB (Redis's largest value)",
            ));
        }
        Ok(RedisStore::from_parts(self.redis, self.max_entry))
    }
}

impl Inner {
    fn redis_key(&self, encoded: &[u8]) -> String {
        format!("{}cache:{:032x}", self.redis.prefix(), xxh3_128(encoded))
    }

    async fn get(&self, encoded: Vec<u8>) -> Option<Arc<CachedResponse>> {
        let found = self.read(&encoded).await;
        bump(if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        });
        found
    }

    async fn read(&self, encoded: &[u8]) -> Option<Arc<CachedResponse>> {
        let rkey = self.redis_key(encoded);
        let mut invocation = GET.key(&rkey);
        invocation.arg(self.max_entry);
        let reply: Value = match self.redis.run(&invocation).await {
            Ok(reply) => reply,
            Err(e) => {
                bump(&self.stats.failures);
                tracing::debug!(error = %e, "redis cache read failed: a miss");
                return None;
            }
        };
        let (value, pttl) = match reply {
            Value::Nil => return None,
            Value::Int(_) => {
                bump(&self.stats.oversized);
                return None;
            }
            Value::Array(mut parts) if parts.len() == 2 => {
                let pttl = match parts.pop() {
                    Some(Value::Int(ms)) => ms,
                    _ => -1,
                };
                match parts.pop() {
                    Some(Value::BulkString(value)) => (value, pttl),
                    _ => {
                        bump(&self.stats.refused);
                        return None;
                    }
                }
            }
            _ => {
                bump(&self.stats.refused);
                return None;
            }
        };
        let decoded = match codec::decode(&value, encoded) {
            Ok(d) => d,
            Err(why) => {
                bump(&self.stats.refused);
                tracing::debug!(?why, "redis cache value refused: a miss");
                return None;
            }
        };
        // Age by the server's clock: the retention less what is left. A
        // value without expiry (written by something else) counts as new.
        let left = u64::try_from(pttl).unwrap_or(decoded.retain_ms);
        let age = Duration::from_millis(decoded.retain_ms.saturating_sub(left));
        let now = Instant::now();
        let stored_at = now.checked_sub(age).unwrap_or(now);
        Some(Arc::new(CachedResponse::new(
            decoded.status,
            decoded.headers,
            Arc::from(decoded.chunks),
            stored_at,
            Duration::from_millis(decoded.ttl_ms),
        )))
    }
}

/// The future of [`RedisStore`]'s reads.
pub type GetFuture = Pin<Box<dyn Future<Output = Option<Arc<CachedResponse>>> + Send>>;
/// The future of [`RedisStore`]'s writes.
pub type PutFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

impl CacheStore for RedisStore {
    type Get = GetFuture;
    type Put = PutFuture;

    fn get(&self, key: &CacheKey) -> GetFuture {
        let inner = Arc::clone(&self.inner);
        let encoded = codec::key(key);
        Box::pin(async move { inner.get(encoded).await })
    }

    fn put(&self, key: CacheKey, entry: Arc<CachedResponse>, retain: Duration) -> PutFuture {
        let encoded = codec::key(&key);
        if codec::entry_len(&encoded, &entry) > self.inner.max_entry {
            bump(&self.inner.stats.oversized);
            return Box::pin(ready(()));
        }
        let retain_ms = codec::millis(retain).max(1);
        let value = codec::encode(&encoded, &entry, retain_ms);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.inner.redis_key(&encoded))
            .arg(value)
            .arg("PX")
            .arg(retain_ms);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            match inner.redis.query::<()>(&cmd).await {
                Ok(()) => bump(&inner.stats.writes),
                Err(e) => {
                    bump(&inner.stats.failures);
                    tracing::debug!(error = %e, "redis cache write failed: not stored");
                }
            }
        })
    }
}
