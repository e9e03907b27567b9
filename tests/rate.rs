//! Paused-time acceptance tests of [`RateLimitLayer`]: admission within the
//! limits in every sliding window, one limiter across clones, reconciliation
//! from usage, cancellation, priority and aging, queue bounds, waits and
//! deadlines, 429 cooldowns, learning from headers, groups and eviction,
//! thresholds and configuration errors.
//!
//! The inner service is a mock that records when each request reached it
//! (tokio's clock, paused) and what it cost, and answers what the test asks.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use support::poll_once;
use tokio::time::{Instant, sleep, sleep_until};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_llm_resilience::BoxError;
use tower_llm_resilience::error::{InvalidConfig, QueueTimeout, RateLimited, RequestTooLarge};
use tower_llm_resilience::queue::{Priority, QueueConfig, QueueFull};
use tower_llm_resilience::rate::{
    Dimension, GroupStats, Learning, Limit, Limits, RateLimitLayer, ThresholdEvent,
};
use tower_llm_resilience::request::{Deadline, KeyId, ReplayBody, RequestMeta};
use tower_llm_resilience::response::ResponseBody;

const R: usize = 0;
const I: usize = 1;
const O: usize = 2;
const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------- the mock

/// What the mock saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    /// When it reached the inner service.
    at: Instant,
    /// Requests, estimated input tokens, max_tokens (what the layer reserved).
    cost: [u64; 3],
    key: Option<String>,
    model: Option<String>,
    /// The `x-test-id` header.
    id: Option<u64>,
}

type Reply = dyn Fn(&Seen) -> (Duration, Response<Full<Bytes>>) + Send + Sync;

/// An inner service recording each call and answering `reply(seen)` after
/// the delay it returns.
#[derive(Clone)]
struct Mock {
    log: Arc<Mutex<Vec<Seen>>>,
    reply: Arc<Reply>,
}

impl Mock {
    fn new(
        reply: impl Fn(&Seen) -> (Duration, Response<Full<Bytes>>) + Send + Sync + 'static,
    ) -> Self {
        Mock {
            log: Arc::default(),
            reply: Arc::new(reply),
        }
    }

    /// Answers 200 with usage equal to the reservation, at once.
    fn exact() -> Self {
        Mock::new(|s| (Duration::ZERO, usage(s.cost[I], s.cost[O], 0)))
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<ReplayBody>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
    > + Clone
    + Send
    + 'static {
        let log = Arc::clone(&self.log);
        let reply = Arc::clone(&self.reply);
        service_fn(move |req: Request<ReplayBody>| {
            let meta = RequestMeta::of(&req).cloned();
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
            };
            let cost = match &meta {
                Some(m) if m.is_parsed() => [1, m.input_tokens(), m.max_tokens().unwrap_or(4096)],
                _ => [1, 0, 0],
            };
            let seen = Seen {
                at: Instant::now(),
                cost,
                key: header("x-api-key"),
                model: meta.as_ref().and_then(|m| m.model().map(String::from)),
                id: header("x-test-id").and_then(|v| v.parse().ok()),
            };
            let (delay, res) = reply(&seen);
            log.lock().unwrap().push(seen);
            async move {
                if !delay.is_zero() {
                    sleep(delay).await;
                }
                Ok::<_, Infallible>(res)
            }
        })
    }

    fn calls(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    fn times(&self) -> Vec<Duration> {
        self.calls()
            .iter()
            .map(|s| s.at - T0.with(|t| t.get().unwrap()))
            .collect()
    }
}

thread_local! {
    /// The start of the current test (paused clock), for readable times.
    static T0: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

fn start_clock() -> Instant {
    let now = Instant::now();
    T0.with(|t| t.set(Some(now)));
    now
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// 200 with an Anthropic `usage` object.
fn usage(input: u64, output: u64, cache_read: u64) -> Response<Full<Bytes>> {
    json(
        StatusCode::OK,
        format!(
            r#"{{"type":"message","content":[{{"type":"text","text":"ok"}}],"usage":{{"input_tokens":{input},"output_tokens":{output},"cache_creation_input_tokens":0,"cache_read_input_tokens":{cache_read}}}}}"#
        ),
    )
}

fn with_headers(
    mut res: Response<Full<Bytes>>,
    headers: &[(&str, String)],
) -> Response<Full<Bytes>> {
    for (name, value) in headers {
        res.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    res
}

fn too_many(retry_after: &str) -> Response<Full<Bytes>> {
    with_headers(
        json(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#.into(),
        ),
        &[("retry-after", retry_after.into())],
    )
}

/// An Anthropic Messages request.
fn msg(key: &str, model: &str, prompt: usize, max_tokens: u64) -> Request<ReplayBody> {
    let body = serde_json::json!({
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "a".repeat(prompt)}],
    })
    .to_string();
    support::http::anthropic("https://api.anthropic.com/v1/messages", key, body)
}

fn with_id(mut req: Request<ReplayBody>, id: u64) -> Request<ReplayBody> {
    req.headers_mut()
        .insert("x-test-id", id.to_string().parse().unwrap());
    req
}

/// What the layer reserves for `req`, by the crate's own estimate.
fn cost_of(req: &Request<ReplayBody>) -> [u64; 3] {
    let m = RequestMeta::parse(req.uri().path(), req.headers(), req.body().as_bytes());
    assert!(m.is_parsed());
    [1, m.input_tokens(), m.max_tokens().unwrap()]
}

/// Sends and reads the whole response body (which settles the reservation).
async fn send<S>(svc: S, req: Request<ReplayBody>) -> Result<StatusCode, BoxError>
where
    S: Service<Request<ReplayBody>, Response = Response<ResponseBody>, Error = BoxError>,
{
    let res = svc.oneshot(req).await?;
    let status = res.status();
    res.into_body().collect().await?;
    Ok(status)
}

fn per(amount: u64, period: Duration, burst: u64) -> Limit {
    Limit::new(amount, period, burst).unwrap()
}

fn only_group(layer: &RateLimitLayer) -> GroupStats {
    let stats = layer.stats();
    assert_eq!(stats.len(), 1, "{stats:#?}");
    stats.into_iter().next().unwrap()
}

fn group(layer: &RateLimitLayer, key: &str, model: &str) -> GroupStats {
    let id = KeyId::from_headers(&msg(key, model, 0, 1).headers().clone());
    layer
        .stats()
        .into_iter()
        .find(|g| g.key == id && g.model.as_deref() == Some(model))
        .unwrap_or_else(|| panic!("no group ({key}, {model})"))
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Units admitted in any closed window `[t, t + w]` stay within
/// `burst + amount · w / per` (checked exactly, in integers).
fn assert_windows(calls: &[Seen], d: usize, limit: Limit) {
    let mut points: Vec<(Instant, u64)> = calls.iter().map(|s| (s.at, s.cost[d])).collect();
    points.sort_by_key(|p| p.0);
    let per_ns = limit.per().as_nanos();
    for (i, &(start, _)) in points.iter().enumerate() {
        let mut units: u128 = 0;
        for &(at, c) in &points[i..] {
            units += u128::from(c);
            let w = (at - start).as_nanos();
            assert!(
                units * per_ns
                    <= u128::from(limit.burst()) * per_ns + u128::from(limit.amount()) * w,
                "dimension {d}: {units} units in {w} ns exceed {limit:?}"
            );
        }
    }
}

// ------------------------------------------------ 1. sliding-window property

/// Few cases (each runs a whole paused-time scenario), a fixed seed so runs
/// are reproducible, no regression files.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 32,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7a7e_11b1),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[derive(Debug, Clone)]
struct Arrival {
    at_ms: u64,
    prompt: usize,
    max_tokens: u64,
    report_usage: bool,
    /// Which of three (key, model) groups.
    group: usize,
    priority: u8,
}

const GROUPS: [(&str, &str); 3] = [("k0", "m"), ("k1", "m"), ("k0", "m2")];

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        0u64..3_000,
        0usize..700,
        1u64..400,
        any::<bool>(),
        0usize..3,
        any::<u8>(),
    )
        .prop_map(
            |(at_ms, prompt, max_tokens, report_usage, group, priority)| Arrival {
                at_ms,
                prompt,
                max_tokens,
                report_usage,
                group,
                priority,
            },
        )
}

