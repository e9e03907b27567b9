//! Ready HTTP clients for the stack, taking [`ReplayBody`] requests and
//! answering [`ResponseBody`] responses, so the layers above need no
//! adapters:
//!
//! - [`HyperClient`] (feature `hyper-client`): hyper-util's pooled client,
//!   HTTP/1 and HTTP/2, rustls with webpki roots for `https`;
//! - [`ReqwestClient`] (feature `reqwest`): a `reqwest::Client` you may
//!   already have configured (proxies, timeouts, roots), as a tower
//!   `Service`; streaming responses stream through it.
//!
//! Any other transport works as well — a `Service<http::Request<ReplayBody>>`
//! whose response body is an `http_body::Body<Data = Bytes>` — wrapped with
//! [`ResponseBody::from_response`].
//!
//! ```no_run
//! use http::Request;
//! use tower::ServiceExt;
//! # #[cfg(feature = "hyper-client")]
//! use tower_llm_resilience::client::HyperClient;
//! use tower_llm_resilience::request::ReplayBody;
//!
//! # #[cfg(feature = "hyper-client")]
//! # async fn run() -> Result<(), tower_llm_resilience::BoxError> {
//! let client = HyperClient::new();
//! let req = Request::post("https://api.anthropic.com/v1/messages")
//!     .header("x-api-key", std::env::var("ANTHROPIC_API_KEY")?)
//!     .header("anthropic-version", "2023-06-01")
//!     .header("content-type", "application/json")
//!     .body(ReplayBody::from(r#"{"model":"claude-haiku-4-5","max_tokens":64,
//!         "messages":[{"role":"user","content":"Hi"}]}"#))?;
//! let res = client.oneshot(req).await?;
//! println!("{}", res.status());
//! # Ok(()) }
//! ```
//!
//! [`ReplayBody`]: crate::request::ReplayBody
//! [`ResponseBody`]: crate::response::ResponseBody
//! [`ResponseBody::from_response`]: crate::response::ResponseBody::from_response

#[cfg(feature = "hyper-client")]
mod hyper;
#[cfg(feature = "reqwest")]
mod reqwest;

#[cfg(feature = "hyper-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper-client")))]
pub use self::hyper::{HttpsClient, HyperClient, ResponseFuture};
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use self::reqwest::{ReqwestClient, ReqwestFuture};
