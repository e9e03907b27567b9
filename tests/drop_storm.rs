//! Drop storms: a thousand callers drop their response futures or their
//! response bodies at points proptest chooses — before the first poll,
//! while queued for admission, while a retry backs off, while coalesced
//! behind a cache leader, mid-stream — and afterwards every permit,
//! reservation, queue place and flight is back, and no waiter is left
//! asleep: fresh requests are admitted as soon as the capacity they are
//! owed exists. Paused time; `PROPTEST_CASES` runs more cases.

mod support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use support::http::anthropic;
use tokio::time::{Instant, Sleep};
use tower::{Service, ServiceExt};
use tower_layer::Layer;
use tower_llm_resilience::Stack;
use tower_llm_resilience::budget::{BudgetLayer, Cap, MemoryBudgetStore, Period, Scope};
use tower_llm_resilience::cache::CacheLayer;
use tower_llm_resilience::concurrency::{Adaptive, ConcurrencyLimitLayer};
use tower_llm_resilience::error::{
    BodyStalled, DeadlineElapsed, NoKeyAvailable, QueueTimeout, RateLimited,
};
use tower_llm_resilience::fallback::{FallbackLayer, Target};
use tower_llm_resilience::rate::{AuthStyle, Clock, KeyPool, Limit, Limits, RateLimitLayer};
use tower_llm_resilience::request::{Deadline, ReplayBody};
use tower_llm_resilience::retry::RetryLayer;
use tower_llm_resilience::{BoxError, ResponseBody};

/// Far past any wait of the storm: a caller that reaches it has hung.
const HUNG: Duration = Duration::from_secs(3600);
/// The upstream's time to the head.
const LATENCY: Duration = Duration::from_millis(20);
/// The gap before each of the stream's frames.
const GAP: Duration = Duration::from_millis(5);
/// The stream's frames.
const FRAMES: [&str; 4] = [
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":0}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];
/// A whole answer's time, head and stream.
const ANSWER: Duration = Duration::from_millis(20 + 4 * 5);
/// Timer granularity.
const MARGIN: Duration = Duration::from_millis(5);
/// The callers of one storm.
const CALLERS: usize = 1_000;
/// The concurrency cap of the stack.
const CAP: usize = 6;
/// The rate limit: 200 requests a second, a burst of 50.
const RATE: u64 = 200;
const BURST: u64 = 50;

// ---- the upstream ----

/// The model the upstream always answers 529.
const OVERLOADED: &str = "claude-overloaded";

/// A body that yields its frames one `GAP` apart, and counts itself alive
/// until dropped.
struct Drip {
    frames: VecDeque<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
    _alive: Alive,
}

/// One upstream body alive.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Alive(Arc::clone(count))
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.frames.is_empty() {
            return Poll::Ready(None);
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(GAP)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        let frame = self.frames.pop_front().expect("a frame");
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Answers an SSE stream after `LATENCY`; a request marked `x-storm-flaky`
/// is answered 503 the first time its `x-storm-id` is seen (so its retry
/// backs off). Counts its calls, the requests it started per API key
/// (those whose future was polled: what was sent), and the bodies still
/// alive; notes when each flaky request was refused and which came back.
#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<HashSet<String>>>,
    refused: Arc<Mutex<HashMap<String, Instant>>>,
    retried: Arc<Mutex<HashSet<String>>>,
    overloaded: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    started: Arc<Mutex<HashMap<String, usize>>>,
    alive: Arc<AtomicUsize>,
}

type UpstreamFuture = Pin<Box<dyn Future<Output = Result<Response<Drip>, Infallible>> + Send>>;

impl Service<Request<ReplayBody>> for Upstream {
    type Response = Response<Drip>;
    type Error = Infallible;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let id = req
            .headers()
            .get("x-storm-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let flaky = req.headers().contains_key("x-storm-flaky");
        let fail = flaky && self.seen.lock().expect("lock").insert(id.clone());
        let overloaded = {
            let model = format!(r#""model":"{OVERLOADED}""#);
            let body = req.body().as_bytes();
            body.windows(model.len()).any(|w| w == model.as_bytes())
        };
        if overloaded {
            self.overloaded.fetch_add(1, Ordering::SeqCst);
        }
        if flaky && !fail {
            self.retried.lock().expect("lock").insert(id.clone());
        }
        let refused = Arc::clone(&self.refused);
        let alive = Alive::new(&self.alive);
        let key = req
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let started = Arc::clone(&self.started);
        Box::pin(async move {
            *started.lock().expect("lock").entry(key).or_default() += 1;
            tokio::time::sleep(LATENCY).await;
            let res = if overloaded {
                Response::builder()
                    .status(529)
                    .header("content-type", "application/json")
                    .body(Drip {
                        frames: VecDeque::from([Bytes::from_static(
                            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                        )]),
                        sleep: None,
                        _alive: alive,
                    })
            } else if fail {
                refused.lock().expect("lock").insert(id, Instant::now());
                Response::builder()
                    .status(503)
                    .header("content-type", "application/json")
                    .body(Drip {
                        frames: VecDeque::from([Bytes::from_static(
                            br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
                        )]),
                        sleep: None,
                        _alive: alive,
                    })
            } else {
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Drip {
                        frames: FRAMES
                            .iter()
                            .map(|f| Bytes::from_static(f.as_bytes()))
                            .collect(),
                        sleep: None,
                        _alive: alive,
                    })
            };
            Ok(res.expect("response"))
        })
    }
}

// ---- the callers ----

/// What a caller asks.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// A sampled request (never cached).
    Plain,
    /// Answered 503 once, then retried after a backoff.
    Flaky,
    /// A deterministic request, one of a few bodies: the cache coalesces
    /// callers of one body behind a leader.
    Cached(u8),
    /// For a model the upstream always answers 529: retried, then sent
    /// to the fallback model where the stack has one.
    Overloaded,
}