/// An optional limit per second with a burst at least `min_burst` (so every
/// cost fits).
fn opt_limit(
    amounts: std::ops::Range<u64>,
    min_burst: u64,
) -> impl Strategy<Value = Option<Limit>> {
    proptest::option::of((amounts, 0u64..3, 1u64..4)).prop_map(move |o| {
        o.map(|(amount, extra, secs)| {
            let burst = min_burst.max(amount / 2) + extra * min_burst;
            per(amount, Duration::from_secs(secs), burst)
        })
    })
}

proptest! {
    #![proptest_config(config())]

    /// Guards the headline promise: whatever the arrivals, priorities and
    /// limits, the units that reach the provider in ANY window of length W
    /// stay within rate × W + burst, in every dimension of every group.
    #[test]
    fn admitted_units_never_exceed_rate_times_window_plus_burst(
        arrivals in proptest::collection::vec(arrival(), 1..40),
        requests in opt_limit(1..12, 1),
        input in opt_limit(50..2_000, 210),
        output in opt_limit(50..2_000, 400),
    ) {
        let limits = [requests, input, output];
        paused_runtime().block_on(async move {
            let t0 = start_clock();
            let mut l = Limits::unlimited();
            for (d, lim) in Dimension::ALL.into_iter().zip(limits) {
                if let Some(lim) = lim {
                    l = l.with(d, lim);
                }
            }
            let layer = RateLimitLayer::new(l);
            let mock = Mock::new(|s| {
                let res = if s.id == Some(1) {
                    usage(s.cost[I], s.cost[O], 0)
                } else {
                    json(StatusCode::OK, r#"{"type":"message"}"#.into())
                };
                (Duration::from_millis(30), res)
            });
            let svc = layer.layer(mock.service());
            let tasks: Vec<_> = arrivals
                .iter()
                .map(|a| {
                    let svc = svc.clone();
                    let (key, model) = GROUPS[a.group];
                    let mut req = with_id(msg(key, model, a.prompt, a.max_tokens), u64::from(a.report_usage));
                    req.headers_mut().insert("x-llm-priority", u16::from(a.priority).into());
                    let at = t0 + Duration::from_millis(a.at_ms);
                    tokio::spawn(async move {
                        sleep_until(at).await;
                        send(svc, req).await
                    })
                })
                .collect();
            for t in tasks {
                assert_eq!(t.await.unwrap().unwrap(), StatusCode::OK);
            }
            let calls = mock.calls();
            assert_eq!(calls.len(), arrivals.len());
            for (key, model) in GROUPS {
                let calls: Vec<Seen> = calls
                    .iter()
                    .filter(|s| s.key.as_deref() == Some(key) && s.model.as_deref() == Some(model))
                    .cloned()
                    .collect();
                for (d, lim) in limits.iter().enumerate() {
                    if let Some(lim) = lim {
                        assert_windows(&calls, d, *lim);
                    }
                }
            }
        });
    }
}

// ------------------------------------------------------- 2. shared limiter

/// Guards "shared state by default" (tower's per-instance `RateLimit`
/// trap): 64 clones and several `layer()` calls of one layer
/// value admit no more than the one limit.
#[tokio::test(start_paused = true)]
async fn clones_and_layer_calls_share_one_limiter() {
    start_clock();
    let layer =
        RateLimitLayer::new(Limits::unlimited().requests(per(10, Duration::from_secs(60), 10)));
    let mock = Mock::exact();
    let services: Vec<_> = (0..4).map(|_| layer.layer(mock.service())).collect();
    let layer2 = layer.clone();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let svc = if i % 2 == 0 {
            services[i % 4].clone()
        } else {
            layer2.layer(mock.service())
        };
        for _ in 0..2 {
            let svc = svc.clone();
            tasks.push(tokio::spawn(send(svc, msg("k", "m", 10, 10))));
        }
    }
    sleep(Duration::from_millis(5_500)).await;
    assert_eq!(mock.calls().len(), 10, "burst of 10, then one per 6 s");
    assert_eq!(layer.queue().len(), 128 - 10);
    assert_eq!(layer.stats().len(), 1, "one group for all clones");
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    assert_eq!(layer.queue().len(), 0);
}

// --------------------------------------------------------- 3. reconciliation

fn tokens_layer() -> RateLimitLayer {
    RateLimitLayer::new(Limits::per_minute(100, 10_000, 1_000).unwrap())
}

/// Guards the output refund: usage below `max_tokens` gives the rest back
/// when the body ends, so the next request is admitted sooner.
#[tokio::test(start_paused = true)]
async fn unused_output_tokens_are_refunded() {
    start_clock();
    let layer = tokens_layer();
    let mock = Mock::new(|s| (Duration::ZERO, usage(s.cost[I], 100, 0)));
    let svc = layer.layer(mock.service());
    send(svc.clone(), msg("k", "m", 30, 800)).await.unwrap();
    assert_eq!(only_group(&layer).available[O], Some(900));
    // Without the refund this would wait 36 s for 600 output tokens.
    send(svc.clone(), msg("k", "m", 30, 800)).await.unwrap();
    assert_eq!(mock.times(), [Duration::ZERO, Duration::ZERO]);
    assert_eq!(only_group(&layer).available[O], Some(800));
}

/// Guards the input charge: usage above the estimate is charged (a debt).
#[tokio::test(start_paused = true)]
async fn under_estimated_input_tokens_are_charged() {
    start_clock();
    let layer = tokens_layer();
    let req = msg("k", "m", 70, 10);
    let est = cost_of(&req)[I];
    let mock = Mock::new(|s| (Duration::ZERO, usage(s.cost[I] + 3_000, 10, 0)));
    send(layer.layer(mock.service()), req).await.unwrap();
    assert_eq!(only_group(&layer).available[I], Some(10_000 - est - 3_000));
}

/// Guards the ITPM rule: Anthropic cache reads do not count toward input
/// tokens (cache writes do).
#[tokio::test(start_paused = true)]
async fn cache_reads_do_not_count_toward_input_tokens() {
    start_clock();
    let layer = tokens_layer();
    let mock = Mock::new(|_| {
        (
            Duration::ZERO,
            json(
                StatusCode::OK,
                r#"{"usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":20,"cache_read_input_tokens":5000}}"#.into(),
            ),
        )
    });
    send(layer.layer(mock.service()), msg("k", "m", 700, 10))
        .await
        .unwrap();
    let g = only_group(&layer);
    assert_eq!(g.available[I], Some(10_000 - 30));
    assert_eq!(g.available[O], Some(1_000 - 5));
}

/// Guards `Settle::Refused`: an error response used no tokens (refunded)
/// but the request still counts.
#[tokio::test(start_paused = true)]
async fn error_response_refunds_tokens_but_keeps_the_request() {
    start_clock();
    let layer = tokens_layer();
    let mock = Mock::new(|_| {
        (
            Duration::ZERO,
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#.into(),
            ),
        )
    });
    let status = send(layer.layer(mock.service()), msg("k", "m", 700, 500))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let g = only_group(&layer);
    assert_eq!(g.available, [Some(99), Some(10_000), Some(1_000), None]);
    assert_eq!(g.in_flight, 0);
}

