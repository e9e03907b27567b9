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

mod grpc;
pub use grpc::{GrpcCode, GrpcStatus, Pushback, grpc_pushback, is_grpc};

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
mod tests;