/// Where a caller lets go.
#[derive(Debug, Clone, Copy)]
enum Let {
    /// Makes the response future and drops it unpolled.
    BeforePoll,
    /// Drops the response future after this many ms if not answered by
    /// then (queued, backing off, coalesced, in flight…), else the
    /// response, its body unread.
    After(u64),
    /// Drops the response future once it has been polled this many times
    /// without an answer: between one layer's step and the next at one
    /// instant (admitted by the rate limiter, not yet by the concurrency
    /// limiter…), which a time alone cannot tell apart.
    AfterPolls(u32),
    /// Reads this many frames of the body, then drops it.
    MidBody(usize),
    /// Reads the whole answer.
    Never,
    /// Reads the whole answer, its request carrying a deadline this many
    /// ms away: the stack's own timers end its waits at points of their
    /// choosing (a queue, a backoff, a key wait).
    Deadline(u64),
}

#[derive(Debug, Clone, Copy)]
struct Caller {
    start_ms: u64,
    ask: Ask,
    lets: Let,
}

fn caller() -> impl Strategy<Value = Caller> {
    let ask = prop_oneof![
        3 => Just(Ask::Plain),
        2 => Just(Ask::Flaky),
        3 => (0u8..4).prop_map(Ask::Cached),
        1 => Just(Ask::Overloaded),
    ];
    let lets = prop_oneof![
        1 => Just(Let::BeforePoll),
        3 => (0u64..3_000).prop_map(Let::After),
        1 => (1u32..6).prop_map(Let::AfterPolls),
        2 => (0usize..4).prop_map(Let::MidBody),
        2 => Just(Let::Never),
        1 => (0u64..3_000).prop_map(Let::Deadline),
    ];
    (0u64..2_000, ask, lets).prop_map(|(start_ms, ask, lets)| Caller {
        start_ms,
        ask,
        lets,
    })
}

