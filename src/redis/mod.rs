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
//! - `budget.rs` (feature `budget`): [`RedisBudgetStore`], spend-budget
//!   counters reserved and settled by Lua scripts.

#[cfg(feature = "budget")]
mod budget;
mod conn;

#[cfg(feature = "budget")]
pub use budget::RedisBudgetStore;
pub use conn::Redis;
