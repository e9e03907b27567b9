//! Provider knowledge: what the Anthropic and OpenAI APIs send and what it means.
//!
//! Everything here is a pure function of a response's status, headers and
//! (error) body; the layers above decide what to do with the answers.
//!
//! - **Retry advice**: [`retry_after`] reads `retry-after-ms`,
//!   `x-ms-retry-after-ms` and `retry-after` (seconds or HTTP-date); advice
//!   longer than [`MAX_RETRY_AFTER`] is `Duration::MAX`, too long (never
//!   "none"); [`should_retry`] reads `x-should-retry`.
//! - **Quota snapshots**: [`QuotaSnapshot::from_headers`] reads Anthropic's
//!   `anthropic-ratelimit-*`, OpenAI's and Azure's `x-ratelimit-*` and the
//!   IETF `RateLimit` / `RateLimit-Policy` fields into one provider-neutral
//!   picture of remaining requests and tokens.
//! - **Error classification**: [`classify_error`] turns an error body (or an
//!   SSE `error` event) into an [`ErrorKind`] such as
//!   [`RateLimited`](ErrorKind::RateLimited) or the never-retry
//!   [`QuotaExhausted`](ErrorKind::QuotaExhausted).
//!
//! - **gRPC**: [`GrpcStatus::from_headers`] reads `grpc-status` and
//!   `grpc-retry-pushback-ms` from a trailers-only response's headers or
//!   from trailers; [`is_grpc`] tells a gRPC response by its `content-type`.
//!
//! Parsing is strict and defensive: every value comes from an untrusted
//! server, so anything malformed, out of range or ambiguous is dropped
//! (`None`) rather than guessed, all arithmetic is checked, input sizes are
//! capped, and nothing panics.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::{HeaderMap, StatusCode};
//! use tower_llm_resilience::provider::{classify_error, retry_after, ErrorKind, QuotaSnapshot};
//!
//! // A 429 from Anthropic.
//! let mut headers = HeaderMap::new();
//! headers.insert("date", "Thu, 21 Aug 2025 12:40:00 GMT".parse().unwrap());
//! headers.insert("retry-after", "17".parse().unwrap());
//! headers.insert("anthropic-ratelimit-requests-limit", "50".parse().unwrap());
//! headers.insert("anthropic-ratelimit-requests-remaining", "0".parse().unwrap());
//! headers.insert("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:17Z".parse().unwrap());
//! let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit"},"request_id":"req_011"}"#;
//!
//! let now = SystemTime::now();
//! assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(17)));
//!
//! let class = classify_error(StatusCode::TOO_MANY_REQUESTS, body);
//! assert_eq!(class.kind, ErrorKind::RateLimited);
//! assert!(class.kind.is_retryable_by_default());
//!
//! // The reset is measured from the response's Date header, not the local clock.
//! let requests = QuotaSnapshot::from_headers(&headers, now).requests.unwrap();
//! assert_eq!(requests.remaining, Some(0));
//! assert_eq!(requests.reset, Some(Duration::from_secs(17)));
//! ```

mod anthropic;
mod classify;
mod ietf;
mod label;
mod openai;
mod parse;
mod quota;
#[cfg(feature = "rate")]
pub(crate) use quota::may_carry_quota;
mod retry;
pub(crate) mod usage;

pub use classify::{
    ErrorClass, ErrorKind, GrpcCode, GrpcStatus, MAX_ERROR_BODY, Pushback, classify_error,
    grpc_pushback, is_grpc,
};
pub use label::Label;
pub use quota::{
    HeaderFamilies, MAX_RESET, Quota, QuotaSnapshot, QuotaUnit, RateLimitPolicy, quota_snapshot,
};
pub use retry::{MAX_RETRY_AFTER, retry_after, should_retry};
pub use usage::usage_from_json;

/// Which wire API a request or response speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Anthropic Messages (`POST /v1/messages`).
    AnthropicMessages,
    /// OpenAI Chat Completions (`POST /v1/chat/completions`).
    OpenAiChat,
}

/// Token usage reported by a provider for one response.
///
/// OpenAI's `prompt_tokens` / `completion_tokens` map to `input_tokens` /
/// `output_tokens`; OpenAI's `prompt_tokens_details.cached_tokens` maps to
/// `cache_read_input_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens that were not read from or written to the prompt cache
    /// (Anthropic), or all prompt tokens (OpenAI, which includes cached ones).
    pub input_tokens: u64,
    /// Output tokens generated.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache (Anthropic).
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

#[cfg(test)]
mod proptests;
