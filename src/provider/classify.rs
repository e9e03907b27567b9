//! Error classification: what an error response (or an SSE `error` event)
//! means for retrying and falling back.

use std::borrow::Cow;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Api;
use super::label::Label;
use super::retry::MAX_RETRY_AFTER;
use super::{anthropic, openai, parse};

/// The largest body [`classify_error`] parses: 64 KiB.
///
/// Real error bodies are a few hundred bytes. A larger body is not parsed at
/// all and is classified by status alone, so a hostile or runaway body costs
/// nothing more than a length check.
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// What an error means, independent of provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A rate limit was hit (429 `rate_limit_error` / `rate_limit_exceeded`);
    /// waiting helps.
    RateLimited,
    /// The provider is overloaded (529 `overloaded_error`, 503); waiting or
    /// another model helps.
    Overloaded,
    /// A billing stop: OpenAI `insufficient_quota`, Anthropic's monthly spend
    /// cap (`enforced_spend_limit_reached`). Arrives as a 429 but must **not**
    /// be retried: nothing changes until a human acts.
    QuotaExhausted,
    /// The prompt does not fit the model's context window; only a model with
    /// a larger window (or a shorter prompt) helps.
    ContextLength,
    /// The request is malformed (400 `invalid_request_error`).
    InvalidRequest,
    /// The API key is missing or invalid (401).
    Authentication,
    /// The key may not use this resource (403).
    Permission,
    /// Unknown model or endpoint (404).
    NotFound,
    /// The request body is too large (413).
    RequestTooLarge,
    /// A provider-side failure (500 `api_error`, other 5xx).
    Server,
    /// Anything else, including a payload that is not an error at all.
    Other,
}

impl ErrorKind {
    /// Whether a retry of the *same* request may succeed, ignoring any
    /// `x-should-retry` header: `true` for [`RateLimited`](Self::RateLimited),
    /// [`Overloaded`](Self::Overloaded) and [`Server`](Self::Server).
    ///
    /// Notably `false` for [`QuotaExhausted`](Self::QuotaExhausted) even
    /// though it arrives as HTTP 429. A retry policy also considers the
    /// status (the official SDKs retry 408 and 409, classified here as
    /// [`Other`](Self::Other)) and `x-should-retry`.
    pub fn is_retryable_by_default(self) -> bool {
        matches!(self, Self::RateLimited | Self::Overloaded | Self::Server)
    }
}

/// The classification of one error response or error event.
///
/// Holds no part of the body beyond two bounded [`Label`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorClass {
    /// What the error means.
    pub kind: ErrorKind,
    /// Whose error shape the body had: Anthropic's (`"type":"error"` at the
    /// top level) or OpenAI's (an `error` object without it). `None` if the
    /// body was not a recognised error shape.
    pub api: Option<Api>,
    /// `error.type` as sent (`rate_limit_error`, `insufficient_quota`, …).
    pub error_type: Option<Label>,
    /// OpenAI's `error.code` (`rate_limit_exceeded`, …) or Anthropic's
    /// `error.details.error_code` (`enforced_spend_limit_reached`).
    pub code: Option<Label>,
    /// A wait stated in the error message, as OpenAI writes it in 429s
    /// ("Please try again in 1.574s."; Go-duration syntax after
    /// "try again in"), positive and at most
    /// [`MAX_RETRY_AFTER`](super::MAX_RETRY_AFTER). Headers
    /// ([`retry_after`](super::retry_after)) are the better source; this is a
    /// fallback for responses whose headers were lost (e.g. an SSE error).
    pub retry_after_hint: Option<Duration>,
}

/// The wait in "… try again in 1.574s." of a message.
fn message_retry_hint(message: &str) -> Option<Duration> {
    const NEEDLE: &str = "try again in ";
    let start = message
        .as_bytes()
        .windows(NEEDLE.len())
        .position(|w| w.eq_ignore_ascii_case(NEEDLE.as_bytes()))?
        + NEEDLE.len();
    let rest = message.get(start..)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '\u{b5}' || c == '\u{3bc}'))
        .unwrap_or(rest.len());
    let text = rest.get(..end)?.trim_end_matches('.');
    parse::go_duration(text).filter(|d| !d.is_zero() && *d <= MAX_RETRY_AFTER)
}

