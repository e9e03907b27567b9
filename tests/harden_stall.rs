//! Every wait is bounded: an upstream that stalls before the head, after
//! the head or mid body never hangs a caller past its deadline (or the
//! layer's own timeout), and never keeps a permit or a reservation. Paused
//! time, hand-written stalling services.

mod support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_layer::Layer;
use tower_llm_resilience::Stack;
use tower_llm_resilience::cache::CacheLayer;
use tower_llm_resilience::concurrency::ConcurrencyLimitLayer;
use tower_llm_resilience::error::DeadlineElapsed;
use tower_llm_resilience::fallback::{FallbackLayer, MODEL_USED, Target};
use tower_llm_resilience::rate::{Limit, Limits, RateLimitLayer};
use tower_llm_resilience::request::{Deadline, ReplayBody, RequestMeta};
use tower_llm_resilience::retry::{RetryInfo, RetryLayer, StopReason};

/// The margin past the deadline an answer may take (timer granularity,
/// nothing else: no attempt may start past the deadline).
const MARGIN: Duration = Duration::from_millis(50);
/// Far past any bound: a test that reaches it has hung.
const HUNG: Duration = Duration::from_secs(600);

/// Where an upstream answer stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// Never answers the head.
    BeforeHead,
    /// Sends the head, then no byte.
    AfterHead,
    /// Sends the head and part of the body, then nothing.
    MidBody,
    /// Answers in full.
    No,
}

/// A body that yields its frames, then either ends or never does.
struct StallBody {
    frames: VecDeque<Bytes>,
    stall: bool,
}

impl Body for StallBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.frames.pop_front() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None if self.stall => Poll::Pending,
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && !self.stall
    }
}

/// One scripted answer.
#[derive(Debug, Clone, Copy)]
struct Answer {
    status: u16,
    stall: Stall,
    /// A `text/event-stream` body (else JSON).
    sse: bool,
}

impl Answer {
    const fn json(status: u16, stall: Stall) -> Self {
        Answer {
            status,
            stall,
            sse: false,
        }
    }
}

const fn ok() -> Answer {
    Answer::json(200, Stall::No)
}

/// An upstream that answers from a script per call (the last answer
/// repeats), counting calls and the bodies still alive.
#[derive(Clone)]
struct Upstream {
    script: Arc<Mutex<VecDeque<Answer>>>,
    last: Arc<Mutex<Answer>>,
    calls: Arc<AtomicUsize>,
    models: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    fn new(script: impl IntoIterator<Item = Answer>) -> Self {
        let script: VecDeque<Answer> = script.into_iter().collect();
        let last = *script.back().expect("a script");
        Upstream {
            script: Arc::new(Mutex::new(script)),
            last: Arc::new(Mutex::new(last)),
            calls: Arc::default(),
            models: Arc::default(),
        }
    }

