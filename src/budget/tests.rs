//! Unit tests of prices, the table's matching rule, and the memory
//! store's bound.

use std::sync::Arc;

use super::calendar::Period;
use super::store::{Charge, Counter, MemoryBudgetStore, Reserve, Settlement, TenantId};
use crate::money::{Money, Price, PriceTable, UnknownModel};
use crate::provider::{Api, Usage};

fn usage(input: u64, output: u64, write: u64, read: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_creation_input_tokens: write,
        cache_read_input_tokens: read,
    }
}

#[test]
fn money_is_exact_and_rounds_charges_up() {
    // A million charges of 0.000075 sum to exactly 75.
    let each = Money::for_tokens(Money::from_micros(75_000), 1_000);
    assert_eq!(each, Money::from_nanos(75_000));
    let mut total = Money::ZERO;
    for _ in 0..1_000_000 {
        total = total.saturating_add(each);
    }
    assert_eq!(total, Money::from_units(75));
    // One token at 1 nano-unit per million is a millionth: charged 1, not 0.
    assert_eq!(
        Money::for_tokens(Money::from_nanos(1), 1),
        Money::from_nanos(1)
    );
    assert_eq!(
        Money::for_tokens(Money::from_micros(100_000), 3),
        Money::from_nanos(300)
    );
    assert_eq!(Money::for_tokens(Money::ZERO, 1_000), Money::ZERO);
    // No overflow, however many tokens.
    assert_eq!(Money::for_tokens(Money::MAX, u64::MAX), Money::MAX);
    assert_eq!(Money::from_micros(75_000).to_string(), "0.075");
    assert_eq!(Money::from_units(15).to_string(), "15.00");
    assert_eq!(format!("{:?}", Money::from_cents(150)), "Money(1.50)");
}

#[test]
fn each_kind_of_token_is_priced_apart() {
    // Sonnet: 3 in, 15 out, 3.75 cache write, 0.30 cache read per million.
    let p = PriceTable::presets()
        .price(Some("claude-sonnet-4-5-20250929"))
        .expect("priced");
    let cost = p.cost(
        &usage(1_000_000, 1_000_000, 1_000_000, 1_000_000),
        Some(Api::AnthropicMessages),
    );
    assert_eq!(
        cost,
        Money::from_micros(3_000_000 + 15_000_000 + 3_750_000 + 300_000)
    );
    let cache_only = p.cost(&usage(0, 0, 0, 2_000_000), Some(Api::AnthropicMessages));
    assert_eq!(cache_only, Money::from_micros(600_000));
    // OpenAI's input includes its cached tokens: only the rest at the
    // input price. gpt-4o: 2.50 in, 1.25 cached.
    let p = PriceTable::presets()
        .price(Some("gpt-4o-2024-08-06"))
        .expect("priced");
    let cost = p.cost(&usage(1_000_000, 0, 0, 400_000), Some(Api::OpenAiChat));
    assert_eq!(cost, Money::from_micros(600_000 * 5 / 2 + 400_000 * 5 / 4));
    // With the API unknown, it errs high (the cached part priced twice).
    assert!(p.cost(&usage(1_000_000, 0, 0, 400_000), None) > cost);
}

#[test]
fn the_table_matches_names_and_dated_versions_but_not_other_models() {
    let t = PriceTable::presets();
    let input = |m: &str| t.price(Some(m)).map(|p| p.input);
    assert_eq!(input("gpt-4o"), Some(Money::from_micros(2_500_000)));
    assert_eq!(
        input("gpt-4o-2024-08-06"),
        Some(Money::from_micros(2_500_000))
    );
    // An exact entry wins over the versioned match.
    assert_eq!(
        input("gpt-4o-2024-05-13"),
        Some(Money::from_micros(5_000_000))
    );
    assert_eq!(
        input("gpt-4o-mini-2024-07-18"),
        Some(Money::from_micros(150_000))
    );
    assert_eq!(
        input("claude-opus-4-1-20250805"),
        Some(Money::from_micros(15_000_000))
    );
    assert_eq!(
        input("claude-opus-4-5-20251101"),
        Some(Money::from_micros(5_000_000))
    );
    assert_eq!(
        input("claude-haiku-4-5"),
        Some(Money::from_micros(1_000_000))
    );
    assert_eq!(input("o3-pro"), Some(Money::from_micros(20_000_000)));
    // Not a version: another model, refused rather than priced as o3.
    assert_eq!(input("o3-deep-research"), None);
    assert_eq!(input("gpt-4o-"), None);
    assert_eq!(t.price(None), None);

    // A prefix entry covers a family; a longer entry still wins.
    let house = Price::micros_per_mtok(1, 2, 3, 4);
    let t = t.insert_prefix("ft:gpt-4o", house);
    assert_eq!(t.price(Some("ft:gpt-4o:acme::abc")), Some(house));
    // An override replaces the preset.
    let t = t.insert("gpt-4o", house);
    assert_eq!(t.price(Some("gpt-4o-2024-11-20")), Some(house));
}

