//! Dropping the stack into an axum app: the handlers call an LLM through
//! it, and the stack lives in the app's state, built once and cloned per
//! request (a clone shares every layer's state: one rate limiter, one
//! cache, one connection pool for the whole app).
//!
//! Run with:
//!
//! ```sh
//! cargo run --example axum_app              # starts the app, sends it 24 requests, prints the answers
//! cargo run --example axum_app -- --serve   # keeps serving: curl -d '{"text":"…"}' http://127.0.0.1:PORT/summarize
//! ```
//!
//! The LLM is the embedded simulator, with a quota of 12 requests per
//! provider minute and a provider minute lasting a second, so the 24
//! concurrent requests of the demo cannot all go at once: the limiter
//! queues them, and each handler simply awaits its answer. With
//! `ANTHROPIC_API_KEY` set, `--serve` calls the real API instead.
//!
//! The first line on stdout is `listening on http://127.0.0.1:PORT`.

// The test (tests/axum_app.rs) includes this file as a module and runs `demo`.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use tower_llm_resilience::client::HyperClient;
use tower_llm_resilience::error::RateLimited;
use tower_llm_resilience::rate::{Limit, Limits, RateLimitLayer};
use tower_llm_resilience::sim::{self, SimConfig, SimHandle, Simulator};
use tower_llm_resilience::{BoxError, Deadline, Stack, StackService};

/// The demo's quota, per provider minute; a provider minute lasts `1 / SCALE` minutes.
const QUOTA: sim::Limits = sim::Limits::new(12, 100_000, 100_000);
const SCALE: f64 = 60.0;
const MODEL: &str = "claude-haiku-4-5";

/// What the app keeps: the LLM client (the whole stack over hyper), where
/// it sends, and with which key.
#[derive(Clone)]
struct AppState {
    llm: StackService<HyperClient>,
    rate: RateLimitLayer,
    base: String,
    key: HeaderValue,
}

#[derive(Deserialize)]
struct SummarizeRequest {
    text: String,
}

#[derive(Serialize, Deserialize)]
struct Summary {
    summary: String,
    input_tokens: u64,
    output_tokens: u64,
}

/// The handler's failure, as the app's own clients see it.
enum AppError {
    /// The LLM could not take the request before its deadline.
    Busy(std::time::Duration),
    /// The LLM failed or answered something unreadable.
    Upstream(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Busy(after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, after.as_secs().max(1).to_string())],
                "the LLM is busy, try again later",
            )
                .into_response(),
            AppError::Upstream(why) => (StatusCode::BAD_GATEWAY, why).into_response(),
        }
    }
}

impl From<BoxError> for AppError {
    fn from(e: BoxError) -> Self {
        match e.downcast_ref::<RateLimited>() {
            Some(r) => AppError::Busy(r.retry_after),
            None => AppError::Upstream(e.to_string()),
        }
    }
}

/// `POST /summarize {"text": …}`: one LLM call through the stack.
async fn summarize(
    State(app): State<AppState>,
    Json(input): Json<SummarizeRequest>,
) -> Result<Json<Summary>, AppError> {
    let body = serde_json::json!({
        "model": MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": format!("Summarize: {}", input.text)}],
    });
    let mut req = http::Request::post(format!("{}/v1/messages", app.base))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", app.key.clone())
        .body(body.to_string())
        .map_err(|e| AppError::Upstream(e.to_string()))?;
    // Every wait in the stack ends by this deadline.
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(30)));
    let res = app.llm.clone().oneshot(req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(AppError::Upstream(format!("the LLM answered {status}")));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| AppError::Upstream(e.to_string()))?;
    Ok(Json(Summary {
        summary: v["content"][0]["text"].as_str().unwrap_or("").to_owned(),
        input_tokens: v["usage"]["input_tokens"].as_u64().unwrap_or(0),
        output_tokens: v["usage"]["output_tokens"].as_u64().unwrap_or(0),
    }))
}

/// `GET /stats`: what the rate limiter sees (queued requests per model).
async fn stats(State(app): State<AppState>) -> String {
    app.rate
        .stats()
        .iter()
        .map(|g| {
            format!(
                "{} queued {} in flight {}\n",
                g.model.as_deref().unwrap_or("-"),
                g.queued,
                g.in_flight
            )
        })
        .collect()
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/summarize", post(summarize))
        .route("/stats", get(stats))
        .with_state(state)
}