fn request(i: usize, ask: Ask) -> Request<ReplayBody> {
    let temperature = match ask {
        Ask::Cached(_) => r#""temperature":0,"#,
        _ => "",
    };
    let text = match ask {
        Ask::Cached(n) => format!("cached {n}"),
        _ => format!("caller {i}"),
    };
    let model = match ask {
        Ask::Overloaded => OVERLOADED,
        _ => "claude-haiku-4-5",
    };
    let mut req = anthropic(
        "http://upstream/v1/messages",
        "sk-storm",
        format!(
            r#"{{"model":"{model}","max_tokens":64,"stream":true,{temperature}"messages":[{{"role":"user","content":"{text}"}}]}}"#
        ),
    );
    let headers = req.headers_mut();
    headers.insert("x-storm-id", i.to_string().parse().expect("value"));
    if matches!(ask, Ask::Flaky) {
        headers.insert("x-storm-flaky", "1".parse().expect("value"));
    }
    req
}

/// How a caller ended.
#[derive(Debug)]
enum Ended {
    /// It let go.
    Dropped,
    /// It read an answer to its end: the status, or the error.
    Answered(Result<u16, BoxError>),
    /// Its deadline was met: answered, or ended by the deadline (then
    /// `true`).
    Timed(bool),
}

/// How many callers let go where: for the figures.
fn lets_summary(callers: &[Caller]) -> String {
    let mut n = [0usize; 6];
    for c in callers {
        n[match c.lets {
            Let::BeforePoll => 0,
            Let::After(_) => 1,
            Let::AfterPolls(_) => 2,
            Let::MidBody(_) => 3,
            Let::Deadline(_) => 4,
            Let::Never => 5,
        }] += 1;
    }
    format!(
        "{} before the first poll, {} after a time, {} after some polls, {} mid-body, {} with a deadline; {} held on",
        n[0], n[1], n[2], n[3], n[4], n[5]
    )
}

/// Whether `e` is what a wait ended by a deadline gives: the queue's
/// timeout, the retry's deadline, a limiter or pool that says at once
/// that the deadline cannot be met, a read-ahead of an error body (retry,
/// fallback) given up at the deadline.
fn is_deadline_error(e: &BoxError) -> bool {
    e.is::<QueueTimeout>()
        || e.is::<BodyStalled>()
        || e.is::<DeadlineElapsed>()
        || e.is::<RateLimited>()
        || e.is::<NoKeyAvailable>()
}

/// Reads `res`'s body to its end.
async fn read_all(res: Response<ResponseBody>) -> Result<u16, BoxError> {
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}

