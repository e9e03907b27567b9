//! Anthropic's Messages API through the stack: one message created, one
//! streamed (its text printed as it arrives).
//!
//! Run with:
//!
//! ```sh
//! ANTHROPIC_API_KEY=sk-ant-... cargo run --example anthropic
//! ANTHROPIC_API_KEY=sk-ant-... cargo run --example anthropic -- --model claude-haiku-4-5
//! cargo run --example anthropic    # no key: against the embedded simulator
//! ```
//!
//! With `ANTHROPIC_API_KEY` set the calls go to `https://api.anthropic.com`
//! (the key is sent as a sensitive `x-api-key` header and never printed);
//! without it the example says so and calls the simulator, which speaks the
//! same API. The stack is the prebuilt one (`Stack`: buffer, cache,
//! fallback, retry, rate limit at 50 requests a minute, 4 in flight) over
//! the hyper client. The first line says where the calls go; then
//! `create: …`, `stream: …` and `streamed N text deltas in M frames`.

#[path = "support/chat.rs"]
mod chat;

#[tokio::main]
async fn main() -> Result<(), tower_llm_resilience::BoxError> {
    chat::main(chat::Api::Anthropic).await
}
