//! Helpers the integration tests share: each `tests/*.rs` includes them
//! with `mod support;` — but `loom.rs`, built under `--cfg loom`, which
//! needs none of them.

// Each integration test is its own crate and uses only some of these.
#![allow(dead_code)]

pub(crate) mod alloc;
pub(crate) mod budget;
pub(crate) mod cache;
pub(crate) mod http;
pub(crate) mod pool;
pub(crate) mod rate;
pub(crate) mod redis;
pub(crate) mod soak;
pub(crate) mod timeline;
pub(crate) mod trace;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use ::http::{Request, Response};
use tower::Service;
use tower_llm_resilience::BoxError;
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::response::ResponseBody;

/// A service of buffered requests answering the crate's response body,
/// that a spawned task can own: what the suites' upstreams and layered
/// services are.
pub(crate) trait ReplayService:
    Service<Request<ReplayBody>, Response = Response<ResponseBody>, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> ReplayService for S where
    S: Service<
            Request<ReplayBody>,
            Response = Response<ResponseBody>,
            Error = BoxError,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

/// Polls `fut` once with a no-op waker: its output if it finished then.
pub(crate) fn poll_once<F: Future + Unpin>(mut fut: F) -> Option<F::Output> {
    match Pin::new(&mut fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Retries `f` for up to two seconds, 50 ms apart (for what is settled on
/// a spawned task: reconciliations, refunds): whether it came true.
pub(crate) async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..40 {
        if f().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}
