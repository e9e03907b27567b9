//! Retry-after-aware retry: retries exactly the failures worth retrying,
//! waits exactly as long as the server asks (never shorter), spreads
//! clients apart, refuses to amplify an outage, and never waits past the
//! caller's deadline.
//!
//! - **Classification** ([`RetryPolicy`], default [`DefaultPolicy`]):
//!   408, 409, 429, 5xx (not 501/505), 529, connection errors; a 200 stream
//!   whose first event is an `error` before any content; never other 4xx,
//!   never a 429 that means the quota or spend limit is gone;
//!   `x-should-retry` overrides; gRPC `UNAVAILABLE` and
//!   `RESOURCE_EXHAUSTED` (see [gRPC](#grpc)).
//! - **Delay precedence**: `x-should-retry` → `retry-after-ms` →
//!   `retry-after` (seconds, or an HTTP-date measured from the response's
//!   `Date`) → the reset of the exhausted dimension in the rate-limit
//!   headers → computed [`Backoff`] (exponential with full jitter by
//!   default). Server advice is honoured exactly plus positive-only jitter;
//!   advice longer than [`max_server_delay`](RetryBuilder::max_server_delay)
//!   gives up at once by default ([`OverCap`]), so a fallback above can
//!   degrade instead.
//! - **Every wait is bounded**: by the request's
//!   [`Deadline`](crate::request::Deadline) extension or the layer's total
//!   [`timeout`](RetryBuilder::timeout), whichever ends first. No sleep runs
//!   past it — when the wait would, the last response is returned at once —
//!   and an attempt still waiting for the inner service then is dropped
//!   ([`DeadlineElapsed`](crate::error::DeadlineElapsed)). Each attempt may
//!   have its own [`attempt_timeout`](RetryBuilder::attempt_timeout)
//!   ([`AttemptTimeout`](crate::error::AttemptTimeout), retried as a
//!   transport failure). The look ahead at a body (a 429's error body, a
//!   stream's start) also ends at
//!   [`peek_timeout`](RetryBuilder::peek_timeout) (30 s): a 429 body that
//!   stalls is given up — its bytes kept, then
//!   [`BodyStalled`](crate::error::BodyStalled) — and its upstream body
//!   dropped, so the permit it holds below comes back.
//! - **Budget** ([`RetryBudget`]): retries at most a ratio of requests plus
//!   a floor per second, over a sliding window.
//! - **Outcome**: the final response — success or the last failure — is
//!   `Ok(Response)` with [`RetryInfo`] in its extensions; discarded
//!   attempts' bodies are dropped at once (releasing what they hold below);
//!   a [dead-letter hook](RetryBuilder::dead_letter) receives requests that
//!   ran out of attempts.
//!
//! # gRPC
//!
//! A gRPC call is answered HTTP 200 whatever happened; the layer reads its
//! outcome where gRPC puts it, for a response whose `content-type` is
//! `application/grpc` (or `+proto`, `+json`):
//!
//! - **Trailers-only** (the headers carry `grpc-status`: how tonic,
//!   grpc-go and grpc-java answer a call that fails before any message,
//!   e.g. `RESOURCE_EXHAUSTED` over a quota): judged from the headers at
//!   once.
//! - **Status in trailers**: the body is read ahead until its first
//!   message or its trailers, whichever comes first — at most one data
//!   frame, bounded by the deadline and
//!   [`peek_timeout`](RetryBuilder::peek_timeout). Trailers before any
//!   message are judged (the call failed having sent nothing, so a retry
//!   loses nothing); once a message has arrived the call is the caller's
//!   and is never retried, whatever status its trailers carry — the caller
//!   has, or may have acted on, that message. (gRPC's own clients, by
//!   their retry design A6, stop earlier: at response headers that are
//!   not trailers-only. A call that sent headers and then failed without
//!   a message is still retried here: nothing has reached the caller.)
//!   Reading a unary call's body to the
//!   end to see its trailers would make every successful call wait for
//!   its whole reply inside the layer, and a server stream would be
//!   buffered; the first message is where a retry stops being safe anyway.
//! - [`DefaultPolicy`] retries `UNAVAILABLE` (14) and `RESOURCE_EXHAUSTED`
//!   (8) ([`GrpcCode::is_retryable_by_default`](crate::provider::GrpcCode::is_retryable_by_default)),
//!   and the policy sees the status in
//!   [`Attempted::Response::grpc`](Attempted::Response).
//! - `grpc-retry-pushback-ms` is the server's delay: honoured exactly
//!   (plus the positive jitter) in place of the backoff; negative or not an
//!   integer means "do not retry" (A6); over `max_server_delay` is advice
//!   too long, as for `retry-after`.
//!
//! The request must be replayable: put
//! [`BufferBodyLayer`](crate::request::BufferBodyLayer) above, which reads
//! a unary call's one message into a `ReplayBody`, and turn the body back
//! into the transport's type below (`tonic::body::Body::new`); the
//! `tonic_client` example shows the whole stack on a tonic `Channel`.
//! Which layers apply to gRPC traffic: **retry**, the **rate limit's
//! request count** (a gRPC body is not JSON: no model, no token counts)
//! and the **concurrency limit** (its permit is held until the reply's
//! trailers). HTTP+JSON only: the rate limit's token dimensions and its
//! learning from rate-limit headers and 429s, the cache, fallback, spend
//! budgets and the prebuilt `Stack`.
//!
//! Requests are replayed from their [`ReplayBody`](crate::request::ReplayBody).
//! A request with any other body type is sent once and never retried
//! ([`StopReason::NotReplayable`]) — never silently re-sent with a consumed
//! body. Put [`BufferBodyLayer`](crate::request::BufferBodyLayer) above to
//! make any body replayable.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_llm_resilience::request::ReplayBody;
//! use tower_llm_resilience::retry::{RetryInfo, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_llm_resilience::BoxError> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let upstream = {
//!     let calls = calls.clone();
//!     service_fn(move |_req: Request<ReplayBody>| {
//!         let n = calls.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             // Overloaded once, then fine.
//!             let status = if n == 0 { 529 } else { 200 };
//!             Ok::<_, Infallible>(Response::builder().status(status).body(String::new()).unwrap())
//!         }
//!     })
//! };
//! let svc = ServiceBuilder::new().layer(RetryLayer::new()).service(upstream);
//! let res = svc.oneshot(Request::new(ReplayBody::from("{}"))).await?;
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.extensions().get::<RetryInfo>().unwrap().attempts, 2);
//! # Ok(()) }
//! ```
//!
//! # Readiness
//!
//! Always ready: every attempt, the first included, can wait for the inner
//! service's readiness in the response future (a retry has to, after its
//! delay), so the layer needs none before the call. `poll_ready` also asks
//! the inner service once, without waiting (*opportunistic readiness*):
//! when that said it was ready, the first attempt is sent
//! inside `call` on it, and the request never travels through the future;
//! otherwise the response future waits for it and calls it. Retries wait
//! for readiness on the service the future keeps (a clone, when the first
//! attempt was sent at the call).
//!
//! Nothing an inner service reserves when asked is left behind: the `call`
//! that follows `poll_ready` always sends on the instance that was asked —
//! at once when it said ready, else from the response future it moves
//! into — and the future calls each instance right after it is ready.

use std::time::Duration;

mod backoff;
mod budget;
pub mod future;
mod layer;
mod policy;
mod service;
mod template;

pub use backoff::{Backoff, Jitter};
pub use budget::RetryBudget;
pub use layer::{OverCap, RetryBuilder, RetryLayer};
pub use policy::{
    Attempted, DefaultPolicy, RetryPolicy, RetryReason, StopReason, retryable_status,
};
pub use service::Retry;

/// What the retry layer did, in the final response's extensions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryInfo {
    /// Attempts sent, the first included.
    pub attempts: u32,
    /// Time spent waiting between attempts.
    pub total_wait: Duration,
    /// Why the last retry was made.
    pub last_reason: Option<RetryReason>,
    /// Why the layer stopped on a failure (`None` on success).
    pub stopped: Option<StopReason>,
}
