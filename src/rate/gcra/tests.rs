#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

const R: Dimension = Dimension::Requests;
const I: Dimension = Dimension::InputTokens;
const O: Dimension = Dimension::OutputTokens;
const SEC: u64 = 1_000_000_000;

fn limit(amount: u64, per_secs: u64, burst: u64) -> Limit {
    Limit::new(amount, Duration::from_secs(per_secs), burst).unwrap()
}

/// 10 requests/s burst 10 (T = 100 ms); 100 input tokens/s burst 50 (T = 10 ms).
fn two_dims() -> Gcra {
    Gcra::default()
        .with_limit(R, limit(10, 1, 10))
        .with_limit(I, limit(100, 1, 50))
}

#[test]
fn new_bucket_is_full_and_burst_is_admitted_at_once() {
    let mut g = two_dims();
    assert_eq!(g.available(R, 0), 10);
    assert_eq!(g.available(I, 0), 50);
    assert_eq!(g.available(O, 0), u64::MAX, "unlimited");
    assert_eq!(g.reserve([10, 50, 1_000_000, 0], 0), Ok(()));
    assert_eq!(g.available(R, 0), 0);
    assert_eq!(g.available(I, 0), 0);
}

#[test]
fn refill_is_continuous() {
    let mut g = two_dims();
    g.reserve([10, 0, 0, 0], 5 * SEC).unwrap();
    assert_eq!(g.available(R, 5 * SEC + 99_999_999), 0);
    assert_eq!(g.available(R, 5 * SEC + SEC / 10), 1);
    assert_eq!(g.available(R, 5 * SEC + SEC / 2), 5);
    assert_eq!(g.available(R, 5 * SEC + 10 * SEC), 10, "never above burst");
}

#[test]
fn denied_reservation_changes_nothing_and_reports_max_over_dimensions() {
    let mut g = two_dims();
    g.reserve([1, 50, 0, 0], 0).unwrap();
    let before = g.clone();
    // Requests have room; input tokens need 20 more units = 200 ms.
    let d = g.reserve([1, 20, 0, 0], 0).unwrap_err();
    assert_eq!(
        d,
        Denied::Until {
            at: 200_000_000,
            dimension: I
        }
    );
    assert_eq!(g, before, "all or nothing");
    assert_eq!(d.wait(50_000_000), Some(Duration::from_millis(150)));
    // One nanosecond early is still too early; at the returned time it fits.
    assert!(g.reserve([1, 20, 0, 0], 199_999_999).is_err());
    assert_eq!(g.reserve([1, 20, 0, 0], 200_000_000), Ok(()));
}

#[test]
fn dimension_with_longest_wait_is_reported() {
    let mut g = two_dims();
    g.reserve([10, 10, 0, 0], 0).unwrap();
    let d = g.reserve([5, 10, 0, 0], 0).unwrap_err();
    assert_eq!(
        d,
        Denied::Until {
            at: 500_000_000,
            dimension: R
        }
    );
}

#[test]
fn cost_above_burst_is_its_own_outcome() {
    let mut g = two_dims();
    let before = g.clone();
    let d = g.reserve([1, 51, 0, 0], 0).unwrap_err();
    assert_eq!(
        d,
        Denied::CostExceedsBurst(CostExceedsBurst {
            dimension: I,
            cost: 51,
            burst: 50
        })
    );
    assert_eq!(d.retry_at(), None);
    assert_eq!(d.wait(0), None);
    assert_eq!(g, before);
    assert!(d.to_string().contains("input_tokens"), "{d}");
    // Even when the bucket is merely empty, "never" wins over "later".
    g.reserve([10, 0, 0, 0], 0).unwrap();
    assert!(matches!(
        g.reserve([1, u64::MAX, 0, 0], 0),
        Err(Denied::CostExceedsBurst(_))
    ));
}

#[test]
fn zero_cost_ignores_a_dimension_even_in_debt() {
    let mut g = two_dims();
    g.charge(I, 10_000, 0);
    assert_eq!(g.available(I, 0), 0);
    assert_eq!(g.reserve([1, 0, 0, 0], 0), Ok(()));
    assert!(g.reserve([1, 1, 0, 0], 0).is_err());
}

#[test]
fn refund_gives_back_but_never_overfills() {
    let mut g = two_dims();
    g.reserve([0, 40, 0, 0], 0).unwrap();
    assert_eq!(g.available(I, 0), 10);
    g.refund(I, 30, 0);
    assert_eq!(g.available(I, 0), 40);
    g.refund(I, 1_000, 0);
    assert_eq!(g.available(I, 0), 50, "full, not fuller");
    g.refund(I, u64::MAX, 0);
    assert_eq!(g.available(I, 0), 50);
    // Refunding a full bucket leaves its TAT alone.
    let tat = g.bucket(I).unwrap().tat();
    g.refund(I, 5, 7 * SEC);
    assert_eq!(g.bucket(I).unwrap().tat(), tat);
    // An unlimited dimension ignores refunds.
    g.refund(O, 5, 0);
    assert_eq!(g.available(O, 0), u64::MAX);
}

