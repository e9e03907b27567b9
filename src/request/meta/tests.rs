use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Request};

use super::*;
use crate::provider::Api;
use crate::request::ReplayBody;

fn anthropic(body: &str) -> RequestMeta {
    let mut h = HeaderMap::new();
    h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    RequestMeta::parse("/v1/messages", &h, body.as_bytes())
}

#[test]
fn parses_anthropic_messages() {
    let m = anthropic(
        r#"{"model":"claude-sonnet-4-5","max_tokens":512,"stream":true,"temperature":0.0,
                "system":"You are terse.","metadata":{"user_id":"u1"},
                "messages":[{"role":"user","content":"Hello there"},
                            {"role":"assistant","content":[{"type":"text","text":"Hi!"}]}]}"#,
    );
    assert!(m.is_parsed());
    assert_eq!(m.api(), Some(Api::AnthropicMessages));
    assert_eq!(m.model(), Some("claude-sonnet-4-5"));
    assert_eq!(m.max_tokens(), Some(512));
    assert!(m.is_stream());
    assert_eq!(m.temperature(), Some(0.0));
    assert_eq!(m.message_count(), 2);
    // text: "You are terse." (14) + "Hello there" (11) + "Hi!" (3) = 28 bytes
    // -> ceil(28 / 3.5) = 8, plus 4 per message.
    assert_eq!(m.input_tokens(), 8 + 8);
    assert_eq!(
        m.anthropic_version().map(|v| v.as_bytes()),
        Some(&b"2023-06-01"[..])
    );
}

#[test]
fn parses_openai_chat() {
    let h = HeaderMap::new();
    let m = RequestMeta::parse(
        "/v1/chat/completions",
        &h,
        br#"{"model":"gpt-4o-mini","max_completion_tokens":64,"stream":true,
                 "stream_options":{"include_usage":true},
                 "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(m.api(), Some(Api::OpenAiChat));
    assert_eq!(m.model(), Some("gpt-4o-mini"));
    assert_eq!(m.max_tokens(), Some(64));
    assert!(m.is_stream() && m.include_usage());
    assert_eq!(m.input_tokens(), (10u64 * 2).div_ceil(7) + 8);
}

#[test]
fn tool_schema_keys_count_as_text() {
    let without = anthropic(r#"{"model":"m","max_tokens":1,"messages":[]}"#);
    let with = anthropic(
        r#"{"model":"m","max_tokens":1,"messages":[],
                "tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"location":{"type":"string"}}}}]}"#,
    );
    assert_eq!(without.input_tokens(), 0);
    assert!(with.input_tokens() > 10, "{:?}", with);
}

#[test]
fn estimate_grows_with_text_and_never_overflows() {
    let small = anthropic(&format!(
        r#"{{"model":"m","max_tokens":1,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(350)
    ));
    assert_eq!(small.input_tokens(), 100 + 4);
    assert!(estimate_tokens(u64::MAX, u32::MAX) > u64::MAX / 4);
    assert_eq!(estimate_tokens(7, 0), 2);
    assert_eq!(estimate_tokens(8, 0), 3);
}

#[test]
fn non_json_and_malformed_pass_through() {
    let h = HeaderMap::new();
    for body in [
        &b""[..],
        b"hello",
        b"[1,2,3]",
        b"{\"model\":",
        b"{\"model\": 5}",
        b"{\"max_tokens\": -1}",
        b"\xff\xfe{",
    ] {
        let m = RequestMeta::parse("/v1/messages", &h, body);
        assert!(!m.is_parsed(), "{body:?}");
        assert_eq!(m.model(), None);
        assert_eq!(m.input_tokens(), 0);
        assert_eq!(m.api(), Some(Api::AnthropicMessages));
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep = format!(
        r#"{{"model":"m","messages":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let m = RequestMeta::parse("/v1/messages", &HeaderMap::new(), deep.as_bytes());
    assert!(!m.is_parsed());
}

#[test]
fn api_detection() {
    let api = |path, h: &HeaderMap| RequestMeta::parse(path, h, b"{}").api();
    let h = HeaderMap::new();
    assert_eq!(api("/v1/responses", &h), Some(Api::OpenAiChat));
    assert_eq!(api("/proxy/v1/messages/", &h), Some(Api::AnthropicMessages));
    assert_eq!(api("/other", &h), None);
    let mut h2 = HeaderMap::new();
    h2.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    assert_eq!(api("/gateway", &h2), Some(Api::AnthropicMessages));
    // Other headers alone say nothing.
    let mut h3 = HeaderMap::new();
    h3.insert("anthropic-beta", HeaderValue::from_static("x"));
    assert_eq!(api("/gateway", &h3), None);
    assert_eq!(
        RequestMeta::parse("/gateway", &h3, b"{}").anthropic_beta(),
        h3.get("anthropic-beta")
    );
}

#[test]
fn for_request_parses_replay_bodies_only() {
    let mut req = Request::post("/v1/messages")
        .body(ReplayBody::from(r#"{"model":"m","max_tokens":3}"#))
        .expect("req");
    let meta = RequestMeta::for_request(&mut req).expect("parsed");
    assert_eq!(meta.max_tokens(), Some(3));
    assert!(Arc::ptr_eq(&meta, RequestMeta::of(&req).expect("stored")));
    let mut other = Request::post("/v1/messages")
        .body(String::from(r#"{"model":"m"}"#))
        .expect("req");
    assert!(RequestMeta::for_request(&mut other).is_none());
}

/// An earlier value of another type is overwritten by the last one, as the
/// providers read it — found by `charged_tokens_are_never_below_what_the_provider_counts`:
/// a first `model` that is an array made the whole body unreadable.
#[test]
fn an_overwritten_value_of_another_type_is_no_error() {
    let m = anthropic(
        r#"{"model":[{"role":"user","content":"Hi"}],"max_tokens":"many","stream":1,
            "stream_options":{"include_usage":"yes","include_usage":true},
            "max_tokens":4097,"model":"claude-sonnet-4-5","stream":true}"#,
    );
    assert!(m.is_parsed());
    assert_eq!(m.model(), Some("claude-sonnet-4-5"));
    assert_eq!(m.max_tokens(), Some(4097));
    assert!(m.is_stream() && m.include_usage());
    // The last value still decides: a last `model` of the wrong type is not read.
    assert!(!anthropic(r#"{"model":"a","max_tokens":1,"model":[1]}"#).is_parsed());
}