/// The app's state: the stack, configured with the quota it runs under.
fn state(base: String, key: &str, limits: Limits) -> Result<AppState, BoxError> {
    let rate = RateLimitLayer::new(limits);
    let llm = Stack::builder()
        .rate_limit(rate.clone())
        .concurrency(32)
        .service(HyperClient::new());
    let mut key = HeaderValue::try_from(key)?;
    key.set_sensitive(true);
    Ok(AppState {
        llm,
        rate,
        base,
        key,
    })
}

fn scaled(quota: sim::Limits) -> Result<Limits, BoxError> {
    let period = Duration::from_secs_f64(60.0 / SCALE);
    let per = |n| Limit::new(n, period, n);
    Ok(Limits::unlimited()
        .requests(per(quota.requests_per_minute)?)
        .input_tokens(per(quota.input_tokens_per_minute)?)
        .output_tokens(per(quota.output_tokens_per_minute)?))
}

/// Starts the simulator and the app on an ephemeral port.
async fn start() -> Result<(SimHandle, std::net::SocketAddr, tokio::task::JoinHandle<()>), BoxError>
{
    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(QUOTA)
            .with_time_scale(SCALE)
            .with_output_tokens(8, 24)
            .with_seed(5),
    )
    .await?;
    let state = state(sim.url(), "sk-axum-app", scaled(QUOTA)?)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app(state)).await;
    });
    Ok((sim, addr, server))
}

/// The demo: starts the app, sends it `n` concurrent requests as its
/// clients would, and writes what happened to `out`.
pub(crate) async fn demo(n: usize, out: &mut impl Write) -> Result<(), BoxError> {
    let (sim, addr, server) = start().await?;
    writeln!(out, "listening on http://{addr}")?;
    writeln!(
        out,
        "quota: {} requests per provider minute ({:.1} s); sending {n} requests at once",
        QUOTA.requests_per_minute,
        60.0 / SCALE
    )?;
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (client, url) = (client.clone(), format!("http://{addr}/summarize"));
        tasks.push(tokio::spawn(async move {
            let res = client
                .post(url)
                .header("content-type", "application/json")
                .body(serde_json::json!({ "text": format!("document number {i}") }).to_string())
                .send()
                .await?;
            let status = res.status();
            let body = res.bytes().await?;
            Ok::<_, reqwest::Error>((status, body, t0.elapsed()))
        }));
    }
    let mut answered = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, body, at) = t.await??;
        match serde_json::from_slice::<Summary>(&body) {
            Ok(s) if status.is_success() => {
                answered += 1;
                let words: Vec<&str> = s.summary.split_whitespace().take(4).collect();
                writeln!(
                    out,
                    "request {i:>2}: 200 after {:>5.2} s, {} + {} tokens: {} …",
                    at.as_secs_f64(),
                    s.input_tokens,
                    s.output_tokens,
                    words.join(" ")
                )?;
            }
            _ => writeln!(
                out,
                "request {i:>2}: {status} {}",
                String::from_utf8_lossy(&body)
            )?,
        }
    }
    let c = sim.counters();
    writeln!(
        out,
        "{answered} of {n} answered in {:.2} s; upstream saw {} requests, {} of them 429",
        t0.elapsed().as_secs_f64(),
        c.received,
        c.rate_limited()
    )?;
    server.abort();
    sim.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::args().any(|a| a == "--serve") {
        let (state, sim) = match std::env::var("ANTHROPIC_API_KEY") {
            Ok(key) if !key.is_empty() => (
                // The real API learns its limits from the response headers.
                state(
                    "https://api.anthropic.com".into(),
                    &key,
                    Limits::unlimited(),
                )?,
                None,
            ),
            _ => {
                let sim =
                    Simulator::start(SimConfig::new().with_limits(QUOTA).with_time_scale(SCALE))
                        .await?;
                (state(sim.url(), "sk-axum-app", scaled(QUOTA)?)?, Some(sim))
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        axum::serve(listener, app(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        if let Some(sim) = sim {
            sim.shutdown().await;
        }
        return Ok(());
    }
    demo(24, &mut std::io::stdout()).await
}
