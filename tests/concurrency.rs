//! The concurrency limit: a shared cap, permits held until the response body
//! ends, the wait queue (priority, bounds, timeouts), adaptive AIMD — under
//! paused time with a mock inner service — and against the simulator over
//! real sockets.
#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use proptest::prelude::*;
use support::poll_once;
use tokio::time::{Instant, Sleep, sleep};
use tower::{Layer, Service, ServiceExt};
use tower_llm_resilience::BoxError;
use tower_llm_resilience::concurrency::{Adaptive, ConcurrencyLimitLayer};
use tower_llm_resilience::error::{InvalidConfig, QueueTimeout};
use tower_llm_resilience::queue::{Priority, QueueConfig, QueueFull};
use tower_llm_resilience::request::Deadline;
use tower_llm_resilience::response::ResponseBody;

// ---- a mock upstream -------------------------------------------------------

/// What the mock upstream has seen: requests alive (from `call` until their
/// response body is dropped), the most at once, and the order of calls.
#[derive(Clone, Default)]
struct Mock {
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    calls: Arc<Mutex<Vec<String>>>,
}

/// A body that ends `delay` after it is first polled, then yields `data`.
/// Counts itself out of `live` when dropped.
struct TestBody {
    sleep: Option<Pin<Box<Sleep>>>,
    delay: Duration,
    data: Option<Bytes>,
    _live: LiveGuard,
}

/// One request alive upstream: counted out when dropped (with the body, or
/// with the call's future if the caller gives up first).
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if !this.delay.is_zero() {
            let delay = this.delay;
            let s = this.sleep.get_or_insert_with(|| Box::pin(sleep(delay)));
            ready!(s.as_mut().poll(cx));
            this.delay = Duration::ZERO;
        }
        Poll::Ready(this.data.take().map(|d| Ok(Frame::data(d))))
    }
    fn is_end_stream(&self) -> bool {
        self.delay.is_zero() && self.data.is_none()
    }
}

fn header_u64(req: &Request<String>, name: &str) -> u64 {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Service<Request<String>> for Mock {
    type Response = Response<TestBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<TestBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.calls.lock().unwrap().push(req.body().clone());
        let live = LiveGuard(Arc::clone(&self.live));
        let latency = Duration::from_millis(header_u64(&req, "x-latency-ms"));
        let body_delay = Duration::from_millis(header_u64(&req, "x-body-ms"));
        let status = match header_u64(&req, "x-status") {
            0 => 200,
            s => s as u16,
        };
        let fail = req.headers().contains_key("x-fail");
        let sse_error = req.headers().contains_key("x-sse-overloaded");
        Box::pin(async move {
            sleep(latency).await;
            if fail {
                drop(live);
                return Err("connection refused".into());
            }
            let mut builder = Response::builder().status(status);
            let data = if sse_error {
                builder = builder.header("content-type", "text/event-stream");
                Bytes::from_static(
                    b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
                )
            } else {
                Bytes::from_static(b"ok")
            };
            Ok(builder
                .body(TestBody {
                    sleep: None,
                    delay: body_delay,
                    data: Some(data),
                    _live: live,
                })
                .unwrap())
        })
    }
}

fn req(id: &str, latency_ms: u64, body_ms: u64) -> Request<String> {
    Request::builder()
        .header("x-latency-ms", latency_ms)
        .header("x-body-ms", body_ms)
        .body(id.to_owned())
        .unwrap()
}

/// A response with `status` after 10 ms.
fn with_status(status: u16) -> Request<String> {
    Request::builder()
        .header("x-status", status)
        .header("x-latency-ms", 10)
        .body(String::new())
        .unwrap()
}

/// Sends and reads the whole body.
async fn send<S>(svc: S, req: Request<String>) -> Result<Bytes, BoxError>
where
    S: Service<Request<String>, Response = Response<ResponseBody>, Error = BoxError>,
{
    let res = svc.oneshot(req).await?;
    Ok(res.into_body().collect().await?.to_bytes())
}

/// Lets spawned tasks run until they are all blocked on time.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

// ---- configuration ---------------------------------------------------------

