use super::*;

fn response(status: u16, headers: &HeaderMap, error: Option<ErrorClass>) -> bool {
    DefaultPolicy.should_retry(&Attempted::Response {
        status: StatusCode::from_u16(status).expect("status"),
        headers,
        error,
        stream_error: false,
        grpc: None,
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

fn grpc(code: u32, pushback: Option<&str>) -> bool {
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/grpc".parse().expect("hv"));
    h.insert("grpc-status", code.to_string().parse().expect("hv"));
    if let Some(p) = pushback {
        h.insert("grpc-retry-pushback-ms", p.parse().expect("hv"));
    }
    let status = crate::provider::GrpcStatus::from_headers(&h);
    assert!(status.is_some());
    DefaultPolicy.should_retry(&Attempted::Response {
        status: StatusCode::OK,
        headers: &h,
        error: None,
        stream_error: false,
        grpc: status,
    })
}

#[test]
fn grpc_unavailable_and_resource_exhausted_are_retried() {
    assert!(grpc(14, None), "UNAVAILABLE");
    assert!(grpc(8, None), "RESOURCE_EXHAUSTED");
    assert!(grpc(8, Some("100")), "with a pushback");
    assert!(grpc(14, Some("0")), "pushback of zero: at once");
    for code in [1, 2, 3, 4, 5, 7, 9, 10, 12, 13, 16] {
        assert!(!grpc(code, None), "code {code} not retried");
    }
}

#[test]
fn grpc_negative_or_invalid_pushback_stops() {
    for p in ["-1", "soon", "1.5"] {
        assert!(!grpc(14, Some(p)), "pushback {p:?} says do not retry");
        assert!(!grpc(8, Some(p)), "pushback {p:?} says do not retry");
    }
    // A pushback does not make a code retryable.
    assert!(!grpc(3, Some("10")));
}
