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
//! # Readiness
//!
//! Always ready, as its first layer, `BufferBody`, is. Readiness is asked
//! down the stack at the call, without waiting, for a request that can be
//! sent at once: a buffered body asks the cache, a request the cache passes
//! asks the fallback layer (a passthrough without targets), retry asks the
//! limiters, which forward the transport's readiness. When every layer can
//! act at once the request reaches the transport inside `call`; otherwise
//! it waits in the response future of the first layer that cannot. A
//! transport that reserves capacity in `poll_ready` (tower's
//! `ConcurrencyLimit`, not the crate's `HyperClient`) has it taken only by
//! a request that then calls it: not by a cache hit, a body still being
//! read, or a request waiting for admission.
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

use crate::cache::{Cache, CacheLayer, MemoryStore};
use crate::concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};
use crate::fallback::{Fallback, FallbackLayer};
use crate::rate::{Limits, RateLimit, RateLimitLayer};
use crate::request::{BufferBody, BufferBodyLayer, DEFAULT_BODY_LIMIT};
use crate::retry::{Retry, RetryLayer};
use tower_layer::Layer;

/// The service the stack builds around a transport `S`, its cache in
/// store `St`.
pub type StackService<S, St = MemoryStore> =
    BufferBody<Cache<Fallback<Retry<RateLimit<ConcurrencyLimit<S>>>>, St>>;

/// The layers of the stack, each replaceable; unset ones take neutral
/// defaults (no limits, 1,024 in flight, default retry, an empty fallback
/// chain, a default cache).
///
/// The defaults are made by [`builder`](Self::builder), so every service
/// made from one `Stack` value (by [`service`](Self::service) or as a
/// [`Layer`]), and from its clones, shares one state per layer.
///
/// `St` is the cache's store: in memory unless [`cache`](Self::cache) is
/// given a layer with another (a store shared by many processes).
#[derive(Debug, Clone)]
#[must_use]
pub struct Stack<St = MemoryStore> {
    body_limit: usize,
    cache: CacheLayer<St>,
    fallback: FallbackLayer,
    retry: RetryLayer,
    rate: RateLimitLayer,
    concurrency: ConcurrencyLimitLayer,
}

impl Stack {
    /// A stack with every layer at its default.
    pub fn builder() -> Self {
        Stack {
            body_limit: DEFAULT_BODY_LIMIT,
            cache: CacheLayer::default(),
            fallback: FallbackLayer::new([]),
            retry: RetryLayer::default(),
            rate: RateLimitLayer::new(Limits::unlimited()),
            concurrency: ConcurrencyLimitLayer::new(1024),
        }
    }
}

#[cfg(feature = "config")]
impl Stack {
    /// The whole stack as `config` describes it, secrets read from the
    /// process environment (the variables the file names).
    ///
    /// ```
    /// use tower_llm_resilience::Stack;
    /// use tower_llm_resilience::config::Config;
    /// let config = Config::from_toml_str(r#"
    ///     [rate]
    ///     preset = "anthropic-tier-1"
    ///     [concurrency]
    ///     max = 8
    /// "#)?;
    /// let stack = Stack::from_config(&config)?;
    /// # let _ = stack;
    /// # Ok::<(), tower_llm_resilience::config::ConfigError>(())
    /// ```
    ///
    /// A `[redis]` section needs a tokio runtime (its connection manager
    /// runs a task). The budget is not part of the stack: see
    /// [`Config::budget_layer`](crate::config::Config::budget_layer).
    ///
    /// # Errors
    ///
    /// [`ConfigError`](crate::config::ConfigError) naming the field at
    /// fault, or the variable that is not set.
    #[cfg_attr(docsrs, doc(cfg(feature = "config")))]
    pub fn from_config(config: &crate::config::Config) -> Result<Self, crate::config::ConfigError> {
        Self::from_config_with_env(config, crate::config::process_env)
    }

    /// [`from_config`](Self::from_config), reading each variable through
    /// `lookup` instead of the process environment (`None`: not set) —
    /// for tests, or secrets from a vault.
    ///
    /// # Errors
    ///
    /// As [`from_config`](Self::from_config).
    #[cfg_attr(docsrs, doc(cfg(feature = "config")))]
    pub fn from_config_with_env(
        config: &crate::config::Config,
        mut lookup: impl FnMut(&str) -> Option<String>,
    ) -> Result<Self, crate::config::ConfigError> {
        let mut env = crate::config::Env::new(&mut lookup);
        config.stack(&mut env)
    }
}

