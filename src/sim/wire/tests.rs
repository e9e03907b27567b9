use super::*;

#[test]
fn rfc3339_known_instants() {
    assert_eq!(format_rfc3339(UNIX_EPOCH, false), "1970-01-01T00:00:00Z");
    assert_eq!(format_rfc3339(UNIX_EPOCH, true), "1970-01-01T00:00:00.000Z");
    let t = UNIX_EPOCH + Duration::from_secs(1_755_780_059);
    assert_eq!(format_rfc3339(t, false), "2025-08-21T12:40:59Z");
    // leap day, end of century rules
    let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert_eq!(format_rfc3339(t, false), "2000-02-29T00:00:00Z");
    let t = UNIX_EPOCH + Duration::from_secs(4_107_542_399); // 2100-02-28T23:59:59
    assert_eq!(format_rfc3339(t, false), "2100-02-28T23:59:59Z");
    let t = UNIX_EPOCH + Duration::from_secs(1_704_067_199); // 2023-12-31T23:59:59
    assert_eq!(format_rfc3339(t, false), "2023-12-31T23:59:59Z");
}

#[test]
fn rfc3339_rounds_up() {
    let t = UNIX_EPOCH + Duration::from_millis(1_755_780_058_001);
    assert_eq!(format_rfc3339(t, false), "2025-08-21T12:40:59Z");
    let t = UNIX_EPOCH + Duration::from_nanos(1_755_780_058_124_000_001);
    assert_eq!(format_rfc3339(t, true), "2025-08-21T12:40:58.125Z");
    let t = UNIX_EPOCH + Duration::from_nanos(1_755_780_058_999_500_000);
    assert_eq!(format_rfc3339(t, true), "2025-08-21T12:40:59.000Z");
}

#[test]
fn go_durations() {
    let ms = Duration::from_millis;
    assert_eq!(format_go_duration(Duration::ZERO), "0s");
    assert_eq!(format_go_duration(Duration::from_nanos(1)), "1ms");
    assert_eq!(format_go_duration(ms(12)), "12ms");
    assert_eq!(format_go_duration(ms(999)), "999ms");
    assert_eq!(format_go_duration(ms(1000)), "1s");
    assert_eq!(format_go_duration(ms(1500)), "1.5s");
    assert_eq!(format_go_duration(ms(1574)), "1.574s");
    assert_eq!(format_go_duration(ms(1050)), "1.05s");
    assert_eq!(format_go_duration(ms(60_000)), "1m0s");
    assert_eq!(format_go_duration(ms(360_000)), "6m0s");
    assert_eq!(format_go_duration(ms(3_723_000)), "1h2m3s");
    assert_eq!(format_go_duration(ms(3_600_000)), "1h0m0s");
    assert_eq!(format_go_duration(ms(61_250)), "1m1.25s");
}

#[test]
fn ceilings() {
    assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
    assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    assert_eq!(ceil_millis(Duration::from_micros(1500)), 2);
}

#[test]
fn prng_is_deterministic_and_in_range() {
    let mut a = SplitMix64::new(7);
    let mut b = SplitMix64::new(7);
    for _ in 0..100 {
        assert_eq!(a.next_u64(), b.next_u64());
    }
    for _ in 0..100 {
        let f = a.next_f64();
        assert!((0.0..1.0).contains(&f));
        let r = a.range(3, 5);
        assert!((3..=5).contains(&r));
    }
    assert_eq!(a.base62(24).len(), 24);
}