#[test]
fn late_refund_is_capped_at_now() {
    let mut g = two_dims();
    g.reserve([0, 50, 0, 0], 0).unwrap(); // TAT = 500 ms
    g.refund(I, 50, 400_000_000); // would go back to 0, stops at now
    assert_eq!(g.bucket(I).unwrap().tat(), 400_000_000);
    assert_eq!(g.available(I, 400_000_000), 50);
}

#[test]
fn charge_creates_debt_beyond_the_burst() {
    let mut g = two_dims();
    g.reserve([0, 50, 0, 0], 0).unwrap();
    g.charge(I, 100, 0); // 1 s of debt on top of the 0.5 s reservation
    assert_eq!(g.available(I, SEC), 0);
    assert_eq!(g.time_until_full(I, 0), Duration::from_millis(1_500));
    // The bucket has room again once the debt is paid off by time.
    assert_eq!(
        g.reserve([0, 1, 0, 0], 0),
        Err(Denied::Until {
            at: SEC + 10_000_000,
            dimension: I
        })
    );
    assert_eq!(g.available(I, SEC + 10_000_000), 1);
    g.charge(I, u64::MAX, 0);
    assert_eq!(g.bucket(I).unwrap().tat(), u64::MAX, "saturates");
    assert_eq!(g.available(I, 0), 0);
    assert!(g.reserve([0, 1, 0, 0], SEC).is_err());
}

#[test]
fn time_until_full() {
    let mut g = two_dims();
    assert_eq!(g.time_until_full(R, 0), Duration::ZERO);
    g.reserve([3, 0, 0, 0], SEC).unwrap();
    assert_eq!(g.time_until_full(R, SEC), Duration::from_millis(300));
    assert_eq!(
        g.time_until_full(R, SEC + 100_000_000),
        Duration::from_millis(200)
    );
    assert_eq!(g.time_until_full(R, 10 * SEC), Duration::ZERO);
    assert_eq!(g.time_until_full(O, 0), Duration::ZERO, "unlimited");
}

#[test]
fn tighten_lowers_and_never_raises() {
    let mut g = two_dims();
    g.tighten(I, 20, 0);
    assert_eq!(g.available(I, 0), 20);
    g.tighten(I, 30, 0);
    assert_eq!(g.available(I, 0), 20, "never raised");
    g.tighten(I, 1_000, 0);
    assert_eq!(g.available(I, 0), 20);
    g.tighten(I, 0, 0);
    assert_eq!(g.available(I, 0), 0);
    // It still refills at the configured rate.
    assert_eq!(g.available(I, 100_000_000), 10);
    g.tighten(O, 0, 0);
    assert_eq!(g.available(O, 0), u64::MAX, "unlimited stays unlimited");
}

#[test]
fn set_limit_keeps_used_part() {
    // Burst 50, 40 used.
    let mut g = two_dims();
    g.reserve([0, 40, 0, 0], 0).unwrap();
    // Shrink to burst 45 at the same rate: the 40 used units stay used.
    g.set_limit(I, limit(100, 1, 45), 0);
    assert_eq!(g.available(I, 0), 5);
    // Grow to 1 000/s burst 450 (10×): same fraction (40/45) used.
    g.set_limit(I, limit(1_000, 1, 450), 0);
    assert_eq!(g.available(I, 0), 50);
    // Make it unlimited, then limited again: starts full.
    g.remove_limit(I);
    assert_eq!(g.available(I, 0), u64::MAX);
    g.set_limit(I, limit(100, 1, 50), 0);
    assert_eq!(g.available(I, 0), 50);
    // A full bucket stays full across a change.
    g.set_limit(I, limit(10, 1, 5), 0);
    assert_eq!(g.available(I, 0), 5);
}

#[test]
fn set_limit_carries_debt() {
    let mut g = two_dims();
    g.charge(I, 100, 0); // 1 s of usage, 0.5 s beyond the burst.
    g.set_limit(I, limit(50, 1, 25), 0); // half the rate and burst
    assert_eq!(g.time_until_full(I, 0), Duration::from_secs(2));
    assert_eq!(g.available(I, SEC), 0);
    assert_eq!(g.available(I, 7 * SEC / 4), 12);
    assert_eq!(g.available(I, 2 * SEC), 25);
}