fn sse(input: u64, output: u64, terminal: bool) -> Response<Full<Bytes>> {
    let mut body = format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"usage\":{{\"input_tokens\":{input},\"output_tokens\":1}}}}}}\n\n\
         event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"hi\"}}}}\n\n\
         event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":{output}}}}}\n\n"
    );
    if terminal {
        body.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Guards reconciliation of streams: the usage of an SSE response (input
/// from `message_start`, output from `message_delta`) settles the
/// reservation; a stream cut before `message_stop` corrects only the input
/// (its output count may be partial), so the output estimate stands.
#[tokio::test(start_paused = true)]
async fn sse_usage_reconciles_and_truncated_streams_keep_the_output_estimate() {
    start_clock();
    let layer = tokens_layer();
    let complete = Mock::new(|_| (Duration::ZERO, sse(40, 100, true)));
    let status = send(layer.layer(complete.service()), msg("k", "m", 10, 800))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        only_group(&layer).available[I..=O],
        [Some(10_000 - 40), Some(1_000 - 100)]
    );

    let layer = tokens_layer();
    let cut = Mock::new(|_| (Duration::ZERO, sse(40, 100, false)));
    send(layer.layer(cut.service()), msg("k", "m", 10, 800))
        .await
        .unwrap();
    assert_eq!(
        only_group(&layer).available[I..=O],
        [Some(10_000 - 40), Some(1_000 - 800)]
    );
}

/// Ready for the first `n` readiness checks (over all clones), then never.
#[derive(Clone)]
struct ReadyTimes(Arc<std::sync::atomic::AtomicUsize>);

impl ReadyTimes {
    fn new(n: usize) -> Self {
        ReadyTimes(Arc::new(std::sync::atomic::AtomicUsize::new(n)))
    }
}

impl Service<Request<ReplayBody>> for ReadyTimes {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        use std::sync::atomic::Ordering::SeqCst;
        match self.0.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)) {
            Ok(_) => Poll::Ready(Ok(())),
            Err(_) => Poll::Pending,
        }
    }
    fn call(&mut self, _: Request<ReplayBody>) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::new(Bytes::new()))))
    }
}

/// Guards `Hold::drop` before sending: a reservation whose request never
/// left (admitted after waiting, then its inner service never ready) is
/// given back in full, request included.
#[tokio::test(start_paused = true)]
async fn dropped_before_sending_refunds_everything() {
    start_clock();
    let layer = tokens_layer();
    // Ready for the two calls below, never again.
    let mut svc = layer.layer(ReadyTimes::new(2));
    // The first takes 900 of the 1,000 output tokens (its body dropped
    // unread: the estimate stands), so the second must wait.
    svc.ready().await.unwrap();
    drop(svc.call(msg("k", "m", 30, 900)).await.unwrap());
    let req = msg("k", "m", 700, 500);
    let cost = cost_of(&req);
    svc.ready().await.unwrap();
    let before;
    {
        let mut fut = pin!(svc.call(req));
        assert!(poll_once(fut.as_mut()).is_none());
        let waiting = only_group(&layer);
        assert_eq!(waiting.queued, 1);
        // Admitted once 400 output tokens have come back (24 s), then stuck
        // behind the inner service's readiness.
        sleep(Duration::from_secs(25)).await;
        assert!(poll_once(fut.as_mut()).is_none());
        let g = only_group(&layer);
        assert_eq!(g.queued, 0);
        assert_eq!(g.in_flight, 0, "reserved, not sent");
        before = g.available;
    }
    // The future is dropped: everything it reserved comes back.
    let after = only_group(&layer).available;
    let back: Vec<u64> = (0..3)
        .map(|d| after[d].unwrap() - before[d].unwrap())
        .collect();
    assert_eq!(back, cost, "everything reserved comes back");
    assert_eq!(only_group(&layer).in_flight, 0);
}

/// Guards `Hold::drop` after sending: the provider may have counted it, so
/// the estimate stands; and a response body dropped unread keeps it too.
#[tokio::test(start_paused = true)]
async fn dropped_after_sending_keeps_the_estimate() {
    start_clock();
    let layer = tokens_layer();
    // Answers after an hour: dropped while in flight.
    let slow = Mock::new(|s| (Duration::from_secs(3600), usage(s.cost[I], 1, 0)));
    let mut svc = layer.layer(slow.service());
    let req = msg("k", "m", 700, 500);
    let cost = cost_of(&req);
    {
        let mut fut = pin!(svc.call(req));
        assert!(poll_once(fut.as_mut()).is_none());
        assert_eq!(only_group(&layer).in_flight, 1);
    }
    let g = only_group(&layer);
    assert_eq!(g.in_flight, 0);
    assert_eq!(
        g.available,
        [
            Some(99),
            Some(10_000 - cost[I]),
            Some(1_000 - cost[O]),
            None
        ]
    );

    // A response whose body is dropped unread: its usage is unknown.
    let quick = Mock::new(|_| (Duration::ZERO, usage(1, 1, 0)));
    let req = msg("k", "m", 700, 300);
    let cost2 = cost_of(&req);
    let res = layer.layer(quick.service()).oneshot(req).await.unwrap();
    drop(res);
    let g = only_group(&layer);
    assert_eq!(
        g.available,
        [
            Some(98),
            Some(10_000 - cost[I] - cost2[I]),
            Some(1_000 - cost[O] - cost2[O]),
            None
        ]
    );
}

// ------------------------------------------------------------ 4. cancellation

#[derive(Debug, Clone)]
struct Plan {
    at_ms: u64,
    prompt: usize,
    max_tokens: u64,
    delay_ms: u64,
    /// 0: usage = estimate; 1: less output than reserved; 2: HTTP 500.
    reply: u8,
    abort_ms: Option<u64>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        0u64..2_000,
        0usize..1_400,
        1u64..600,
        0u64..600,
        0u8..3,
        proptest::option::of(0u64..3_000),
    )
        .prop_map(
            |(at_ms, prompt, max_tokens, delay_ms, reply, abort_ms)| Plan {
                at_ms,
                prompt,
                max_tokens,
                delay_ms,
                reply,
                abort_ms,
            },
        )
}

#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    response: Option<StatusCode>,
    body_done: bool,
}

proptest! {
    #![proptest_config(config())]

    /// Guards cancellation safety: whatever is dropped while waiting, while
    /// admitted but not yet sent, while in flight or with its body unread, the queue gives every place back
    /// and the buckets hold exactly what the provider may have counted.
    ///
    /// The buckets refill over ~10⁶ s, so within the test's few seconds
    /// `available` is exactly `burst − Σ what stands`.
    #[test]
    fn cancellation_restores_capacity_and_queue_slots(
        plans in proptest::collection::vec(plan(), 1..24),
        bursts in (3u64..12, 500u64..3_000, 400u64..2_000),
        ready_ms in 0u64..1_500,
    ) {
        paused_runtime().block_on(async move {
            let t0 = start_clock();
            let long = Duration::from_secs(1_000_000);
            let limits = Limits::unlimited()
                .requests(per(bursts.0, long, bursts.0))
                .input_tokens(per(bursts.1, long, bursts.1))
                .output_tokens(per(bursts.2, long, bursts.2));
            let layer = RateLimitLayer::new(limits);
            let replies: Arc<Vec<Plan>> = Arc::new(plans.clone());
            let mock = {
                let replies = Arc::clone(&replies);
                Mock::new(move |s| {
                    let p = &replies[s.id.unwrap() as usize];
                    let res = match p.reply {
                        0 => usage(s.cost[I], s.cost[O], 0),
                        1 => usage(s.cost[I], s.cost[O] / 3, 0),
                        _ => json(StatusCode::INTERNAL_SERVER_ERROR, "{}".into()),
                    };
                    (Duration::from_millis(p.delay_ms), res)
                })
            };
            // The inner service is not ready before `ready_ms`: requests
            // admitted before then hold a reservation without being sent.
            let svc = layer.layer(ReadyAt {
                inner: mock.service(),
                ready_at: t0 + Duration::from_millis(ready_ms),
                sleep: None,
            });
            let progress = Arc::new(Mutex::new(vec![Progress::default(); plans.len()]));
            let mut tasks = Vec::new();
            for (i, p) in plans.iter().enumerate() {
                let svc = svc.clone();
                let req = with_id(msg("k", "m", p.prompt, p.max_tokens), i as u64);
                let at = t0 + Duration::from_millis(p.at_ms);
                let progress = Arc::clone(&progress);
                tasks.push(tokio::spawn(async move {
                    sleep_until(at).await;
                    let res = svc.oneshot(req).await?;
                    progress.lock().unwrap()[i].response = Some(res.status());
                    res.into_body().collect().await?;
                    progress.lock().unwrap()[i].body_done = true;
                    Ok::<_, BoxError>(())
                }));
            }
            let mut aborts: Vec<(u64, usize)> = plans
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.abort_ms.map(|a| (a, i)))
                .collect();
            aborts.sort_unstable();
            for (a, i) in aborts {
                sleep_until(t0 + Duration::from_millis(a)).await;
                tasks[i].abort();
            }
            sleep_until(t0 + Duration::from_secs(5)).await;
            for t in &tasks {
                t.abort();
            }
            for t in tasks {
                if let Ok(Err(e)) = t.await {
                    assert!(e.is::<RequestTooLarge>(), "{e}");
                }
            }
            // What the provider may have counted, per request.
            let progress = progress.lock().unwrap().clone();
            let mut used = [0u64; 3];
            for s in mock.calls() {
                let i = s.id.unwrap() as usize;
                let p = &progress[i];
                let stands = match (p.response, p.body_done) {
                    (Some(st), _) if !st.is_success() => [1, 0, 0],
                    (Some(_), true) if plans[i].reply == 1 => [1, s.cost[I], s.cost[O] / 3],
                    _ => s.cost,
                };
                for d in 0..3 {
                    used[d] += stands[d];
                }
            }
            assert_eq!(layer.queue().len(), 0, "queue places given back");
            if layer.stats().is_empty() {
                assert_eq!(used, [0; 3], "no request was made");
                return;
            }
            let g = only_group(&layer);
            assert_eq!(g.queued, 0);
            assert_eq!(g.in_flight, 0);
            let bursts = [bursts.0, bursts.1, bursts.2];
            for d in 0..3 {
                assert_eq!(g.available[d], Some(bursts[d] - used[d]), "dimension {d}, {progress:?}");
            }
        });
    }
}