#[cfg(all(feature = "config", feature = "redis"))]
impl Stack<crate::redis::RedisStore> {
    /// [`Stack::from_config`] with the cache's entries in Redis (the
    /// `[redis]` section's handle, shared by every process), whatever
    /// `cache.store` says. Needs a tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`Stack::from_config`]; without a `[redis]` section, one at
    /// `redis`.
    #[cfg_attr(docsrs, doc(cfg(all(feature = "config", feature = "redis"))))]
    pub fn from_config_redis_cache(
        config: &crate::config::Config,
    ) -> Result<Self, crate::config::ConfigError> {
        Self::from_config_redis_cache_with_env(config, crate::config::process_env)
    }

    /// [`from_config_redis_cache`](Self::from_config_redis_cache), reading
    /// each variable through `lookup`.
    ///
    /// # Errors
    ///
    /// As [`from_config_redis_cache`](Self::from_config_redis_cache).
    #[cfg_attr(docsrs, doc(cfg(all(feature = "config", feature = "redis"))))]
    pub fn from_config_redis_cache_with_env(
        config: &crate::config::Config,
        mut lookup: impl FnMut(&str) -> Option<String>,
    ) -> Result<Self, crate::config::ConfigError> {
        let mut env = crate::config::Env::new(&mut lookup);
        config.stack_redis_cache(&mut env)
    }
}

impl<St> Stack<St> {
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
        self.rate = layer;
        self
    }

    /// The concurrency cap.
    pub fn concurrency(self, max: usize) -> Self {
        self.concurrency_limit(ConcurrencyLimitLayer::new(max))
    }

    /// The concurrency limiter.
    pub fn concurrency_limit(mut self, layer: ConcurrencyLimitLayer) -> Self {
        self.concurrency = layer;
        self
    }

    /// The retry layer.
    pub fn retry(mut self, layer: RetryLayer) -> Self {
        self.retry = layer;
        self
    }

    /// The fallback chain.
    pub fn fallback(mut self, layer: FallbackLayer) -> Self {
        self.fallback = layer;
        self
    }

    /// The cache (and with it the store it keeps entries in).
    pub fn cache<St2>(self, layer: CacheLayer<St2>) -> Stack<St2> {
        Stack {
            body_limit: self.body_limit,
            cache: layer,
            fallback: self.fallback,
            retry: self.retry,
            rate: self.rate,
            concurrency: self.concurrency,
        }
    }

    /// Wraps `transport` in the stack. (`Stack` is also a [`Layer`], so it
    /// can sit inside a `tower::ServiceBuilder`.)
    pub fn service<S>(self, transport: S) -> StackService<S, St> {
        self.layer(transport)
    }
}

impl<S, St> Layer<S> for Stack<St> {
    type Service = StackService<S, St>;

    fn layer(&self, transport: S) -> Self::Service {
        let svc = self.concurrency.layer(transport);
        let svc = self.rate.layer(svc);
        let svc = self.retry.layer(svc);
        let svc = self.fallback.layer(svc);
        let svc = self.cache.layer(svc);
        BufferBodyLayer::new(self.body_limit).layer(svc)
    }
}

/// What the stack can tell: the limiters' state, reached through the
/// layers of the stack (as `tower`'s `get_ref` reaches one layer's inner
/// service).
impl<St> Stack<St> {
    /// The rate limiter every service of this stack shares: its
    /// [`stats`](RateLimitLayer::stats) are those of every group, for
    /// every service made from this stack.
    pub fn rate_limiter(&self) -> &RateLimitLayer {
        &self.rate
    }

    /// The concurrency limiter every service of this stack shares (its
    /// [`stats`](ConcurrencyLimitLayer::stats)).
    pub fn concurrency_limiter(&self) -> &ConcurrencyLimitLayer {
        &self.concurrency
    }
}

impl<S, St> StackService<S, St> {
    /// The stack's rate limiter, whose
    /// [`stats`](RateLimit::stats) snapshot every limit group (limits,
    /// availability, what the provider said, queue depth, cooldown).
    pub fn rate_limit(&self) -> &RateLimit<ConcurrencyLimit<S>> {
        self.get_ref().get_ref().get_ref().get_ref()
    }

    /// The stack's concurrency limiter (its
    /// [`stats`](ConcurrencyLimit::stats): cap, in flight, peak, queued).
    pub fn concurrency_limit(&self) -> &ConcurrencyLimit<S> {
        self.rate_limit().get_ref()
    }
}
