use super::*;
use http::HeaderValue;
use std::time::SystemTime;

fn snapshot(pairs: &[(&str, &str)]) -> QuotaSnapshot {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        let name: http::HeaderName = name.parse().expect("name");
        h.append(name, HeaderValue::from_str(value).expect("value"));
    }
    QuotaSnapshot::from_headers(&h, SystemTime::now())
}

fn policy(name: &str) -> RateLimitPolicy {
    RateLimitPolicy::named(Label::new(name))
}

#[test]
fn policy_and_ratelimit_merge_by_name() {
    let s = snapshot(&[
        (
            "ratelimit-policy",
            r#""burst";q=100;w=60, "daily";q=1000;w=86400;qu="requests";pk=:cHJvamVjdDEyMw==:"#,
        ),
        ("ratelimit", r#""burst";r=50;t=30"#),
    ]);
    let burst = RateLimitPolicy {
        quota: Some(100),
        window: Some(Duration::from_secs(60)),
        remaining: Some(50),
        reset: Some(Duration::from_secs(30)),
        ..policy("burst")
    };
    let daily = RateLimitPolicy {
        quota: Some(1_000),
        window: Some(Duration::from_secs(86_400)),
        unit: Some(QuotaUnit::Requests),
        partition_key: Some(Label::new("cHJvamVjdDEyMw==")),
        ..policy("daily")
    };
    assert_eq!(s.policies, vec![burst, daily]);
    assert!(s.families.ietf && !s.families.ietf_legacy);
    assert_eq!(s.ietf_legacy, None);
}

#[test]
fn ratelimit_alone_and_token_names() {
    let s = snapshot(&[("ratelimit", "default;r=0;t=12, other;r=3")]);
    assert_eq!(
        s.policies,
        vec![
            RateLimitPolicy {
                remaining: Some(0),
                reset: Some(Duration::from_secs(12)),
                ..policy("default")
            },
            RateLimitPolicy {
                remaining: Some(3),
                ..policy("other")
            },
        ]
    );
}

#[test]
fn units_and_odd_params() {
    let s = snapshot(&[(
        "ratelimit-policy",
        r#""a";q=10;qu="content-bytes";x=?1;y=1.5;z=tok, "b";q=-5;w=1.5, "c";q=1;qu="concurrent-requests", "d";q=1;qu="parsecs""#,
    )]);
    let units: Vec<_> = s
        .policies
        .iter()
        .map(|p| (p.name.as_str().to_owned(), p.quota, p.window, p.unit))
        .collect();
    assert_eq!(
        units,
        vec![
            (
                "a".to_owned(),
                Some(10),
                None,
                Some(QuotaUnit::ContentBytes)
            ),
            (
                "c".to_owned(),
                Some(1),
                None,
                Some(QuotaUnit::ConcurrentRequests)
            ),
            ("d".to_owned(), Some(1), None, Some(QuotaUnit::Other)),
        ],
        "b has only a negative q and a decimal w: nothing usable, dropped"
    );
}

#[test]
fn policies_are_bounded() {
    let many: Vec<String> = (0..20).map(|i| format!("\"p{i}\";q={i}")).collect();
    let s = snapshot(&[("ratelimit-policy", &many.join(", "))]);
    assert_eq!(s.policies.len(), QuotaSnapshot::MAX_POLICIES);
    assert_eq!(s.policies.last().map(|p| p.name.as_str()), Some("p7"));
    // RateLimit items for new names beyond the bound are ignored, known names still merge.
    let s = snapshot(&[
        ("ratelimit-policy", &many.join(", ")),
        ("ratelimit", r#""p99";r=1, "p0";r=0"#),
    ]);
    assert_eq!(s.policies.len(), QuotaSnapshot::MAX_POLICIES);
}

#[test]
fn spaces_follow_rfc_8941() {
    let s = snapshot(&[("ratelimit-policy", r#"  "a";q=1 ,	"b";q=2  "#)]);
    assert_eq!(s.policies.len(), 2);
    // No space is allowed before `;` or around `=`.
    for bad in [r#""a" ;q=1"#, r#""a";q =1"#, r#""a";q= 1"#] {
        assert!(
            snapshot(&[("ratelimit-policy", bad)]).policies.is_empty(),
            "{bad:?}"
        );
    }
}

#[test]
fn split_across_lines() {
    let s = snapshot(&[
        ("ratelimit-policy", r#""a";q=1"#),
        ("ratelimit-policy", r#""b";q=2"#),
    ]);
    assert_eq!(s.policies.len(), 2);
}

#[test]
fn malformed_fields_are_ignored_whole() {
    for bad in [
        r#""burst";q=100;w=60,"#,
        r#""burst";q=100;w=60 junk"#,
        r#""burst;q=100"#,
        r#"("a" "b");q=1"#,
        r#""burst";Q=100"#,
        r#""burst";q=1234567890123456"#,
        "\"bu\trst\";q=1",
        r#""burst";q=100, , "daily";q=1"#,
        r#""burst";pk=:abc"#,
        r#""a\x";q=1"#,
    ] {
        let s = snapshot(&[("ratelimit-policy", bad)]);
        assert!(s.policies.is_empty(), "{bad:?}");
        assert!(s.is_empty(), "{bad:?}");
    }
}

#[test]
fn legacy_fields() {
    let s = snapshot(&[
        ("ratelimit-limit", "100"),
        ("ratelimit-remaining", "50"),
        ("ratelimit-reset", "30"),
    ]);
    assert_eq!(
        s.ietf_legacy,
        Some(Quota {
            limit: Some(100),
            remaining: Some(50),
            reset: Some(Duration::from_secs(30))
        })
    );
    assert!(s.families.ietf_legacy && !s.families.ietf);
    let s = snapshot(&[("ratelimit-limit", "10, 10;w=1, 50;w=60")]);
    assert_eq!(s.ietf_legacy.and_then(|q| q.limit), Some(10));
    let s = snapshot(&[("ratelimit", "limit=10, remaining=5, reset=7")]);
    assert_eq!(
        s.ietf_legacy,
        Some(Quota {
            limit: Some(10),
            remaining: Some(5),
            reset: Some(Duration::from_secs(7))
        })
    );
    for (name, bad) in [
        ("ratelimit-limit", "-1"),
        ("ratelimit-remaining", "x"),
        ("ratelimit-reset", "1.5"),
        ("ratelimit-remaining", " 5"),
    ] {
        let s = snapshot(&[(name, bad)]);
        assert_eq!(s.ietf_legacy, None, "{name}: {bad:?}");
        assert!(s.is_empty());
    }
    // Too long is the cap, not "none".
    let s = snapshot(&[("ratelimit-reset", "99999999999")]);
    assert_eq!(
        s.ietf_legacy.and_then(|q| q.reset),
        Some(crate::provider::MAX_RESET)
    );
}
