//! The rate limiter's buckets in Redis: two limiters ("processes") sharing
//! one server admit no more than one limit between them; the scripts
//! survive `SCRIPT FLUSH`; a dead or stalled Redis is met by each failure
//! policy within the handle's timeout, and its return is used; clocks of
//! the clients do not matter. Each test skips (one line) without Redis.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tower::{Service, ServiceExt, service_fn};
use tower_llm_resilience::BoxError;
use tower_llm_resilience::error::{BackendError, RateLimited};
use tower_llm_resilience::rate::{Limit, Limits, RateLimitBuilder, RateLimitLayer};
use tower_llm_resilience::redis::{FailurePolicy, Redis};
use tower_llm_resilience::request::ReplayBody;

use support::redis::RedisServer;

fn request() -> Request<ReplayBody> {
    Request::post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", "sk-test-shared-quota")
        .body(ReplayBody::from(
            r#"{"model":"claude-test","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}"#,
        ))
        .expect("request")
}

/// A transport that counts what it is sent.
fn counting(
    sent: Arc<AtomicU64>,
) -> impl Service<
    Request<ReplayBody>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |_req: Request<ReplayBody>| {
        sent.fetch_add(1, Ordering::Relaxed);
        async { Ok::<_, Infallible>(Response::new(String::from("{}"))) }
    })
}

fn requests(amount: u64, per: Duration, burst: u64) -> Limits {
    Limits::unlimited().requests(Limit::new(amount, per, burst).expect("limit"))
}

/// One admission through `layer`: `Ok` when sent.
async fn one(layer: &RateLimitLayer, sent: &Arc<AtomicU64>) -> Result<(), BoxError> {
    let svc = tower::Layer::layer(layer, counting(Arc::clone(sent)));
    svc.oneshot(request()).await.map(drop)
}

fn limiter(redis: Option<Redis>, limits: Limits, policy: FailurePolicy) -> RateLimitLayer {
    let mut b = RateLimitBuilder::default()
        .limits(limits)
        .fail_fast(true)
        .max_wait(Duration::from_millis(200))
        .redis_failure(policy);
    if let Some(redis) = redis {
        b = b.redis(redis);
    }
    b.build().expect("config")
}

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
async fn script_flush_mid_run_recovers_and_the_state_stays() {
    let Some(server) = RedisServer::get("redis_rate") else {
        return;
    };
    let Some(port) = server.port else {
        // SCRIPT FLUSH on a shared REDIS_URL server would touch others.
        eprintln!("redis_rate: script flush test needs a private server");
        return;
    };
    let _ = port;
    let redis = server.handle().with_timeout(Duration::from_millis(500));
    let layer = limiter(
        Some(redis.clone()),
        requests(5, Duration::from_secs(60), 5),
        FailurePolicy::FailClosed,
    );
    let sent = Arc::new(AtomicU64::new(0));
    for _ in 0..3 {
        one(&layer, &sent).await.expect("admitted");
    }
    assert_eq!(server.command(&["SCRIPT", "FLUSH"]), "+OK");
    for _ in 0..2 {
        one(&layer, &sent).await.expect("admitted after the flush");
    }
    // The buckets outlived the scripts: the sixth is refused.
    let err = one(&layer, &sent).await.expect_err("over the limit");
    assert!(err.downcast_ref::<RateLimited>().is_some(), "{err}");
    assert_eq!(sent.load(Ordering::Relaxed), 5);
    assert_eq!(redis.errors(), 0, "NOSCRIPT was handled, not failed");
    assert_eq!(layer.remote_stats().expect("redis").failed_decisions, 0);
}

