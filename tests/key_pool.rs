//! API-key pools in the rate limiter: the key is chosen at admission, a
//! 429 moves traffic to another key, keys of one organisation share one
//! group, calendar quotas skip exhausted keys, a request waits for
//! whichever key frees first, the combined tokens dimension is learned,
//! reserved and reconciled, and no key material shows anywhere.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use support::trace::logs;
use tokio::time::Instant;
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;
use tower_llm_resilience::BoxError;
use tower_llm_resilience::client::HyperClient;
use tower_llm_resilience::error::{NoKeyAvailable, UnpricedModel};
use tower_llm_resilience::rate::{
    AuthStyle, CalendarQuota, Clock, Dimension, KeyPool, Limit, Limits, Money, PoolKey,
    PoolStrategy, Price, PriceTable, RateLimitLayer,
};
use tower_llm_resilience::request::{Deadline, ReplayBody, RequestMeta};
use tower_llm_resilience::sim::{self, SimConfig, Simulator};

const KEY_A: &str = "sk-ant-api03-SECRET-AAAA-1c9d";
const KEY_B: &str = "sk-ant-api03-SECRET-BBBB-7e2f";
const KEY_C: &str = "sk-ant-api03-SECRET-CCCC-40aa";
const SECRETS: [&str; 3] = [KEY_A, KEY_B, KEY_C];
const BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}"#;

// ---------------------------------------------------------------- helpers

/// A request with no credentials of its own (the pool gives it one).
fn pooled(body: &'static str) -> Request<ReplayBody> {
    support::http::post_json(
        "http://upstream/v1/messages",
        &[("anthropic-version", support::http::ANTHROPIC_VERSION)],
        body,
    )
}

fn pooled_by(deadline: Instant) -> Request<ReplayBody> {
    let mut req = pooled(BODY);
    req.extensions_mut().insert(Deadline(deadline));
    req
}

/// Which key each request reached the upstream with, and when.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, Instant, String)>>>);

impl Seen {
    fn keys(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|s| s.0.clone()).collect()
    }
}

fn label_of(secret: &str) -> String {
    match secret {
        KEY_A => "a".into(),
        KEY_B => "b".into(),
        KEY_C => "c".into(),
        other => format!("unknown({})", other.len()),
    }
}

/// An upstream answering 200 with usage (or what `status` says for a
/// key), recording the key and the request's `Debug`.
fn upstream(
    seen: Seen,
    status: impl Fn(&str, usize) -> (StatusCode, Option<&'static str>) + Clone + Send + Sync + 'static,
) -> impl Service<Request<ReplayBody>, Response = Response<String>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |req: Request<ReplayBody>| {
        let seen = seen.clone();
        let status = status.clone();
        async move {
            let key = req
                .headers()
                .get("x-api-key")
                .map(|v| label_of(v.to_str().unwrap()))
                .unwrap_or_else(|| "none".into());
            let n = {
                let mut s = seen.0.lock().unwrap();
                s.push((key.clone(), Instant::now(), format!("{req:?}")));
                s.iter().filter(|(k, ..)| *k == key).count()
            };
            let (code, retry_after) = status(&key, n);
            let mut res = Response::builder()
                .status(code)
                .header("content-type", "application/json");
            if let Some(after) = retry_after {
                res = res.header("retry-after", after);
            }
            let body = if code.is_success() {
                r#"{"type":"message","content":[{"type":"text","text":"hello"}],"usage":{"input_tokens":12,"output_tokens":5}}"#
            } else {
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
            };
            Ok::<_, Infallible>(res.body(body.to_owned()).unwrap())
        }
    })
}

fn always_ok(_: &str, _: usize) -> (StatusCode, Option<&'static str>) {
    (StatusCode::OK, None)
}

async fn send<S>(svc: &S, req: Request<ReplayBody>) -> Result<StatusCode, BoxError>
where
    S: Service<
            Request<ReplayBody>,
            Response = Response<tower_llm_resilience::ResponseBody>,
            Error = BoxError,
        > + Clone,
{
    let res = svc.clone().oneshot(req).await?;
    let status = res.status();
    res.into_body().collect().await?;
    Ok(status)
}