#[test]
fn now_going_backwards_does_not_panic_or_rewind() {
    let mut g = two_dims();
    g.reserve([5, 5, 0, 0], 10 * SEC).unwrap();
    let tat = g.bucket(R).unwrap().tat();
    assert_eq!(g.available(R, 0), 0, "the past looks fully used");
    g.refund(R, 5, 0);
    assert!(g.bucket(R).unwrap().tat() <= tat);
    assert!(g.reserve([1, 1, 0, 0], 0).is_err());
    g.tighten(R, 0, 0);
    g.set_limit(R, limit(1, 1, 1), 0);
    // 10 s used at 100 ms/unit = 100 units, now at 1 s/unit.
    assert_eq!(g.time_until_full(R, 0), Duration::from_secs(100));
    assert_eq!(g.time_until_full(R, 200 * SEC), Duration::ZERO);
}

#[test]
fn extreme_inputs_do_not_panic() {
    let tiny = Limit::new(1_000_000_000, Duration::from_secs(1), 1 << 62).unwrap();
    let huge = Limit::new(1, Duration::from_nanos(1 << 62), 1).unwrap();
    let mut g = Gcra::new([Some(tiny), Some(huge), None, None]);
    for now in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
        for cost in [0, 1, 1 << 62, u64::MAX] {
            let _ = g.check([cost, cost, cost, cost], now);
            let _ = g.reserve([cost, cost, cost, cost], now);
            for d in Dimension::ALL {
                g.refund(d, cost, now);
                g.charge(d, cost, now);
                g.tighten(d, cost, now);
                let _ = g.available(d, now);
                let _ = g.time_until_full(d, now);
            }
            g.set_limit(R, huge, now);
            g.set_limit(R, tiny, now);
        }
    }
}

// ---- properties -------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Reserve([u64; DIMENSIONS]),
    /// Refund a fraction (in 1/4ths) of the remaining part of an earlier
    /// reservation, chosen by index modulo the outstanding count.
    Refund(usize, Dimension, u8),
    Charge(Dimension, u64),
}

fn dimension() -> impl Strategy<Value = Dimension> {
    prop_oneof![Just(R), Just(I), Just(O)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..3_000).prop_map(Op::Advance),
        4 => prop::array::uniform4(0u64..24).prop_map(Op::Reserve),
        2 => (any::<usize>(), dimension(), 0u8..=4).prop_map(|(i, d, q)| Op::Refund(i, d, q)),
        1 => (dimension(), 0u64..6).prop_map(|(d, n)| Op::Charge(d, n)),
    ]
}

/// Small nanosecond periods so that rounding of `T` matters and windows
/// span many refills.
fn small_limit() -> impl Strategy<Value = Limit> {
    (1u64..40, 1u64..5_000, 1u64..20).prop_filter_map("valid", |(amount, per, burst)| {
        Limit::new(amount, Duration::from_nanos(per), burst).ok()
    })
}

fn limits() -> impl Strategy<Value = [Option<Limit>; DIMENSIONS]> {
    prop::array::uniform4(prop::option::weighted(0.85, small_limit()))
}