// ----------------------------------------------------- 5. priority and aging

fn one_per_second() -> Limits {
    Limits::unlimited().requests(per(1, SEC, 1))
}

/// Guards the queue order: higher priority first (extension, then the
/// `x-llm-priority` header), FIFO within a priority.
#[tokio::test(start_paused = true)]
async fn waiters_are_admitted_by_priority_then_arrival() {
    start_clock();
    let layer = RateLimitLayer::new(one_per_second());
    let mock = Mock::exact();
    let svc = layer.layer(mock.service());
    send(svc.clone(), with_id(msg("k", "m", 1, 1), 0))
        .await
        .unwrap();
    let order: [(u64, Option<Priority>, Option<&str>); 6] = [
        (1, Some(Priority::LOW), None),
        (2, None, None),
        (3, Some(Priority::HIGH), None),
        (4, None, Some("255")),
        (5, None, None),
        (6, Some(Priority::HIGH), Some("1")),
    ];
    let mut tasks = Vec::new();
    for (id, prio, header) in order {
        let mut req = with_id(msg("k", "m", 1, 1), id);
        if let Some(p) = prio {
            req.extensions_mut().insert(p);
        }
        if let Some(h) = header {
            req.headers_mut()
                .insert("x-llm-priority", h.parse().unwrap());
        }
        tasks.push(tokio::spawn(send(svc.clone(), req)));
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let ids: Vec<u64> = mock.calls().iter().map(|s| s.id.unwrap()).collect();
    // 6: the extension wins over its header.
    assert_eq!(ids, [0, 4, 3, 6, 2, 5, 1]);
    let times = mock.times();
    assert_eq!(times, (0..7).map(|s| s * SEC).collect::<Vec<_>>());
}

/// Guards aging: a low-priority waiter is not starved by a steady stream of
/// high-priority newcomers; it overtakes those that arrive more than
/// (HIGH − LOW) · aging after it.
#[tokio::test(start_paused = true)]
async fn aging_lets_low_priority_overtake_later_high_priority() {
    let t0 = start_clock();
    let layer = RateLimitLayer::builder()
        .limits(one_per_second())
        .queue(QueueConfig::new(100, Duration::from_millis(100)).unwrap())
        .build()
        .unwrap();
    let mock = Mock::exact();
    let svc = layer.layer(mock.service());
    send(svc.clone(), with_id(msg("k", "m", 1, 1), 0))
        .await
        .unwrap();
    let mut low = msg("k", "m", 1, 1);
    low.extensions_mut().insert(Priority::LOW);
    let low = tokio::spawn(send(svc.clone(), with_id(low, 1000)));
    let mut tasks = Vec::new();
    for k in 0..20u64 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            sleep_until(t0 + Duration::from_millis(k * 1000 + 500)).await;
            let mut req = with_id(msg("k", "m", 1, 1), k + 1);
            req.extensions_mut().insert(Priority::HIGH);
            send(svc, req).await
        }));
    }
    low.await.unwrap().unwrap();
    let calls = mock.calls();
    let low_at = calls.iter().find(|s| s.id == Some(1000)).unwrap().at - t0;
    // LOW: vtime 0 + 191 · 100 ms = 19.1 s; HIGH k: k + 0.5 + 63 · 100 ms.
    // HIGH 0..=12 (vtime ≤ 18.8 s) go first, at 1..=13 s; then LOW.
    assert_eq!(low_at, 14 * SEC, "{:?}", mock.times());
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// Guards the "a newcomer does not overtake the queue" rule: a cheap request
/// arriving while an expensive one waits for tokens takes its place behind
/// it instead of taking the tokens the waiter is accumulating (which could
/// starve large requests forever).
#[tokio::test(start_paused = true)]
async fn cheap_newcomer_does_not_overtake_a_waiting_head() {
    let t0 = start_clock();
    // 1,000 input tokens per second, burst 1,000.
    let layer = RateLimitLayer::new(Limits::unlimited().input_tokens(per(1_000, SEC, 1_000)));
    let mock = Mock::exact();
    let svc = layer.layer(mock.service());
    let big = msg("k", "m", 3_000, 1);
    let big_cost = cost_of(&big)[I];
    assert!(big_cost > 800 && big_cost <= 1_000);
    send(svc.clone(), with_id(big, 0)).await.unwrap();
    // The second big one waits for the bucket to refill.
    let waiting = tokio::spawn(send(svc.clone(), with_id(msg("k", "m", 3_000, 1), 1)));
    sleep(Duration::from_millis(300)).await;
    // A small one arrives: 300 tokens are back, enough for it alone.
    let small = tokio::spawn(send(svc.clone(), with_id(msg("k", "m", 10, 1), 2)));
    waiting.await.unwrap().unwrap();
    small.await.unwrap().unwrap();
    let ids: Vec<u64> = mock.calls().iter().map(|s| s.id.unwrap()).collect();
    assert_eq!(ids, [0, 1, 2], "times {:?}", mock.times());
    let _ = t0;
}

/// Guards the waiter's give-up timer: a head overtaken by a newcomer of
/// higher priority keeps waiting until its own maximum wait, not until the
/// bucket time it was sleeping for when it was overtaken.
#[tokio::test(start_paused = true)]
async fn overtaken_head_does_not_time_out_early() {
    start_clock();
    let layer = RateLimitLayer::builder()
        .limits(one_per_second())
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let mock = Mock::exact();
    let svc = layer.layer(mock.service());
    send(svc.clone(), with_id(msg("k", "m", 1, 1), 0))
        .await
        .unwrap();
    let first = tokio::spawn(send(svc.clone(), with_id(msg("k", "m", 1, 1), 1)));
    sleep(Duration::from_millis(100)).await;
    let mut high = with_id(msg("k", "m", 1, 1), 2);
    high.extensions_mut().insert(Priority::HIGHEST);
    let high = tokio::spawn(send(svc.clone(), high));
    high.await.unwrap().unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(mock.times(), [Duration::ZERO, SEC, 2 * SEC]);
}

// ------------------------------------------------------- 6. immediate errors

