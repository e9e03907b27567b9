//! An LLM gateway: Anthropic- and OpenAI-shaped requests in, through the
//! whole tower-llm-resilience stack, to one upstream — built with axum, and
//! with tower-http where it has the middleware (trace, timeout, request
//! id, body limit, sensitive headers).
//!
//! Run with:
//!
//! ```sh
//! # in front of an embedded simulator (Tier 1 quota, a provider minute per second):
//! cargo run --example axum_gateway -- --port 8080 --rpm 50 --time-scale 60
//! # in front of a real provider (or another gateway):
//! ANTHROPIC_API_KEY=sk-ant-… cargo run --example axum_gateway -- \
//!     --upstream https://api.anthropic.com --no-limits
//! ```
//!
//! The first line on stdout is `listening on http://127.0.0.1:PORT`.
//!
//! - `POST /v1/messages` (Anthropic Messages) and `POST /v1/chat/completions`
//!   (OpenAI Chat Completions), JSON or streamed (SSE, passed through frame
//!   by frame); `GET /metrics` (Prometheus text: the gateway's counters, the
//!   limiter's `stats()`, and the crate's metrics when its `metrics` feature
//!   is on); `GET /health`.
//! - Requests are admitted by the rate limiter, queued when the quota is
//!   spent, retried on 429/5xx by the server's `retry-after`, so a client
//!   sees a slower answer instead of a 429. The stack answers 429 (with
//!   `retry-after`) only when the request could not be admitted before its
//!   deadline (`--timeout`).
//! - **Credentials.** The gateway holds the upstream key: the embedded
//!   simulator's, or `ANTHROPIC_API_KEY` / `OPENAI_API_KEY` with
//!   `--upstream`. The client's `x-api-key` / `authorization` is **not**
//!   forwarded upstream (it is dropped, and never logged: tower-http's
//!   `SetSensitiveRequestHeadersLayer`); any value is accepted.
//! - Inbound concurrency is bounded (`--max-inflight`). Ctrl-c or SIGTERM
//!   drains: new requests get 503 `overloaded_error` (`retry-after: 1`,
//!   `connection: close`) and `/health` 503, while those in flight, streams
//!   included, finish; then it stops accepting (axum's
//!   `with_graceful_shutdown`) and exits.
//!
//! Point the official Python SDKs at it by base URL:
//!
//! ```python
//! import anthropic, openai
//! a = anthropic.Anthropic(base_url="http://127.0.0.1:8080", api_key="unused")
//! a.messages.create(model="claude-haiku-4-5", max_tokens=64,
//!                   messages=[{"role": "user", "content": "Hello"}])
//! o = openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="unused")
//! o.chat.completions.create(model="gpt-4o-mini",
//!                           messages=[{"role": "user", "content": "Hello"}])
//! ```
//!
//! (`scripts/bench.sh sdk` runs `scripts/sdk_gateway_check.py`, which does
//! this with both SDKs, streaming included.)

#[path = "gateway/mod.rs"]
mod gateway;

use std::io::Write;

#[tokio::main]
async fn main() {
    let options = match gateway::Options::parse(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", gateway::HELP);
            return;
        }
        Err(e) => {
            eprintln!("axum_gateway: {e}");
            std::process::exit(2);
        }
    };
    let level = if options.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    let mut gw = match gateway::Gateway::start(&options).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("axum_gateway: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", gw.url());
    let _ = out.flush();
    if let Err(e) = gw.wait().await {
        eprintln!("axum_gateway: {e}");
    }
    let c = gw.counters();
    eprintln!(
        "axum_gateway: stopped; answered {}, 429s {}, 5xx {}",
        c.answered.load(std::sync::atomic::Ordering::Relaxed),
        c.status_429.load(std::sync::atomic::Ordering::Relaxed),
        c.status_5xx.load(std::sync::atomic::Ordering::Relaxed),
    );
    if let Some(sim) = gw.sim() {
        eprintln!("axum_gateway: simulator {:?}", sim.counters());
    }
}
