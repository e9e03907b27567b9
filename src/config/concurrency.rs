//! `[concurrency]`: the in-flight cap, fixed or adaptive.

use std::time::Duration;

use serde::Deserialize;

use super::duration::deserialize_opt as dur;
use super::rate::QueueSettings;
use super::{ConfigError, priority_header};
use crate::concurrency::{Adaptive, ConcurrencyLimitLayer};
use crate::rate::RateLimitLayer;

/// The cap when neither `max` nor `adaptive` is given, as the prebuilt
/// stack's.
const DEFAULT_MAX: usize = 1024;

/// `[concurrency]`: maps onto
/// [`ConcurrencyLimitBuilder`](crate::concurrency::ConcurrencyLimitBuilder).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConcurrencyConfig {
    /// The cap (default 1,024), or in adaptive mode the starting cap
    /// (default: `adaptive.min`, so the cap is earned).
    pub max: Option<usize>,
    /// The longest a request waits for a permit (default: only its
    /// deadline).
    #[serde(default, deserialize_with = "dur")]
    pub max_wait: Option<Duration>,
    /// This limiter's own wait queue (ignored with `shared_queue`).
    pub queue: Option<QueueSettings>,
    /// Wait in the rate limiter's queue, so one bound and one priority
    /// order cover both (default false).
    pub shared_queue: Option<bool>,
    /// The request header giving a priority (default `x-llm-priority`;
    /// `""` ignores headers).
    pub priority_header: Option<String>,
    /// AIMD on the provider's overload signals, within these bounds.
    pub adaptive: Option<AdaptiveConfig>,
}

/// Adaptive mode's bounds (see [`Adaptive`]).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdaptiveConfig {
    /// The lowest cap.
    pub min: usize,
    /// The highest cap.
    pub max: usize,
    /// The factor the cap is multiplied by on overload (default 0.75).
    pub decrease_factor: Option<f64>,
}

impl ConcurrencyConfig {
    pub(crate) fn build(
        &self,
        rate: &RateLimitLayer,
    ) -> Result<ConcurrencyLimitLayer, ConfigError> {
        let max = self
            .max
            .or(self.adaptive.map(|a| a.min.max(1)))
            .unwrap_or(DEFAULT_MAX);
        let mut b = ConcurrencyLimitLayer::builder(max);
        if let Some(w) = self.max_wait {
            b = b.max_wait(w);
        }
        if self.shared_queue == Some(true) {
            if self.queue.is_some() {
                return Err(ConfigError::invalid(
                    "concurrency.queue",
                    "a shared queue is the rate limiter's: set rate.queue instead",
                ));
            }
            b = b.shared_queue(rate.queue().clone());
        } else if let Some(q) = &self.queue {
            b = b.queue(q.build("concurrency.queue")?);
        }
        if let Some(h) = priority_header(
            "concurrency.priority_header",
            self.priority_header.as_deref(),
        )? {
            b = b.priority_header(h);
        }
        if let Some(a) = self.adaptive {
            let mut adaptive = Adaptive::new(a.min, a.max);
            if let Some(f) = a.decrease_factor {
                adaptive = adaptive.decrease_factor(f);
            }
            b = b.adaptive(adaptive);
        }
        b.build()
            .map_err(|e| ConfigError::from_builder("concurrency", e))
    }
}
