//! Composable [`tower`](https://docs.rs/tower) layers in front of any HTTP
//! client that calls rate-limited LLM APIs (Anthropic Messages, OpenAI Chat
//! Completions / Responses, compatible gateways).
//!
//! ```
//! use tower::{ServiceExt, service_fn};
//! use tower_llm_resilience::{Limits, Stack};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_resilience::BoxError> {
//! # let transport = service_fn(|_req| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("{}")))
//! # });
//! // `transport`: any `Service<http::Request<ReplayBody>>`, e.g. `client::HyperClient`.
//! let svc = Stack::builder()
//!     .limits(Limits::per_minute(50, 20_000, 8_000)?) // Anthropic Tier 1
//!     .concurrency(16)
//!     .service(transport);
//! let req = http::Request::post("https://api.anthropic.com/v1/messages")
//!     .header("x-api-key", "sk-ant-…")
//!     .body(r#"{"model":"claude-haiku-4-5","max_tokens":64,"messages":[]}"#.to_owned())?;
//! assert_eq!(svc.oneshot(req).await?.status(), 200);
//! # Ok(()) }
//! ```
//!
//! # The layers
//!
//! Outer to inner, as [`Stack`] composes them; each also works alone in a
//! `tower::ServiceBuilder`, and every service made from one layer value,
//! and every clone of it, shares one state.
//!
//! ```text
//! request
//!   │  BufferBody   reads the body once (bounded), parses RequestMeta, makes it replayable
//!   │  Cache        hits never touch quota; identical in-flight misses coalesce
//!   │  Fallback     on exhaustion/overload re-issues with the next model/target
//!   │  Retry        honours x-should-retry, retry-after-ms, retry-after, resets
//!   │  RateLimit    reserves requests + input + output tokens per (key, model)
//!   │  Concurrency  in-flight cap; the permit lives until the response body ends
//!   ▼  transport    hyper-util (feature hyper-client) or any tower Service
//! ```
//!
//! | layer | module | feature | where it decides |
//! |---|---|---|---|
//! | [`BufferBodyLayer`] | [`request`] | — | reads and parses the body before the inner service is asked |
//! | [`CacheLayer`] | `cache` | `cache` | in `call`: a hit is answered there; a miss is stored when its body completes |
//! | [`FallbackLayer`] | `fallback` | `fallback` | in the response future, after the inner answer (its retries included) |
//! | [`RetryLayer`] | `retry` | `retry` | in the response future: each answer is classified, the delay comes from server advice or backoff |
//! | [`RateLimitLayer`] | `rate` | `rate` | in `call` when the cost fits; otherwise the response future queues |
//! | [`ConcurrencyLimitLayer`] | `concurrency` | `concurrency` | in `call` when a permit is free; otherwise the response future queues |
//!
//! What each layer's `poll_ready` means is written in its module docs and in
//! the crate's ARCHITECTURE.md: the limiters (and the fallback layer with
//! nothing to fall back to) forward the inner readiness, the others are
//! always ready — admission happens per request, in `call`.
//!
//! # The foundation
//!
//! - [`request`]: [`RequestMeta`], parsed once from the JSON body;
//!   [`ReplayBody`], sent as often as needed; [`Deadline`], the request's
//!   own time limit every layer honours.
//! - [`response`]: [`ResponseBody`], the one body type, whose observers
//!   learn how the body ended and the token usage the provider reported
//!   (JSON or SSE).
//! - [`provider`]: what the providers' headers and error bodies mean.
//! - `sim` (feature `sim`): a simulated provider to test and benchmark
//!   against; `client` (feature `hyper-client`): a ready HTTP client.
//!
//! Errors the stack creates are small typed structs in [`error`], returned
//! as [`BoxError`]; an HTTP error response from upstream stays the
//! `Ok(Response)` it is.
//!
//! # Observability
//!
//! Every decision is a [`tracing`](https://docs.rs/tracing) event, at
//! `DEBUG` (`WARN` for the first 429 that closes a rate-limit group's
//! gate, and for a failing store): admitted (with its wait), queued (with
//! its position), cooled down (with the cooldown), retried (reason, delay),
//! cache hit / miss / stale / coalesced, fallback hop (from, to, trigger),
//! budget charged and settled (amount, the kind of scope — never the
//! tenant), a concurrency permit waited for. The limiters' waits are spans
//! (`llm_resilience.rate_limit.wait`, `llm_resilience.concurrency.wait`).
//! Attributes follow the OpenTelemetry GenAI semantic conventions
//! (v1.37.0: `gen_ai.request.model`, `gen_ai.usage.input_tokens`,
//! `gen_ai.usage.output_tokens`, `error.type`); the crate's own are under
//! `llm_resilience.`. No API key is ever printed: keys appear as their
//! [`KeyId`] (a keyed hash), pool keys by their label.
//!
//! With the `metrics` feature the layers record through the
//! [`metrics`](https://docs.rs/metrics) facade (install any exporter, e.g.
//! `metrics-exporter-prometheus`); without it no metric code is compiled.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `gen_ai.client.token.usage` | histogram ({token}) | `gen_ai.token.type`, `gen_ai.request.model`, `gen_ai.provider.name`, `gen_ai.operation.name` |
//! | `gen_ai.client.operation.duration` | histogram (s) | `gen_ai.request.model`, `gen_ai.provider.name`, `gen_ai.operation.name`, `error.type` |
//! | `llm_resilience.queue.wait` | histogram (s) | `llm_resilience.layer` |
//! | `llm_resilience.rate_limit.upstream_429` | counter | `gen_ai.request.model` |
//! | `llm_resilience.rate_limit.avoided_429` | counter | `gen_ai.request.model` |
//! | `llm_resilience.rate_limit.utilization` | gauge (0–1) | `gen_ai.request.model`, `llm_resilience.dimension` |
//! | `llm_resilience.retry.attempts` | counter | `llm_resilience.retry.reason` |
//! | `llm_resilience.cache.requests` | counter | `llm_resilience.cache.result` |
//! | `llm_resilience.fallback.hops` | counter | `llm_resilience.fallback.to`, `llm_resilience.fallback.trigger` |
//! | `llm_resilience.budget.spent` | counter | `llm_resilience.budget.cap`, `llm_resilience.budget.unit` |
//!
//! Label values are bounded: static strings, names from the configuration,
//! and at most [`telemetry::MAX_MODEL_LABELS`] model names (the rest are
//! `_OTHER`). The [`telemetry`] module has the whole table and the names as
//! constants. The rate limiter's [`stats`](rate::RateLimitLayer::stats)
//! are reached from the stack by
//! [`Stack::rate_limiter`](stack::Stack::rate_limiter) and
//! [`StackService::rate_limit`](stack::StackService).
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "rate", feature = "concurrency", feature = "budget"))]
mod admitted;
#[cfg(feature = "budget")]
#[cfg_attr(docsrs, doc(cfg(feature = "budget")))]
pub mod budget;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
mod builder;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub mod cache;
mod calendar;
#[cfg(any(feature = "hyper-client", feature = "reqwest"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "hyper-client", feature = "reqwest"))))]
pub mod client;
#[cfg(feature = "concurrency")]
#[cfg_attr(docsrs, doc(cfg(feature = "concurrency")))]
pub mod concurrency;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub mod config;
pub mod error;
#[cfg(feature = "fallback")]
#[cfg_attr(docsrs, doc(cfg(feature = "fallback")))]
pub mod fallback;
#[cfg(any(feature = "budget", feature = "rate"))]
mod money;
pub mod provider;
pub mod queue;
#[cfg(feature = "rate")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate")))]
pub mod rate;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod request;
pub mod response;
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry;
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod sim;
#[cfg(all(
    feature = "rate",
    feature = "concurrency",
    feature = "retry",
    feature = "fallback",
    feature = "cache"
))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(
        feature = "rate",
        feature = "concurrency",
        feature = "retry",
        feature = "fallback",
        feature = "cache"
    )))
)]
pub mod stack;
mod sync;
pub mod telemetry;
mod util;

#[cfg(feature = "tower")]
pub use builder::ServiceBuilderExt;
pub use error::BoxError;
pub use queue::Priority;
pub use request::{BufferBody, BufferBodyLayer, Deadline, KeyId, ReplayBody, RequestMeta};
pub use response::ResponseBody;

#[cfg(feature = "cache")]
pub use cache::{Cache, CacheLayer};
#[cfg(feature = "concurrency")]
pub use concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};
#[cfg(feature = "fallback")]
pub use fallback::{Fallback, FallbackLayer, Target};
#[cfg(feature = "rate")]
pub use rate::{Limit, Limits, RateLimit, RateLimitLayer};
#[cfg(feature = "retry")]
pub use retry::{Retry, RetryLayer};
#[cfg(all(
    feature = "rate",
    feature = "concurrency",
    feature = "retry",
    feature = "fallback",
    feature = "cache"
))]
pub use stack::{Stack, StackService};

/// The README's examples, compiled and run as doc tests.
#[cfg(all(
    doctest,
    feature = "rate",
    feature = "concurrency",
    feature = "retry",
    feature = "fallback",
    feature = "cache"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
