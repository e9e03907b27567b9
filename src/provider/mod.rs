//! Provider knowledge: what the Anthropic and OpenAI APIs send and what it means.

/// Which wire API a request or response speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Anthropic Messages (`POST /v1/messages`).
    AnthropicMessages,
    /// OpenAI Chat Completions (`POST /v1/chat/completions`).
    OpenAiChat,
}

/// Token usage reported by a provider for one response.
///
/// OpenAI's `prompt_tokens` / `completion_tokens` map to `input_tokens` /
/// `output_tokens`; OpenAI's `prompt_tokens_details.cached_tokens` maps to
/// `cache_read_input_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens that were not read from or written to the prompt cache
    /// (Anthropic), or all prompt tokens (OpenAI, which includes cached ones).
    pub input_tokens: u64,
    /// Output tokens generated.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache (Anthropic).
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

pub(crate) mod usage;

pub use usage::usage_from_json;
