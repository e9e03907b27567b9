//! Acceptance tests of `RetryLayer`: exact server advice with positive-only
//! jitter, precedence, caps, deadline, budget, classification, SSE
//! read-ahead, outcome reporting, and a real-socket run against the
//! simulator.
//!
//! Everything time-based runs under paused tokio time, so instants are
//! exact: the mock upstream records the `tokio::time::Instant` of every
//! attempt. tokio's timer has millisecond resolution and rounds a sleep's
//! end *up* to the next millisecond, so an upper bound may be exceeded by
//! less than 1 ms when the drawn jitter is not a whole number of
//! milliseconds; lower bounds ("never before the advice") are exact.

mod support;

use std::collections::{BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use support::ReplayService;
use support::http::{ANTHROPIC_VERSION, bytes as body_bytes, completion, post_json};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_llm_resilience::BoxError;
use tower_llm_resilience::error::{QueueTimeout, RateLimited, RequestTooLarge};
use tower_llm_resilience::provider::ErrorKind;
use tower_llm_resilience::queue::QueueFull;
use tower_llm_resilience::request::{Deadline, ReplayBody};
use tower_llm_resilience::response::{Outcome, ResponseBody};
use tower_llm_resilience::retry::{
    Backoff, Jitter, OverCap, RetryBuilder, RetryInfo, RetryLayer, RetryReason, StopReason,
};

// ---------------------------------------------------------------- helpers

const ANTHROPIC_RATE_LIMIT: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit","details":null},"request_id":"req_011"}"#;
const ANTHROPIC_OVERLOADED: &str = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_012"}"#;
const ANTHROPIC_SPEND_LIMIT: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your specified API usage limits.","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_013"}"#;
const OPENAI_QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
const OPENAI_RATE_LIMIT: &str = r#"{"error":{"message":"Rate limit reached for requests. Please try again in 1.574s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;

const SSE_OVERLOADED_FIRST: &str = "event: error\n\
    data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
const SSE_START: &str = "event: message_start\n\
    data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n";
const SSE_PING: &str = "event: ping\ndata: {\"type\": \"ping\"}\n\n";
const SSE_BLOCK_START: &str = "event: content_block_start\n\
    data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
const SSE_DELTA: &str = "event: content_block_delta\n\
    data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n";
const SSE_END: &str = "event: content_block_stop\n\
    data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
    event: message_delta\n\
    data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
    event: message_stop\n\
    data: {\"type\":\"message_stop\"}\n\n";

/// A body that yields its chunks one frame at a time (as a socket would).
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A response with these headers and a body sent in these chunks.
fn resp(status: u16, headers: &[(&str, &str)], chunks: &[&str]) -> Response<ResponseBody> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = Chunks(chunks.iter().map(|c| Bytes::from(c.to_string())).collect());
    b.body(ResponseBody::new(body)).expect("response")
}

fn ok() -> Response<ResponseBody> {
    resp(
        200,
        &[("content-type", "application/json")],
        &[r#"{"ok":true}"#],
    )
}

fn json_error(status: u16, headers: &[(&str, &str)], body: &str) -> Response<ResponseBody> {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    resp(status, &h, &[body])
}

/// The instants at which the mock upstream was called.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Instant>>>);

impl Log {
    fn push(&self) -> usize {
        let mut v = self.0.lock().expect("log");
        v.push(Instant::now());
        v.len() - 1
    }
    fn times(&self) -> Vec<Instant> {
        self.0.lock().expect("log").clone()
    }
    fn count(&self) -> usize {
        self.0.lock().expect("log").len()
    }
    /// Gaps between consecutive attempts.
    fn gaps(&self) -> Vec<Duration> {
        self.times().windows(2).map(|w| w[1] - w[0]).collect()
    }
}

type Upstream = dyn Fn(usize) -> Result<Response<ResponseBody>, BoxError> + Send + Sync;

/// A mock upstream: `answer(n)` answers attempt `n` (0-based, counted per
/// mock), and every call's instant is logged.
fn upstream(
    answer: impl Fn(usize) -> Result<Response<ResponseBody>, BoxError> + Send + Sync + 'static,
) -> (impl ReplayService, Log) {
    let log = Log::default();
    let answer: Arc<Upstream> = Arc::new(answer);
    let svc = {
        let log = log.clone();
        service_fn(move |_req: Request<ReplayBody>| {
            let n = log.push();
            let r = answer(n);
            async move { r }
        })
    };
    (svc, log)
}

/// Answers `first` on attempt 0 and 200 afterwards.
fn once_then_ok(
    first: impl Fn() -> Response<ResponseBody> + Send + Sync + 'static,
) -> (impl ReplayService, Log) {
    upstream(move |n| Ok(if n == 0 { first() } else { ok() }))
}

fn req() -> Request<ReplayBody> {
    post_json(
        "http://api.test/v1/messages",
        &[],
        r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#,
    )
}

fn info(res: &Response<ResponseBody>) -> RetryInfo {
    *res.extensions().get::<RetryInfo>().expect("RetryInfo")
}

async fn send(
    layer: &RetryLayer,
    svc: impl ReplayService,
    req: Request<ReplayBody>,
) -> Response<ResponseBody> {
    layer.layer(svc).oneshot(req).await.expect("response")
}

/// A layer without budget, so budget never interferes.
fn builder() -> RetryBuilder {
    RetryLayer::builder().no_budget()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ------------------------------------------- 1. exact advice, positive jitter

/// Guards: `retry-after: 7` is waited in full (never a millisecond less)
/// and jitter only ever adds, at most `min(ratio · advice, max)`.
#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_waited_exactly_plus_positive_jitter() {
    let layer = builder()
        .server_jitter(0.1, secs(1))
        .build()
        .expect("valid");
    let mut gaps = BTreeSet::new();
    for _ in 0..50 {
        let (svc, log) =
            once_then_ok(|| json_error(429, &[("retry-after", "7")], ANTHROPIC_RATE_LIMIT));
        let res = send(&layer, svc, req()).await;
        assert_eq!(res.status(), 200);
        let gap = log.gaps()[0];
        assert!(gap >= secs(7), "retried {gap:?} after retry-after: 7");
        assert!(gap <= ms(7_700), "jitter above 10 % of 7 s: {gap:?}");
        // total_wait is the wait asked of the timer, which ends it on the
        // next whole millisecond.
        let asked = info(&res).total_wait;
        assert!(asked <= gap && gap - asked < ms(1), "{asked:?} vs {gap:?}");
        gaps.insert(gap);
    }
    assert!(gaps.len() > 10, "jitter spreads retries: {gaps:?}");

    // Ratio 0: exactly the advice.
    let exact = builder()
        .server_jitter(0.0, secs(1))
        .build()
        .expect("valid");
    for _ in 0..5 {
        let (svc, log) =
            once_then_ok(|| json_error(429, &[("retry-after", "7")], ANTHROPIC_RATE_LIMIT));
        send(&exact, svc, req()).await;
        assert_eq!(log.gaps(), [secs(7)]);
    }
}

/// Guards: `retry-after-ms: 1500` is honoured to the millisecond, and the
/// jitter cap (`max`) bounds the jitter below `ratio · advice`.
#[tokio::test(start_paused = true)]
async fn retry_after_ms_is_waited_exactly_plus_positive_jitter() {
    // ratio 0.5 of 1.5 s would be 750 ms; max caps it at 100 ms.
    let layer = builder()
        .server_jitter(0.5, ms(100))
        .build()
        .expect("valid");
    let mut gaps = BTreeSet::new();
    for _ in 0..50 {
        let (svc, log) =
            once_then_ok(|| resp(529, &[("retry-after-ms", "1500")], &[ANTHROPIC_OVERLOADED]));
        send(&layer, svc, req()).await;
        let gap = log.gaps()[0];
        assert!(gap >= ms(1_500), "{gap:?}");
        assert!(gap <= ms(1_600), "{gap:?}");
        gaps.insert(gap);
    }
    assert!(gaps.len() > 10, "{gaps:?}");

    let exact = builder()
        .server_jitter(0.0, secs(1))
        .build()
        .expect("valid");
    let (svc, log) = once_then_ok(|| resp(503, &[("retry-after-ms", "1500")], &[]));
    send(&exact, svc, req()).await;
    assert_eq!(log.gaps(), [ms(1_500)]);
}

/// Guards: an HTTP-date `retry-after` is measured from the response's
/// `Date` (the server's clock), not the local clock: a server whose clock
/// is 100 s behind still gets exactly the 7 s it asked for.
#[tokio::test(start_paused = true)]
async fn retry_after_http_date_is_measured_from_the_date_header() {
    for skew in [0u64, 100] {
        let server_now = SystemTime::now() - secs(skew);
        let date = httpdate::fmt_http_date(server_now);
        let until = httpdate::fmt_http_date(server_now + secs(7));
        let headers = move || {
            json_error(
                429,
                &[("date", &date), ("retry-after", &until)],
                ANTHROPIC_RATE_LIMIT,
            )
        };

        let exact = builder()
            .server_jitter(0.0, secs(1))
            .build()
            .expect("valid");
        let (svc, log) = once_then_ok(headers.clone());
        let res = send(&exact, svc, req()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(log.gaps(), [secs(7)], "server clock {skew} s behind");

        let jittered = builder()
            .server_jitter(0.1, secs(1))
            .build()
            .expect("valid");
        for _ in 0..10 {
            let (svc, log) = once_then_ok(headers.clone());
            send(&jittered, svc, req()).await;
            let gap = log.gaps()[0];
            assert!(gap >= secs(7) && gap <= ms(7_700), "{gap:?}");
        }
    }
}

// ------------------------------------------------ 2. a thundering herd

/// Guards: 1,000 callers told the same `retry-after` do not return
/// together — their retries spread over the jitter range, and none comes
/// early or past advice + max jitter.
#[tokio::test(start_paused = true)]
async fn thousand_callers_spread_over_the_jitter_range() {
    let layer = builder()
        .server_jitter(0.1, secs(1))
        .build()
        .expect("valid");
    let start = Instant::now();
    // Everything before t = 1 ms is told to come back in 10 s.
    let (svc, log) = upstream(move |_| {
        Ok(if Instant::now() < start + ms(1) {
            json_error(429, &[("retry-after", "10")], ANTHROPIC_RATE_LIMIT)
        } else {
            ok()
        })
    });
    let svc = layer.layer(svc);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move { svc.oneshot(req()).await }));
    }
    for t in tasks {
        let res = t.await.expect("task").expect("response");
        assert_eq!(res.status(), 200);
        assert_eq!(info(&res).attempts, 2);
    }
    let retries: Vec<Duration> = log
        .times()
        .into_iter()
        .map(|t| t - start)
        .filter(|d| *d >= ms(1))
        .collect();
    assert_eq!(retries.len(), 1000);
    let lo = *retries.iter().min().expect("some");
    let hi = *retries.iter().max().expect("some");
    assert!(lo >= secs(10), "a retry came early: {lo:?}");
    assert!(
        hi <= secs(11),
        "a retry came past advice + max jitter: {hi:?}"
    );
    assert!(hi - lo >= ms(900), "retries bunched in {:?}", hi - lo);
    let distinct: BTreeSet<_> = retries.iter().collect();
    assert!(
        distinct.len() >= 500,
        "only {} distinct retry instants over a 1 s range",
        distinct.len()
    );
    // Roughly uniform: each tenth of the range holds 5 %..15 %.
    let mut deciles = [0u32; 10];
    for r in &retries {
        let i = ((*r - secs(10)).as_millis() / 100).min(9) as usize;
        deciles[i] += 1;
    }
    assert!(
        deciles.iter().all(|&n| (50..=150).contains(&n)),
        "{deciles:?}"
    );
}

