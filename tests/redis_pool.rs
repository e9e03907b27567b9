//! Key pools with their state in Redis: two limiters ("processes", each
//! with its own pool value and local state) sharing one server choose keys
//! against the shared state — a 429 on key A seen by one makes the other
//! skip A, the admissions over both keys together never exceed the keys'
//! limits, and a calendar quota — in requests or in money — used up
//! through one is used up for the other. Redis down is `redis_faults`'s. Each test skips (one line)
//! without Redis.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use tower_layer::Layer;
use tower_llm_resilience::error::NoKeyAvailable;
use tower_llm_resilience::rate::{
    AuthStyle, CalendarQuota, KeyPool, Limit, Limits, Money, PoolKey, PriceTable, RateLimitLayer,
};
use tower_llm_resilience::redis::{FailurePolicy, Redis};

use support::eventually;
use support::pool::{
    KEY_A, KEY_B, Seen, ok, pool, priced_pool, send, unit_per_output_token, upstream,
};
use support::redis::RedisServer;

fn instance(redis: &Redis, limits: Limits, pool: KeyPool) -> RateLimitLayer {
    RateLimitLayer::builder()
        .limits(limits)
        .fail_fast(true)
        .max_wait(Duration::from_millis(200))
        .cooldown_jitter(Duration::ZERO)
        .redis(redis.clone())
        .redis_failure(FailurePolicy::FailClosed)
        .key_pool(pool)
        .build()
        .unwrap()
}

/// Through instance `one`: a request the provider refuses (its calendar
/// reservation comes back, in Redis), then six admitted — three a key, as
/// both quotas below allow. Then instance `two`, whose own counters are
/// empty, is refused by Redis's: its `NoKeyAvailable`.
async fn use_up(one: &RateLimitLayer, two: &RateLimitLayer, seen: &Seen) -> NoKeyAvailable {
    let svc1 = one.layer(upstream(seen.clone(), |_, _| {
        StatusCode::INTERNAL_SERVER_ERROR
    }));
    assert_eq!(send(&svc1).await.unwrap(), 500);
    let svc1 = one.layer(upstream(seen.clone(), ok));
    let mut sent = 0;
    let filled = eventually(async || {
        match send(&svc1).await {
            Ok(_) => sent += 1,
            Err(e) => assert!(e.downcast_ref::<NoKeyAvailable>().is_some(), "{e}"),
        }
        sent == 6
    })
    .await;
    assert!(filled, "only {sent} of six admitted: {:?}", seen.keys());
    let svc2 = two.layer(upstream(seen.clone(), ok));
    let err = send(&svc2).await.expect_err("both keys are used up today");
    err.downcast::<NoKeyAvailable>()
        .map(|e| *e)
        .unwrap_or_else(|e| panic!("not NoKeyAvailable: {e}"))
}