/// Waits until `layer` admits through Redis again (its retry interval
/// over, the connection back).
async fn until_shared_again(layer: &RateLimitLayer, sent: &Arc<AtomicU64>) {
    for _ in 0..100 {
        let before = layer.remote_stats().expect("redis");
        let ok = one(layer, sent).await.is_ok();
        let after = layer.remote_stats().expect("redis");
        if ok && after.failed_decisions == before.failed_decisions {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the limiter never used Redis again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_each_policy_answers_within_its_timeout_and_recovers() {
    let Some(_probe) = RedisServer::get("redis_rate") else {
        return;
    };
    let mut server = RedisServer::start().expect("redis-server");
    let port = server.port.expect("port");
    let timeout = Duration::from_millis(100);
    let redis = server.handle().with_timeout(timeout);
    let limits = requests(4, Duration::from_secs(60), 4);
    let closed = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let open = limiter(Some(redis.clone()), limits, FailurePolicy::FailOpen);
    let local = limiter(
        Some(redis.clone()),
        limits,
        FailurePolicy::Local { instances: 2 },
    );
    let sent = Arc::new(AtomicU64::new(0));
    // The shared bucket, drained by the three together.
    for layer in [&closed, &open, &local, &closed] {
        one(layer, &sent).await.expect("admitted");
    }
    for layer in [&closed, &open, &local] {
        let err = one(layer, &sent).await.expect_err("shared bucket empty");
        assert!(err.downcast_ref::<RateLimited>().is_some(), "{err}");
    }

    server.kill();
    let bound = timeout * 3 + Duration::from_millis(400);

    let started = Instant::now();
    let err = one(&closed, &sent).await.expect_err("fail closed");
    assert!(err.downcast_ref::<BackendError>().is_some(), "{err}");
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());

    // Fail open admits past the (empty) shared bucket.
    let started = Instant::now();
    for _ in 0..6 {
        one(&open, &sent).await.expect("fail open admits");
    }
    assert!(started.elapsed() < bound * 6, "{:?}", started.elapsed());

    // Local: limit ÷ 2 = 2 requests, then refused by the local bucket.
    let started = Instant::now();
    one(&local, &sent).await.expect("local 1");
    one(&local, &sent).await.expect("local 2");
    let err = one(&local, &sent).await.expect_err("local limit");
    assert!(err.downcast_ref::<RateLimited>().is_some(), "{err}");
    assert!(started.elapsed() < bound * 3, "{:?}", started.elapsed());
    for layer in [&closed, &open, &local] {
        assert!(layer.remote_stats().expect("redis").failed_decisions > 0);
    }
    assert!(redis.errors() > 0);

    // Redis is back, empty: the shared state is used again (a fresh
    // bucket of four, for all three together).
    let back = RedisServer::start_on(port).expect("restart");
    until_shared_again(&closed, &sent).await;
    until_shared_again(&open, &sent).await;
    until_shared_again(&local, &sent).await;
    one(&closed, &sent).await.expect("shared 4");
    for layer in [&closed, &open, &local] {
        let err = one(layer, &sent)
            .await
            .expect_err("shared bucket empty again");
        assert!(err.downcast_ref::<RateLimited>().is_some(), "{err}");
    }
    // One group, one hash, under this test's prefix.
    let pattern = format!("{}*", redis.prefix());
    let count = "return #redis.call('KEYS', ARGV[1])";
    assert_eq!(back.command(&["EVAL", count, "0", &pattern]), ":1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_seconds_of_latency_time_admissions_out_as_configured() {
    let Some(_probe) = RedisServer::get("redis_rate") else {
        return;
    };
    let server = RedisServer::start().expect("redis-server");
    let timeout = Duration::from_millis(100);
    let redis = server.handle().with_timeout(timeout);
    let limits = requests(100, Duration::from_secs(60), 100);
    let closed = limiter(Some(redis.clone()), limits, FailurePolicy::FailClosed);
    let local = limiter(
        Some(redis.clone()),
        limits,
        FailurePolicy::Local { instances: 4 },
    );
    let sent = Arc::new(AtomicU64::new(0));
    one(&closed, &sent).await.expect("warm");
    one(&local, &sent).await.expect("warm");

    // Every client's commands stall for two seconds.
    assert_eq!(server.command(&["CLIENT", "PAUSE", "2000", "ALL"]), "+OK");
    let started = Instant::now();
    let err = one(&closed, &sent).await.expect_err("timed out");
    let backend = err.downcast_ref::<BackendError>().expect("a backend error");
    assert_eq!(backend.timeout, Some(timeout), "{backend}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    one(&local, &sent).await.expect("the local fallback admits");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(local.remote_stats().expect("redis").failed_decisions >= 1);
}

/// A round trip longer than the request may wait: with a 2 s handle
/// timeout and Redis stalled, a request with a 100 ms deadline is answered
/// by its deadline, not after the handle's timeout.
#[tokio::test]
async fn a_stalled_redis_answers_by_the_requests_deadline() {
    let Some(_probe) = RedisServer::get("redis_rate") else {
        return;
    };
    let server = RedisServer::start().expect("redis-server");
    let redis = server.handle().with_timeout(Duration::from_secs(2));
    let limits = requests(100, Duration::from_secs(60), 100);
    let layer = RateLimitBuilder::default()
        .limits(limits)
        .redis(redis)
        .redis_failure(FailurePolicy::Local { instances: 4 })
        .build()
        .expect("config");
    let sent = Arc::new(AtomicU64::new(0));
    one(&layer, &sent).await.expect("warm");
    assert_eq!(server.command(&["CLIENT", "PAUSE", "1500", "ALL"]), "+OK");
    let mut req = request();
    req.extensions_mut()
        .insert(tower_llm_resilience::Deadline::after(
            Duration::from_millis(100),
        ));
    let started = Instant::now();
    let svc = tower::Layer::layer(&layer, counting(Arc::clone(&sent)));
    let answer = svc.oneshot(req).await;
    let took = started.elapsed();
    assert!(answer.is_err(), "no admission could be made in time");
    assert!(took < Duration::from_millis(600), "answered after {took:?}");
}

#[test]
fn client_clocks_thirty_seconds_apart_change_nothing() {
    // Two runtimes, two clocks: B's jumps 30 s ahead after it is built.
    // A minute's limit of 10: 30 s would refill 5 in a local bucket.
    let server = match RedisServer::get("redis_rate") {
        Some(s) => s,
        None => return,
    };
    let prefix = format!("test:{}:skew:", std::process::id());
    let url = server.url.clone();
    let limits = requests(10, Duration::from_secs(60), 10);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let make = |local_only: bool| {
        let redis = Redis::new(&url)
            .expect("url")
            .with_prefix(prefix.clone())
            .with_timeout(Duration::from_millis(500));
        limiter(
            (!local_only).then_some(redis),
            limits,
            FailurePolicy::FailClosed,
        )
    };
    let sent = Arc::new(AtomicU64::new(0));

    // A drains the shared bucket on its own clock.
    let rt_a = runtime();
    rt_a.block_on(async {
        let a = make(false);
        for _ in 0..10 {
            one(&a, &sent).await.expect("admitted");
        }
        assert!(one(&a, &sent).await.is_err());
    });

    let rt_b = runtime();
    rt_b.block_on(async {
        let b = make(false);
        let control = make(true);
        for _ in 0..10 {
            one(&control, &sent)
                .await
                .expect("the local control drains");
        }
        // B's clock (and the control's) jumps 30 s.
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(30)).await;
        tokio::time::resume();
        // The control refilled on its own clock: the injection is real.
        one(&control, &sent).await.expect("local clock refilled");
        // Through Redis, B's clock is not asked: still empty.
        let err = one(&b, &sent).await.expect_err("shared bucket still empty");
        let limited = err.downcast_ref::<RateLimited>().expect("rate limited");
        // About 6 s to the next unit, by Redis's clock.
        assert!(
            limited.retry_after > Duration::from_secs(3),
            "{:?}",
            limited.retry_after
        );
    });
    // And A, 30 s behind B, sees the same.
    rt_a.block_on(async {
        let a = make(false);
        assert!(one(&a, &sent).await.is_err());
    });
}

/// A transport answering `status` with `body` (JSON) and `headers`.
fn answering(
    status: u16,
    body: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> impl Service<
    Request<ReplayBody>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |_req: Request<ReplayBody>| async move {
        let mut res = Response::builder()
            .status(status)
            .header("content-type", "application/json");
        for (k, v) in headers {
            res = res.header(*k, *v);
        }
        Ok::<_, Infallible>(res.body(String::from(body)).expect("response"))
    })
}

/// Sends one request through `layer` to `svc` and reads its body to the end.
async fn through<S>(layer: &RateLimitLayer, svc: S) -> Result<u16, BoxError>
where
    S: Service<Request<ReplayBody>, Response = Response<String>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    use http_body_util::BodyExt;
    let res = tower::Layer::layer(layer, svc).oneshot(request()).await?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}

/// Retries `f` for up to two seconds (a reconciliation is spawned).
async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..40 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
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

/// Redis down, the `Local` fallback admits by its share of the limits the
/// limiter learned from the provider, not of those configured at build:
/// after learning 40 a minute (1,000 configured), one of four instances
/// admits 10 of a burst of 30, not 250's worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_fallback_admits_its_share_of_the_learned_limit() {
    let Some(_probe) = RedisServer::get("redis_rate") else {
        return;
    };
    let mut server = RedisServer::start().expect("redis-server");
    let layer = RateLimitBuilder::default()
        .limits(requests(1_000, Duration::from_secs(60), 1_000))
        .fail_fast(true)
        .max_wait(Duration::from_millis(200))
        .redis(server.handle().with_timeout(Duration::from_millis(100)))
        .redis_failure(FailurePolicy::Local { instances: 4 })
        .build()
        .expect("config");
    let upstream = answering(
        200,
        r#"{"usage":{"input_tokens":5,"output_tokens":2}}"#,
        &[("anthropic-ratelimit-requests-limit", "40")],
    );
    assert_eq!(
        through(&layer, upstream.clone()).await.expect("answered"),
        200
    );
    let learned = layer.stats()[0].effective[0].expect("a request limit");
    assert_eq!(learned.burst(), 40, "learned {learned:?}");

    server.kill();
    let mut admitted = 0;
    for _ in 0..30 {
        match through(&layer, upstream.clone()).await {
            Ok(status) => {
                assert_eq!(status, 200);
                admitted += 1;
            }
            Err(e) => assert!(e.downcast_ref::<RateLimited>().is_some(), "{e}"),
        }
    }
    // 40 ÷ 4 = 10 (and under a tenth of a request refilled meanwhile).
    assert_eq!(admitted, 10, "admitted {admitted} of 30 on the fallback");
    assert!(layer.remote_stats().expect("redis").failed_decisions > 0);
}

