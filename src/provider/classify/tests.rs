use super::*;

fn kind(status: u16, body: &str) -> ErrorKind {
    let status = StatusCode::from_u16(status).expect("status");
    classify_error(status, body.as_bytes()).kind
}

fn anthropic(ty: &str, message: &str) -> String {
    format!(
        r#"{{"type":"error","error":{{"type":"{ty}","message":"{message}","details":null}},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}}"#
    )
}

fn openai(message: &str, ty: &str, code: &str) -> String {
    format!(r#"{{"error":{{"message":"{message}","type":"{ty}","param":null,"code":{code}}}}}"#)
}

#[test]
fn anthropic_types_by_status() {
    use ErrorKind::*;
    let cases = [
        (
            400,
            "invalid_request_error",
            "messages: field required",
            InvalidRequest,
        ),
        (
            401,
            "authentication_error",
            "invalid x-api-key",
            Authentication,
        ),
        (
            403,
            "permission_error",
            "Your API key does not have permission",
            Permission,
        ),
        (404, "not_found_error", "model: claude-x", NotFound),
        (
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
            RequestTooLarge,
        ),
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            RateLimited,
        ),
        (500, "api_error", "Internal server error", Server),
        (529, "overloaded_error", "Overloaded", Overloaded),
    ];
    for (status, ty, message, want) in cases {
        let body = anthropic(ty, message);
        let class = classify_error(
            StatusCode::from_u16(status).expect("status"),
            body.as_bytes(),
        );
        assert_eq!(class.kind, want, "{status} {ty}");
        assert_eq!(class.api, Some(Api::AnthropicMessages));
        assert_eq!(
            class.error_type.map(|l| l.as_str().to_owned()).as_deref(),
            Some(ty)
        );
        assert_eq!(class.code, None);
    }
}

#[test]
fn anthropic_shape_without_details() {
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#;
    assert_eq!(kind(529, body), ErrorKind::Overloaded);
}

#[test]
fn anthropic_type_beats_generic_status() {
    // The body is more specific than the status.
    assert_eq!(
        kind(500, &anthropic("overloaded_error", "Overloaded")),
        ErrorKind::Overloaded
    );
    assert_eq!(
        kind(503, &anthropic("api_error", "boom")),
        ErrorKind::Server
    );
}

#[test]
fn anthropic_spend_limit_is_quota_exhausted() {
    let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_1"}"#;
    let class = classify_error(StatusCode::TOO_MANY_REQUESTS, body.as_bytes());
    assert_eq!(class.kind, ErrorKind::QuotaExhausted);
    assert!(!class.kind.is_retryable_by_default());
    assert_eq!(class.code, Some(Label::new("enforced_spend_limit_reached")));
    // Other detail codes do not change a rate limit.
    let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"x","details":{"error_code":"something_else"}}}"#;
    assert_eq!(kind(429, body), ErrorKind::RateLimited);
    // Odd `details` shapes are tolerated.
    for details in ["null", "\"text\"", "[1,2]", "{}", r#"{"error_code":5}"#] {
        let body = format!(
            r#"{{"type":"error","error":{{"type":"rate_limit_error","message":"x","details":{details}}}}}"#
        );
        assert_eq!(kind(429, &body), ErrorKind::RateLimited, "{details}");
    }
}

#[test]
fn anthropic_credit_balance_is_quota_exhausted() {
    let body = anthropic(
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
    );
    assert_eq!(kind(400, &body), ErrorKind::QuotaExhausted);
    assert_eq!(ErrorClass::new(ErrorKind::Other).kind, ErrorKind::Other);
}

#[test]
fn anthropic_context_length() {
    for message in [
        "prompt is too long: 210000 tokens > 200000 maximum",
        "input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000, decrease input length or `max_tokens` and try again",
        "Prompt Is Too Long",
    ] {
        let body = serde_json::json!({"type":"error","error":{"type":"invalid_request_error","message":message}}).to_string();
        assert_eq!(kind(400, &body), ErrorKind::ContextLength, "{message}");
    }
    // Only for invalid_request_error.
    assert_eq!(
        kind(429, &anthropic("rate_limit_error", "prompt is too long")),
        ErrorKind::RateLimited
    );
}

