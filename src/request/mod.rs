//! The request side: metadata parsed once, a replayable body, and the
//! bounded buffering layer that produces both.
//!
//! Every layer of the stack needs a few facts about a request — which API it
//! speaks, the model, `max_tokens`, whether it streams, roughly how many input
//! tokens it carries — and retry, fallback and cache need its body more than
//! once. [`BufferBodyLayer`] reads any [`http_body::Body`] into a
//! [`ReplayBody`] (refusing bodies over a limit with
//! [`BodyTooLarge`](crate::error::BodyTooLarge) before
//! buffering past it), parses the JSON once into a [`RequestMeta`], and
//! keeps it as an `Arc<RequestMeta>` with the body's bytes, where every
//! layer below reads it with [`RequestMeta::of`].
//!
//! Bodies that are not JSON, or not a known API's JSON, pass through
//! untouched: their metadata says so ([`RequestMeta::is_parsed`]), and layers
//! that need token counts then count the request alone.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_llm_resilience::request::{BufferBodyLayer, ReplayBody, RequestMeta};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_resilience::BoxError> {
//! let svc = ServiceBuilder::new()
//!     .layer(BufferBodyLayer::new(1 << 20))
//!     .service(service_fn(|req: Request<ReplayBody>| async move {
//!         let meta = RequestMeta::of(&req).expect("inserted by the layer");
//!         assert_eq!(meta.model(), Some("claude-sonnet-4-5"));
//!         assert_eq!(meta.max_tokens(), Some(1024));
//!         Ok::<_, Infallible>(Response::new(()))
//!     }));
//!
//! let req = Request::post("https://api.anthropic.com/v1/messages")
//!     .header("content-type", "application/json")
//!     .body(String::from(
//!         r#"{"model":"claude-sonnet-4-5","max_tokens":1024,
//!             "messages":[{"role":"user","content":"Hello"}]}"#,
//!     ))?;
//! svc.oneshot(req).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `meta.rs`: [`RequestMeta`], parsed by serde or, first, by the
//!   single-pass scanner of `scan/`;
//! - `replay.rs`: [`ReplayBody`] and [`replay_request`];
//! - `key.rs`: [`KeyId`] and [`KeyIdentity`] (`sip.rs`, the keyed hash);
//!   `deadline.rs`: [`Deadline`];
//! - `buffer/`: the buffering middleware, [`BufferBodyLayer`] and
//!   [`BufferBody`].

mod buffer;
mod deadline;
mod key;
mod meta;
mod model;
mod replay;
mod scan;
mod sip;

pub use buffer::{BufferBody, BufferBodyLayer, DEFAULT_BODY_LIMIT, future};
pub use deadline::Deadline;
#[cfg(feature = "cache")]
pub(crate) use key::without_query_keys;
pub use key::{CREDENTIAL_HEADERS, KeyId, KeyIdentity};
pub use meta::RequestMeta;
pub use model::MAX_MODEL_NAME;
#[cfg(any(feature = "rate", feature = "fallback", feature = "budget"))]
pub(crate) use model::bounded_model;
pub use replay::{ReplayBody, replay_request};