// ------------------------------------------------------------ 3. precedence

/// Guards: `x-should-retry: false` overrides a retryable 529.
#[tokio::test(start_paused = true)]
async fn x_should_retry_false_stops_a_529() {
    let (svc, log) = upstream(|_| {
        Ok(resp(
            529,
            &[("x-should-retry", "false"), ("retry-after", "1")],
            &[ANTHROPIC_OVERLOADED],
        ))
    });
    let res = send(&RetryLayer::new(), svc, req()).await;
    assert_eq!(res.status(), 529);
    assert_eq!(log.count(), 1);
    let i = info(&res);
    assert_eq!((i.attempts, i.stopped), (1, Some(StopReason::NotRetryable)));
}

/// Guards: `x-should-retry: true` makes even a 400 retryable.
#[tokio::test(start_paused = true)]
async fn x_should_retry_true_retries_a_400() {
    let (svc, log) = once_then_ok(|| {
        json_error(
            400,
            &[("x-should-retry", "true")],
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"x"}}"#,
        )
    });
    let res = send(&RetryLayer::new(), svc, req()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(log.count(), 2);
    let i = info(&res);
    assert_eq!(
        i.last_reason,
        Some(RetryReason::Status(StatusCode::BAD_REQUEST))
    );
    assert_eq!(i.stopped, None);
}