/// A 429 on a request the `Local` fallback admitted while Redis was down
/// holds once Redis answers again: this process keeps the gate on its
/// shared path, and the gate reaches Redis, so another process that never
/// saw the 429 waits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_answered_while_redis_was_down_closes_the_shared_gate_once_it_returns() {
    let Some(_probe) = RedisServer::get("redis_rate") else {
        return;
    };
    let mut server = RedisServer::start().expect("redis-server");
    let port = server.port.expect("port");
    let redis = server.handle().with_timeout(Duration::from_millis(100));
    let limits = requests(100, Duration::from_secs(60), 100);
    let a = limiter(
        Some(redis.clone()),
        limits,
        FailurePolicy::Local { instances: 2 },
    );
    let b = limiter(
        Some(redis.clone()),
        limits,
        FailurePolicy::Local { instances: 2 },
    );
    let sent = Arc::new(AtomicU64::new(0));
    one(&a, &sent).await.expect("shared path");
    one(&b, &sent).await.expect("shared path");

    // Admitted by A's fallback while Redis is down; the provider's 429
    // (30 s) comes back once Redis is up again.
    server.kill();
    let release = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(AtomicU64::new(0));
    let upstream = {
        let (release, arrived) = (Arc::clone(&release), Arc::clone(&arrived));
        service_fn(move |_req: Request<ReplayBody>| {
            let release = Arc::clone(&release);
            arrived.fetch_add(1, Ordering::SeqCst);
            async move {
                release.notified().await;
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(429)
                        .header("retry-after", "30")
                        .body(String::from(r#"{"type":"error"}"#))
                        .expect("response"),
                )
            }
        })
    };
    let in_flight = tokio::spawn({
        let svc = tower::Layer::layer(&a, upstream);
        async move { svc.oneshot(request()).await.map(|r| r.status().as_u16()) }
    });
    while arrived.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(a.remote_stats().expect("redis").failed_decisions > 0);
    let _back = RedisServer::start_on(port).expect("restart");
    until_shared_again(&b, &sent).await;
    release.notify_one();
    assert_eq!(in_flight.await.expect("task").expect("answered"), 429);

    let before = sent.load(Ordering::Relaxed);
    for layer in [&a, &b] {
        let shut = eventually(async || {
            one(layer, &sent)
                .await
                .is_err_and(|e| e.downcast_ref::<RateLimited>().is_some())
        })
        .await;
        assert!(shut, "a process sent past the provider's 30 s retry-after");
    }
    // A never sent past it; B at most what it sent before the spawned
    // gate landed.
    let past = sent.load(Ordering::Relaxed) - before;
    assert!(past <= 1, "{past} sent during the provider's retry-after");
}
