//! Soak through the gateway: `SOAK_REQUESTS` (default 2,000) requests from
//! 64 reqwest callers → the axum gateway (`examples/gateway/mod.rs`,
//! started in-process as `tests/gateway.rs` does) → a simulator with 30 %
//! 429s (with `retry-after`), 5 % dropped connections, 2 % truncated
//! streams, stalled bodies and latency spikes, on real sockets and real
//! time (a provider minute lasts a second).
//!
//! What it guards: under sustained faults every caller's request ends
//! exactly once, within its deadline; the gateway never has the provider
//! serve one logical request twice (counted by `idempotency-key`); once
//! the traffic stops, what the gateway exposes on `/metrics` shows
//! nothing held (concurrency permits, rate reservations and waiters,
//! cache flights); and the process's memory stays flat.
//!
//! `SOAK_REQUESTS=20000 cargo test --release --all-features --test soak_gateway -- --nocapture`
//! is the long run; `--nocapture` shows the one-line summary.

#![cfg(not(loom))]

#[path = "../examples/gateway/mod.rs"]
mod gateway;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway::{Gateway, Options, Secret};
use support::soak::{Outcome, RssSampler, Shape, Tally, error_kind, requests};
use tower_llm_resilience::sim::{Faults, Limits, SimConfig, Simulator};

/// Provider minutes per real minute: a 429's `retry-after-ms` (one
/// provider second) is 1000 / SCALE ms.
const SCALE: f64 = 120.0;
/// Callers sending at once.
const CALLERS: u64 = 64;
/// The gateway's per-request deadline (and its silent-body timeout).
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(2);
/// Each caller's own deadline, from send to the body's end (reqwest's
/// total timeout).
const CALLER_DEADLINE: Duration = Duration::from_secs(5);
/// Past this a caller counts as hung (its deadline did not end it).
const HUNG: Duration = Duration::from_secs(10);
/// The most the process's RSS may grow after warm-up.
const RSS_GROWTH_BOUND: u64 = 16 << 20;

/// The faults the brief names: 30 % 429s with `retry-after`, 5 % dropped
/// connections, 2 % truncated streams; and 1 % stalled bodies, 2 % latency
/// spikes of 300 ms.
fn faults() -> Faults {
    Faults::none()
        .with_rate_limited(0.30)
        .with_drop_connection(0.05)
        .with_truncate_stream(0.02)
        .with_stalled_body(0.01)
        .with_latency_spike(0.02)
}

/// One caller's request `i`, read to its end (or its error).
async fn call(client: &reqwest::Client, url: &str, i: u64) -> Outcome {
    let shape = Shape::of(i);
    let sent = client
        .post(format!("{url}{}", shape.path()))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "sk-client-soak")
        .header("idempotency-key", key(i))
        .body(shape.body(i))
        .send()
        .await;
    let mut res = match sent {
        Ok(res) => res,
        Err(e) if e.is_timeout() => return Outcome::Deadline,
        Err(e) => return Outcome::Error(error_kind(&e)),
    };
    let status = res.status().as_u16();
    let mut body = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Outcome::Deadline,
            Err(_) if status != 200 => break,
            Err(e) => return Outcome::BodyError(error_kind(&e)),
        }
    }
    match status {
        200 if shape.complete(&body) => Outcome::Ok,
        200 => Outcome::Incomplete,
        s => Outcome::Status(s),
    }
}

fn key(i: u64) -> String {
    format!("soak-gateway-{i}")
}