fn pool_of(keys: &[(&str, &'static str)]) -> KeyPool {
    keys.iter()
        .fold(
            KeyPool::builder(AuthStyle::Anthropic),
            |b, (label, secret)| b.key(*label, *secret),
        )
        .build()
        .expect("pool")
}

fn per_minute(n: u64) -> Limit {
    Limit::per_minute(n).expect("limit")
}

// ------------------------------------------------------------------ 429s

#[tokio::test(start_paused = true)]
async fn a_429_on_key_a_skips_it_until_its_retry_after_and_moves_traffic_to_b() {
    logs();
    let seen = Seen::default();
    let pool = pool_of(&[("a", KEY_A), ("b", KEY_B)]);
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per_minute(100)))
        .cooldown_jitter(Duration::ZERO)
        .key_pool(pool.clone())
        .build()
        .unwrap();
    // Key a's first request is refused with `retry-after: 10`.
    let svc = layer.layer(upstream(seen.clone(), |key, n| {
        if key == "a" && n == 1 {
            (StatusCode::TOO_MANY_REQUESTS, Some("10"))
        } else {
            (StatusCode::OK, None)
        }
    }));
    let start = Instant::now();
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 429);
    // Every request within the 10 s goes to b, at once.
    for _ in 0..4 {
        assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    }
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    assert_eq!(seen.keys(), ["a", "b", "b", "b", "b", "b"]);
    let times: Vec<_> = seen.0.lock().unwrap().iter().map(|s| s.1 - start).collect();
    assert!(times[..5].iter().all(|t| t.is_zero()), "{times:?}");
    // Past it, a is used again: both buckets are full again, and a has
    // fewer requests today (its refused one was given back).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    assert_eq!(seen.keys().last().map(String::as_str), Some("a"));
    // a's gate was its own: b's group never cooled down.
    let stats = layer.stats();
    let b = stats
        .iter()
        .find(|g| g.key == pool.key_id("b"))
        .expect("b's group");
    assert_eq!(b.cooldown, None);
    assert_eq!(stats.len(), 2, "one group per key");
}

// --------------------------------------------------------- organisations

#[tokio::test(start_paused = true)]
async fn two_keys_of_one_organisation_share_one_group_and_its_limit() {
    logs();
    let seen = Seen::default();
    let pool = KeyPool::builder(AuthStyle::Anthropic)
        .add_key(PoolKey::new("a", KEY_A).organization("acme"))
        .add_key(PoolKey::new("b", KEY_B).organization("acme"))
        .build()
        .unwrap();
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per_minute(5)))
        .key_pool(pool.clone())
        .build()
        .unwrap();
    let svc = layer.layer(upstream(seen.clone(), always_ok));
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut ok = 0;
    let mut no_key = 0;
    for _ in 0..10 {
        match send(&svc, pooled_by(deadline)).await {
            Ok(s) if s == 200 => ok += 1,
            Err(e) if e.is::<NoKeyAvailable>() => no_key += 1,
            other => panic!("{other:?}"),
        }
    }
    // One organisation limit (5), not two.
    assert_eq!((ok, no_key), (5, 5));
    let stats = layer.stats();
    assert_eq!(stats.len(), 1, "one group for the organisation");
    let keys = pool.stats();
    assert_eq!(keys[0].group, keys[1].group);
    assert_eq!(stats[0].key, Some(keys[0].group));
    assert_ne!(keys[0].key, keys[1].key);
    // Both keys were used (ties go to the key with fewer requests today).
    let sent = seen.keys();
    assert!(
        sent.contains(&"a".into()) && sent.contains(&"b".into()),
        "{sent:?}"
    );
}

// ------------------------------------------------------------- waiting

