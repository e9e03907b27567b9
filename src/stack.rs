//! The prebuilt stack, in the order the layers are designed to compose:
//!
//! ```text
//! BufferBody → Cache → Fallback → Retry → RateLimit → ConcurrencyLimit → transport
//! ```
//!
//! Why this order: a cache hit must cost nothing; fallback must see the
//! final failure of a model (after retries) and also the limiter's fast
//! `RateLimited` when waiting would blow the deadline; every retry attempt
//! passes admission again; the concurrency permit is innermost, held only
//! while a request is really on the wire. Each layer also works alone in a
//! `tower::ServiceBuilder`.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceExt, service_fn};
//! use tower_llm_resilience::rate::Limits;
//! use tower_llm_resilience::stack::Stack;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_resilience::BoxError> {
//! let transport = service_fn(|_req| async {
//!     Ok::<_, Infallible>(Response::new(String::from("{}")))
//! });
//! let svc = Stack::builder()
//!     .limits(Limits::per_minute(50, 20_000, 8_000)?)
//!     .concurrency(16)
//!     .service(transport);
//! let res = svc
//!     .oneshot(Request::post("/v1/messages").body(String::from(
//!         r#"{"model":"claude-haiku-4-5","max_tokens":64,"messages":[]}"#,
//!     ))?)
//!     .await?;
//! assert_eq!(res.status(), 200);
//! # Ok(()) }
//! ```

use crate::cache::{Cache, CacheLayer};
use crate::concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};
use crate::fallback::{Fallback, FallbackLayer};
use crate::rate::{Limits, RateLimit, RateLimitLayer};
use crate::request::{BufferBody, BufferBodyLayer, DEFAULT_BODY_LIMIT};
use crate::retry::{Retry, RetryLayer};
use tower_layer::Layer;

/// The service the stack builds around a transport `S`.
pub type StackService<S> = BufferBody<Cache<Fallback<Retry<RateLimit<ConcurrencyLimit<S>>>>>>;

/// The layers of the stack, each replaceable; unset ones take neutral
/// defaults (no limits, 1,024 in flight, default retry, an empty fallback
/// chain, a default cache).
#[derive(Debug, Clone)]
#[must_use]
pub struct Stack {
    body_limit: usize,
    cache: Option<CacheLayer>,
    fallback: Option<FallbackLayer>,
    retry: Option<RetryLayer>,
    rate: Option<RateLimitLayer>,
    concurrency: Option<ConcurrencyLimitLayer>,
}

impl Stack {
    /// A stack with every layer at its default.
    pub fn builder() -> Self {
        Stack {
            body_limit: DEFAULT_BODY_LIMIT,
            cache: None,
            fallback: None,
            retry: None,
            rate: None,
            concurrency: None,
        }
    }

    /// The largest request body buffered (default 32 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The rate limiter, configured with these limits for every group.
    pub fn limits(self, limits: Limits) -> Self {
        self.rate_limit(RateLimitLayer::new(limits))
    }

    /// The rate limiter.
    pub fn rate_limit(mut self, layer: RateLimitLayer) -> Self {
        self.rate = Some(layer);
        self
    }

    /// The concurrency cap.
    pub fn concurrency(self, max: usize) -> Self {
        self.concurrency_limit(ConcurrencyLimitLayer::new(max))
    }

    /// The concurrency limiter.
    pub fn concurrency_limit(mut self, layer: ConcurrencyLimitLayer) -> Self {
        self.concurrency = Some(layer);
        self
    }

    /// The retry layer.
    pub fn retry(mut self, layer: RetryLayer) -> Self {
        self.retry = Some(layer);
        self
    }

    /// The fallback chain.
    pub fn fallback(mut self, layer: FallbackLayer) -> Self {
        self.fallback = Some(layer);
        self
    }

    /// The cache.
    pub fn cache(mut self, layer: CacheLayer) -> Self {
        self.cache = Some(layer);
        self
    }

    /// Wraps `transport` in the stack.
    pub fn service<S>(self, transport: S) -> StackService<S> {
        let concurrency = self
            .concurrency
            .unwrap_or_else(|| ConcurrencyLimitLayer::new(1024));
        let rate = self
            .rate
            .unwrap_or_else(|| RateLimitLayer::new(Limits::unlimited()));
        let retry = self.retry.unwrap_or_default();
        let fallback = self.fallback.unwrap_or_else(|| FallbackLayer::new([]));
        let cache = self.cache.unwrap_or_default();
        let svc = concurrency.layer(transport);
        let svc = rate.layer(svc);
        let svc = retry.layer(svc);
        let svc = fallback.layer(svc);
        let svc = cache.layer(svc);
        BufferBodyLayer::new(self.body_limit).layer(svc)
    }
}
