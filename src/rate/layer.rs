use std::fmt;

use tower_layer::Layer;

use super::config::{Config, Limits, RateLimitBuilder};
use super::service::RateLimit;
use super::state::Limiter;
use super::stats::GroupStats;
use crate::queue::WaitQueue;
use crate::sync::Arc;

/// Applies token-bucket admission to every request of the services it
/// makes — see the [module docs](super).
///
/// Every service made from one layer value, and every clone of them, shares
/// one limiter.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("state", &self.limiter)
            .finish()
    }
}

impl RateLimitLayer {
    /// A limiter with these limits for every group and the default settings
    /// (learning: tighten only; no maximum wait; the default
    /// [`QueueConfig`](crate::queue::QueueConfig): 1,024 waiters, a priority
    /// level gained per 250 ms of waiting).
    pub fn new(limits: Limits) -> Self {
        RateLimitBuilder::default().limits(limits).finish()
    }

    /// A builder for every setting.
    pub fn builder() -> RateLimitBuilder {
        RateLimitBuilder::default()
    }

    pub(crate) fn from_config(config: Config, queue: WaitQueue) -> Self {
        RateLimitLayer {
            limiter: Arc::new(Limiter::new(config, queue)),
        }
    }

    /// The shared state (for unit tests).
    #[cfg(test)]
    pub(crate) fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// A snapshot of every limit group: limits, availability, what the
    /// provider said, queue depth, cooldown.
    pub fn stats(&self) -> Vec<GroupStats> {
        self.limiter.stats()
    }

    /// Counts of this limiter's Redis round trips and failures, when it
    /// shares its buckets through Redis
    /// ([`RateLimitBuilder::redis`](super::RateLimitBuilder::redis)).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn remote_stats(&self) -> Option<crate::redis::RemoteStats> {
        let config = &self.limiter.shared().config;
        config.remote.as_ref().map(|r| r.store.stats())
    }

    /// The wait queue this limiter waits in (to share it with a
    /// concurrency limit).
    pub fn queue(&self) -> &WaitQueue {
        &self.limiter.shared().queue
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit::from_limiter(inner, Arc::clone(&self.limiter))
    }
}
