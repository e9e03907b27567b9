//! The simulator's deterministic input-token rule.

use serde_json::Value;

/// Per-message overhead in tokens.
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 4;

/// Counts the input tokens of an Anthropic Messages or OpenAI Chat
/// Completions request body, by the simulator's own deterministic rule:
///
/// `input_tokens = ceil(B / 4) + 4 × M`
///
/// where `M` is the number of entries in `messages` and `B` is the number of
/// UTF-8 bytes of
/// - `system` (a string, or the `text` of each of its blocks),
/// - each message's `content`: a string, or per block/part the `text` of
///   text blocks (`{"type":"text","text":…}`) and the compact JSON
///   serialization of any other block (images, tool use, tool results),
/// - `tools`: the compact JSON serialization of the whole array.
///
/// Nothing else (role names, model, parameters) counts. The count is what the
/// simulator reports in `usage.input_tokens` / `usage.prompt_tokens` and what
/// it charges against the input-token bucket.
///
/// ```
/// use serde_json::json;
/// use tower_llm_resilience::sim::count_input_tokens;
/// let body = json!({"model": "m", "max_tokens": 10,
///     "messages": [{"role": "user", "content": "Hello, world"}]});
/// assert_eq!(count_input_tokens(&body), 3 + 4); // 12 bytes → 3, one message → 4
/// ```
#[must_use]
pub fn count_input_tokens(body: &Value) -> u64 {
    let mut bytes = 0u64;
    if let Some(system) = body.get("system") {
        bytes += content_bytes(system);
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for m in messages {
        if let Some(c) = m.get("content") {
            bytes += content_bytes(c);
        }
    }
    if let Some(tools) = body.get("tools") {
        bytes += json_len(tools);
    }
    bytes.div_ceil(4) + MESSAGE_OVERHEAD_TOKENS * messages.len() as u64
}

fn content_bytes(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(blocks) => blocks.iter().map(block_bytes).sum(),
        Value::Null => 0,
        other => json_len(other),
    }
}

fn block_bytes(b: &Value) -> u64 {
    if let Value::String(s) = b {
        return s.len() as u64;
    }
    let is_text = b.get("type").and_then(Value::as_str) == Some("text");
    match (is_text, b.get("text").and_then(Value::as_str)) {
        (true, Some(t)) => t.len() as u64,
        _ => json_len(b),
    }
}

fn json_len(v: &Value) -> u64 {
    serde_json::to_vec(v).map_or(0, |b| b.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_system_blocks_messages_and_tools() {
        let tools = json!([{"name": "t", "input_schema": {}}]);
        let tools_len = serde_json::to_vec(&tools).map(|v| v.len()).unwrap_or(0) as u64;
        let body = json!({
            "system": [{"type": "text", "text": "abcd"}],
            "messages": [
                {"role": "user", "content": "12345678"},
                {"role": "assistant", "content": [{"type": "text", "text": "xy"}]},
            ],
            "tools": tools,
        });
        let b = 4 + 8 + 2 + tools_len;
        assert_eq!(count_input_tokens(&body), b.div_ceil(4) + 8);
    }

    #[test]
    fn openai_parts_and_multibyte() {
        let body = json!({"messages": [
            {"role": "system", "content": "é"},
            {"role": "user", "content": [{"type": "text", "text": "abc"}]},
        ]});
        // "é" is 2 bytes, + 3 = 5 bytes → 2 tokens, + 2 × 4
        assert_eq!(count_input_tokens(&body), 10);
    }
}
