//! Where cached responses live: the [`CacheStore`] trait and the in-memory
//! [`MemoryStore`].

use std::fmt;
use std::future::{Future, Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use super::key::CacheKey;

/// A complete response as it was stored: status, headers (without
/// hop-by-hop fields) and the body's chunks exactly as they arrived.
#[derive(Clone)]
pub struct CachedResponse {
    status: StatusCode,
    headers: HeaderMap,
    chunks: Arc<[Bytes]>,
    size: usize,
    /// What the entry costs in memory, estimated (see [`Self::weight`]).
    weight: usize,
    stored_at: Instant,
    ttl: Duration,
}

impl fmt::Debug for CachedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedResponse")
            .field("status", &self.status)
            .field("chunks", &self.chunks.len())
            .field("size", &self.size)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CachedResponse {
    /// A response stored at `stored_at`, fresh for `ttl`.
    ///
    /// The headers are kept as a hit replays them: with
    /// [`x-llm-cache: HIT`](super::CACHE_HEADER) already set, so a hit
    /// only clones them.
    ///
    /// Headers and chunks are copied into storage of their own (one buffer
    /// for the body, its chunks slices of it; each header value its own
    /// exact allocation): what arrived from a connection is often a slice
    /// of a larger read buffer, which an entry would otherwise keep alive
    /// whole — the weight could not tell.
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        chunks: Arc<[Bytes]>,
        stored_at: Instant,
        ttl: Duration,
    ) -> Self {
        let mut headers = compact_headers(&headers);
        headers.insert(
            super::CACHE_HEADER,
            http::HeaderValue::from_static(super::Status::Hit.as_str()),
        );
        let chunks = compact_chunks(&chunks);
        let body = chunks.iter().map(Bytes::len).sum::<usize>();
        let size = body
            + headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 32)
                .sum::<usize>();
        let weight = entry_weight(&headers, chunks.len(), body);
        CachedResponse {
            status,
            headers,
            chunks,
            size,
            weight,
            stored_at,
            ttl,
        }
    }
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// The headers, as a hit replays them.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    /// The body, chunk by chunk.
    pub fn chunks(&self) -> &Arc<[Bytes]> {
        &self.chunks
    }
    /// About how many bytes the entry holds (body, headers and overhead):
    /// its weight against the store's capacity.
    pub fn size(&self) -> usize {
        self.size
    }
    /// What the entry costs in memory, estimated from above: the body's
    /// buffer, each chunk's handle, each header's slot, name and value,
    /// the tables, and the allocator's bookkeeping per allocation. (The
    /// store adds its key's cost.)
    pub fn weight(&self) -> usize {
        self.weight
    }
    /// When it was stored.
    pub fn stored_at(&self) -> Instant {
        self.stored_at
    }
    /// How long it is fresh.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
    /// Its age at `now`.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }
    /// Whether it is still fresh at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.ttl
    }
}

/// A cache backend. The layer never touches storage but through this trait,
/// so a shared store (Redis) can replace the in-memory one without touching
/// the layer.
///
/// Methods return futures (an in-memory store returns ready ones), so a
/// networked store can do I/O. The store decides eviction; it must keep an
/// entry at least `retain` after storing it (the TTL plus the
/// stale-if-error window) — or drop it earlier under capacity pressure —
/// and need not return entries older than that.
pub trait CacheStore: Send + Sync + 'static {
    /// The future of [`get`](Self::get).
    type Get: Future<Output = Option<Arc<CachedResponse>>> + Send + 'static;
    /// The future of [`put`](Self::put).
    type Put: Future<Output = ()> + Send + 'static;

    /// The entry stored under `key`, if any (fresh or not: the layer
    /// decides what an old entry is good for).
    fn get(&self, key: &CacheKey) -> Self::Get;
    /// The entry under `key` when the store can tell without waiting
    /// (`Some(answer)`), or `None` to be asked through [`get`](Self::get).
    ///
    /// An in-memory store answers here, so a hit is served inside `call`
    /// without a future to drive. The default defers to `get`.
    fn try_get(&self, _key: &CacheKey) -> Option<Option<Arc<CachedResponse>>> {
        None
    }
    /// Stores `entry` under `key`, to be kept for `retain`.
    fn put(&self, key: CacheKey, entry: Arc<CachedResponse>, retain: Duration) -> Self::Put;
}

/// The allocator's bookkeeping per allocation, and rounding, counted
/// high (glibc: 8–16 bytes of header, sizes rounded to 16).
const PER_ALLOC: usize = 32;
/// One header's slot in a `HeaderMap` (its bucket, about 100 bytes, and
/// its index), counted high.
const PER_HEADER: usize = 128;
/// The quick_cache slot of an entry (key and value in place, its hash,
/// links and table index), beside the key's own size.
const PER_ENTRY: usize = 64;

fn compact_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        // `from_bytes` copies (a standard name is a constant, no copy).
        let (Ok(name), Ok(mut copy)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) else {
            continue;
        };
        copy.set_sensitive(value.is_sensitive());
        out.append(name, copy);
    }
    out
}

