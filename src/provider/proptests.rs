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
            // Exact up to the bound, else "too long".
            prop_assert!(d <= MAX_RETRY_AFTER || d == Duration::MAX);
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
        prop_assert_eq!(got, Some(if want <= MAX_RETRY_AFTER { want } else { Duration::MAX }));
    }

    #[test]
    fn http_date_roundtrip(offset in 1u64..=200_000, now in 0u64..=4_000_000_000) {
        let now = UNIX_EPOCH + Duration::from_secs(now);
        let mut h = HeaderMap::new();
        let date = httpdate::fmt_http_date(now + Duration::from_secs(offset));
        h.insert("retry-after", HeaderValue::from_str(&date).expect("valid"));
        let want = Duration::from_secs(offset);
        prop_assert_eq!(retry_after(&h, now), Some(if want <= MAX_RETRY_AFTER { want } else { Duration::MAX }));
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