/// The `data` of an SSE event if `body` is a whole event
/// (`event: error\ndata: {…}`) or a `data:` line; else `body` unchanged.
fn sse_data(body: &[u8]) -> &[u8] {
    let mut rest = body;
    if rest.starts_with(b"event:") {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return body;
        };
        rest = rest.get(nl + 1..).unwrap_or_default();
    }
    let Some(data) = rest.strip_prefix(b"data:") else {
        return body;
    };
    let data = data.strip_prefix(b" ").unwrap_or(data);
    let end = data
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(data.len());
    data.get(..end).unwrap_or_default()
}

impl ErrorClass {
    /// A classification with only a kind, for custom classifiers and tests.
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            api: None,
            error_type: None,
            code: None,
            retry_after_hint: None,
        }
    }
}

/// A string field that tolerates any JSON type (non-strings are ignored), so
/// one odd field never spoils the parse.
#[derive(Deserialize)]
#[serde(untagged)]
enum Text<'a> {
    Str(#[serde(borrow)] Cow<'a, str>),
    Other(#[allow(dead_code)] IgnoredAny),
}

impl Text<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Text::Str(s) => Some(s),
            Text::Other(_) => None,
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    error: Option<ErrorField<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField<'a> {
    Object(#[serde(borrow)] ErrorBody<'a>),
    Other(#[allow(dead_code)] IgnoredAny),
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    message: Option<Text<'a>>,
    #[serde(borrow)]
    code: Option<Text<'a>>,
    #[serde(borrow)]
    details: Option<DetailsField<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DetailsField<'a> {
    Object {
        #[serde(borrow)]
        error_code: Option<Text<'a>>,
    },
    Other(#[allow(dead_code)] IgnoredAny),
}

/// The needed fields of a recognised error body.
struct Parsed<'a> {
    api: Api,
    error_type: Option<&'a str>,
    message: Option<&'a str>,
    code: Option<&'a str>,
}

fn text<'t>(t: &'t Option<Text<'_>>) -> Option<&'t str> {
    t.as_ref().and_then(Text::as_str)
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Whether an `invalid_request_error` message says the prompt does not fit
/// the context window (Anthropic: "prompt is too long: 210000 tokens > 200000
/// maximum", "input length and `max_tokens` exceed context limit"; OpenAI:
/// "This model's maximum context length is 8192 tokens").
fn says_context_length(message: &str) -> bool {
    [
        "prompt is too long",
        "context limit",
        "context length",
        "context window",
    ]
    .iter()
    .any(|needle| contains_ignore_case(message, needle))
}

fn status_kind(status: StatusCode) -> Option<ErrorKind> {
    Some(match status.as_u16() {
        400 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        403 => ErrorKind::Permission,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::RequestTooLarge,
        429 => ErrorKind::RateLimited,
        503 | 529 => ErrorKind::Overloaded,
        500..=599 => ErrorKind::Server,
        _ => return None,
    })
}

/// Classifies an error response from its status and body.
///
/// Understands Anthropic's shape
/// (`{"type":"error","error":{"type":"rate_limit_error","message":"…"}}`) and
/// OpenAI's (`{"error":{"message":"…","type":"…","param":null,"code":"…"}}`).
/// In order:
///
/// 1. Codes that decide by themselves: `insufficient_quota` (as `code` or
///    `type`) and Anthropic's `error.details.error_code`
///    `enforced_spend_limit_reached` → [`ErrorKind::QuotaExhausted`];
///    `context_length_exceeded` → [`ErrorKind::ContextLength`];
///    `invalid_api_key` → [`ErrorKind::Authentication`];
///    `rate_limit_exceeded` → [`ErrorKind::RateLimited`];
///    `model_not_found` → [`ErrorKind::NotFound`].
/// 2. An `invalid_request_error` whose message says the credit balance is
///    too low (Anthropic's prepaid-credit stop) → [`ErrorKind::QuotaExhausted`];
///    one whose message says the prompt is too long
///    → [`ErrorKind::ContextLength`].
/// 3. Anthropic's distinctive `error.type`s (`rate_limit_error`,
///    `overloaded_error`, `api_error`, `authentication_error`,
///    `permission_error`, `not_found_error`, `request_too_large`).
/// 4. The status: 400/422, 401, 403, 404, 413, 429, 503/529 (overloaded),
///    other 5xx (server).
/// 5. A remaining `invalid_request_error` → [`ErrorKind::InvalidRequest`];
///    else [`ErrorKind::Other`].
///
/// **Errors inside a 200.** A stream can fail after `200 OK`: Anthropic
/// sends `event: error` with `data: {"type":"error","error":{"type":"overloaded_error",…}}`.
/// Pass `StatusCode::OK` and the event's `data` bytes; the body alone then
/// decides. For convenience a whole event (`event: error\ndata: {…}`) or a
/// `data: {…}` line is also accepted: the first `data` line is used. A 200 payload that is not an error
/// gives [`ErrorKind::Other`] with `api: None`.
///
/// Bodies that are not JSON, not one of the shapes, or longer than
/// [`MAX_ERROR_BODY`] are classified by status alone. Only the needed fields
/// are read, borrowing from `body`; the result keeps nothing but two bounded
/// labels. Never panics.
///
/// # Examples
///
/// ```
/// use http::StatusCode;
/// use tower_llm_resilience::provider::{classify_error, Api, ErrorKind};
///
/// let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
/// let class = classify_error(StatusCode::TOO_MANY_REQUESTS, body);
/// assert_eq!(class.kind, ErrorKind::QuotaExhausted);
/// assert!(!class.kind.is_retryable_by_default());
/// assert_eq!(class.api, Some(Api::OpenAiChat));
///
/// // An error event inside a 200 stream.
/// let data = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
/// assert_eq!(classify_error(StatusCode::OK, data).kind, ErrorKind::Overloaded);
///
/// // Not JSON: the status decides.
/// assert_eq!(classify_error(StatusCode::BAD_GATEWAY, b"<html>").kind, ErrorKind::Server);
/// ```
pub fn classify_error(status: StatusCode, body: &[u8]) -> ErrorClass {
    let body = sse_data(body);
    let envelope = if body.len() <= MAX_ERROR_BODY {
        serde_json::from_slice::<Envelope<'_>>(body).ok()
    } else {
        None
    };
    let mut details_code = None;
    let parsed = envelope.as_ref().and_then(|env| match &env.error {
        Some(ErrorField::Object(err)) => {
            if let Some(DetailsField::Object { error_code }) = &err.details {
                details_code = text(error_code);
            }
            Some(Parsed {
                api: if text(&env.kind) == Some("error") {
                    Api::AnthropicMessages
                } else {
                    Api::OpenAiChat
                },
                error_type: text(&err.kind),
                message: text(&err.message),
                code: text(&err.code).or(details_code),
            })
        }
        _ => None,
    });

    let Some(p) = parsed else {
        return ErrorClass {
            kind: status_kind(status).unwrap_or(ErrorKind::Other),
            api: None,
            error_type: None,
            code: None,
            retry_after_hint: None,
        };
    };

    let kind = (|| {
        if details_code == Some(anthropic::SPEND_LIMIT) {
            return ErrorKind::QuotaExhausted;
        }
        if let Some(kind) = p.code.and_then(openai::kind_for_code) {
            return kind;
        }
        if p.error_type == Some("insufficient_quota") {
            return ErrorKind::QuotaExhausted;
        }
        let invalid_request = p.error_type == Some("invalid_request_error");
        // Anthropic's prepaid-credit stop is a 400 invalid_request_error.
        if invalid_request
            && p.message
                .is_some_and(|m| contains_ignore_case(m, "credit balance is too low"))
        {
            return ErrorKind::QuotaExhausted;
        }
        if invalid_request && p.message.is_some_and(says_context_length) {
            return ErrorKind::ContextLength;
        }
        if let Some(kind) = p.error_type.and_then(anthropic::kind_for_type) {
            return kind;
        }
        if let Some(kind) = status_kind(status) {
            return kind;
        }
        if invalid_request {
            return ErrorKind::InvalidRequest;
        }
        ErrorKind::Other
    })();

    ErrorClass {
        kind,
        api: Some(p.api),
        error_type: p.error_type.map(Label::new),
        code: p.code.map(Label::new),
        retry_after_hint: p.message.and_then(message_retry_hint),
    }
}

#[cfg(test)]
mod tests {
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
}