#[test]
fn invalid_configuration_is_refused() {
    let err =
        |b: tower_llm_resilience::concurrency::ConcurrencyLimitBuilder| b.build().unwrap_err();
    let e: InvalidConfig = err(ConcurrencyLimitLayer::builder(0));
    assert!(e.to_string().contains("at least 1"), "{e}");
    err(ConcurrencyLimitLayer::builder(4).max_wait(Duration::ZERO));
    err(ConcurrencyLimitLayer::builder(4).adaptive(Adaptive::new(5, 8)));
    err(ConcurrencyLimitLayer::builder(4).adaptive(Adaptive::new(0, 8)));
    err(ConcurrencyLimitLayer::builder(4).adaptive(Adaptive::new(1, 8).decrease_factor(1.5)));
    let layer = ConcurrencyLimitLayer::builder(4)
        .adaptive(Adaptive::new(1, 8))
        .build()
        .unwrap();
    assert_eq!(layer.stats().cap, 4);
    assert!(format!("{layer:?}").contains("ConcurrencyLimitLayer"));
    assert!(format!("{:?}", ConcurrencyLimitLayer::builder(3)).contains("max: 3"));
}

#[test]
#[should_panic(expected = "zero")]
fn new_with_zero_panics_as_documented() {
    let _ = ConcurrencyLimitLayer::new(0);
}

#[test]
fn service_accessors_and_debug() {
    let layer = ConcurrencyLimitLayer::new(2);
    let mut svc = layer.layer(Mock::default());
    let _: &Mock = svc.get_ref();
    let _: &mut Mock = svc.get_mut();
    assert_eq!(svc.stats().cap, 2);
    fn assert_clone_send<T: Clone + Send + Sync + std::fmt::Debug>() {}
    assert_clone_send::<ConcurrencyLimitLayer>();
    let _inner: Mock = svc.into_inner();
}

// ---- the cap ----------------------------------------------------------------

/// Guards the cap itself: 200 callers, a cap of 5, never more than 5 alive
/// upstream (counting a request until its body is gone).
#[tokio::test(start_paused = true)]
async fn cap_respected_under_many_concurrent_callers() {
    let mock = Mock::default();
    let layer = ConcurrencyLimitLayer::new(5);
    let svc = layer.layer(mock.clone());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move { send(svc, req(&i.to_string(), 3 + i % 7, i % 5)).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Bytes::from_static(b"ok"));
    }
    assert_eq!(mock.peak.load(Ordering::SeqCst), 5);
    let stats = layer.stats();
    assert_eq!((stats.in_flight, stats.queued, stats.peak), (0, 0, 5));
    assert_eq!(mock.calls.lock().unwrap().len(), 200);
}

/// Guards shared state (tower's per-instance trap): 64 clones of services made
/// by four `layer()` calls are one limiter.
#[tokio::test(start_paused = true)]
async fn clones_and_layer_calls_share_one_limiter() {
    let mock = Mock::default();
    let layer = ConcurrencyLimitLayer::new(3);
    let layer_clone = layer.clone();
    let mut services = Vec::new();
    for l in 0..4 {
        let base = if l % 2 == 0 {
            layer.layer(mock.clone())
        } else {
            layer_clone.layer(mock.clone())
        };
        for _ in 0..16 {
            services.push(base.clone());
        }
    }
    assert_eq!(services.len(), 64);
    let tasks: Vec<_> = services
        .into_iter()
        .enumerate()
        .map(|(i, svc)| tokio::spawn(async move { send(svc, req(&i.to_string(), 5, 5)).await }))
        .collect();
    settle().await;
    assert_eq!(layer.stats().in_flight, 3);
    assert_eq!(layer.stats().queued, 61);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(mock.peak.load(Ordering::SeqCst), 3);
    assert_eq!(layer_clone.stats().peak, 3);
}

// ---- the permit lives as long as the body ---------------------------------