#[tokio::test(start_paused = true)]
async fn a_waiting_request_takes_whichever_key_frees_first_or_fails_fast() {
    logs();
    let seen = Seen::default();
    let pool = pool_of(&[("a", KEY_A), ("b", KEY_B)]);
    // One request per minute per key: a refills 60 s after its request.
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per_minute(1)))
        .key_pool(pool)
        .build()
        .unwrap();
    let svc = layer.layer(upstream(seen.clone(), always_ok));
    let start = Instant::now();
    // a is drained at 0 s (a tie: the first declared), b at 20 s…
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    assert_eq!(seen.keys(), ["a", "b"]);
    // …so a frees at 60 s and b at 80 s. At 25 s, a deadline of 50 s
    // cannot be met: NoKeyAvailable at once, saying 35 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let asked = Instant::now();
    let err = send(&svc, pooled_by(start + Duration::from_secs(50)))
        .await
        .unwrap_err();
    assert_eq!(Instant::now(), asked, "failed fast");
    let e = err
        .downcast_ref::<NoKeyAvailable>()
        .expect("NoKeyAvailable");
    assert_eq!(e.retry_after, Duration::from_secs(35));
    // With 70 s it waits, and is sent on a — the first to free — at 60 s.
    let status = send(&svc, pooled_by(start + Duration::from_secs(70)))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let last = seen.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.0, "a");
    let at = last.1 - start;
    assert!(
        at >= Duration::from_secs(60) && at < Duration::from_millis(60_010),
        "{at:?}"
    );
    assert_eq!(layer.queue().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_refund_on_any_key_wakes_the_pools_head() {
    logs();
    let seen = Seen::default();
    let pool = pool_of(&[("a", KEY_A), ("b", KEY_B)]);
    // 1,000 output tokens a minute per key: a request reserving 1,000 drains one.
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().output_tokens(per_minute(1_000)))
        .key_pool(pool)
        .build()
        .unwrap();
    const BIG: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":"Hi"}]}"#;
    let svc = layer.layer(upstream(seen.clone(), always_ok));
    // Two responses held open: both keys drained until their bodies end.
    let first = svc.clone().oneshot(pooled(BIG)).await.unwrap();
    let second = svc.clone().oneshot(pooled(BIG)).await.unwrap();
    let waiting = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, pooled(BIG)).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished());
    let woke_at = Instant::now();
    // b's response ends, having used 5 of its 1,000: the rest comes back.
    second.into_body().collect().await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 200);
    assert_eq!(seen.keys(), ["a", "b", "b"]);
    let last = seen.0.lock().unwrap()[2].1;
    assert_eq!(last, woke_at, "admitted on the refund, not a refill");
    first.into_body().collect().await.unwrap();
}

// ------------------------------------------------------ calendar quotas

/// A wall clock moved by hand (Unix seconds).
fn hand_clock(at: &Arc<AtomicI64>) -> Clock {
    let at = Arc::clone(at);
    Clock::new(move || UNIX_EPOCH + Duration::from_secs(at.load(Ordering::SeqCst) as u64))
}

/// 2026-12-01T00:00:00Z.
const DEC_1: i64 = 1_796_083_200;

#[tokio::test(start_paused = true)]
async fn an_exhausted_key_is_skipped_until_its_reset() {
    logs();
    let now = Arc::new(AtomicI64::new(DEC_1 + 22 * 3600 + 1800)); // 22:30 UTC
    let seen = Seen::default();
    let pool = KeyPool::builder(AuthStyle::Anthropic)
        // a's day starts at midnight in UTC+01:00: 23:00 UTC.
        .add_key(
            PoolKey::new("a", KEY_A)
                .quota(CalendarQuota::daily().requests(2).utc_offset_secs(3600)),
        )
        .add_key(PoolKey::new("b", KEY_B).quota(CalendarQuota::daily().requests(3)))
        .clock(hand_clock(&now))
        .build()
        .unwrap();
    let layer = RateLimitLayer::builder()
        .key_pool(pool.clone())
        .build()
        .unwrap();
    let svc = layer.layer(upstream(seen.clone(), always_ok));
    for _ in 0..5 {
        assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    }
    // Unlimited buckets: ties go to the fewest used today.
    assert_eq!(seen.keys(), ["a", "b", "a", "b", "b"]);
    // Both exhausted: at once, until the earliest reset (a's, in 30 min).
    let err = send(&svc, pooled(BODY)).await.unwrap_err();
    let e = err
        .downcast_ref::<NoKeyAvailable>()
        .expect("NoKeyAvailable");
    assert_eq!(e.retry_after, Duration::from_secs(1800));
    let stats = pool.stats();
    assert_eq!((stats[0].requests_used, stats[1].requests_used), (2, 3));
    // 23:00 UTC: a's new day; b's is still today.
    now.store(DEC_1 + 23 * 3600, Ordering::SeqCst);
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    assert_eq!(seen.keys()[5..], ["a", "a"]);
    let err = send(&svc, pooled(BODY)).await.unwrap_err();
    let e = err
        .downcast_ref::<NoKeyAvailable>()
        .expect("NoKeyAvailable");
    assert_eq!(e.retry_after, Duration::from_secs(3600), "b's midnight UTC");
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_gives_its_calendar_reservation_back() {
    logs();
    let now = Arc::new(AtomicI64::new(DEC_1));
    let seen = Seen::default();
    let pool = KeyPool::builder(AuthStyle::Anthropic)
        .add_key(PoolKey::new("a", KEY_A).quota(CalendarQuota::daily().requests(1).tokens(10_000)))
        .clock(hand_clock(&now))
        .build()
        .unwrap();
    let layer = RateLimitLayer::builder()
        .key_pool(pool.clone())
        .build()
        .unwrap();
    let svc = layer.layer(upstream(seen.clone(), |_, n| {
        if n == 1 {
            (StatusCode::SERVICE_UNAVAILABLE, None)
        } else {
            (StatusCode::OK, None)
        }
    }));
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 503);
    assert_eq!(pool.stats()[0].requests_used, 0, "refunded");
    assert_eq!(pool.stats()[0].tokens_used, 0);
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    // Reconciled to the usage reported: 12 input + 5 output.
    assert_eq!(
        (pool.stats()[0].requests_used, pool.stats()[0].tokens_used),
        (1, 17)
    );
    assert!(
        send(&svc, pooled(BODY))
            .await
            .unwrap_err()
            .is::<NoKeyAvailable>()
    );
    // A request admitted at the call but dropped before it is sent gives
    // its reservation back too.
    now.store(DEC_1 + 86_400, Ordering::SeqCst);
    let mut s = svc.clone();
    let fut = s.ready().await.unwrap().call(pooled(BODY));
    assert_eq!(pool.stats()[0].requests_used, 1, "reserved at the call");
    drop(fut);
    assert_eq!(pool.stats()[0].requests_used, 0);
    assert_eq!(seen.keys().len(), 2, "never sent");
}

