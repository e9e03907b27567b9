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
