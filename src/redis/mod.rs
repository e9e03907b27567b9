//! State shared by every process through Redis (the `redis` feature).
//!
//! One [`Redis`] handle — redis-rs's reconnecting
//! [`ConnectionManager`](::redis::aio::ConnectionManager), a timeout on
//! every command, and a count of failed commands — is what each shared
//! store of this crate takes.
//!
//! What lives where:
//! - `conn.rs`: the handle, its timeout and error counting, and running a
//!   Lua script by `EVALSHA` (loaded again after `NOSCRIPT`, as after a
//!   `SCRIPT FLUSH` or a failover).
//! - `limiter.rs` (with `rate`): the rate limiter's buckets, shared by
//!   [`RateLimitBuilder::redis`](crate::rate::RateLimitBuilder::redis):
//!   the admission and reconciliation scripts (`scripts/*.lua`), the
//!   [`FailurePolicy`], and [`RemoteStats`].
//! - `cache/`: [`RedisStore`], a [`CacheStore`](crate::cache::CacheStore)
//!   every process shares (with the `cache` feature).
//! - `budget.rs` (feature `budget`): [`RedisBudgetStore`], spend-budget
//!   counters reserved and settled by Lua scripts.

#[cfg(feature = "budget")]
mod budget;
#[cfg(feature = "cache")]
mod cache;
mod conn;
#[cfg(feature = "rate")]
pub(crate) mod limiter;

#[cfg(feature = "budget")]
pub use budget::RedisBudgetStore;
#[cfg(feature = "cache")]
pub use cache::{
    DEFAULT_MAX_ENTRY as DEFAULT_CACHE_MAX_ENTRY, GetFuture, PutFuture, RedisStore,
    RedisStoreBuilder, RedisStoreStats,
};
pub use conn::Redis;
#[cfg(feature = "rate")]
pub use limiter::{FailurePolicy, RemoteStats};