/// Output at 10 units a token, input free: a request's estimate is exactly
/// its `max_tokens` (100) × 10 = 1,000 units, and the upstream's answer
/// (5 output tokens) costs 50.
fn output_priced() -> PriceTable {
    let per_token = |units: u64| Money::from_units(units * 1_000_000);
    PriceTable::empty().insert(
        "claude-sonnet-4-5",
        Price::per_mtok(Money::ZERO, per_token(10), Money::ZERO, Money::ZERO),
    )
}

#[tokio::test(start_paused = true)]
async fn a_key_out_of_money_is_skipped_for_one_that_is_not() {
    logs();
    let now = Arc::new(AtomicI64::new(DEC_1 + 12 * 3600));
    let seen = Seen::default();
    let units = Money::from_units;
    let pool = KeyPool::builder(AuthStyle::Anthropic)
        .add_key(PoolKey::new("a", KEY_A).quota(CalendarQuota::daily().spend(units(1_040))))
        .add_key(PoolKey::new("b", KEY_B).quota(CalendarQuota::daily().spend(units(1_100))))
        .prices(output_priced())
        .clock(hand_clock(&now))
        .build()
        .unwrap();
    let layer = RateLimitLayer::builder()
        .key_pool(pool.clone())
        .build()
        .unwrap();
    let svc = layer.layer(upstream(seen.clone(), |key, n| match (key, n) {
        // b's first answer is refused: its reservation comes back whole.
        ("b", 1) => (StatusCode::SERVICE_UNAVAILABLE, None),
        _ => (StatusCode::OK, None),
    }));
    let spent =
        |pool: &KeyPool| -> Vec<Money> { pool.stats().iter().map(|s| s.spend_used).collect() };
    // Reserved at the call: the estimate, 1,000.
    let mut s = svc.clone();
    let held = s.ready().await.unwrap().call(pooled(BODY));
    assert_eq!(spent(&pool), [units(1_000), Money::ZERO]);
    let res = held.await.unwrap();
    res.into_body().collect().await.unwrap();
    // Settled at the answer's price: 5 output tokens, 50.
    assert_eq!(spent(&pool), [units(50), Money::ZERO]);
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 503);
    assert_eq!(spent(&pool), [units(50), Money::ZERO], "refused: nothing");
    // a: 50 + 1,000 > 1,040, so every request goes to b, until b's
    // 150 + 1,000 > 1,100.
    for _ in 0..3 {
        assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    }
    assert_eq!(seen.keys(), ["a", "b", "b", "b", "b"]);
    assert_eq!(spent(&pool), [units(50), units(150)]);
    let err = send(&svc, pooled(BODY)).await.unwrap_err();
    let e = err
        .downcast_ref::<NoKeyAvailable>()
        .expect("NoKeyAvailable");
    assert_eq!(
        e.retry_after,
        Duration::from_secs(12 * 3600),
        "midnight UTC"
    );
    // The next day, both have money again.
    now.store(DEC_1 + 86_400, Ordering::SeqCst);
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    assert_eq!(seen.keys().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_model_the_pool_cannot_price_goes_to_a_key_not_capped_in_money() {
    logs();
    let unknown =
        r#"{"model":"no-such-model","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}"#;
    let seen = Seen::default();
    let capped = KeyPool::builder(AuthStyle::Anthropic)
        .key("a", KEY_A)
        .add_key(
            PoolKey::new("b", KEY_B)
                .quota(CalendarQuota::monthly().spend(Money::from_units(5_000))),
        )
        .prices(output_priced())
        .build()
        .unwrap();
    let layer = |pool: &KeyPool| {
        RateLimitLayer::builder()
            .key_pool(pool.clone())
            .build()
            .unwrap()
            .layer(upstream(seen.clone(), always_ok))
    };
    // b is capped in money and would have the most headroom (unused), but
    // cannot count it: every one goes to a, uncounted in money.
    let svc = layer(&capped);
    for _ in 0..3 {
        assert_eq!(send(&svc, pooled(unknown)).await.unwrap(), 200);
    }
    assert_eq!(seen.keys(), ["a", "a", "a"]);
    let stats = capped.stats();
    assert_eq!((stats[0].requests_used, stats[1].requests_used), (3, 0));
    assert_eq!(stats[0].spend_used, Money::ZERO);
    // A priced one may go to b.
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    assert_eq!(seen.keys()[3], "b");
    // Every key capped in money: refused before any key is used.
    let all_capped = KeyPool::builder(AuthStyle::Anthropic)
        .add_key(PoolKey::new("c", KEY_C).quota(CalendarQuota::daily().spend(Money::from_units(5))))
        .prices(output_priced())
        .build()
        .unwrap();
    let err = send(&layer(&all_capped), pooled(unknown))
        .await
        .unwrap_err();
    let e = err.downcast_ref::<UnpricedModel>().expect("UnpricedModel");
    assert_eq!(e.model.as_deref(), Some("no-such-model"));
    assert_eq!(seen.keys().len(), 4, "never sent");
}

#[tokio::test(start_paused = true)]
async fn fewest_used_today_picks_the_least_used_key_most_headroom_the_fullest() {
    logs();
    for (strategy, expected) in [
        (PoolStrategy::FewestUsed, "b"),
        (PoolStrategy::MostHeadroom, "a"),
    ] {
        let seen = Seen::default();
        let pool = KeyPool::builder(AuthStyle::Anthropic)
            .key("a", KEY_A)
            .key("b", KEY_B)
            .strategy(strategy)
            .build()
            .unwrap();
        let layer = RateLimitLayer::builder()
            .limits(Limits::unlimited().requests(per_minute(10)))
            .key_pool(pool.clone())
            .build()
            .unwrap();
        let svc = layer.layer(upstream(seen.clone(), always_ok));
        // a: one request through the pool (today's count 1, 9 left).
        assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
        // b: two requests with its own credentials — its bucket (8 left),
        // not the pool's count (0 today).
        for _ in 0..2 {
            let req = support::http::anthropic("http://upstream/v1/messages", KEY_B, BODY);
            assert_eq!(send(&svc, req).await.unwrap(), 200);
        }
        assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
        assert_eq!(
            seen.keys().last().map(String::as_str),
            Some(expected),
            "{strategy:?}"
        );
        assert_eq!(layer.stats().len(), 2, "b's own requests share b's group");
        assert_eq!(pool.stats()[1].requests_used, u64::from(expected == "b"));
    }
}

// ------------------------------------------------ the combined dimension

fn openai_request(max_tokens: u32) -> Request<ReplayBody> {
    let body = format!(
        r#"{{"model":"gpt-4o","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"Say hello to the world"}}]}}"#
    );
    support::http::post_json(
        "http://upstream/v1/chat/completions",
        &[("authorization", "Bearer sk-proj-SECRET-x")],
        Bytes::from(body),
    )
}

#[tokio::test(start_paused = true)]
async fn openai_tokens_are_learned_reserved_and_reconciled_in_one_dimension() {
    logs();
    let t = Dimension::Tokens.index();
    // Learned: no token limit configured; the response's headers teach it.
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per_minute(500)))
        .build()
        .unwrap();
    let in_flight: Arc<Mutex<Vec<Option<u64>>>> = Arc::default();
    let probe = (layer.clone(), Arc::clone(&in_flight));
    let svc = layer.layer(service_fn(move |_req: Request<ReplayBody>| {
        let (layer, in_flight) = probe.clone();
        async move {
            in_flight
                .lock()
                .unwrap()
                .push(layer.stats().first().and_then(|g| g.available[t]));
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "application/json")
                    .header("x-ratelimit-limit-requests", "500")
                    .header("x-ratelimit-remaining-requests", "499")
                    .header("x-ratelimit-limit-tokens", "30000")
                    .header("x-ratelimit-remaining-tokens", "29000")
                    .header("x-ratelimit-reset-tokens", "2s")
                    .body(String::from(
                        r#"{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":60,"total_tokens":100}}"#,
                    ))
                    .unwrap(),
            )
        }
    }));
    send(&svc, openai_request(500)).await.unwrap();
    let g = &layer.stats()[0];
    assert_eq!(g.learned[t].map(|l| l.amount()), Some(30_000));
    assert_eq!(g.limit(Dimension::Tokens).map(|l| l.amount()), Some(30_000));
    assert_eq!(g.server_remaining[t], Some(29_000));
    let before = g.available[t].expect("a bucket now");
    assert!(before <= 30_000);
    // Not read as input or output tokens.
    assert_eq!(g.learned[Dimension::InputTokens.index()], None);
    assert_eq!(g.learned[Dimension::OutputTokens.index()], None);

    // Reserved and reconciled: input estimate + max_tokens while in flight,
    // input + output reported after.
    let req = openai_request(700);
    let meta = RequestMeta::parse(req.uri().path(), req.headers(), req.body().as_bytes());
    let reserved = meta.input_tokens() + 700;
    send(&svc, req).await.unwrap();
    let seen = in_flight.lock().unwrap().clone();
    assert_eq!(seen[0], None, "no limit before the first response");
    assert_eq!(seen[1], Some(before - reserved), "input + output reserved");
}

