//! Budget counters in Redis: two budget layers (two "processes", each
//! with its own connection) share one cap without overshooting it by more
//! than what is in flight; a threshold fires once across them; keys expire
//! and share a hash tag. Redis's faults are `redis_faults`'s.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::budget::{KEY, URI, Upstream, another_process, body, estimate, settled, svc};
use support::http::{anthropic, bytes};
use support::redis::RedisServer;
use tower::ServiceExt;
use tower_llm_resilience::budget::{BudgetLayer, Cap, Period, Scope};
use tower_llm_resilience::error::BudgetExceeded;
use tower_llm_resilience::redis::{Redis, RedisBudgetStore};

#[tokio::test]
async fn two_processes_sharing_redis_overshoot_a_cap_by_at_most_what_is_in_flight() {
    let Some(server) = RedisServer::get("redis_budget") else {
        return;
    };
    let a = server.handle().with_timeout(Duration::from_secs(2));
    let b = another_process(&a, &server);
    let e = estimate();
    let cap = 10 * e + e / 2;
    let over = 7;
    let up = Upstream {
        input: e - 100 + over,
        output: 100,
        delay: Duration::from_millis(200),
        ..Upstream::default()
    };
    let layer = |redis: Redis| {
        BudgetLayer::builder()
            .cap(Cap::tokens("global", Scope::GLOBAL, Period::day(), cap))
            .store(RedisBudgetStore::new(redis))
            .build()
            .expect("budget")
    };
    let (la, lb) = (layer(a), layer(b));
    let (sa, sb) = (svc(&la, &up), svc(&lb, &up));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = if i % 2 == 0 {
                sa.clone().boxed_clone()
            } else {
                sb.clone().boxed_clone()
            };
            tokio::spawn(async move {
                match s.oneshot(anthropic(URI, KEY, body())).await {
                    Ok(res) => {
                        bytes(res).await;
                        true
                    }
                    Err(e) => {
                        assert!(e.is::<BudgetExceeded>(), "{e}");
                        false
                    }
                }
            })
        })
        .collect();
    let mut admitted = 0u64;
    for t in tasks {
        admitted += u64::from(t.await.expect("task"));
    }
    assert_eq!(
        admitted, 10,
        "the two processes admitted one cap's worth together"
    );
    let in_flight = up.max_in_flight.load(Ordering::SeqCst) as u64;
    let (spent, reserved) = settled(&la).await;
    assert_eq!(reserved, 0);
    assert_eq!(spent, admitted * (e + over));
    assert!(
        spent <= cap + in_flight * over,
        "{spent} > {cap} + {in_flight}×{over}"
    );
    assert_eq!(settled(&lb).await, (spent, 0), "both read one counter");
}

#[tokio::test]
async fn a_threshold_fires_once_across_processes() {
    let Some(server) = RedisServer::get("redis_budget") else {
        return;
    };
    let a = server.handle().with_timeout(Duration::from_secs(2));
    let b = another_process(&a, &server);
    let fired = Arc::new(AtomicUsize::new(0));
    let up = Upstream {
        input: 50,
        output: 50,
        delay: Duration::from_millis(5),
        ..Upstream::default()
    };
    let layer = |redis: Redis| {
        let f = Arc::clone(&fired);
        BudgetLayer::builder()
            .cap(Cap::tokens("t", Scope::TENANT, Period::month(), 100_000))
            .thresholds(&[0.005])
            .on_threshold(move |_| {
                f.fetch_add(1, Ordering::SeqCst);
            })
            .store(RedisBudgetStore::new(redis))
            .build()
            .expect("budget")
    };
    let (la, lb) = (layer(a), layer(b));
    let (sa, sb) = (svc(&la, &up), svc(&lb, &up));
    // 40 × 100 tokens; the mark is at 500.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let s = if i % 2 == 0 {
                sa.clone().boxed_clone()
            } else {
                sb.clone().boxed_clone()
            };
            tokio::spawn(async move {
                bytes(s.oneshot(anthropic(URI, KEY, body())).await.expect("ok")).await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(settled(&la).await, (4_000, 0));
    assert_eq!(fired.load(Ordering::SeqCst), 1);
}

/// Every key expires (a day after its period), and one request's keys
/// share a hash tag: the tenant when every cap is per tenant, else the
/// budget's name.
#[tokio::test]
async fn keys_expire_and_share_a_hash_tag() {
    let Some(server) = RedisServer::get("redis_budget") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_secs(2));
    let prefix = redis.prefix().to_owned();
    let up = Upstream {
        input: 10,
        output: 10,
        ..Upstream::default()
    };
    let per_tenant = BudgetLayer::builder()
        .name("pt")
        .cap(Cap::tokens("d", Scope::TENANT, Period::day(), 1_000))
        .cap(Cap::tokens(
            "m",
            Scope::TENANT.and(Scope::MODEL),
            Period::month(),
            1_000,
        ))
        .store(RedisBudgetStore::new(redis.clone()))
        .build()
        .expect("budget");
    let mixed = BudgetLayer::builder()
        .name("mx")
        .cap(Cap::tokens("d", Scope::TENANT, Period::day(), 1_000))
        .cap(Cap::tokens("g", Scope::GLOBAL, Period::day(), 1_000))
        .store(RedisBudgetStore::new(redis.clone()))
        .build()
        .expect("budget");
    for layer in [&per_tenant, &mixed] {
        let mut req = anthropic(URI, KEY, body());
        req.extensions_mut()
            .insert(tower_llm_resilience::budget::Tenant::new("acme {x}"));
        bytes(svc(layer, &up).oneshot(req).await.expect("admitted")).await;
    }
    let client = ::redis::Client::open(server.url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let mut keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}budget:*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    keys.sort();
    assert_eq!(keys.len(), 4, "{keys:?}");
    let tag = |k: &str| {
        let open = k.find('{').expect("tag");
        let close = k[open..].find('}').expect("tag end") + open;
        k[open + 1..close].to_owned()
    };
    let tags: Vec<String> = keys.iter().map(|k| tag(k)).collect();
    // The tenant's braces are escaped: they cannot end the tag early.
    assert_eq!(tags, ["mx", "mx", "pt:acme%20%7Bx%7D", "pt:acme%20%7Bx%7D"]);
    for k in &keys {
        assert!(!k.contains("SECRET"), "{k}");
        let ttl: i64 = ::redis::cmd("TTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .expect("ttl");
        // A day after the period ends: at most a month and a day away.
        assert!(ttl > 86_400 && ttl <= 32 * 86_400, "{k}: {ttl}");
    }
}
