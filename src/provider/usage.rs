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
mod tests;
