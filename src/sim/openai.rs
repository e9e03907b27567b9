//! The OpenAI Chat Completions dialect: validation, JSON shapes, headers, SSE.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::bucket::{Dimension, RateSnapshot};
use super::handler::{Chunk, Generation, Parsed, SimError, StreamEnd, put};
use super::tokens::count_input_tokens;
use super::wire::format_go_duration;

const ORG: &str = "org-sim";
const LIMITS_URL: &str = "Visit https://platform.openai.com/account/rate-limits to learn more.";

fn invalid_type(param: &str, expected: &str) -> SimError {
    SimError::Invalid {
        message: format!("Invalid type for '{param}': expected {expected}."),
        param: Some(param.to_owned()),
        code: Some("invalid_type"),
    }
}

/// Validates a Chat Completions request body.
pub(crate) fn parse(v: &Value, default_max_tokens: u64) -> Result<Parsed, SimError> {
    let Some(obj) = v.as_object() else {
        return Err(SimError::invalid("The request body must be a JSON object."));
    };
    let model = match obj.get("model") {
        None | Some(Value::Null) => {
            return Err(SimError::invalid("you must provide a model parameter"));
        }
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(invalid_type("model", "a string")),
    };
    let messages = match obj.get("messages") {
        None | Some(Value::Null) => {
            return Err(SimError::Invalid {
                message: "Missing required parameter: 'messages'.".to_owned(),
                param: Some("messages".to_owned()),
                code: Some("missing_required_parameter"),
            });
        }
        Some(Value::Array(m)) => m,
        Some(_) => return Err(invalid_type("messages", "an array")),
    };
    if messages.is_empty() {
        return Err(SimError::Invalid {
            message: "Invalid 'messages': empty array. Expected an array with minimum length 1, \
                      but got an empty array instead."
                .to_owned(),
            param: Some("messages".to_owned()),
            code: Some("empty_array"),
        });
    }
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !matches!(
            role,
            Some("system" | "developer" | "user" | "assistant" | "tool" | "function")
        ) {
            return Err(SimError::Invalid {
                message: format!("Invalid value for 'messages[{i}].role'."),
                param: Some(format!("messages[{i}].role")),
                code: Some("invalid_value"),
            });
        }
        if let Some(c) = m.get("content")
            && !matches!(c, Value::String(_) | Value::Array(_) | Value::Null)
        {
            return Err(invalid_type(
                &format!("messages[{i}].content"),
                "a string or array",
            ));
        }
    }
    let mut max_tokens = default_max_tokens;
    for name in ["max_tokens", "max_completion_tokens"] {
        match obj.get(name) {
            None | Some(Value::Null) => {}
            Some(t) => match t.as_u64() {
                Some(n) if n >= 1 => max_tokens = n,
                Some(_) => {
                    return Err(SimError::Invalid {
                        message: format!(
                            "Invalid '{name}': integer below minimum value. Expected a value >= \
                             1, but got 0 instead."
                        ),
                        param: Some(name.to_owned()),
                        code: Some("integer_below_min_value"),
                    });
                }
                None => return Err(invalid_type(name, "an integer")),
            },
        }
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid_type("stream", "a boolean")),
    };
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid_type("stream_options.include_usage", "a boolean")),
        },
        Some(_) => return Err(invalid_type("stream_options", "an object")),
    };
    Ok(Parsed {
        model,
        max_tokens,
        stream,
        include_usage,
        input_tokens: count_input_tokens(v),
    })
}

fn per_min(d: Dimension) -> &'static str {
    match d {
        Dimension::Requests => "requests per min (RPM)",
        Dimension::InputTokens | Dimension::OutputTokens => "tokens per min (TPM)",
    }
}

fn kind(d: Dimension) -> &'static str {
    match d {
        Dimension::Requests => "requests",
        Dimension::InputTokens | Dimension::OutputTokens => "tokens",
    }
}

