use super::*;

fn response(status: u16, headers: &HeaderMap, error: Option<ErrorClass>) -> bool {
    DefaultPolicy.should_retry(&Attempted::Response {
        status: StatusCode::from_u16(status).expect("status"),
        headers,
        error,
        stream_error: false,
    })
}

#[test]
fn statuses() {
    let h = HeaderMap::new();
    for s in [408, 409, 429, 500, 502, 503, 504, 529] {
        assert!(response(s, &h, None), "{s} retried");
    }
    for s in [200, 400, 401, 403, 404, 413, 422, 501, 505] {
        assert!(!response(s, &h, None), "{s} not retried");
    }
}

#[test]
fn x_should_retry_overrides() {
    let mut h = HeaderMap::new();
    h.insert("x-should-retry", "false".parse().expect("hv"));
    assert!(!response(529, &h, None));
    h.insert("x-should-retry", "true".parse().expect("hv"));
    assert!(response(400, &h, None));
}

#[test]
fn quota_429s_are_not_retried() {
    let h = HeaderMap::new();
    let quota = crate::provider::classify_error(
        StatusCode::TOO_MANY_REQUESTS,
        br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
    );
    assert_eq!(quota.kind, ErrorKind::QuotaExhausted);
    assert!(!response(429, &h, Some(quota)));
    let rate = crate::provider::classify_error(
        StatusCode::TOO_MANY_REQUESTS,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
    );
    assert!(response(429, &h, Some(rate)));
}

#[test]
fn stream_error_before_content() {
    let h = HeaderMap::new();
    let overloaded = crate::provider::classify_error(
        StatusCode::OK,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    assert!(response(200, &h, Some(overloaded)));
    let invalid = ErrorClass::new(ErrorKind::InvalidRequest);
    assert!(!response(200, &h, Some(invalid)));
}

#[test]
fn deliberate_errors_are_not_retried() {
    let e: BoxError = RateLimited {
        retry_after: std::time::Duration::from_secs(1),
    }
    .into();
    assert!(!DefaultPolicy.should_retry(&Attempted::Error(&e)));
    let e: BoxError = std::io::Error::other("connection reset").into();
    assert!(DefaultPolicy.should_retry(&Attempted::Error(&e)));
}

#[test]
fn closures_are_policies() {
    let never = |_: &Attempted<'_>| false;
    let e: BoxError = std::io::Error::other("x").into();
    assert!(!never.should_retry(&Attempted::Error(&e)));
}
