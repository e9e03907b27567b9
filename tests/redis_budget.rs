//! Budget counters in Redis: two budget layers (two "processes", each
//! with its own connection) share one cap without overshooting it by more
//! than what is in flight; a threshold fires once across them; `SCRIPT
//! FLUSH`, skewed client clocks and a dead server are survived by policy.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use support::http::{anthropic, bytes};
use support::redis::RedisServer;
use tower::{Service, ServiceExt};
use tower_llm_resilience::budget::{BudgetLayer, Cap, Clock, FailurePolicy, Period, Scope};
use tower_llm_resilience::error::{BackendError, BudgetExceeded};
use tower_llm_resilience::redis::{Redis, RedisBudgetStore};
use tower_llm_resilience::{BoxError, ReplayBody, RequestMeta, ResponseBody};

const URI: &str = "http://upstream.test/v1/messages";
const KEY: &str = "sk-ant-api03-SECRET-redis-budget";

fn body() -> String {
    r#"{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"Hello, shared budget."}]}"#.to_owned()
}

fn estimate() -> u64 {
    let b = body();
    let req = anthropic(URI, KEY, b.clone());
    RequestMeta::parse(req.uri().path(), req.headers(), b.as_bytes()).input_tokens() + 100
}

/// An upstream that answers after `delay` with this usage, counting
/// requests in flight at once.
#[derive(Clone, Default)]
struct Upstream {
    input: u64,
    output: u64,
    delay: Duration,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Upstream {
    fn service(
        &self,
    ) -> impl Service<
        Request<ReplayBody>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + use<> {
        let s = self.clone();
        tower::service_fn(move |_req: Request<ReplayBody>| {
            let s = s.clone();
            async move {
                let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                s.max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(s.delay).await;
                s.in_flight.fetch_sub(1, Ordering::SeqCst);
                let json = format!(
                    r#"{{"type":"message","usage":{{"input_tokens":{},"output_tokens":{}}}}}"#,
                    s.input, s.output
                );
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(json)))
                        .expect("response"),
                )
            }
        })
    }
}

/// A second connection to the same server and prefix: another process.
fn another_process(first: &Redis, server: &RedisServer) -> Redis {
    Redis::new(&server.url)
        .expect("redis")
        .with_prefix(first.prefix().to_owned())
        .with_timeout(Duration::from_secs(2))
}

fn svc(
    layer: &BudgetLayer,
    up: &Upstream,
) -> impl Service<Request<ReplayBody>, Response = Response<ResponseBody>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ use<> {
    tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(up.service())
}