fn compact_chunks(chunks: &[Bytes]) -> Arc<[Bytes]> {
    let total = chunks.iter().map(Bytes::len).sum::<usize>();
    let mut buf = bytes::BytesMut::with_capacity(total);
    for c in chunks {
        buf.extend_from_slice(c);
    }
    let buf = buf.freeze();
    let mut at = 0;
    chunks
        .iter()
        .map(|c| {
            let part = buf.slice(at..at + c.len());
            at += c.len();
            part
        })
        .collect()
}

/// The estimate behind [`CachedResponse::weight`].
fn entry_weight(headers: &HeaderMap, chunks: usize, body: usize) -> usize {
    let names_and_values = headers
        .iter()
        .map(|(n, v)| {
            // A custom name and every value own an allocation; a standard
            // name is a constant.
            let name = if http::HeaderName::from_bytes(n.as_str().as_bytes())
                .is_ok_and(|c| c.as_str().as_ptr() == n.as_str().as_ptr())
            {
                0
            } else {
                n.as_str().len() + PER_ALLOC
            };
            PER_HEADER + name + v.len() + PER_ALLOC
        })
        .sum::<usize>();
    // The `Arc` of the entry, the header table and index, the chunk list
    // and the body's buffer with its shared handle.
    std::mem::size_of::<CachedResponse>()
        + 16
        + names_and_values
        + chunks * std::mem::size_of::<Bytes>()
        + 16
        + body
        + 32
        + 5 * PER_ALLOC
}

/// What a key costs beside its entry: its size in the slot, its path and
/// header values (each an allocation), and the slot's bookkeeping.
fn key_weight(key: &CacheKey) -> usize {
    std::mem::size_of::<CacheKey>() + PER_ENTRY + key.heap_bytes(PER_ALLOC)
}

#[derive(Clone, Copy)]
struct Weigh;

impl quick_cache::Weighter<CacheKey, Arc<CachedResponse>> for Weigh {
    fn weight(&self, key: &CacheKey, val: &Arc<CachedResponse>) -> u64 {
        (val.weight() + key_weight(key)) as u64
    }
}

/// The in-memory store: a concurrent S3-FIFO cache (quick_cache) bounded
/// by bytes, each entry weighing what it costs in memory — key, headers,
/// body and fixed overheads ([`CachedResponse::weight`]), so the capacity
/// holds in real memory too (`tests/harden_bounds.rs` measures the heap
/// held per entry against the weight).
///
/// Old entries are not swept by a clock: the layer judges freshness and
/// ignores entries past their stale window, and eviction by weight reclaims
/// their space. (No clock read on the hit path, no background task.) Chosen
/// over moka by a side-by-side benchmark of the hit path (`BENCHMARKS.md`).
#[derive(Clone)]
pub struct MemoryStore {
    cache: Arc<quick_cache::sync::Cache<CacheKey, Arc<CachedResponse>, Weigh>>,
    /// The configured capacity in bytes.
    capacity: u64,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.len())
            .field("bytes", &self.cache.weight())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// The least capacity of one shard of the in-memory store (the largest
/// default entry, 4 MiB, fits in any shard).
const SHARD_MIN_BYTES: u64 = 8 * 1024 * 1024;

/// The default capacity of the in-memory store: 64 MiB.
pub const DEFAULT_CAPACITY: u64 = 64 * 1024 * 1024;

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl MemoryStore {
    /// A store holding at most about `capacity_bytes` of entries.
    pub fn new(capacity_bytes: u64) -> Self {
        let capacity = capacity_bytes.max(1);
        // An estimate of the item count for the table's initial size:
        // assume 8 KiB responses.
        let items = usize::try_from(capacity / 8192)
            .unwrap_or(usize::MAX)
            .clamp(16, 1 << 20);
        // quick_cache splits the capacity between shards, and an entry
        // heavier than a shard's part is never stored: keep every shard
        // able to hold the largest default entry.
        let parallel = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = usize::try_from(capacity / SHARD_MIN_BYTES)
            .unwrap_or(usize::MAX)
            .clamp(1, parallel * 4);
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(capacity)
            .shards(shards)
            .build();
        let cache = match options {
            Ok(options) => quick_cache::sync::Cache::with_options(
                options,
                Weigh,
                quick_cache::DefaultHashBuilder::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
            Err(_) => quick_cache::sync::Cache::with_weighter(items, capacity, Weigh),
        };
        MemoryStore {
            cache: Arc::new(cache),
            capacity: capacity_bytes,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.cache.len() == 0
    }

    /// Bytes held (the sum of entry weights).
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }

    /// The entry under `key`, without the future (what `get` resolves to).
    pub fn get_now(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        self.cache.get(key)
    }
}

impl CacheStore for MemoryStore {
    type Get = Ready<Option<Arc<CachedResponse>>>;
    type Put = Ready<()>;

    fn get(&self, key: &CacheKey) -> Self::Get {
        ready(self.get_now(key))
    }

    fn try_get(&self, key: &CacheKey) -> Option<Option<Arc<CachedResponse>>> {
        Some(self.get_now(key))
    }

    fn put(&self, key: CacheKey, entry: Arc<CachedResponse>, _retain: Duration) -> Self::Put {
        if (entry.weight() + key_weight(&key)) as u64 <= self.capacity {
            self.cache.insert(key, entry);
        }
        ready(())
    }
}
