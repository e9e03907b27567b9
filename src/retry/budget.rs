//! A shared retry budget: retries may be at most a ratio of requests, plus
//! a floor per second, over a sliding time-to-live — so an outage costs a
//! bounded amplification (Finagle's `RetryBudget`, tower's `TpsBudget`).

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::InvalidConfig;
use crate::sync::{Mutex, lock};

/// Slots the time-to-live is divided into.
const SLOTS: usize = 10;

/// A retry budget, shared by every service of one retry layer.
///
/// Each request deposits `ratio` of a retry; each retry withdraws one.
/// Deposits and withdrawals expire after the time-to-live; on top of the
/// deposits, `min_per_sec` retries per second are always allowed so that
/// low-traffic callers can still retry.
pub struct RetryBudget {
    ttl: Duration,
    ratio: f64,
    reserve: f64,
    state: Mutex<Window>,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ttl", &self.ttl)
            .field("ratio", &self.ratio)
            .field("balance", &self.balance())
            .finish()
    }
}

struct Window {
    start: Instant,
    /// Index of the current slot, counted from `start` (monotonic).
    epoch: u64,
    /// When the current slot ends: until then `advance` has nothing to do
    /// (no clock division on every request).
    slot_end: Instant,
    deposits: [u64; SLOTS],
    withdrawals: [u64; SLOTS],
}

impl RetryBudget {
    /// A budget over `ttl` (1 s to 60 s) allowing `ratio` (0 to 1000)
    /// retries per request plus `min_per_sec` retries per second.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] for values outside those ranges.
    pub fn new(ttl: Duration, min_per_sec: u32, ratio: f64) -> Result<Self, InvalidConfig> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(InvalidConfig {
                what: "retry budget ttl must be between 1 s and 60 s",
            });
        }
        if !(ratio.is_finite() && (0.0..=1000.0).contains(&ratio)) {
            return Err(InvalidConfig {
                what: "retry budget ratio must be between 0 and 1000",
            });
        }
        let start = Instant::now();
        Ok(RetryBudget {
            ttl,
            ratio,
            reserve: f64::from(min_per_sec) * ttl.as_secs_f64(),
            state: Mutex::new(Window {
                start,
                epoch: 0,
                slot_end: start + ttl / SLOTS as u32,
                deposits: [0; SLOTS],
                withdrawals: [0; SLOTS],
            }),
        })
    }

    fn slot_len(&self) -> Duration {
        self.ttl / SLOTS as u32
    }

    /// Moves the window to now, clearing expired slots.
    fn advance(&self, w: &mut Window) -> usize {
        let now = Instant::now();
        if now < w.slot_end {
            return (w.epoch % SLOTS as u64) as usize;
        }
        let slot = self.slot_len().as_nanos().max(1);
        let epoch = u64::try_from(now.saturating_duration_since(w.start).as_nanos() / slot)
            .unwrap_or(u64::MAX);
        // The end of this slot; on overflow, `now` (recompute every time).
        w.slot_end = epoch
            .checked_add(1)
            .and_then(|n| u64::try_from(slot).ok()?.checked_mul(n))
            .and_then(|nanos| w.start.checked_add(Duration::from_nanos(nanos)))
            .unwrap_or(now);
        if epoch > w.epoch {
            let stale = (epoch - w.epoch).min(SLOTS as u64);
            for k in 1..=stale {
                let i = ((w.epoch + k) % SLOTS as u64) as usize;
                w.deposits[i] = 0;
                w.withdrawals[i] = 0;
            }
            w.epoch = epoch;
        }
        (w.epoch % SLOTS as u64) as usize
    }

    /// Records a request.
    pub fn deposit(&self) {
        let mut w = lock(&self.state);
        let i = self.advance(&mut w);
        w.deposits[i] += 1;
    }

    /// Takes one retry if the budget allows it.
    pub fn withdraw(&self) -> bool {
        let mut w = lock(&self.state);
        let i = self.advance(&mut w);
        if self.balance_of(&w) >= 1.0 {
            w.withdrawals[i] += 1;
            true
        } else {
            false
        }
    }

    fn balance_of(&self, w: &Window) -> f64 {
        let deposits: u64 = w.deposits.iter().sum();
        let withdrawals: u64 = w.withdrawals.iter().sum();
        self.reserve + self.ratio * deposits as f64 - withdrawals as f64
    }

    /// Retries available now.
    pub fn balance(&self) -> f64 {
        let mut w = lock(&self.state);
        self.advance(&mut w);
        self.balance_of(&w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ratio_and_floor_bound_retries() {
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.2).expect("valid");
        // 10 s × 1/s floor = 10 retries with no traffic at all.
        let free = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(free, 10);
        for _ in 0..50 {
            b.deposit();
        }
        // 50 requests × 0.2 = 10 more.
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 10);
        // After the ttl everything expired: the floor again.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 10);
    }

    /// Guards the cached slot end: a withdrawal expires exactly one ttl
    /// after the slot it was made in began — not a nanosecond earlier,
    /// not a slot later.
    #[tokio::test(start_paused = true)]
    async fn withdrawals_expire_at_the_slot_boundary() {
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.0).expect("valid");
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 10);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(!b.withdraw(), "still spent just before the ttl");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 10);
        // Slot by slot: spent at 10 s, expired at 20 s.
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(!b.withdraw());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.withdraw());
    }

    #[test]
    fn invalid() {
        assert!(RetryBudget::new(Duration::ZERO, 1, 0.2).is_err());
        assert!(RetryBudget::new(Duration::from_secs(10), 1, f64::NAN).is_err());
        assert!(RetryBudget::new(Duration::from_secs(10), 1, -1.0).is_err());
    }
}
