//! The whole prebuilt stack on the pass-through path, beside the same four
//! concerns built from tower-resilience's layers. `cargo bench --bench stack`
//! (all IDs in one run; see BENCHMARKS.md).
//!
//! - `stack/bare`: the no-op transport called directly (200, an empty JSON
//!   object as a `String` body, `content-type: application/json`): the
//!   floor every other figure is measured against.
//! - `stack/ours_passthrough`: `Stack::builder()` (BufferBody → Cache →
//!   Fallback → Retry → RateLimit → ConcurrencyLimit) on the same transport:
//!   limits on requests, input and output tokens far above anything one core
//!   sends (never waits), the default retry (3 attempts, budget, jitter), an
//!   empty fallback chain, the default cache — which misses, because the
//!   request has no `temperature` (non-deterministic requests are not
//!   cached), and the 1,024-permit concurrency cap. The request carries no
//!   metadata, so `BufferBody` parses the 4 KiB body (model, max_tokens,
//!   input-token estimate) inside the timing.
//! - `stack/tower_resilience_equiv`: tower-resilience 0.13's
//!   `CacheLayer` → `FallbackLayer` → `RetryLayer` → `RateLimiterLayer` on
//!   the same transport: a fixed-window limiter of 10¹² permits per second
//!   (never waits), a retry of 3 attempts with exponential backoff, a
//!   token-bucket budget and a response predicate retrying 429 and 5xx (as
//!   ours does), a fallback answering 503 from an error (never used), and an
//!   LRU cache of 1,024 entries keyed by a per-request counter — its
//!   cheapest possible key, and a miss every time (it has no notion of a
//!   non-deterministic request: every miss is stored, so it also inserts
//!   and, once full, evicts). It parses nothing.
//!
//! Every variant gets the same `Request<ReplayBody>` (a 4.1 KiB Anthropic
//! Messages body, `x-api-key`, `anthropic-version`, `content-type`), built
//! outside the timing (`iter_batched`); inside it: `poll_ready`, `call`,
//! one poll of the future (all complete on their first poll, asserted),
//! reading the response body to its end and dropping it — when our
//! reconciliation runs and our permits are released. Driven like the
//! admission bench: polled with a no-op waker inside an entered tokio
//! current-thread runtime.

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use support::{interleaved, median, now, ready_now};
use tower::{Layer, Service, service_fn};
use tower_llm_resilience::cache::CacheLayer;
use tower_llm_resilience::fallback::FallbackLayer;
use tower_llm_resilience::rate::{Limits, RateLimitLayer};
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::retry::RetryLayer;
use tower_llm_resilience::stack::Stack;

/// A Messages body of about 4 KiB, without `temperature`: the provider's
/// default (1.0) applies, so the request is non-deterministic and our cache
/// passes it through.
fn body_4k() -> Bytes {
    support::messages_body_4k(false)
}

fn request(body: &Bytes) -> Request<ReplayBody> {
    let mut req = Request::new(ReplayBody::new(body.clone()));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = http::Uri::from_static("https://api.anthropic.com/v1/messages");
    let h = req.headers_mut();
    h.insert("x-api-key", HeaderValue::from_static("sk-ant-api03-bench"));
    h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    req
}

/// The transport: answers at once, 200 with an empty JSON object.
fn transport(
    _req: Request<ReplayBody>,
) -> std::future::Ready<Result<Response<String>, Infallible>> {
    let mut res = Response::new(String::from("{}"));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    std::future::ready(Ok(res))
}

/// Reads a body to its end, then drops it.
fn drain<B: Body + Unpin>(mut body: B) -> usize
where
    B::Data: bytes::Buf,
{
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut n = 0;
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                n += frame.data_ref().map_or(0, bytes::Buf::remaining);
            }
            Poll::Ready(Some(Err(_))) => panic!("body error"),
            Poll::Ready(None) => return n,
            Poll::Pending => panic!("body pending"),
        }
    }
}

/// `poll_ready` + `call` + one poll + drain: one request through `svc`.
fn one<S, B>(svc: &mut S, req: Request<ReplayBody>) -> usize
where
    S: Service<Request<ReplayBody>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body + Unpin,
    B::Data: bytes::Buf,
{
    ready_now(svc);
    let res = now(svc.call(req)).expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    drain(res.into_body())
}

/// Limits on requests, input and output tokens far above anything one
/// core sends: never waits during a run.
fn rate_layer() -> RateLimitLayer {
    let huge = || support::huge(1_000_000_000_000);
    RateLimitLayer::builder()
        .limits(
            Limits::unlimited()
                .requests(huge())
                .input_tokens(huge())
                .output_tokens(huge()),
        )
        .build()
        .expect("rate limit config")
}