#[tokio::test(start_paused = true)]
async fn a_configured_tokens_limit_is_reserved_then_reconciled() {
    logs();
    let t = Dimension::Tokens.index();
    let layer = RateLimitLayer::new(Limits::unlimited().tokens(per_minute(10_000)));
    let in_flight: Arc<Mutex<Vec<Option<u64>>>> = Arc::default();
    let probe = (layer.clone(), Arc::clone(&in_flight));
    let svc = layer.layer(service_fn(move |_req: Request<ReplayBody>| {
        let (layer, in_flight) = probe.clone();
        async move {
            in_flight.lock().unwrap().push(layer.stats()[0].available[t]);
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(String::from(
                        r#"{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":60,"total_tokens":100}}"#,
                    ))
                    .unwrap(),
            )
        }
    }));
    let req = openai_request(500);
    let meta = RequestMeta::parse(req.uri().path(), req.headers(), req.body().as_bytes());
    send(&svc, req).await.unwrap();
    assert_eq!(
        in_flight.lock().unwrap()[0],
        Some(10_000 - meta.input_tokens() - 500),
        "input estimate + max_tokens reserved"
    );
    assert_eq!(
        layer.stats()[0].available[t],
        Some(10_000 - 100),
        "reconciled to 40 + 60"
    );
}

