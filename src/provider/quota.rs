//! [`QuotaSnapshot`]: what a response says about the caller's remaining quota.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::label::Label;
use super::{anthropic, ietf, openai, parse};

/// The longest reset time a snapshot keeps: 31 days.
///
/// A longer reset (or an epoch timestamp sent where a duration was
/// expected) is kept as this: "too long", never "no reset" — which would
/// let a limiter pausing after a 429 wait its short default instead.
/// Consumers cap it by their own maximum.
pub const MAX_RESET: Duration = Duration::from_secs(31 * 24 * 60 * 60);

/// The state of one rate-limit dimension (requests, tokens, …) as reported by
/// the server.
///
/// Every field is optional: servers send partial sets, and a value that does
/// not parse as a plain non-negative number is dropped rather than guessed.
/// `remaining > limit` is kept as sent (Anthropic rounds token counts to the
/// nearest thousand, and limits can change between requests); consumers
/// should clamp if they need `remaining <= limit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// The bucket's capacity (`*-limit`).
    pub limit: Option<u64>,
    /// What is left right now (`*-remaining`).
    pub remaining: Option<u64>,
    /// Time from the response until the bucket is full again (`*-reset`);
    /// `Duration::ZERO` if it already is.
    pub reset: Option<Duration>,
}

impl Quota {
    /// `true` if no field is known.
    pub fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }

    /// `Some(self)` unless empty.
    pub(crate) fn non_empty(self) -> Option<Self> {
        (!self.is_empty()).then_some(self)
    }
}

/// Which header families contributed at least one valid value to a
/// [`QuotaSnapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderFamilies {
    /// `anthropic-ratelimit-*`.
    pub anthropic: bool,
    /// OpenAI / Azure `x-ratelimit-*`.
    pub openai: bool,
    /// IETF `RateLimit-Policy` / `RateLimit` (list form).
    pub ietf: bool,
    /// Older IETF drafts: `RateLimit-Limit` / `-Remaining` / `-Reset`, or the
    /// dictionary form `RateLimit: limit=…, remaining=…, reset=…`.
    pub ietf_legacy: bool,
}

impl HeaderFamilies {
    /// `true` if any family was seen.
    pub fn any(&self) -> bool {
        self.anthropic || self.openai || self.ietf || self.ietf_legacy
    }
}

/// The unit an IETF policy's quota is counted in (`qu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaUnit {
    /// `requests` (the default when `qu` is absent).
    Requests,
    /// `content-bytes`.
    ContentBytes,
    /// `concurrent-requests`.
    ConcurrentRequests,
    /// Any other unit.
    Other,
}

/// One IETF draft rate-limit policy, merged from its `RateLimit-Policy` item
/// (quota, window, unit) and its `RateLimit` item (remaining, reset), matched
/// by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitPolicy {
    /// The policy name (`"burst"`, `"daily"`), bounded.
    pub name: Label,
    /// `q`: the quota per window.
    pub quota: Option<u64>,
    /// `w`: the window length.
    pub window: Option<Duration>,
    /// `qu`: the quota unit; `None` if not sent (which means requests).
    pub unit: Option<QuotaUnit>,
    /// `pk`: the partition key as sent (base64 text), bounded.
    pub partition_key: Option<Label>,
    /// `r`: quota remaining.
    pub remaining: Option<u64>,
    /// `t`: time until quota is restored.
    pub reset: Option<Duration>,
}

impl RateLimitPolicy {
    /// A policy with a name and nothing else known.
    pub fn named(name: Label) -> Self {
        Self {
            name,
            quota: None,
            window: None,
            unit: None,
            partition_key: None,
            remaining: None,
            reset: None,
        }
    }
}

