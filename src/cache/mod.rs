//! Response caching, the outermost layer: a hit never touches quota, and
//! identical requests in flight share one upstream call.
//!
//! - **Keys** ([`CacheKey`], made by a [`KeyPolicy`], default
//!   [`DefaultKeyPolicy`]): the tenant — a [`Tenant`] extension, a
//!   closure, or else the credentials' [`KeyId`](crate::request::KeyId), a
//!   keyed 128-bit hash of every credential header and `key=` parameter —
//!   kept as its own component and compared exactly (what logs show of it
//!   is a short label under another key, which names no entry); the
//!   method, path (less `key=` values),
//!   `anthropic-version` and `anthropic-beta` headers, whether the request
//!   streams, and a 128-bit xxh3 hash of the *canonical* JSON body (object
//!   key order and whitespace do not matter). Byte-identical repeats skip
//!   canonicalization through a bounded alias index on the raw bytes. No
//!   API key is held in a key, shown in `Debug` or logged.
//! - **What is cached**: only complete provider answers: a 2xx whose body
//!   completed ([`Outcome::Complete`](crate::response::Outcome)) and is
//!   either a stream that reached its terminal event or one whole JSON
//!   object that is not an error object (`{"type":"error",…}`,
//!   `{"error":…}`) — never an error status, an empty or truncated body, a
//!   stream that carried an `error` event or one the caller dropped (a 200
//!   can carry any of these, and would be replayed for the whole TTL);
//!   only deterministic requests
//!   (`temperature` 0) unless
//!   [`cache_nondeterministic`](CacheBuilder::cache_nondeterministic); at
//!   most [`max_entry_size`](CacheBuilder::max_entry_size) bytes. The
//!   request's `cache-control: no-store` bypasses the cache entirely;
//!   `no-cache` goes upstream but may store the answer. Bodies that are not
//!   a JSON object pass through uncached.
//! - **Streams**: a miss's chunks are captured as they pass to the caller
//!   and committed when the stream completes; a hit replays them byte for
//!   byte with the original status and headers (less hop-by-hop ones).
//! - **Coalescing**: concurrent identical misses make one upstream call;
//!   the others wait for its entry. If the leader fails, is cancelled, or
//!   gets an answer that cannot be cached, exactly one waiter takes over. A
//!   waiter gives up waiting after the
//!   [`coalesce_timeout`](CacheBuilder::coalesce_timeout) and goes alone —
//!   or, first, at its request's [`Deadline`](crate::request::Deadline),
//!   answered with a usable stale entry or
//!   [`DeadlineElapsed`](crate::error::DeadlineElapsed).
//! - **Expiry**: entries are fresh for the [`ttl`](CacheBuilder::ttl) (or a
//!   request's [`CacheTtl`]) and
//!   then kept for a [stale-if-error](CacheBuilder::stale_if_error) window,
//!   in which they answer — marked `STALE` — when upstream fails with 429,
//!   529, another 5xx or an error. The store is bounded by bytes.
//! - **Store** ([`CacheStore`]): in memory by default ([`MemoryStore`]);
//!   the trait returns futures so a shared store can replace it.
//! - **Marking**: every response carries the header
//!   [`x-llm-cache`](CACHE_HEADER)`: HIT | MISS | STALE` and a
//!   [`CacheStatus`] extension.
//!
//! Only requests whose body is a [`ReplayBody`](crate::request::ReplayBody)
//! are cached (the key needs the body); any other body type passes through.
//! Put [`BufferBodyLayer`](crate::request::BufferBodyLayer) above to make
//! any body replayable.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_llm_resilience::cache::{CacheLayer, CacheStatus, Status};
//! use tower_llm_resilience::request::ReplayBody;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_resilience::BoxError> {
//! let mut svc = ServiceBuilder::new()
//!     .layer(CacheLayer::new())
//!     .service(service_fn(|_req: Request<ReplayBody>| async {
//!         Ok::<_, Infallible>(
//!             Response::builder()
//!                 .header("content-type", "application/json")
//!                 .body(String::from(r#"{"content":[{"type":"text","text":"4"}]}"#))
//!                 .unwrap(),
//!         )
//!     }));
//!
//! let ask = || {
//!     Request::post("https://api.anthropic.com/v1/messages")
//!         .header("x-api-key", "sk-ant-…")
//!         .body(ReplayBody::from(
//!             r#"{"model":"claude-haiku-4-5","max_tokens":8,"temperature":0,
//!                 "messages":[{"role":"user","content":"2+2?"}]}"#,
//!         ))
//!         .unwrap()
//! };
//! let first = svc.ready().await?.call(ask()).await?;
//! assert_eq!(first.headers()["x-llm-cache"], "MISS");
//! first.into_body().collect().await?; // the entry is committed when the body completes
//!
//! let second = svc.ready().await?.call(ask()).await?;
//! assert_eq!(second.extensions().get::<CacheStatus>().unwrap().status, Status::Hit);
//! # Ok(()) }
//! ```
//!
//! # Readiness
//!
//! Always ready, and `poll_ready` asks nothing below: a hit needs nothing
//! from the inner service. A request that is not cached asks the inner
//! service at the call, without waiting, and is sent there when it is ready
//! (no clone of the services below, no state machine); otherwise — and for
//! every request that is looked up — the response future waits for the
//! inner service's readiness and then calls it. So what a service below
//! reserves when asked (tower's `ConcurrencyLimit` takes a permit) is only
//! ever taken by a request that calls it: a hit, or a waiter of a
//! coalesced miss, holds nothing below.

use std::time::Duration;

mod answer;
mod flight;
pub mod future;
mod key;
mod layer;
mod service;
mod store;

pub use key::{
    CacheKey, DEFAULT_ALIASES, DEFAULT_MAX_KEY_BODY, DefaultKeyPolicy, KeyPolicy, Tenant, TenantId,
    canonical_hash,
};
pub use layer::{
    CacheBuilder, CacheLayer, DEFAULT_COALESCE_TIMEOUT, DEFAULT_MAX_ENTRY, DEFAULT_STALE_IF_ERROR,
    DEFAULT_TTL,
};
pub use service::Cache;
pub use store::{CacheStore, CachedResponse, DEFAULT_CAPACITY, MemoryStore};

/// The response header that says where a response came from:
/// `HIT`, `MISS` or `STALE`.
pub const CACHE_HEADER: &str = "x-llm-cache";

/// Where a response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// A fresh stored entry (or the entry an identical request in flight
    /// just stored): upstream was not called.
    Hit,
    /// Upstream answered (whether or not the answer was stored).
    Miss,
    /// Upstream failed, and an expired entry within its stale-if-error
    /// window answered instead.
    Stale,
}

impl Status {
    /// The value of the [`CACHE_HEADER`] header.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Miss => "MISS",
            Status::Stale => "STALE",
        }
    }
}

/// A request extension: how long this request's answer stays fresh,
/// instead of the layer's [`ttl`](CacheBuilder::ttl) (at most 30 days; zero
/// means the layer's TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTtl(pub Duration);

/// What the cache did, in every response's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStatus {
    /// Where the response came from.
    pub status: Status,
    /// How old the stored entry is (zero for a miss).
    pub age: Duration,
}