/// Waits until no reservation is left (settlements run on spawned tasks).
async fn settled(layer: &BudgetLayer) -> (u64, u64) {
    let started = Instant::now();
    loop {
        let mut req = anthropic(URI, KEY, body());
        let counters = layer.counters(&mut req).expect("counters");
        let b = layer.balance(&counters[0]).await.expect("read");
        if b.reserved == 0 || started.elapsed() > Duration::from_secs(5) {
            return (b.spent, b.reserved);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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

#[tokio::test]
async fn script_flush_is_recovered_from() {
    let Some(server) = RedisServer::get("redis_budget") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_secs(2));
    let up = Upstream {
        input: 10,
        output: 10,
        ..Upstream::default()
    };
    let layer = BudgetLayer::builder()
        .cap(Cap::tokens("t", Scope::KEY, Period::day(), 1_000))
        .store(RedisBudgetStore::new(redis.clone()))
        .build()
        .expect("budget");
    let mut s = svc(&layer, &up);
    bytes(s.call(anthropic(URI, KEY, body())).await.expect("first")).await;
    assert!(server.command(&["SCRIPT", "FLUSH"]).starts_with("+OK"));
    bytes(
        s.call(anthropic(URI, KEY, body()))
            .await
            .expect("after flush"),
    )
    .await;
    assert_eq!(settled(&layer).await, (40, 0));
    assert_eq!(layer.store_errors(), 0);
}

/// Clients whose clocks are 30 s behind, 30 s ahead and two days ahead
/// all charge the period Redis's clock says: one counter, one cap.
#[tokio::test]
async fn skewed_client_clocks_charge_the_period_of_redis_time() {
    let Some(server) = RedisServer::get("redis_budget") else {
        return;
    };
    let redis = server.handle().with_timeout(Duration::from_secs(2));
    let e = estimate();
    let up = Upstream {
        input: e - 100,
        output: 100,
        ..Upstream::default()
    };
    let layer = |skew: i64| {
        BudgetLayer::builder()
            .cap(Cap::tokens("t", Scope::GLOBAL, Period::day(), 3 * e))
            .store(RedisBudgetStore::new(another_process(&redis, &server)))
            .clock(Clock::new(move || {
                let now = SystemTime::now();
                if skew >= 0 {
                    now + Duration::from_secs(skew as u64)
                } else {
                    now - Duration::from_secs(skew.unsigned_abs())
                }
            }))
            .build()
            .expect("budget")
    };
    let layers = [layer(-30), layer(30), layer(2 * 86_400)];
    for l in &layers {
        bytes(
            svc(l, &up)
                .oneshot(anthropic(URI, KEY, body()))
                .await
                .expect("admitted"),
        )
        .await;
    }
    for l in &layers {
        let err = svc(l, &up)
            .oneshot(anthropic(URI, KEY, body()))
            .await
            .expect_err("cap reached");
        let err = err
            .downcast_ref::<BudgetExceeded>()
            .expect("BudgetExceeded");
        // A reservation may still be settling; the spend is the three's.
        assert!(err.used >= 3 * e - 3 && err.used <= 3 * e, "{err}");
        // The reset is Redis's next midnight: within a day of our clock.
        let until = err
            .resets_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        assert!(until <= Duration::from_secs(86_400), "{until:?}");
    }
}

/// Redis dies: a fail-closed budget refuses within its timeout, a
/// fail-open one sends the request; both count the failure. When it comes
/// back, the shared counters are used again.
#[tokio::test]
async fn a_dead_redis_follows_the_policy_within_the_timeout() {
    let Some(_probe) = RedisServer::get("redis_budget") else {
        return;
    };
    let mut server = RedisServer::start().expect("redis-server");
    let port = server.port.expect("port");
    let redis = server.handle().with_timeout(Duration::from_millis(100));
    let up = Upstream {
        input: 10,
        output: 10,
        ..Upstream::default()
    };
    let layer = |policy| {
        BudgetLayer::builder()
            .cap(Cap::tokens("t", Scope::GLOBAL, Period::day(), 1_000_000))
            .store(RedisBudgetStore::new(redis.clone()))
            .on_store_error(policy)
            .build()
            .expect("budget")
    };
    let (closed, open) = (
        layer(FailurePolicy::FailClosed),
        layer(FailurePolicy::FailOpen),
    );
    bytes(
        svc(&closed, &up)
            .oneshot(anthropic(URI, KEY, body()))
            .await
            .expect("up"),
    )
    .await;
    server.kill();

    let started = Instant::now();
    let err = svc(&closed, &up)
        .oneshot(anthropic(URI, KEY, body()))
        .await
        .expect_err("closed");
    assert!(err.is::<BackendError>(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(closed.store_errors() >= 1);

    let started = Instant::now();
    let res = svc(&open, &up)
        .oneshot(anthropic(URI, KEY, body()))
        .await
        .expect("open");
    bytes(res).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(open.store_errors() >= 1);

    let _back = RedisServer::start_on(port).expect("restart");
    let mut ok = false;
    for _ in 0..50 {
        if svc(&closed, &up)
            .oneshot(anthropic(URI, KEY, body()))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the shared counters are used again");
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

/// A reserve that times out after its script ran (the server paused by
/// `CLIENT PAUSE`, the reserve queued behind it) is released by its id:
/// once the server is back, nothing stays reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_that_times_out_after_its_script_ran_is_released_by_id() {
    let Some(_probe) = RedisServer::get("redis_budget") else {
        return;
    };
    let server = RedisServer::start().expect("redis-server");
    let redis = server.handle().with_timeout(Duration::from_millis(200));
    let up = Upstream {
        input: 10,
        output: 10,
        ..Upstream::default()
    };
    let layer = BudgetLayer::builder()
        .cap(Cap::tokens("t", Scope::GLOBAL, Period::day(), 1_000_000))
        .store(RedisBudgetStore::new(redis.clone()))
        .on_store_error(FailurePolicy::FailClosed)
        .build()
        .expect("budget");
    // One request first: the connection is made and the script loaded.
    bytes(
        svc(&layer, &up)
            .oneshot(anthropic(URI, KEY, body()))
            .await
            .expect("up"),
    )
    .await;
    assert_eq!(settled(&layer).await, (20, 0));
    // Every client's commands stall for 1.5 s: this reserve waits behind
    // the pause, times out, and runs once the server is back.
    assert_eq!(server.command(&["CLIENT", "PAUSE", "1500", "ALL"]), "+OK");
    let err = svc(&layer, &up)
        .oneshot(anthropic(URI, KEY, body()))
        .await
        .expect_err("timed out");
    assert!(err.is::<BackendError>(), "{err}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Spent is the first request's; the lost reservation came back.
    let started = Instant::now();
    let mut balance = settled(&layer).await;
    while balance != (20, 0) && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        balance = settled(&layer).await;
    }
    assert_eq!(balance, (20, 0), "the timed-out reservation stayed");
}