#[test]
fn unknown_models_are_refused_or_take_the_default_price() {
    assert_eq!(PriceTable::presets().price(Some("mystery-1")), None);
    let fallback = Price::micros_per_mtok(100_000_000, 100_000_000, 100_000_000, 100_000_000);
    let t = PriceTable::presets().unknown(UnknownModel::Price(fallback));
    assert_eq!(t.price(Some("mystery-1")), Some(fallback));
    assert_eq!(t.price(None), Some(fallback));
}

#[test]
fn the_estimate_prices_input_at_the_higher_of_input_and_cache_write() {
    let p = Price::micros_per_mtok(3_000_000, 15_000_000, 3_750_000, 300_000);
    assert_eq!(
        p.estimate(1_000_000, 1_000_000),
        Money::from_micros(3_750_000 + 15_000_000)
    );
}

fn counter(tenant: &str, start: i64) -> Counter {
    Counter {
        cap: Arc::from("daily"),
        tenant: Some(TenantId::Named(Arc::from(tenant))),
        key: None,
        model: None,
        period: Period::day(),
        window: Period::day().window(start),
        tag: Arc::from("budget"),
    }
}

fn charge(tenant: &str, now: i64) -> Charge {
    Charge {
        counter: counter(tenant, now),
        limit: 1_000,
        amount: 10,
        reservation: 0,
    }
}

