//! Soak through the full stack: `SOAK_REQUESTS` (default 2,000) requests
//! from 64 callers through `Stack::builder()` (BufferBody → Cache →
//! Fallback → Retry → RateLimit → ConcurrencyLimit) over the crate's
//! `HyperClient`, to a simulator with 30 % 429s (with `retry-after`), 5 %
//! dropped connections, 2 % truncated streams, 1 % stalled bodies and 2 %
//! latency spikes, on real sockets and real time (a provider minute lasts
//! a second).
//!
//! What it guards: under sustained faults every caller's request ends
//! exactly once, within its deadline; the stack never has the provider
//! serve one logical request twice (counted by `idempotency-key`, which
//! every retry re-sends); once the traffic stops nothing is held
//! (concurrency permits, rate reservations and waiters, cache flights,
//! the simulator's connections); and the process's memory stays flat.
//!
//! `SOAK_REQUESTS=20000 cargo test --release --all-features --test soak -- --nocapture`
//! is the long run; `--nocapture` shows the one-line summary.

#![cfg(not(loom))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_llm_resilience::cache::CacheLayer;
use tower_llm_resilience::client::HyperClient;
use tower_llm_resilience::rate::{Limit, Limits, RateLimitLayer};
use tower_llm_resilience::retry::RetryLayer;
use tower_llm_resilience::sim::{self, Faults, SimConfig, Simulator};
use tower_llm_resilience::{Deadline, Stack, StackService};

use support::soak::{Outcome, RssSampler, Shape, Tally, error_kind, requests};

/// Callers sending at once.
const CALLERS: u64 = 64;
/// The deadline the stack is given per request (admission and retries
/// respect it).
const STACK_DEADLINE: Duration = Duration::from_secs(2);
/// Each caller's own deadline, from the call to the body's end: what ends
/// a stalled body.
const CALLER_DEADLINE: Duration = Duration::from_secs(3);
/// Past this a caller counts as hung (its deadline did not end it).
const HUNG: Duration = Duration::from_secs(10);
/// The most the process's RSS may grow after warm-up.
const RSS_GROWTH_BOUND: u64 = 16 << 20;
/// The retry layer's attempts per request.
const MAX_ATTEMPTS: u32 = 4;
/// Requests per provider minute (a real second), both at the simulator and
/// in the stack's limiter.
const RPM: u64 = 6_000;

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

type Svc = StackService<HyperClient>;

fn key(i: u64) -> String {
    format!("soak-stack-{i}")
}

/// One caller's request `i` through the stack, read to its end (or its
/// error), within the caller's deadline.
async fn call(svc: &Svc, base: &str, i: u64) -> Outcome {
    let shape = Shape::of(i);
    let key = key(i);
    let mut req = support::http::post_json(
        &format!("{base}{}", shape.path()),
        &[
            ("x-api-key", "sk-soak-stack"),
            ("authorization", "Bearer sk-soak-stack"),
            ("anthropic-version", support::http::ANTHROPIC_VERSION),
            ("idempotency-key", &key),
        ],
        shape.body(i),
    );
    req.extensions_mut().insert(Deadline::after(STACK_DEADLINE));
    let work = async {
        let res = match svc.clone().oneshot(req).await {
            Ok(res) => res,
            Err(e) => return Outcome::Error(error_kind(&*e)),
        };
        let status = res.status().as_u16();
        let mut body = res.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        bytes.extend_from_slice(d);
                    }
                }
                Err(_) if status != 200 => break,
                Err(e) => return Outcome::BodyError(error_kind(&*e)),
            }
        }
        match status {
            200 if shape.complete(&bytes) => Outcome::Ok,
            200 => Outcome::Incomplete,
            s => Outcome::Status(s),
        }
    };
    tokio::time::timeout(CALLER_DEADLINE, work)
        .await
        .unwrap_or(Outcome::Deadline)
}

