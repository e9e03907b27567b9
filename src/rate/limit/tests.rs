#![allow(clippy::unwrap_used)]

use super::*;

const O: Dimension = Dimension::OutputTokens;
const SEC: u64 = 1_000_000_000;

#[test]
fn limit_validation_rejects_zero_and_absurd() {
    let s = Duration::from_secs(1);
    assert!(Limit::new(0, s, 1).is_err());
    assert!(Limit::new(1, s, 0).is_err());
    assert!(Limit::new(1, Duration::ZERO, 1).is_err());
    assert!(Limit::new(1, Duration::MAX, 1).is_err());
    assert!(Limit::new(2_000_000_000, s, 1).is_err(), "faster than 1/ns");
    assert!(Limit::new(1, s, u64::MAX).is_err(), "burst·T overflows");
    assert!(Limit::new(1, s, 5_000_000_000).is_err(), "burst·T > 2^62");
    assert!(Limit::new(1_000_000_000, s, 1).is_ok(), "exactly 1/ns");
    assert!(Limit::per_minute(0).is_err());
    let e = Limit::new(0, s, 1).unwrap_err();
    assert!(e.to_string().contains("amount"), "{e}");
}

#[test]
fn interval_rounds_up() {
    // 60 s / 7 = 8.571428571428…s → rounded up to the next nanosecond.
    let l = Limit::new(7, Duration::from_secs(60), 7).unwrap();
    assert_eq!(l.interval_nanos(), 8_571_428_572);
    assert_eq!(l.capacity_nanos(), 7 * 8_571_428_572);
    assert_eq!(
        Limit::per_minute(1_000).unwrap().interval_nanos(),
        60_000_000
    );
}

#[test]
fn nanos_saturates() {
    assert_eq!(nanos(Duration::from_secs(2)), 2 * SEC);
    assert_eq!(nanos(Duration::MAX), u64::MAX);
}

#[test]
fn dimension_names_and_indices() {
    for (i, d) in Dimension::ALL.into_iter().enumerate() {
        assert_eq!(d.index(), i);
    }
    assert_eq!(O.to_string(), "output_tokens");
}
