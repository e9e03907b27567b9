//! Token usage as the providers report it, in JSON bodies and in SSE events.
//!
//! One reader serves every shape, so callers need not know which API answered:
//!
//! | shape | input | output | cache read | cache write |
//! |---|---|---|---|---|
//! | Anthropic Messages | `input_tokens` | `output_tokens` | `cache_read_input_tokens` | `cache_creation_input_tokens` |
//! | OpenAI Chat Completions | `prompt_tokens` | `completion_tokens` | `prompt_tokens_details.cached_tokens` | — |
//! | OpenAI Responses | `input_tokens` | `output_tokens` | `input_tokens_details.cached_tokens` | — |
//!
//! Only the `usage` object is deserialized; every other field of the body is
//! skipped without allocating.

use serde::Deserialize;

use super::Usage;

/// The wire form of a `usage` object: the union of every provider's fields.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UsageWire {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<CachedDetails>,
    input_tokens_details: Option<CachedDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct CachedDetails {
    cached_tokens: Option<u64>,
}

impl UsageWire {
    /// Folds the fields this object carries into `usage`, leaving the others.
    ///
    /// Anthropic's `message_delta` repeats only some counters (cumulatively),
    /// so a later event must update what it names and keep the rest.
    /// Returns whether any counter was present.
    pub(crate) fn merge_into(&self, usage: &mut Usage) -> bool {
        let mut any = false;
        let mut set = |dst: &mut u64, v: Option<u64>| {
            if let Some(v) = v {
                *dst = v;
                any = true;
            }
        };
        set(
            &mut usage.input_tokens,
            self.input_tokens.or(self.prompt_tokens),
        );
        set(
            &mut usage.output_tokens,
            self.output_tokens.or(self.completion_tokens),
        );
        set(
            &mut usage.cache_creation_input_tokens,
            self.cache_creation_input_tokens,
        );
        let cached = self
            .cache_read_input_tokens
            .or_else(|| self.prompt_tokens_details.as_ref()?.cached_tokens)
            .or_else(|| self.input_tokens_details.as_ref()?.cached_tokens);
        set(&mut usage.cache_read_input_tokens, cached);
        any
    }
}

/// A complete JSON response body, reading only `usage`.
#[derive(Deserialize)]
struct BodyWithUsage {
    usage: Option<UsageWire>,
}

/// Reads the token usage from a complete (non-streaming) JSON response body
/// of any supported provider.
///
/// Returns `None` when the body is not JSON, has no `usage` object, or the
/// object carries no counter.
///
/// ```
/// use tower_llm_resilience::provider::usage_from_json;
/// let body = br#"{"id":"msg_1","type":"message","usage":{"input_tokens":12,"output_tokens":30,
///   "cache_creation_input_tokens":0,"cache_read_input_tokens":100}}"#;
/// let usage = usage_from_json(body).unwrap();
/// assert_eq!((usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens), (12, 30, 100));
///
/// let openai = br#"{"object":"chat.completion","usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#;
/// assert_eq!(usage_from_json(openai).unwrap().output_tokens, 4);
/// ```
pub fn usage_from_json(body: &[u8]) -> Option<Usage> {
    let parsed: BodyWithUsage = serde_json::from_slice(body).ok()?;
    let mut usage = Usage::default();
    parsed.usage?.merge_into(&mut usage).then_some(usage)
}

impl Usage {
    /// Input tokens that count toward an input-tokens-per-minute limit.
    ///
    /// Anthropic does not count cache reads toward ITPM for most models, and
    /// reports them apart from `input_tokens`; cache writes do count. OpenAI's
    /// `prompt_tokens` already include cached tokens, which count.
    pub fn rate_limited_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens)
    }

    /// All input tokens the model read, cached or not.
    pub fn total_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }
}

#[cfg(test)]
mod tests {
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
}