/// Guards: `retry-after-ms` wins over `retry-after` (and over the
/// rate-limit reset headers).
#[tokio::test(start_paused = true)]
async fn retry_after_ms_wins_over_retry_after() {
    let layer = builder()
        .server_jitter(0.0, secs(1))
        .build()
        .expect("valid");
    let (svc, log) = once_then_ok(|| {
        json_error(
            429,
            &[("retry-after", "30"), ("retry-after-ms", "250")],
            ANTHROPIC_RATE_LIMIT,
        )
    });
    send(&layer, svc, req()).await;
    assert_eq!(log.gaps(), [ms(250)]);
}

/// Guards: with no retry advice, an exhausted dimension's reset
/// (`anthropic-ratelimit-*-remaining: 0` + reset, measured from `Date`)
/// is waited; the largest exhausted reset wins, a non-exhausted one is
/// ignored.
#[tokio::test(start_paused = true)]
async fn exhausted_reset_is_waited_without_retry_after() {
    let layer = builder()
        .server_jitter(0.0, secs(1))
        .build()
        .expect("valid");
    // The server's clock is 50 s behind ours: Date must be the reference.
    // Whole seconds, as both headers carry whole seconds.
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970");
    let server_now = SystemTime::UNIX_EPOCH + secs(unix.as_secs()) - secs(50);
    let date = httpdate::fmt_http_date(server_now);
    let rfc3339 = |d: Duration| tower_llm_resilience::sim::format_rfc3339(server_now + d, false);
    let (req_reset, tok_reset, far) = (rfc3339(secs(5)), rfc3339(secs(3)), rfc3339(secs(40)));
    let (svc, log) = once_then_ok(move || {
        json_error(
            429,
            &[
                ("date", &date),
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", &req_reset),
                ("anthropic-ratelimit-input-tokens-limit", "20000"),
                ("anthropic-ratelimit-input-tokens-remaining", "0"),
                ("anthropic-ratelimit-input-tokens-reset", &tok_reset),
                ("anthropic-ratelimit-output-tokens-limit", "8000"),
                ("anthropic-ratelimit-output-tokens-remaining", "4000"),
                ("anthropic-ratelimit-output-tokens-reset", &far),
            ],
            ANTHROPIC_RATE_LIMIT,
        )
    });
    let res = send(&layer, svc, req()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(log.gaps(), [secs(5)]);
}

/// Guards: without any advice the computed backoff is used, within
/// `[0, cap]` (and within `[0, base]` for the first retry with full jitter).
#[tokio::test(start_paused = true)]
async fn no_advice_uses_computed_backoff_within_cap() {
    let backoff = Backoff::new(ms(200), 2.0, ms(1_000), Jitter::Full).expect("valid");
    let layer = builder()
        .backoff(backoff)
        .max_attempts(8)
        .build()
        .expect("valid");
    let mut all = Vec::new();
    for _ in 0..30 {
        let (svc, log) = upstream(|_| Ok(resp(503, &[], &[])));
        let res = send(&layer, svc, req()).await;
        let i = info(&res);
        assert_eq!((i.attempts, i.stopped), (8, Some(StopReason::Exhausted)));
        let gaps = log.gaps();
        assert!(gaps[0] <= ms(200), "first retry within base: {gaps:?}");
        for (n, g) in gaps.iter().enumerate() {
            let bound = ms(200 * (1 << n)).min(ms(1_000));
            assert!(*g <= bound, "retry {n}: {g:?} > {bound:?}");
        }
        let real: Duration = gaps.iter().sum();
        assert!(i.total_wait <= real && real - i.total_wait < ms(8));
        all.extend(gaps);
    }
    let distinct: BTreeSet<_> = all.iter().collect();
    assert!(
        distinct.len() > 50,
        "full jitter spreads: {}",
        distinct.len()
    );
}

// ------------------------------------------------------------ 4. the cap

/// Guards: advice above `max_server_delay` gives up at once by default
/// (a fallback above can degrade), and with `OverCap::Backoff` is replaced
/// by the computed backoff.
#[tokio::test(start_paused = true)]
async fn advice_over_the_cap() {
    let too_long = || json_error(429, &[("retry-after", "120")], ANTHROPIC_RATE_LIMIT);

    let give_up = builder().build().expect("valid"); // cap 60 s
    let (svc, log) = once_then_ok(too_long);
    let t0 = Instant::now();
    let res = send(&give_up, svc, req()).await;
    assert_eq!(t0.elapsed(), Duration::ZERO, "returned at once");
    assert_eq!(res.status(), 429);
    assert_eq!(log.count(), 1);
    let i = info(&res);
    assert_eq!(
        (i.attempts, i.stopped),
        (1, Some(StopReason::AdviceTooLong))
    );
    assert_eq!(
        body_bytes(res).await,
        ANTHROPIC_RATE_LIMIT.as_bytes(),
        "the 429 body read for classification reaches the caller intact"
    );

    let backoff = builder()
        .max_server_delay(secs(60), OverCap::Backoff)
        .build()
        .expect("valid");
    let (svc, log) = once_then_ok(too_long);
    let res = send(&backoff, svc, req()).await;
    assert_eq!(res.status(), 200);
    let gap = log.gaps()[0];
    assert!(gap <= Backoff::default().cap(), "{gap:?}");
    assert!(gap <= ms(500), "first computed retry within base: {gap:?}");
}

// --------------------------------------------------------- 5. the deadline

/// Guards: when the advised wait would pass the deadline, the last
/// response is returned at once (no time passes), from either a
/// `Deadline` extension or the layer's `timeout`.
#[tokio::test(start_paused = true)]
async fn deadline_shorter_than_advice_returns_at_once() {
    let advice = || json_error(429, &[("retry-after", "10")], ANTHROPIC_RATE_LIMIT);

    let layer = builder().build().expect("valid");
    let (svc, log) = once_then_ok(advice);
    let mut r = req();
    r.extensions_mut().insert(Deadline::after(secs(5)));
    let t0 = Instant::now();
    let res = send(&layer, svc, r).await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(res.status(), 429);
    assert_eq!(log.count(), 1);
    assert_eq!(info(&res).stopped, Some(StopReason::Deadline));

    let timeout = builder().timeout(secs(5)).build().expect("valid");
    let (svc, log) = once_then_ok(advice);
    let t0 = Instant::now();
    let res = send(&timeout, svc, req()).await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(log.count(), 1);
    assert_eq!(info(&res).stopped, Some(StopReason::Deadline));
}

/// Guards: no sleep ever runs past the deadline — with retries every 3 s
/// and a 10 s deadline, attempts at 0, 3, 6, 9 s and the answer at 9 s.
#[tokio::test(start_paused = true)]
async fn no_sleep_runs_past_the_deadline() {
    let layer = builder()
        .max_attempts(100)
        .server_jitter(0.0, secs(1))
        .build()
        .expect("valid");
    let (svc, log) = upstream(|_| Ok(resp(503, &[("retry-after", "3")], &[])));
    let t0 = Instant::now();
    let mut r = req();
    r.extensions_mut().insert(Deadline(t0 + secs(10)));
    let res = send(&layer, svc, r).await;
    assert_eq!(t0.elapsed(), secs(9));
    let offsets: Vec<_> = log.times().iter().map(|t| *t - t0).collect();
    assert_eq!(offsets, [secs(0), secs(3), secs(6), secs(9)]);
    let i = info(&res);
    assert_eq!(i.attempts, 4);
    assert_eq!(i.total_wait, secs(9));
    assert_eq!(i.stopped, Some(StopReason::Deadline));

    // Computed backoff too: never past a 1 s deadline.
    let layer = builder().max_attempts(100).build().expect("valid");
    for _ in 0..20 {
        let (svc, _log) = upstream(|_| Ok(resp(500, &[], &[])));
        let t0 = Instant::now();
        let mut r = req();
        r.extensions_mut().insert(Deadline(t0 + secs(1)));
        let res = send(&layer, svc, r).await;
        assert!(t0.elapsed() < secs(1), "{:?}", t0.elapsed());
        assert_eq!(info(&res).stopped, Some(StopReason::Deadline));
    }
}

// ----------------------------------------------------------- 6. the budget

/// Guards: an outage (every answer 503) at 50 requests/s for 60 s costs at
/// most `(1 + ratio) · requests + floor · 60` upstream attempts, and every
/// caller still gets its answer within its deadline.
#[tokio::test(start_paused = true)]
async fn budget_bounds_amplification_during_an_outage() {
    const RATIO: f64 = 0.1;
    const FLOOR: u32 = 2;
    let layer = RetryLayer::builder()
        .budget(secs(10), FLOOR, RATIO)
        .max_attempts(10)
        .build()
        .expect("valid");
    let (svc, log) = upstream(|_| Ok(resp(503, &[], &[])));
    let svc = layer.layer(svc);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    // 50/s for 58 s, each with a 2 s deadline: everything ends within 60 s.
    let requests = 50 * 58;
    for i in 0..requests {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = req();
            let deadline = Instant::now() + secs(2);
            r.extensions_mut().insert(Deadline(deadline));
            let res = svc.oneshot(r).await.expect("response");
            assert!(Instant::now() <= deadline, "answer after the deadline");
            info(&res)
        }));
        if i + 1 < requests {
            tokio::time::sleep(ms(20)).await;
        }
    }
    let mut budget_stops = 0;
    let mut attempts = 0;
    for t in tasks {
        let i = t.await.expect("task");
        attempts += i.attempts as usize;
        budget_stops += usize::from(i.stopped == Some(StopReason::Budget));
    }
    eprintln!(
        "budget: {requests} requests, {attempts} attempts, {budget_stops} stopped by the budget"
    );
    assert!(t0.elapsed() <= secs(60));
    assert_eq!(attempts, log.count());
    let bound = (1.0 + RATIO) * requests as f64 + f64::from(FLOOR) * 60.0;
    assert!(
        attempts as f64 <= bound,
        "{attempts} attempts for {requests} requests (bound {bound})"
    );
    assert!(budget_stops > requests / 2, "the budget stopped retries");
}