async fn run_caller<S>(mut svc: S, i: usize, c: Caller) -> Ended
where
    S: support::ReplayService,
{
    tokio::time::sleep(Duration::from_millis(c.start_ms)).await;
    let req = request(i, c.ask);
    match c.lets {
        Let::BeforePoll => {
            let ready = svc.ready().await.expect("always ready");
            drop(ready.call(req));
            Ended::Dropped
        }
        Let::After(ms) => {
            let _ = tokio::time::timeout(Duration::from_millis(ms), svc.oneshot(req)).await;
            Ended::Dropped
        }
        Let::AfterPolls(n) => {
            let mut fut = std::pin::pin!(svc.oneshot(req));
            let mut polls = 0;
            std::future::poll_fn(|cx| {
                if fut.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                polls += 1;
                if polls >= n {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            Ended::Dropped
        }
        Let::MidBody(k) => {
            if let Ok(mut res) = svc.oneshot(req).await {
                for _ in 0..k {
                    if res.body_mut().frame().await.is_none() {
                        break;
                    }
                }
            }
            Ended::Dropped
        }
        Let::Never => match svc.oneshot(req).await {
            Ok(res) => Ended::Answered(read_all(res).await),
            Err(e) => Ended::Answered(Err(e)),
        },
        Let::Deadline(ms) => {
            let mut req = req;
            req.extensions_mut()
                .insert(Deadline(Instant::now() + Duration::from_millis(ms)));
            let res = match svc.oneshot(req).await {
                Ok(res) => read_all(res).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(status) => {
                    assert!(matches!(status, 200 | 503 | 529), "{c:?} answered {status}");
                    Ended::Timed(false)
                }
                Err(e) if is_deadline_error(&e) => Ended::Timed(true),
                Err(e) => panic!("{c:?} failed: {e}"),
            }
        }
    }
}

// ---- the storm through the stack ----

struct Storm {
    stack: Stack,
    cache: CacheLayer,
    budget: Arc<MemoryBudgetStore>,
    upstream: Upstream,
    svc: tower_llm_resilience::stack::StackService<tower_llm_resilience::budget::Budget<Upstream>>,
}

fn storm() -> Storm {
    let rate = RateLimitLayer::new(
        Limits::unlimited()
            .requests(Limit::new(RATE, Duration::from_secs(1), BURST).expect("limit")),
    );
    let cache = CacheLayer::default();
    let store = Arc::new(MemoryBudgetStore::default());
    let budget = BudgetLayer::builder()
        .cap(Cap::tokens("storm", Scope::GLOBAL, Period::day(), 1 << 40))
        .store(Arc::clone(&store))
        .build()
        .expect("budget");
    let stack = Stack::builder()
        .rate_limit(rate)
        .concurrency(CAP)
        .retry(RetryLayer::new())
        .fallback(FallbackLayer::new([Target::model("claude-haiku-4-5")]))
        .cache(cache.clone());
    let upstream = Upstream::default();
    let svc = stack.clone().service(budget.layer(upstream.clone()));
    Storm {
        stack,
        cache,
        budget: store,
        upstream,
        svc,
    }
}

/// Everything held is back: permits, queue places, group reservations in
/// flight, cache flights, budget reservations, upstream bodies.
fn assert_all_back(s: &Storm, when: &str) {
    let conc = s.stack.concurrency_limiter().stats();
    assert_eq!(conc.in_flight, 0, "{when}: permits held");
    assert_eq!(conc.queued, 0, "{when}: permit waiters left");
    let rate = s.stack.rate_limiter();
    assert_eq!(rate.queue().len(), 0, "{when}: rate waiters left");
    for g in rate.stats() {
        assert_eq!(g.in_flight, 0, "{when}: rate reservations in flight");
        assert_eq!(g.queued, 0, "{when}: a group's waiters left");
    }
    assert_eq!(s.cache.in_flight(), 0, "{when}: cache flights left");
    for (counter, balance) in s.budget.counters() {
        assert_eq!(
            balance.reserved,
            0,
            "{when}: {} still reserved",
            counter.cap()
        );
    }
    assert_eq!(
        s.upstream.alive.load(Ordering::SeqCst),
        0,
        "{when}: upstream bodies still held"
    );
}

/// A fresh sampled request's answer and how long it took.
async fn fresh(s: &Storm, i: usize) -> (u16, Duration) {
    let start = Instant::now();
    let res = tokio::time::timeout(HUNG, s.svc.clone().oneshot(request(i, Ask::Plain)))
        .await
        .expect("a fresh request hung")
        .expect("a fresh request answered");
    let status = read_all(res).await.expect("its body");
    (status, start.elapsed())
}

/// The most seen at once during a storm: what shows the drops happened
/// where they were meant to (in a queue, behind a leader, backing off).
#[derive(Debug, Default, Clone, Copy)]
struct Peaks {
    rate_queued: usize,
    permits_queued: usize,
    flights: usize,
}

/// Samples the stack every millisecond until `done`.
fn watch(s: &Storm, done: Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<Peaks> {
    let (stack, cache) = (s.stack.clone(), s.cache.clone());
    tokio::spawn(async move {
        let mut p = Peaks::default();
        while !done.load(Ordering::SeqCst) {
            p.rate_queued = p.rate_queued.max(stack.rate_limiter().queue().len());
            p.permits_queued = p
                .permits_queued
                .max(stack.concurrency_limiter().stats().queued);
            p.flights = p.flights.max(cache.in_flight());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        p
    })
}

async fn drop_storm(callers: Vec<Caller>) {
    let s = storm();
    let t0 = Instant::now();
    let done = Arc::default();
    let watcher = watch(&s, Arc::clone(&done));
    let tasks: Vec<_> = callers
        .iter()
        .enumerate()
        .map(|(i, &c)| tokio::spawn(run_caller(s.svc.clone(), i, c)))
        .collect();
    let (mut answered, mut timed_out) = (0, 0);
    for (t, c) in tasks.into_iter().zip(&callers) {
        let ended = tokio::time::timeout(HUNG, t)
            .await
            .expect("a caller hung")
            .expect("the caller's task");
        match (ended, c.lets) {
            (Ended::Dropped, _) => {}
            (Ended::Timed(by_deadline), _) => timed_out += usize::from(by_deadline),
            (Ended::Answered(res), Let::Never) => {
                answered += 1;
                let status = res.unwrap_or_else(|e| panic!("{c:?} failed: {e}"));
                // A flaky request's retry may be refused by the retry
                // budget; then its 503 is the answer.
                let ok = status == 200 || (status == 503 && matches!(c.ask, Ask::Flaky));
                assert!(ok, "{c:?} answered {status}");
            }
            (Ended::Answered(_), lets) => panic!("a {lets:?} caller answered"),
        }
    }
    let never = callers
        .iter()
        .filter(|c| matches!(c.lets, Let::Never))
        .count();
    assert_eq!(answered, never, "every caller that held on was answered");
    assert!(timed_out >= 5, "{timed_out} waits ended by their deadline");
    done.store(true, Ordering::SeqCst);
    let peaks = watcher.await.expect("watcher");
    // The storm reached every place a caller can be dropped from.
    assert!(peaks.rate_queued >= 100, "{peaks:?}");
    assert!(peaks.permits_queued >= 10, "{peaks:?}");
    assert!(peaks.flights >= 1, "{peaks:?}");
    let flaky = callers
        .iter()
        .filter(|c| matches!(c.ask, Ask::Flaky))
        .count();
    assert!(flaky > 0 && !s.upstream.seen.lock().expect("lock").is_empty());
    // Overloaded callers were sent to the fallback model: every one that
    // held on was answered 200 above.
    assert!(s.upstream.overloaded.load(Ordering::SeqCst) > 0);
    // Flaky callers let go after their 503 and its body were in (GAP) and
    // before their retry reached the upstream: dropped while backing off
    // (or queued again for admission).
    let in_backoff = {
        let refused = s.upstream.refused.lock().expect("lock");
        let retried = s.upstream.retried.lock().expect("lock");
        callers
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                let Let::After(ms) = c.lets else {
                    return false;
                };
                let id = i.to_string();
                let dropped_at = t0 + Duration::from_millis(c.start_ms + ms);
                refused
                    .get(&id)
                    .is_some_and(|&at| dropped_at > at + GAP + MARGIN)
                    && !retried.contains(&id)
            })
            .count()
    };
    assert!(in_backoff >= 5, "{in_backoff} dropped while backing off");
    assert_all_back(&s, "after the storm");

    // No waiter left asleep, no capacity lost: a fresh request waits at
    // most for the one token it is owed …
    let (status, took) = fresh(&s, CALLERS).await;
    println!(
        "stack storm: {} callers ({}); {in_backoff} while backing off, {timed_out} ended by their deadline; peaks {peaks:?}; {} upstream calls; a fresh request took {took:?}",
        callers.len(),
        lets_summary(&callers),
        s.upstream.calls.load(Ordering::SeqCst),
    );
    assert_eq!(status, 200);
    let token = Duration::from_secs(1) / RATE as u32;
    assert!(
        took <= token + ANSWER + MARGIN,
        "a fresh request took {took:?}"
    );
    // … and once the bucket is full again, as many as the concurrency cap
    // are all admitted at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let batch: Vec<_> = (0..CAP)
        .map(|i| {
            let svc = s.svc.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(request(CALLERS + 1 + i, Ask::Plain)).await;
                (
                    read_all(res.expect("admitted")).await.expect("body"),
                    Instant::now(),
                )
            })
        })
        .collect();
    for t in batch {
        let (status, at) = tokio::time::timeout(HUNG, t)
            .await
            .expect("hung")
            .expect("task");
        assert_eq!(status, 200);
        let took = at - start;
        assert!(
            took <= ANSWER + MARGIN,
            "a request of the batch took {took:?}"
        );
    }
    assert_all_back(&s, "after the fresh requests");
}

// ---- the cache alone: dense coalescing ----

/// A thousand callers of two deterministic bodies within 100 ms, behind
/// leaders that may themselves be dropped: every flight ends, and a fresh
/// caller of each body is answered at once (a hit) or as a new leader.
async fn cache_storm(callers: Vec<Caller>) {
    let cache = CacheLayer::default();
    let upstream = Upstream::default();
    let svc = tower::util::BoxCloneService::new(cache.layer(upstream.clone()));
    let mut peak = 0;
    let tasks: Vec<_> = callers
        .iter()
        .enumerate()
        .map(|(i, &c)| tokio::spawn(run_caller(svc.clone(), i, c)))
        .collect();
    // Sample the flights while the callers arrive.
    for _ in 0..150 {
        peak = peak.max(cache.in_flight());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for (t, c) in tasks.into_iter().zip(&callers) {
        let ended = tokio::time::timeout(HUNG, t)
            .await
            .expect("a caller hung")
            .expect("the caller's task");
        if let Ended::Answered(res) = ended {
            let status = res.unwrap_or_else(|e| panic!("{c:?} failed: {e}"));
            assert_eq!(status, 200, "{c:?}");
        }
    }
    assert!(peak >= 1, "no flight was ever seen");
    println!(
        "cache storm: {} callers ({}); at most {peak} flights at once; {} upstream calls",
        callers.len(),
        lets_summary(&callers),
        upstream.calls.load(Ordering::SeqCst),
    );
    assert_eq!(cache.in_flight(), 0, "cache flights left");
    assert_eq!(
        upstream.alive.load(Ordering::SeqCst),
        0,
        "upstream bodies held"
    );
    for n in 0..2 {
        let start = Instant::now();
        let res = tokio::time::timeout(
            HUNG,
            svc.clone()
                .oneshot(request(CALLERS + n, Ask::Cached(n as u8))),
        )
        .await
        .expect("a fresh caller hung")
        .expect("answered");
        assert_eq!(read_all(res).await.expect("body"), 200);
        let took = start.elapsed();
        assert!(
            took <= ANSWER + MARGIN,
            "a fresh caller of body {n} took {took:?}"
        );
    }
    assert_eq!(cache.in_flight(), 0);
}

// ---- an adaptive concurrency limit alone: the cap moves under the drops ----

/// A thousand callers through an adaptive concurrency limit (16 to start,
/// between 2 and 32) whose flaky callers are answered 503 — an overload
/// signal that lowers the cap while permits are held and waiters dropped;
/// successes raise it again. Afterwards no permit or place is held, the
/// cap is within its bounds, and as many requests as the cap are admitted
/// at once.
async fn adaptive_storm(callers: Vec<Caller>) {
    let layer = ConcurrencyLimitLayer::builder(16)
        .adaptive(Adaptive::new(2, 32))
        .build()
        .expect("layer");
    let upstream = Upstream::default();
    let svc = tower::util::BoxCloneService::new(layer.layer(upstream.clone()));
    let tasks: Vec<_> = callers
        .iter()
        .enumerate()
        .map(|(i, &c)| tokio::spawn(run_caller(svc.clone(), i, c)))
        .collect();
    // Sample the cap and the queue while the callers arrive.
    let (mut peak_queued, mut low_cap) = (0, usize::MAX);
    for _ in 0..2_000 {
        let st = layer.stats();
        peak_queued = peak_queued.max(st.queued);
        low_cap = low_cap.min(st.cap);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for (t, c) in tasks.into_iter().zip(&callers) {
        let ended = tokio::time::timeout(HUNG, t)
            .await
            .expect("a caller hung")
            .expect("the caller's task");
        if let Ended::Answered(res) = ended {
            let status = res.unwrap_or_else(|e| panic!("{c:?} failed: {e}"));
            let ok = match c.ask {
                Ask::Flaky => status == 200 || status == 503,
                Ask::Overloaded => status == 529,
                _ => status == 200,
            };
            assert!(ok, "{c:?} answered {status}");
        }
    }
    assert!(peak_queued >= 100, "at most {peak_queued} waited");
    println!(
        "adaptive storm: {} callers ({}); at most {peak_queued} waiting, the cap as low as {low_cap}, {} after",
        callers.len(),
        lets_summary(&callers),
        layer.stats().cap,
    );
    assert!(low_cap < 16, "the cap never went down (lowest {low_cap})");
    let all_back = |when: &str| {
        let st = layer.stats();
        assert_eq!(st.in_flight, 0, "{when}: permits held");
        assert_eq!(st.queued, 0, "{when}: waiters counted");
        assert_eq!(layer.queue().len(), 0, "{when}: places held");
        assert!((2..=32).contains(&st.cap), "{when}: cap {}", st.cap);
        assert_eq!(
            upstream.alive.load(Ordering::SeqCst),
            0,
            "{when}: bodies held"
        );
        st.cap
    };
    let cap = all_back("after the storm");

    // As many as the cap are admitted at once; one more waits for a permit.
    let start = Instant::now();
    let batch: Vec<_> = (0..=cap)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(request(CALLERS + i, Ask::Plain)).await;
                let at = Instant::now();
                (read_all(res.expect("admitted")).await.expect("body"), at)
            })
        })
        .collect();
    let mut heads: Vec<Duration> = Vec::new();
    for t in batch {
        let (status, at) = tokio::time::timeout(HUNG, t)
            .await
            .expect("hung")
            .expect("task");
        assert_eq!(status, 200);
        heads.push(at - start);
    }
    heads.sort();
    assert!(
        heads[cap - 1] <= LATENCY + MARGIN,
        "the {cap} admitted at once took up to {:?}",
        heads[cap - 1]
    );
    assert!(
        heads[cap] >= ANSWER,
        "request {} of a cap of {cap} was not made to wait ({:?})",
        cap + 1,
        heads[cap]
    );
    all_back("after the fresh requests");
}

