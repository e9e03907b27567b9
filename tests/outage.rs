//! Step 10, item 5: an outage. The upstream answers 503 to everything for
//! 60 s (paused time) while 200 callers keep sending, each request with a
//! 3 s `Deadline`, through the whole `Stack` with the default retry but
//! for 10 attempts instead of 3 (500 ms doubling backoff with full jitter,
//! a budget of 10 retries a second plus 20 % of requests over 10 s): so
//! the budget and the deadline, not the attempt count, are what stop
//! retries.
//!
//! The budget's bound (`retry/budget.rs`): every retry needs a balance of
//! one in the window of 10 slots it is taken in, `min_per_sec × ttl +
//! ratio × deposits − withdrawals`. Windows ending at the last retry, at
//! the last retry before that window, and so on, are disjoint and hold
//! every retry, so over a run whose retries span `S`:
//!
//! ```text
//! retries ≤ ⌈S / ttl⌉ × min_per_sec × ttl + ratio × requests
//! ```
//!
//! Here `S` ≤ 63 s (the outage, then one deadline), so at most 7 × 100 +
//! 0.2 × requests (those sent before 63 s: later deposits fund nothing);
//! deposits the budget counts early only lower it.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::time::{Instant, sleep, sleep_until};
use tower::{Service, ServiceExt, service_fn};
use tower_llm_resilience::error::DeadlineElapsed;
use tower_llm_resilience::request::{Deadline, ReplayBody};
use tower_llm_resilience::retry::{RetryInfo, RetryLayer};
use tower_llm_resilience::stack::Stack;

const CALLERS: usize = 200;
const OUTAGE: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(3);
const RUN: Duration = Duration::from_secs(70);
/// Each caller's pause between one answer and its next request.
const THINK: Duration = Duration::from_secs(1);
const LATENCY: Duration = Duration::from_millis(50);

/// The default budget's settings (`RetryBuilder::default`).
const TTL_SECS: usize = 10;
const MIN_PER_SEC: usize = 10;
const RATIO: f64 = 0.2;