#[tokio::test]
async fn a_429_on_key_a_seen_by_one_instance_makes_the_other_skip_it() {
    let Some(server) = RedisServer::get("redis_pool") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    let limits = Limits::unlimited().requests(Limit::per_minute(100).unwrap());
    let one = instance(&redis, limits, pool(None));
    let two = instance(&redis, limits, pool(None));
    let seen = Seen::default();
    // Instance 1's first request goes to a (both full, a declared first)
    // and is refused with `retry-after: 20`.
    let svc1 = one.layer(upstream(seen.clone(), |key, n| {
        if key == "a" && n == 1 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::OK
        }
    }));
    assert_eq!(send(&svc1).await.unwrap(), 429);
    assert_eq!(seen.keys(), ["a"]);
    // The gate goes to Redis off the response path: give it its moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Instance 2 never saw that 429: a is as full as b and has used no
    // more today (the refused request was given back), so on its own state
    // it would choose a. The gate instance 1 wrote sends it to b.
    let svc2 = two.layer(upstream(seen.clone(), ok));
    let moved = eventually(async || {
        assert_eq!(send(&svc2).await.unwrap(), 200);
        seen.keys().last() == Some(&"b")
    })
    .await;
    assert!(moved, "instance 2 kept choosing a: {:?}", seen.keys());
    let before = seen.count("a");
    for _ in 0..5 {
        assert_eq!(send(&svc2).await.unwrap(), 200);
    }
    assert_eq!(seen.count("a"), before, "a was used while cooling down");
    assert_eq!(redis.errors(), 0);
    let stats = two.remote_stats().expect("redis");
    assert_eq!((stats.failed_decisions, stats.failed_reconciles), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_over_both_keys_from_two_instances_never_exceed_the_quota() {
    let Some(server) = RedisServer::get("redis_pool") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    // Each key: 20 a second, bursting to 5.
    let limits = Limits::unlimited().requests(Limit::new(20, Duration::from_secs(1), 5).unwrap());
    let layers = [
        instance(&redis, limits, pool(None)),
        instance(&redis, limits, pool(None)),
    ];
    let seen = Seen::default();
    let started = Instant::now();
    let window = Duration::from_millis(1500);
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for layer in &layers {
        for _ in 0..6 {
            let svc = layer.layer(upstream(seen.clone(), ok));
            let refused = Arc::clone(&refused);
            tasks.push(tokio::spawn(async move {
                while started.elapsed() < window {
                    if send(&svc).await.is_err() {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let per_key = (20.0 * elapsed).ceil() as usize + 5;
    let (a, b) = (seen.count("a"), seen.count("b"));
    assert!(
        a <= per_key && b <= per_key,
        "a {a}, b {b} > {per_key} each"
    );
    // Both keys carried traffic, and the callers were really held back.
    assert!(a >= 5 && b >= 5, "a {a}, b {b}");
    assert!(refused.load(Ordering::Relaxed) > 0, "never saturated");
    assert_eq!(redis.errors(), 0);
}

#[tokio::test]
async fn a_calendar_quota_used_up_through_one_instance_is_used_up_for_the_other() {
    let Some(server) = RedisServer::get("redis_pool") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    let limits = Limits::unlimited().requests(Limit::per_minute(1_000).unwrap());
    let quota = CalendarQuota::daily().requests(3);
    let one = instance(&redis, limits, pool(Some(quota)));
    let two = instance(&redis, limits, pool(Some(quota)));
    let seen = Seen::default();
    let no_key = use_up(&one, &two, &seen).await;
    assert!(
        no_key.retry_after > Duration::ZERO && no_key.retry_after <= Duration::from_secs(86_400),
        "{no_key:?}"
    );
    assert_eq!(seen.count("a") + seen.count("b"), 7, "{:?}", seen.keys());
    assert_eq!(redis.errors(), 0);
}

#[tokio::test]
async fn a_quota_in_money_spent_through_one_instance_is_spent_for_the_other() {
    let Some(server) = RedisServer::get("redis_pool") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    let limits = Limits::unlimited().requests(Limit::per_minute(1_000).unwrap());
    // A request is reserved at 16 and settled at 2 (`unit_per_output_token`).
    let prices = unit_per_output_token();
    let quota = CalendarQuota::daily().spend(Money::from_units(20));
    let one = instance(&redis, limits, priced_pool(Some(quota), prices.clone()));
    let two = instance(&redis, limits, priced_pool(Some(quota), prices));
    let seen = Seen::default();
    // Each key takes three: 2 + 2 + 16 fits 20 once the earlier two are
    // settled at 2 (only one would without the corrections), a fourth
    // (2 + 2 + 2 + 16) does not; the refused one went to a, declared first.
    use_up(&one, &two, &seen).await;
    assert_eq!(
        (seen.count("a"), seen.count("b")),
        (4, 3),
        "{:?}",
        seen.keys()
    );
    assert_eq!(redis.errors(), 0);
}

#[tokio::test]
async fn through_redis_a_model_the_pool_cannot_price_goes_to_a_key_not_capped_in_money() {
    let Some(server) = RedisServer::get("redis_pool") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    let limits = Limits::unlimited().requests(Limit::per_minute(1_000).unwrap());
    // a capped in money (and unused, so ahead by the fewest-used rule), b
    // not: a request for a model the table lacks can only go to b.
    let pool = KeyPool::builder(AuthStyle::Anthropic)
        .add_key(PoolKey::new("a", KEY_A).quota(CalendarQuota::daily().spend(Money::from_units(5))))
        .key("b", KEY_B)
        .prices(PriceTable::empty())
        .build()
        .unwrap();
    let seen = Seen::default();
    let svc = instance(&redis, limits, pool).layer(upstream(seen.clone(), ok));
    for _ in 0..3 {
        assert_eq!(send(&svc).await.unwrap(), 200);
    }
    assert_eq!(seen.keys(), ["b", "b", "b"]);
    assert_eq!(redis.errors(), 0);
}
