//! The retry layer's cost when nothing fails: tower's `Retry` against our
//! `RetryLayer` on the same no-op service. `cargo bench --bench retry`.
//!
//! Both are driven the same way: the futures complete on their first poll,
//! so each iteration polls once with a no-op waker, on no runtime.
//!
//! - `retry/tower_retry_noop`: tower's `Retry` with a policy that never
//!   retries but, like any real retry policy, copies the request in
//!   `clone_request` (method, URI, version, headers, extensions and a
//!   `ReplayBody` replay — what a retry needs to send it again).
//! - `retry/ours_noop`: `RetryLayer::new()` (the defaults: budget, jitter,
//!   3 attempts), which keeps a copy too (its replay template, packed into
//!   one buffer; a request is rebuilt from it only for a retry), deposits
//!   in the shared retry budget, looks at how the response starts and puts
//!   `RetryInfo` in the response's extensions.
//! - `retry/ours_noop_no_budget`, `retry/ours_noop_single_attempt`: where
//!   our cost goes — without the budget, and without the replay template
//!   (one attempt allowed).
//! - `retry/no_layer`: the service called directly, for the floor.
//!
//! The service answers 200 with an empty `ResponseBody` (the body type this
//! crate's transports return); the request is an Anthropic Messages
//! request with its usual four headers, built afresh in every iteration
//! (the same work in all three).

mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group};
use http::{Request, Response};
use support::{Noop, interleaved, median, now, ready_now, time};
use tower::retry::Policy;
use tower::{Layer, Service};
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::response::ResponseBody;
use tower_llm_resilience::retry::RetryLayer;

const BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{"role":"user","content":"Hello there"}]}"#;

fn request() -> Request<ReplayBody> {
    Request::post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", "sk-ant-bench")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .header("user-agent", "bench/1.0")
        .body(ReplayBody::from(BODY))
        .expect("request")
}

/// Never retries; copies the request as every real policy must.
#[derive(Clone, Copy)]
struct NoRetry;

impl<E> Policy<Request<ReplayBody>, Response<ResponseBody>, E> for NoRetry {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<ReplayBody>,
        _result: &mut Result<Response<ResponseBody>, E>,
    ) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &Request<ReplayBody>) -> Option<Request<ReplayBody>> {
        let mut copy = Request::new(req.body().replay());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// One request through a service that is always ready.
fn one<S>(svc: &mut S) -> S::Response
where
    S: Service<Request<ReplayBody>>,
    S::Error: std::fmt::Debug,
{
    ready_now(svc);
    now(svc.call(black_box(request()))).expect("response")
}

fn bench(c: &mut Criterion) {
    let noop = Noop;
    let mut g = c.benchmark_group("retry");

    let mut tower_retry = tower::retry::Retry::new(NoRetry, noop);
    g.bench_function("tower_retry_noop", |b| {
        b.iter(|| black_box(one(&mut tower_retry)))
    });

    let mut ours = RetryLayer::new().layer(noop);
    g.bench_function("ours_noop", |b| b.iter(|| black_box(one(&mut ours))));

    // Where our cost goes: without the shared budget (one atomic add per
    // request), and with one attempt (no replay template to copy).
    let mut no_budget = RetryLayer::builder()
        .no_budget()
        .build()
        .expect("valid")
        .layer(noop);
    g.bench_function("ours_noop_no_budget", |b| {
        b.iter(|| black_box(one(&mut no_budget)))
    });
    let mut single = RetryLayer::builder()
        .max_attempts(1)
        .build()
        .expect("valid")
        .layer(noop);
    g.bench_function("ours_noop_single_attempt", |b| {
        b.iter(|| black_box(one(&mut single)))
    });

    let mut bare = noop;
    g.bench_function("no_layer", |b| b.iter(|| black_box(one(&mut bare))));
    g.finish();
}

/// With `RETRY_BENCH_AB=1`: an interleaved A/B run instead of criterion —
/// rounds of 20,000 requests through each variant in turn (rotating which
/// goes first), reporting the median time per request and the median of
/// the per-round ratios. On a machine shared with other work, where
/// criterion's separate runs drift with the load, the per-round ratio
/// compares the variants under the same load.
fn ab() {
    const ROUNDS: usize = 41;
    const N: u32 = 20_000;
    let noop = Noop;
    let mut tower_retry = tower::retry::Retry::new(NoRetry, noop);
    let mut ours = RetryLayer::new().layer(noop);
    let mut no_budget = RetryLayer::builder()
        .no_budget()
        .build()
        .expect("valid")
        .layer(noop);
    let mut single = RetryLayer::builder()
        .max_attempts(1)
        .build()
        .expect("valid")
        .layer(noop);
    let mut bare = noop;
    let names = [
        "retry/tower_retry_noop",
        "retry/ours_noop",
        "retry/ours_noop_no_budget",
        "retry/ours_noop_single_attempt",
        "retry/no_layer",
    ];
    let mut runs: [Box<dyn FnMut() -> f64>; 5] = [
        Box::new(move || time(N, || drop(black_box(one(&mut tower_retry))))),
        Box::new(move || time(N, || drop(black_box(one(&mut ours))))),
        Box::new(move || time(N, || drop(black_box(one(&mut no_budget))))),
        Box::new(move || time(N, || drop(black_box(one(&mut single))))),
        Box::new(move || time(N, || drop(black_box(one(&mut bare))))),
    ];
    let ns = interleaved(ROUNDS, &mut runs);
    for (i, name) in names.iter().enumerate() {
        let mut ratios: Vec<f64> = ns[i].iter().zip(&ns[0]).map(|(x, t)| x / t).collect();
        println!(
            "{name:32} median {:8.1} ns/request, {:.3}x tower (median of per-round ratios)",
            median(&mut ns[i].clone()),
            median(&mut ratios)
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    support::main("RETRY_BENCH_AB", ab, benches);
}