// ------------------------------------------------------- 7. classification

/// Guards: 400, 401, 403, 404, 413, 422 and quota 429s (OpenAI
/// `insufficient_quota`, Anthropic `enforced_spend_limit_reached`) are sent
/// exactly once; rate-limit 429s of both providers are retried.
#[tokio::test(start_paused = true)]
async fn non_retryable_failures_are_sent_once() {
    let layer = RetryLayer::new();
    for status in [400u16, 401, 403, 404, 413, 422] {
        let (svc, log) = once_then_ok(move || {
            json_error(
                status,
                &[],
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"no"}}"#,
            )
        });
        let res = send(&layer, svc, req()).await;
        assert_eq!(res.status(), status);
        assert_eq!(log.count(), 1, "{status} sent once");
        assert_eq!(info(&res).stopped, Some(StopReason::NotRetryable));
    }
    for body in [OPENAI_QUOTA, ANTHROPIC_SPEND_LIMIT] {
        // Even with retry-after present, a billing stop is final.
        let (svc, log) = once_then_ok(move || json_error(429, &[("retry-after", "1")], body));
        let res = send(&layer, svc, req()).await;
        assert_eq!(res.status(), 429);
        assert_eq!(log.count(), 1, "{body}");
        assert_eq!(info(&res).stopped, Some(StopReason::NotRetryable));
        assert_eq!(body_bytes(res).await, body.as_bytes());
    }
    for body in [ANTHROPIC_RATE_LIMIT, OPENAI_RATE_LIMIT] {
        let (svc, log) = once_then_ok(move || json_error(429, &[("retry-after", "1")], body));
        let res = send(&layer, svc, req()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(log.count(), 2, "{body}");
        assert_eq!(
            info(&res).last_reason,
            Some(RetryReason::Status(StatusCode::TOO_MANY_REQUESTS))
        );
    }
}

// ------------------------------------------------------------------ 8. SSE

fn sse(chunks: &[&str]) -> Response<ResponseBody> {
    resp(200, &[("content-type", "text/event-stream")], chunks)
}

