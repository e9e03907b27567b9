//! A shared in-flight cap whose permit lives until the response **body**
//! ends — so a streaming response counts while it streams.
//!
//! [`ConcurrencyLimitLayer`] is the innermost layer of the stack, so the
//! permit is held only while a request is really on the wire.
//! Every service made from one layer value, and every clone of them, shares
//! one cap; tower's `ConcurrencyLimit` keeps one per service instance and
//! releases its permit when the response *head* arrives, which is when an
//! LLM stream has only begun.
//!
//! - **Admission at the call.** `poll_ready` is the inner service's
//!   readiness. A free permit with no one waiting is taken in `call`, which
//!   sends at once without touching the queue (the future is then only the
//!   inner one and the permit); otherwise the response future waits for a
//!   permit with a fresh clone of the inner service and then drives it
//!   (`poll_ready` → `call`), as the rate limiter does.
//! - **Waiting** goes through a [`WaitQueue`](crate::queue::WaitQueue) under
//!   a key of this limiter's own — its own queue, or the rate limiter's
//!   ([`shared_queue`](ConcurrencyLimitBuilder::shared_queue)) so one bound
//!   and one priority order cover both. Priority from the
//!   [`Priority`](crate::queue::Priority) extension, else the
//!   `x-llm-priority` header (0–255), else normal. A full queue answers
//!   [`QueueFull`](crate::queue::QueueFull) at once; the maximum wait or
//!   the request's [`Deadline`](crate::request::Deadline) ends a wait with
//!   [`QueueTimeout`](crate::error::QueueTimeout).
//! - **Release.** The permit moves into the [`ResponseBody`] as one of its
//!   [`BodyObserver`](crate::response::BodyObserver)s: released when the body
//!   ends, fails or is dropped; at once if the inner service fails or the
//!   response future is dropped. Each release wakes the head of the queue.
//! - **Adaptive mode** ([`Adaptive`]): AIMD on the provider's overload
//!   signals — 429, 503, 529, and an SSE `error` event of kind overloaded or
//!   rate-limited — never on latency. Lowering the cap revokes no permit;
//!   it admits fewer until the count in flight falls below.
//!
//! [`ResponseBody`]: crate::response::ResponseBody
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{Layer, ServiceExt, service_fn};
//! use tower_llm_resilience::concurrency::ConcurrencyLimitLayer;
//! use tower_llm_resilience::queue::Priority;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_resilience::BoxError> {
//! let limit = ConcurrencyLimitLayer::builder(2)
//!     .max_wait(Duration::from_secs(30))
//!     .build()?;
//! let client = service_fn(|_req: Request<String>| async {
//!     Ok::<_, Infallible>(Response::new(String::from("data: …\n\n")))
//! });
//! // Two services from one layer value: one cap between them.
//! let a = limit.layer(client.clone());
//! let b = limit.layer(client);
//!
//! let res = a.oneshot(Request::new(String::new())).await?;
//! assert_eq!(limit.stats().in_flight, 1, "the body holds the permit");
//!
//! let mut urgent = Request::new(String::new());
//! urgent.extensions_mut().insert(Priority::HIGH);
//! let other = b.oneshot(urgent).await?;
//! assert_eq!(limit.stats().in_flight, 2);
//!
//! res.into_body().collect().await?; // the body ends: its permit is back
//! drop(other); // a dropped body gives its permit back too
//! assert_eq!(limit.stats().in_flight, 0);
//! assert_eq!(limit.stats().peak, 2);
//! # Ok(()) }
//! ```
//!
//! # Readiness
//!
//! `poll_ready` is the inner service's readiness, not a permit's: a request
//! waits for its permit in the queue, where its priority counts, and only
//! the request carries that. When a permit is free and nobody waits, `call`
//! takes it and sends on the ready inner service at once. Otherwise the
//! response future waits its turn with a fresh clone of the inner service
//! and, once it has a permit, drives it (`poll_ready` → `call`); the
//! instance the caller made ready is let go at the call, so whatever it
//! reserved when asked is not held by a waiting request.

mod adaptive;
pub mod future;
mod layer;
mod service;
mod state;

pub use adaptive::Adaptive;
pub use layer::{ConcurrencyLimitBuilder, ConcurrencyLimitLayer};
pub use service::ConcurrencyLimit;
pub use state::ConcurrencyStats;