/// A signed change of used units in one dimension at a time.
struct Event {
    at: u64,
    dimension: Dimension,
    units: i128,
    /// A reservation the limiter admitted (windows end at these: a
    /// charge is debt the limiter could not prevent, only repay).
    admitted: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn gcra_invariants(limits in limits(), ops in prop::collection::vec(op(), 1..80)) {
        let mut g = Gcra::new(limits);
        let mut now = 0u64;
        let mut events: Vec<Event> = Vec::new();
        // Remaining refundable units per admitted reservation.
        let mut outstanding: Vec<[u64; DIMENSIONS]> = Vec::new();

        for op in ops {
            match op {
                Op::Advance(dt) => now += dt,
                Op::Reserve(cost) => {
                    let before = g.clone();
                    match g.reserve(cost, now) {
                        Ok(()) => {
                            for d in Dimension::ALL {
                                if let Some(l) = g.limit(d) {
                                    prop_assert!(cost[d.index()] <= l.burst());
                                    // A zero cost does not involve the dimension.
                                    if cost[d.index()] == 0 {
                                        continue;
                                    }
                                    events.push(Event { at: now, dimension: d, units: i128::from(cost[d.index()]), admitted: true });
                                }
                            }
                            outstanding.push(cost);
                        }
                        Err(denied) => {
                            prop_assert_eq!(&g, &before, "a denied reservation changes nothing");
                            match denied {
                                Denied::Until { at, dimension } => {
                                    prop_assert!(at > now);
                                    prop_assert!(cost[dimension.index()] > 0);
                                    // Retried at the returned time (nothing else
                                    // happening) it succeeds, one ns earlier it does not.
                                    let mut later = g.clone();
                                    prop_assert_eq!(later.reserve(cost, at), Ok(()));
                                    let mut early = g.clone();
                                    prop_assert!(early.reserve(cost, at - 1).is_err());
                                }
                                Denied::CostExceedsBurst(e) => {
                                    let l = g.limit(e.dimension).unwrap();
                                    prop_assert_eq!(e.burst, l.burst());
                                    prop_assert!(e.cost > l.burst());
                                    prop_assert_eq!(e.cost, cost[e.dimension.index()]);
                                }
                            }
                        }
                    }
                }
                Op::Refund(i, d, quarters) => {
                    if !outstanding.is_empty() {
                        let n = outstanding.len();
                        let left = &mut outstanding[i % n][d.index()];
                        let amount = *left * u64::from(quarters) / 4;
                        *left -= amount;
                        g.refund(d, amount, now);
                        if g.limit(d).is_some() {
                            events.push(Event { at: now, dimension: d, units: -i128::from(amount), admitted: false });
                        }
                    }
                }
                Op::Charge(d, n) => {
                    g.charge(d, n, now);
                    if g.limit(d).is_some() {
                        events.push(Event { at: now, dimension: d, units: i128::from(n), admitted: false });
                    }
                }
            }
            for d in Dimension::ALL {
                if let Some(l) = g.limit(d) {
                    prop_assert!(g.available(d, now) <= l.burst(), "never more than full");
                }
            }
        }

        // Sliding windows: net units in [s, e] ≤ amount·(e−s)/per + burst,
        // checked exactly as net·per ≤ amount·(e−s) + burst·per.
        for d in Dimension::ALL {
            let Some(l) = g.limit(d) else { continue };
            let per = i128::from(nanos(l.per()));
            let evs: Vec<&Event> = events.iter().filter(|e| e.dimension == d).collect();
            for (start, first) in evs.iter().enumerate() {
                let mut net = 0i128;
                for e in &evs[start..] {
                    net += e.units;
                    if !e.admitted {
                        continue;
                    }
                    let window = i128::from(e.at - first.at);
                    prop_assert!(
                        net * per <= i128::from(l.amount()) * window + i128::from(l.burst()) * per,
                        "{d}: {net} units in {window}ns with {l:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn reserve_never_panics(
        limits in limits(),
        cost in prop::array::uniform4(any::<u64>()),
        now in any::<u64>(),
        tat in any::<u64>(),
    ) {
        let mut g = Gcra::new(limits);
        for d in Dimension::ALL {
            if let Some(b) = g.bucket(d).copied() {
                g.set_bucket(d, Some(Bucket::from_parts(b.limit(), tat)));
            }
        }
        let before = g.clone();
        if g.reserve(cost, now).is_err() {
            prop_assert_eq!(&g, &before);
        }
        for d in Dimension::ALL {
            g.refund(d, cost[d.index()], now);
            g.tighten(d, cost[d.index()], now);
            g.charge(d, cost[d.index()], now);
            let _ = g.available(d, now);
        }
    }
}

/// The walk-through that was the module's doc example.
#[test]
fn module_example() -> Result<(), Box<dyn std::error::Error>> {
    // 60 requests and 1 000 input tokens per minute, each bursting to its full amount.
    let mut gcra = Gcra::default()
        .with_limit(Dimension::Requests, Limit::per_minute(60)?)
        .with_limit(Dimension::InputTokens, Limit::per_minute(1_000)?);

    let now = 0;
    // One request of 900 input tokens fits…
    assert_eq!(gcra.reserve([1, 900, 0, 0], now), Ok(()));
    // …a second one does not, and nothing was taken from the request bucket.
    let denied = gcra.reserve([1, 900, 0, 0], now).unwrap_err();
    assert_eq!(gcra.available(Dimension::Requests, now), 59);
    // 1 000 tokens/min is one token per 60 ms: 800 more tokens take 48 s.
    assert_eq!(denied.wait(now), Some(Duration::from_secs(48)));
    let at = denied.retry_at().unwrap();
    assert_eq!(gcra.reserve([1, 900, 0, 0], at), Ok(()));

    // The first call used only 200 tokens: give the rest back.
    gcra.refund(Dimension::InputTokens, 700, at);
    assert_eq!(gcra.available(Dimension::InputTokens, at), 700);

    // A cost above a bucket's burst can never succeed, so it is its own outcome.
    assert!(matches!(
        gcra.reserve([1, 5_000, 0, 0], at),
        Err(Denied::CostExceedsBurst(_))
    ));
    Ok(())
}
