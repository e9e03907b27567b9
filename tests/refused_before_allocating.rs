//! Limits are enforced before the memory they guard is taken: a request
//! body over the limit is refused before it is buffered (the heap it costs
//! stays ≪ its size), and a full wait queue refuses a newcomer without
//! allocating a place for it — the bytes a refusal allocates do not grow
//! with the waiters already queued, and nothing of it is kept. Measured
//! with a counting allocator (this binary's own, `stats_alloc`), one test
//! at a time.

// The serializing lock is held across awaits on purpose: each test runs
// on its own thread and current-thread runtime, so nothing else awaits it.
#![allow(clippy::await_holding_lock)]

mod support;

use std::alloc::System;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use support::alloc::{allocated, live, serial};
use support::http::{anthropic, text};
use support::poll_once;
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;
use tower_llm_resilience::Stack;
use tower_llm_resilience::concurrency::ConcurrencyLimitLayer;
use tower_llm_resilience::error::BodyTooLarge;
use tower_llm_resilience::queue::{QueueConfig, QueueFull};
use tower_llm_resilience::rate::{Limit, Limits, RateLimitLayer};
use tower_llm_resilience::request::{BufferBodyLayer, ReplayBody};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The buffering limit here.
const LIMIT: usize = 1024 * 1024;
/// The body sent: 64 × the limit.
const BODY: usize = 64 * LIMIT;
/// One frame of it, static, so producing the body allocates nothing.
const FRAME: usize = 64 * 1024;
static CHUNK: [u8; FRAME] = [b' '; FRAME];

// ---- a large body that costs its producer nothing ----

/// `len` bytes in static frames; its size hint is exact when `declared`,
/// unknown otherwise (a chunked upload). Counts the frames taken from it.
struct Large {
    left: usize,
    declared: bool,
    frames: Arc<AtomicUsize>,
}

impl Body for Large {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(FRAME);
        self.left -= n;
        self.frames.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.declared {
            SizeHint::with_exact(self.left as u64)
        } else {
            SizeHint::default()
        }
    }
}

/// A request of `BODY` bytes, and the count of frames taken from it.
fn large(declared: bool) -> (Request<Large>, Arc<AtomicUsize>) {
    let frames = Arc::new(AtomicUsize::new(0));
    let body = Large {
        left: BODY,
        declared,
        frames: Arc::clone(&frames),
    };
    let req = Request::post("http://upstream/v1/messages")
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    (req, frames)
}

fn ok_json() -> Response<String> {
    Response::builder()
        .header("content-type", "application/json")
        .body(r#"{"type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":3,"output_tokens":1}}"#.to_owned())
        .expect("response")
}

/// An upstream answering at once, counting its calls.
fn upstream(
    calls: &Arc<AtomicUsize>,
) -> impl Service<Request<ReplayBody>, Response = Response<String>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    let calls = Arc::clone(calls);
    service_fn(move |_req: Request<ReplayBody>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(ok_json()) }
    })
}

/// What refusing a [`large`] body (`declared` or not) through `svc`
/// costs: the bytes allocated and left live, the least of five tries, and
/// the frames read, the most of them. The allocator counts the whole
/// process: another test's thread (building its runtime, the harness
/// printing) can add to one try — CI once saw 9,806 B for an 8 B refusal —
/// but never take away, and a refusal's own cost is the same every time.
async fn refusal_cost<S>(svc: S, declared: bool) -> (usize, usize, usize)
where
    S: Service<Request<Large>> + Clone,
    S::Error: Into<tower_llm_resilience::BoxError>,
{
    let (mut cost, mut kept, mut read) = (usize::MAX, usize::MAX, 0);
    for _ in 0..5 {
        let (req, frames) = large(declared);
        let svc = svc.clone();
        let (base, before) = (live(), allocated());
        let err: tower_llm_resilience::BoxError =
            svc.oneshot(req).await.err().expect("refused").into();
        cost = cost.min(allocated() - before);
        let limit = err.downcast_ref::<BodyTooLarge>().map(|e| e.limit);
        assert_eq!(limit, Some(LIMIT), "{err}");
        drop(err);
        kept = kept.min(live().saturating_sub(base));
        read = read.max(frames.load(Ordering::SeqCst));
    }
    (cost, kept, read)
}