/// A million tenants never hold more than the bound; spend of the current
/// period is never forgotten (new tenants are refused instead), and
/// counters of ended periods or without spend make room.
#[test]
fn a_million_tenants_stay_under_the_bound_without_forgetting_spend() {
    const MAX: usize = 1_000;
    let store = MemoryBudgetStore::new(MAX);
    let day0 = 1_796_169_600; // 2026-12-02T00:00:00Z
    let mut refused = 0;
    for i in 0..1_000_000u32 {
        let c = charge(&format!("t{i}"), day0 + 10);
        match store.try_reserve(day0 + 10, std::slice::from_ref(&c)) {
            Reserve::Reserved => {
                // Half are refunded (they hold nothing afterwards), half spend.
                let actual = if i % 2 == 0 { 0 } else { 7 };
                store.settle_now(&[Settlement {
                    counter: c.counter,
                    reserved: 10,
                    actual,
                    reservation: 0,
                }]);
            }
            Reserve::Full { max_counters } => {
                assert_eq!(max_counters, MAX);
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
        assert!(store.len() <= MAX);
    }
    assert!(refused > 0, "the map filled with spending tenants");
    // Every spending tenant admitted is still counted.
    let held = store.counters();
    assert_eq!(held.len(), MAX);
    assert!(held.iter().all(|(_, b)| b.spent == 7 && b.reserved == 0));
    // The next day, yesterday's counters make room for new tenants, who
    // then hold reservations: the map is full of current spend again.
    let day1 = day0 + 86_400;
    for i in 0..MAX {
        let c = charge(&format!("n{i}"), day1 + 5);
        assert_eq!(store.try_reserve(day1 + 5, &[c]), Reserve::Reserved);
        assert!(store.len() <= MAX);
    }
    assert!(
        store
            .counters()
            .iter()
            .all(|(c, b)| c.window.start == day1 && b.reserved == 10)
    );
    assert!(matches!(
        store.try_reserve(day1 + 5, &[charge("late", day1 + 5)]),
        Reserve::Full { .. }
    ));
}

#[test]
fn a_counter_with_a_reservation_in_flight_is_never_evicted() {
    let store = MemoryBudgetStore::new(2);
    let now = 1_796_169_600;
    assert_eq!(
        store.try_reserve(now, &[charge("a", now)]),
        Reserve::Reserved
    );
    assert_eq!(
        store.try_reserve(now, &[charge("b", now)]),
        Reserve::Reserved
    );
    // Both hold reservations, even in the next period: no room.
    let later = now + 2 * 86_400;
    assert!(matches!(
        store.try_reserve(later, &[charge("c", later)]),
        Reserve::Full { .. }
    ));
    // Nothing partial: a reservation over two counters, one new, is all or none.
    let both = [charge("a", now), charge("z", now)];
    assert!(matches!(
        store.try_reserve(now, &both),
        Reserve::Full { .. }
    ));
    assert_eq!(store.balance(&counter("a", now)).reserved, 10);
}

#[test]
fn a_reservation_is_all_or_none() {
    let store = MemoryBudgetStore::new(10);
    let now = 1_796_169_600;
    let mut small = charge("a", now);
    small.limit = 15;
    let big = charge("b", now);
    assert_eq!(
        store.try_reserve(now, &[small.clone(), big.clone()]),
        Reserve::Reserved
    );
    // `a` has 5 left: the pair is refused at index 0 and `b` is untouched.
    assert_eq!(
        store.try_reserve(now, &[small, big.clone()]),
        Reserve::Exceeded { index: 0, used: 10 }
    );
    assert_eq!(store.balance(&big.counter).reserved, 10);
}

#[test]
fn labels_and_ids_hold_no_key_material() {
    let c = Counter {
        cap: Arc::from("per-key"),
        tenant: Some(TenantId::Named(Arc::from("ac me/{x}"))),
        key: Some(None),
        model: Some(Some(Arc::from("claude-sonnet-4-5"))),
        period: Period::month().utc_offset_minutes(60),
        window: Period::month().window(0),
        tag: Arc::from("budget"),
    };
    assert_eq!(
        c.scope_label(),
        "tenant=ac me/{x} key=- model=claude-sonnet-4-5"
    );
    // Escaped: no braces (hash tags) or separators from user input.
    assert_eq!(
        c.id(),
        "per-key:t.ac%20me%2F%7Bx%7D:k-:m.claude-sonnet-4-5:month+0100:0"
    );
}

mod invariant {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Reserve { tenant: u8, amount: u64 },
        Settle { which: usize, actual_less: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, 1u64..400).prop_map(|(tenant, amount)| Op::Reserve { tenant, amount }),
            (any::<usize>(), 0u64..400)
                .prop_map(|(which, actual_less)| Op::Settle { which, actual_less }),
        ]
    }

    proptest! {
        /// Whatever the interleaving of admissions and settlements, when no
        /// request costs more than its estimate, no counter's spend and
        /// reservations together ever pass its limit, and a refusal
        /// always means the charge did not fit.
        #[test]
        fn spend_and_reservations_never_pass_the_limit(ops in proptest::collection::vec(op(), 1..200)) {
            let store = MemoryBudgetStore::new(16);
            let now = 1_796_169_600;
            let limit = 1_000;
            let mut held: Vec<Charge> = Vec::new();
            for op in ops {
                match op {
                    Op::Reserve { tenant, amount } => {
                        let mut c = charge(&format!("t{tenant}"), now);
                        c.limit = limit;
                        c.amount = amount;
                        match store.try_reserve(now, std::slice::from_ref(&c)) {
                            Reserve::Reserved => held.push(c),
                            Reserve::Exceeded { used, .. } => prop_assert!(used + amount > limit),
                            other => prop_assert!(false, "{:?}", other),
                        }
                    }
                    Op::Settle { which, actual_less } => {
                        if held.is_empty() {
                            continue;
                        }
                        let c = held.swap_remove(which % held.len());
                        store.settle_now(&[Settlement {
                            actual: c.amount.saturating_sub(actual_less),
                            reserved: c.amount,
                            counter: c.counter,
                            reservation: c.reservation,
                        }]);
                    }
                }
                for (_, b) in store.counters() {
                    prop_assert!(b.spent + b.reserved <= limit, "{:?}", b);
                }
            }
        }
    }
}
