use super::*;

#[test]
fn anthropic_body() {
    let body = br#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5",
            "content":[{"type":"text","text":"hi \"usage\": {}"}],"stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":25,"output_tokens":7,"cache_creation_input_tokens":3,"cache_read_input_tokens":1000}}"#;
    let u = usage_from_json(body).expect("usage");
    assert_eq!(
        u,
        Usage {
            input_tokens: 25,
            output_tokens: 7,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 1000
        }
    );
    assert_eq!(u.rate_limited_input_tokens(), 28);
    assert_eq!(u.total_input_tokens(), 1028);
}

#[test]
fn openai_chat_body_with_cached_details() {
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o",
            "choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,
                     "prompt_tokens_details":{"cached_tokens":64}}}"#;
    let u = usage_from_json(body).expect("usage");
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.cache_read_input_tokens),
        (100, 20, 64)
    );
}

#[test]
fn openai_responses_body() {
    let body = br#"{"object":"response","usage":{"input_tokens":50,"output_tokens":5,
            "input_tokens_details":{"cached_tokens":10},"total_tokens":55}}"#;
    let u = usage_from_json(body).expect("usage");
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.cache_read_input_tokens),
        (50, 5, 10)
    );
}

#[test]
fn no_usage_or_not_json() {
    assert_eq!(usage_from_json(b"{}"), None);
    assert_eq!(usage_from_json(br#"{"usage":null}"#), None);
    assert_eq!(usage_from_json(br#"{"usage":{}}"#), None);
    assert_eq!(usage_from_json(b"not json"), None);
    assert_eq!(usage_from_json(br#"{"usage":{"input_tokens":-1}}"#), None);
    assert_eq!(usage_from_json(b""), None);
}

#[test]
fn merge_keeps_unnamed_counters() {
    let mut u = Usage {
        input_tokens: 40,
        output_tokens: 1,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 5,
    };
    let delta: UsageWire = serde_json::from_str(r#"{"output_tokens":77}"#).expect("wire");
    assert!(delta.merge_into(&mut u));
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.cache_read_input_tokens),
        (40, 77, 5)
    );
}