// ------------------------------------------------------ no key material

#[tokio::test(start_paused = true)]
async fn no_key_material_in_logs_errors_or_debug() {
    let captured = logs();
    let seen = Seen::default();
    let now = Arc::new(AtomicI64::new(DEC_1));
    let pool = KeyPool::builder(AuthStyle::Anthropic)
        .add_key(PoolKey::new("a", KEY_A).quota(CalendarQuota::daily().requests(1)))
        .add_key(PoolKey::new("b", KEY_B).organization("acme"))
        .add_key(PoolKey::new("c", KEY_C).organization("acme"))
        .clock(hand_clock(&now))
        .build()
        .unwrap();
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per_minute(2)))
        .key_pool(pool.clone())
        .build()
        .unwrap();
    let svc = layer.layer(upstream(seen.clone(), always_ok));
    let mut errors = Vec::new();
    for _ in 0..6 {
        let req = pooled_by(Instant::now() + Duration::from_secs(1));
        if let Err(e) = send(&svc, req).await {
            errors.push(format!("{e} {e:?}"));
        }
    }
    assert!(!errors.is_empty(), "some requests found no key");
    // A bad secret's error does not echo it.
    let bad = KeyPool::builder(AuthStyle::OpenAi)
        .key("x", "sk-SECRET-with\nnewline")
        .build()
        .unwrap_err();
    let dup = KeyPool::builder(AuthStyle::Azure)
        .key("x", KEY_A)
        .key("y", KEY_A)
        .build()
        .unwrap_err();
    let requests: Vec<String> = seen.0.lock().unwrap().iter().map(|s| s.2.clone()).collect();
    assert!(
        requests.iter().all(|r| r.contains("Sensitive")),
        "{requests:?}"
    );
    let logs = captured.text();
    assert!(
        logs.contains("key pool: key chosen"),
        "TRACE captured: {logs}"
    );
    let shown = [
        logs,
        format!("{pool:?}"),
        format!("{layer:?}"),
        format!("{:?}", layer.stats()),
        format!("{:?}", pool.stats()),
        format!("{bad} {bad:?} {dup} {dup:?}"),
        format!("{:?}", PoolKey::new("z", KEY_C).organization("o")),
        errors.join("\n"),
        requests.join("\n"),
    ];
    for text in shown {
        for secret in SECRETS.iter().chain(&["SECRET"]) {
            assert!(!text.contains(secret), "{secret} shown in: {text}");
        }
    }
}

