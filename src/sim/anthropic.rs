//! The Anthropic Messages API dialect: validation, JSON shapes, headers, SSE.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::bucket::{Dimension, RateSnapshot};
use super::config::SimConfig;
use super::handler::{Chunk, Generation, Parsed, SimError, StreamEnd, put, round_thousand};
use super::tokens::count_input_tokens;
use super::wire::format_rfc3339;

const RATE_LIMIT_DOCS: &str = "For details, refer to: https://docs.claude.com/en/api/rate-limits. \
     You can see the response headers for current usage. Please reduce the prompt length or the \
     maximum tokens requested, or try again later.";

/// Validates a Messages request body.
pub(crate) fn parse(v: &Value) -> Result<Parsed, SimError> {
    let Some(obj) = v.as_object() else {
        return Err(SimError::invalid("Input should be a valid dictionary"));
    };
    let model = match obj.get("model") {
        None => return Err(SimError::invalid("model: Field required")),
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(SimError::invalid("model: Input should be a valid string")),
    };
    let max_tokens = match obj.get("max_tokens") {
        None => return Err(SimError::invalid("max_tokens: Field required")),
        Some(t) => match t.as_u64() {
            Some(n) if n >= 1 => n,
            Some(_) => {
                return Err(SimError::invalid(
                    "max_tokens: Input should be greater than or equal to 1",
                ));
            }
            None => {
                return Err(SimError::invalid(
                    "max_tokens: Input should be a valid integer",
                ));
            }
        },
    };
    let messages = match obj.get("messages") {
        None => return Err(SimError::invalid("messages: Field required")),
        Some(Value::Array(m)) => m,
        Some(_) => return Err(SimError::invalid("messages: Input should be a valid list")),
    };
    if messages.is_empty() {
        return Err(SimError::invalid(
            "messages: at least one message is required",
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            Some(_) => {
                return Err(SimError::invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )));
            }
            None => {
                return Err(SimError::invalid(format!(
                    "messages.{i}.role: Field required"
                )));
            }
        }
        match m.get("content") {
            Some(Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(SimError::invalid(format!(
                    "messages.{i}.content: Input should be a valid string or list"
                )));
            }
            None => {
                return Err(SimError::invalid(format!(
                    "messages.{i}.content: Field required"
                )));
            }
        }
    }
    if let Some(s) = obj.get("system")
        && !matches!(s, Value::String(_) | Value::Array(_))
    {
        return Err(SimError::invalid(
            "system: Input should be a valid string or list",
        ));
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(SimError::invalid("stream: Input should be a valid boolean")),
    };
    if let Some(t) = obj.get("tools")
        && !t.is_array()
    {
        return Err(SimError::invalid("tools: Input should be a valid list"));
    }
    Ok(Parsed {
        model,
        max_tokens,
        stream,
        include_usage: false,
        input_tokens: count_input_tokens(v),
    })
}

/// Status and body of an error.
pub(crate) fn error(err: &SimError, request_id: &str) -> (StatusCode, Value) {
    let (status, kind, message) = match err {
        SimError::MissingKey => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required".to_owned(),
        ),
        SimError::InvalidKey => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key".to_owned(),
        ),
        SimError::Invalid { message, .. } => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            message.clone(),
        ),
        SimError::BodyTooLarge { limit } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("Request exceeds the maximum allowed number of bytes ({limit})."),
        ),
        SimError::RateLimited {
            model,
            dimension,
            limit,
            ..
        } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "This request would exceed your organization's rate limit of {limit} {} per \
                 minute (model: {model}). {RATE_LIMIT_DOCS}",
                unit(*dimension)
            ),
        ),
        SimError::TooLargeForLimit {
            model,
            dimension,
            limit,
            requested,
        } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "This request ({requested} {unit}) can never fit your organization's rate limit \
                 of {limit} {unit} per minute (model: {model}). {RATE_LIMIT_DOCS}",
                unit = unit(*dimension)
            ),
        ),
        SimError::Overloaded => (
            overloaded_status(),
            "overloaded_error",
            "Overloaded".to_owned(),
        ),
        SimError::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "Internal server error".to_owned(),
        ),
        SimError::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "Service unavailable".to_owned(),
        ),
        SimError::NotFound => (
            StatusCode::NOT_FOUND,
            "not_found_error",
            "Not found".to_owned(),
        ),
        SimError::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "Method Not Allowed".to_owned(),
        ),
    };
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id,
    });
    (status, body)
}

