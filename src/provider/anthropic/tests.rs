use super::*;
use http::HeaderValue;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2025-08-21T12:40:00Z
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_755_780_000)
}

fn snapshot(pairs: &[(&str, &str)], now: SystemTime) -> QuotaSnapshot {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        let name: http::HeaderName = name.parse().expect("name");
        h.append(name, HeaderValue::from_str(value).expect("value"));
    }
    QuotaSnapshot::from_headers(&h, now)
}

#[test]
fn t0_is_right() {
    assert_eq!(
        httpdate::fmt_http_date(t0()),
        "Thu, 21 Aug 2025 12:40:00 GMT"
    );
}

#[test]
fn full_header_set() {
    let s = snapshot(
        &[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
            ("anthropic-ratelimit-tokens-limit", "28000"),
            ("anthropic-ratelimit-tokens-remaining", "27000"),
            ("anthropic-ratelimit-tokens-reset", "2025-08-21T12:40:01.5Z"),
            ("anthropic-ratelimit-input-tokens-limit", "20000"),
            ("anthropic-ratelimit-input-tokens-remaining", "19000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2025-08-21T14:40:02+02:00",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "8000"),
            ("anthropic-ratelimit-output-tokens-remaining", "8000"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-08-21T12:40:00Z",
            ),
        ],
        t0(),
    );
    let q = |l, r, ms| {
        Some(Quota {
            limit: Some(l),
            remaining: Some(r),
            reset: Some(Duration::from_millis(ms)),
        })
    };
    assert_eq!(s.requests, q(50, 49, 59_000));
    assert_eq!(s.tokens, q(28_000, 27_000, 1_500));
    assert_eq!(s.input_tokens, q(20_000, 19_000, 2_000));
    assert_eq!(s.output_tokens, q(8_000, 8_000, 0));
    assert!(s.families.anthropic);
    assert!(!s.families.openai && !s.families.ietf && !s.families.ietf_legacy);
    assert!(!s.is_empty());
}

#[test]
fn reset_before_reference_is_zero() {
    let s = snapshot(
        &[("anthropic-ratelimit-requests-reset", "2025-08-21T12:39:00Z")],
        t0(),
    );
    assert_eq!(s.requests.and_then(|q| q.reset), Some(Duration::ZERO));
}

#[test]
fn reset_measured_from_date_header() {
    // Date is 10 s behind the local clock: the reset is 59 s after Date,
    // not 49 s after `now`.
    let s = snapshot(
        &[
            ("date", "Thu, 21 Aug 2025 12:40:00 GMT"),
            ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
        ],
        t0() + Duration::from_secs(10),
    );
    assert_eq!(
        s.requests.and_then(|q| q.reset),
        Some(Duration::from_secs(59))
    );
    // Invalid Date: fall back to `now`.
    let s = snapshot(
        &[
            ("date", "2025-08-21T12:40:00Z"),
            ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
        ],
        t0() + Duration::from_secs(10),
    );
    assert_eq!(
        s.requests.and_then(|q| q.reset),
        Some(Duration::from_secs(49))
    );
}

#[test]
fn bad_values_are_dropped() {
    let cases: &[(&str, &str)] = &[
        ("anthropic-ratelimit-requests-limit", "-1"),
        ("anthropic-ratelimit-requests-limit", "1.5"),
        ("anthropic-ratelimit-requests-limit", "+5"),
        ("anthropic-ratelimit-requests-limit", " 5"),
        ("anthropic-ratelimit-requests-limit", "18446744073709551616"),
        ("anthropic-ratelimit-requests-remaining", "lots"),
        ("anthropic-ratelimit-requests-remaining", ""),
        ("anthropic-ratelimit-requests-reset", "soon"),
        ("anthropic-ratelimit-requests-reset", "60"),
        ("anthropic-ratelimit-requests-reset", "2025-02-30T00:00:00Z"),
    ];
    for (name, value) in cases {
        let s = snapshot(&[(name, value)], t0());
        assert_eq!(s.requests, None, "{name}: {value:?}");
        assert!(s.is_empty(), "{name}: {value:?}");
    }
}

/// A reset past the 31-day cap is too long, kept as the cap — never
/// dropped, which would make the limiter's pause after a 429 its short
/// default.
#[test]
fn a_reset_beyond_the_cap_is_too_long_not_none() {
    let s = snapshot(
        &[("anthropic-ratelimit-requests-reset", "9999-12-31T23:59:59Z")],
        t0(),
    );
    assert_eq!(
        s.requests.and_then(|q| q.reset),
        Some(crate::provider::MAX_RESET)
    );
}

#[test]
fn remaining_above_limit_is_kept() {
    let s = snapshot(
        &[
            ("anthropic-ratelimit-tokens-limit", "1000"),
            ("anthropic-ratelimit-tokens-remaining", "2000"),
        ],
        t0(),
    );
    assert_eq!(s.tokens.and_then(|q| q.remaining), Some(2_000));
}

#[test]
fn partial_dimension() {
    let s = snapshot(
        &[("anthropic-ratelimit-output-tokens-remaining", "0")],
        t0(),
    );
    assert_eq!(
        s.output_tokens,
        Some(Quota {
            remaining: Some(0),
            ..Quota::default()
        })
    );
    assert_eq!(s.requests, None);
    assert!(s.families.anthropic);
}