fn bench(c: &mut Criterion) {
    let rt = support::runtime();
    let _entered = rt.enter();
    let body = body_4k();

    let mut g = c.benchmark_group("stack");
    g.throughput(Throughput::Elements(1));

    let mut bare = service_fn(transport);
    g.bench_function("bare", |b| {
        b.iter_batched(
            || request(&body),
            |req| one(&mut bare, req),
            BatchSize::SmallInput,
        )
    });

    let rate = rate_layer();
    let cache = CacheLayer::new();
    let mut ours = Stack::builder()
        .rate_limit(rate.clone())
        .retry(RetryLayer::new())
        .fallback(FallbackLayer::new([]))
        .cache(cache.clone())
        .service(service_fn(transport));
    g.bench_function("ours_passthrough", |b| {
        b.iter_batched(
            || request(&body),
            |req| one(&mut ours, req),
            BatchSize::SmallInput,
        )
    });
    // Nothing was stored, no reservation is left open.
    assert!(cache.store().is_empty(), "the cache stored a request");
    assert_eq!(cache.in_flight(), 0);
    for group in rate.stats() {
        assert_eq!(group.in_flight, 0, "a reservation was not settled");
    }

    let mut theirs = tower_resilience(service_fn(transport));
    g.bench_function("tower_resilience_equiv", |b| {
        b.iter_batched(
            || request(&body),
            |req| one(&mut theirs, req),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

type Req = Request<ReplayBody>;
type Res = Response<String>;

/// tower-resilience's cache → fallback → retry → rate limiter, configured
/// to do what ours does on this path (see the module docs).
fn tower_resilience<S>(
    transport: S,
) -> impl Service<Req, Response = Res, Error = impl std::fmt::Debug>
where
    S: Service<Req, Response = Res, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    use tower_resilience::cache::CacheLayer;
    use tower_resilience::fallback::FallbackLayer;
    use tower_resilience::ratelimiter::{RateLimiterLayer, RateLimiterServiceError};
    use tower_resilience::retry::{RetryBudgetBuilder, RetryLayer};

    type RateErr = RateLimiterServiceError<Infallible>;

    let rate = RateLimiterLayer::builder()
        .limit_for_period(1_000_000_000_000)
        .refresh_period(Duration::from_secs(1))
        .timeout_duration(Duration::from_secs(30))
        .build()
        .expect("rate limiter config");
    let retry: RetryLayer<Req, Res, RateErr> = RetryLayer::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(500))
        .budget(
            RetryBudgetBuilder::new()
                .token_bucket()
                .build()
                .expect("budget"),
        )
        .retry_on_response(|res: &Res| {
            res.status() == StatusCode::TOO_MANY_REQUESTS || res.status().is_server_error()
        })
        .build();
    let fallback: FallbackLayer<Req, Res, RateErr> = FallbackLayer::builder()
        .from_error(|_e: &RateErr| {
            let mut res = Response::new(String::new());
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            res
        })
        .build();
    let counter = AtomicU64::new(0);
    let cache = CacheLayer::builder()
        .max_size(1024)
        .key_extractor(move |_req: &Req| counter.fetch_add(1, Ordering::Relaxed))
        .build()
        .expect("cache config");
    let svc = rate.layer(transport);
    let svc = retry.layer(svc);
    let svc = fallback.layer(svc);
    let svc: tower_resilience::cache::Cache<_, Req, u64, Res> = cache.layer(svc);
    svc
}

/// With `STACK_BENCH_AB=1`: an interleaved run instead of criterion —
/// 31 rounds of 5,000 requests through each variant in turn (rotating which
/// goes first; requests built before each round's timing), reporting the
/// median time per request, the median per-round overhead over `bare` and
/// the median of the per-round overhead ratios ours / tower-resilience:
/// on a machine shared with other work the per-round ratio compares the
/// variants under the same load.
fn ab() {
    const ROUNDS: usize = 31;
    const N: usize = 5_000;
    let rt = support::runtime();
    let _entered = rt.enter();
    let body = body_4k();
    let mut bare = service_fn(transport);
    let mut ours = Stack::builder()
        .rate_limit(rate_layer())
        .service(service_fn(transport));
    let mut theirs = tower_resilience(service_fn(transport));
    let names = [
        "stack/bare",
        "stack/ours_passthrough",
        "stack/tower_resilience_equiv",
    ];
    let body = &body;
    let mut runs: [Box<dyn FnMut() -> f64 + '_>; 3] = [
        Box::new(|| batch(&mut bare, body, N)),
        Box::new(|| batch(&mut ours, body, N)),
        Box::new(|| batch(&mut theirs, body, N)),
    ];
    let ns = interleaved(ROUNDS, &mut runs);
    let over = |i: usize| -> Vec<f64> { ns[i].iter().zip(&ns[0]).map(|(x, b)| x - b).collect() };
    let (o_ours, o_theirs) = (over(1), over(2));
    let mut ratios: Vec<f64> = o_ours.iter().zip(&o_theirs).map(|(a, b)| a / b).collect();
    for (i, name) in names.iter().enumerate() {
        println!(
            "{name:30} median {:8.1} ns/request, overhead over bare {:8.1} ns",
            median(&mut ns[i].clone()),
            median(&mut over(i))
        );
    }
    println!(
        "overhead ratio ours / tower-resilience: {:.2} (median of per-round ratios)",
        median(&mut ratios)
    );
}

/// `n` requests through `svc`, built before the timing: ns per request.
fn batch<S, B>(svc: &mut S, body: &Bytes, n: usize) -> f64
where
    S: Service<Request<ReplayBody>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body + Unpin,
    B::Data: bytes::Buf,
{
    let reqs: Vec<_> = (0..n).map(|_| request(body)).collect();
    let t = std::time::Instant::now();
    for req in reqs {
        std::hint::black_box(one(svc, req));
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

criterion_group!(benches, bench);

fn main() {
    support::main("STACK_BENCH_AB", ab, benches);
}