// ------------------------------------- three keys against the simulator

/// A provider minute lasts one real second.
const SCALE: f64 = 60.0;

fn per_second(per_minute: u64) -> Limit {
    Limit::new(
        per_minute,
        Duration::from_secs_f64(60.0 / SCALE),
        per_minute,
    )
    .expect("limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_over_three_keys_completes_near_the_three_key_minimum() {
    logs();
    let limits = sim::Limits::new(60, 40_000, 12_000);
    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(limits)
            .with_time_scale(SCALE)
            .with_output_tokens(20, 400)
            .with_api_keys(SECRETS)
            .with_seed(11),
    )
    .await
    .expect("simulator");
    let pool = SECRETS
        .iter()
        .enumerate()
        .fold(KeyPool::builder(AuthStyle::Anthropic), |b, (i, s)| {
            b.key(format!("k{i}"), *s)
        })
        .build()
        .unwrap();
    // Each key's own quota, as configured limits under the time scale.
    let layer = RateLimitLayer::builder()
        .limits(
            Limits::unlimited()
                .requests(per_second(limits.requests_per_minute))
                .input_tokens(per_second(limits.input_tokens_per_minute))
                .output_tokens(per_second(limits.output_tokens_per_minute)),
        )
        .key_pool(pool)
        .build()
        .unwrap();
    let svc = layer.layer(HyperClient::new());
    let n = 600usize;
    let mut x = 5u64;
    let mut next = move |lo: u64, hi: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (x >> 33) % (hi - lo + 1)
    };
    let bodies: Vec<Bytes> = (0..n)
        .map(|i| {
            let words = next(50, 1500);
            let max = next(50, 400);
            let prompt = "lorem ".repeat(words as usize);
            Bytes::from(format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":{max},"messages":[{{"role":"user","content":"{i} {prompt}"}}]}}"#
            ))
        })
        .collect();
    // Offered at 8× the three keys' request rate.
    let keys = 3.0;
    let gap =
        Duration::from_secs_f64(60.0 / SCALE / (keys * limits.requests_per_minute as f64 * 8.0));
    let url = format!("{}/v1/messages", sim.url());
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let svc = svc.clone();
        let req = support::http::post_json(
            &url,
            &[("anthropic-version", support::http::ANTHROPIC_VERSION)],
            body,
        );
        tokio::time::sleep_until((start + gap * i as u32).into()).await;
        tasks.push(tokio::spawn(async move {
            let res = svc.oneshot(req).await?;
            let status = res.status();
            res.into_body().collect().await?;
            Ok::<_, BoxError>(status.is_success())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await.expect("task"), Ok(true)) {
            ok += 1;
        }
    }
    let elapsed = start.elapsed();
    let c = sim.counters();
    let (requests, input, output) = c.admitted_totals();
    // What three keys' quotas physically need: past the three bursts, the
    // rest at three keys' refill rate, in the tightest dimension.
    let rate = |per_minute: u64| keys * per_minute as f64 * SCALE / 60.0;
    let bound = [
        (requests, limits.requests_per_minute),
        (input, limits.input_tokens_per_minute),
        (output, limits.output_tokens_per_minute),
    ]
    .into_iter()
    .map(|(used, per_minute)| (used as f64 - keys * per_minute as f64) / rate(per_minute))
    .fold(0.0f64, f64::max);
    let ratio = elapsed.as_secs_f64() / bound;
    eprintln!(
        "3 keys: ok {ok} 429s {} elapsed {:.2}s bound {bound:.2}s ratio {ratio:.3}",
        c.rate_limited(),
        elapsed.as_secs_f64()
    );
    assert_eq!(c.rate_limited(), 0, "zero upstream 429s");
    assert_eq!(ok, n, "every request succeeds");
    assert!(ratio <= 1.05, "elapsed {ratio:.3}× the three-key minimum");
}

