//! Step 10, item 4: a herd. 1,000 callers are told the same `retry-after:
//! 10` at the same instant (paused time). None may come back before the
//! advice; the retry layer's positive jitter (`min(10 % × advice, 1 s)`,
//! the default) must spread them over that 1 s window rather than send
//! them in lockstep; and through the `Stack`, what reaches the upstream
//! after the advice expires must stay within the retry budget
//! (`min_per_sec × ttl + ratio × requests`, `retry/budget.rs`) and the
//! rate limit's sliding bound.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use support::timeline::Timeline;
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_llm_resilience::rate::{Limit, Limits};
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::retry::{RetryInfo, RetryLayer, StopReason};
use tower_llm_resilience::stack::Stack;

const CALLERS: usize = 1_000;
const ADVICE: Duration = Duration::from_secs(10);
/// The default server jitter: 10 % of the advice, at most 1 s.
const JITTER: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// Every instant the stub upstream was called at.
#[derive(Clone, Default)]
struct Stamps(Arc<Mutex<Vec<Instant>>>);

impl Stamps {
    fn since(&self, t0: Instant) -> Vec<Duration> {
        self.0
            .lock()
            .expect("stamps")
            .iter()
            .map(|&t| t - t0)
            .collect()
    }
}

/// A stub upstream answering after `latency`: 429 with `retry-after: 10`
/// to every request that arrives in the first millisecond (the herd's
/// first attempts), 200 to everything after.
fn upstream(
    stamps: Stamps,
    t0: Instant,
    latency: Duration,
) -> impl Service<Request<ReplayBody>, Response = Response<String>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |_req: Request<ReplayBody>| {
        let now = Instant::now();
        stamps.0.lock().expect("stamps").push(now);
        let limited = now < t0 + MS;
        async move {
            sleep(latency).await;
            let res = if limited {
                Response::builder()
                    .status(429)
                    .header("content-type", "application/json")
                    .header("retry-after", "10")
                    .body(String::from(
                        r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
                    ))
            } else {
                Response::builder()
                    .header("content-type", "application/json")
                    .body(String::from(r#"{"type":"message","content":[]}"#))
            };
            Ok::<_, Infallible>(res.expect("response"))
        }
    })
}

/// Caller `i`'s request (distinct bodies; no `temperature`, so the cache
/// passes them).
fn request(i: usize) -> Request<ReplayBody> {
    support::http::anthropic(
        "https://api.anthropic.com/v1/messages",
        "sk-herd",
        format!(
            r#"{{"model":"claude-test","max_tokens":16,"messages":[{{"role":"user","content":"caller {i}"}}]}}"#
        ),
    )
}

/// Sends every caller's request at once through `svc`; each answer's
/// status, `RetryInfo` and the instant it was answered.
async fn herd<S>(svc: S) -> Vec<(u16, Option<RetryInfo>, Instant)>
where
    S: Service<
            Request<ReplayBody>,
            Response = Response<tower_llm_resilience::response::ResponseBody>,
            Error = tower_llm_resilience::BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(request(i)).await.expect("answered");
                let answered = Instant::now();
                let info = res.extensions().get::<RetryInfo>().copied();
                let status = res.status().as_u16();
                res.into_body().collect().await.expect("body");
                (status, info, answered)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("caller"));
    }
    out
}

/// How the retries were spread, for the report.
#[derive(Debug)]
struct Spread {
    retries: usize,
    /// First and last retry, from the 429.
    first: Duration,
    last: Duration,
    span: Duration,
    /// The most retries in one fixed 10 ms bucket, and in any sliding
    /// 10 ms window.
    max_bucket_10ms: u64,
    max_window_10ms: u64,
}

fn spread(retries: &[Duration], told_at: Duration) -> Spread {
    let timeline = Timeline::of_times(retries.iter().copied());
    let (first, last) = timeline.first_last().expect("retries");
    Spread {
        retries: timeline.len(),
        first: first - told_at,
        last: last - told_at,
        span: last - first,
        max_bucket_10ms: timeline.max_bucket(10 * MS),
        max_window_10ms: timeline.max_window(10 * MS).0,
    }
}

