#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn validation() {
    assert!(Adaptive::new(0, 4).validate(2).is_err());
    assert!(Adaptive::new(5, 4).validate(4).is_err());
    assert!(
        Adaptive::new(1, 4)
            .decrease_factor(1.0)
            .validate(2)
            .is_err()
    );
    assert!(
        Adaptive::new(1, 4)
            .decrease_factor(0.0)
            .validate(2)
            .is_err()
    );
    assert!(
        Adaptive::new(1, 4)
            .decrease_factor(f64::NAN)
            .validate(2)
            .is_err()
    );
    assert!(Adaptive::new(2, 4).validate(1).is_err());
    assert!(Adaptive::new(2, 4).validate(5).is_err());
    assert!(Adaptive::new(2, 4).validate(3).is_ok());
}

#[test]
fn decrease_is_multiplicative_bounded_and_once_per_epoch() {
    let mut a = Aimd::new(Adaptive::new(2, 100), 100);
    assert!(a.overload(0));
    assert_eq!(a.cap, 75);
    // A second signal from a request admitted before the decrease.
    assert!(!a.overload(0));
    assert_eq!(a.cap, 75);
    for _ in 0..20 {
        let e = a.epoch;
        a.overload(e);
    }
    assert_eq!(a.cap, 2, "bounded by min");
    // Small caps still go down by at least one.
    let mut b = Aimd::new(Adaptive::new(1, 10).decrease_factor(0.9), 3);
    assert!(b.overload(0));
    assert_eq!(b.cap, 2);
}

#[test]
fn increase_after_cap_successes_bounded_by_max() {
    let mut a = Aimd::new(Adaptive::new(1, 4), 2);
    assert!(!a.success());
    assert!(a.success());
    assert_eq!(a.cap, 3);
    for _ in 0..3 {
        a.success();
    }
    assert_eq!(a.cap, 4);
    for _ in 0..20 {
        assert!(!a.success());
    }
    assert_eq!(a.cap, 4, "bounded by max");
    // An overload resets the streak.
    let mut b = Aimd::new(Adaptive::new(1, 10), 3);
    b.success();
    b.success();
    let e = b.epoch;
    b.overload(e);
    assert_eq!(b.cap, 2);
    assert!(!b.success());
    assert!(b.success());
    assert_eq!(b.cap, 3);
}
