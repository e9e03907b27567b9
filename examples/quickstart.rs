//! The main job: what a burst of LLM calls does to a rate-limited key, with
//! and without this crate.
//!
//! Starts the embedded simulator with Anthropic's Tier 1 limits (50 RPM,
//! 20k ITPM, 8k OTPM) on a time scale where a provider minute lasts one
//! second, and sends the same 300 requests, 32 at a time, twice:
//!
//! - `naive`: the way the official SDKs do — no admission control, 2
//!   retries with backoff, `retry-after` honoured;
//! - `ours`: through `RetryLayer` + `RateLimitLayer` configured with the
//!   quota.
//!
//! ```sh
//! cargo run --example quickstart
//! ```

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_resilience::client::HyperClient;
use tower_llm_resilience::rate::{Limit, Limits, RateLimitLayer};
use tower_llm_resilience::retry::RetryLayer;
use tower_llm_resilience::sim::{self, SimConfig, Simulator};

const REQUESTS: usize = 300;
const CONCURRENCY: usize = 32;
const SCALE: f64 = 60.0;
const QUOTA: sim::Limits = sim::Limits::TIER_1;

struct Row {
    ok: usize,
    attempts: u64,
    status_429: u64,
    elapsed: Duration,
    bound: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(client: &str, jobs: &[support::Job]) -> Result<Row, Box<dyn std::error::Error>> {
    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(QUOTA)
            .with_time_scale(SCALE)
            .with_output_tokens(20, 200)
            .with_seed(7),
    )
    .await?;
    let url = sim.url();
    let per_second = |per_minute: u64| {
        Limit::new(
            per_minute,
            Duration::from_secs_f64(60.0 / SCALE),
            per_minute,
        )
        .expect("valid")
    };
    let ours = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(RateLimitLayer::new(
            Limits::unlimited()
                .requests(per_second(QUOTA.requests_per_minute))
                .input_tokens(per_second(QUOTA.input_tokens_per_minute))
                .output_tokens(per_second(QUOTA.output_tokens_per_minute)),
        ))
        .service(HyperClient::new());
    let naive = client == "naive";
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, job) in jobs.iter().cloned().enumerate() {
        let (url, gate, ours) = (url.clone(), Arc::clone(&gate), ours.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("open");
            if naive {
                let mut rng = support::Rng::new(i as u64);
                support::naive(HyperClient::new(), &url, "sk-quickstart", &job, &mut rng).await
            } else {
                let t = Instant::now();
                let res = ours
                    .oneshot(support::request(&url, "sk-quickstart", &job))
                    .await;
                let ok = match res {
                    Ok(res) => res.status().is_success() && res.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                support::Outcome {
                    ok,
                    latency: t.elapsed(),
                    ..Default::default()
                }
            }
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await?);
    }
    let elapsed = start.elapsed();
    let c = sim.counters();
    let bodies: Vec<_> = jobs.iter().map(|j| j.body.clone()).collect();
    let bound = support::lower_bound(QUOTA, SCALE, &bodies, c.admitted_totals());
    let mut lat: Vec<_> = outcomes.iter().map(|o| o.latency).collect();
    lat.sort_unstable();
    sim.shutdown().await;
    Ok(Row {
        ok: outcomes.iter().filter(|o| o.ok).count(),
        attempts: c.received,
        status_429: c.rate_limited(),
        elapsed,
        bound,
        p50: support::percentile(&lat, 0.5),
        p99: support::percentile(&lat, 0.99),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = support::jobs(REQUESTS, 42, (100, 600), (100, 300));
    println!(
        "Simulated provider: {} RPM, {} ITPM, {} OTPM (Anthropic Tier 1); one provider minute = {:.1} s.",
        QUOTA.requests_per_minute,
        QUOTA.input_tokens_per_minute,
        QUOTA.output_tokens_per_minute,
        60.0 / SCALE
    );
    println!("Sending the same {REQUESTS} requests, {CONCURRENCY} at a time, with each client…\n");
    println!(
        "client  requests  succeeded  failed  upstream  429s  elapsed  minimum  ratio     p50     p99"
    );
    let mut rows = Vec::new();
    for client in ["naive", "ours"] {
        let r = run(client, &jobs).await?;
        println!(
            "{client:<7} {:>8}  {:>9}  {:>6}  {:>8}  {:>4}  {:>6.1}s  {:>6.1}s  {:>5.2}  {:>5.0}ms {:>5.0}ms",
            REQUESTS,
            r.ok,
            REQUESTS - r.ok,
            r.attempts,
            r.status_429,
            r.elapsed.as_secs_f64(),
            r.bound,
            r.elapsed.as_secs_f64() / r.bound,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
        );
        rows.push(r);
    }
    let (naive, ours) = (&rows[0], &rows[1]);
    println!();
    println!(
        "naive: {} of {REQUESTS} requests failed after {} HTTP 429s.",
        REQUESTS - naive.ok,
        naive.status_429
    );
    println!(
        "ours:  {} of {REQUESTS} succeeded with {} 429s, in {:.2}× the theoretical minimum of the quota.",
        ours.ok,
        ours.status_429,
        ours.elapsed.as_secs_f64() / ours.bound
    );
    Ok(())
}