/// Guards: a 200 stream whose first event is an `overloaded_error` (also
/// after `message_start` and a `ping`) is retried; the successful stream
/// then reaches the caller byte for byte.
#[tokio::test(start_paused = true)]
async fn sse_error_before_content_is_retried() {
    let good: Vec<&str> = vec![SSE_START, SSE_BLOCK_START, SSE_DELTA, SSE_DELTA, SSE_END];
    let expected: String = good.concat();
    for first in [
        vec![SSE_OVERLOADED_FIRST],
        vec![SSE_START, SSE_PING, SSE_OVERLOADED_FIRST],
        vec![&[SSE_START, SSE_PING, SSE_OVERLOADED_FIRST].concat()[..]],
    ] {
        let first: Vec<String> = first.into_iter().map(str::to_owned).collect();
        let good = good.clone();
        let (svc, log) = upstream(move |n| {
            Ok(if n == 0 {
                let f: Vec<&str> = first.iter().map(String::as_str).collect();
                sse(&f)
            } else {
                sse(&good)
            })
        });
        let res = send(&RetryLayer::new(), svc, req()).await;
        assert_eq!(log.count(), 2);
        let i = info(&res);
        assert_eq!(
            i.last_reason,
            Some(RetryReason::StreamError(ErrorKind::Overloaded))
        );
        assert_eq!(i.stopped, None);
        assert_eq!(body_bytes(res).await, expected.as_bytes());
    }
}

/// Guards: a stream whose content started and then errors is returned as
/// it is (one attempt; the caller reads the error event) — however the
/// bytes were split into frames — and the read-ahead loses no byte.
#[tokio::test(start_paused = true)]
async fn sse_error_after_content_is_not_retried_and_bytes_are_intact() {
    let parts = [SSE_START, SSE_BLOCK_START, SSE_DELTA, SSE_OVERLOADED_FIRST];
    let whole = parts.concat();
    // Frame splits: one frame per event, everything in one frame, and
    // 7-byte frames cutting through lines.
    let small: Vec<String> = whole
        .as_bytes()
        .chunks(7)
        .map(|c| String::from_utf8(c.to_vec()).expect("ascii"))
        .collect();
    let splits: Vec<Vec<String>> = vec![
        parts.iter().map(|s| s.to_string()).collect(),
        vec![whole.clone()],
        small,
    ];
    for split in splits {
        let n_frames = split.len();
        let (svc, log) = upstream(move |_| {
            let f: Vec<&str> = split.iter().map(String::as_str).collect();
            Ok(sse(&f))
        });
        let mut res = send(&RetryLayer::new(), svc, req()).await;
        assert_eq!(log.count(), 1, "{n_frames} frames: retried after content");
        assert_eq!(info(&res).stopped, None);
        let ended = completion(&mut res);
        assert_eq!(body_bytes(res).await, whole.as_bytes(), "{n_frames} frames");
        let c = ended.recv().expect("completion");
        assert_eq!(c.outcome, Outcome::ErrorEvent);
        assert!(c.content_started);
    }
}

/// Guards: a successful stream read ahead in frames of any size (1 byte
/// up) reaches the caller byte-identical.
#[tokio::test(start_paused = true)]
async fn read_ahead_loses_no_bytes() {
    let whole = [SSE_START, SSE_PING, SSE_BLOCK_START, SSE_DELTA, SSE_END].concat();
    for size in [1usize, 3, 64, 10_000] {
        let chunks: Vec<String> = whole
            .as_bytes()
            .chunks(size)
            .map(|c| String::from_utf8(c.to_vec()).expect("ascii"))
            .collect();
        let (svc, _log) = upstream(move |_| {
            let f: Vec<&str> = chunks.iter().map(String::as_str).collect();
            Ok(sse(&f))
        });
        let res = send(&RetryLayer::new(), svc, req()).await;
        assert_eq!(
            body_bytes(res).await,
            whole.as_bytes(),
            "{size}-byte frames"
        );
    }
}

// --------------------------------------------------------------- 9. outcome

/// Guards: `RetryInfo` on the final response (attempts, total wait, last
/// reason, stop reason) and that discarded attempts' bodies are dropped
/// promptly — reported before the retry's sleep ends, not when the
/// request finishes.
#[tokio::test(start_paused = true)]
async fn outcome_and_prompt_release_of_discarded_bodies() {
    let t0 = Instant::now();
    let released: Arc<Mutex<Vec<(usize, Outcome, Duration)>>> = Arc::default();
    let layer = builder()
        .server_jitter(0.0, secs(1))
        .max_attempts(3)
        .build()
        .expect("valid");
    let (svc, log) = {
        let released = released.clone();
        upstream(move |n| {
            let mut r = match n {
                0 => resp(529, &[("retry-after", "2")], &[ANTHROPIC_OVERLOADED]),
                1 => json_error(429, &[("retry-after", "3")], ANTHROPIC_RATE_LIMIT),
                _ => resp(503, &[("retry-after", "1")], &["unavailable"]),
            };
            let released = released.clone();
            r.body_mut().on_complete(move |c| {
                released
                    .lock()
                    .expect("lock")
                    .push((n, c.outcome, t0.elapsed()));
            });
            Ok(r)
        })
    };
    let res = send(&layer, svc, req()).await;
    assert_eq!(res.status(), 503);
    let i = info(&res);
    assert_eq!(i.attempts, 3);
    assert_eq!(i.total_wait, secs(5));
    assert_eq!(
        i.last_reason,
        Some(RetryReason::Status(StatusCode::TOO_MANY_REQUESTS))
    );
    assert_eq!(i.stopped, Some(StopReason::Exhausted));
    assert_eq!(log.count(), 3);
    {
        let r = released.lock().expect("lock");
        // Attempt 0 released at 0 s (before its 2 s sleep ended), attempt 1
        // at 2 s (before its 3 s sleep ended); the last one is the caller's.
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!((r[0].0, r[0].2), (0, secs(0)));
        assert_eq!((r[1].0, r[1].2), (1, secs(2)));
        for (_, outcome, _) in r.iter() {
            assert!(
                matches!(outcome, Outcome::Dropped | Outcome::Complete),
                "{outcome:?}"
            );
        }
    }
    assert_eq!(body_bytes(res).await, "unavailable");
    assert_eq!(released.lock().expect("lock").len(), 3);

    // Success on the first attempt: attempts 1, nothing else.
    let (svc, _) = upstream(|_| Ok(ok()));
    let res = send(&layer, svc, req()).await;
    let i = info(&res);
    assert_eq!(
        (i.attempts, i.total_wait, i.last_reason, i.stopped),
        (1, Duration::ZERO, None, None)
    );
}

