use super::*;
use http::HeaderValue;
use std::time::UNIX_EPOCH;

/// `Sun, 06 Nov 1994 08:49:37 GMT`, the RFC 9110 example instant.
fn example_instant() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(784_111_777)
}

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        let name: http::HeaderName = name.parse().expect("valid name");
        h.append(name, HeaderValue::from_bytes(value).expect("valid value"));
    }
    h
}

/// What `retry_after` reports for advice longer than [`MAX_RETRY_AFTER`].
const TOO_LONG: Option<Duration> = Some(Duration::MAX);

#[test]
fn example_instant_is_right() {
    assert_eq!(
        httpdate::fmt_http_date(example_instant()),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
}

#[test]
fn retry_after_table() {
    let now = example_instant() - Duration::from_secs(120);
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let far = httpdate::fmt_http_date(now + MAX_RETRY_AFTER + s(1));
    let at_max = httpdate::fmt_http_date(now + MAX_RETRY_AFTER);
    let past = httpdate::fmt_http_date(now - s(1));
    let exactly_now = httpdate::fmt_http_date(now);
    let cases: &[(&str, &[u8], Option<Duration>)] = &[
        // delay-seconds
        ("retry-after", b"120", Some(s(120))),
        ("retry-after", b"1", Some(s(1))),
        ("retry-after", b"1.5", Some(ms(1_500))),
        ("retry-after", b"0.001", Some(ms(1))),
        ("retry-after", b"86400", Some(s(86_400))),
        ("retry-after", b"86401", TOO_LONG),
        ("retry-after", b"0", None),
        ("retry-after", b"0.0", None),
        ("retry-after", b"-1", None),
        ("retry-after", b"1e999", None),
        ("retry-after", b"1e3", None),
        ("retry-after", b"9223372037", TOO_LONG),
        ("retry-after", b"18446744073709551616", TOO_LONG),
        (
            "retry-after",
            b"99999999999999999999999999999999999999999999",
            TOO_LONG,
        ),
        ("retry-after", b" 120", None),
        ("retry-after", b"120 ", None),
        ("retry-after", b"NaN", None),
        ("retry-after", b"nan", None),
        ("retry-after", b"inf", None),
        ("retry-after", b"infinity", None),
        ("retry-after", b"+120", None),
        ("retry-after", b"", None),
        ("retry-after", b"junk", None),
        ("retry-after", b"12abc", None),
        ("retry-after", b"\xff\xfe", None),
        ("retry-after", b"1\xb5", None),
        // HTTP-dates, all three forms, relative to `now`
        (
            "retry-after",
            b"Sun, 06 Nov 1994 08:49:37 GMT",
            Some(s(120)),
        ),
        (
            "retry-after",
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            Some(s(120)),
        ),
        ("retry-after", b"Sun Nov  6 08:49:37 1994", Some(s(120))),
        ("retry-after", b"Mon, 06 Nov 1994 08:49:37 GMT", None), // wrong weekday
        ("retry-after", b"Sun, 06 Nov 1994 08:49:37 UTC", None),
        ("retry-after", b"Sun, 31 Nov 1994 08:49:37 GMT", None),
        ("retry-after", b"Sunday, 06-Nov-94 08:49:37", None),
        ("retry-after", b" Sun, 06 Nov 1994 08:49:37 GMT", None),
        ("retry-after", past.as_bytes(), None),
        ("retry-after", exactly_now.as_bytes(), None),
        ("retry-after", at_max.as_bytes(), Some(MAX_RETRY_AFTER)),
        ("retry-after", far.as_bytes(), TOO_LONG),
        ("retry-after", b"Fri, 31 Dec 9999 23:59:59 GMT", TOO_LONG),
        ("retry-after", b"Thu, 01 Jan 1970 00:00:00 GMT", None),
        // milliseconds
        ("retry-after-ms", b"1500", Some(ms(1_500))),
        (
            "retry-after-ms",
            b"20.5",
            Some(Duration::from_micros(20_500)),
        ),
        ("retry-after-ms", b"0.000001", Some(Duration::from_nanos(1))),
        ("retry-after-ms", b"0", None),
        ("retry-after-ms", b"-5", None),
        ("retry-after-ms", b"1e999", None),
        ("retry-after-ms", b"NaN", None),
        ("retry-after-ms", b" 1500", None),
        ("retry-after-ms", b"86400000", Some(MAX_RETRY_AFTER)),
        ("retry-after-ms", b"86400001", TOO_LONG),
        ("retry-after-ms", b"9223372036854775808", TOO_LONG),
        ("x-ms-retry-after-ms", b"250", Some(ms(250))),
        ("x-ms-retry-after-ms", b"abc", None),
        // unrelated header
        ("x-retry-after", b"5", None),
    ];
    for (name, value, want) in cases {
        let got = retry_after(&headers(&[(name, value)]), now);
        assert_eq!(got, *want, "{name}: {:?}", String::from_utf8_lossy(value));
    }
}

#[test]
fn retry_after_ms_wins_over_retry_after() {
    let now = SystemTime::now();
    let h = headers(&[("retry-after", b"30"), ("retry-after-ms", b"1500")]);
    assert_eq!(retry_after(&h, now), Some(Duration::from_millis(1_500)));
    let h = headers(&[("retry-after", b"30"), ("x-ms-retry-after-ms", b"700")]);
    assert_eq!(retry_after(&h, now), Some(Duration::from_millis(700)));
    let h = headers(&[("retry-after-ms", b"100"), ("x-ms-retry-after-ms", b"700")]);
    assert_eq!(retry_after(&h, now), Some(Duration::from_millis(100)));
}

#[test]
fn unusable_ms_falls_through_to_retry_after() {
    let now = SystemTime::now();
    for bad in [&b"junk"[..], b"0", b"-1", b"1e999", b" 5", b"NaN"] {
        let h = headers(&[("retry-after-ms", bad), ("retry-after", b"7")]);
        assert_eq!(
            retry_after(&h, now),
            Some(Duration::from_secs(7)),
            "{bad:?}"
        );
    }
}

#[test]
fn repeated_retry_after_is_ignored() {
    let h = headers(&[("retry-after", b"5"), ("retry-after", b"6")]);
    assert_eq!(retry_after(&h, SystemTime::now()), None);
}

#[test]
fn http_date_measured_from_date_header() {
    // The server's clock (Date) is 10 s behind ours: the wait is still the
    // 120 s the server meant, not 110 s.
    let server_now = example_instant() - Duration::from_secs(120);
    let local_now = server_now + Duration::from_secs(10);
    let date = httpdate::fmt_http_date(server_now);
    let h = headers(&[
        ("retry-after", b"Sun, 06 Nov 1994 08:49:37 GMT"),
        ("date", date.as_bytes()),
    ]);
    assert_eq!(retry_after(&h, local_now), Some(Duration::from_secs(120)));
    // Without Date, measured from `now`.
    let h = headers(&[("retry-after", b"Sun, 06 Nov 1994 08:49:37 GMT")]);
    assert_eq!(retry_after(&h, local_now), Some(Duration::from_secs(110)));
    // An unparseable Date falls back to `now`.
    let h = headers(&[
        ("retry-after", b"Sun, 06 Nov 1994 08:49:37 GMT"),
        ("date", b"yesterday"),
    ]);
    assert_eq!(retry_after(&h, local_now), Some(Duration::from_secs(110)));
}

#[test]
fn should_retry_table() {
    let cases: &[(&[u8], Option<bool>)] = &[
        (b"true", Some(true)),
        (b"false", Some(false)),
        (b"True", None),
        (b"FALSE", None),
        (b"1", None),
        (b"0", None),
        (b"yes", None),
        (b" true", None),
        (b"true ", None),
        (b"", None),
        (b"\xfftrue", None),
    ];
    for (value, want) in cases {
        let h = headers(&[("x-should-retry", value)]);
        assert_eq!(
            should_retry(&h),
            *want,
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
    assert_eq!(should_retry(&HeaderMap::new()), None);
    let h = headers(&[("x-should-retry", b"true"), ("x-should-retry", b"false")]);
    assert_eq!(should_retry(&h), None, "contradictory repeated field");
}

/// Defect 4: advice longer than a day was "no advice" (`None`), so the
/// retry layer backed off ~300 ms and the limiter's gate paused its 1 s
/// default. Longer advice is now too long, never none.
#[test]
fn longer_advice_is_too_long_not_none() {
    let now = SystemTime::now();
    for v in [
        &b"3600"[..],
        b"86401",
        b"100000",
        b"99999999999999999999",
        b"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000086401",
        b"99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999.5",
    ] {
        let got = retry_after(&headers(&[("retry-after", v)]), now);
        let want = if v == b"3600" {
            Some(Duration::from_secs(3600))
        } else {
            Some(Duration::MAX)
        };
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(v));
    }
    // A long run of leading zeros is still the small value it spells.
    let padded = format!("{}7", "0".repeat(300));
    let h = headers(&[("retry-after", padded.as_bytes())]);
    assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
}

/// A too-long `retry-after-ms` is usable (it is the server's word), so it
/// wins over `retry-after` as any usable value does; only what breaks the
/// grammar falls through.
#[test]
fn too_long_ms_does_not_fall_through() {
    let now = SystemTime::now();
    for long in [
        &b"999999999999"[..],
        b"86400001",
        b"18446744073709551616000",
    ] {
        let h = headers(&[("retry-after-ms", long), ("retry-after", b"7")]);
        assert_eq!(
            retry_after(&h, now),
            Some(Duration::MAX),
            "{:?}",
            String::from_utf8_lossy(long)
        );
    }
}

proptest::proptest! {
    /// For any advice value `v` in seconds (decimal text, however long),
    /// `retry_after` is `v` exactly up to [`MAX_RETRY_AFTER`] and
    /// `Duration::MAX` above: monotone in `v`, never `None` for `v > 0`.
    #[test]
    fn advice_is_monotone_and_too_long_above_the_cap(
        digits in "[0-9]{1,60}",
        frac in proptest::option::of("[0-9]{1,12}"),
        other in "[0-9]{1,60}",
    ) {
        let text = |int: &str| match &frac {
            Some(f) => format!("{int}.{f}"),
            None => int.to_string(),
        };
        let read = |s: &str| retry_after(&headers(&[("retry-after", s.as_bytes())]), SystemTime::UNIX_EPOCH);
        // The exact value, as a rational in nanoseconds (saturating).
        let exact = |s: &str| -> Option<u128> {
            let (i, f) = s.split_once('.').unwrap_or((s, ""));
            let mut n: u128 = 0;
            for b in i.bytes() {
                n = n.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
            }
            let mut nanos = n.checked_mul(1_000_000_000)?;
            let f9: String = f.chars().chain(std::iter::repeat('0')).take(9).collect();
            nanos = nanos.checked_add(f9.parse::<u128>().ok()?)?;
            Some(nanos)
        };
        let (a, b) = (text(&digits), text(&other));
        let (ra, rb) = (read(&a), read(&b));
        for (s, r) in [(&a, ra), (&b, rb)] {
            match exact(s) {
                Some(0) => proptest::prop_assert_eq!(r, None, "{}", s),
                Some(n) if n <= MAX_RETRY_AFTER.as_nanos() => {
                    proptest::prop_assert_eq!(r.map(|d| d.as_nanos()), Some(n), "{}", s)
                }
                _ => proptest::prop_assert_eq!(r, Some(Duration::MAX), "{}", s),
            }
        }
        // Monotone: the longer advice never reads shorter.
        let (ea, eb) = (exact(&a).unwrap_or(u128::MAX), exact(&b).unwrap_or(u128::MAX));
        let key = |r: Option<Duration>| r.unwrap_or(Duration::ZERO);
        if ea <= eb {
            proptest::prop_assert!(key(ra) <= key(rb), "{} {}", a, b);
        } else {
            proptest::prop_assert!(key(ra) >= key(rb), "{} {}", a, b);
        }
    }
}
