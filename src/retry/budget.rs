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

    /// Guards the lock-free deposit: deposits made while no clock was read
    /// are counted in the slot last seen, so they expire early (fewer
    /// retries), never late; a clock read every `CLOCK_EVERY` deposits
    /// makes them current again.
    #[tokio::test(start_paused = true)]
    async fn deposits_between_clock_reads_expire_early_never_late() {
        let b = RetryBudget::new(Duration::from_secs(10), 0, 1.0).expect("valid");
        for _ in 0..5 {
            b.deposit();
        }
        // 9.5 s later (slot 9), 5 more and no clock read: slot 0 too.
        tokio::time::advance(Duration::from_millis(9_500)).await;
        for _ in 0..5 {
            b.deposit();
        }
        assert_eq!(b.balance(), 10.0);
        // At 10 s slot 0 expires with all ten, although five were made at
        // 9.5 s (the exact balance would be 5): conservative.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(b.balance(), 0.0);
        assert!(!b.withdraw());
        // That `balance` read the clock: these are current.
        for _ in 0..CLOCK_EVERY {
            b.deposit();
        }
        assert_eq!(b.balance(), CLOCK_EVERY as f64);
        // Long idle, then a burst: the first `CLOCK_EVERY` go to the stale
        // slot and are lost; the clock read they trigger makes the rest
        // count.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 * CLOCK_EVERY {
            b.deposit();
        }
        assert_eq!(b.balance(), 2.0 * CLOCK_EVERY as f64);
        assert!(b.withdraw());
    }

    /// One step of the model test.
    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        Deposit(u64),
        Withdraw,
        Balance,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0u64..3_000).prop_map(Op::Advance),
            (1u64..40).prop_map(Op::Deposit),
            Just(Op::Withdraw),
            Just(Op::Balance),
        ]
    }

    /// The definition, with exact times: an event counts while the slot it
    /// happened in is one of the last `SLOTS` (Finagle's and tower's
    /// slotted window).
    struct Model {
        start: Instant,
        slot: Duration,
        reserve: f64,
        ratio: f64,
        deposits: Vec<Instant>,
        withdrawals: Vec<Instant>,
    }

    impl Model {
        fn slot_of(&self, t: Instant) -> u128 {
            (t - self.start).as_nanos() / self.slot.as_nanos()
        }
        fn live(&self, events: &[Instant], now: Instant) -> f64 {
            let n = self.slot_of(now);
            events
                .iter()
                .filter(|&&t| n - self.slot_of(t) < SLOTS as u128)
                .count() as f64
        }
        fn balance(&self, now: Instant) -> f64 {
            self.reserve + self.ratio * self.live(&self.deposits, now)
                - self.live(&self.withdrawals, now)
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 128,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x0b0d_9e70),
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// Guards the budget against the definition on random traffic:
        /// it never grants a retry the definition refuses, and it is never
        /// more than `ratio × CLOCK_EVERY` retries below it.
        #[test]
        fn never_more_retries_than_the_definition(
            ttl_s in 1u64..20,
            floor in 0u32..3,
            ratio in proptest::prop_oneof![proptest::strategy::Just(0.0), 0.05f64..2.0],
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let ttl = Duration::from_secs(ttl_s);
                let b = RetryBudget::new(ttl, floor, ratio).expect("valid");
                let mut m = Model {
                    start: Instant::now(),
                    slot: ttl / SLOTS as u32,
                    reserve: f64::from(floor) * ttl.as_secs_f64(),
                    ratio,
                    deposits: Vec::new(),
                    withdrawals: Vec::new(),
                };
                let slack = ratio * CLOCK_EVERY as f64 + 1e-9;
                for op in ops {
                    let now = Instant::now();
                    match op {
                        Op::Advance(ms) => {
                            tokio::time::advance(Duration::from_millis(ms)).await;
                        }
                        Op::Deposit(n) => {
                            for _ in 0..n {
                                b.deposit();
                                m.deposits.push(now);
                            }
                        }
                        Op::Withdraw => {
                            let exact = m.balance(now);
                            if b.withdraw() {
                                assert!(exact >= 1.0 - 1e-9, "granted at exact balance {exact}");
                                m.withdrawals.push(now);
                            } else {
                                assert!(exact < 1.0 + slack, "refused at exact balance {exact}");
                            }
                        }
                        Op::Balance => {
                            let (ours, exact) = (b.balance(), m.balance(now));
                            assert!(ours <= exact + 1e-9, "{ours} above {exact}");
                            assert!(ours >= exact - slack, "{ours} too far below {exact}");
                        }
                    }
                }
            });
        }
    }

    #[test]
    fn invalid() {
        assert!(RetryBudget::new(Duration::ZERO, 1, 0.2).is_err());
        assert!(RetryBudget::new(Duration::from_secs(10), 1, f64::NAN).is_err());
        assert!(RetryBudget::new(Duration::from_secs(10), 1, -1.0).is_err());
    }
}