/// Guards "QueueFull at once": with the queue at its bound the next request
/// fails on its first poll, no time passing.
#[tokio::test(start_paused = true)]
async fn queue_full_fails_on_first_poll() {
    start_clock();
    let layer = RateLimitLayer::builder()
        .limits(one_per_second())
        .queue(QueueConfig::new(2, Duration::from_millis(250)).unwrap())
        .build()
        .unwrap();
    let mock = Mock::exact();
    let mut svc = layer.layer(mock.service());
    send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
    let mut a = Box::pin(svc.call(msg("k", "m", 1, 1)));
    let mut b = Box::pin(svc.call(msg("k", "m", 1, 1)));
    assert!(poll_once(a.as_mut()).is_none());
    assert!(poll_once(b.as_mut()).is_none());
    assert_eq!(layer.queue().len(), 2);
    let before = Instant::now();
    let mut c = Box::pin(svc.call(msg("k", "m", 1, 1)));
    let Some(Err(e)) = poll_once(c.as_mut()) else {
        panic!("not refused at once");
    };
    assert_eq!(e.downcast_ref::<QueueFull>(), Some(&QueueFull::new(2)));
    assert_eq!(Instant::now(), before);
    drop((a, b));
    assert_eq!(layer.queue().len(), 0);
}

/// Guards `RequestTooLarge`: a cost that can never fit fails at once
/// instead of waiting forever.
#[tokio::test(start_paused = true)]
async fn cost_above_burst_fails_at_once() {
    start_clock();
    let layer = RateLimitLayer::new(Limits::per_minute(50, 20_000, 1_000).unwrap());
    let mock = Mock::exact();
    let mut svc = layer.layer(mock.service());
    let mut fut = Box::pin(svc.call(msg("k", "m", 10, 1_001)));
    let Some(Err(e)) = poll_once(fut.as_mut()) else {
        panic!("not refused at once");
    };
    assert!(e.is::<RequestTooLarge>(), "{e}");
    let e = e.downcast_ref::<RequestTooLarge>().unwrap();
    assert_eq!(
        (e.dimension, e.cost, e.burst),
        (Dimension::OutputTokens.name(), 1_001, 1_000)
    );
    assert!(mock.calls().is_empty());
    // Also when others are already waiting in the group.
    send(svc.clone(), msg("k", "m", 10, 1_000)).await.unwrap();
    let mut waiting = Box::pin(svc.call(msg("k", "m", 10, 1_000)));
    assert!(poll_once(waiting.as_mut()).is_none());
    let mut fut = Box::pin(svc.call(msg("k", "m", 10, 5_000)));
    let Some(Err(e)) = poll_once(fut.as_mut()) else {
        panic!("not refused at once behind a waiter");
    };
    assert!(e.is::<RequestTooLarge>(), "{e}");
}

// --------------------------------------------------- 7. waits and deadlines

/// Guards `max_wait`: the head and a waiter behind it each give up with
/// `QueueTimeout` exactly at their maximum wait.
#[tokio::test(start_paused = true)]
async fn max_wait_gives_queue_timeout_to_the_millisecond() {
    let t0 = start_clock();
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per(1, Duration::from_secs(10), 1)))
        .max_wait(Duration::from_millis(1_500))
        .build()
        .unwrap();
    let mock = Mock::exact();
    let svc = layer.layer(mock.service());
    send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
    let timed = |svc: tower_llm_resilience::rate::RateLimit<_>| async move {
        let r = send(svc, msg("k", "m", 1, 1)).await;
        (Instant::now(), r)
    };
    let head = tokio::spawn(timed(svc.clone()));
    sleep(Duration::from_millis(100)).await;
    let behind = tokio::spawn(timed(svc.clone()));
    let (at, r) = head.await.unwrap();
    assert_eq!(at - t0, Duration::from_millis(1_500));
    let e = r.unwrap_err();
    assert_eq!(
        e.downcast_ref::<QueueTimeout>(),
        Some(&QueueTimeout::new(Duration::from_millis(1_500)))
    );
    let (at, r) = behind.await.unwrap();
    assert_eq!(at - t0, Duration::from_millis(1_600));
    assert!(r.unwrap_err().is::<QueueTimeout>());
    assert_eq!(mock.calls().len(), 1);
    assert_eq!(layer.queue().len(), 0);
}

/// Guards the release of a queue place on completion: a request that gave
/// up (`QueueTimeout`) leaves the queue when it completes, not only when its
/// future is dropped, so it neither counts toward the bound nor blocks the
/// waiters behind it.
#[tokio::test(start_paused = true)]
async fn a_request_that_gave_up_leaves_the_queue_at_once() {
    let t0 = start_clock();
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per(1, SEC, 1)))
        .build()
        .unwrap();
    let mock = Mock::exact();
    let mut svc = layer.layer(mock.service());
    send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
    let mut req = msg("k", "m", 1, 1);
    req.extensions_mut().insert(Priority::HIGH);
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(300)));
    let mut impatient = Box::pin(svc.call(req));
    assert!(poll_once(impatient.as_mut()).is_none());
    let behind = tokio::spawn(send(svc.clone(), msg("k", "m", 1, 1)));
    let r = std::future::poll_fn(|cx| impatient.as_mut().poll(cx)).await;
    assert!(r.unwrap_err().is::<QueueTimeout>());
    assert_eq!(Instant::now() - t0, Duration::from_millis(300));
    assert_eq!(layer.queue().len(), 1, "only the one behind still waits");
    behind.await.unwrap().unwrap();
    assert_eq!(mock.times(), [Duration::ZERO, SEC]);
    drop(impatient);
}

/// Guards fail-fast: a request whose wait would pass its `Deadline` gets
/// `RateLimited` at once with the wait as `retry_after`; one whose wait fits
/// waits and succeeds.
#[tokio::test(start_paused = true)]
async fn fail_fast_with_deadline() {
    let t0 = start_clock();
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per(1, Duration::from_secs(10), 1)))
        .fail_fast(true)
        .build()
        .unwrap();
    let mock = Mock::exact();
    let mut svc = layer.layer(mock.service());
    send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
    sleep(Duration::from_secs(1)).await;

    let mut req = msg("k", "m", 1, 1);
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(2)));
    let mut fut = Box::pin(svc.call(req));
    let Some(Err(e)) = poll_once(fut.as_mut()) else {
        panic!("not refused at once");
    };
    assert_eq!(
        e.downcast_ref::<RateLimited>(),
        Some(&RateLimited::new(Duration::from_secs(9)))
    );
    assert_eq!(layer.queue().len(), 0);

    let mut req = msg("k", "m", 1, 1);
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(9)));
    assert_eq!(send(svc.clone(), req).await.unwrap(), StatusCode::OK);
    assert_eq!(Instant::now() - t0, Duration::from_secs(10));
    assert_eq!(mock.times(), [Duration::ZERO, Duration::from_secs(10)]);
}

// ------------------------------------------------------------ 8. 429 cooldown