fn overloaded_status() -> StatusCode {
    // 529 is a valid status code number (100..=999); the fallback is unreachable.
    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

fn unit(d: Dimension) -> &'static str {
    match d {
        Dimension::Requests => "requests",
        Dimension::InputTokens => "input tokens",
        Dimension::OutputTokens => "output tokens",
    }
}

/// `anthropic-ratelimit-*` headers.
pub(crate) fn rate_headers(h: &mut HeaderMap, s: &RateSnapshot, wall: SystemTime, c: &SimConfig) {
    let millis = c.time_scale != 1.0;
    let round = |n: u64, limit: u64| {
        if c.round_remaining_tokens {
            round_thousand(n, limit)
        } else {
            n
        }
    };
    let reset = |d| format_rfc3339(wall + d, millis);
    put(h, "anthropic-ratelimit-requests-limit", s.requests.limit);
    put(
        h,
        "anthropic-ratelimit-requests-remaining",
        s.requests.remaining,
    );
    put(
        h,
        "anthropic-ratelimit-requests-reset",
        reset(s.requests.until_full),
    );
    let tokens_limit = s.input.limit + s.output.limit;
    put(h, "anthropic-ratelimit-tokens-limit", tokens_limit);
    put(
        h,
        "anthropic-ratelimit-tokens-remaining",
        round(s.input.remaining + s.output.remaining, tokens_limit),
    );
    put(
        h,
        "anthropic-ratelimit-tokens-reset",
        reset(s.input.until_full.max(s.output.until_full)),
    );
    put(h, "anthropic-ratelimit-input-tokens-limit", s.input.limit);
    put(
        h,
        "anthropic-ratelimit-input-tokens-remaining",
        round(s.input.remaining, s.input.limit),
    );
    put(
        h,
        "anthropic-ratelimit-input-tokens-reset",
        reset(s.input.until_full),
    );
    put(h, "anthropic-ratelimit-output-tokens-limit", s.output.limit);
    put(
        h,
        "anthropic-ratelimit-output-tokens-remaining",
        round(s.output.remaining, s.output.limit),
    );
    put(
        h,
        "anthropic-ratelimit-output-tokens-reset",
        reset(s.output.until_full),
    );
}

fn stop_reason(g: &Generation) -> &'static str {
    if g.capped { "max_tokens" } else { "end_turn" }
}

fn usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output,
    })
}

/// The non-streaming response body.
pub(crate) fn message(g: &Generation) -> Value {
    json!({
        "id": g.id,
        "type": "message",
        "role": "assistant",
        "model": g.model,
        "content": [{"type": "text", "text": g.text()}],
        "stop_reason": stop_reason(g),
        "stop_sequence": null,
        "usage": usage(g.input_tokens, g.output_tokens()),
    })
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The SSE event sequence of a streaming response.
pub(crate) fn stream(g: &Generation, end: StreamEnd) -> Vec<Chunk> {
    let mut out = Vec::with_capacity(g.words.len() + 6);
    let mut push = |bytes, tokens, paced| {
        out.push(Chunk {
            bytes,
            tokens,
            paced,
        })
    };
    let start = json!({
        "type": "message_start",
        "message": {
            "id": g.id,
            "type": "message",
            "role": "assistant",
            "model": g.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage(g.input_tokens, 1),
        },
    });
    push(event("message_start", &start), 0, false);
    let block = json!({
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    });
    push(event("content_block_start", &block), 0, false);
    push(event("ping", &json!({"type": "ping"})), 0, false);
    let cut = match end {
        StreamEnd::Complete => g.words.len(),
        StreamEnd::ErrorAfter(k) | StreamEnd::TruncateAfter(k) => k.min(g.words.len()),
    };
    for i in 0..cut {
        let delta = json!({
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": g.delta(i)},
        });
        push(event("content_block_delta", &delta), i as u64 + 1, true);
    }
    let sent = cut as u64;
    match end {
        StreamEnd::ErrorAfter(_) => {
            let err = json!({
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            });
            push(event("error", &err), sent, false);
        }
        StreamEnd::TruncateAfter(_) => {}
        StreamEnd::Complete => {
            push(
                event(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": 0}),
                ),
                sent,
                false,
            );
            let delta = json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(g), "stop_sequence": null},
                "usage": {"output_tokens": g.output_tokens()},
            });
            push(event("message_delta", &delta), sent, false);
            push(
                event("message_stop", &json!({"type": "message_stop"})),
                sent,
                false,
            );
        }
    }
    out
}
