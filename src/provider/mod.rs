//! Provider knowledge: what the Anthropic and OpenAI APIs send and what it means.
//!
//! Everything here is a pure function of a response's status, headers and
//! (error) body; the layers above decide what to do with the answers.
//!
//! - **Retry advice**: [`retry_after`] reads `retry-after-ms`,
//!   `x-ms-retry-after-ms` and `retry-after` (seconds or HTTP-date), bounded
//!   by [`MAX_RETRY_AFTER`]; [`should_retry`] reads `x-should-retry`.
//! - **Quota snapshots**: [`QuotaSnapshot::from_headers`] reads Anthropic's
//!   `anthropic-ratelimit-*`, OpenAI's and Azure's `x-ratelimit-*` and the
//!   IETF `RateLimit` / `RateLimit-Policy` fields into one provider-neutral
//!   picture of remaining requests and tokens.
//! - **Error classification**: [`classify_error`] turns an error body (or an
//!   SSE `error` event) into an [`ErrorKind`] such as
//!   [`RateLimited`](ErrorKind::RateLimited) or the never-retry
//!   [`QuotaExhausted`](ErrorKind::QuotaExhausted).
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

pub use classify::{ErrorClass, ErrorKind, MAX_ERROR_BODY, classify_error};
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
mod proptests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
    use proptest::prelude::*;

    use super::*;

    const NAMES: &[&str] = &[
        "retry-after",
        "retry-after-ms",
        "x-ms-retry-after-ms",
        "x-should-retry",
        "date",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-remaining",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
        "ratelimit-policy",
        "ratelimit",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    ];

    /// Any bytes `HeaderValue::from_bytes` accepts, biased towards the
    /// characters the parsers care about.
    fn value() -> impl Strategy<Value = HeaderValue> {
        let interesting =
            prop::sample::select(b"0123456789.-+ ;=,:\"?*eEsmhnuTZ\t\xb5\xc2\xffa".to_vec());
        let bytes = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            prop::collection::vec(interesting, 0..40),
            "[0-9]{1,25}(\\.[0-9]{0,20})?".prop_map(String::into_bytes),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})"
                .prop_map(String::into_bytes),
            "([0-9]{0,6}(\\.[0-9]{0,4})?(h|m|s|ms|us|µs|ns)){1,4}".prop_map(String::into_bytes),
            "(\"[a-z]{1,4}\"|[a-z]{1,4})(;[a-z]{1,2}=(-?[0-9]{1,17}|\"[a-z]*\"|:[a-zA-Z0-9+/=]*:|\\?[01]))*(, ?)?"
                .prop_map(String::into_bytes),
        ];
        bytes.prop_filter_map("valid header value", |b| HeaderValue::from_bytes(&b).ok())
    }

    fn headers() -> impl Strategy<Value = HeaderMap> {
        prop::collection::vec((prop::sample::select(NAMES), value()), 0..8).prop_map(|pairs| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(HeaderName::from_static(name), value);
            }
            map
        })
    }

    fn now() -> impl Strategy<Value = SystemTime> {
        (0u64..=253_402_300_799).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s))
    }

    proptest! {
        #[test]
        fn retry_after_never_panics_and_is_bounded(h in headers(), now in now()) {
            if let Some(d) = retry_after(&h, now) {
                prop_assert!(d > Duration::ZERO);
                prop_assert!(d <= MAX_RETRY_AFTER);
            }
            let _ = should_retry(&h);
        }

        #[test]
        fn quota_snapshot_never_panics(h in headers(), now in now()) {
            let s = QuotaSnapshot::from_headers(&h, now);
            prop_assert!(s.policies.len() <= QuotaSnapshot::MAX_POLICIES);
            prop_assert_eq!(s.is_empty(), s.requests.is_none() && s.tokens.is_none()
                && s.input_tokens.is_none() && s.output_tokens.is_none()
                && s.policies.is_empty() && s.ietf_legacy.is_none());
            for q in [s.requests, s.tokens, s.input_tokens, s.output_tokens, s.ietf_legacy].into_iter().flatten() {
                prop_assert!(!q.is_empty());
                prop_assert!(q.reset.is_none_or(|r| r <= MAX_RESET));
            }
        }

        #[test]
        fn retry_after_seconds_roundtrip(secs in 1u64..=86_400, frac in 0u32..1000) {
            let mut h = HeaderMap::new();
            let text = format!("{secs}.{frac:03}");
            h.insert("retry-after", HeaderValue::from_str(&text).expect("valid"));
            let want = Duration::from_secs(secs) + Duration::from_millis(u64::from(frac));
            let got = retry_after(&h, SystemTime::now());
            prop_assert_eq!(got, (want <= MAX_RETRY_AFTER).then_some(want));
        }

        #[test]
        fn http_date_roundtrip(offset in 1u64..=200_000, now in 0u64..=4_000_000_000) {
            let now = UNIX_EPOCH + Duration::from_secs(now);
            let mut h = HeaderMap::new();
            let date = httpdate::fmt_http_date(now + Duration::from_secs(offset));
            h.insert("retry-after", HeaderValue::from_str(&date).expect("valid"));
            let want = Duration::from_secs(offset);
            prop_assert_eq!(retry_after(&h, now), (want <= MAX_RETRY_AFTER).then_some(want));
        }

        #[test]
        fn classify_error_never_panics(status in 100u16..1000, body in prop::collection::vec(any::<u8>(), 0..256)) {
            let status = StatusCode::from_u16(status).expect("in range");
            let class = classify_error(status, &body);
            prop_assert!(class.error_type.is_none_or(|l| l.as_str().len() <= Label::CAPACITY));
        }

        #[test]
        fn classify_error_json_like_never_panics(
            status in prop::sample::select(vec![200u16, 400, 401, 429, 500, 529]),
            body in "\\{(\"(type|error|message|code|details|error_code)\":(\\{|\"[a-z_ ]{0,20}\"|null|1|\\[|\\]|\\}|,)){0,12}\\}?",
        ) {
            let status = StatusCode::from_u16(status).expect("in range");
            let _ = classify_error(status, body.as_bytes());
        }
    }
}
