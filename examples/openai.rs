//! OpenAI's Chat Completions API through the stack: one completion
//! created, one streamed (its text printed as it arrives).
//!
//! Run with:
//!
//! ```sh
//! OPENAI_API_KEY=sk-... cargo run --example openai
//! OPENAI_API_KEY=sk-... cargo run --example openai -- --model gpt-4.1-mini
//! cargo run --example openai    # no key: against the embedded simulator
//! ```
//!
//! With `OPENAI_API_KEY` set the calls go to `https://api.openai.com` (the
//! key is sent as a sensitive `Authorization: Bearer` header and never
//! printed); without it the example says so and calls the simulator, which
//! speaks the same API. The stack is the prebuilt one (`Stack`: buffer,
//! cache, fallback, retry, rate limit at 50 requests a minute, 4 in flight)
//! over the hyper client. The first line says where the calls go; then
//! `create: …`, `stream: …` and `streamed N text deltas in M frames`.

#[path = "support/chat.rs"]
mod chat;

#[tokio::main]
async fn main() -> Result<(), tower_llm_resilience::BoxError> {
    chat::main(chat::Api::OpenAi).await
}