/// Guards the shared 429 gate: after a 429 with `retry-after: 2`, no request
/// of that (key, model) reaches the provider for 2 s (+ jitter ≤ the
/// configured bound); other keys and models are unaffected; the 100 paused
/// callers come back spread over the jitter, not in lockstep.
#[tokio::test(start_paused = true)]
async fn retry_after_429_pauses_only_its_group_with_jitter() {
    let t0 = start_clock();
    let jitter = Duration::from_millis(500);
    let layer = RateLimitLayer::builder()
        .limits(Limits::per_minute(10_000, 10_000_000, 10_000_000).unwrap())
        .cooldown_jitter(jitter)
        .build()
        .unwrap();
    let mock = Mock::new(|s| {
        let res = if s.id == Some(0) {
            too_many("2")
        } else {
            usage(s.cost[I], s.cost[O], 0)
        };
        (Duration::ZERO, res)
    });
    let svc = layer.layer(mock.service());
    let status = send(svc.clone(), with_id(msg("A", "m1", 1, 1), 0))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(group(&layer, "A", "m1").cooldown.is_some());
    let mut tasks = Vec::new();
    for i in 1..=100 {
        tasks.push(tokio::spawn(send(
            svc.clone(),
            with_id(msg("A", "m1", 1, 1), i),
        )));
    }
    send(svc.clone(), with_id(msg("B", "m1", 1, 1), 200))
        .await
        .unwrap();
    send(svc.clone(), with_id(msg("A", "m2", 1, 1), 201))
        .await
        .unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let calls = mock.calls();
    let mut herd = Vec::new();
    for s in &calls {
        let at = s.at - t0;
        match s.id.unwrap() {
            0 | 200 | 201 => assert_eq!(at, Duration::ZERO, "id {:?}", s.id),
            _ => {
                assert!(at >= 2 * SEC && at <= 2 * SEC + jitter, "{at:?}");
                herd.push(at);
            }
        }
    }
    assert_eq!(herd.len(), 100);
    herd.sort();
    herd.dedup();
    // 100 uniform draws over 500 ms on a millisecond timer: ~90 instants.
    assert!(
        herd[herd.len() - 1] - herd[0] >= jitter / 2,
        "the herd spread over {:?} only",
        herd[herd.len() - 1] - herd[0]
    );
    assert!(
        herd.len() >= 50,
        "the herd came back at {} instants: {herd:?}",
        herd.len()
    );
}

/// Guards the cooldown bounds: a 429 without advice pauses the group for
/// the default cooldown; a `retry-after` beyond the maximum is capped.
#[tokio::test(start_paused = true)]
async fn cooldown_defaults_and_cap() {
    start_clock();
    let layer = RateLimitLayer::builder()
        .cooldown(Duration::from_millis(700), Duration::from_secs(5))
        .cooldown_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let mock = Mock::new(|s| {
        let res = match s.id {
            Some(0) => json(StatusCode::TOO_MANY_REQUESTS, "{}".into()),
            Some(1) => too_many("3600"),
            _ => usage(s.cost[I], s.cost[O], 0),
        };
        (Duration::ZERO, res)
    });
    let svc = layer.layer(mock.service());
    send(svc.clone(), with_id(msg("A", "m", 1, 1), 0))
        .await
        .unwrap();
    assert_eq!(
        group(&layer, "A", "m").cooldown,
        Some(Duration::from_millis(700))
    );
    send(svc.clone(), with_id(msg("B", "m", 1, 1), 1))
        .await
        .unwrap();
    assert_eq!(
        group(&layer, "B", "m").cooldown,
        Some(Duration::from_secs(5))
    );
    send(svc.clone(), with_id(msg("A", "m", 1, 1), 2))
        .await
        .unwrap();
    send(svc.clone(), with_id(msg("B", "m", 1, 1), 3))
        .await
        .unwrap();
    assert_eq!(
        mock.times(),
        [
            Duration::ZERO,
            Duration::ZERO,
            Duration::from_millis(700),
            Duration::from_secs(5)
        ]
    );
}

// --------------------------------------------------------------- 9. learning

fn anthropic_limits(requests: (u64, u64)) -> Vec<(&'static str, String)> {
    vec![
        ("anthropic-ratelimit-requests-limit", requests.0.to_string()),
        (
            "anthropic-ratelimit-requests-remaining",
            requests.1.to_string(),
        ),
    ]
}

/// `Learning::Auto` without configured limits, learning per second.
fn auto_learning() -> RateLimitLayer {
    RateLimitLayer::builder()
        .learning(Learning::Auto)
        .learn_period(SEC)
        .build()
        .unwrap()
}

/// Answers after 100 ms with usage equal to the reservation, announcing
/// these `(limit, remaining)` requests.
fn teaching(requests: (u64, u64)) -> Mock {
    Mock::new(move |s| {
        let res = with_headers(usage(s.cost[I], s.cost[O], 0), &anthropic_limits(requests));
        (Duration::from_millis(100), res)
    })
}

/// Guards `Learning::Tighten`: the server's `remaining` lowers local
/// availability but never raises it, and an announced limit is taken only
/// when lower than the configured one.
#[tokio::test(start_paused = true)]
async fn remaining_headers_tighten_but_never_loosen() {
    start_clock();
    let layer = RateLimitLayer::new(Limits::unlimited().requests(Limit::per_minute(100).unwrap()));
    let answers = Arc::new(Mutex::new(vec![(100, 10), (1_000, 95), (50, 40)]));
    let mock = {
        let answers = Arc::clone(&answers);
        Mock::new(move |s| {
            let (limit, remaining) = answers.lock().unwrap().remove(0);
            let res = usage(s.cost[I], s.cost[O], 0);
            (
                Duration::ZERO,
                with_headers(res, &anthropic_limits((limit, remaining))),
            )
        })
    };
    let svc = layer.layer(mock.service());
    send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
    let g = only_group(&layer);
    assert_eq!(
        g.available[R],
        Some(10),
        "lowered to what the server has left"
    );
    assert_eq!(g.server_remaining[R], Some(10));
    send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
    let g = only_group(&layer);
    assert_eq!(
        g.available[R],
        Some(9),
        "95 left on the server does not raise it"
    );
    assert_eq!(
        g.effective[R],
        Some(Limit::per_minute(100).unwrap()),
        "1,000 announced: kept 100"
    );
    send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
    let g = only_group(&layer);
    assert_eq!(
        g.effective[R].unwrap().amount(),
        50,
        "a lower announced limit is taken"
    );
    assert!(g.available[R].unwrap() <= 8);
}

/// Guards the other learning modes: `Off` ignores the rate-limit headers,
/// `Auto` takes an announced limit up as well as down.
#[tokio::test(start_paused = true)]
async fn learning_off_ignores_headers_and_auto_also_raises() {
    start_clock();
    let configured = Limits::unlimited().requests(Limit::per_minute(100).unwrap());
    let mock = Mock::new(|s| {
        let res = usage(s.cost[I], s.cost[O], 0);
        (
            Duration::ZERO,
            with_headers(res, &anthropic_limits((1_000, 3))),
        )
    });
    for (learning, amount, available) in [
        (Learning::Off, 100, 99),
        (Learning::Tighten, 100, 3),
        (Learning::Auto, 1_000, 3),
    ] {
        let layer = RateLimitLayer::builder()
            .limits(configured)
            .learning(learning)
            .build()
            .unwrap();
        send(layer.layer(mock.service()), msg("k", "m", 1, 1))
            .await
            .unwrap();
        let g = only_group(&layer);
        assert_eq!(g.effective[R].unwrap().amount(), amount, "{learning:?}");
        assert_eq!(g.available[R], Some(available), "{learning:?}");
        assert_eq!(
            g.learned[R].map(|l| l.amount()),
            Some(1_000),
            "{learning:?}"
        );
    }
}

/// Guards `Learning::Auto` without configured limits: one request at a time
/// until the first response teaches the limits (`…-limit` per
/// `learn_period`), then admission by the learned limits.
#[tokio::test(start_paused = true)]
async fn auto_learning_probes_then_admits_by_learned_limits() {
    start_clock();
    let layer = auto_learning();
    let mock = teaching((5, 4));
    let svc = layer.layer(mock.service());
    let tasks: Vec<_> = (0..12)
        .map(|i| tokio::spawn(send(svc.clone(), with_id(msg("k", "m", 1, 1), i))))
        .collect();
    sleep(Duration::from_millis(50)).await;
    assert_eq!(mock.calls().len(), 1, "one probe at a time");
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let times = mock.times();
    assert_eq!(times[0], Duration::ZERO);
    assert_eq!(
        &times[1..5],
        [Duration::from_millis(100); 4],
        "remaining 4 taught"
    );
    let calls = mock.calls();
    assert_windows(&calls, R, per(5, SEC, 5));
    // Then one per 200 ms (5 per learn_period), not one per 12 s.
    assert!(times[11] < Duration::from_secs(2), "{times:?}");
    let g = only_group(&layer);
    assert_eq!(g.learned[R], Some(per(5, SEC, 5)));
}