    fn next(&self) -> Answer {
        let mut script = self.script.lock().expect("lock");
        if script.len() > 1 {
            script.pop_front().expect("non-empty")
        } else {
            *self.last.lock().expect("lock")
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

type UpstreamFuture = Pin<Box<dyn Future<Output = Result<Response<StallBody>, Infallible>> + Send>>;

impl Service<Request<ReplayBody>> for Upstream {
    type Response = Response<StallBody>;
    type Error = Infallible;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let meta = RequestMeta::parse(req.uri().path(), req.headers(), req.body().as_bytes());
        self.models
            .lock()
            .expect("lock")
            .push(meta.model().unwrap_or_default().to_owned());
        let Answer { status, stall, sse } = self.next();
        let body = match (status, sse) {
            (200, false) => {
                r#"{"id":"m","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":5,"output_tokens":2}}"#
            }
            (200, true) => {
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
            }
            _ => r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
        };
        let (frames, stalls) = match stall {
            Stall::BeforeHead => return Box::pin(std::future::pending()),
            Stall::AfterHead => (VecDeque::new(), true),
            Stall::MidBody => (VecDeque::from([Bytes::from(&body[..10])]), true),
            Stall::No => (VecDeque::from([Bytes::from(body)]), false),
        };
        let res = Response::builder()
            .status(status)
            .header(
                "content-type",
                if sse && status == 200 {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .body(StallBody {
                frames,
                stall: stalls,
            })
            .expect("response");
        Box::pin(async move { Ok(res) })
    }
}

fn request(model: &str, deadline: Option<Duration>) -> Request<ReplayBody> {
    request_with(model, deadline, "")
}

/// A deterministic request (`temperature: 0`): one the cache keys.
fn cacheable(model: &str, deadline: Option<Duration>) -> Request<ReplayBody> {
    request_with(model, deadline, r#""temperature":0,"#)
}

fn request_with(model: &str, deadline: Option<Duration>, extra: &str) -> Request<ReplayBody> {
    let mut req = Request::post("http://upstream/v1/messages")
        .header("x-api-key", "sk-test")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(ReplayBody::from(format!(
            r#"{{"model":"{model}","max_tokens":64,{extra}"messages":[{{"role":"user","content":"Hello"}}]}}"#
        )))
        .expect("request");
    if let Some(d) = deadline {
        req.extensions_mut().insert(Deadline::after(d));
    }
    req
}

/// Runs `fut` to its answer, failing the test if it hangs; the answer and
/// how long it took (paused time).
async fn answered<F: Future>(fut: F) -> (F::Output, Duration) {
    let start = Instant::now();
    let out = tokio::time::timeout(HUNG, fut)
        .await
        .expect("the request hung: no answer after 600 s");
    (out, start.elapsed())
}

/// Reads a body to its end or its error, failing if it hangs.
async fn drain<B>(body: B) -> Result<Bytes, String>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    tokio::time::timeout(HUNG, body.collect())
        .await
        .expect("the body hung")
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string())
}

fn fallback_to(model: &str) -> FallbackLayer {
    FallbackLayer::new([Target::model(model)])
}

// ---------------------------------------------------------------------------
// Defect 1, one regression test per reproduction.

/// A 429 head whose body never ends, no `Deadline`: the retry layer's look
/// at the body used to wait forever. Now each look ends at the layer's
/// look-ahead timeout (30 s by default), the stalled body is let go, and
/// the caller is answered.
#[tokio::test(start_paused = true)]
async fn stalled_429_body_without_deadline_is_bounded() {
    let upstream = Upstream::new([Answer::json(429, Stall::AfterHead)]);
    let limit = ConcurrencyLimitLayer::new(4);
    let svc = RetryLayer::new().layer(limit.layer(upstream.clone()));
    let (res, took) = answered(svc.oneshot(request("a", None))).await;
    let res = res.expect("a response");
    assert_eq!(res.status(), 429);
    // Three attempts, each given up at the 30 s look-ahead timeout, plus
    // backoff between them.
    assert_eq!(upstream.calls(), 3);
    assert!(took < Duration::from_secs(3 * 30 + 10), "took {took:?}");
    assert_eq!(limit.stats().in_flight, 0, "the stalled bodies were let go");
    let err = drain(res.into_body()).await.expect_err("a stalled body");
    assert!(err.contains("stalled"), "{err}");
}

/// The fallback layer read an error body to its end before the next
/// target, not watching the deadline: with a 5 s `Deadline`, no answer.
#[tokio::test(start_paused = true)]
async fn fallback_stalled_error_body_answers_by_deadline() {
    let upstream = Upstream::new([Answer::json(503, Stall::AfterHead)]);
    let svc = fallback_to("b").layer(upstream.clone());
    let (res, took) = answered(svc.oneshot(request("a", Some(Duration::from_secs(5))))).await;
    assert!(took <= Duration::from_secs(5) + MARGIN, "took {took:?}");
    let res = res.expect("the failure, at the deadline");
    assert_eq!(res.status(), 503);
    assert_eq!(upstream.calls(), 1, "no time was left for the next target");
}

/// Without a deadline the fallback layer's own look-ahead bound ends the
/// read of a stalled error body, and it is configurable: at 2 s, the next
/// target is tried after 2 s, not the default 30.
#[tokio::test(start_paused = true)]
async fn fallback_stalled_error_body_without_deadline_ends_at_its_peek_timeout() {
    let upstream = Upstream::new([Answer::json(503, Stall::AfterHead), ok()]);
    let layer = FallbackLayer::builder()
        .target(Target::model("b"))
        .peek_timeout(Duration::from_secs(2))
        .build()
        .expect("config");
    let (res, took) = answered(layer.layer(upstream.clone()).oneshot(request("a", None))).await;
    assert_eq!(res.expect("the next target's answer").status(), 200);
    assert_eq!(upstream.calls(), 2);
    assert!(
        took >= Duration::from_secs(2) && took <= Duration::from_secs(2) + MARGIN,
        "took {took:?}"
    );
    let zero = FallbackLayer::builder()
        .target(Target::model("b"))
        .peek_timeout(Duration::ZERO)
        .build()
        .expect_err("zero");
    assert_eq!(zero.field, "peek_timeout");
}

/// The same through the whole `Stack`.
#[tokio::test(start_paused = true)]
async fn stack_stalled_error_body_answers_by_deadline() {
    let upstream = Upstream::new([Answer::json(503, Stall::AfterHead)]);
    let limit = ConcurrencyLimitLayer::new(8);
    let svc = Stack::builder()
        .fallback(fallback_to("b"))
        .concurrency_limit(limit.clone())
        .service(upstream.clone());
    let (res, took) = answered(svc.oneshot(request("a", Some(Duration::from_secs(5))))).await;
    assert!(took <= Duration::from_secs(5) + MARGIN, "took {took:?}");
    drop(res);
    assert_eq!(limit.stats().in_flight, 0);
}

/// A first attempt answered 503, the second never answers: with a 5 s
/// `Deadline`, the retry layer used to wait for it forever.
#[tokio::test(start_paused = true)]
async fn hung_retry_attempt_answers_by_deadline() {
    let upstream = Upstream::new([
        Answer::json(503, Stall::No),
        Answer::json(200, Stall::BeforeHead),
    ]);
    let limit = ConcurrencyLimitLayer::new(4);
    let svc = RetryLayer::new().layer(limit.layer(upstream.clone()));
    let (res, took) = answered(svc.oneshot(request("a", Some(Duration::from_secs(5))))).await;
    assert!(took <= Duration::from_secs(5) + MARGIN, "took {took:?}");
    let err = res.expect_err("no answer by the deadline");
    assert!(err.is::<DeadlineElapsed>(), "{err}");
    assert_eq!(upstream.calls(), 2);
    assert_eq!(limit.stats().in_flight, 0, "the hung attempt was let go");
}

/// The same bounded by `RetryBuilder::timeout` (the layer's total
/// timeout), no `Deadline`.
#[tokio::test(start_paused = true)]
async fn hung_retry_attempt_answers_by_retry_timeout() {
    let upstream = Upstream::new([
        Answer::json(503, Stall::No),
        Answer::json(200, Stall::BeforeHead),
    ]);
    let retry = RetryLayer::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("config");
    let svc = retry.layer(upstream.clone());
    let (res, took) = answered(svc.oneshot(request("a", None))).await;
    assert!(took <= Duration::from_secs(5) + MARGIN, "took {took:?}");
    assert!(res.expect_err("timed out").is::<DeadlineElapsed>());
}

/// The same through the whole `Stack`.
#[tokio::test(start_paused = true)]
async fn stack_hung_retry_attempt_answers_by_deadline() {
    let upstream = Upstream::new([
        Answer::json(503, Stall::No),
        Answer::json(200, Stall::BeforeHead),
    ]);
    let limit = ConcurrencyLimitLayer::new(8);
    let svc = Stack::builder()
        .concurrency_limit(limit.clone())
        .service(upstream.clone());
    let (res, took) = answered(svc.oneshot(request("a", Some(Duration::from_secs(5))))).await;
    assert!(took <= Duration::from_secs(5) + MARGIN, "took {took:?}");
    assert!(res.is_err());
    assert_eq!(limit.stats().in_flight, 0);
}

/// With a cap of 2 below, two stalled error bodies held both permits for
/// good, and every later request failed in the admission queue. Now the
/// stalled bodies are given up at the deadline (the permits come back
/// while the callers still hold their responses) and later requests pass.
#[tokio::test(start_paused = true)]
async fn stalled_error_bodies_do_not_pin_concurrency_permits() {
    let upstream = Upstream::new([
        Answer::json(429, Stall::MidBody),
        Answer::json(429, Stall::MidBody),
        ok(),
    ]);
    let limit = ConcurrencyLimitLayer::new(2);
    let svc = Stack::builder()
        .concurrency_limit(limit.clone())
        .retry(
            RetryLayer::builder()
                .max_attempts(1)
                .build()
                .expect("config"),
        )
        .service(upstream.clone());
    let five = Some(Duration::from_secs(5));
    let (a, b) = tokio::join!(
        svc.clone().oneshot(request("a", five)),
        svc.clone().oneshot(request("a", five)),
    );
    let (a, b) = (a.expect("answered"), b.expect("answered"));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (429, 429));
    assert_eq!(limit.stats().in_flight, 0, "both permits are back");
    let (c, took) = answered(svc.clone().oneshot(request("a", five))).await;
    assert_eq!(c.expect("admitted").status(), 200);
    assert!(
        took < Duration::from_secs(1),
        "no wait for a permit: {took:?}"
    );
    // What the callers read: the bytes that came, then the stall.
    let err = drain(a.into_body()).await.expect_err("stalled");
    assert!(err.contains("stalled"), "{err}");
    drop(b);
    assert_eq!(limit.stats().in_flight, 0);
}

// ---------------------------------------------------------------------------
// Defect 6, the two small ones of this part.

/// Every target failed: the last target's response was marked with the
/// *first* model. It is marked with the one that answered.
#[tokio::test(start_paused = true)]
async fn fallback_all_failed_marks_the_model_that_answered() {
    let upstream = Upstream::new([Answer::json(503, Stall::No)]);
    let svc = FallbackLayer::new([Target::model("b"), Target::model("c")]).layer(upstream.clone());
    let res = svc
        .oneshot(request("a", None))
        .await
        .expect("the last failure");
    assert_eq!(res.status(), 503);
    assert_eq!(*upstream.models.lock().expect("lock"), ["a", "b", "c"]);
    assert_eq!(res.headers()[MODEL_USED], "c");
}

/// A response future made by `call` and dropped before its first poll
/// sent nothing, but kept its reservation until the bucket refilled (the
/// next request waited). It is refunded in full.
#[tokio::test(start_paused = true)]
async fn rate_future_dropped_before_first_poll_refunds_its_reservation() {
    let upstream = Upstream::new([ok()]);
    let limits =
        Limits::unlimited().requests(Limit::new(1, Duration::from_secs(6), 1).expect("limit"));
    let mut svc = RateLimitLayer::new(limits).layer(upstream.clone());
    let fut = svc.ready().await.expect("ready").call(request("a", None));
    drop(fut);
    let (res, took) = answered(svc.oneshot(request("a", None))).await;
    assert_eq!(res.expect("admitted").status(), 200);
    assert_eq!(took, Duration::ZERO, "admitted at once: {took:?}");
}

/// A cache waiter, coalesced behind a leader whose upstream never answers,
/// waited for the leader up to `coalesce_timeout` (5 min) whatever its own
/// `Deadline`, then went upstream alone. It ends at its deadline.
#[tokio::test(start_paused = true)]
async fn cache_waiter_behind_a_hung_leader_answers_by_deadline() {
    let upstream = Upstream::new([Answer::json(200, Stall::BeforeHead)]);
    let svc = CacheLayer::default().layer(upstream.clone());
    // The leader has no deadline: its hang is the upstream's.
    let leader = tokio::spawn(svc.clone().oneshot(cacheable("a", None)));
    tokio::task::yield_now().await;
    assert_eq!(upstream.calls(), 1);
    let (res, took) = answered(
        svc.clone()
            .oneshot(cacheable("a", Some(Duration::from_secs(5)))),
    )
    .await;
    assert!(took <= Duration::from_secs(5) + MARGIN, "took {took:?}");
    assert!(res.expect_err("no answer").is::<DeadlineElapsed>());
    assert_eq!(
        upstream.calls(),
        1,
        "no call upstream alone at the deadline"
    );
    leader.abort();
}

/// A look-ahead timeout bounds a 2xx stream that never starts, too: it is
/// handed over as it is when the bound passes (no deadline).
#[tokio::test(start_paused = true)]
async fn retry_stream_that_never_starts_is_handed_over_at_peek_timeout() {
    let upstream = Upstream::new([Answer {
        status: 200,
        stall: Stall::AfterHead,
        sse: true,
    }]);
    let retry = RetryLayer::builder()
        .peek_timeout(Duration::from_secs(2))
        .build()
        .expect("config");
    let (res, took) = answered(retry.layer(upstream).oneshot(request("a", None))).await;
    assert_eq!(res.expect("the stream").status(), 200);
    assert_eq!(took, Duration::from_secs(2));
}

/// `attempt_timeout` bounds each attempt, and a timed-out attempt is
/// retried as a transport failure.
#[tokio::test(start_paused = true)]
async fn attempt_timeout_bounds_each_attempt_and_retries() {
    let upstream = Upstream::new([Answer::json(200, Stall::BeforeHead), ok()]);
    let limit = ConcurrencyLimitLayer::new(4);
    let retry = RetryLayer::builder()
        .attempt_timeout(Duration::from_secs(2))
        .build()
        .expect("config");
    let svc = retry.layer(limit.layer(upstream.clone()));
    let (res, took) = answered(svc.oneshot(request("a", None))).await;
    let res = res.expect("the second attempt's answer");
    assert_eq!(res.status(), 200);
    let info = res.extensions().get::<RetryInfo>().expect("info");
    assert_eq!(info.attempts, 2);
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(4));
    drop(res);
    assert_eq!(limit.stats().in_flight, 0);
}

/// Every attempt timing out: the last `AttemptTimeout` is the answer.
#[tokio::test(start_paused = true)]
async fn attempt_timeout_every_attempt_gives_the_timeout() {
    let upstream = Upstream::new([Answer::json(200, Stall::BeforeHead)]);
    let retry = RetryLayer::builder()
        .attempt_timeout(Duration::from_secs(1))
        .no_budget()
        .build()
        .expect("config");
    let (res, _) = answered(retry.layer(upstream.clone()).oneshot(request("a", None))).await;
    let err = res.expect_err("timed out");
    assert!(
        err.is::<tower_llm_resilience::error::AttemptTimeout>(),
        "{err}"
    );
    assert_eq!(upstream.calls(), 3);
}

#[test]
fn retry_builder_refuses_zero_timeouts() {
    for builder in [
        RetryLayer::builder().timeout(Duration::ZERO),
        RetryLayer::builder().attempt_timeout(Duration::ZERO),
        RetryLayer::builder().peek_timeout(Duration::ZERO),
    ] {
        let err = builder.build().expect_err("refused");
        assert!(err.to_string().contains("above zero"), "{err}");
    }
}

/// With a deadline, the request's stop at a hung attempt is recorded as
/// the deadline (for the dead-letter hook and `RetryInfo`).
#[tokio::test(start_paused = true)]
async fn hung_attempt_at_deadline_is_dead_lettered_as_deadline() {
    let upstream = Upstream::new([
        Answer::json(503, Stall::No),
        Answer::json(200, Stall::BeforeHead),
    ]);
    let stops = Arc::new(Mutex::new(Vec::new()));
    let retry = {
        let stops = Arc::clone(&stops);
        RetryLayer::builder()
            .dead_letter(move |_req, info: &RetryInfo| {
                stops.lock().expect("lock").push(info.stopped);
            })
            .build()
            .expect("config")
    };
    let (res, _) = answered(
        retry
            .layer(upstream)
            .oneshot(request("a", Some(Duration::from_secs(5)))),
    )
    .await;
    assert!(res.is_err());
    assert_eq!(*stops.lock().expect("lock"), [Some(StopReason::Deadline)]);
}

// ---------------------------------------------------------------------------
// The property: whatever the upstream does, every request with a deadline
// is answered by deadline + margin, and every permit comes back.

/// The layer (or composition) under test, over a concurrency limit.
#[derive(Debug, Clone, Copy)]
enum Under {
    Retry,
    Fallback,
    Stack,
    /// Waiters behind a cache leader that has no deadline.
    CacheWaiters,
    /// Requests queued for a permit behind one with no deadline.
    ConcurrencyWaiters,
    /// Requests queued for the bucket behind one with no deadline.
    RateWaiters,
}

fn stall() -> impl Strategy<Value = Stall> {
    prop_oneof![
        Just(Stall::BeforeHead),
        Just(Stall::AfterHead),
        Just(Stall::MidBody),
        Just(Stall::No),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop_oneof![Just(200u16), Just(429), Just(500), Just(503), Just(529)],
        stall(),
        any::<bool>(),
    )
        .prop_map(|(status, stall, sse)| Answer { status, stall, sse })
}

fn under() -> impl Strategy<Value = Under> {
    prop_oneof![
        Just(Under::Retry),
        Just(Under::Fallback),
        Just(Under::Stack),
        Just(Under::CacheWaiters),
        Just(Under::ConcurrencyWaiters),
        Just(Under::RateWaiters),
    ]
}

type Svc = tower::util::BoxCloneService<
    Request<ReplayBody>,
    Response<tower_llm_resilience::ResponseBody>,
    tower_llm_resilience::BoxError,
>;

/// The service under test, and the concurrency limit at its bottom.
fn build(under: Under, upstream: Upstream, cap: usize) -> (Svc, ConcurrencyLimitLayer) {
    let limit = ConcurrencyLimitLayer::new(cap);
    let bottom = limit.layer(upstream);
    let svc = match under {
        Under::Retry => Svc::new(RetryLayer::new().layer(bottom)),
        Under::Fallback => Svc::new(fallback_to("b").layer(bottom)),
        Under::Stack => Svc::new(
            Stack::builder()
                .fallback(fallback_to("b"))
                .concurrency_limit(limit.clone())
                .service(bottom.into_inner()),
        ),
        Under::CacheWaiters => Svc::new(CacheLayer::default().layer(bottom)),
        Under::ConcurrencyWaiters => Svc::new(bottom),
        Under::RateWaiters => {
            let limits = Limits::unlimited()
                .requests(Limit::new(1, Duration::from_secs(3600), 1).expect("limit"));
            Svc::new(RateLimitLayer::new(limits).layer(bottom))
        }
    };
    (svc, limit)
}

async fn every_wait_is_bounded(
    under: Under,
    first: Answer,
    then: Answer,
    deadline: Duration,
    n: usize,
    cap: usize,
) {
    let waiters = matches!(
        under,
        Under::CacheWaiters | Under::ConcurrencyWaiters | Under::RateWaiters
    );
    // In the waiter scenarios a waiter, once through, calls the upstream
    // itself (as the new leader, or with its permit): that wait is the
    // upstream's, so its head comes — only the head request's may not.
    let then = match then.stall {
        Stall::BeforeHead if waiters => Answer {
            stall: Stall::AfterHead,
            ..then
        },
        _ => then,
    };
    let upstream = Upstream::new([first, then]);
    let (svc, limit) = build(under, upstream, cap);
    let make = |d| match under {
        Under::CacheWaiters => cacheable("a", d),
        _ => request("a", d),
    };
    // In the waiter scenarios the first request, without a deadline, goes
    // first and may hang (its wait is the upstream's, not the layer's).
    let head = waiters.then(|| tokio::spawn(svc.clone().oneshot(make(None))));
    if waiters {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let svc = svc.clone();
        let req = make(Some(deadline));
        tasks.push(tokio::spawn(async move {
            let res = svc.oneshot(req).await;
            (res, Instant::now())
        }));
    }
    let mut responses = Vec::new();
    for t in tasks {
        let (res, at) = tokio::time::timeout(HUNG, t)
            .await
            .expect("a request hung")
            .expect("task");
        let took = at - start;
        assert!(
            took <= deadline + MARGIN,
            "{under:?} {first:?} then {then:?}: answered after {took:?} (deadline {deadline:?})"
        );
        responses.push(res);
    }
    // A body handed over is the caller's: dropping it gives its permit back.
    drop(responses);
    if let Some(head) = head {
        head.abort();
        let _ = head.await;
    }
    let stats = limit.stats();
    assert_eq!(stats.in_flight, 0, "{under:?}: a permit was kept");
    assert_eq!(stats.queued, 0, "{under:?}: a waiter was left queued");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_wait_ends_by_the_deadline_and_permits_come_back(
        under in under(),
        first in answer(),
        then in answer(),
        deadline_ms in 100u64..20_000,
        n in 1usize..4,
        cap in 1usize..3,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(every_wait_is_bounded(
            under,
            first,
            then,
            Duration::from_millis(deadline_ms),
            n,
            cap,
        ));
    }
}
