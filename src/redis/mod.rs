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
//! - `cache/`: [`RedisStore`], a [`CacheStore`](crate::cache::CacheStore)
//!   every process shares (with the `cache` feature).

#[cfg(feature = "cache")]
mod cache;
mod conn;

#[cfg(feature = "cache")]
pub use cache::{
    DEFAULT_MAX_ENTRY as DEFAULT_CACHE_MAX_ENTRY, GetFuture, PutFuture, RedisStore,
    RedisStoreBuilder, RedisStoreStats,
};
pub use conn::Redis;