// ---- the body limit ----

/// A body whose size is known (its size hint: hyper's from
/// `content-length`) to exceed the limit is refused unread: not one frame
/// taken, a few hundred bytes allocated for a 64 MiB body.
#[tokio::test]
async fn a_body_known_too_large_is_refused_unread() {
    let _serial = serial();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = BufferBodyLayer::new(LIMIT).layer(upstream(&calls));
    let (cost, kept, read) = refusal_cost(svc, true).await;
    println!("declared {BODY} B over {LIMIT} B: {cost} B allocated");
    assert_eq!(read, 0, "frames read");
    assert!(cost <= 4 * 1024, "{cost} B allocated to refuse it");
    assert_eq!(kept, 0, "{kept} B kept");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the upstream was called");
}

/// A chunked body (no size hint) is read only up to the limit: the frame
/// that would cross it is refused before it is copied, so the heap it
/// costs stays within twice the limit (the buffer's growth), whatever the
/// body's size — here ≪ its 64 MiB.
#[tokio::test]
async fn a_streamed_body_is_read_no_further_than_the_limit() {
    let _serial = serial();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = BufferBodyLayer::new(LIMIT).layer(upstream(&calls));
    let (cost, kept, read) = refusal_cost(svc, false).await;
    println!("chunked {BODY} B over {LIMIT} B: {read} frames read, {cost} B allocated");
    assert!(read <= LIMIT / FRAME + 1, "{read} frames read");
    assert!(
        cost <= 2 * LIMIT && cost <= BODY / 32,
        "{cost} B allocated to refuse a {BODY} B body"
    );
    assert_eq!(kept, 0, "{kept} B kept");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the upstream was called");
}

