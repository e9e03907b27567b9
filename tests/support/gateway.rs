//! A gateway's client: the request bodies the gateway suites send and a
//! check of what comes back. Included by path (`#[path]`) by the suites
//! that start `examples/gateway/mod.rs` (`gateway`, `gateway_shutdown`),
//! not through `support/mod.rs`: the other suites need no HTTP client.

#![allow(dead_code)]

/// An Anthropic Messages body.
pub(crate) fn anthropic_body(model: &str, max_tokens: u64, stream: bool) -> String {
    serde_json::json!({
        "model": model, "max_tokens": max_tokens, "stream": stream,
        "messages": [{"role": "user", "content": "Hello, gateway"}],
    })
    .to_string()
}

/// An OpenAI Chat Completions body.
pub(crate) fn openai_body(model: &str, max_tokens: u64, stream: bool) -> String {
    serde_json::json!({
        "model": model, "max_tokens": max_tokens, "stream": stream,
        "messages": [{"role": "user", "content": "Hello, gateway"}],
    })
    .to_string()
}

/// A JSON `POST` of `body` to `url`, with client credentials of both
/// shapes (which the gateway drops).
pub(crate) async fn post(
    client: &reqwest::Client,
    url: String,
    body: String,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-api-key", "sk-client-whatever")
        .header("authorization", "Bearer sk-client-whatever")
        .body(body)
        .send()
        .await
}

/// Whether `body` is a complete answer of `api`'s shape with some text.
pub(crate) fn valid_answer(anthropic: bool, body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    if anthropic {
        v["type"] == "message"
            && v["content"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
            && v["usage"]["output_tokens"].as_u64().is_some_and(|n| n > 0)
    } else {
        v["object"] == "chat.completion"
            && v["choices"][0]["message"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
    }
}
