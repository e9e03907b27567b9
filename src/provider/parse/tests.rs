use super::*;
use http::HeaderValue;

const S: u128 = NANOS_PER_SEC;

#[test]
fn decimal_table() {
    let cases: &[(&str, Option<u128>)] = &[
        ("0", Some(0)),
        ("1", Some(S)),
        ("120", Some(120 * S)),
        ("1.5", Some(S + S / 2)),
        ("0.001", Some(1_000_000)),
        ("007", Some(7 * S)),
        ("1.0000000001", Some(S)),
        ("", None),
        (".5", None),
        ("1.", None),
        ("-1", None),
        ("+1", None),
        ("1e3", None),
        ("1e999", None),
        ("NaN", None),
        ("inf", None),
        ("1.2.3", None),
        (" 1", None),
        ("1 ", None),
        ("340282366920938463463374607431768211456", None),
    ];
    for (input, want) in cases {
        assert_eq!(decimal(input, S), *want, "input {input:?}");
    }
    assert_eq!(decimal("1.5", NANOS_PER_MILLI), Some(1_500_000));
}

#[test]
fn go_duration_table() {
    let ms = Duration::from_millis;
    let cases: &[(&str, Option<Duration>)] = &[
        ("0", Some(Duration::ZERO)),
        ("0s", Some(Duration::ZERO)),
        ("1s", Some(ms(1_000))),
        ("6m0s", Some(ms(360_000))),
        ("12ms", Some(ms(12))),
        ("1m30.5s", Some(ms(90_500))),
        ("1h2m3s", Some(ms(3_723_000))),
        ("1.574s", Some(ms(1_574))),
        ("2m59.56s", Some(ms(179_560))),
        (".5s", Some(ms(500))),
        ("1.s", Some(ms(1_000))),
        ("1.5h", Some(ms(5_400_000))),
        ("250us", Some(Duration::from_micros(250))),
        ("250\u{b5}s", Some(Duration::from_micros(250))),
        ("250\u{3bc}s", Some(Duration::from_micros(250))),
        ("17ns", Some(Duration::from_nanos(17))),
        ("1m1m", Some(ms(120_000))),
        ("", None),
        ("1", None),
        ("60", None),
        ("s", None),
        (".s", None),
        ("-1", None),
        ("-1s", None),
        ("+1s", None),
        ("1x", None),
        ("1 s", None),
        ("1S", None),
        ("1.2.3s", None),
        ("1d", None),
        ("99999999999999999999999h", None),
        ("5124095576030432h", None),
    ];
    for (input, want) in cases {
        assert_eq!(go_duration(input), *want, "input {input:?}");
    }
}

fn at(s: &str) -> i128 {
    unix_nanos(httpdate::parse_http_date(s).expect("test date"))
}

#[test]
fn rfc3339_table() {
    let base = at("Thu, 21 Aug 2025 12:40:59 GMT");
    let n = 1_000_000_000i128;
    let cases: &[(&str, Option<i128>)] = &[
        ("2025-08-21T12:40:59Z", Some(base)),
        ("2025-08-21t12:40:59z", Some(base)),
        ("2025-08-21 12:40:59Z", Some(base)),
        ("2025-08-21T12:40:59+00:00", Some(base)),
        ("2025-08-21T12:40:59-00:00", Some(base)),
        ("2025-08-21T14:40:59+02:00", Some(base)),
        ("2025-08-21T07:10:59-05:30", Some(base)),
        ("2025-08-21T12:40:59.5Z", Some(base + n / 2)),
        ("2025-08-21T12:40:59.123456789Z", Some(base + 123_456_789)),
        (
            "2025-08-21T12:40:59.1234567891234Z",
            Some(base + 123_456_789),
        ),
        ("2025-08-21T12:40:58.999+00:00", Some(base - n / 1000)),
        ("2025-08-21T12:40:60Z", Some(base + n)),
        ("1970-01-01T00:00:00Z", Some(0)),
        ("1969-12-31T23:59:59Z", Some(-n)),
        (
            "2024-02-29T00:00:00Z",
            Some(at("Thu, 29 Feb 2024 00:00:00 GMT")),
        ),
        (
            "2000-02-29T00:00:00Z",
            Some(at("Tue, 29 Feb 2000 00:00:00 GMT")),
        ),
        (
            "2025-12-31T23:59:59Z",
            Some(at("Wed, 31 Dec 2025 23:59:59 GMT")),
        ),
        ("2025-02-29T00:00:00Z", None),
        ("1900-02-29T00:00:00Z", None),
        ("2025-04-31T00:00:00Z", None),
        ("2025-13-01T00:00:00Z", None),
        ("2025-00-01T00:00:00Z", None),
        ("2025-01-00T00:00:00Z", None),
        ("2025-01-01T24:00:00Z", None),
        ("2025-01-01T00:60:00Z", None),
        ("2025-01-01T00:00:61Z", None),
        ("2025-08-21T12:40:59", None),
        ("2025-08-21T12:40:59.Z", None),
        ("2025-08-21T12:40:59+0000", None),
        ("2025-08-21T12:40:59+24:00", None),
        ("2025-08-21T12:40:59+00:60", None),
        ("2025-08-21T12:40:59Zjunk", None),
        ("2025-08-21", None),
        ("2025-8-21T12:40:59Z", None),
        ("+2025-08-21T12:40:59Z", None),
        ("2025-08-21T12:40:59 Z", None),
        ("garbage", None),
        ("", None),
        ("Thu, 21 Aug 2025 12:40:59 GMT", None),
    ];
    for (input, want) in cases {
        assert_eq!(rfc3339(input), *want, "input {input:?}");
    }
}

#[test]
fn single_value_rules() {
    let mut h = HeaderMap::new();
    assert_eq!(single(&h, "x"), None);
    h.insert("x", HeaderValue::from_static("12"));
    assert_eq!(single(&h, "x"), Some("12"));
    h.append("x", HeaderValue::from_static("13"));
    assert_eq!(single(&h, "x"), None, "repeated singleton is invalid");
    for bad in [" 12", "12 ", "\t12", ""] {
        h.insert("x", HeaderValue::from_str(bad).expect("valid header value"));
        assert_eq!(single(&h, "x"), None, "{bad:?}");
    }
    h.insert(
        "x",
        HeaderValue::from_bytes(&[b'1', 0xff]).expect("obs-text"),
    );
    assert_eq!(single(&h, "x"), None, "non-UTF-8");
    let long = "1".repeat(MAX_VALUE_LEN + 1);
    h.insert("x", HeaderValue::from_str(&long).expect("valid"));
    assert_eq!(single(&h, "x"), None, "over length cap");
}

#[test]
fn until_clamps_at_zero() {
    assert_eq!(until(5, 10), Some(Duration::ZERO));
    assert_eq!(until(10, 10), Some(Duration::ZERO));
    assert_eq!(until(1_500_000_000, 0), Some(Duration::from_millis(1_500)));
    assert_eq!(until(i128::MAX, i128::MIN), None);
}

#[test]
fn unix_nanos_before_epoch() {
    let t = UNIX_EPOCH - Duration::from_secs(3);
    assert_eq!(unix_nanos(t), -3_000_000_000);
}
