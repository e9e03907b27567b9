//! A shared retry budget: retries may be at most a ratio of requests, plus
//! a floor per second, over a sliding time-to-live — so an outage costs a
//! bounded amplification (Finagle's `RetryBudget`, tower's `TpsBudget`).
//!
//! Deposits (one per request, the hot path) are lock-free and read no
//! clock: each adds to the counter of the slot the budget last saw
//! current, and every [`CLOCK_EVERY`]th deposit into a slot reads the clock
//! and moves the window. Withdrawals (one per retry) lock, read the clock
//! and move the window first. A deposit made after the slot it is counted
//! in ended is counted as older than it is, so it expires earlier than the
//! definition says — the error only ever withholds retries, never grants
//! one: at any time the balance is at most `ratio × CLOCK_EVERY` below the
//! exact slotted balance, and never above it.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::InvalidConfig;
use crate::sync::{AtomicU64, Mutex, lock};

/// Slots the time-to-live is divided into.
const SLOTS: usize = 10;

/// A deposit reads the clock once per this many deposits into one slot.
pub(crate) const CLOCK_EVERY: u64 = 16;

/// A retry budget, shared by every service of one retry layer.
///
/// Each request deposits `ratio` of a retry; each retry withdraws one.
/// Deposits and withdrawals expire after the time-to-live; on top of the
/// deposits, `min_per_sec` retries per second are always allowed so that
/// low-traffic callers can still retry.
///
/// A deposit takes no lock and reads the clock once every 16 deposits, so
/// deposits made between two clock reads count from the earlier one: they
/// may expire early (up to `ratio × 16` fewer retries than the exact
/// window allows), never late.
pub struct RetryBudget {
    ttl: Duration,
    ratio: f64,
    reserve: f64,
    /// The current slot as last seen by a clock read (counted from the
    /// budget's creation; only ever grows). Deposits go to its slot.
    epoch: AtomicU64,
    /// Requests per slot (`epoch % SLOTS`).
    deposits: [AtomicU64; SLOTS],
    /// The clock side: only a clock read under this lock moves `epoch` and
    /// clears expired slots.
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
    /// Index of the current slot, counted from `start` (monotonic); equal
    /// to the budget's `epoch` whenever the lock is free.
    epoch: u64,
    /// When the current slot ends: until then `advance` has nothing to do
    /// (no clock division on every withdrawal).
    slot_end: Instant,
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
            return Err(InvalidConfig::new(
                "budget.ttl",
                "must be between 1 s and 60 s",
            ));
        }
        if !(ratio.is_finite() && (0.0..=1000.0).contains(&ratio)) {
            return Err(InvalidConfig::new(
                "budget.ratio",
                "must be between 0 and 1000",
            ));
        }
        let start = Instant::now();
        Ok(RetryBudget {
            ttl,
            ratio,
            reserve: f64::from(min_per_sec) * ttl.as_secs_f64(),
            epoch: AtomicU64::new(0),
            deposits: std::array::from_fn(|_| AtomicU64::new(0)),
            state: Mutex::new(Window {
                start,
                epoch: 0,
                slot_end: start + ttl / SLOTS as u32,
                withdrawals: [0; SLOTS],
            }),
        })
    }

    fn slot_len(&self) -> Duration {
        self.ttl / SLOTS as u32
    }

    /// Reads the clock and moves the window to now, clearing expired slots
    /// (deposits and withdrawals) before publishing the new epoch.
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
                self.deposits[i].store(0, Ordering::Relaxed);
                w.withdrawals[i] = 0;
            }
            w.epoch = epoch;
            // Release: a deposit that sees the new epoch adds to the
            // cleared slot, never under the clearing.
            self.epoch.store(epoch, Ordering::Release);
        }
        (w.epoch % SLOTS as u64) as usize
    }

    /// Records a request: one atomic add, and a clock read once every 16
    /// requests.
    pub fn deposit(&self) {
        let epoch = self.epoch.load(Ordering::Acquire);
        let before = self.deposits[(epoch % SLOTS as u64) as usize].fetch_add(1, Ordering::Relaxed);
        if before % CLOCK_EVERY == CLOCK_EVERY - 1 {
            self.advance(&mut lock(&self.state));
        }
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
        let deposits: u64 = self
            .deposits
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum();
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
mod tests;
