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