/// Guards: the dead-letter hook receives requests that ran out of attempts
/// (with what happened), and the deadline / too-long-advice cases, but not
/// requests that were simply not retryable.
#[tokio::test(start_paused = true)]
async fn dead_letters_get_exhausted_requests_only() {
    let letters: Arc<Mutex<Vec<(String, RetryInfo)>>> = Arc::default();
    let layer = {
        let letters = letters.clone();
        builder()
            .max_attempts(2)
            .dead_letter(move |req, info| {
                let body = String::from_utf8(req.body().as_bytes().to_vec()).expect("utf8");
                letters.lock().expect("lock").push((body, *info));
            })
            .build()
            .expect("valid")
    };
    // Not retryable: no letter.
    let (svc, _) = upstream(|_| Ok(json_error(400, &[], "{}")));
    send(&layer, svc, req()).await;
    assert!(letters.lock().expect("lock").is_empty());

    // Exhausted: a letter with the original body and the info.
    let (svc, _) = upstream(|_| Ok(resp(503, &[], &[])));
    let res = send(&layer, svc, req()).await;
    let i = info(&res);
    {
        let l = letters.lock().expect("lock");
        assert_eq!(l.len(), 1);
        assert_eq!(
            l[0].0,
            String::from_utf8(req().body().as_bytes().to_vec()).expect("utf8")
        );
        assert_eq!(l[0].1, i);
        assert_eq!((i.attempts, i.stopped), (2, Some(StopReason::Exhausted)));
    }
    // Advice too long: a letter too (the work can be queued for later).
    let (svc, _) = upstream(|_| Ok(resp(503, &[("retry-after", "600")], &[])));
    send(&layer, svc, req()).await;
    assert_eq!(
        letters.lock().expect("lock")[1].1.stopped,
        Some(StopReason::AdviceTooLong)
    );
    // Success: none.
    let (svc, _) = upstream(|_| Ok(ok()));
    send(&layer, svc, req()).await;
    assert_eq!(letters.lock().expect("lock").len(), 2);
}

/// Guards: with `max_attempts(1)` a retryable failure of a replayable
/// request is reported as `Exhausted` (not `NotReplayable`) and reaches
/// the dead-letter hook.
#[tokio::test(start_paused = true)]
async fn single_attempt_reports_exhausted_and_dead_letters() {
    let letters = Arc::new(AtomicUsize::new(0));
    let layer = {
        let letters = letters.clone();
        builder()
            .max_attempts(1)
            .dead_letter(move |_, _| {
                letters.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .expect("valid")
    };
    let (svc, log) = upstream(|_| Ok(resp(503, &[], &[])));
    let res = send(&layer, svc, req()).await;
    assert_eq!(log.count(), 1);
    assert_eq!(info(&res).stopped, Some(StopReason::Exhausted));
    assert_eq!(letters.load(Ordering::SeqCst), 1);
}

// ------------------------------------------------------- 10. replayability

/// Guards: a request whose body is not a `ReplayBody` is sent once and
/// never retried (`NotReplayable`), never re-sent with a consumed body.
#[tokio::test(start_paused = true)]
async fn non_replayable_body_is_sent_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = {
        let calls = calls.clone();
        service_fn(move |req: Request<String>| {
            calls.fetch_add(1, Ordering::SeqCst);
            assert_eq!(req.body(), "hello");
            async move { Ok::<_, BoxError>(resp(503, &[("retry-after", "1")], &[])) }
        })
    };
    let res = RetryLayer::new()
        .layer(svc)
        .oneshot(Request::new("hello".to_owned()))
        .await
        .expect("response");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(res.status(), 503);
    let i = info(&res);
    assert_eq!(
        (i.attempts, i.stopped),
        (1, Some(StopReason::NotReplayable))
    );
}

/// Guards the replay copy: every retried attempt sends the request exactly
/// as the caller built it — method, URI, version, headers in order (repeated
/// ones and their sensitivity included), extensions and body.
#[tokio::test(start_paused = true)]
async fn retries_send_the_same_request() {
    #[derive(Clone, Debug, PartialEq)]
    struct Marker(u32);
    type Seen = (
        http::Method,
        http::Uri,
        http::Version,
        Vec<(String, Vec<u8>, bool)>,
        Option<Marker>,
        Bytes,
    );
    fn seen(req: &Request<ReplayBody>) -> Seen {
        (
            req.method().clone(),
            req.uri().clone(),
            req.version(),
            req.headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec(), v.is_sensitive()))
                .collect(),
            req.extensions().get::<Marker>().cloned(),
            req.body().as_bytes().clone(),
        )
    }
    let mut original = Request::put("https://api.test:8443/v1/messages?beta=true")
        .version(http::Version::HTTP_2)
        .header("x-api-key", "sk-ant-1")
        .header("anthropic-beta", "a")
        .header("content-type", "application/json")
        .header("anthropic-beta", "b")
        .body(ReplayBody::from(r#"{"model":"m"}"#))
        .expect("request");
    let mut secret = http::HeaderValue::from_static("Bearer t");
    secret.set_sensitive(true);
    original.headers_mut().insert("authorization", secret);
    original.extensions_mut().insert(Marker(9));
    let expected = seen(&original);
    let sent: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let svc = {
        let sent = sent.clone();
        service_fn(move |req: Request<ReplayBody>| {
            let mut sent = sent.lock().expect("lock");
            sent.push(seen(&req));
            let res = if sent.len() < 3 {
                resp(503, &[], &[])
            } else {
                ok()
            };
            async move { Ok::<_, BoxError>(res) }
        })
    };
    let res = send(
        &builder().max_attempts(3).build().expect("valid"),
        svc,
        original,
    )
    .await;
    assert_eq!(info(&res).attempts, 3);
    let sent = sent.lock().expect("lock");
    assert_eq!(sent.len(), 3);
    for s in sent.iter() {
        assert_eq!(s, &expected);
    }
}

/// Guards: the final response carries `RetryInfo` whether or not the
/// request or the response had extensions, keeps the response's own, and
/// gains none of the request's.
#[tokio::test(start_paused = true)]
async fn retry_info_joins_the_responses_own_extensions() {
    #[derive(Clone, Debug, PartialEq)]
    struct FromRequest;
    #[derive(Clone, Debug, PartialEq)]
    struct FromResponse;
    for (request_ext, response_ext) in [(false, false), (true, false), (false, true), (true, true)]
    {
        for fail in [false, true] {
            let (svc, _) = upstream(move |_| {
                let mut r = if fail { resp(400, &[], &[]) } else { ok() };
                if response_ext {
                    r.extensions_mut().insert(FromResponse);
                }
                Ok(r)
            });
            let mut r = req();
            if request_ext {
                r.extensions_mut().insert(FromRequest);
            }
            let res = send(&RetryLayer::new(), svc, r).await;
            let case = (request_ext, response_ext, fail);
            assert_eq!(info(&res).attempts, 1, "{case:?}");
            assert_eq!(res.extensions().get::<FromRequest>(), None, "{case:?}");
            assert_eq!(
                res.extensions().get::<FromResponse>().is_some(),
                response_ext,
                "{case:?}"
            );
            assert_eq!(
                res.extensions().len(),
                1 + usize::from(response_ext),
                "{case:?}"
            );
        }
    }
}

// ------------------------------------------------------------ 11. errors

/// Guards: transport errors (the inner service fails) are retried; the
/// errors this crate's layers create on purpose are returned at once, as
/// the same typed error.
#[tokio::test(start_paused = true)]
async fn transport_errors_retried_deliberate_errors_not() {
    let (svc, log) = upstream(|n| {
        if n < 2 {
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into())
        } else {
            Ok(ok())
        }
    });
    let res = send(&RetryLayer::new(), svc, req()).await;
    assert_eq!(log.count(), 3);
    assert_eq!(info(&res).last_reason, Some(RetryReason::Transport));

    // Exhausted on transport errors: the last error comes back.
    let (svc, log) = upstream(|_| Err(std::io::Error::other("refused").into()));
    let err = RetryLayer::new()
        .layer(svc)
        .oneshot(req())
        .await
        .expect_err("error");
    assert!(err.is::<std::io::Error>());
    assert_eq!(log.count(), 3);

    type Make = fn() -> BoxError;
    let deliberate: [(&str, Make); 4] = [
        ("RateLimited", || RateLimited::new(secs(3)).into()),
        ("QueueTimeout", || QueueTimeout::new(secs(3)).into()),
        ("RequestTooLarge", || {
            RequestTooLarge::new("input_tokens", 100, 10).into()
        }),
        ("QueueFull", || QueueFull::new(8).into()),
    ];
    for (name, make) in deliberate {
        let (svc, log) = upstream(move |_| Err(make()));
        let err = RetryLayer::new()
            .layer(svc)
            .oneshot(req())
            .await
            .expect_err("error");
        assert_eq!(log.count(), 1, "{name} retried");
        let same = err.is::<RateLimited>()
            || err.is::<QueueTimeout>()
            || err.is::<RequestTooLarge>()
            || err.is::<QueueFull>();
        assert!(same, "{name} came back as {err}");
    }
}