#[tokio::test(start_paused = true)]
async fn permit_held_until_the_body_ends() {
    let mock = Mock::default();
    let layer = ConcurrencyLimitLayer::new(1);
    let svc = layer.layer(mock.clone());
    let res = svc.clone().oneshot(req("a", 0, 100)).await.unwrap();
    assert_eq!(
        layer.stats().in_flight,
        1,
        "the response head is not the end"
    );

    let second = tokio::spawn(send(svc.clone(), req("b", 0, 0)));
    settle().await;
    assert_eq!(layer.stats().queued, 1);
    assert!(!second.is_finished());

    let t0 = Instant::now();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Bytes::from_static(b"ok"));
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    second.await.unwrap().unwrap();
    assert_eq!(layer.stats().in_flight, 0);
    assert_eq!(mock.peak.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_body_releases_the_permit() {
    let layer = ConcurrencyLimitLayer::new(1);
    let svc = layer.layer(Mock::default());
    let res = svc.clone().oneshot(req("a", 0, 10_000)).await.unwrap();
    let mut waiting = Box::pin(send(svc.clone(), req("b", 0, 0)));
    assert!(poll_once(&mut waiting).is_none());
    drop(res);
    assert_eq!(layer.stats().in_flight, 0);
    waiting.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_a_waiting_future_gives_its_place_back() {
    let layer = ConcurrencyLimitLayer::new(1);
    let svc = layer.layer(Mock::default());
    let held = svc.clone().oneshot(req("a", 0, 10_000)).await.unwrap();
    let mut first = Box::pin(svc.clone().oneshot(req("b", 0, 0)));
    let mut second = Box::pin(svc.clone().oneshot(req("c", 0, 0)));
    assert!(poll_once(&mut first).is_none());
    assert!(poll_once(&mut second).is_none());
    assert_eq!(layer.stats().queued, 2);
    assert_eq!(layer.queue().len(), 2);
    drop(first);
    assert_eq!((layer.stats().queued, layer.queue().len()), (1, 1));
    drop(held);
    let res = second.await.unwrap();
    assert_eq!(layer.stats().in_flight, 1);
    drop(res);
    assert_eq!(layer.stats().in_flight, 0);
    assert!(layer.queue().is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropping_an_in_flight_future_or_an_error_releases_at_once() {
    let mock = Mock::default();
    let layer = ConcurrencyLimitLayer::new(1);
    let svc = layer.layer(mock.clone());
    // In flight upstream (latency 1 s), then dropped.
    let mut fut = Box::pin(svc.clone().oneshot(req("slow", 1_000, 0)));
    assert!(poll_once(&mut fut).is_none());
    assert_eq!(layer.stats().in_flight, 1);
    drop(fut);
    assert_eq!(layer.stats().in_flight, 0);
    // The inner service fails: released, error passed on as it is.
    let mut failing = req("fail", 10, 0);
    failing.headers_mut().insert("x-fail", "1".parse().unwrap());
    let err = svc.clone().oneshot(failing).await.unwrap_err();
    assert_eq!(err.to_string(), "connection refused");
    assert_eq!(layer.stats().in_flight, 0);
}

// ---- the queue ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn waiters_are_served_by_priority_then_arrival() {
    let mock = Mock::default();
    let layer = ConcurrencyLimitLayer::new(1);
    let svc = layer.layer(mock.clone());
    let held = svc.clone().oneshot(req("held", 0, 0)).await.unwrap();

    let mut tasks = Vec::new();
    let mut spawn = |name: &str, prio: Option<Priority>, header: Option<&str>| {
        let mut r = req(name, 1, 1);
        if let Some(p) = prio {
            r.extensions_mut().insert(p);
        }
        if let Some(h) = header {
            r.headers_mut().insert("x-llm-priority", h.parse().unwrap());
        }
        tasks.push(tokio::spawn(send(svc.clone(), r)));
    };
    spawn("low", Some(Priority::LOW), None);
    spawn("normal-1", None, None);
    spawn("high-header", None, Some("200"));
    spawn("normal-2", None, Some("not a number"));
    spawn("highest", Some(Priority::HIGHEST), Some("0"));
    settle().await;
    assert_eq!(layer.stats().queued, 5);
    drop(held);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        *mock.calls.lock().unwrap(),
        [
            "held",
            "highest",
            "high-header",
            "normal-1",
            "normal-2",
            "low"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn queue_full_is_returned_at_once() {
    let layer = ConcurrencyLimitLayer::builder(1)
        .queue(QueueConfig::new(2, Duration::from_millis(250)).unwrap())
        .build()
        .unwrap();
    let svc = layer.layer(Mock::default());
    let _held = svc.clone().oneshot(req("a", 0, 0)).await.unwrap();
    let mut w1 = Box::pin(svc.clone().oneshot(req("b", 0, 0)));
    let mut w2 = Box::pin(svc.clone().oneshot(req("c", 0, 0)));
    assert!(poll_once(&mut w1).is_none() && poll_once(&mut w2).is_none());
    let mut third = Box::pin(svc.clone().oneshot(req("d", 0, 0)));
    let err = poll_once(&mut third)
        .expect("answered on the first poll")
        .unwrap_err();
    assert_eq!(err.downcast_ref::<QueueFull>(), Some(&QueueFull::new(2)));
    assert_eq!(layer.stats().queued, 2);
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_at_max_wait_to_the_millisecond() {
    let layer = ConcurrencyLimitLayer::builder(1)
        .max_wait(Duration::from_millis(250))
        .build()
        .unwrap();
    let svc = layer.layer(Mock::default());
    let _held = svc.clone().oneshot(req("a", 0, 0)).await.unwrap();
    let t0 = Instant::now();
    let err = svc.clone().oneshot(req("b", 0, 0)).await.unwrap_err();
    assert_eq!(t0.elapsed(), Duration::from_millis(250));
    assert_eq!(
        err.downcast_ref::<QueueTimeout>(),
        Some(&QueueTimeout::new(Duration::from_millis(250)))
    );
    // A request deadline shorter than the max wait wins.
    let mut r = req("c", 0, 0);
    r.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(40)));
    let t0 = Instant::now();
    let err = svc.clone().oneshot(r).await.unwrap_err();
    assert!(err.is::<QueueTimeout>());
    assert_eq!(t0.elapsed(), Duration::from_millis(40));
    assert_eq!((layer.stats().queued, layer.queue().len()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_admitted_before_its_timeout_is_not_timed_out() {
    let layer = ConcurrencyLimitLayer::builder(1)
        .max_wait(Duration::from_millis(250))
        .build()
        .unwrap();
    let svc = layer.layer(Mock::default());
    let held = svc.clone().oneshot(req("a", 0, 249)).await.unwrap();
    let waiting = tokio::spawn(send(svc.clone(), req("b", 0, 0)));
    held.into_body().collect().await.unwrap();
    waiting.await.unwrap().unwrap();
}

/// Guards the shared-queue contract: the concurrency limiter's key never
/// meets a rate-limit group's, and both count against one bound.
#[tokio::test(start_paused = true)]
async fn shares_the_rate_limiters_queue() {
    use tower_llm_resilience::rate::{Limits, RateLimitLayer};
    let rate = RateLimitLayer::builder()
        .limits(Limits::unlimited())
        .queue(QueueConfig::new(1, Duration::from_millis(250)).unwrap())
        .build()
        .unwrap();
    let layer = ConcurrencyLimitLayer::builder(1)
        .shared_queue(rate.queue().clone())
        .build()
        .unwrap();
    let svc = layer.layer(Mock::default());
    let _held = svc.clone().oneshot(req("a", 0, 0)).await.unwrap();
    let mut w = Box::pin(svc.clone().oneshot(req("b", 0, 0)));
    assert!(poll_once(&mut w).is_none());
    assert_eq!(rate.queue().len(), 1, "one queue, one bound");
    let mut full = Box::pin(svc.clone().oneshot(req("c", 0, 0)));
    assert!(poll_once(&mut full).unwrap().unwrap_err().is::<QueueFull>());
}

// ---- property: random drops never leak a permit or a place -----------------

#[derive(Debug, Clone)]
struct Plan {
    latency_ms: u64,
    body_ms: u64,
    /// Drop the response future after this long (maybe while waiting,
    /// maybe in flight), if set.
    drop_future_ms: Option<u64>,
    /// Drop the body after this long instead of reading it, if set.
    drop_body_ms: Option<u64>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        0u64..20,
        0u64..20,
        prop::option::of(0u64..40),
        prop::option::of(0u64..20),
    )
        .prop_map(|(latency_ms, body_ms, drop_future_ms, drop_body_ms)| Plan {
            latency_ms,
            body_ms,
            drop_future_ms,
            drop_body_ms,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_drops_leave_nothing_behind(cap in 1usize..5, plans in prop::collection::vec(plan(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (stats, queue_len, live, peak) = rt.block_on(async move {
            let mock = Mock::default();
            let layer = ConcurrencyLimitLayer::new(cap);
            let svc = layer.layer(mock.clone());
            let tasks: Vec<_> = plans.into_iter().enumerate().map(|(i, p)| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let fut = svc.oneshot(req(&i.to_string(), p.latency_ms, p.body_ms));
                    let res = match p.drop_future_ms {
                        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), fut).await {
                            Ok(res) => res,
                            Err(_) => return,
                        },
                        None => fut.await,
                    };
                    let Ok(res) = res else { return };
                    match p.drop_body_ms {
                        Some(ms) => {
                            let _ = tokio::time::timeout(
                                Duration::from_millis(ms),
                                res.into_body().collect(),
                            ).await;
                        }
                        None => {
                            res.into_body().collect().await.unwrap();
                        }
                    }
                })
            }).collect();
            for t in tasks {
                t.await.unwrap();
            }
            (layer.stats(), layer.queue().len(), mock.live.load(Ordering::SeqCst), mock.peak.load(Ordering::SeqCst))
        });
        prop_assert_eq!(stats.in_flight, 0);
        prop_assert_eq!(stats.queued, 0);
        prop_assert_eq!(queue_len, 0);
        prop_assert_eq!(live, 0);
        prop_assert!(peak <= cap);
        prop_assert!(stats.peak <= cap);
    }
}

// ---- adaptive ----------------------------------------------------------------

fn adaptive(start: usize, min: usize, max: usize) -> ConcurrencyLimitLayer {
    ConcurrencyLimitLayer::builder(start)
        .adaptive(Adaptive::new(min, max).decrease_factor(0.5))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn adaptive_decreases_on_429_and_529_bounded_by_min() {
    let layer = adaptive(16, 3, 32);
    let svc = layer.layer(Mock::default());
    send(svc.clone(), with_status(429)).await.unwrap();
    assert_eq!(layer.stats().cap, 8);
    send(svc.clone(), with_status(529)).await.unwrap();
    assert_eq!(layer.stats().cap, 4);
    send(svc.clone(), with_status(503)).await.unwrap();
    assert_eq!(layer.stats().cap, 3, "bounded by min");
    send(svc.clone(), with_status(429)).await.unwrap();
    assert_eq!(layer.stats().cap, 3);
    // Other errors are no overload signal.
    send(svc.clone(), with_status(500)).await.unwrap();
    send(svc.clone(), with_status(400)).await.unwrap();
    assert_eq!(layer.stats().cap, 3);
}

#[tokio::test(start_paused = true)]
async fn adaptive_decreases_on_an_sse_overloaded_event_after_200() {
    let layer = adaptive(10, 1, 10);
    let svc = layer.layer(Mock::default());
    let mut r = req("sse", 0, 0);
    r.headers_mut()
        .insert("x-sse-overloaded", "1".parse().unwrap());
    let res = svc.clone().oneshot(r).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(layer.stats().cap, 10, "not before the event is seen");
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.stats().cap, 5);
}

/// Guards the AIMD epoch rule: a burst of concurrent 429s is one congestion
/// event, answered by one decrease.
#[tokio::test(start_paused = true)]
async fn concurrent_overloads_lower_the_cap_once() {
    let layer = adaptive(8, 1, 8);
    let svc = layer.layer(Mock::default());
    let tasks: Vec<_> = (0..8)
        .map(|_| tokio::spawn(send(svc.clone(), with_status(429))))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(layer.stats().cap, 4);
}

#[tokio::test(start_paused = true)]
async fn adaptive_recovers_on_successes_bounded_by_max() {
    let layer = adaptive(4, 1, 5);
    let svc = layer.layer(Mock::default());
    send(svc.clone(), with_status(429)).await.unwrap();
    assert_eq!(layer.stats().cap, 2);
    // +1 after `cap` consecutive successes: 2 → 3 after 2, → 4 after 3 more…
    for expected in [3, 4, 5] {
        for _ in 0..expected - 1 {
            send(svc.clone(), req("ok", 0, 0)).await.unwrap();
        }
        assert_eq!(layer.stats().cap, expected);
    }
    for _ in 0..50 {
        send(svc.clone(), req("ok", 0, 0)).await.unwrap();
    }
    assert_eq!(layer.stats().cap, 5, "bounded by max");
}

#[tokio::test(start_paused = true)]
async fn lowering_the_cap_revokes_no_permit() {
    let layer = adaptive(4, 1, 4);
    let svc = layer.layer(Mock::default());
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(
            svc.clone()
                .oneshot(req(&i.to_string(), 0, 0))
                .await
                .unwrap(),
        );
    }
    send(svc.clone(), with_status(429)).await.unwrap();
    let stats = layer.stats();
    assert_eq!((stats.cap, stats.in_flight), (2, 3), "held permits stay");
    let mut next = Box::pin(send(svc.clone(), req("next", 0, 0)));
    assert!(poll_once(&mut next).is_none());
    held.pop();
    assert!(
        poll_once(&mut next).is_none(),
        "2 in flight is not below a cap of 2"
    );
    held.pop();
    next.await.unwrap();
    assert_eq!(layer.stats().in_flight, 1);
}

// ---- against the simulator, over real sockets -----------------------------

mod sim {
    use super::*;
    use tower_llm_resilience::client::HyperClient;
    use tower_llm_resilience::request::ReplayBody;
    use tower_llm_resilience::response::Outcome;
    use tower_llm_resilience::sim::{Limits, SimConfig, SimHandle, Simulator};

    async fn sim() -> SimHandle {
        Simulator::start(
            SimConfig::new()
                .with_limits(Limits::new(1_000_000, 100_000_000, 100_000_000))
                .with_output_tokens(20, 20)
                .with_token_latency(Duration::from_millis(5))
                .with_seed(7),
        )
        .await
        .unwrap()
    }

    fn stream_request(url: &str) -> Request<ReplayBody> {
        support::http::anthropic(
            &format!("{url}/v1/messages"),
            "sk-ant-test",
            r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,
                    "messages":[{"role":"user","content":"Stream, please."}]}"#,
        )
    }

    /// 50 concurrent SSE streams through a cap of 10: the provider never
    /// sees more than 10 at once, and every stream completes.
    #[tokio::test]
    async fn fifty_streams_through_a_cap_of_ten() {
        let sim = sim().await;
        let layer = ConcurrencyLimitLayer::new(10);
        let svc = layer.layer(HyperClient::new());
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let svc = svc.clone();
                let req = stream_request(&sim.url());
                tokio::spawn(async move {
                    let mut res = svc.oneshot(req).await.unwrap();
                    assert_eq!(res.status(), StatusCode::OK);
                    let ended = support::http::completion(&mut res);
                    res.into_body().collect().await.unwrap();
                    ended.recv().unwrap().outcome
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Outcome::Complete);
        }
        let counters = sim.counters();
        assert_eq!(counters.ok(), 50);
        assert!(counters.peak_in_flight <= 10, "{}", counters.peak_in_flight);
        assert_eq!(layer.stats().peak, 10);
        assert_eq!(layer.stats().in_flight, 0);
        sim.shutdown().await;
    }

    /// Streams hold permits while they stream; dropping a stream midway
    /// releases its permit, and the simulator sees the hang-up.
    #[tokio::test]
    async fn streams_hold_permits_until_their_bodies_end_or_drop() {
        let sim = sim().await;
        let layer = ConcurrencyLimitLayer::new(3);
        let svc = layer.layer(HyperClient::new());
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let res = svc
                .clone()
                .oneshot(stream_request(&sim.url()))
                .await
                .unwrap();
            bodies.push(res.into_body());
        }
        assert_eq!(layer.stats().in_flight, 3);
        // A fourth waits while the three stream.
        let fourth = tokio::spawn({
            let svc = svc.clone();
            let req = stream_request(&sim.url());
            async move {
                svc.oneshot(req)
                    .await
                    .unwrap()
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
            }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(layer.stats().queued, 1);
        assert_eq!(
            sim.counters().in_flight,
            3,
            "three streams, still streaming"
        );
        // Read one frame of the first, then drop it mid-stream.
        let mut first = bodies.remove(0);
        first.frame().await.unwrap().unwrap();
        drop(first);
        fourth.await.unwrap();
        for body in bodies {
            body.collect().await.unwrap();
        }
        assert_eq!(layer.stats().in_flight, 0);
        // The simulator notices the hang-up shortly after.
        for _ in 0..100 {
            if sim.counters().in_flight == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let counters = sim.counters();
        assert_eq!(counters.in_flight, 0);
        // The permit is back the moment the body is dropped; the simulator
        // notices the hang-up only at its next write (one token later), so
        // the fourth stream may briefly overlap the dropped one there.
        assert!(counters.peak_in_flight <= 4, "{}", counters.peak_in_flight);
        sim.shutdown().await;
    }
}
