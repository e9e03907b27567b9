//! Helpers the benchmarks share: each `benches/*.rs` that needs them
//! includes them with `mod support;`.

// Each bench target is its own crate and uses only some of these.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use tower::Service;
use tower_llm_resilience::response::ResponseBody;

/// The inner service: answers at once, 200 with an empty body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Noop;

impl<B> Service<Request<B>> for Noop {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<ResponseBody>, Infallible>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _req: Request<B>) -> Self::Future {
        std::future::ready(Ok(Response::new(ResponseBody::empty())))
    }
}

/// Polls once with a no-op waker: every future benchmarked completes on
/// its first poll.
pub(crate) fn now<F: Future>(fut: F) -> F::Output {
    let fut = pin!(fut);
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmark reached a limit or a wait: raise it"),
    }
}

/// `poll_ready` once with a no-op waker, for a service that must be
/// ready at once.
pub(crate) fn ready_now<S: Service<R>, R>(svc: &mut S) {
    match svc.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
}

/// A current-thread runtime with a timer, to enter while benchmarking
/// (tower's `RateLimit` and our limiters need a timer to build a `Sleep`).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// A Messages body of about 4 KiB: a system prompt and four turns, with
/// `temperature: 0` when `deterministic` (the cache stores it), else
/// without (the provider's default applies: the cache passes it through).
pub(crate) fn messages_body_4k(deterministic: bool) -> Bytes {
    let turn = "The quick brown fox jumps over the lazy dog while the model explains why. ";
    let text = turn.repeat(13);
    let temperature = if deterministic {
        r#""temperature":0,"#
    } else {
        ""
    };
    Bytes::from(format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":1024,{temperature}"system":"You are a careful assistant.",
"messages":[{{"role":"user","content":"{text}"}},{{"role":"assistant","content":[{{"type":"text","text":"{text}"}}]}},
{{"role":"user","content":"{text}"}},{{"role":"assistant","content":"{text}"}}]}}"#
    ))
}

/// Far above anything one core can send: never waits during a run.
#[cfg(feature = "rate")]
pub(crate) fn huge(burst: u64) -> tower_llm_resilience::rate::Limit {
    tower_llm_resilience::rate::Limit::new(1_000_000_000, std::time::Duration::from_secs(1), burst)
        .expect("limit")
}

// ---- the interleaved A/B runs (`*_BENCH_AB=1`)

/// `rounds` rounds, each running every variant once, rotating which goes
/// first: every variant's result per round (ns per operation), in order.
pub(crate) fn interleaved(
    rounds: usize,
    runs: &mut [Box<dyn FnMut() -> f64 + '_>],
) -> Vec<Vec<f64>> {
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    for round in 0..rounds {
        for k in 0..runs.len() {
            let i = (round + k) % runs.len();
            ns[i].push(runs[i]());
        }
    }
    ns
}

/// Nanoseconds per call of `f`, over `n` calls.
pub(crate) fn time(n: u32, mut f: impl FnMut()) -> f64 {
    let t = std::time::Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A bench's `main`: the A/B run when `ab_env` is set, else criterion's.
pub(crate) fn main(ab_env: &str, ab: fn(), benches: fn()) {
    if std::env::var_os(ab_env).is_some() {
        ab();
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