/// An inner service that becomes ready only at `ready_at` (like a
/// connection pool or a concurrency limit below the limiter).
struct ReadyAt<S> {
    inner: S,
    ready_at: Instant,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S: Clone> Clone for ReadyAt<S> {
    fn clone(&self) -> Self {
        ReadyAt {
            inner: self.inner.clone(),
            ready_at: self.ready_at,
            sleep: None,
        }
    }
}

impl<S: Service<Request<ReplayBody>>> Service<Request<ReplayBody>> for ReadyAt<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let at = self.ready_at;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(sleep_until(at)));
        std::task::ready!(sleep.as_mut().poll(cx));
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Request<ReplayBody>) -> S::Future {
        self.inner.call(req)
    }
}

/// Guards the probe of `Learning::Auto`: "one request at a time" counts a
/// request admitted but not yet sent (its inner service not ready yet), so
/// a slow inner service cannot let a second probe through.
#[tokio::test(start_paused = true)]
async fn auto_learning_probe_is_alone_even_before_it_is_sent() {
    let t0 = start_clock();
    let layer = auto_learning();
    let mock = teaching((1, 0));
    let svc = ReadyAt {
        inner: mock.service(),
        ready_at: t0 + Duration::from_millis(50),
        sleep: None,
    };
    let svc = layer.layer(svc);
    let tasks: Vec<_> = (0..3)
        .map(|i| tokio::spawn(send(svc.clone(), with_id(msg("k", "m", 1, 1), i))))
        .collect();
    sleep(Duration::from_millis(120)).await;
    assert_eq!(
        mock.times(),
        [Duration::from_millis(50)],
        "one probe at a time"
    );
    for t in tasks {
        t.abort();
    }
}

/// Guards fail-fast with `max_wait` (no deadline): a wait longer than the
/// maximum gives `RateLimited` at once, a shorter one waits.
#[tokio::test(start_paused = true)]
async fn fail_fast_with_max_wait() {
    let t0 = start_clock();
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per(1, SEC, 1)))
        .max_wait(Duration::from_millis(500))
        .fail_fast(true)
        .build()
        .unwrap();
    let mock = Mock::exact();
    let mut svc = layer.layer(mock.service());
    send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
    let mut fut = Box::pin(svc.call(msg("k", "m", 1, 1)));
    let Some(Err(e)) = poll_once(fut.as_mut()) else {
        panic!("not refused at once");
    };
    assert_eq!(
        e.downcast_ref::<RateLimited>(),
        Some(&RateLimited::new(SEC))
    );
    sleep(Duration::from_millis(600)).await;
    send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
    assert_eq!(Instant::now() - t0, SEC);
}

// ------------------------------------------------------------------ 10. keys

/// Guards the grouping: one group per (API key, model), each with its own
/// bucket.
#[tokio::test(start_paused = true)]
async fn groups_are_per_key_and_model() {
    start_clock();
    let layer =
        RateLimitLayer::new(Limits::unlimited().requests(per(1, Duration::from_secs(60), 1)));
    let mock = Mock::exact();
    let svc = layer.layer(mock.service());
    for (key, model) in [("A", "m1"), ("A", "m2"), ("B", "m1")] {
        send(svc.clone(), msg(key, model, 1, 1)).await.unwrap();
    }
    assert_eq!(mock.times(), [Duration::ZERO; 3]);
    let seen: Vec<_> = mock
        .calls()
        .into_iter()
        .map(|s| (s.key.unwrap(), s.model.unwrap()))
        .collect();
    assert_eq!(seen.len(), 3);
    assert_eq!(layer.stats().len(), 3);
    for (key, model) in [("A", "m1"), ("A", "m2"), ("B", "m1")] {
        assert_eq!(group(&layer, key, model).available[R], Some(0));
    }
    // The key's identity is not the key.
    let g = group(&layer, "A", "m1");
    assert!(!format!("{g:?}").contains("\"A\""));
}

/// Guards `model_limits`: the longest matching prefix wins; other models get
/// the defaults.
#[tokio::test(start_paused = true)]
async fn model_limits_match_the_longest_prefix() {
    start_clock();
    let layer = RateLimitLayer::builder()
        .limits(Limits::per_minute(10, 1_000, 1_000).unwrap())
        .model_limits(
            "claude-haiku",
            Limits::per_minute(100, 1_000, 1_000).unwrap(),
        )
        .model_limits(
            "claude-haiku-4",
            Limits::per_minute(1_000, 1_000, 1_000).unwrap(),
        )
        .build()
        .unwrap();
    let mock = Mock::exact();
    let svc = layer.layer(mock.service());
    for model in ["claude-haiku-4-5", "claude-haiku-3", "claude-sonnet-4-5"] {
        send(svc.clone(), msg("k", model, 1, 1)).await.unwrap();
    }
    let rpm = |m| group(&layer, "k", m).effective[R].unwrap().amount();
    assert_eq!(rpm("claude-haiku-4-5"), 1_000);
    assert_eq!(rpm("claude-haiku-3"), 100);
    assert_eq!(rpm("claude-sonnet-4-5"), 10);
}

/// Guards bounded keyed state: 10,000 distinct keys never hold more than
/// `max_groups` groups (idle ones are evicted).
#[tokio::test(start_paused = true)]
async fn idle_groups_are_evicted_with_ten_thousand_keys() {
    start_clock();
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per(1_000, SEC, 1_000)))
        .max_groups(100)
        .idle_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let mock = Mock::exact();
    let svc = layer.layer(mock.service());
    for i in 0..10_000 {
        send(svc.clone(), msg(&format!("key-{i}"), "m", 1, 1))
            .await
            .unwrap();
        sleep(MS).await;
        if i % 1_000 == 0 {
            assert!(layer.stats().len() <= 100);
        }
    }
    assert!(layer.stats().len() <= 100, "{}", layer.stats().len());
    assert_eq!(mock.calls().len(), 10_000);
}

/// Guards eviction against resetting a limit: a group whose bucket is not
/// full again must not be evicted (a new group would start full, so the
/// key would get a second burst).
#[tokio::test(start_paused = true)]
async fn evicting_groups_never_hands_out_a_second_burst() {
    start_clock();
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per(2, Duration::from_secs(60), 2)))
        .max_groups(2)
        .idle_timeout(SEC)
        .build()
        .unwrap();
    let mock = Mock::exact();
    let svc = layer.layer(mock.service());
    // A is the least recently used group when B, C and D arrive.
    for key in ["A", "A", "B", "C", "D"] {
        send(svc.clone(), with_id(msg(key, "m", 1, 1), 0))
            .await
            .unwrap();
        sleep(Duration::from_millis(100)).await;
    }
    sleep(Duration::from_secs(5)).await;
    // A has used its burst of 2 per minute: a third request waits ~25 s more.
    let third = tokio::spawn(send(svc.clone(), with_id(msg("A", "m", 1, 1), 1)));
    sleep(Duration::from_secs(1)).await;
    assert!(
        mock.calls().iter().all(|s| s.id != Some(1)),
        "A admitted beyond its limit after its group was evicted"
    );
    third.await.unwrap().unwrap();
    let a = mock
        .calls()
        .iter()
        .filter(|s| s.key.as_deref() == Some("A"))
        .map(|s| s.at)
        .collect::<Vec<_>>();
    assert_eq!(a.len(), 3);
    assert!(a[2] - a[0] >= Duration::from_secs(30));
}