// -------------------------------------------------------- 12. property test

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Guards: for any advice (in any of its three forms) and any
        /// jitter configuration, the observed retry gap is never below the
        /// advice and never above advice + min(ratio · advice, max) (plus
        /// the timer's sub-millisecond rounding).
        #[test]
        fn observed_gap_within_advice_and_jitter(
            advice_ms in 1u64..=90_000,
            form in 0usize..3,
            ratio in prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0],
            max_ms in prop_oneof![Just(0u64), 0u64..=5_000],
            status in proptest::sample::select(vec![429u16, 503, 529]),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            // Seconds-based forms advise whole seconds.
            let advice = match form {
                0 => ms(advice_ms),
                _ => secs(advice_ms.div_ceil(1000)),
            };
            let gap = rt.block_on(async move {
                let layer = builder()
                    .server_jitter(ratio, ms(max_ms))
                    .max_server_delay(secs(120), OverCap::GiveUp)
                    .build()
                    .expect("valid");
                let server_now = SystemTime::now() - secs(30);
                let (svc, log) = once_then_ok(move || {
                    let date = httpdate::fmt_http_date(server_now);
                    let value = match form {
                        0 => advice.as_millis().to_string(),
                        1 => advice.as_secs().to_string(),
                        _ => httpdate::fmt_http_date(server_now + advice),
                    };
                    let name = if form == 0 { "retry-after-ms" } else { "retry-after" };
                    json_error(status, &[(name, &value), ("date", &date)], ANTHROPIC_RATE_LIMIT)
                });
                send(&layer, svc, req()).await;
                log.gaps()[0]
            });
            let max_jitter = advice.mul_f64(ratio).min(ms(max_ms));
            prop_assert!(gap >= advice, "gap {gap:?} below advice {advice:?}");
            prop_assert!(
                gap <= advice + max_jitter + ms(1),
                "gap {gap:?} above {advice:?} + {max_jitter:?}"
            );
        }
    }
}

// ------------------------------------------------------- 13. the simulator

/// Guards: over real sockets against the simulator with 30 % injected
/// failures (20 % 429 with `retry-after`, 5 % 529, 5 % 503; plus 5 %
/// mid-stream errors), every request ends exactly once, and the simulator
/// received exactly the attempts the layer accounted for — no duplicate
/// sends, none unaccounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_received_equals_attempts_accounted() {
    use tower_llm_resilience::client::HyperClient;
    use tower_llm_resilience::sim::{Faults, Limits, SimConfig, Simulator};

    let sim = Simulator::start(
        SimConfig::new()
            // Limits far above the load: every failure is an injected one.
            .with_limits(Limits::new(1_000_000, 100_000_000, 100_000_000))
            .with_time_scale(60.0)
            .with_output_tokens(5, 20)
            .with_faults(
                Faults::none()
                    .with_rate_limited(0.20)
                    .with_overloaded(0.05)
                    .with_service_unavailable(0.05)
                    .with_mid_stream_error(0.05),
            )
            .with_seed(7),
    )
    .await
    .expect("simulator");
    let layer = RetryLayer::builder()
        .max_attempts(6)
        .budget(secs(10), 100, 1.0)
        .timeout(secs(30))
        .build()
        .expect("valid");
    let svc = layer.layer(HyperClient::new());
    let url = sim.url();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let svc = svc.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let r = support::http::anthropic(
                &format!("{url}/v1/messages"),
                "sk-ant-test",
                format!(
                    r#"{{"model":"claude-sonnet-4-5","max_tokens":32,"stream":{},"messages":[{{"role":"user","content":"request {i}"}}]}}"#,
                    i % 2 == 0
                ),
            );
            let res = svc.oneshot(r).await.expect("a response, not an error");
            let status = res.status().as_u16();
            let i = info(&res);
            body_bytes(res).await;
            (status, i)
        }));
    }
    let mut attempts = 0u64;
    let mut ended = 0;
    let mut retried = 0;
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        let (status, i) = t.await.expect("task");
        ended += 1;
        attempts += u64::from(i.attempts);
        retried += usize::from(i.attempts > 1);
        *statuses.entry(status).or_insert(0) += 1;
    }
    let c = sim.counters();
    assert_eq!(ended, 200);
    assert_eq!(
        c.received, attempts,
        "simulator received {} but the layer accounted {attempts} (statuses {statuses:?}, sim {:?})",
        c.received, c.statuses
    );
    assert!(c.rate_limited() > 0, "429s were injected: {:?}", c.statuses);
    assert!(retried > 0);
    assert!(c.overloaded() > 0 && c.status(503) > 0, "{:?}", c.statuses);
    let failed = c.rate_limited() + c.overloaded() + c.status(503);
    let share = failed as f64 / c.received as f64;
    assert!(
        (0.2..0.4).contains(&share),
        "about 30 % of attempts failed: {share:.2}"
    );
    let share_429 = c.rate_limited() as f64 / c.received as f64;
    eprintln!(
        "sim: received {}, statuses {:?}, 429 share {share_429:.2}, mid-stream errors {}; final statuses {statuses:?}",
        c.received, c.statuses, c.mid_stream_errors
    );
    sim.shutdown().await;
}

