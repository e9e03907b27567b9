//! Per-request admission costs, ours beside governor's and tower's.
//! `cargo bench --bench admission` (all IDs in one run; see BENCHMARKS.md).
//!
//! Every future here completes on its first poll (no limit is ever reached),
//! so all of them are driven the same way: polled once with a no-op waker
//! inside an entered tokio current-thread runtime (tower's `RateLimit` needs
//! a timer to build its `Sleep`). Requests are built outside the timing
//! (`iter_batched`) and are the same for tower and us.

mod support;

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, HeaderValue, Request};
use support::{Noop, interleaved, median, now, time};
use tower::util::Either;
use tower::{Layer, Service, ServiceExt};
use tower_llm_resilience::concurrency::ConcurrencyLimitLayer;
use tower_llm_resilience::provider::QuotaSnapshot;
use tower_llm_resilience::queue::{QueueKey, WaitQueue};
use tower_llm_resilience::rate::{Limit, Limits, RateLimitLayer};

use gcra::{Gcra, nanos};

// The GCRA is private to the crate; to measure the algorithm alone, as the
// limiter runs it, this bench compiles its two source files as modules of
// its own (with the crate's error type, which is all they import).
#[allow(dead_code, unreachable_pub)]
#[path = "../src/rate/gcra.rs"]
mod gcra;
#[allow(dead_code, unreachable_pub)]
#[path = "../src/rate/limit.rs"]
mod limit;
mod error {
    pub(crate) use tower_llm_resilience::error::InvalidConfig;
}
use tower_llm_resilience::request::{KeyId, ReplayBody, RequestMeta};
use tower_llm_resilience::response::ResponseBody;

const BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Summarise the token bucket algorithm in one line."}]}"#;

/// A request that already carries its metadata (no JSON parse measured).
fn request(meta: &Arc<RequestMeta>, key: &http::HeaderValue) -> Request<ReplayBody> {
    let mut req = Request::post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", key.clone())
        .body(ReplayBody::from(BODY))
        .expect("request");
    req.extensions_mut().insert(Arc::clone(meta));
    req
}

/// Far above anything one core can send: never denies during a run.
fn huge() -> Limit {
    support::huge(1_000_000_000)
}

/// The same limit, as the bench's own copy of the GCRA takes it.
fn huge_limit() -> gcra::Limit {
    gcra::Limit::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000).expect("limit")
}

fn rate_layer(limits: Limits) -> RateLimitLayer {
    RateLimitLayer::builder()
        .limits(limits)
        .build()
        .expect("rate limit config")
}

/// Requests only.
fn requests_only() -> Limits {
    Limits::unlimited().requests(huge())
}

/// Requests, input and output tokens.
fn all_three() -> Limits {
    Limits::unlimited()
        .requests(huge())
        .input_tokens(huge())
        .output_tokens(huge())
}

/// governor: a direct (not keyed) limiter; 10^9 cells/s, burst 2^32 − 1.
fn governor() -> DefaultDirectRateLimiter {
    RateLimiter::direct(
        Quota::with_period(Duration::from_nanos(1))
            .expect("quota")
            .allow_burst(NonZeroU32::MAX),
    )
}

/// The request's metadata, one key, and a thousand keys.
fn keys() -> (Arc<RequestMeta>, HeaderValue, Vec<HeaderValue>) {
    let meta = Arc::new(RequestMeta::parse(
        "/v1/messages",
        &HeaderMap::new(),
        BODY.as_bytes(),
    ));
    let key = HeaderValue::from_static("sk-ant-bench");
    let keys = (0..1_000)
        .map(|i| HeaderValue::try_from(format!("sk-ant-bench-{i:04}")).expect("key"))
        .collect();
    (meta, key, keys)
}

/// `ready`, `call`, and dropping the response — which, through our
/// limiter, settles the reservation: timed too.
fn send<S>(svc: &mut S, req: Request<ReplayBody>)
where
    S: Service<Request<ReplayBody>>,
    S::Error: std::fmt::Debug,
{
    now(ServiceExt::<Request<ReplayBody>>::ready(&mut *svc)).expect("ready");
    drop(now(svc.call(req)).expect("response"));
}

