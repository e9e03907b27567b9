use super::*;
use crate::provider::MAX_RESET;
use http::HeaderValue;
use std::time::SystemTime;

fn snapshot(pairs: &[(&str, &[u8])]) -> QuotaSnapshot {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        let name: http::HeaderName = name.parse().expect("name");
        h.append(name, HeaderValue::from_bytes(value).expect("value"));
    }
    QuotaSnapshot::from_headers(&h, SystemTime::now())
}

#[test]
fn full_header_set() {
    let s = snapshot(&[
        ("x-ratelimit-limit-requests", b"10000"),
        ("x-ratelimit-remaining-requests", b"9999"),
        ("x-ratelimit-reset-requests", b"6ms"),
        ("x-ratelimit-limit-tokens", b"30000000"),
        ("x-ratelimit-remaining-tokens", b"29999960"),
        ("x-ratelimit-reset-tokens", b"1m30.5s"),
    ]);
    assert_eq!(
        s.requests,
        Some(Quota {
            limit: Some(10_000),
            remaining: Some(9_999),
            reset: Some(Duration::from_millis(6))
        })
    );
    assert_eq!(
        s.tokens,
        Some(Quota {
            limit: Some(30_000_000),
            remaining: Some(29_999_960),
            reset: Some(Duration::from_millis(90_500))
        })
    );
    assert_eq!(s.input_tokens, None);
    assert_eq!(s.output_tokens, None);
    assert!(s.families.openai && !s.families.anthropic);
}

#[test]
fn reset_forms() {
    let cases: &[(&[u8], Option<Duration>)] = &[
        (b"1s", Some(Duration::from_secs(1))),
        (b"6m0s", Some(Duration::from_secs(360))),
        (b"12ms", Some(Duration::from_millis(12))),
        (b"1h2m3s", Some(Duration::from_secs(3_723))),
        (b"1.574s", Some(Duration::from_millis(1_574))),
        (b"500\xc2\xb5s", Some(Duration::from_micros(500))),
        (b"0s", Some(Duration::ZERO)),
        (b"20", Some(Duration::from_secs(20))),
        (b"0.5", Some(Duration::from_millis(500))),
        // Beyond MAX_RESET: too long, kept as the maximum (never "none").
        (b"1755780000", Some(MAX_RESET)), // epoch seconds
        (b"745h", Some(MAX_RESET)),       // 31 days + 1 h
        (b"-1", None),
        (b"-1s", None),
        (b"soon", None),
        (b" 1s", None),
    ];
    for (value, want) in cases {
        let s = snapshot(&[("x-ratelimit-reset-tokens", value)]);
        assert_eq!(
            s.tokens.and_then(|q| q.reset),
            *want,
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
}

#[test]
fn azure_minus_one_is_unknown_not_exhausted() {
    let s = snapshot(&[
        ("x-ratelimit-limit-tokens", b"-1"),
        ("x-ratelimit-remaining-tokens", b"-1"),
        ("x-ratelimit-remaining-requests", b"-1"),
        ("x-ms-retry-after-ms", b"100"),
    ]);
    assert_eq!(s.tokens, None);
    assert_eq!(s.requests, None);
    assert!(s.is_empty());
    let s = snapshot(&[
        ("x-ratelimit-limit-tokens", b"-1"),
        ("x-ratelimit-remaining-tokens", b"400"),
    ]);
    assert_eq!(
        s.tokens,
        Some(Quota {
            remaining: Some(400),
            ..Quota::default()
        })
    );
}

#[test]
fn anthropic_wins_per_dimension() {
    let s = snapshot(&[
        ("anthropic-ratelimit-requests-remaining", b"5"),
        ("x-ratelimit-remaining-requests", b"7"),
        ("x-ratelimit-remaining-tokens", b"70"),
    ]);
    assert_eq!(s.requests.and_then(|q| q.remaining), Some(5));
    assert_eq!(s.tokens.and_then(|q| q.remaining), Some(70));
    assert!(s.families.anthropic && s.families.openai);
}

/// OpenAI's token headers are one combined limit (input + output): read as
/// `combined_tokens`, never as input or output tokens; Anthropic's
/// `tokens-*` (its most restrictive limit) is not combined.
#[test]
fn token_headers_are_the_combined_dimension() {
    let s = snapshot(&[
        ("x-ratelimit-limit-tokens", b"30000"),
        ("x-ratelimit-remaining-tokens", b"29000"),
        ("x-ratelimit-reset-tokens", b"2s"),
    ]);
    let combined = Some(Quota {
        limit: Some(30_000),
        remaining: Some(29_000),
        reset: Some(Duration::from_secs(2)),
    });
    assert_eq!(s.combined_tokens, combined);
    assert_eq!((s.input_tokens, s.output_tokens), (None, None));
    let anthropic = snapshot(&[
        ("anthropic-ratelimit-tokens-limit", b"28000"),
        ("anthropic-ratelimit-tokens-remaining", b"27000"),
    ]);
    assert!(anthropic.tokens.is_some());
    assert_eq!(anthropic.combined_tokens, None);
    // Azure's "unknown" stays unknown.
    let azure = snapshot(&[("x-ratelimit-remaining-tokens", b"-1")]);
    assert_eq!(azure.combined_tokens, None);
}