// ------------------------------------------------------------ the pool

#[tokio::test(start_paused = true)]
async fn each_auth_style_sets_its_providers_header_marked_sensitive() {
    logs();
    for (style, name, value) in [
        (AuthStyle::Anthropic, "x-api-key", KEY_A.to_owned()),
        (
            AuthStyle::OpenAi,
            "authorization",
            format!("Bearer {KEY_A}"),
        ),
        (AuthStyle::Azure, "api-key", KEY_A.to_owned()),
    ] {
        let got: Arc<Mutex<Vec<(String, bool, usize)>>> = Arc::default();
        let sink = Arc::clone(&got);
        let layer = RateLimitLayer::builder()
            .key_pool(KeyPool::builder(style).key("a", KEY_A).build().unwrap())
            .build()
            .unwrap();
        let svc = layer.layer(service_fn(move |req: Request<ReplayBody>| {
            let sink = Arc::clone(&sink);
            async move {
                let v = req.headers().get(name).expect("auth header");
                let credentials = ["x-api-key", "authorization", "api-key"]
                    .iter()
                    .filter(|h| req.headers().contains_key(**h))
                    .count();
                sink.lock().unwrap().push((
                    v.to_str().unwrap().to_owned(),
                    v.is_sensitive(),
                    credentials,
                ));
                Ok::<_, Infallible>(Response::new(String::from("{}")))
            }
        }));
        send(&svc, pooled(BODY)).await.unwrap();
        assert_eq!(*got.lock().unwrap(), [(value, true, 1)], "{style:?}");
    }
}

#[test]
fn invalid_pools_are_refused_with_typed_errors() {
    let field = |b: tower_llm_resilience::rate::KeyPoolBuilder| b.build().unwrap_err().field;
    let anthropic = || KeyPool::builder(AuthStyle::Anthropic);
    assert_eq!(field(anthropic()), "key_pool");
    let many = (0..=tower_llm_resilience::rate::MAX_POOL_KEYS).fold(anthropic(), |b, i| {
        b.key(format!("k{i}"), format!("sk-{i}"))
    });
    assert_eq!(field(many), "key_pool");
    assert_eq!(field(anthropic().key("a", "")), "key_pool.key");
    assert_eq!(field(anthropic().key("a", "sk\r\nx")), "key_pool.key");
    assert_eq!(
        field(anthropic().key("a", KEY_A).key("b", KEY_A)),
        "key_pool.key"
    );
    assert_eq!(
        field(anthropic().key("a", KEY_A).key("a", KEY_B)),
        "key_pool.label"
    );
    let bad_quota = PoolKey::new("a", KEY_A).quota(CalendarQuota::daily().utc_offset_secs(90_000));
    assert_eq!(
        field(anthropic().add_key(bad_quota)),
        "calendar_quota.utc_offset"
    );
    assert!(anthropic().key("a", KEY_A).key("b", KEY_B).build().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_429_on_one_key_of_an_organisation_pauses_all_of_its_keys() {
    logs();
    let seen = Seen::default();
    let pool = KeyPool::builder(AuthStyle::Anthropic)
        .add_key(PoolKey::new("a", KEY_A).organization("acme"))
        .add_key(PoolKey::new("b", KEY_B).organization("acme"))
        .add_key(PoolKey::new("c", KEY_C))
        .build()
        .unwrap();
    let layer = RateLimitLayer::builder()
        .cooldown_jitter(Duration::ZERO)
        .key_pool(pool)
        .build()
        .unwrap();
    let svc = layer.layer(upstream(seen.clone(), |key, n| {
        if key == "a" && n == 1 {
            (StatusCode::TOO_MANY_REQUESTS, Some("10"))
        } else {
            (StatusCode::OK, None)
        }
    }));
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 429);
    // The organisation's bucket is empty: neither a nor b, only c.
    for _ in 0..3 {
        assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    }
    assert_eq!(seen.keys(), ["a", "c", "c", "c"]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(send(&svc, pooled(BODY)).await.unwrap(), 200);
    // The gate open again, the organisation's keys are back: a and b have
    // no request today (a's refused one was given back), c has three.
    assert_eq!(seen.keys().last().map(String::as_str), Some("a"));
}