/// The same through the whole stack, whose first layer buffers: nothing
/// below it (cache, retry, limiters) sees the body, and the refusal costs
/// what it costs the buffering layer alone.
#[tokio::test]
async fn the_stack_refuses_a_large_body_before_any_layer_sees_it() {
    let _serial = serial();
    let calls = Arc::new(AtomicUsize::new(0));
    let stack = Stack::builder().body_limit(LIMIT);
    let svc = stack.clone().service(upstream(&calls));
    for declared in [true, false] {
        let (cost, kept, read) = refusal_cost(svc.clone(), declared).await;
        println!("stack, declared={declared}: {read} frames read, {cost} B allocated");
        if declared {
            assert_eq!(read, 0);
            assert!(cost <= 4 * 1024, "{cost} B allocated");
        } else {
            assert!(read <= LIMIT / FRAME + 1, "{read} frames read");
            assert!(cost <= 2 * LIMIT, "{cost} B allocated");
        }
        assert_eq!(kept, 0, "{kept} B kept");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the upstream was called");
    assert!(stack.rate_limiter().stats().is_empty(), "a group was made");
    assert_eq!(stack.concurrency_limiter().stats().in_flight, 0);
}

// ---- a full queue ----

/// A request the limiters will queue (one key, one model).
fn msg() -> Request<ReplayBody> {
    anthropic(
        "http://upstream/v1/messages",
        "sk-queue",
        r#"{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#,
    )
}

/// What one refusal by a full queue allocates on average over `N` refusals,
/// and what the `N` leave live once dropped.
fn refusals<S>(svc: &S, queue_len: impl Fn() -> usize) -> (usize, usize)
where
    S: Service<Request<ReplayBody>, Error = tower_llm_resilience::BoxError> + Clone,
{
    const N: usize = 1_000;
    let reqs: Vec<_> = (0..N).map(|_| msg()).collect();
    let full = queue_len();
    let (base, before) = (live(), allocated());
    for req in reqs {
        let fut = std::pin::pin!(svc.clone().call(req));
        let Some(Err(e)) = poll_once(fut) else {
            panic!("not refused at once");
        };
        assert!(e.is::<QueueFull>(), "{e}");
    }
    let cost = (allocated() - before) / N;
    assert_eq!(queue_len(), full, "a refused request took a place");
    (cost, live().saturating_sub(base))
}

/// A full rate-limit queue refuses with `QueueFull` at once and allocates
/// nothing per waiter: a refusal costs the same few KiB (the request's
/// metadata, the error) behind 10 waiters as behind 10,000, takes no
/// place, and leaves nothing behind.
#[tokio::test(start_paused = true)]
async fn a_full_rate_queue_refuses_without_a_place_per_waiter() {
    let _serial = serial();
    async fn cost_behind(waiters: usize) -> (usize, usize, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = RateLimitLayer::builder()
            .limits(
                Limits::unlimited()
                    .requests(Limit::new(1, Duration::from_secs(60), 1).expect("limit")),
            )
            .queue(QueueConfig::new(waiters, Duration::from_millis(250)).expect("queue"))
            .max_wait(Duration::from_secs(3600))
            .build()
            .expect("layer");
        let svc = layer.layer(upstream(&calls));
        text(svc.clone().oneshot(msg()).await.expect("the burst")).await;
        let base = live();
        let mut queued: Vec<_> = (0..waiters)
            .map(|_| Box::pin(svc.clone().call(msg())))
            .collect();
        for fut in &mut queued {
            assert!(poll_once(fut.as_mut()).is_none(), "not queued");
        }
        let per_waiter = live().saturating_sub(base) / waiters;
        assert_eq!(layer.queue().len(), waiters);
        let (cost, kept) = refusals(&svc, || layer.queue().len());
        drop(queued);
        assert_eq!(layer.queue().len(), 0);
        (cost, kept, per_waiter)
    }
    let (small, small_kept, _) = cost_behind(10).await;
    let (large, large_kept, per_waiter) = cost_behind(10_000).await;
    println!(
        "rate queue: a refusal allocates {small} B behind 10 waiters, {large} B behind 10,000 (a waiter holds {per_waiter} B); kept {small_kept} B, {large_kept} B"
    );
    assert!(
        large <= small + 64,
        "{large} B behind 10,000, {small} B behind 10"
    );
    assert!(large <= 4 * 1024, "a refusal allocates {large} B");
    assert!(
        small_kept < 1024 && large_kept < 1024,
        "kept {small_kept} B, {large_kept} B"
    );
}

/// The same for the concurrency limiter's queue.
#[tokio::test(start_paused = true)]
async fn a_full_permit_queue_refuses_without_a_place_per_waiter() {
    let _serial = serial();
    async fn cost_behind(waiters: usize) -> (usize, usize, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = ConcurrencyLimitLayer::builder(1)
            .queue(QueueConfig::new(waiters, Duration::from_millis(250)).expect("queue"))
            .max_wait(Duration::from_secs(3600))
            .build()
            .expect("layer");
        let svc = layer.layer(upstream(&calls));
        let held = svc.clone().oneshot(msg()).await.expect("the permit");
        let base = live();
        let mut queued: Vec<_> = (0..waiters)
            .map(|_| Box::pin(svc.clone().call(msg())))
            .collect();
        for fut in &mut queued {
            assert!(poll_once(fut.as_mut()).is_none(), "not queued");
        }
        let per_waiter = live().saturating_sub(base) / waiters;
        assert_eq!(layer.stats().queued, waiters);
        let (cost, kept) = refusals(&svc, || layer.stats().queued);
        drop(queued);
        drop(held);
        assert_eq!((layer.stats().queued, layer.stats().in_flight), (0, 0));
        (cost, kept, per_waiter)
    }
    let (small, small_kept, _) = cost_behind(10).await;
    let (large, large_kept, per_waiter) = cost_behind(10_000).await;
    println!(
        "permit queue: a refusal allocates {small} B behind 10 waiters, {large} B behind 10,000 (a waiter holds {per_waiter} B); kept {small_kept} B, {large_kept} B"
    );
    assert!(
        large <= small + 64,
        "{large} B behind 10,000, {small} B behind 10"
    );
    assert!(large <= 4 * 1024, "a refusal allocates {large} B");
    assert!(
        small_kept < 1024 && large_kept < 1024,
        "kept {small_kept} B, {large_kept} B"
    );
}
