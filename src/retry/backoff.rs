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
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exponential_schedule_without_jitter() {
        let b = Backoff::new(
            Duration::from_millis(100),
            2.0,
            Duration::from_secs(1),
            Jitter::None,
        )
        .expect("valid");
        let d: Vec<u128> = (0..6)
            .map(|n| b.delay(n, Duration::ZERO, 0.5).as_millis())
            .collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_kinds_bound_their_ranges() {
        let full = Backoff::default();
        assert_eq!(full.delay(0, Duration::ZERO, 0.0), Duration::ZERO);
        assert_eq!(full.delay(0, Duration::ZERO, 0.999_999).as_millis(), 499);
        let equal = Backoff::new(
            Duration::from_secs(1),
            2.0,
            Duration::from_secs(8),
            Jitter::Equal,
        )
        .expect("valid");
        assert_eq!(equal.delay(1, Duration::ZERO, 0.0), Duration::from_secs(1));
        let dec = Backoff::new(
            Duration::from_secs(1),
            2.0,
            Duration::from_secs(8),
            Jitter::Decorrelated,
        )
        .expect("valid");
        assert_eq!(
            dec.delay(5, Duration::from_secs(2), 1.0),
            Duration::from_secs(6)
        );
        assert_eq!(
            dec.delay(5, Duration::from_secs(5), 1.0),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn invalid_configs() {
        let s = Duration::from_secs(1);
        assert!(Backoff::new(s, f64::NAN, s, Jitter::Full).is_err());
        assert!(Backoff::new(s, 0.5, s, Jitter::Full).is_err());
        assert!(Backoff::new(Duration::ZERO, 2.0, s, Jitter::Full).is_err());
        assert!(Backoff::new(s, 2.0, Duration::from_millis(1), Jitter::Full).is_err());
    }

    proptest! {
        #[test]
        fn delays_within_zero_and_cap(
            retry in 0u32..=u32::MAX,
            base_ms in 1u64..10_000,
            factor in 1.0f64..100.0,
            extra_ms in 0u64..100_000,
            prev_ms in 0u64..1_000_000,
            unit in 0.0f64..1.0,
            kind in 0usize..4,
        ) {
            let jitter = [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated][kind];
            let cap = Duration::from_millis(base_ms + extra_ms);
            let b = Backoff::new(Duration::from_millis(base_ms), factor, cap, jitter).expect("valid");
            let d = b.delay(retry, Duration::from_millis(prev_ms), unit);
            prop_assert!(d <= cap);
        }

        #[test]
        fn attempt_one_thousand_does_not_overflow(unit in 0.0f64..1.0) {
            let b = Backoff::default();
            prop_assert!(b.delay(1000, Duration::ZERO, unit) <= b.cap());
        }
    }
}