/// The same with an empty request, built inside the timing (it allocates
/// nothing). Through a concurrency limit, dropping the response releases
/// the permit (tower's goes with the future, ours with the body).
fn send_unit<S>(svc: &mut S)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    now(ServiceExt::<Request<()>>::ready(&mut *svc)).expect("ready");
    drop(now(svc.call(Request::new(()))).expect("response"));
}

fn bench(c: &mut Criterion) {
    let rt = support::runtime();
    let _entered = rt.enter();
    let (meta, key, keys) = keys();

    let mut g = c.benchmark_group("admission");

    let governor = governor();
    let cost = NonZeroU32::new(4).expect("non-zero");
    let denied = std::cell::Cell::new(0u64);
    g.bench_function("governor_check_n", |b| {
        b.iter(|| {
            if !matches!(governor.check_n(black_box(cost)), Ok(Ok(()))) {
                denied.set(denied.get() + 1);
            }
        })
    });
    assert_eq!(denied.get(), 0, "governor denied during the bench");

    // tower: RateLimit's ready + call on the no-op service.
    // The floor of every layer figure below: the no-op service itself, the
    // same request built outside the timing, the same response dropped.
    let mut bare = Noop;
    g.bench_function("no_layer", |b| {
        b.iter_batched(
            || request(&meta, &key),
            |req| send(&mut bare, req),
            BatchSize::SmallInput,
        )
    });

    let mut tower_rate = tower::limit::RateLimit::new(
        Noop,
        tower::limit::rate::Rate::new(u64::MAX, Duration::from_secs(1)),
    );
    g.bench_function("tower_rate_limit", |b| {
        b.iter_batched(
            || request(&meta, &key),
            |req| send(&mut tower_rate, req),
            BatchSize::SmallInput,
        )
    });

    // Ours, through the layer: admission, the inner call, and dropping the
    // response (which settles the reservation).
    let one = rate_layer(requests_only()).layer(Noop);
    g.bench_function("ours_1dim", |b| {
        let mut svc = one.clone();
        b.iter_batched(
            || request(&meta, &key),
            |req| send(&mut svc, req),
            BatchSize::SmallInput,
        )
    });

    let three = rate_layer(all_three()).layer(Noop);
    g.bench_function("ours_3dim", |b| {
        let mut svc = three.clone();
        b.iter_batched(
            || request(&meta, &key),
            |req| send(&mut svc, req),
            BatchSize::SmallInput,
        )
    });

    let keyed = rate_layer(requests_only()).layer(Noop);
    // Warm every group, so the bench measures lookups, not creation.
    for k in &keys {
        drop(now(keyed.clone().oneshot(request(&meta, k))).expect("response"));
    }
    g.bench_function("ours_keyed_1k", |b| {
        let mut svc = keyed.clone();
        let mut i = 0usize;
        b.iter_batched(
            || {
                i = (i + 1) % keys.len();
                request(&meta, &keys[i])
            },
            |req| send(&mut svc, req),
            BatchSize::SmallInput,
        )
    });

    // Scaling over threads: every iteration admits the same `PER_ITER`
    // requests over the same 1,000 warm groups, split between 1 or 2
    // threads (each a clone of the service, keys interleaved), so
    // `threads_1 / threads_2` is the speed-up. Requests are built inside
    // the timing, the same way in both (built ahead, they no longer fit in
    // cache, and half as many per thread fit better: a false speed-up);
    // spawning the threads is timed too (a few tens of µs against
    // milliseconds of work). The same loop over
    // the no-op service alone is the machine's own scaling (no shared
    // state at all): the ceiling for ours.
    const PER_ITER: usize = 20_000;
    for (name, svc) in [
        ("keyed_1k", Either::Left(keyed.clone())),
        (
            "no_layer",
            Either::Right(tower::util::MapErr::new(Noop, tower::BoxError::from)),
        ),
    ] {
        for threads in [1usize, 2] {
            g.bench_function(format!("threads_{threads}_{name}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = std::time::Instant::now();
                        std::thread::scope(|scope| {
                            for t in 0..threads {
                                let mut svc = svc.clone();
                                // Each thread its own metadata and key bytes,
                                // as each real request has its own.
                                let meta = Arc::new(RequestMeta::clone(&meta));
                                let keys: Vec<_> = keys
                                    .iter()
                                    .map(|k| HeaderValue::from_bytes(k.as_bytes()).expect("key"))
                                    .collect();
                                let handle = rt.handle().clone();
                                scope.spawn(move || {
                                    let _entered = handle.enter();
                                    for n in 0..PER_ITER / threads {
                                        let k = &keys[(n * threads + t) % keys.len()];
                                        send(&mut svc, request(&meta, k));
                                    }
                                });
                            }
                        });
                        total += start.elapsed();
                    }
                    total
                })
            });
        }
    }

    // The algorithm alone, as the in-memory store runs it: lock, clock,
    // reserve — the peer of governor's bare `check_n`.
    let base = tokio::time::Instant::now();
    let gcra1 = Mutex::new(Gcra::new([Some(huge_limit()), None, None, None]));
    g.bench_function("ours_gcra_1dim", |b| {
        b.iter(|| {
            let t = nanos(tokio::time::Instant::now().saturating_duration_since(base));
            let mut s = gcra1.lock().expect("lock");
            black_box(s.reserve(black_box([1, 0, 0, 0]), t)).expect("admitted");
        })
    });
    let gcra3 = Mutex::new(Gcra::new([
        Some(huge_limit()),
        Some(huge_limit()),
        Some(huge_limit()),
        None,
    ]));
    g.bench_function("ours_gcra_3dim", |b| {
        b.iter(|| {
            let t = nanos(tokio::time::Instant::now().saturating_duration_since(base));
            let mut s = gcra3.lock().expect("lock");
            black_box(s.reserve(black_box([1, 20, 4, 0]), t)).expect("admitted");
        })
    });
    g.finish();

    let mut g = c.benchmark_group("concurrency");
    let mut bare = Noop;
    g.bench_function("no_layer", |b| b.iter(|| send_unit(&mut bare)));
    let mut tower_conc = tower::limit::ConcurrencyLimit::new(Noop, 1024);
    g.bench_function("tower", |b| b.iter(|| send_unit(&mut tower_conc)));
    let mut ours = ConcurrencyLimitLayer::new(1024).layer(Noop);
    g.bench_function("ours", |b| b.iter(|| send_unit(&mut ours)));
    g.finish();
    assert_eq!(ours.stats().in_flight, 0);

    // Pieces of the paths above, to see where the time goes.
    let mut g = c.benchmark_group("breakdown");
    g.bench_function("instant_now", |b| b.iter(tokio::time::Instant::now));
    g.bench_function("system_time_now", |b| b.iter(std::time::SystemTime::now));
    g.bench_function("body_drop_no_observer", |b| {
        b.iter(|| drop(black_box(ResponseBody::empty())))
    });
    g.bench_function("body_observer_attach_drop", |b| {
        let token = Arc::new(());
        b.iter(|| {
            let mut body = ResponseBody::empty();
            let held = Arc::clone(&token);
            body.on_complete(move |c| drop(black_box((held, c.outcome))));
            drop(body)
        })
    });
    // The least any permit that outlives the response future costs: a
    // shared counter reached through an `Arc` (cloned into the response
    // body, dropped with it), taken and given back.
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    g.bench_function("permit_atomics", |b| {
        b.iter(|| {
            let held = Arc::clone(black_box(&counter));
            held.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            held.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            drop(black_box(held));
        })
    });
    let mut with_key = HeaderMap::new();
    with_key.insert("x-api-key", key.clone());
    g.bench_function("key_id_from_headers", |b| {
        b.iter(|| KeyId::from_headers(black_box(&with_key)))
    });
    let empty = HeaderMap::new();
    g.bench_function("quota_snapshot_no_headers", |b| {
        b.iter(|| QuotaSnapshot::from_headers(black_box(&empty), std::time::SystemTime::now()))
    });
    let queue = WaitQueue::default();
    g.bench_function("wait_queue_wake_head_empty", |b| {
        let key = QueueKey::unique();
        b.iter(|| queue.wake_head(black_box(key)))
    });
    g.bench_function("extensions_insert_arc_meta", |b| {
        b.iter_batched(
            || Request::new(()),
            |mut req| {
                req.extensions_mut().insert(Arc::clone(&meta));
                req
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// With `ADMISSION_BENCH_AB=1`: an interleaved A/B run instead of
/// criterion — rounds of 20,000 operations through each variant in turn
/// (rotating which goes first), each request built, sent and dropped inside
/// the loop (the same for every variant, the floors included), reporting the
/// median time per operation, the median of the per-round ratios to the
/// peer, and the median cost over the floor. Steadier than criterion's
/// `iter_batched` runs, whose batches' allocation patterns move the layer
/// rows by ±20 %.
fn ab() {
    const ROUNDS: usize = 31;
    const N: u32 = 20_000;
    let rt = support::runtime();
    let _entered = rt.enter();
    let (meta, key, keys) = keys();
    let governor = governor();
    let cost = NonZeroU32::new(4).expect("non-zero");
    let mut tower_rate = tower::limit::RateLimit::new(
        Noop,
        tower::limit::rate::Rate::new(u64::MAX, Duration::from_secs(1)),
    );
    let mut one_dim = rate_layer(requests_only()).layer(Noop);
    let mut three_dim = rate_layer(all_three()).layer(Noop);
    let mut keyed = rate_layer(requests_only()).layer(Noop);
    for k in &keys {
        drop(now(keyed.clone().oneshot(request(&meta, k))).expect("response"));
    }
    let mut tower_conc = tower::limit::ConcurrencyLimit::new(Noop, 1024);
    let mut ours_conc = ConcurrencyLimitLayer::new(1024).layer(Noop);

    // (name, peer index, floor index)
    let names: [(&str, usize, Option<usize>); 9] = [
        ("admission/governor_check_n", 0, None),
        ("admission/no_layer", 0, None),
        ("admission/tower_rate_limit", 0, Some(1)),
        ("admission/ours_1dim", 0, Some(1)),
        ("admission/ours_3dim", 0, Some(1)),
        ("admission/ours_keyed_1k", 0, Some(1)),
        ("concurrency/no_layer", 7, None),
        ("concurrency/tower", 7, Some(6)),
        ("concurrency/ours", 7, Some(6)),
    ];
    let (meta, key) = (&meta, &key);
    let mut bare = Noop;
    let mut bare_unit = Noop;
    let mut i = 0usize;
    let mut runs: [Box<dyn FnMut() -> f64 + '_>; 9] = [
        Box::new(|| time(N, || drop(black_box(governor.check_n(black_box(cost)))))),
        Box::new(move || time(N, || send(&mut bare, request(meta, key)))),
        Box::new(move || time(N, || send(&mut tower_rate, request(meta, key)))),
        Box::new(move || time(N, || send(&mut one_dim, request(meta, key)))),
        Box::new(move || time(N, || send(&mut three_dim, request(meta, key)))),
        Box::new(|| {
            time(N, || {
                i = (i + 1) % keys.len();
                send(&mut keyed, request(meta, &keys[i]));
            })
        }),
        Box::new(move || time(N, || send_unit(&mut bare_unit))),
        Box::new(move || time(N, || send_unit(&mut tower_conc))),
        Box::new(move || time(N, || send_unit(&mut ours_conc))),
    ];
    let ns = interleaved(ROUNDS, &mut runs);
    for (i, (name, peer, floor)) in names.iter().enumerate() {
        let mut ratios: Vec<f64> = ns[i].iter().zip(&ns[*peer]).map(|(x, p)| x / p).collect();
        let over = floor.map_or(String::new(), |f| {
            let mut over: Vec<f64> = ns[i].iter().zip(&ns[f]).map(|(x, b)| x - b).collect();
            format!(", {:6.1} ns over the floor", median(&mut over))
        });
        println!(
            "{name:28} median {:7.1} ns/op, {:6.2}x {} (median of per-round ratios){over}",
            median(&mut ns[i].clone()),
            median(&mut ratios),
            if *peer == 0 { "governor" } else { "tower" },
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    support::main("ADMISSION_BENCH_AB", ab, benches);
}
