//! "Claude exhausted → OpenAI model": mapping an Anthropic Messages request
//! to OpenAI Chat Completions, and the response back.
//!
//! Covers text + system requests without tools (a request with tools,
//! images or documents is not mapped: the target is skipped). A streaming
//! request is sent to OpenAI without streaming and answered as an
//! Anthropic SSE stream synthesized from the complete response — the
//! events are exactly Anthropic's, only not incremental.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use super::chain::{ResponseMapper, reparse};
use crate::error::BoxError;
use crate::request::{ReplayBody, RequestMeta};
use crate::response::{Format, ResponseBody};

/// The largest OpenAI response body read to map it back.
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// Maps an Anthropic Messages request to an OpenAI Chat Completions request
/// for `model` at `endpoint` (the full URL of `/v1/chat/completions`),
/// authenticated with `api_key` (marked sensitive: never logged).
///
/// # Errors
///
/// When the request is not a mappable Messages request (not JSON, tools,
/// non-text content blocks).
pub fn map_request(
    req: Request<ReplayBody>,
    model: &str,
    endpoint: &Uri,
    api_key: &HeaderValue,
) -> Result<Request<ReplayBody>, BoxError> {
    let body: Map<String, Value> = serde_json::from_slice(req.body().as_bytes())?;
    if body.get("tools").is_some_and(|t| !t.is_null()) {
        return Err("requests with tools are not mapped to OpenAI".into());
    }
    let mut messages = Vec::new();
    if let Some(system) = body.get("system") {
        messages.push(json!({"role": "system", "content": text_of(system)?}));
    }
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("a Messages request needs `messages`")?
    {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or("message without role")?;
        if role != "user" && role != "assistant" {
            return Err(format!("role {role:?} is not mapped").into());
        }
        let content = text_of(m.get("content").ok_or("message without content")?)?;
        messages.push(json!({"role": role, "content": content}));
    }
    let mut out = Map::new();
    out.insert("model".into(), Value::from(model));
    out.insert("messages".into(), Value::Array(messages));
    if let Some(max) = body.get("max_tokens") {
        out.insert("max_completion_tokens".into(), max.clone());
    }
    for field in ["temperature", "top_p"] {
        if let Some(v) = body.get(field) {
            out.insert(field.into(), v.clone());
        }
    }
    if let Some(stop) = body.get("stop_sequences") {
        out.insert("stop".into(), stop.clone());
    }
    let bytes = Bytes::from(serde_json::to_vec(&Value::Object(out))?);

    let (mut parts, _) = req.into_parts();
    parts.uri = endpoint.clone();
    for name in ["x-api-key", "anthropic-version", "anthropic-beta"] {
        parts.headers.remove(name);
    }
    let mut auth = HeaderValue::from_bytes(&[b"Bearer ", api_key.as_bytes()].concat())?;
    auth.set_sensitive(true);
    parts.headers.insert(header::AUTHORIZATION, auth);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let mut req = Request::from_parts(parts, ReplayBody::new(bytes));
    reparse(&mut req);
    Ok(req)
}

/// The text of a string or of an array of text blocks.
fn text_of(v: &Value) -> Result<String, BoxError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for b in blocks {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err("only text content blocks are mapped".into());
                }
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Ok(text)
        }
        _ => Err("content must be a string or text blocks".into()),
    }
}

/// Maps an OpenAI Chat Completions response back to an Anthropic Messages
/// response (JSON, or an SSE stream when the original request streamed).
/// Error responses become Anthropic-shaped errors with the same status.
///
/// # Errors
///
/// When the body cannot be read (over 8 MiB, transport error).
pub async fn map_response(
    res: Response<ResponseBody>,
    original: Arc<RequestMeta>,
) -> Result<Response<ResponseBody>, BoxError> {
    let (mut parts, body) = res.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_RESPONSE)
        .collect()
        .await?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    parts.headers.remove(header::CONTENT_LENGTH);
    if !parts.status.is_success() {
        let message = v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("upstream error");
        let kind = match parts.status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        };
        let err = json!({"type": "error", "error": {"type": kind, "message": message}});
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = ResponseBody::full(serde_json::to_vec(&err)?).with_format(Format::Json);
        return Ok(Response::from_parts(parts, body));
    }
    let text = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or("");
    let stop_reason = match v
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str)
    {
        Some("length") => "max_tokens",
        Some("stop") | None => "end_turn",
        Some(_) => "end_turn",
    };
    let input = v
        .pointer("/usage/prompt_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let output = v
        .pointer("/usage/completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let id = v.get("id").and_then(Value::as_str).unwrap_or("chatcmpl");
    let model = v.get("model").and_then(Value::as_str).unwrap_or("");
    let message_id = format!("msg_{id}");
    if original.is_stream() {
        let start = json!({"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": 1}}});
        let events = [
            ("message_start", start),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": output}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        let mut sse = String::new();
        for (name, data) in events {
            sse.push_str(&format!("event: {name}\ndata: {data}\n\n"));
        }
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        return Ok(Response::from_parts(parts, ResponseBody::full_sse(sse)));
    }
    let message = json!({
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": output,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}});
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.status = StatusCode::OK;
    Ok(Response::from_parts(
        parts,
        ResponseBody::full(serde_json::to_vec(&message)?).with_format(Format::Json),
    ))
}

/// The response mapper of [`Target::openai`](super::Target::openai).
pub(crate) fn response_mapper() -> ResponseMapper {
    Arc::new(|res, original| Box::pin(map_response(res, original)))
}