#[test]
fn openai_shapes() {
    use ErrorKind::*;
    let cases = [
        (
            429,
            openai(
                "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 1500. Please try again in 1.574s.",
                "tokens",
                r#""rate_limit_exceeded""#,
            ),
            RateLimited,
        ),
        (
            429,
            openai(
                "Rate limit reached for requests",
                "requests",
                r#""rate_limit_exceeded""#,
            ),
            RateLimited,
        ),
        (
            429,
            openai(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                r#""insufficient_quota""#,
            ),
            QuotaExhausted,
        ),
        (
            429,
            openai(
                "You exceeded your current quota",
                "insufficient_quota",
                "null",
            ),
            QuotaExhausted,
        ),
        (
            429,
            openai(
                "You exceeded your current quota",
                "tokens",
                r#""insufficient_quota""#,
            ),
            QuotaExhausted,
        ),
        (
            400,
            openai(
                "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
                "invalid_request_error",
                r#""context_length_exceeded""#,
            ),
            ContextLength,
        ),
        (
            400,
            openai(
                "This model's maximum context length is 8192 tokens.",
                "invalid_request_error",
                "null",
            ),
            ContextLength,
        ),
        (
            401,
            openai(
                "Incorrect API key provided: sk-abc.",
                "invalid_request_error",
                r#""invalid_api_key""#,
            ),
            Authentication,
        ),
        (
            401,
            openai(
                "You didn't provide an API key.",
                "invalid_request_error",
                "null",
            ),
            Authentication,
        ),
        (
            404,
            openai(
                "The model `gpt-9` does not exist",
                "invalid_request_error",
                r#""model_not_found""#,
            ),
            NotFound,
        ),
        (
            400,
            openai(
                "Invalid value for 'temperature'",
                "invalid_request_error",
                "null",
            ),
            InvalidRequest,
        ),
        (
            500,
            openai(
                "The server had an error while processing your request.",
                "server_error",
                "null",
            ),
            Server,
        ),
        (
            503,
            openai(
                "The engine is currently overloaded, please try again later.",
                "server_error",
                "null",
            ),
            Overloaded,
        ),
        (
            403,
            openai(
                "Country, region, or territory not supported",
                "request_forbidden",
                r#""unsupported_country_region_territory""#,
            ),
            Permission,
        ),
    ];
    for (status, body, want) in cases {
        let class = classify_error(
            StatusCode::from_u16(status).expect("status"),
            body.as_bytes(),
        );
        assert_eq!(class.kind, want, "{status} {body}");
        assert_eq!(class.api, Some(Api::OpenAiChat), "{body}");
    }
    let class = classify_error(
        StatusCode::TOO_MANY_REQUESTS,
        openai("x", "tokens", r#""rate_limit_exceeded""#).as_bytes(),
    );
    assert_eq!(class.error_type, Some(Label::new("tokens")));
    assert_eq!(class.code, Some(Label::new("rate_limit_exceeded")));
    assert!(class.kind.is_retryable_by_default());
}

#[test]
fn sse_error_event_inside_200() {
    let data = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let class = classify_error(StatusCode::OK, data.as_bytes());
    assert_eq!(class.kind, ErrorKind::Overloaded);
    assert_eq!(class.api, Some(Api::AnthropicMessages));
    let data = r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#;
    assert_eq!(
        kind(200, data),
        ErrorKind::Other,
        "server_error is not an Anthropic type; a 200 says nothing"
    );
    let data = r#"{"type":"error","error":{"type":"api_error","message":"Internal"}}"#;
    assert_eq!(kind(200, data), ErrorKind::Server);
    // A normal 200 payload is not an error.
    let ok = r#"{"id":"msg_1","type":"message","role":"assistant","content":[]}"#;
    let class = classify_error(StatusCode::OK, ok.as_bytes());
    assert_eq!((class.kind, class.api), (ErrorKind::Other, None));
}

#[test]
fn escaped_strings_are_read() {
    let body = r#"{"type":"error","error":{"type":"rate_limit_\u0065rror","message":"a \"quoted\" message"}}"#;
    assert_eq!(kind(200, body), ErrorKind::RateLimited);
}

#[test]
fn status_alone_for_unparseable_bodies() {
    use ErrorKind::*;
    let cases: &[(u16, &[u8], ErrorKind)] = &[
        (429, b"", RateLimited),
        (529, b"<html>overloaded</html>", Overloaded),
        (502, b"Bad Gateway", Server),
        (503, b"\xff\xfe\x00", Overloaded),
        (500, b"{\"type\":\"error\",\"error\":", Server),
        (400, b"[]", InvalidRequest),
        (401, b"null", Authentication),
        (403, b"{\"error\":\"forbidden\"}", Permission),
        (404, b"{\"error\":42}", NotFound),
        (413, b"{}", RequestTooLarge),
        (422, b"\"x\"", InvalidRequest),
        (408, b"timeout", Other),
        (409, b"", Other),
        (200, b"", Other),
        (418, b"{\"error\":{}}", Other),
    ];
    for (status, body, want) in cases {
        let class = classify_error(StatusCode::from_u16(*status).expect("status"), body);
        assert_eq!(
            class.kind,
            *want,
            "{status} {:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(class.error_type, None);
    }
}

#[test]
fn huge_bodies_are_not_parsed() {
    let message = "x".repeat(MAX_ERROR_BODY);
    let body = anthropic("overloaded_error", &message);
    assert!(body.len() > MAX_ERROR_BODY);
    let class = classify_error(StatusCode::OK, body.as_bytes());
    assert_eq!((class.kind, class.api), (ErrorKind::Other, None));
    // Just under the cap is parsed.
    let message = "x".repeat(MAX_ERROR_BODY - 200);
    let body = anthropic("overloaded_error", &message);
    assert!(body.len() <= MAX_ERROR_BODY);
    assert_eq!(kind(200, &body), ErrorKind::Overloaded);
}

#[test]
fn deep_nesting_does_not_overflow() {
    let body = format!(
        r#"{{"error":{{"param":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(
        kind(429, &body[..body.len().min(MAX_ERROR_BODY)]),
        ErrorKind::RateLimited
    );
    let body = format!(
        r#"{{"error":{{"param":{}1{}}}}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    assert_eq!(kind(429, &body), ErrorKind::RateLimited);
}

#[test]
fn labels_are_bounded() {
    let long = "e".repeat(10_000);
    let body = openai("m", &long, &format!("\"{long}\""));
    let class = classify_error(StatusCode::BAD_REQUEST, body.as_bytes());
    assert_eq!(
        class.error_type.map(|l| l.as_str().len()),
        Some(Label::CAPACITY)
    );
    assert_eq!(class.code.map(|l| l.as_str().len()), Some(Label::CAPACITY));
}

#[test]
fn sse_framing_is_accepted() {
    let data = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    for framed in [
        format!("event: error\ndata: {data}\n\n"),
        format!("event: error\r\ndata: {data}\r\n\r\n"),
        format!("data: {data}"),
        format!("data:{data}\n"),
    ] {
        assert_eq!(kind(200, &framed), ErrorKind::Overloaded, "{framed:?}");
    }
    assert_eq!(kind(200, "event: error"), ErrorKind::Other);
    assert_eq!(kind(200, "event: error\nid: 1\ndata: {}"), ErrorKind::Other);
    assert_eq!(kind(529, "data: not json"), ErrorKind::Overloaded);
}

#[test]
fn retry_hint_from_message() {
    let cases = [
        (
            "Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000. Please try again in 1.574s. Visit https://x",
            Some(Duration::from_millis(1_574)),
        ),
        ("Please try again in 20ms.", Some(Duration::from_millis(20))),
        ("Please try again in 6m0s", Some(Duration::from_secs(360))),
        ("Please TRY AGAIN IN 2s.", Some(Duration::from_secs(2))),
        ("Please try again in 0s.", None),
        ("Please try again in 48h.", None),
        ("Please try again in a moment.", None),
        ("Please try again later.", None),
        ("try again in ", None),
    ];
    for (message, want) in cases {
        let body = serde_json::json!({"error":{"message":message,"type":"tokens","param":null,"code":"rate_limit_exceeded"}}).to_string();
        let class = classify_error(StatusCode::TOO_MANY_REQUESTS, body.as_bytes());
        assert_eq!(class.retry_after_hint, want, "{message}");
    }
    let class = classify_error(StatusCode::TOO_MANY_REQUESTS, b"Please try again in 2s.");
    assert_eq!(
        class.retry_after_hint, None,
        "only read from a parsed error message"
    );
}

#[test]
fn retryable_by_default() {
    use ErrorKind::*;
    for k in [RateLimited, Overloaded, Server] {
        assert!(k.is_retryable_by_default(), "{k:?}");
    }
    for k in [
        QuotaExhausted,
        ContextLength,
        InvalidRequest,
        Authentication,
        Permission,
        NotFound,
        RequestTooLarge,
        Other,
    ] {
        assert!(!k.is_retryable_by_default(), "{k:?}");
    }
}