/// Status and body of an error.
pub(crate) fn error(err: &SimError) -> (StatusCode, Value) {
    let mut param = None;
    let (status, ty, code, message): (_, &str, Option<&str>, String) = match err {
        SimError::MissingKey => (
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "You didn't provide an API key. You need to provide your API key in an Authorization \
             header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password \
             field (with blank username) if you're accessing the API from your browser and are \
             prompted for a username and password. You can obtain an API key from \
             https://platform.openai.com/account/api-keys."
                .to_owned(),
        ),
        SimError::InvalidKey => (
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided. You can find your API key at \
             https://platform.openai.com/account/api-keys."
                .to_owned(),
        ),
        SimError::Invalid {
            message,
            param: p,
            code,
        } => {
            param.clone_from(p);
            (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                *code,
                message.clone(),
            )
        }
        SimError::BodyTooLarge { limit } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!("Request exceeds the maximum allowed number of bytes ({limit})."),
        ),
        SimError::RateLimited {
            model,
            dimension,
            limit,
            used,
            requested,
            wait,
        } => (
            StatusCode::TOO_MANY_REQUESTS,
            kind(*dimension),
            Some("rate_limit_exceeded"),
            format!(
                "Rate limit reached for {model} in organization {ORG} on {}: Limit {limit}, Used \
                 {used}, Requested {requested}. Please try again in {}. {LIMITS_URL}",
                per_min(*dimension),
                format_go_duration(*wait)
            ),
        ),
        SimError::TooLargeForLimit {
            model,
            dimension,
            limit,
            requested,
        } => (
            StatusCode::TOO_MANY_REQUESTS,
            kind(*dimension),
            Some("rate_limit_exceeded"),
            format!(
                "Request too large for {model} in organization {ORG} on {}: Limit {limit}, \
                 Requested {requested}. The input or output tokens must be reduced in order to \
                 run successfully. {LIMITS_URL}",
                per_min(*dimension)
            ),
        ),
        SimError::Overloaded => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            None,
            "The server is overloaded or not ready yet.".to_owned(),
        ),
        SimError::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!".to_owned(),
        ),
        SimError::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            None,
            "Service Unavailable".to_owned(),
        ),
        SimError::NotFound => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            "Invalid URL".to_owned(),
        ),
        SimError::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            None,
            "Method Not Allowed".to_owned(),
        ),
    };
    let body = json!({
        "error": {"message": message, "type": ty, "param": param, "code": code},
    });
    (status, body)
}

/// `x-ratelimit-*` headers. OpenAI has a single token limit: the simulator
/// reports input + output buckets combined (limit and remaining summed, reset
/// the later of the two).
pub(crate) fn rate_headers(h: &mut HeaderMap, s: &RateSnapshot) {
    put(h, "x-ratelimit-limit-requests", s.requests.limit);
    put(h, "x-ratelimit-remaining-requests", s.requests.remaining);
    put(
        h,
        "x-ratelimit-reset-requests",
        format_go_duration(s.requests.until_full),
    );
    put(
        h,
        "x-ratelimit-limit-tokens",
        s.input.limit + s.output.limit,
    );
    put(
        h,
        "x-ratelimit-remaining-tokens",
        s.input.remaining + s.output.remaining,
    );
    put(
        h,
        "x-ratelimit-reset-tokens",
        format_go_duration(s.input.until_full.max(s.output.until_full)),
    );
}

fn finish_reason(g: &Generation) -> &'static str {
    if g.capped { "length" } else { "stop" }
}

fn usage(g: &Generation, output: u64) -> Value {
    json!({
        "prompt_tokens": g.input_tokens,
        "completion_tokens": output,
        "total_tokens": g.input_tokens + output,
        "prompt_tokens_details": {"cached_tokens": 0},
    })
}

/// The non-streaming response body.
pub(crate) fn completion(g: &Generation) -> Value {
    json!({
        "id": g.id,
        "object": "chat.completion",
        "created": g.created,
        "model": g.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": g.text(), "refusal": null},
            "logprobs": null,
            "finish_reason": finish_reason(g),
        }],
        "usage": usage(g, g.output_tokens()),
        "system_fingerprint": null,
    })
}

fn data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn chunk(g: &Generation, delta: &Value, finish: Option<&str>) -> Value {
    let mut c = json!({
        "id": g.id,
        "object": "chat.completion.chunk",
        "created": g.created,
        "model": g.model,
        "system_fingerprint": null,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    if g.include_usage
        && let Some(o) = c.as_object_mut()
    {
        o.insert("usage".to_owned(), Value::Null);
    }
    c
}

/// The `data:` chunk sequence of a streaming response.
pub(crate) fn stream(g: &Generation, end: StreamEnd) -> Vec<Chunk> {
    let mut out = Vec::with_capacity(g.words.len() + 4);
    let mut push = |bytes, tokens, paced| {
        out.push(Chunk {
            bytes,
            tokens,
            paced,
        })
    };
    let first = chunk(
        g,
        &json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    );
    push(data(&first), 0, false);
    let cut = match end {
        StreamEnd::Complete => g.words.len(),
        StreamEnd::ErrorAfter(k) | StreamEnd::TruncateAfter(k) => k.min(g.words.len()),
    };
    for i in 0..cut {
        let c = chunk(g, &json!({"content": g.delta(i)}), None);
        push(data(&c), i as u64 + 1, true);
    }
    let sent = cut as u64;
    match end {
        StreamEnd::ErrorAfter(_) => {
            let err = json!({"error": {
                "message": "The server is overloaded or not ready yet.",
                "type": "server_error", "param": null, "code": null,
            }});
            push(data(&err), sent, false);
        }
        StreamEnd::TruncateAfter(_) => {}
        StreamEnd::Complete => {
            push(
                data(&chunk(g, &json!({}), Some(finish_reason(g)))),
                sent,
                false,
            );
            if g.include_usage {
                let u = json!({
                    "id": g.id,
                    "object": "chat.completion.chunk",
                    "created": g.created,
                    "model": g.model,
                    "system_fingerprint": null,
                    "choices": [],
                    "usage": usage(g, g.output_tokens()),
                });
                push(data(&u), sent, false);
            }
            push(Bytes::from_static(b"data: [DONE]\n\n"), sent, false);
        }
    }
    out
}
