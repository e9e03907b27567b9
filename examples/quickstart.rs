//! The main job: what a burst of LLM calls does to a rate-limited key.
//!
//! Starts the embedded simulator with Anthropic's Tier 1 limits (50 RPM,
//! 20k ITPM, 8k OTPM) on a time scale where a provider minute lasts one
//! second, and sends 300 requests, 32 at a time, the way the official SDKs
//! would (no admission control, 2 retries with backoff, `retry-after`
//! honoured). It prints what came back and how far that is from the
//! physical limit of the quota.
//!
//! ```sh
//! cargo run --example quickstart
//! ```

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tower_llm_resilience::client::HyperClient;
use tower_llm_resilience::sim::{Limits, SimConfig, Simulator};

const REQUESTS: usize = 300;
const CONCURRENCY: usize = 32;
const SCALE: f64 = 60.0;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limits = Limits::TIER_1;
    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(limits)
            .with_time_scale(SCALE)
            .with_output_tokens(20, 200)
            .with_seed(7),
    )
    .await?;
    let url = sim.url();
    let jobs = support::jobs(REQUESTS, 42, (100, 600), (100, 300));
    println!(
        "simulator on {url}: {} RPM, {} ITPM, {} OTPM; one provider minute = {:.1} s",
        limits.requests_per_minute,
        limits.input_tokens_per_minute,
        limits.output_tokens_per_minute,
        60.0 / SCALE
    );
    println!(
        "sending {REQUESTS} requests, {CONCURRENCY} at a time, like the official SDKs (2 retries)…"
    );

    let client = HyperClient::new();
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let (client, url, gate) = (client.clone(), url.clone(), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("open");
            let mut rng = support::Rng::new(i as u64);
            support::naive(client, &url, "sk-quickstart", &job, &mut rng).await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await?);
    }
    let elapsed = start.elapsed();

    let counters = sim.counters();
    let admitted = counters.admitted_totals();
    let ok = outcomes.iter().filter(|o| o.ok).count();
    let attempts: u32 = outcomes.iter().map(|o| o.attempts).sum();
    let mut lat: Vec<_> = outcomes.iter().map(|o| o.latency).collect();
    lat.sort_unstable();
    // The physical limit: no client can finish sooner than the slowest
    // dimension takes to admit what was used, beyond the initial burst.
    let per_sec = |per_minute: u64| per_minute as f64 * SCALE / 60.0;
    let bound = [
        (REQUESTS as f64 - limits.requests_per_minute as f64) / per_sec(limits.requests_per_minute),
        (admitted.1 as f64 - limits.input_tokens_per_minute as f64)
            / per_sec(limits.input_tokens_per_minute),
        (admitted.2 as f64 - limits.output_tokens_per_minute as f64)
            / per_sec(limits.output_tokens_per_minute),
    ]
    .into_iter()
    .fold(0.0f64, f64::max);

    println!();
    println!(
        "client  requests  succeeded  failed  upstream  429s  elapsed  lower bound  p50      p99"
    );
    println!(
        "naive   {:>8}  {:>9}  {:>6}  {:>8}  {:>4}  {:>6.1}s  {:>10.1}s  {:>6.0}ms {:>6.0}ms",
        REQUESTS,
        ok,
        REQUESTS - ok,
        attempts,
        counters.rate_limited(),
        elapsed.as_secs_f64(),
        bound,
        support::percentile(&lat, 0.5).as_secs_f64() * 1e3,
        support::percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
    println!();
    println!(
        "The naive client received {} HTTP 429s for {} requests and lost {} of them after its retries.",
        counters.rate_limited(),
        REQUESTS,
        REQUESTS - ok
    );
    sim.shutdown().await;
    Ok(())
}