/// Guards the spread: 1,000 callers answered `retry-after: 10` at one
/// instant retry no earlier than 10 s, no later than 11 s (+1 ms timer
/// rounding), over at least 90 % of the 1 s jitter window, and no 10 ms
/// holds more than 25 of them (10 on average) — where without jitter all
/// 1,000 would land in one millisecond. A budget of 100 % of requests
/// lets every caller retry, so only the jitter shapes the herd.
#[tokio::test(start_paused = true)]
async fn a_thousand_callers_told_retry_after_come_back_spread_and_not_before() {
    let t0 = Instant::now();
    let stamps = Stamps::default();
    let retry = RetryLayer::builder()
        .budget(Duration::from_secs(10), 10, 1.0)
        .build()
        .expect("config");
    let answers = herd(retry.layer(upstream(stamps.clone(), t0, Duration::ZERO))).await;
    for (status, info, _) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(info.expect("RetryInfo").attempts, 2);
    }
    let all = stamps.since(t0);
    let retries: Vec<Duration> = all.into_iter().filter(|&t| t >= MS).collect();
    let s = spread(&retries, Duration::ZERO);
    eprintln!("herd, retry layer: {s:?}");
    assert_eq!(s.retries, CALLERS);
    assert!(s.first >= ADVICE, "a retry before the advice: {s:?}");
    assert!(
        s.last <= ADVICE + JITTER + MS,
        "past advice + jitter: {s:?}"
    );
    assert!(s.span >= JITTER.mul_f64(0.9), "bunched: {s:?}");
    assert!(s.max_bucket_10ms <= 25, "{s:?}");
    assert!(s.max_window_10ms <= 30, "{s:?}");
}

/// Guards the load after expiry through the whole `Stack`, default retry
/// budget (10 s, 10 retries a second, 20 %): the 1,000 first attempts
/// deposit 200 retries on top of the 100 the floor gives, so at most 300
/// callers retry — none before 10 s after their 429 — and the other 700
/// are answered their 429 at once (`StopReason::Budget`), not held. What
/// reaches the upstream keeps the limiter's sliding bound (100 a second,
/// bursting to 1,000: the herd's first wave fits the burst).
#[tokio::test(start_paused = true)]
async fn through_the_stack_the_herd_stays_within_the_budget_and_the_rate() {
    let t0 = Instant::now();
    let latency = 100 * MS;
    let stamps = Stamps::default();
    let limit = Limit::new(100, Duration::from_secs(1), 1_000).expect("limit");
    let svc = Stack::builder()
        .limits(Limits::unlimited().requests(limit))
        .service(upstream(stamps.clone(), t0, latency));
    let answers = herd(svc).await;

    let all = stamps.since(t0);
    let first_wave = all.iter().filter(|&&t| t < MS).count();
    assert_eq!(first_wave, CALLERS, "the whole herd was told at once");
    let retries: Vec<Duration> = all.iter().copied().filter(|&t| t >= MS).collect();

    // The budget's bound: min_per_sec × ttl + ratio × requests.
    let bound = 10 * 10 + CALLERS / 5;
    assert!(retries.len() <= bound, "{} > {bound}", retries.len());
    assert!(
        retries.len() >= bound - 10,
        "the budget withheld what it allows"
    );
    let mut ok = 0;
    let mut refused = 0;
    for (status, info, answered) in &answers {
        let info = info.expect("RetryInfo");
        match status {
            200 => ok += 1,
            429 => {
                refused += 1;
                assert_eq!(info.stopped, Some(StopReason::Budget));
                assert_eq!(info.attempts, 1);
                assert!(*answered - t0 <= latency + MS, "held: {:?}", *answered - t0);
            }
            s => panic!("status {s}"),
        }
    }
    assert_eq!((ok, refused), (retries.len(), CALLERS - retries.len()));

    // Told at `latency`; none back before the advice.
    let s = spread(&retries, latency);
    eprintln!("herd, stack: {s:?}, {refused} refused by the budget (bound {bound})");
    assert!(s.first >= ADVICE, "a retry before the advice: {s:?}");
    // Spread by the retry jitter (1 s) and the limiter's gate jitter.
    assert!(s.span >= JITTER.mul_f64(0.9), "bunched: {s:?}");
    assert!(s.max_bucket_10ms <= 15, "{s:?}");

    // The limiter's bound over everything the upstream saw.
    Timeline::of_times(all).assert_sliding_bound(limit, Duration::ZERO, "stack herd");
}
