//! Model-fallback degradation: when the model a request asked for is
//! exhausted, overloaded or too slow, re-issue it to the next model or
//! provider of a chain — and tell the application exactly what happened.
//!
//! - **Chain** ([`Target`]): the request's own model first, then each
//!   target in order — another model on the same service
//!   ([`Target::model`], with an optional `max_tokens` cap and body field
//!   overrides), or another service with a request mapper
//!   ([`Target::service`]). [`Target::openai`] maps Anthropic Messages to
//!   OpenAI Chat Completions and the response back ([`openai`]), so
//!   "Claude exhausted → OpenAI model" works out of the box.
//! - **Triggers** ([`FallbackPolicy`], default [`DefaultTriggers`]): a final
//!   429/529/503 from below (after retries), an exhausted quota, a stream
//!   that starts with an overload error, the limiter's fail-fast
//!   [`RateLimited`](crate::error::RateLimited) (so a request whose
//!   deadline cannot bear the wait degrades at once instead of queueing),
//!   timeouts, context-length errors. 4xx caused by the request never
//!   trigger.
//! - **Cooldown** per target, learned from triggers (`retry-after`, the
//!   limiter's wait, an exhausted quota): known-exhausted targets are
//!   skipped without sending; a target that is not ready never blocks the
//!   others.
//! - **Last resort**: a [degraded response](FallbackBuilder::degraded), or
//!   else the last failure as it is. (A stale cache entry is served by the
//!   cache layer above, which wraps this one.)
//! - **Streams** fall back only before their first byte reached the caller:
//!   the layer decides on the status and the stream's first event, then
//!   hands the response over whole.
//! - **Every wait is bounded**: each target's call by the request's
//!   [`Deadline`](crate::request::Deadline), each read ahead (an error
//!   body, a stream's start) by the deadline or 30 s, whichever is first.
//!   At the deadline the chain stops with the last failure (or
//!   [`DeadlineElapsed`](crate::error::DeadlineElapsed)); an error body
//!   that stalls is given up — its bytes kept, then
//!   [`BodyStalled`](crate::error::BodyStalled) — and its upstream body
//!   dropped, releasing what it holds below.
//! - **Marking**: [`FallbackInfo`] in the response extensions and the
//!   headers `x-llm-model-used` (the target that answered — the last one
//!   tried when all failed), `x-llm-original-model` (when they differ),
//!   `x-llm-fallback-hops` and `x-llm-degraded`.
//! - **Nothing to fall back to** (no target, no degraded response, as in
//!   the prebuilt [`Stack`](crate::stack::Stack)'s default): the layer
//!   passes requests and answers through, unmarked, at the cost of one
//!   conversion of the response.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_llm_resilience::fallback::{FallbackInfo, FallbackLayer, Target};
//! use tower_llm_resilience::request::ReplayBody;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_resilience::BoxError> {
//! // The big model is overloaded; the small one answers.
//! let upstream = service_fn(|req: Request<ReplayBody>| async move {
//!     let body = String::from_utf8_lossy(req.body().as_bytes()).into_owned();
//!     let status = if body.contains("claude-opus") { 529 } else { 200 };
//!     Ok::<_, Infallible>(Response::builder().status(status).body(String::new()).unwrap())
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(FallbackLayer::new([Target::model("claude-haiku-4-5").max_tokens(1024)]))
//!     .service(upstream);
//! let req = Request::post("/v1/messages").body(ReplayBody::from(
//!     r#"{"model":"claude-opus-4-1","max_tokens":4096,"messages":[{"role":"user","content":"Hi"}]}"#,
//! ))?;
//! let res = svc.oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["x-llm-model-used"], "claude-haiku-4-5");
//! let info = res.extensions().get::<FallbackInfo>().unwrap();
//! assert_eq!(info.hops.len(), 1);
//! # Ok(()) }
//! ```
//!
//! # Readiness
//!
//! With nothing to fall back to, the layer is a passthrough: `poll_ready`
//! is the inner service's readiness and `call` is its call. With targets it
//! is always ready and does not ask the inner service: a target that is not
//! ready must never block the others (a service target is another service
//! altogether), so each attempt waits for its own service in the response
//! future, which calls it as soon as it is ready. Nothing is reserved below
//! before the response future runs, and none of its waits for readiness is
//! left without a call.

use std::sync::Arc;

mod chain;
mod cooling;
pub mod future;
mod layer;
pub mod openai;
mod service;

pub use chain::{
    DefaultTriggers, Failure, FallbackPolicy, RequestMapper, ResponseMapper, Target, Trigger,
};
pub use future::{HOPS, MODEL_USED, ORIGINAL_MODEL};
pub use layer::{FallbackBuilder, FallbackLayer};
pub use service::Fallback;

/// What the fallback layer did, in the response's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FallbackInfo {
    /// The model the request asked for.
    pub original_model: Option<Arc<str>>,
    /// The model (or named service) that answered; `None` when degraded.
    pub model_used: Option<Arc<str>>,
    /// The targets left behind, in order, and why.
    pub hops: Vec<Hop>,
    /// Whether the answer is the configured degraded response.
    pub degraded: bool,
}

/// One target left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The target's name.
    pub target: Arc<str>,
    /// Why it was left.
    pub trigger: Trigger,
}
