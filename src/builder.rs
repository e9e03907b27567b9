//! [`ServiceBuilderExt`]: this crate's layers as methods of tower's
//! [`ServiceBuilder`] (the `tower` feature).
//!
//! Each method adds one layer made with its `new`; a layer that needs more
//! settings is built with its builder and added with
//! [`ServiceBuilder::layer`]. The names carry `llm_` where tower's own
//! `ServiceBuilder` has a method of that name (`rate_limit`,
//! `concurrency_limit`, `retry`), which an inherent method would shadow.
//!
//! ```
//! use std::convert::Infallible;
//! use tower::ServiceBuilder;
//! use tower_llm_resilience::{Limit, Limits, ServiceBuilderExt};
//!
//! # fn transport() -> impl tower::Service<http::Request<tower_llm_resilience::ReplayBody>,
//! #     Response = http::Response<tower_llm_resilience::ResponseBody>, Error = Infallible> + Clone + Send + 'static {
//! #     tower::service_fn(|_req| async {
//! #         Ok::<_, Infallible>(http::Response::new(tower_llm_resilience::ResponseBody::empty()))
//! #     })
//! # }
//! let svc = ServiceBuilder::new()
//!     .buffer_llm_body(1 << 20)
//!     .llm_retry()
//!     .llm_rate_limit(Limits::unlimited().requests(Limit::per_minute(50)?))
//!     .llm_concurrency_limit(16)
//!     .service(transport());
//! # drop(svc);
//! # Ok::<(), tower_llm_resilience::error::InvalidConfig>(())
//! ```

use tower::ServiceBuilder;
use tower::layer::util::Stack;

use crate::request::BufferBodyLayer;

mod sealed {
    pub trait Sealed<T> {}
    impl<T> Sealed<T> for tower::ServiceBuilder<T> {}
}

/// This crate's layers on tower's [`ServiceBuilder`]; sealed (implemented
/// only for `ServiceBuilder`).
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// Buffers request bodies up to `limit` bytes and reads their metadata
    /// ([`BufferBodyLayer::new`]): the outermost of this crate's layers.
    fn buffer_llm_body(self, limit: usize) -> ServiceBuilder<Stack<BufferBodyLayer, L>>;

    /// The response cache, at its defaults ([`CacheLayer::new`](crate::CacheLayer::new)).
    #[cfg(feature = "cache")]
    fn llm_cache(self) -> ServiceBuilder<Stack<crate::CacheLayer, L>>;

    /// Model fallback over `targets`, in order
    /// ([`FallbackLayer::new`](crate::FallbackLayer::new)).
    #[cfg(feature = "fallback")]
    fn llm_fallback(
        self,
        targets: impl IntoIterator<Item = crate::Target>,
    ) -> ServiceBuilder<Stack<crate::FallbackLayer, L>>;

    /// Retry-after-aware retry, at its defaults
    /// ([`RetryLayer::new`](crate::RetryLayer::new)).
    #[cfg(feature = "retry")]
    fn llm_retry(self) -> ServiceBuilder<Stack<crate::RetryLayer, L>>;

    /// Token-bucket admission with `limits` for every group
    /// ([`RateLimitLayer::new`](crate::RateLimitLayer::new)).
    #[cfg(feature = "rate")]
    fn llm_rate_limit(
        self,
        limits: crate::Limits,
    ) -> ServiceBuilder<Stack<crate::RateLimitLayer, L>>;

    /// At most `max` requests in flight, each holding its permit until its
    /// response body ends
    /// ([`ConcurrencyLimitLayer::new`](crate::ConcurrencyLimitLayer::new)).
    #[cfg(feature = "concurrency")]
    fn llm_concurrency_limit(
        self,
        max: usize,
    ) -> ServiceBuilder<Stack<crate::ConcurrencyLimitLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn buffer_llm_body(self, limit: usize) -> ServiceBuilder<Stack<BufferBodyLayer, L>> {
        self.layer(BufferBodyLayer::new(limit))
    }

    #[cfg(feature = "cache")]
    fn llm_cache(self) -> ServiceBuilder<Stack<crate::CacheLayer, L>> {
        self.layer(crate::CacheLayer::new())
    }

    #[cfg(feature = "fallback")]
    fn llm_fallback(
        self,
        targets: impl IntoIterator<Item = crate::Target>,
    ) -> ServiceBuilder<Stack<crate::FallbackLayer, L>> {
        self.layer(crate::FallbackLayer::new(targets))
    }

    #[cfg(feature = "retry")]
    fn llm_retry(self) -> ServiceBuilder<Stack<crate::RetryLayer, L>> {
        self.layer(crate::RetryLayer::new())
    }

    #[cfg(feature = "rate")]
    fn llm_rate_limit(
        self,
        limits: crate::Limits,
    ) -> ServiceBuilder<Stack<crate::RateLimitLayer, L>> {
        self.layer(crate::RateLimitLayer::new(limits))
    }

    #[cfg(feature = "concurrency")]
    fn llm_concurrency_limit(
        self,
        max: usize,
    ) -> ServiceBuilder<Stack<crate::ConcurrencyLimitLayer, L>> {
        self.layer(crate::ConcurrencyLimitLayer::new(max))
    }
}