/// Guards the first attempt's two paths: sent at the call when the inner
/// service said it was ready at the layer's readiness check, else from the
/// response future once it is ready — the same answers, the same retries.
#[tokio::test(start_paused = true)]
async fn first_attempt_waits_for_an_inner_service_that_is_not_ready() {
    /// Not ready on the readiness checks whose number is in `pending`
    /// (waking at once).
    #[derive(Clone)]
    struct Flaky<S>(Arc<AtomicUsize>, &'static [usize], S);
    impl<S: Service<Request<ReplayBody>>> Service<Request<ReplayBody>> for Flaky<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            if self.1.contains(&self.0.fetch_add(1, Ordering::SeqCst)) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.2.poll_ready(cx)
        }
        fn call(&mut self, r: Request<ReplayBody>) -> S::Future {
            self.2.call(r)
        }
    }
    // Every other attempt is a 503: each request is retried once.
    let (up, log) = upstream(|n| {
        Ok(if n % 2 == 0 {
            resp(503, &[("retry-after-ms", "10")], &[])
        } else {
            ok()
        })
    });
    // Not ready at the layer's check for the first request (check 0), nor
    // at the first check for the second request's retry (check 4).
    let checks = Arc::new(AtomicUsize::new(0));
    let mut svc = builder()
        .build()
        .expect("config")
        .layer(Flaky(Arc::clone(&checks), &[0, 4], up));
    for (i, sent_at_call) in [(0, false), (1, true), (2, true)] {
        let fut = svc.ready().await.expect("ready").call(req());
        // The service sends when it is called: the log tells whether the
        // first attempt left before the future was polled.
        assert_eq!(
            log.count(),
            2 * i + usize::from(sent_at_call),
            "request {i}"
        );
        let res = fut.await.expect("response");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(info(&res).attempts, 2);
    }
    assert_eq!(log.count(), 6);
}

/// Guards the deadline on look-aheads: a 429 whose body stalls, or a 200
/// stream whose first event never comes, is handed over at the request's
/// deadline — never later — with one attempt.
#[tokio::test(start_paused = true)]
async fn looking_at_a_stalled_body_never_passes_the_deadline() {
    /// Sends `first`, then never another frame.
    struct Stalled(Option<Bytes>);
    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            }
        }
    }
    let stalled = |status: u16, content_type: &'static str, first: &'static str| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(ResponseBody::new(Stalled(Some(Bytes::from_static(
                first.as_bytes(),
            )))))
            .expect("response")
    };
    for (status, content_type, first) in [
        (
            429,
            "application/json",
            r#"{"type":"error","error":{"type":"rate_"#,
        ),
        (200, "text/event-stream", "event: ping\ndata: {}\n\n"),
    ] {
        let (up, log) = upstream(move |_| Ok(stalled(status, content_type, first)));
        let layer = builder().build().expect("config");
        let t0 = Instant::now();
        let mut r = req();
        r.extensions_mut().insert(Deadline(t0 + secs(2)));
        let res = send(&layer, up, r).await;
        assert_eq!(res.status().as_u16(), status);
        assert_eq!(Instant::now() - t0, secs(2), "handed over at the deadline");
        assert_eq!(log.count(), 1);
        assert_eq!(info(&res).attempts, 1);
    }
}

/// Guards the non-retryable statuses, counted at the simulator over real
/// sockets: a malformed body (400), a missing key (401) and a body over
/// the simulator's limit (413) are each sent exactly once and come back as
/// they are. (Quota 429s — `insufficient_quota`,
/// spend limits — are covered by `non_retryable_failures_are_sent_once`:
/// the simulator does not produce them.)
#[tokio::test]
async fn non_retryable_statuses_are_sent_once_counted_at_the_simulator() {
    use tower_llm_resilience::client::HyperClient;
    use tower_llm_resilience::sim::{SimConfig, Simulator};

    let sim = Simulator::start(SimConfig::new().with_max_body_bytes(1024).with_seed(3))
        .await
        .expect("simulator");
    let svc = builder().build().expect("config").layer(HyperClient::new());
    let url = sim.url();
    let ok_body = r#"{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    let cases = [
        (
            400,
            "/v1/messages",
            true,
            r#"{"model":"claude-sonnet-4-5"}"#.to_owned(),
        ),
        (401, "/v1/messages", false, ok_body.to_owned()),
        (
            413,
            "/v1/messages",
            true,
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{{"role":"user","content":"{}"}}]}}"#,
                "a".repeat(2048)
            ),
        ),
    ];
    for (sent, (status, path, key, body)) in cases.into_iter().enumerate() {
        let uri = format!("{url}{path}");
        let r = if key {
            support::http::anthropic(&uri, "sk-ant-test", body)
        } else {
            post_json(&uri, &[("anthropic-version", ANTHROPIC_VERSION)], body)
        };
        let res = svc.clone().oneshot(r).await.expect("response");
        assert_eq!(res.status().as_u16(), status);
        assert_eq!(info(&res).attempts, 1, "{status}");
        assert_eq!(
            info(&res).stopped,
            Some(StopReason::NotRetryable),
            "{status}"
        );
        body_bytes(res).await;
        assert_eq!(
            sim.counters().received,
            sent as u64 + 1,
            "{status} sent once"
        );
    }
    sim.shutdown().await;
}
