//! The rate limiter's buckets in Redis: two limiters ("processes") sharing
//! one server admit no more than one limit between them, refunds, gates,
//! leases and a provider's remaining reach every process. Redis's faults
//! (a dead or stalled server, `SCRIPT FLUSH`, skewed clocks) are
//! `redis_faults`'s. Each test skips (one line) without Redis.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower::ServiceExt;
use tower_llm_resilience::error::RateLimited;
use tower_llm_resilience::rate::{Limit, Limits, RateLimitBuilder, RateLimitLayer};
use tower_llm_resilience::redis::{FailurePolicy, Redis};

use support::eventually;
use support::rate::{answering, limiter, one, request, requests, through};
use support::redis::RedisServer;

/// Runs `callers` loops against each layer for `window`; what each sent.
async fn hammer(
    layers: &[RateLimitLayer],
    callers: usize,
    window: Duration,
) -> (Vec<u64>, Duration) {
    let started = Instant::now();
    let counts: Vec<Arc<AtomicU64>> = layers.iter().map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (layer, sent) in layers.iter().zip(&counts) {
        for _ in 0..callers {
            let layer = layer.clone();
            let sent = Arc::clone(sent);
            tasks.push(tokio::spawn(async move {
                while started.elapsed() < window {
                    if one(&layer, &sent).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("caller");
    }
    let elapsed = started.elapsed();
    (
        counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
        elapsed,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_sharing_redis_never_admit_more_than_one_limit() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    // 40 a second, bursting to 10.
    let limits = requests(40, Duration::from_secs(1), 10);
    let a = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let b = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let (counts, elapsed) = hammer(&[a.clone(), b.clone()], 8, Duration::from_millis(1500)).await;
    let total: u64 = counts.iter().sum();
    let bound = (40.0 * elapsed.as_secs_f64()).ceil() as u64 + 10;
    assert!(
        total <= bound,
        "admitted {total} > {bound} over {elapsed:?}: {counts:?}"
    );
    assert!(
        counts.iter().all(|&c| c > 0),
        "both instances admitted: {counts:?}"
    );
    assert!(total >= 10, "the burst at least: {counts:?}");
    assert_eq!(redis.errors(), 0);

    // The control: two limiters without Redis each admit a whole limit.
    let a = limiter(None, limits, FailurePolicy::FailClosed);
    let b = limiter(None, limits, FailurePolicy::FailClosed);
    let (counts, elapsed) = hammer(&[a, b], 8, Duration::from_millis(1500)).await;
    let total: u64 = counts.iter().sum();
    let bound = (40.0 * elapsed.as_secs_f64()).ceil() as u64 + 10;
    assert!(
        total > bound,
        "unshared, the two overshoot: {total} ≤ {bound}"
    );
}

#[tokio::test]
async fn a_refund_settled_in_one_process_frees_room_in_the_other() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    // Output tokens: 20 a minute; each request reserves its max_tokens (16).
    let limits = Limits::unlimited()
        .output_tokens(Limit::new(20, Duration::from_secs(60), 20).expect("limit"));
    let a = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let b = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let sent = Arc::new(AtomicU64::new(0));
    // Reserved 16 in A: B's 16 do not fit…
    let svc = answering(
        200,
        r#"{"usage":{"input_tokens":5,"output_tokens":2}}"#,
        &[],
    );
    let held = tower::Layer::layer(&a, svc)
        .oneshot(request())
        .await
        .expect("a");
    let err = one(&b, &sent).await.expect_err("b does not fit");
    assert!(err.downcast_ref::<RateLimited>().is_some(), "{err}");
    // …until A's response ends having used 2: 14 come back, in Redis.
    use http_body_util::BodyExt;
    held.into_body().collect().await.expect("body");
    assert!(
        eventually(async || one(&b, &sent).await.is_ok()).await,
        "the refund never reached the shared bucket"
    );
    assert_eq!(a.remote_stats().expect("redis").failed_reconciles, 0);
}

#[tokio::test]
async fn a_429_closes_the_gate_for_every_process() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    let limits = requests(100, Duration::from_secs(60), 100);
    let a = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let b = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let limited = answering(429, r#"{"type":"error"}"#, &[("retry-after", "20")]);
    assert_eq!(through(&a, limited).await.expect("answered"), 429);
    let sent = Arc::new(AtomicU64::new(0));
    let mut retry_after = Duration::ZERO;
    let closed = eventually(async || match one(&b, &sent).await {
        Ok(()) => false,
        Err(e) => {
            retry_after = e.downcast_ref::<RateLimited>().expect("gate").retry_after;
            true
        }
    })
    .await;
    // B never saw the 429; the gate it meets is the one A wrote.
    assert!(closed, "b was admitted through the gate");
    assert!(
        retry_after > Duration::from_secs(10) && retry_after <= Duration::from_secs(21),
        "{retry_after:?}"
    );
}

#[tokio::test]
async fn every_key_is_hash_tagged_and_expires_once_full() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    if server.port.is_none() {
        eprintln!("redis_rate: key listing needs a private server");
        return;
    }
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    // Refills in 2 s.
    let layer = limiter(
        Some(redis.clone()),
        requests(10, Duration::from_secs(2), 10),
        FailurePolicy::FailClosed,
    );
    let sent = Arc::new(AtomicU64::new(0));
    for _ in 0..5 {
        one(&layer, &sent).await.expect("admitted");
    }
    // The group's one key, named `{prefix}{rl:…}`: its hash tag.
    let pattern = format!("{}{{rl:*}}", redis.prefix());
    let count = "return #redis.call('KEYS', ARGV[1])";
    assert_eq!(server.command(&["EVAL", count, "0", &pattern]), ":1");
    let pttl = "local k = redis.call('KEYS', ARGV[1]); return redis.call('PTTL', k[1])";
    let ttl: i64 = server
        .command(&["EVAL", pttl, "0", &pattern])
        .trim_start_matches(':')
        .parse()
        .expect("ttl");
    // Five of ten used: full again in ≤ 1 s, kept one second more.
    assert!(ttl > 0 && ttl <= 2_000, "{ttl}");
}

#[tokio::test]
async fn a_cost_above_the_burst_is_refused_by_the_script() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    let redis = server.handle();
    let limits = Limits::unlimited()
        .output_tokens(Limit::new(100, Duration::from_secs(60), 8).expect("limit"));
    let layer = limiter(Some(redis), limits, FailurePolicy::FailClosed);
    let err = one(&layer, &Arc::default()).await.expect_err("16 > 8");
    let too_large = err
        .downcast_ref::<tower_llm_resilience::error::RequestTooLarge>()
        .expect("RequestTooLarge");
    assert_eq!((too_large.cost, too_large.burst), (16, 8));
    assert_eq!(layer.remote_stats().expect("redis").round_trips, 1);
}

fn leasing(redis: Redis, limits: Limits, lease: u32) -> RateLimitLayer {
    RateLimitBuilder::default()
        .limits(limits)
        .fail_fast(true)
        .max_wait(Duration::from_millis(500))
        .redis(redis)
        .redis_failure(FailurePolicy::FailClosed)
        .redis_lease(lease)
        .build()
        .expect("config")
}

/// Like [`hammer`], each caller sending once per `every` (a steady rate,
/// below the limit): what each layer sent.
async fn paced(
    layers: &[RateLimitLayer],
    callers: usize,
    every: Duration,
    window: Duration,
) -> u64 {
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for layer in layers {
        for _ in 0..callers {
            let layer = layer.clone();
            let sent = Arc::clone(&sent);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                while started.elapsed() < window {
                    tick.tick().await;
                    let _ = one(&layer, &sent).await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("caller");
    }
    sent.load(Ordering::Relaxed)
}

fn trips(layers: &[&RateLimitLayer]) -> u64 {
    layers
        .iter()
        .map(|l| l.remote_stats().expect("redis").round_trips)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_over_admit_at_most_instances_times_lease() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    // 200 a second, bursting to 40; leases of 20 requests; saturated.
    let (rate, burst, lease) = (200.0, 40, 20);
    let limits = requests(200, Duration::from_secs(1), burst);
    let a = leasing(redis.clone(), limits, lease);
    let b = leasing(redis.clone(), limits, lease);
    let (counts, elapsed) = hammer(&[a.clone(), b.clone()], 8, Duration::from_millis(1500)).await;
    let total: u64 = counts.iter().sum();
    // What leasing allows beyond the limit: each instance's lease.
    let bound = (rate * elapsed.as_secs_f64()).ceil() as u64 + burst + 2 * u64::from(lease);
    assert!(
        total <= bound,
        "admitted {total} > {bound} over {elapsed:?}: {counts:?}"
    );
    assert!(counts.iter().all(|&c| c > u64::from(lease)), "{counts:?}");
    let trips = trips(&[&a, &b]);
    // Saturated, two instances race for each lease: reported, not bounded.
    eprintln!(
        "saturated: {trips} round trips for {total} admissions ({:.3})",
        trips as f64 / total as f64
    );
    assert!(trips < total, "{trips} round trips for {total} admissions");
    assert_eq!(redis.errors(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_steady_rate_leases_ask_redis_at_most_once_in_ten_admissions() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    let limits = requests(200, Duration::from_secs(1), 40);
    let a = leasing(redis.clone(), limits, 20);
    let b = leasing(redis.clone(), limits, 20);
    // Two instances × 4 callers × 20 a second: 160 a second, 80 % of the limit.
    let total = paced(
        &[a.clone(), b.clone()],
        4,
        Duration::from_millis(50),
        Duration::from_millis(1500),
    )
    .await;
    let trips = trips(&[&a, &b]);
    let per = trips as f64 / total as f64;
    eprintln!("steady: {trips} round trips for {total} admissions ({per:.3})");
    assert!(total > 100, "{total}");
    assert!(
        per <= 0.1,
        "{trips} round trips for {total} admissions: {per:.3}"
    );
    // Without leases, every admission is a round trip.
    let c = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let total = paced(
        std::slice::from_ref(&c),
        4,
        Duration::from_millis(50),
        Duration::from_millis(500),
    )
    .await;
    assert!(trips_of(&c) >= total, "{} < {total}", trips_of(&c));
}

fn trips_of(layer: &RateLimitLayer) -> u64 {
    trips(&[layer])
}

#[tokio::test]
async fn a_lease_keeps_refunds_and_sends_them_with_the_next() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    // Output tokens: 64 a minute; each request reserves 16; leases of 2.
    let limits = Limits::unlimited()
        .output_tokens(Limit::new(64, Duration::from_secs(60), 64).expect("limit"));
    let a = leasing(redis.clone(), limits, 2);
    let other = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let svc = answering(
        200,
        r#"{"usage":{"input_tokens":5,"output_tokens":1}}"#,
        &[],
    );
    // One lease (32 in Redis) serves two requests; each gives 15 back to
    // the lease, not to Redis: one round trip.
    for _ in 0..2 {
        assert_eq!(through(&a, svc.clone()).await.expect("a"), 200);
    }
    assert_eq!(a.remote_stats().expect("redis").round_trips, 1);
    // Redis holds 32 of 64: the other instance fits two requests, not three.
    let sent = Arc::new(AtomicU64::new(0));
    one(&other, &sent).await.expect("other 1");
    one(&other, &sent).await.expect("other 2");
    assert!(
        one(&other, &sent).await.is_err(),
        "Redis still counts the lease"
    );
    // A's refunds of 30 units let it admit from its lease again without a trip.
    assert_eq!(through(&a, svc.clone()).await.expect("a"), 200);
    assert_eq!(a.remote_stats().expect("redis").round_trips, 1);
}

/// B's admissions, 20 ms apart, until the first refusal: how many it sent.
async fn until_refused(layer: &RateLimitLayer) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    for _ in 0..50 {
        if let Err(e) = one(layer, &sent).await {
            assert!(e.downcast_ref::<RateLimited>().is_some(), "{e}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sent.load(Ordering::Relaxed)
}

#[tokio::test]
async fn a_providers_remaining_tightens_every_process() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    // 10 a minute: after A's one, the shared bucket holds 9.
    let limits = requests(10, Duration::from_secs(60), 10);
    let a = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let b = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    // Other traffic on the key, which neither limiter sees: the provider
    // says 3 remain after A's request.
    let upstream = answering(
        200,
        r#"{"usage":{"input_tokens":5,"output_tokens":2}}"#,
        &[("anthropic-ratelimit-requests-remaining", "3")],
    );
    assert_eq!(through(&a, upstream).await.expect("answered"), 200);
    // B never saw that response, yet admits 3 and not 9: what it admits
    // before the tighten lands (spawned) is taken off the provider's 3 as
    // reserved after A's request, so the 3 hold either way.
    let admitted = until_refused(&b).await;
    assert_eq!(
        admitted, 3,
        "B admitted {admitted} after the provider said 3"
    );
    assert_eq!(a.remote_stats().expect("redis").failed_reconciles, 0);
}

#[tokio::test]
async fn a_providers_remaining_above_the_shared_bucket_loosens_nothing() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    let limits = requests(10, Duration::from_secs(60), 10);
    let a = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let b = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let sent = Arc::new(AtomicU64::new(0));
    // Five used; then a response (to A's sixth) says 500 remain.
    for _ in 0..5 {
        one(&b, &sent).await.expect("fits");
    }
    let upstream = answering(
        200,
        r#"{"usage":{"input_tokens":5,"output_tokens":2}}"#,
        &[("anthropic-ratelimit-requests-remaining", "500")],
    );
    assert_eq!(through(&a, upstream).await.expect("answered"), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Only the 4 left of the shared 10.
    assert_eq!(until_refused(&b).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_remaining_tightens_every_process_with_the_next_lease() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    let limits = requests(20, Duration::from_secs(60), 20);
    // A leases 4 at once: 1 for its request, 3 of credit it keeps.
    let a = leasing(redis.clone(), limits, 4);
    let b = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let upstream = answering(
        200,
        r#"{"usage":{"input_tokens":5,"output_tokens":2}}"#,
        &[("anthropic-ratelimit-requests-remaining", "6")],
    );
    assert_eq!(through(&a, upstream).await.expect("answered"), 200);
    // With leases the provider's word waits for A's next round trip:
    // A's credit (3) goes first, then A asks again.
    let sent = Arc::new(AtomicU64::new(0));
    for _ in 0..3 {
        one(&a, &sent).await.expect("from the credit");
    }
    assert_eq!(a.remote_stats().expect("redis").round_trips, 1);
    // Of the provider's 6, A's 3 are gone: 3 are left, less than A's next
    // lease of 4 — refused — and B, which never saw that response, gets 3
    // and not 16.
    let err = one(&a, &sent).await.expect_err("4 do not fit in 3");
    assert!(err.downcast_ref::<RateLimited>().is_some(), "{err}");
    assert_eq!(a.remote_stats().expect("redis").round_trips, 2);
    let admitted = until_refused(&b).await;
    assert_eq!(admitted, 3, "B admitted {admitted}");
}
