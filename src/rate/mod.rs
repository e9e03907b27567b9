//! Token-bucket rate limiting for LLM APIs: requests, input tokens, output
//! tokens and combined tokens per (API key, model), reserved together
//! before a request is sent and corrected from the real usage afterwards.
//!
//! [`RateLimitLayer`] admits each request only when all of its costs fit
//! the group's buckets — requests = 1, input tokens = the
//! [`RequestMeta`](crate::request::RequestMeta) estimate, output tokens =
//! `max_tokens`, and [`Dimension::Tokens`] = input + output, the one
//! tokens-per-minute limit OpenAI counts both against
//! ([`Limits::tokens`], [`Limits::openai_per_minute`]) — so the provider
//! never sees more than its limits. When the
//! response body ends, the reservation is corrected from the usage the
//! provider reported: unused output tokens come back, under-estimated input
//! tokens are charged, cache reads are not counted (as Anthropic does not
//! count them toward ITPM).
//!
//! Requests that do not fit wait in one priority queue per group
//! ([`WaitQueue`](crate::queue::WaitQueue)): priority from a
//! [`Priority`](crate::queue::Priority) extension or the `x-llm-priority`
//! header, FIFO within a priority, aging so low priority is never starved,
//! bounded ([`QueueFull`](crate::queue::QueueFull)), with a maximum wait
//! ([`QueueTimeout`](crate::error::QueueTimeout)) and a fail-fast mode
//! ([`RateLimited`](crate::error::RateLimited)) for requests whose
//! [`Deadline`](crate::request::Deadline) cannot bear the wait. A cost that
//! can never fit fails at once ([`RequestTooLarge`](crate::error::RequestTooLarge)).
//!
//! Every response teaches the limiter: the provider's `remaining` counts
//! tighten the local buckets (never loosen them, unless
//! [`Learning::Auto`]), and a 429 closes the group's gate for the
//! `retry-after` it carries, so one 429 pauses every caller of that key and
//! model instead of each finding out alone. OpenAI's
//! `x-ratelimit-*-tokens` teach the combined tokens dimension.
//!
//! # Key pools
//!
//! Given a [`KeyPool`] ([`RateLimitBuilder::key_pool`]), the limiter sends
//! every request without credentials of its own with one of the pool's
//! keys, chosen at admission: the key with the most headroom (or the fewest
//! requests used this calendar period) among those not cooling down after
//! a 429 and not out of their [`CalendarQuota`]. Each key is its own group
//! (keys of one organisation share one); a request no key can take waits
//! in one queue place for whichever key frees first, or fails with
//! [`NoKeyAvailable`](crate::error::NoKeyAvailable). See [`KeyPool`] for
//! what pooling is for and what it is not for.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_llm_resilience::rate::{Limits, RateLimitLayer};
//! use tower_llm_resilience::request::ReplayBody;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_resilience::BoxError> {
//! // Anthropic Tier 1.
//! let limiter = RateLimitLayer::new(Limits::per_minute(50, 20_000, 8_000)?);
//! let svc = ServiceBuilder::new()
//!     .layer(limiter.clone())
//!     .service(service_fn(|_req: Request<ReplayBody>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("{}")))
//!     }));
//!
//! let req = Request::post("https://api.anthropic.com/v1/messages")
//!     .header("x-api-key", "sk-ant-…")
//!     .body(ReplayBody::from(
//!         r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hi"}]}"#,
//!     ))?;
//! let res = svc.oneshot(req).await?;
//! assert!(res.status().is_success());
//! let stats = &limiter.stats()[0];
//! assert_eq!(stats.model.as_deref(), Some("claude-sonnet-4-5"));
//! # Ok(()) }
//! ```
//!
//! # Shared through Redis
//!
//! With the `redis` feature, [`RateLimitBuilder::redis`] puts the buckets
//! in Redis, so every process that shares a quota admits against one
//! state: one atomic script per admission (every dimension or none, on
//! Redis's clock), one per reconciliation, the 429 gate shared too (see
//! [`redis`](crate::redis)). Every admission then waits in the response
//! future for its round trip, bounded by the handle's timeout; this
//! process's queue still orders its own waiters, and only the head of a
//! group asks Redis. When Redis fails, the
//! [`FailurePolicy`](crate::redis::FailurePolicy) decides (closed, open, or
//! by default a local limiter at limit ÷ instances), and Redis is asked
//! again 250 ms later. [`RateLimitBuilder::redis_lease`] trades a stated
//! over-admission for one round trip per batch of requests.
//! Limits, learned limits, thresholds and [`GroupStats`] stay local: in
//! Redis mode `available` and `utilization` describe the local buckets, not
//! the shared ones. What the provider says *remains* is shared: a
//! response's `…-remaining` lowers the shared buckets (tighten-only), less
//! what every process reserved after that request — counted by net
//! counters in the group's hash, whose value at admission each request
//! keeps — so a quota that the processes' delays to the provider make
//! short now and then is met by all of them.
//!
//! # Readiness
//!
//! `poll_ready` is the inner service's readiness: admission depends on the
//! request (its group, cost and priority), so `call` decides it. When
//! nobody of the group waits and the cost fits now, `call` reserves and
//! sends on the ready inner service at once. Otherwise the response future
//! waits its turn with a fresh clone of the inner service and, once
//! admitted, drives it (`poll_ready` → `call`); the instance the caller made
//! ready is let go at the call, so whatever it reserved when asked (tower's
//! `ConcurrencyLimit` takes a permit) is not held by a waiting request. A
//! request admitted after waiting may then wait for the inner service while
//! holding its reservation, as tower's own layers order it.

mod calendar;
mod config;
pub mod future;
mod gcra;
mod groups;
mod layer;
mod limit;
pub(crate) mod pool;
pub mod presets;
#[cfg(feature = "redis")]
mod remote;
mod service;
mod state;
mod stats;

pub use crate::money::{Money, PRESETS_AS_OF, Price, PriceTable, UnknownModel};
pub use calendar::{CalendarQuota, Clock, Period};
pub use config::{Learning, Limits, RateLimitBuilder, Unparsed};
pub use layer::RateLimitLayer;
pub use limit::{Dimension, Limit};
pub use pool::{
    AuthStyle, KeyPool, KeyPoolBuilder, MAX_POOL_KEYS, PoolKey, PoolKeyStats, PoolStrategy,
};
pub use service::RateLimit;
pub use stats::{GroupStats, ThresholdEvent};