/// A stub upstream answering after 50 ms: 503 until the outage ends, 200
/// after; every call's instant is kept.
fn upstream(
    stamps: Arc<Mutex<Vec<Instant>>>,
    t0: Instant,
) -> impl Service<Request<ReplayBody>, Response = Response<String>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |_req: Request<ReplayBody>| {
        let now = Instant::now();
        stamps.lock().expect("stamps").push(now);
        let down = now < t0 + OUTAGE;
        async move {
            sleep(LATENCY).await;
            let res = if down {
                Response::builder()
                    .status(503)
                    .header("content-type", "application/json")
                    .body(String::from(
                        r#"{"type":"error","error":{"type":"api_error","message":"unavailable"}}"#,
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

fn request(caller: usize, n: usize, deadline: Instant) -> Request<ReplayBody> {
    let mut req = support::http::anthropic(
        "https://api.anthropic.com/v1/messages",
        "sk-outage",
        format!(
            r#"{{"model":"claude-test","max_tokens":16,"messages":[{{"role":"user","content":"caller {caller} request {n}"}}]}}"#
        ),
    );
    req.extensions_mut().insert(Deadline(deadline));
    req
}

/// How one request ended.
#[derive(Debug, Clone, Copy)]
struct Answer {
    sent: Duration,
    elapsed: Duration,
    /// The status, or `None` for `DeadlineElapsed`.
    status: Option<u16>,
    attempts: Option<u32>,
}

/// What one run of the outage saw: every answer, and when the upstream
/// was called (from the start).
struct Run {
    answers: Vec<Answer>,
    attempts: Vec<Duration>,
    in_flight_after: usize,
}

/// The outage through the `Stack` with `retry`: 200 callers, each sending
/// a request with a 3 s deadline, waiting for its answer, pausing 1 s,
/// until 70 s (staggered over the first second).
async fn outage(retry: RetryLayer) -> Run {
    let t0 = Instant::now();
    let stamps = Arc::new(Mutex::new(Vec::new()));
    let svc = Stack::builder()
        .retry(retry)
        .service(upstream(Arc::clone(&stamps), t0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let svc = svc.clone();
            tokio::spawn(async move {
                // Staggered starts: 200 callers over the first second.
                sleep_until(t0 + Duration::from_millis(5 * c as u64)).await;
                let mut answers = Vec::new();
                for n in 0.. {
                    let start = Instant::now();
                    if start - t0 >= RUN {
                        break;
                    }
                    let res = svc.clone().oneshot(request(c, n, start + DEADLINE)).await;
                    let (status, attempts) = match res {
                        Ok(res) => {
                            let attempts = res.extensions().get::<RetryInfo>().map(|i| i.attempts);
                            let status = res.status().as_u16();
                            res.into_body().collect().await.expect("body");
                            (Some(status), attempts)
                        }
                        Err(e) => {
                            assert!(e.is::<DeadlineElapsed>(), "untyped failure: {e}");
                            (None, None)
                        }
                    };
                    answers.push(Answer {
                        sent: start - t0,
                        elapsed: start.elapsed(),
                        status,
                        attempts,
                    });
                    sleep(THINK).await;
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in callers {
        answers.extend(c.await.expect("caller"));
    }
    let attempts: Vec<Duration> = stamps
        .lock()
        .expect("stamps")
        .iter()
        .map(|&t| t - t0)
        .collect();
    Run {
        answers,
        attempts,
        in_flight_after: svc.concurrency_limit().stats().in_flight,
    }
}

/// Guards bounded amplification, answers by the deadline and recovery:
/// through a 60 s outage the retries stay within the budget's bound,
/// every request is answered — its 503 or `DeadlineElapsed`, never
/// anything else — within its 3 s, and once the upstream is back every
/// request succeeds at its first attempt, with no permit left held.
#[tokio::test(start_paused = true)]
async fn an_outage_costs_at_most_the_budget_and_every_caller_is_answered_in_time() {
    let retry = RetryLayer::builder()
        .max_attempts(10)
        .build()
        .expect("config");
    let Run {
        answers,
        attempts,
        in_flight_after,
    } = outage(retry).await;

    // Every caller answered within its deadline, with a 503 or a typed error.
    let max_elapsed = answers.iter().map(|a| a.elapsed).max().expect("answers");
    assert!(max_elapsed <= DEADLINE, "answered after {max_elapsed:?}");
    let during: Vec<&Answer> = answers.iter().filter(|a| a.sent < OUTAGE).collect();
    let unavailable = during.iter().filter(|a| a.status == Some(503)).count();
    let timed_out = during.iter().filter(|a| a.status.is_none()).count();
    // A request sent just before the end may retry into the recovery.
    let recovered_late = during.iter().filter(|a| a.status == Some(200)).count();
    assert_eq!(unavailable + timed_out + recovered_late, during.len());
    assert!(recovered_late <= during.iter().filter(|a| a.sent + DEADLINE > OUTAGE).count());

    // The budget's bound on retries.
    let funding = answers
        .iter()
        .filter(|a| a.sent < OUTAGE + DEADLINE)
        .count();
    let windows = (OUTAGE + DEADLINE).as_secs().div_ceil(TTL_SECS as u64) as usize;
    let bound = windows * MIN_PER_SEC * TTL_SECS + (RATIO * funding as f64).floor() as usize;
    let retries = attempts.len() - answers.len();
    let outage_attempts = attempts.iter().filter(|&&t| t < OUTAGE).count();
    assert!(
        retries <= bound,
        "{retries} retries > {bound} ({windows} windows × {} + {RATIO} × {funding})",
        MIN_PER_SEC * TTL_SECS
    );
    // Without a budget each of these requests would be tried until its
    // deadline (5 or more attempts in 3 s at this backoff).
    assert!(
        outage_attempts * 10 < during.len() * 15,
        "amplification {outage_attempts} attempts for {} requests",
        during.len()
    );

    // After recovery every request succeeds at its first attempt.
    let after: Vec<&Answer> = answers.iter().filter(|a| a.sent >= OUTAGE).collect();
    assert!(after.len() >= CALLERS * 5, "{} requests after", after.len());
    for a in &after {
        assert_eq!((a.status, a.attempts), (Some(200), Some(1)), "{a:?}");
    }
    assert_eq!(in_flight_after, 0);

    eprintln!(
        "outage: {} requests during ({unavailable} answered 503, {timed_out} DeadlineElapsed, \
         {recovered_late} recovered), {outage_attempts} attempts during (×{:.2}); \
         {retries} retries in all ({} attempts for {} requests), bound {bound} = \
         {windows} × {} + {RATIO} × {funding}; max elapsed {max_elapsed:?}; \
         {} requests after, all 200 at the first attempt",
        during.len(),
        outage_attempts as f64 / during.len() as f64,
        attempts.len(),
        answers.len(),
        MIN_PER_SEC * TTL_SECS,
        after.len(),
    );
}

/// The control: the same outage without a budget. Each request is retried
/// until its deadline, so the upstream is sent several times the requests
/// — what the budget above holds to ×1.3.
#[tokio::test(start_paused = true)]
async fn without_a_budget_the_same_outage_costs_several_times_the_requests() {
    let retry = RetryLayer::builder()
        .max_attempts(10)
        .no_budget()
        .build()
        .expect("config");
    let run = outage(retry).await;
    let during = run.answers.iter().filter(|a| a.sent < OUTAGE).count();
    let attempts = run.attempts.iter().filter(|&&t| t < OUTAGE).count();
    let max_elapsed = run
        .answers
        .iter()
        .map(|a| a.elapsed)
        .max()
        .expect("answers");
    let timed_out = run.answers.iter().filter(|a| a.status.is_none()).count();
    eprintln!(
        "outage without a budget: {during} requests during, {attempts} attempts (×{:.2}); \
         {timed_out} DeadlineElapsed; max elapsed {max_elapsed:?}",
        attempts as f64 / during as f64
    );
    assert!(max_elapsed <= DEADLINE, "answered after {max_elapsed:?}");
    assert!(
        attempts > 3 * during,
        "{attempts} attempts for {during} requests"
    );
}