/// The stack's limiter: the simulator's quota, a provider minute lasting
/// one real second, with a full minute of burst (as the simulator counts).
fn limits() -> Limits {
    let per = |n: u64| Limit::new(n, Duration::from_secs(1), n).expect("limit");
    Limits::unlimited()
        .requests(per(RPM))
        .input_tokens(per(10_000_000))
        .output_tokens(per(10_000_000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_through_the_stack_ends_every_request_once_and_holds_nothing() {
    let n = requests(2_000);
    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(sim::Limits::new(RPM, 10_000_000, 10_000_000))
            .with_time_scale(60.0)
            .with_seed(11)
            .with_output_tokens(5, 40)
            .with_request_latency(Duration::from_millis(2))
            .with_latency_spike(Duration::from_millis(300))
            .with_faults(faults()),
    )
    .await
    .expect("simulator");
    let base = sim.url();

    let cache = CacheLayer::new();
    let rate = RateLimitLayer::builder()
        .limits(limits())
        .build()
        .expect("rate");
    let retry = RetryLayer::builder()
        .max_attempts(MAX_ATTEMPTS)
        .budget(Duration::from_secs(10), 50, 0.5)
        .build()
        .expect("retry");
    let svc: Svc = Stack::builder()
        .rate_limit(rate)
        .concurrency(32)
        .retry(retry)
        .cache(cache.clone())
        .service(HyperClient::new());

    let done = Arc::new(AtomicU64::new(0));
    let rss = RssSampler::start(Arc::clone(&done), Duration::from_millis(100));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (svc, base) = (svc.clone(), base.clone());
        let (next, done) = (Arc::clone(&next), Arc::clone(&done));
        callers.push(tokio::spawn(async move {
            let mut ended = Vec::new();
            let mut hung = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match tokio::time::timeout(HUNG, call(&svc, &base, i)).await {
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

    // Quiescence: every body has been dropped, so nothing may be held; the
    // simulator frees a stalled body once its client has left.
    let held = || {
        let c = svc.concurrency_limit().stats();
        let groups = svc.rate_limit().stats();
        let rate_in_flight: u64 = groups.iter().map(|g| u64::from(g.in_flight)).sum();
        let rate_queued: usize = groups.iter().map(|g| g.queued).sum();
        (
            c.in_flight,
            c.queued,
            rate_in_flight,
            rate_queued,
            cache.in_flight(),
        )
    };
    let settle = Instant::now() + Duration::from_secs(10);
    while (sim.counters().in_flight > 0 || held() != (0, 0, 0, 0, 0)) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss = rss.finish(n / 5);
    let counters = sim.counters();
    let idem = sim.idempotency();
    let concurrency = svc.concurrency_limit().stats();

    let retries = idem.arrivals.saturating_sub(idem.keys);
    let summary = format!(
        "soak_stack: {n} requests in {:.1} s ({:.0}/s); outcomes {tally}; hung {hung}; \
         upstream: {} arrivals for {} keys ({retries} retries, max {} per key), \
         {} completions, {} duplicated; faults: {} 429s, {} dropped, {} truncated, \
         {} stalled, {} spikes; peak permits {}; held after (permits, permit waiters, \
         rate in flight, rate waiters, cache flights) {:?}; {}",
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
        concurrency.peak,
        held(),
        rss.map_or_else(|| "RSS not available".to_owned(), |r| r.to_string()),
    );
    eprintln!("{summary}");

    // Every request ended exactly once at its caller, none hung; only a
    // stalled body may need the caller's deadline to end it.
    assert_eq!(hung, 0, "callers past their deadline: {summary}");
    assert_eq!(tally.total(), n, "{summary}");
    assert!(outcomes.iter().all(Option::is_some), "{summary}");
    assert!(
        tally.count(|o| *o == Outcome::Deadline) <= counters.stalled_bodies,
        "only stalls reach the caller's deadline: {summary}"
    );
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

    // Every arrival at the simulator was counted by its key; retries of
    // failed attempts are allowed (at most MAX_ATTEMPTS per key), but no
    // logical request was served twice: no key has two completions (a 200
    // whose whole body the simulator handed over). A request that
    // succeeded at its caller without the cache was served exactly once.
    assert_eq!(idem.untracked_arrivals, 0, "{summary}");
    assert_eq!(idem.arrivals, counters.received, "{summary}");
    assert!(idem.keys <= n, "{summary}");
    assert!(
        idem.max_arrivals <= u64::from(MAX_ATTEMPTS),
        "retries within max_attempts: {summary}"
    );
    assert!(retries > 0, "the faults were retried: {summary}");
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
    assert_eq!(held(), (0, 0, 0, 0, 0), "{summary}");
    assert!(concurrency.peak > 0, "{summary}");

    // Memory stays flat after warm-up (the first fifth of the requests).
    if let Some(r) = rss {
        assert!(r.growth < RSS_GROWTH_BOUND, "{summary}");
    }
    sim.shutdown().await;
}
