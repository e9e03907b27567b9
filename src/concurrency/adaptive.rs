//! Adaptive mode: additive increase, multiplicative decrease (AIMD) of the
//! in-flight cap from the provider's overload signals.
//!
//! Why not latency-based (Vegas, gradient): an LLM call takes from a second
//! to minutes depending on the output it generates, so latency says little
//! about load. The provider says it outright instead — HTTP 429, 529 and
//! 503, or an `overloaded_error` / rate-limit `error` event in a stream
//! after HTTP 200 — and those are the only signals used.

use std::fmt;

use crate::error::InvalidConfig;

/// The adaptive mode's settings: the cap moves between `min` and `max`,
/// multiplied by the decrease factor on each overload signal and raised by
/// one after `cap` consecutive successes.
///
/// ```
/// use tower_llm_resilience::concurrency::{Adaptive, ConcurrencyLimitLayer};
///
/// # fn main() -> Result<(), tower_llm_resilience::error::InvalidConfig> {
/// // Start at 32 in flight; between 4 and 64; ×0.75 on overload.
/// let layer = ConcurrencyLimitLayer::builder(32)
///     .adaptive(Adaptive::new(4, 64).decrease_factor(0.75))
///     .build()?;
/// assert_eq!(layer.stats().cap, 32);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct Adaptive {
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) decrease: f64,
}

impl Adaptive {
    /// A cap between `min` and `max` (inclusive), decreased by the default
    /// factor 0.75 on overload.
    pub fn new(min: usize, max: usize) -> Self {
        Adaptive {
            min,
            max,
            decrease: 0.75,
        }
    }

    /// The factor (strictly between 0 and 1) the cap is multiplied by on an
    /// overload signal; the result is rounded down, and always at least one
    /// lower than before (unless at `min`).
    pub fn decrease_factor(mut self, factor: f64) -> Self {
        self.decrease = factor;
        self
    }

    /// The lowest cap.
    #[must_use]
    pub fn min(&self) -> usize {
        self.min
    }

    /// The highest cap.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn validate(&self, initial: usize) -> Result<(), InvalidConfig> {
        let invalid = |field, reason| Err(InvalidConfig::new(field, reason));
        if self.min == 0 {
            return invalid("adaptive.min", "must be at least 1");
        }
        if self.min > self.max {
            return invalid("adaptive.min", "must not exceed max");
        }
        if !(self.decrease > 0.0 && self.decrease < 1.0) {
            return invalid("adaptive.decrease_factor", "must be in (0, 1)");
        }
        if initial < self.min || initial > self.max {
            return invalid(
                "max",
                "the initial cap must lie within the adaptive min and max",
            );
        }
        Ok(())
    }
}

/// The AIMD state: pure arithmetic, locked by the caller.
#[derive(Clone, PartialEq)]
pub(crate) struct Aimd {
    pub(crate) config: Adaptive,
    pub(crate) cap: usize,
    /// Consecutive successes since the last change.
    streak: usize,
    /// Bumped on every decrease: permits taken before it carry an older
    /// epoch, and their overload signals are the same congestion event the
    /// decrease already answered (ten concurrent 429s lower the cap once,
    /// not ten times).
    pub(crate) epoch: u64,
}

impl fmt::Debug for Aimd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aimd")
            .field("cap", &self.cap)
            .field("streak", &self.streak)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl Aimd {
    pub(crate) fn new(mut config: Adaptive, initial: usize) -> Self {
        // The limiter counts permits in 32 bits.
        let ceiling = u32::MAX as usize;
        config.max = config.max.min(ceiling);
        config.min = config.min.min(config.max);
        Aimd {
            config,
            cap: initial.clamp(config.min, config.max),
            streak: 0,
            epoch: 0,
        }
    }

    /// An overload signal from a request admitted in `epoch`; true if the
    /// cap changed.
    pub(crate) fn overload(&mut self, epoch: u64) -> bool {
        self.streak = 0;
        if epoch != self.epoch {
            return false;
        }
        let scaled = (self.cap as f64 * self.config.decrease).floor() as usize;
        let lower = scaled.min(self.cap.saturating_sub(1)).max(self.config.min);
        self.epoch = self.epoch.wrapping_add(1);
        let changed = lower != self.cap;
        self.cap = lower;
        changed
    }

    /// A success; true if the cap rose.
    pub(crate) fn success(&mut self) -> bool {
        self.streak += 1;
        if self.streak >= self.cap {
            self.streak = 0;
            if self.cap < self.config.max {
                self.cap += 1;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
