//! A simulated LLM provider: a real HTTP server on 127.0.0.1 that behaves
//! like the Anthropic Messages API (`POST /v1/messages`) and the OpenAI Chat
//! Completions API (`POST /v1/chat/completions`) closely enough that the
//! official SDKs cannot tell.
//!
//! Use it to test and benchmark clients (this crate's layers, or your own
//! app) against rate limits, overload and broken streams without spending.
//!
//! # What it does
//!
//! - **Limits per (API key, model)** as continuously replenished token
//!   buckets for requests, input tokens and output tokens per minute
//!   ([`Limits`]), each with a full minute of burst. Output tokens are
//!   reserved from `max_tokens` when a request starts (capped at the OTPM
//!   limit) and the unused part is refunded when the response ends. Input
//!   tokens follow [`count_input_tokens`]. API keys are only stored as
//!   fingerprints; the map of tracked pairs is bounded.
//! - **429s** with the provider's error body, `retry-after` (whole seconds,
//!   rounded up) and, when time-scaled, `retry-after-ms`: the exact time until
//!   the request fits. A request that can never fit (e.g. a prompt above the
//!   ITPM limit) gets a 429 without `retry-after`.
//! - **Rate-limit headers** on every response to a valid request (200, 429
//!   and injected 5xx; not on 400/401/413):
//!   `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
//!   (RFC 3339 instants when the bucket is full again, whole seconds at time
//!   scale 1 and milliseconds otherwise; token `remaining` rounded to the
//!   nearest thousand by default; `tokens-*` is input + output combined) and
//!   `x-ratelimit-{limit,remaining}-{requests,tokens}` +
//!   `x-ratelimit-reset-{requests,tokens}` (Go durations; OpenAI's single
//!   token limit is reported as input + output combined). Headers on a 200
//!   show the buckets right after the request's reservation.
//! - **Every response** carries `request-id: req_…` (Anthropic) or
//!   `x-request-id: req_…` (OpenAI), `Date` and `content-type`; errors use
//!   each provider's JSON error shape.
//! - **Time scale**: with [`SimConfig::with_time_scale`]`(60.0)` a provider
//!   minute lasts one real second; everything on the wire is in real time.
//! - **Responses**: JSON or SSE streams in each provider's exact event
//!   order, seeded output lengths (capped by `max_tokens`), ~1 word per token.
//! - **Faults** ([`Faults`]), seeded and deterministic for a given seed and
//!   request order: 529 / 500 / 503, dropped connections, mid-stream
//!   `overloaded_error` events, truncated streams, stalled bodies, latency
//!   spikes; latency per request and per output token.
//! - **Counters** ([`CountersSnapshot`]): received, per-status counts,
//!   dropped, in-flight and peak concurrency, admitted load per window;
//!   and per `idempotency-key` header ([`IdempotencySnapshot`]): arrivals
//!   and completions, so a test can tell a retry from a request served
//!   twice.
//!
//! The same thing runs standalone: `cargo run --features sim --example sim_server -- --help`.
//!
//! # Example
//!
//! ```
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tower_llm_resilience::sim::{Limits, SimConfig, Simulator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let config = SimConfig::new()
//!     .with_limits(Limits::new(50, 20_000, 8_000))
//!     .with_time_scale(60.0) // a provider minute lasts one second
//!     .with_seed(1);
//! let sim = Simulator::start(config).await?;
//!
//! let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,
//!                "messages":[{"role":"user","content":"Hello"}]}"#;
//! let mut tcp = tokio::net::TcpStream::connect(sim.addr()).await?;
//! let head = format!(
//!     "POST /v1/messages HTTP/1.1\r\nhost: localhost\r\nx-api-key: sk-test\r\n\
//!      content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
//!     body.len()
//! );
//! tcp.write_all(head.as_bytes()).await?;
//! tcp.write_all(body.as_bytes()).await?;
//! let mut response = String::new();
//! tcp.read_to_string(&mut response).await?;
//! assert!(response.starts_with("HTTP/1.1 200"));
//! assert!(response.contains("anthropic-ratelimit-requests-remaining: 49"));
//!
//! assert_eq!(sim.counters().ok(), 1);
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod anthropic;
mod bucket;
mod config;
mod counters;
mod handler;
mod idempotency;
mod openai;
mod server;
mod tokens;
mod wire;

pub use config::{Faults, Limits, SimConfig};
pub use counters::{CountersSnapshot, WindowSample};
pub use idempotency::{IdempotencySnapshot, KeyCount};
pub use server::{SimHandle, Simulator};
pub use tokens::{MESSAGE_OVERHEAD_TOKENS, count_input_tokens};
pub use wire::{format_go_duration, format_rfc3339};