/// The value of the `/metrics` series `name` whose line contains every
/// one of `labels` (summed over the lines that match).
fn gauges(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// What `/metrics` shows held: the non-zero gauges of permits, waiters,
/// reservations and cache flights.
fn held(text: &str) -> Vec<(String, f64)> {
    HELD.iter()
        .flat_map(|name| gauges(text, name))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// The gauges that count something held.
const HELD: [&str; 5] = [
    "tower_llm_concurrency_in_flight",
    "tower_llm_concurrency_queued",
    "tower_llm_cache_in_flight",
    "tower_llm_rate_in_flight",
    "tower_llm_rate_queued",
];

async fn scrape(client: &reqwest::Client, url: &str) -> String {
    client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_through_the_gateway_ends_every_request_once_and_holds_nothing() {
    let n = requests(2_000);
    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(Limits::new(30_000, 10_000_000, 10_000_000))
            .with_time_scale(SCALE)
            .with_seed(10)
            .with_output_tokens(5, 40)
            .with_request_latency(Duration::from_millis(2))
            .with_latency_spike(Duration::from_millis(300))
            .with_faults(faults()),
    )
    .await
    .expect("simulator");
    let o = Options {
        port: 0,
        upstream: Some(sim.url()),
        anthropic_key: Some(Secret("sk-soak-upstream".into())),
        openai_key: Some(Secret("sk-soak-upstream".into())),
        quota: Limits::new(30_000, 10_000_000, 10_000_000),
        time_scale: SCALE,
        upstream_concurrency: 32,
        timeout: GATEWAY_TIMEOUT,
        ..Options::default()
    };
    let gw = Gateway::start(&o).await.expect("gateway starts");
    let url = gw.url();

    let done = Arc::new(AtomicU64::new(0));
    let rss = RssSampler::start(Arc::clone(&done), Duration::from_millis(100));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // While the callers run, /metrics is scraped: the most it showed held
    // at once (so the check after the run reads gauges that do move).
    let scraper = {
        let (url, done) = (url.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut most = 0.0f64;
            while done.load(Ordering::Relaxed) < n {
                let now: f64 = held(&scrape(&client, &url).await)
                    .iter()
                    .map(|(_, v)| v)
                    .sum();
                most = most.max(now);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            most
        })
    };
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (url, next, done) = (url.clone(), Arc::clone(&next), Arc::clone(&done));
        callers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(CALLER_DEADLINE)
                .build()
                .expect("client");
            let mut ended = Vec::new();
            let mut hung = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match tokio::time::timeout(HUNG, call(&client, &url, i)).await {
                    Ok(outcome) => ended.push((i, outcome)),
                    Err(_) => hung += 1,
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (ended, hung)
        }));
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; usize::try_from(n).expect("fits")];
    let mut hung = 0;
    let mut tally = Tally::default();
    for c in callers {
        let (ended, h) = c.await.expect("caller task");
        hung += h;
        for (i, outcome) in ended {
            let slot = &mut outcomes[usize::try_from(i).expect("fits")];
            assert!(slot.is_none(), "request {i} ended twice");
            tally.add(outcome.clone());
            *slot = Some(outcome);
        }
    }
    let elapsed = started.elapsed();

    // Quiescence: the simulator's connections and the gateway's holdings
    // drain once every caller is done (a stalled upstream body the
    // gateway cut is closed by then).
    let client = reqwest::Client::new();
    let busy = scraper.await.expect("scraper");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = scrape(&client, &url).await;
    while (sim.counters().in_flight > 0 || !held(&text).is_empty()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = scrape(&client, &url).await;
    }
    let rss = rss.finish(n / 5);
    let counters = sim.counters();
    let idem = sim.idempotency();

    let retries = idem.arrivals.saturating_sub(idem.keys);
    let summary = format!(
        "soak_gateway: {n} requests in {:.1} s ({:.0}/s); outcomes {tally}; hung {hung}; \
         upstream: {} arrivals for {} keys ({retries} retries, max {} per key), \
         {} completions, {} duplicated; faults: {} 429s, {} dropped, {} truncated, \
         {} stalled, {} spikes; most held at a scrape {busy}; {}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        idem.arrivals,
        idem.keys,
        idem.max_arrivals,
        idem.completions,
        idem.duplicated,
        counters.injected_rate_limits,
        counters.dropped,
        counters.truncated_streams,
        counters.stalled_bodies,
        counters.latency_spikes,
        rss.map_or_else(|| "RSS not available".to_owned(), |r| r.to_string()),
    );
    eprintln!("{summary}");

    // Every request ended exactly once at its caller, none hung.
    assert_eq!(hung, 0, "callers past their deadline: {summary}");
    assert_eq!(tally.total(), n, "{summary}");
    assert!(outcomes.iter().all(Option::is_some), "{summary}");
    // The faults were really there, and most requests still succeeded.
    assert!(
        counters.injected_rate_limits > 0 && counters.dropped > 0,
        "{summary}"
    );
    assert!(
        counters.truncated_streams > 0
            && counters.stalled_bodies > 0
            && counters.latency_spikes > 0,
        "{summary}"
    );
    assert!(tally.ok() * 2 > n, "most requests succeed: {summary}");
    // Each failure a caller saw is one the faults explain: the provider's
    // last 429 or the gateway's 502 / 504 once retries are spent, a body
    // cut by the gateway after a stall, a truncated stream passed through.
    // The gateway itself never fails a client's connection.
    let unexplained = tally.count(|o| match o {
        Outcome::Ok | Outcome::Incomplete | Outcome::BodyError(_) | Outcome::Deadline => false,
        Outcome::Status(s) => ![429, 502, 503, 504].contains(s),
        Outcome::Error(_) => true,
    });
    assert_eq!(unexplained, 0, "{summary}");
    let cut = tally.count(|o| matches!(o, Outcome::BodyError(_)));
    assert!(cut <= counters.stalled_bodies, "{summary}");
    let truncated = tally.count(|o| *o == Outcome::Incomplete);
    assert!(truncated <= counters.truncated_streams, "{summary}");

    // Every arrival at the simulator was counted by its key, and no
    // logical request was served twice: no key has two completions (a
    // 200 whose whole body the simulator handed over). A request that
    // succeeded at its caller without the cache was served exactly once.
    assert_eq!(idem.untracked_arrivals, 0, "{summary}");
    assert_eq!(idem.arrivals, counters.received, "{summary}");
    assert!(idem.keys <= n, "{summary}");
    assert_eq!(idem.duplicated, 0, "zero duplicates: {summary}");
    for (i, outcome) in outcomes.iter().enumerate() {
        let i = i as u64;
        if *outcome == Some(Outcome::Ok) && Shape::of(i).cacheable.is_none() {
            let c = sim.idempotency_key(&key(i));
            assert_eq!(c.map(|c| c.completions), Some(1), "request {i}: {c:?}");
        }
    }

    // Nothing held once the traffic stopped.
    assert_eq!(counters.in_flight, 0, "{summary}");
    assert!(busy > 0.0, "held during the run: {busy}; {summary}");
    assert_eq!(held(&text), Vec::new(), "{summary}");
    assert_eq!(
        gauges(&text, "tower_llm_concurrency_cap"),
        vec![("tower_llm_concurrency_cap".to_owned(), 32.0)]
    );
    for name in [
        "tower_llm_concurrency_in_flight",
        "tower_llm_cache_in_flight",
        "tower_llm_rate_in_flight",
    ] {
        assert!(!gauges(&text, name).is_empty(), "{name} exported: {text}");
    }

    // Memory stays flat after warm-up (the first fifth of the requests).
    if let Some(r) = rss {
        assert!(r.growth < RSS_GROWTH_BOUND, "{summary}");
    }

    gw.shutdown().await.expect("gateway shuts down");
    sim.shutdown().await;
}
