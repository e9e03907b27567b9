//! The response side: one body type for every layer, with completion hooks
//! and usage observation.
//!
//! [`ResponseBody`] is an upstream stream, a replay of stored chunks (cache)
//! or a synthesized body (degraded responses). Layers attach
//! [`BodyObserver`]s to it instead of wrapping it, so the stack never builds
//! `Response<A<B<C<D>>>>`:
//!
//! - the concurrency limit releases its permit when the body ends or is
//!   dropped (streams hold it while they stream);
//! - the rate limiter corrects its reservation from the real
//!   [`Usage`](crate::provider::Usage);
//! - the cache commits an entry only when a stream completed cleanly.
//!
//! While the caller reads the body, it reads the token usage on the way:
//! from the `usage` object of a JSON body, or from the SSE events of a stream
//! (Anthropic `message_start` + `message_delta`, OpenAI's final usage chunk,
//! OpenAI Responses' `response.completed`). Each observer is told exactly
//! once how the body ended — see [`Outcome`]: a stream that ends without its
//! terminal event (`message_stop`, `data: [DONE]`) is
//! [`Truncated`](Outcome::Truncated), never complete.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::BodyExt;
//! use tower_llm_resilience::response::{Outcome, ResponseBody};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let sse = "event: message_start\n\
//!            data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
//!            event: message_delta\n\
//!            data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
//!            event: message_stop\n\
//!            data: {\"type\":\"message_stop\"}\n\n";
//! let (tx, rx) = std::sync::mpsc::channel();
//! let mut body = ResponseBody::full_sse(Bytes::from(sse));
//! body.on_complete(move |c| tx.send((c.outcome, c.usage)).unwrap());
//! body.collect().await.unwrap();
//! let (outcome, usage) = rx.recv().unwrap();
//! assert_eq!(outcome, Outcome::Complete);
//! assert_eq!(usage.map(|u| (u.input_tokens, u.output_tokens)), Some((25, 15)));
//! # }
//! ```
//!
//! # Layout
//!
//! - `body.rs`: [`ResponseBody`] (upstream, replayed or given bytes), the
//!   [`Format`] it is observed as, its `Body` and `Drop` impls;
//! - `observer.rs`: [`Outcome`], [`Completion`], [`BodyObserver`], and the
//!   list of observers a body holds;
//! - `peek.rs`: read-ahead ([`poll_peek`](ResponseBody::poll_peek),
//!   [`poll_stream_start`](ResponseBody::poll_stream_start), [`StreamStart`]),
//!   bounded in time by the layer's `look_until`, and a stalled body given up
//!   (read bytes kept, then [`BodyStalled`](crate::error::BodyStalled));
//! - `sse.rs`: the incremental SSE reader (usage, terminal and `error` events);
//! - `json.rs`: a JSON body's `usage`, read at its end, and the JSON helpers
//!   the SSE reader uses.

mod body;
mod json;
mod observer;
mod peek;
mod sse;
#[cfg(test)]
mod tests;

pub use body::{Format, ResponseBody};
pub use observer::{BodyObserver, Completion, Outcome};
pub use peek::StreamStart;
#[cfg(any(feature = "retry", feature = "fallback"))]
pub(crate) use peek::look_until;

/// The most bytes of a JSON response body kept to read its `usage` at the
/// end; a larger body is passed through with its usage unknown.
pub const JSON_USAGE_LIMIT: usize = 4 * 1024 * 1024;
/// The longest SSE line or event kept while looking for usage and terminal
/// events; past it the stream still passes through, but is no longer
/// observed (its outcome becomes [`Outcome::Unobserved`]).
pub const SSE_EVENT_LIMIT: usize = 1024 * 1024;
/// The longest SSE event name kept.
const SSE_NAME_LIMIT: usize = 64;