/// Guards eviction against splitting a group: a group a request already
/// holds (called, not yet polled) must not be evicted, or a second request
/// of the same key gets a fresh bucket beside it.
#[tokio::test(start_paused = true)]
async fn groups_held_by_pending_requests_are_not_evicted() {
    start_clock();
    let layer = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per(1, Duration::from_secs(60), 1)))
        .max_groups(2)
        .build()
        .unwrap();
    let mock = Mock::exact();
    let mut svc = layer.layer(mock.service());
    // A's group is taken (the least recently used one), not yet polled.
    let first = svc.call(msg("A", "m", 1, 1));
    for key in ["B", "C", "D"] {
        sleep(MS).await;
        send(svc.clone(), msg(key, "m", 1, 1)).await.unwrap();
    }
    let second = svc.call(msg("A", "m", 1, 1));
    let first = tokio::spawn(first);
    let second = tokio::spawn(second);
    sleep(Duration::from_secs(10)).await;
    let a = mock
        .calls()
        .iter()
        .filter(|s| s.key.as_deref() == Some("A"))
        .count();
    assert_eq!(a, 1, "two requests of a 1-per-minute key within 10 s");
    second.abort();
    let _ = first.await;
}

/// Guards the metadata fallback: a body that is not JSON is charged a
/// conservative estimate — its length ÷ 3.5 in input tokens and the
/// default output budget — never nothing (Step 7: it used to count as a
/// request only, while a provider that could read it spent tokens).
#[tokio::test(start_paused = true)]
async fn requests_without_metadata_are_charged_an_estimate() {
    start_clock();
    let layer = || {
        RateLimitLayer::builder()
            .limits(Limits::per_minute(100, 10_000, 1_000).unwrap())
            .default_output_tokens(500)
            .build()
            .unwrap()
    };
    let reserved: Arc<Mutex<Vec<[Option<u64>; 4]>>> = Arc::default();
    let l = layer();
    let seen = Arc::clone(&reserved);
    let probe = l.clone();
    let mock = Mock::new(move |s| {
        // What was reserved while the request is in flight.
        seen.lock().unwrap().push(probe.stats()[0].available);
        (Duration::ZERO, usage(s.cost[I], s.cost[O], 0))
    });
    let body = "not json at all, but long ".repeat(100);
    let req = Request::post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", "k")
        .body(ReplayBody::from(body.clone()))
        .unwrap();
    send(l.layer(mock.service()), req).await.unwrap();
    let estimate = (body.len() as u64 * 2).div_ceil(7);
    assert_eq!(
        reserved.lock().unwrap()[0],
        [Some(99), Some(10_000 - estimate), Some(500), None]
    );
    let g = only_group(&l);
    assert_eq!(g.model, None);
    // The mock reported no input (the estimate stands) and no output.
    assert_eq!(
        g.available,
        [Some(99), Some(10_000 - estimate), Some(1_000), None]
    );

    // A body the layer cannot read (not a ReplayBody, no metadata attached).
    let l = layer();
    let plain =
        service_fn(|_req: Request<String>| async { Ok::<_, Infallible>(usage(1_000, 1_000, 0)) });
    let req = Request::post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", "k")
        .body(String::from(
            r#"{"model":"m","max_tokens":900,"messages":[]}"#,
        ))
        .unwrap();
    let res = l.layer(plain).oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
    let g = only_group(&l);
    assert_eq!(g.model, None);
    // Admitted on the default output budget (its length unknown, no input
    // tokens); the usage it reported is still what it used, so it is
    // charged for the requests that follow.
    assert_eq!(g.available, [Some(99), Some(9_000), Some(0), None]);
}

// ------------------------------------------------------------ 11. thresholds

/// Guards the threshold callback: called once per upward crossing, not on
/// every admission above it; again after falling below and crossing again.
#[tokio::test(start_paused = true)]
async fn threshold_fires_once_per_upward_crossing() {
    start_clock();
    let events: Arc<Mutex<Vec<ThresholdEvent>>> = Arc::default();
    let layer = {
        let events = Arc::clone(&events);
        RateLimitLayer::builder()
            .limits(Limits::unlimited().requests(per(10, Duration::from_secs(10), 10)))
            .on_threshold(0.75, move |e| events.lock().unwrap().push(e.clone()))
            .build()
            .unwrap()
    };
    let mock = Mock::exact();
    let svc = layer.layer(mock.service());
    let count = || events.lock().unwrap().len();
    for n in 1..=10 {
        send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
        assert_eq!(count(), usize::from(n >= 8), "after {n} requests");
    }
    let e = events.lock().unwrap()[0].clone();
    assert_eq!((e.threshold, e.dimension), (0, Dimension::Requests));
    assert!(e.utilization >= 0.75);
    assert_eq!(e.model.as_deref(), Some("m"));
    sleep(Duration::from_secs(10)).await;
    for _ in 0..7 {
        send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
    }
    assert_eq!(count(), 1, "0.7 used: below again");
    send(svc.clone(), msg("k", "m", 1, 1)).await.unwrap();
    assert_eq!(count(), 2, "second crossing");
}

/// Guards threshold crossings that do not come from an admission: a charge
/// for under-estimated input tokens, or the server's `remaining` tightening
/// the bucket, is reported when it happens, not at the next admission.
#[tokio::test(start_paused = true)]
async fn threshold_fires_on_charges_and_learned_remaining() {
    start_clock();
    let events: Arc<Mutex<Vec<ThresholdEvent>>> = Arc::default();
    let layer = {
        let events = Arc::clone(&events);
        RateLimitLayer::builder()
            .limits(Limits::per_minute(100, 10_000, 10_000).unwrap())
            .on_threshold(0.75, move |e| events.lock().unwrap().push(e.clone()))
            .build()
            .unwrap()
    };
    let mock = Mock::new(|s| {
        let res = match s.id {
            // Used 8,000 input tokens: far above the estimate.
            Some(0) => usage(8_000, 1, 0),
            // The server has 10 requests left.
            _ => with_headers(usage(s.cost[I], s.cost[O], 0), &anthropic_limits((100, 10))),
        };
        (Duration::ZERO, res)
    });
    let svc = layer.layer(mock.service());
    send(svc.clone(), with_id(msg("k", "m", 1, 1), 0))
        .await
        .unwrap();
    let dims = |events: &Arc<Mutex<Vec<ThresholdEvent>>>| {
        events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.dimension)
            .collect::<Vec<_>>()
    };
    assert_eq!(dims(&events), [Dimension::InputTokens]);
    send(svc.clone(), with_id(msg("k", "m", 1, 1), 1))
        .await
        .unwrap();
    assert_eq!(dims(&events), [Dimension::InputTokens, Dimension::Requests]);
}

// ---------------------------------------------------------- 12. bad config

/// Guards configuration validation: zero and absurd limits and settings fail
/// when built, with typed errors.
#[test]
fn bad_configuration_is_rejected_with_typed_errors() {
    assert!(Limit::new(0, SEC, 1).is_err());
    assert!(Limit::new(1, SEC, 0).is_err());
    assert!(Limit::new(1, Duration::ZERO, 1).is_err());
    assert!(Limit::new(1, Duration::MAX, 1).is_err());
    assert!(Limit::new(u64::MAX, SEC, 1).is_err());
    assert!(Limit::new(1, SEC, u64::MAX).is_err());
    assert!(Limit::per_minute(0).is_err());
    assert!(Limits::per_minute(0, 1, 1).is_err());
    assert!(Limits::per_minute(1, 0, 1).is_err());
    assert!(Limits::per_minute(1, 1, 0).is_err());
    assert!(Limits::per_minute(1, 1, u64::MAX).is_err());
    let bad = |b: tower_llm_resilience::rate::RateLimitBuilder| -> InvalidConfig {
        b.build().unwrap_err()
    };
    let b = RateLimitLayer::builder;
    bad(b().max_groups(0));
    bad(b().on_threshold(0.0, |_| {}));
    bad(b().on_threshold(1.5, |_| {}));
    bad(b().on_threshold(f64::NAN, |_| {}));
    bad(b().learn_period(Duration::ZERO));
    bad(b().max_wait(Duration::MAX));
    bad(b().cooldown(SEC, Duration::MAX));
    bad(b().idle_timeout(Duration::MAX));
    bad(b().cooldown_jitter(Duration::MAX));
    assert!(b().on_threshold(1.0, |_| {}).build().is_ok());
    assert!(QueueConfig::new(0, SEC).is_err());
}