/// Everything a response's headers say about the caller's quota.
///
/// Built by [`QuotaSnapshot::from_headers`] (or [`quota_snapshot`]) from:
///
/// - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
///   where `reset` is an RFC 3339 instant (`2025-08-21T12:40:59Z`, fractions
///   and `±HH:MM` offsets accepted).
/// - OpenAI / Azure: `x-ratelimit-{limit,remaining}-{requests,tokens}` and
///   `x-ratelimit-reset-{requests,tokens}` as Go durations (`6m0s`, `1.574s`,
///   `12ms`); a bare number is read as seconds. Azure's `-1` ("unknown") is
///   `None`, never "exhausted".
/// - IETF draft: `RateLimit-Policy` and `RateLimit` in list form, at most
///   [`QuotaSnapshot::MAX_POLICIES`] policies; older drafts'
///   `RateLimit-Limit` / `-Remaining` / `-Reset` (and the dictionary form
///   `RateLimit: limit=…, remaining=…, reset=…`) into [`ietf_legacy`](Self::ietf_legacy).
///
/// If a gateway sends both Anthropic and OpenAI headers for the same
/// dimension, Anthropic's win (per dimension).
///
/// **Clock skew.** Absolute resets (RFC 3339) are turned into durations
/// against the response's `Date` header when present and valid — the reset and
/// `Date` then both come from the server's clock — else against `now`. A reset
/// at or before that reference is `Duration::ZERO` (already full). Resets
/// beyond [`MAX_RESET`] are kept as [`MAX_RESET`].
///
/// Every malformed value (negative, non-numeric, repeated, out of range,
/// and for the scalar fields also surrounding whitespace — see
/// [`retry_after`](super::retry_after) for why) is dropped (`None`), never
/// trusted. The IETF fields are Structured Fields and follow RFC 8941's
/// parsing rules, which allow surrounding spaces.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use tower_llm_resilience::provider::QuotaSnapshot;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-limit-requests", "500".parse().unwrap());
/// headers.insert("x-ratelimit-remaining-requests", "499".parse().unwrap());
/// headers.insert("x-ratelimit-reset-requests", "120ms".parse().unwrap());
/// headers.insert("x-ratelimit-remaining-tokens", "-1".parse().unwrap()); // Azure: unknown
///
/// let snapshot = QuotaSnapshot::from_headers(&headers, SystemTime::now());
/// let requests = snapshot.requests.unwrap();
/// assert_eq!(requests.limit, Some(500));
/// assert_eq!(requests.remaining, Some(499));
/// assert_eq!(requests.reset, Some(Duration::from_millis(120)));
/// assert_eq!(snapshot.tokens, None);
/// assert!(snapshot.families.openai && !snapshot.families.anthropic);
///
/// assert!(QuotaSnapshot::from_headers(&HeaderMap::new(), SystemTime::now()).is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaSnapshot {
    /// Requests per window.
    pub requests: Option<Quota>,
    /// Tokens (Anthropic: input + output; OpenAI: all tokens).
    pub tokens: Option<Quota>,
    /// Input tokens (Anthropic).
    pub input_tokens: Option<Quota>,
    /// Output tokens (Anthropic).
    pub output_tokens: Option<Quota>,
    /// Input and output tokens counted together against one limit:
    /// OpenAI's (and Azure's) `x-ratelimit-*-tokens`, which the rate
    /// limiter learns as its combined `Dimension::Tokens`. Unlike
    /// [`tokens`](Self::tokens), never Anthropic's
    /// `anthropic-ratelimit-tokens-*`, which reports whichever of its input
    /// and output limits is closest to exhaustion, not a bucket of its own.
    pub combined_tokens: Option<Quota>,
    /// IETF draft policies, at most [`QuotaSnapshot::MAX_POLICIES`], in the
    /// order first seen (`RateLimit-Policy` first, then `RateLimit`).
    pub policies: Vec<RateLimitPolicy>,
    /// The older IETF drafts' single quota (unit unknown).
    pub ietf_legacy: Option<Quota>,
    /// Which header families contributed values.
    pub families: HeaderFamilies,
}

impl QuotaSnapshot {
    /// The most IETF policies read from one response; further items are not
    /// examined.
    pub const MAX_POLICIES: usize = 8;

    /// Reads a snapshot from response headers; `now` is the local wall clock,
    /// used only when the response has no valid `Date` header.
    ///
    /// Never fails: what does not parse is left out. Never panics.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Self {
        if !may_carry_quota(headers) {
            return Self::default();
        }
        let reference = parse::date_header(headers).unwrap_or_else(|| parse::unix_nanos(now));
        let mut snapshot = Self::default();
        anthropic::read_quotas(headers, reference, &mut snapshot);
        openai::read_quotas(headers, &mut snapshot);
        ietf::read(headers, &mut snapshot);
        snapshot
    }

    /// `true` if the server sent no usable rate-limit information at all, so
    /// a self-throttling layer has nothing to learn from this response.
    pub fn is_empty(&self) -> bool {
        !self.families.any()
    }
}

/// Whether any header name belongs to a family [`QuotaSnapshot`] reads
/// (`anthropic-ratelimit-*`, `x-ratelimit-*`, `ratelimit*`).
///
/// One pass over the names, comparing prefixes of the (already lowercase)
/// names: far cheaper than the twenty-odd lookups by name a snapshot makes,
/// each of which parses and hashes its name. Most responses carry no
/// rate-limit header at all, and those whose map is not empty paid ~1.7 µs
/// for an empty snapshot (`benches/stack.rs`).
pub(crate) fn may_carry_quota(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        let name = name.as_str().as_bytes();
        name.starts_with(b"anthropic-ratelimit-")
            || name.starts_with(b"x-ratelimit-")
            || name.starts_with(b"ratelimit")
    })
}

/// Same as [`QuotaSnapshot::from_headers`].
pub fn quota_snapshot(headers: &HeaderMap, now: SystemTime) -> QuotaSnapshot {
    QuotaSnapshot::from_headers(headers, now)
}

/// A reset duration, at most [`MAX_RESET`].
pub(crate) fn bounded_reset(d: Duration) -> Duration {
    d.min(MAX_RESET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Guards the pre-scan: every family's names pass it, unrelated ones
    /// (a `date` included) do not and give the same empty snapshot.
    #[test]
    fn may_carry_quota_sees_every_family() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert(
            "date",
            HeaderValue::from_static("Thu, 21 Aug 2025 12:40:00 GMT"),
        );
        h.insert("retry-after", HeaderValue::from_static("5"));
        assert!(!may_carry_quota(&h));
        assert!(QuotaSnapshot::from_headers(&h, SystemTime::now()).is_empty());
        for name in [
            "anthropic-ratelimit-requests-remaining",
            "x-ratelimit-remaining-requests",
            "ratelimit",
            "ratelimit-policy",
            "ratelimit-remaining",
        ] {
            let mut with = h.clone();
            with.insert(
                http::HeaderName::from_static(name),
                HeaderValue::from_static("5"),
            );
            assert!(may_carry_quota(&with), "{name}");
        }
    }
}
