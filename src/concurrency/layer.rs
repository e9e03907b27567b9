use std::fmt;
use std::time::Duration;

use http::HeaderName;
use tower_layer::Layer;

use super::adaptive::{Adaptive, Aimd};
use super::service::ConcurrencyLimit;
use super::state::{ConcurrencyStats, Shared};
use crate::error::InvalidConfig;
use crate::queue::{QueueConfig, WaitQueue};
use crate::sync::Arc;

/// Caps the requests in flight across every service it makes — see the
/// [module docs](super).
///
/// Every service made from one layer value, and every clone of either,
/// shares one cap (tower's `ConcurrencyLimitLayer` gives each service it
/// makes a semaphore of its own).
#[derive(Clone)]
pub struct ConcurrencyLimitLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for ConcurrencyLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("state", &self.shared)
            .finish()
    }
}

impl ConcurrencyLimitLayer {
    /// At most `max` requests in flight, with the default settings (a queue
    /// of its own with 1,024 places, no maximum wait, priorities from the
    /// `x-llm-priority` header).
    ///
    /// # Panics
    ///
    /// If `max` is zero (no request could ever be sent); use
    /// [`builder`](Self::builder) to get an error instead.
    pub fn new(max: usize) -> Self {
        assert!(max > 0, "a concurrency limit of zero admits nothing");
        ConcurrencyLimitBuilder::new(max).finish()
    }

    /// A builder for every setting, with `max` requests in flight (the
    /// starting cap in adaptive mode). Caps above 2³² − 1 count as 2³² − 1.
    pub fn builder(max: usize) -> ConcurrencyLimitBuilder {
        ConcurrencyLimitBuilder::new(max)
    }

    /// A snapshot: cap, in flight, peak, queued.
    #[must_use]
    pub fn stats(&self) -> ConcurrencyStats {
        self.shared.stats()
    }

    /// The wait queue this limiter waits in.
    #[must_use]
    pub fn queue(&self) -> &WaitQueue {
        &self.shared.queue
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit::from_shared(inner, Arc::clone(&self.shared))
    }
}

/// Builds a [`ConcurrencyLimitLayer`].
#[must_use]
pub struct ConcurrencyLimitBuilder {
    max: usize,
    queue: QueueConfig,
    shared_queue: Option<WaitQueue>,
    max_wait: Option<Duration>,
    priority_header: Option<HeaderName>,
    adaptive: Option<Adaptive>,
}

impl fmt::Debug for ConcurrencyLimitBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitBuilder")
            .field("max", &self.max)
            .field("queue", &self.queue)
            .field("shared_queue", &self.shared_queue.is_some())
            .field("max_wait", &self.max_wait)
            .field("priority_header", &self.priority_header)
            .field("adaptive", &self.adaptive)
            .finish()
    }
}

impl ConcurrencyLimitBuilder {
    fn new(max: usize) -> Self {
        ConcurrencyLimitBuilder {
            max,
            queue: QueueConfig::default(),
            shared_queue: None,
            max_wait: None,
            priority_header: Some(HeaderName::from_static("x-llm-priority")),
            adaptive: None,
        }
    }

    /// The bound and aging of the limiter's own wait queue (default 1,024
    /// waiters, 250 ms per priority level). Ignored with
    /// [`shared_queue`](Self::shared_queue).
    pub fn queue(mut self, config: QueueConfig) -> Self {
        self.queue = config;
        self
    }

    /// Waits in this queue instead of one of its own — typically the rate
    /// limiter's ([`RateLimitLayer::queue`](crate::rate::RateLimitLayer::queue)),
    /// so that one bound and one priority order cover both. The limiter
    /// waits under a key of its own, which never meets a rate-limit group's.
    pub fn shared_queue(mut self, queue: WaitQueue) -> Self {
        self.shared_queue = Some(queue);
        self
    }

    /// The longest a request waits for a permit; past it,
    /// [`QueueTimeout`](crate::error::QueueTimeout). Default: no limit but
    /// the request's [`Deadline`](crate::request::Deadline).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The request header that gives a priority (0–255, higher first) when
    /// no [`Priority`](crate::queue::Priority) extension is present; default
    /// `x-llm-priority`, `None` to ignore headers.
    pub fn priority_header(mut self, name: Option<HeaderName>) -> Self {
        self.priority_header = name;
        self
    }

    /// Adaptive mode: the cap starts at the builder's `max` and moves
    /// within `adaptive`'s bounds by AIMD on overload signals (see
    /// [`Adaptive`]).
    pub fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] for a cap of zero, a maximum wait of zero or over a
    /// year, or adaptive bounds that are empty, do not contain the starting
    /// cap, or a decrease factor outside (0, 1).
    pub fn build(self) -> Result<ConcurrencyLimitLayer, InvalidConfig> {
        let invalid = |field, reason| Err(InvalidConfig::new(field, reason));
        if self.max == 0 {
            return invalid("max", "the concurrency limit must be at least 1");
        }
        if let Some(wait) = self.max_wait
            && (wait.is_zero() || wait > Duration::from_secs(365 * 24 * 3600))
        {
            return invalid("max_wait", "must be positive and under a year");
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.validate(self.max)?;
        }
        Ok(self.finish())
    }

    fn finish(self) -> ConcurrencyLimitLayer {
        let queue = self
            .shared_queue
            .unwrap_or_else(|| WaitQueue::new(self.queue));
        let aimd = self.adaptive.map(|a| Aimd::new(a, self.max));
        ConcurrencyLimitLayer {
            shared: Arc::new(Shared::new(
                self.max,
                queue,
                self.max_wait,
                self.priority_header,
                aimd,
            )),
        }
    }
}