/// A caller of the pool storm: never flaky or overloaded.
fn pool_caller() -> impl Strategy<Value = Caller> {
    caller().prop_map(|c| Caller {
        ask: match c.ask {
            Ask::Flaky | Ask::Overloaded => Ask::Plain,
            ask => ask,
        },
        ..c
    })
}

fn cached_caller() -> impl Strategy<Value = Caller> {
    (0u64..100, 0u8..2, caller()).prop_map(|(start_ms, n, c)| Caller {
        start_ms,
        ask: Ask::Cached(n),
        lets: c.lets,
    })
}

// ---- a key pool alone: waits for any key ----

/// The pool's keys.
const POOL: [&str; 3] = ["sk-pool-0", "sk-pool-1", "sk-pool-2"];

/// A thousand callers without keys of their own through a rate limiter
/// choosing from a pool of three keys (50 requests a second each, a burst
/// of 5: fewer than the callers ask, so most wait for whichever key frees
/// first) drop at the same points. Afterwards no place, hold or
/// reservation is left, each key's calendar count is exactly the requests
/// sent with it (a request dropped before it was sent gave its count
/// back), and with the buckets full again every key takes its burst at
/// once. No caller is flaky here: a refused (non-2xx) answer gives its
/// count back by design, unless dropped before its head, which would make
/// the count inexact.
async fn pool_storm(callers: Vec<Caller>) {
    // A fixed wall clock: the calendar period cannot turn mid-storm.
    let noon = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let pool = POOL
        .iter()
        .enumerate()
        .fold(
            KeyPool::builder(AuthStyle::Anthropic).clock(Clock::new(move || noon)),
            |b, (i, key)| b.key(format!("k{i}"), *key),
        )
        .build()
        .expect("pool");
    let per_key = Limit::new(50, Duration::from_secs(1), 5).expect("limit");
    let rate = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(per_key))
        .key_pool(pool.clone())
        .build()
        .expect("rate");
    let upstream = Upstream::default();
    let svc = tower::util::BoxCloneService::new(rate.layer(upstream.clone()).map_request(
        |mut req: Request<ReplayBody>| {
            req.headers_mut().remove("x-api-key");
            req
        },
    ));
    let tasks: Vec<_> = callers
        .iter()
        .enumerate()
        .map(|(i, &c)| tokio::spawn(run_caller(svc.clone(), i, c)))
        .collect();
    // Sample the queue while the callers arrive.
    let mut peak = 0;
    for _ in 0..2_000 {
        peak = peak.max(rate.queue().len());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for (t, c) in tasks.into_iter().zip(&callers) {
        let ended = tokio::time::timeout(HUNG, t)
            .await
            .expect("a caller hung")
            .expect("the caller's task");
        if let Ended::Answered(res) = ended {
            let status = res.unwrap_or_else(|e| panic!("{c:?} failed: {e}"));
            assert_eq!(status, 200, "{c:?}");
        }
    }
    assert!(peak >= 100, "at most {peak} waited for a key");
    println!(
        "pool storm: {} callers ({}); at most {peak} waiting for a key; sent per key {:?}",
        callers.len(),
        lets_summary(&callers),
        pool.stats()
            .iter()
            .map(|k| k.requests_used)
            .collect::<Vec<_>>(),
    );
    let all_back = |when: &str| {
        assert_eq!(rate.queue().len(), 0, "{when}: waiters left");
        for g in rate.stats() {
            assert_eq!(g.in_flight, 0, "{when}: reservations in flight");
            assert_eq!(g.queued, 0, "{when}: a group's waiters left");
        }
        assert_eq!(
            upstream.alive.load(Ordering::SeqCst),
            0,
            "{when}: bodies held"
        );
        let started = upstream.started.lock().expect("lock").clone();
        for (key, stats) in POOL.iter().zip(pool.stats()) {
            let sent = started.get(*key).copied().unwrap_or(0);
            assert_eq!(
                stats.requests_used as usize, sent,
                "{when}: key {} counts {} requests, {sent} sent with it",
                stats.label, stats.requests_used
            );
        }
        assert!(
            !started.contains_key(""),
            "{when}: a request sent without a key"
        );
    };
    all_back("after the storm");

    // With every bucket full again, each key takes its burst at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let batch: Vec<_> = (0..POOL.len() * 5)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(request(CALLERS + i, Ask::Plain)).await;
                (
                    read_all(res.expect("admitted")).await.expect("body"),
                    Instant::now(),
                )
            })
        })
        .collect();
    for t in batch {
        let (status, at) = tokio::time::timeout(HUNG, t)
            .await
            .expect("hung")
            .expect("task");
        assert_eq!(status, 200);
        let took = at - start;
        assert!(
            took <= ANSWER + MARGIN,
            "a request of the burst took {took:?}"
        );
    }
    all_back("after the fresh requests");
}

/// Cases: 8 by default (each a thousand callers), `PROPTEST_CASES=n` for
/// more.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(8),
        rng_seed: RngSeed::Fixed(0x5707_d809),
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_drop_storm_through_the_stack_gives_every_permit_back(
        callers in proptest::collection::vec(caller(), CALLERS),
    ) {
        paused_runtime().block_on(drop_storm(callers));
    }

    #[test]
    fn a_drop_storm_waiting_for_pool_keys_gives_every_key_back(
        callers in proptest::collection::vec(pool_caller(), CALLERS),
    ) {
        paused_runtime().block_on(pool_storm(callers));
    }

    #[test]
    fn a_drop_storm_under_an_adaptive_cap_gives_every_permit_back(
        callers in proptest::collection::vec(caller(), CALLERS),
    ) {
        paused_runtime().block_on(adaptive_storm(callers));
    }

    #[test]
    fn a_drop_storm_behind_cache_leaders_ends_every_flight(
        callers in proptest::collection::vec(cached_caller(), CALLERS),
    ) {
        paused_runtime().block_on(cache_storm(callers));
    }
}
