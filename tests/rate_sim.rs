//! The rate limiter against the simulator over real sockets (real time):
//! an oversubscribed workload completes with zero upstream 429s, every
//! request succeeding, close to the physical limit of the quota.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_llm_resilience::client::HyperClient;
use tower_llm_resilience::rate::{Dimension, Learning, Limit, Limits, RateLimitLayer};
use tower_llm_resilience::sim::{self, SimConfig, SimHandle, Simulator};

/// A provider minute lasts one real second.
const SCALE: f64 = 60.0;

struct Workload {
    bodies: Vec<Bytes>,
}

/// `n` requests with prompts of 50–1,500 words and `max_tokens` 50–400.
fn workload(n: usize, seed: u64) -> Workload {
    let mut x = seed;
    let mut next = move |lo: u64, hi: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (x >> 33) % (hi - lo + 1)
    };
    let bodies = (0..n)
        .map(|i| {
            let words = next(50, 1500);
            let max = next(50, 400);
            let prompt = "lorem ".repeat(words as usize);
            Bytes::from(format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":{max},"messages":[{{"role":"user","content":"{i} {prompt}"}}]}}"#
            ))
        })
        .collect();
    Workload { bodies }
}

async fn simulator(limits: sim::Limits) -> SimHandle {
    Simulator::start(
        SimConfig::new()
            .with_limits(limits)
            .with_time_scale(SCALE)
            .with_output_tokens(20, 400)
            .with_seed(11),
    )
    .await
    .expect("simulator")
}

/// Per real second: what a per-minute limit allows under the time scale.
fn per_second(per_minute: u64) -> Limit {
    Limit::new(
        per_minute,
        Duration::from_secs_f64(60.0 / SCALE),
        per_minute,
    )
    .expect("limit")
}

struct Report {
    ok: usize,
    failed: usize,
    elapsed: Duration,
    lower_bound: Duration,
    status_429: u64,
}

/// Offers the workload at `oversubscription` × the request rate, all
/// through one limiter, and reads every body to the end.
async fn run(
    sim: &SimHandle,
    layer: RateLimitLayer,
    limits: sim::Limits,
    w: &Workload,
    oversubscription: f64,
) -> Report {
    let svc = layer.layer(HyperClient::new());
    let url = sim.url();
    let gap = Duration::from_secs_f64(
        60.0 / SCALE / (limits.requests_per_minute as f64 * oversubscription),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, body) in w.bodies.iter().enumerate() {
        let svc = svc.clone();
        let req = support::http::anthropic(
            &format!("{url}/v1/messages"),
            "sk-ant-acceptance",
            body.clone(),
        );
        tokio::time::sleep_until((start + gap * i as u32).into()).await;
        tasks.push(tokio::spawn(async move {
            let res = svc.oneshot(req).await?;
            let status = res.status();
            res.into_body().collect().await?;
            Ok::<_, tower_llm_resilience::BoxError>(status.is_success())
        }));
    }
    let mut ok = 0;
    let mut failed = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(true) => ok += 1,
            _ => failed += 1,
        }
    }
    let elapsed = start.elapsed();
    let c = sim.counters();
    let (requests, input, output) = c.admitted_totals();
    let rate = |per_minute: u64| per_minute as f64 * SCALE / 60.0;
    let bound = [
        (requests as f64 - limits.requests_per_minute as f64) / rate(limits.requests_per_minute),
        (input as f64 - limits.input_tokens_per_minute as f64)
            / rate(limits.input_tokens_per_minute),
        (output as f64 - limits.output_tokens_per_minute as f64)
            / rate(limits.output_tokens_per_minute),
    ]
    .into_iter()
    .fold(0.0f64, f64::max);
    Report {
        ok,
        failed,
        elapsed,
        lower_bound: Duration::from_secs_f64(bound),
        status_429: c.rate_limited(),
    }
}

fn assert_close(r: &Report, slack: f64) {
    let ratio = r.elapsed.as_secs_f64() / r.lower_bound.as_secs_f64();
    eprintln!(
        "ok {} failed {} 429s {} elapsed {:.2}s bound {:.2}s ratio {:.3}",
        r.ok,
        r.failed,
        r.status_429,
        r.elapsed.as_secs_f64(),
        r.lower_bound.as_secs_f64(),
        ratio
    );
    assert!(
        ratio <= 1.0 + slack,
        "elapsed {:.3}× the theoretical minimum",
        ratio
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversubscribed_8x_configured_limits_no_429_near_minimum() {
    let limits = sim::Limits::new(60, 40_000, 12_000);
    let sim = simulator(limits).await;
    let layer = RateLimitLayer::builder()
        .limits(
            Limits::unlimited()
                .requests(per_second(limits.requests_per_minute))
                .input_tokens(per_second(limits.input_tokens_per_minute))
                .output_tokens(per_second(limits.output_tokens_per_minute)),
        )
        .build()
        .expect("layer");
    let w = workload(400, 5);
    let r = run(&sim, layer, limits, &w, 8.0).await;
    assert_eq!(r.status_429, 0, "zero upstream 429s");
    assert_eq!((r.ok, r.failed), (400, 0), "every request succeeds");
    assert_close(&r, 0.10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_learns_limits_with_a_handful_of_429s() {
    let limits = sim::Limits::new(60, 40_000, 12_000);
    let sim = simulator(limits).await;
    let layer = RateLimitLayer::builder()
        .learning(Learning::Auto)
        .learn_period(Duration::from_secs_f64(60.0 / SCALE))
        .build()
        .expect("layer");
    // The first run teaches the limiter (a handful of 429s at most)…
    let w = workload(400, 6);
    let r = run(&sim, layer.clone(), limits, &w, 8.0).await;
    let stats = layer.stats();
    assert_close(&r, 0.10);
    assert!(r.status_429 <= 5, "{} 429s while learning", r.status_429);
    assert_eq!(
        r.ok as u64 + r.status_429,
        400,
        "every request not refused succeeds"
    );
    let learned = &stats[0];
    for (d, expected) in [
        (Dimension::Requests, limits.requests_per_minute),
        (Dimension::InputTokens, limits.input_tokens_per_minute),
        (Dimension::OutputTokens, limits.output_tokens_per_minute),
    ] {
        assert_eq!(
            learned.limit(d).map(|l| l.amount()),
            Some(expected),
            "{d} learned"
        );
    }
    // … after which it sends no request the provider refuses.
    let before = sim.counters().rate_limited();
    let w = workload(200, 7);
    let r = run(&sim, layer, limits, &w, 8.0).await;
    assert_eq!(sim.counters().rate_limited(), before, "no 429 once learned");
    assert_eq!((r.ok, r.failed), (200, 0));
}
