//! Computed backoff, for failures that carry no server advice.

use std::time::Duration;

use crate::error::InvalidConfig;

/// How randomness spreads computed delays (AWS's "Exponential Backoff and
/// Jitter" names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Jitter {
    /// `d = min(cap, base · factorⁿ)`, no randomness.
    None,
    /// The default: uniform in `[0, d]` — the most spread, least total work.
    #[default]
    Full,
    /// Uniform in `[d/2, d]`: never very short.
    Equal,
    /// Uniform in `[base, 3 · previous]`, capped: each delay depends on the
    /// last.
    Decorrelated,
}

/// Exponential backoff: base, factor, cap and jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    factor: f64,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    /// 500 ms doubling up to 8 s with full jitter (the official SDKs'
    /// schedule, with full rather than 25 % jitter).
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            factor: 2.0,
            cap: Duration::from_secs(8),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// `base · factorⁿ` capped at `cap`, spread by `jitter`.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] if `factor` is not a finite number ≥ 1, `base` is
    /// zero or `cap` is below `base` or above a day.
    pub fn new(
        base: Duration,
        factor: f64,
        cap: Duration,
        jitter: Jitter,
    ) -> Result<Self, InvalidConfig> {
        let invalid = |field, reason| Err(InvalidConfig::new(field, reason));
        if !(factor.is_finite() && factor >= 1.0) {
            return invalid("backoff.factor", "must be a finite number >= 1");
        }
        if base.is_zero() {
            return invalid("backoff.base", "must be positive");
        }
        if cap < base || cap > Duration::from_secs(86_400) {
            return invalid("backoff.cap", "must be between base and one day");
        }
        Ok(Backoff {
            base,
            factor,
            cap,
            jitter,
        })
    }

    /// The cap: no computed delay is longer.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The delay before retry number `retry` (0 for the first retry), given
    /// the previous delay (for decorrelated jitter) and a uniform random
    /// number in `[0, 1)`. Always within `[0, cap]`, for any `retry`.
    pub fn delay(&self, retry: u32, previous: Duration, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let cap = self.cap.as_secs_f64();
        let base = self.base.as_secs_f64();
        // factor ≥ 1 and finite: powi may overflow to +∞, which `min` caps.
        let exp = (base * self.factor.powi(retry.min(i32::MAX as u32) as i32)).min(cap);
        let secs = match self.jitter {
            Jitter::None => exp,
            Jitter::Full => unit * exp,
            Jitter::Equal => exp / 2.0 + unit * exp / 2.0,
            Jitter::Decorrelated => {
                let prev = previous.as_secs_f64().max(base);
                let hi = (prev * 3.0).min(cap);
                base + unit * (hi - base).max(0.0)
            }
        };
        Duration::from_secs_f64(secs.clamp(0.0, cap))
    }
}

#[cfg(test)]
mod tests;
