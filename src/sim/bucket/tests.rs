use super::*;

#[test]
fn bucket_bursts_then_refills_at_rate() {
    let t0 = Instant::now();
    let mut b = Bucket::new(60, 1.0, t0); // 1 per second
    for _ in 0..60 {
        assert_eq!(b.wait_for(1.0, t0), Some(Duration::ZERO));
        b.take(1.0, t0);
    }
    let w = b.wait_for(1.0, t0).unwrap_or_default();
    assert!((w.as_secs_f64() - 1.0).abs() < 1e-9, "{w:?}");
    let v = b.view(t0 + Duration::from_millis(500));
    assert_eq!(v.remaining, 0);
    assert!((v.until_full.as_secs_f64() - 59.5).abs() < 1e-6);
    assert_eq!(b.wait_for(61.0, t0), None);
}

#[test]
fn time_scale_speeds_refill() {
    let t0 = Instant::now();
    let mut b = Bucket::new(60, 60.0, t0); // 60 per real second
    b.take(60.0, t0);
    let w = b.wait_for(30.0, t0).unwrap_or_default();
    assert!((w.as_secs_f64() - 0.5).abs() < 1e-9);
    assert!(b.is_full(t0 + Duration::from_secs(1)));
}

#[test]
fn admit_reserves_all_three_and_reports_binding_dimension() {
    let t0 = Instant::now();
    let mut set = BucketSet::new(Limits::new(10, 1000, 100), 1.0, t0);
    let cost = Cost {
        input: 600,
        output: 50,
    };
    assert!(matches!(set.admit(cost, t0), Decision::Admitted(_)));
    match set.admit(cost, t0) {
        Decision::Limited {
            dimension, wait, ..
        } => {
            assert_eq!(dimension, Dimension::InputTokens);
            // 200 missing at 1000/60 per second = 12 s
            assert!((wait.as_secs_f64() - 12.0).abs() < 1e-6);
        }
        d => panic!("{d:?}"),
    }
    let too_big = Cost {
        input: 1001,
        output: 1,
    };
    assert!(matches!(
        set.admit(too_big, t0),
        Decision::TooLarge {
            dimension: Dimension::InputTokens,
            ..
        }
    ));
}

#[test]
fn map_is_bounded_and_evicts_idle_first() {
    let t0 = Instant::now();
    let mut b = Buckets::new(2, 1.0);
    let lim = Limits::new(10, 100, 100);
    let cost = Cost {
        input: 1,
        output: 1,
    };
    let _ = b.admit(1, "m", lim, cost, t0);
    let _ = b.snapshot(2, "m", lim, t0); // full, idle
    let _ = b.admit(3, "m", lim, cost, t0);
    assert_eq!(b.len(), 2);
    assert!(b.map.contains_key(&(1, "m".to_owned())));
    assert!(b.map.contains_key(&(3, "m".to_owned())));
}

#[test]
fn fingerprints_differ_and_are_stable() {
    assert_eq!(fingerprint("a"), fingerprint("a"));
    assert_ne!(fingerprint("a"), fingerprint("b"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the request pattern, a bucket never admits more than
        /// its burst plus its refill over the elapsed time.
        #[test]
        fn admitted_never_exceeds_burst_plus_refill(
            limit in 1u64..10_000,
            scale in 0.5f64..100.0,
            steps in proptest::collection::vec((0u64..2_000, 1u64..10_000), 1..200),
        ) {
            let t0 = Instant::now();
            let mut b = Bucket::new(limit, scale, t0);
            let mut now = t0;
            let mut taken = 0.0;
            for (advance_ms, cost) in steps {
                now += Duration::from_millis(advance_ms);
                let cost = (cost % limit + 1) as f64;
                if b.wait_for(cost, now) == Some(Duration::ZERO) {
                    b.take(cost, now);
                    taken += cost;
                }
            }
            let elapsed = now.duration_since(t0).as_secs_f64();
            let bound = limit as f64 + limit as f64 / 60.0 * scale * elapsed;
            prop_assert!(taken <= bound + 1e-6, "{} > {}", taken, bound);
        }

        /// The advised wait is exact: after it (plus a microsecond for
        /// float truncation) the cost fits, and a tenth earlier it does not.
        #[test]
        fn advised_wait_is_exact(
            limit in 10u64..10_000,
            scale in 0.5f64..100.0,
            used in 0.0f64..1.0,
            cost_frac in 0.01f64..1.0,
        ) {
            let t0 = Instant::now();
            let mut b = Bucket::new(limit, scale, t0);
            b.take(limit as f64 * used, t0);
            let cost = (limit as f64 * cost_frac).max(1.0);
            let w = b.wait_for(cost, t0).unwrap_or(Duration::MAX);
            prop_assert!(w < Duration::from_secs(61 * 2));
            let mut later = b.clone();
            prop_assert_eq!(
                later.wait_for(cost, t0 + w + Duration::from_micros(1)),
                Some(Duration::ZERO)
            );
            if w > Duration::from_millis(10) {
                let mut earlier = b.clone();
                let e = earlier.wait_for(cost, t0 + w.mul_f64(0.9)).unwrap_or_default();
                prop_assert!(e > Duration::ZERO);
            }
        }
    }
}
