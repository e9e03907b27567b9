//! Composable [`tower`](https://docs.rs/tower) layers in front of any HTTP
//! client that calls rate-limited LLM APIs (Anthropic Messages, OpenAI Chat
//! Completions / Responses, compatible gateways).
//!
//! The stack, outer to inner:
//!
//! ```text
//! request
//!   │  Cache        hits never touch quota; identical in-flight misses coalesce
//!   │  Fallback     on exhaustion/overload re-issues with the next model/target
//!   │  Retry        honours x-should-retry, retry-after-ms, retry-after, resets
//!   │  KeyPool      picks the API key with most headroom per attempt
//!   │  RateLimit    reserves requests + input + output tokens per (key, model)
//!   │  Concurrency  in-flight cap; the permit lives until the response body ends
//!   ▼  transport    hyper-util / reqwest / tonic / anything
//! ```
//!
//! The layers, one feature each (all in `default`), each usable alone in a
//! `tower::ServiceBuilder` or together through `stack::Stack`:
//!
//! - `cache` — `CacheLayer`: tenant-safe keys, coalescing, stale-if-error;
//!   streamed responses replayed byte for byte.
//! - `fallback` — `FallbackLayer`: re-issue to the next model or provider,
//!   marked in the response.
//! - `retry` — `RetryLayer`: server advice honoured exactly, jitter, budget,
//!   deadline.
//! - `rate` — `RateLimitLayer`: requests, input and output tokens per API
//!   key and model, reserved together and corrected from real usage.
//! - `concurrency` — `ConcurrencyLimitLayer`: an in-flight cap whose permit
//!   lives until the response body ends.
//!
//! The foundation every layer stands on:
//!
//! - [`request`]: [`RequestMeta`](request::RequestMeta), parsed once from the
//!   JSON body; [`ReplayBody`](request::ReplayBody), sent as often as needed;
//!   [`BufferBodyLayer`](request::BufferBodyLayer), which makes both.
//! - [`response`]: [`ResponseBody`](response::ResponseBody), the one body
//!   type, whose observers learn how the body ended and the token usage the
//!   provider reported (JSON or SSE).
//! - [`provider`]: what the providers' headers and error bodies mean
//!   ([`retry_after`](provider::retry_after),
//!   [`QuotaSnapshot`](provider::QuotaSnapshot),
//!   [`classify_error`](provider::classify_error)).
//! - `sim` (feature `sim`): a simulated provider to test and benchmark
//!   against; `client` (feature `hyper-client`): a ready HTTP client.
//!
//! Errors the stack creates are small typed structs in [`error`], returned
//! as [`BoxError`]; an HTTP error response from upstream stays the
//! `Ok(Response)` it is.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "rate", feature = "concurrency"))]
mod admitted;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub mod cache;
#[cfg(feature = "hyper-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper-client")))]
pub mod client;
#[cfg(feature = "concurrency")]
#[cfg_attr(docsrs, doc(cfg(feature = "concurrency")))]
pub mod concurrency;
pub mod error;
#[cfg(feature = "fallback")]
#[cfg_attr(docsrs, doc(cfg(feature = "fallback")))]
pub mod fallback;
pub mod provider;
pub mod queue;
#[cfg(feature = "rate")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate")))]
pub mod rate;
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
mod util;

pub use error::BoxError;
