use super::*;
use crate::calendar::days_from_civil;
use proptest::prelude::*;

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn month_len(y: i64, m: u32) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// The naive count: walk years, then months, from 1970-01-01.
fn naive_civil(mut days: i64) -> (i64, u32, u32) {
    let mut y = 1970;
    loop {
        let len = if is_leap(y) { 366 } else { 365 };
        if days >= len {
            days -= len;
            y += 1;
        } else if days < 0 {
            y -= 1;
            days += if is_leap(y) { 366 } else { 365 };
        } else {
            break;
        }
    }
    let mut m = 1;
    while days >= month_len(y, m) {
        days -= month_len(y, m);
        m += 1;
    }
    (y, m, days as u32 + 1)
}

proptest! {
    #[test]
    fn civil_math_matches_a_naive_day_count(days in -200_000i64..200_000) {
        let (y, m, d) = civil_from_days(days);
        prop_assert_eq!((y, m, d), naive_civil(days));
        prop_assert_eq!(days_from_civil(y, m, d), days);
    }

    #[test]
    fn periods_start_at_local_midnight(
        unix in -3_000_000_000i64..6_000_000_000,
        offset in -86_399i32..86_399,
    ) {
        let local = unix + i64::from(offset);
        // Day: the index is the local day, the end the next local midnight.
        let (day, end) = period_at(Period::Day, offset, unix);
        prop_assert_eq!(day, local.div_euclid(86_400));
        prop_assert!(end > unix && end - unix <= 86_400);
        prop_assert_eq!((end + i64::from(offset)).rem_euclid(86_400), 0);
        prop_assert_eq!(period_at(Period::Day, offset, end).0, day + 1);
        prop_assert_eq!(period_at(Period::Day, offset, end - 1).0, day);
        // Month: months since 1970-01 of the local date; it ends on the
        // first of the next local month at midnight.
        let (month, end) = period_at(Period::Month, offset, unix);
        let (y, m, _) = naive_civil(local.div_euclid(86_400));
        prop_assert_eq!(month, (y - 1970) * 12 + i64::from(m) - 1);
        let (ey, em, ed) = naive_civil((end + i64::from(offset)).div_euclid(86_400));
        prop_assert_eq!(ed, 1);
        prop_assert_eq!((ey - 1970) * 12 + i64::from(em) - 1, month + 1);
        prop_assert_eq!((end + i64::from(offset)).rem_euclid(86_400), 0);
        prop_assert_eq!(period_at(Period::Month, offset, end - 1).0, month);
    }
}

#[test]
fn known_dates() {
    // 2024-02-29 (a leap day) is day 19,782.
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    assert_eq!(days_from_civil(2024, 3, 1), 19_783);
    // 2026-12-01T23:30:00Z is still 1 December in UTC, already 2 December
    // in UTC+01:00, and still 1 December in UTC−05:00.
    let t = days_from_civil(2026, 12, 1) * 86_400 + 23 * 3600 + 30 * 60;
    let day = |offset| period_at(Period::Day, offset, t).0;
    assert_eq!(day(0), days_from_civil(2026, 12, 1));
    assert_eq!(day(3600), days_from_civil(2026, 12, 2));
    assert_eq!(day(-5 * 3600), days_from_civil(2026, 12, 1));
    // At UTC+01:00 that day ends at 2026-12-02T23:00Z.
    let (_, end) = period_at(Period::Day, 3600, t);
    assert_eq!(end, days_from_civil(2026, 12, 3) * 86_400 - 3600);
    // 2026-12-31T23:30Z is still December in UTC, January 2027 at UTC+01:00.
    let nye = days_from_civil(2026, 12, 31) * 86_400 + 23 * 3600 + 30 * 60;
    let (m0, _) = period_at(Period::Month, 0, nye);
    let (m1, end1) = period_at(Period::Month, 3600, nye);
    assert_eq!(m1, m0 + 1);
    assert_eq!(end1, days_from_civil(2027, 2, 1) * 86_400 - 3600);
}

fn tokens(tokens: u64) -> PeriodCost {
    PeriodCost { tokens, spend: 0 }
}

#[test]
fn usage_rolls_over_and_counts_against_the_quota() {
    let q = CalendarQuota::daily().requests(2).tokens(100);
    let t = days_from_civil(2026, 12, 1) * 86_400;
    let mut u = PeriodUsage::default();
    assert_eq!(u.fits(Some(&q), tokens(60), t), QuotaFit::Fits);
    u.requests += 1;
    u.tokens += 60;
    // 60 + 50 > 100 tokens.
    let reset_at = days_from_civil(2026, 12, 2) * 86_400;
    assert_eq!(
        u.fits(Some(&q), tokens(50), t + 10),
        QuotaFit::Exhausted { reset_at }
    );
    assert_eq!(u.fits(Some(&q), tokens(40), t + 10), QuotaFit::Fits);
    u.requests += 1;
    // Two requests used: exhausted until midnight, fresh after it.
    assert_eq!(
        u.fits(Some(&q), tokens(0), reset_at - 1),
        QuotaFit::Exhausted { reset_at }
    );
    assert_eq!(u.fits(Some(&q), tokens(100), reset_at), QuotaFit::Fits);
    assert_eq!((u.requests, u.tokens), (0, 0));
}

#[test]
fn spend_counts_against_a_quota_in_money() {
    let q = CalendarQuota::monthly().spend(Money::from_cents(100));
    let t = days_from_civil(2026, 12, 15) * 86_400;
    let reset_at = days_from_civil(2027, 1, 1) * 86_400;
    let mut u = PeriodUsage::default();
    let cost = |cents: u64| PeriodCost {
        tokens: 1_000_000,
        spend: Money::from_cents(cents).nanos(),
    };
    assert_eq!(u.fits(Some(&q), cost(60), t), QuotaFit::Fits);
    u.add(cost(60));
    // 60 + 41 cents > 1.00; 60 + 40 fits exactly (tokens are not limited).
    assert_eq!(
        u.fits(Some(&q), cost(41), t),
        QuotaFit::Exhausted { reset_at }
    );
    assert_eq!(u.fits(Some(&q), cost(40), t), QuotaFit::Fits);
    assert_eq!(u.fits(Some(&q), cost(100), reset_at), QuotaFit::Fits);
    assert_eq!((u.requests, u.spend), (0, 0));
}

/// A clock stepped back across midnight (NTP, a VM resumed) does not hand
/// the key a fresh quota: the later period's counts stay.
#[test]
fn a_clock_stepped_back_keeps_the_counts() {
    let q = CalendarQuota::daily().requests(1);
    let midnight = days_from_civil(2026, 12, 2) * 86_400;
    let mut u = PeriodUsage::default();
    assert_eq!(u.fits(Some(&q), tokens(0), midnight + 5), QuotaFit::Fits);
    u.requests += 1;
    assert!(matches!(
        u.fits(Some(&q), tokens(0), midnight - 5),
        QuotaFit::Exhausted { .. }
    ));
    assert_eq!(u.requests, 1);
}

#[test]
fn invalid_quotas_are_refused() {
    assert!(
        CalendarQuota::daily()
            .utc_offset_secs(86_400)
            .validate()
            .is_err()
    );
    assert!(CalendarQuota::daily().requests(0).validate().is_err());
    assert!(
        CalendarQuota::daily()
            .spend(Money::ZERO)
            .validate()
            .is_err()
    );
    assert!(
        CalendarQuota::monthly()
            .tokens(5)
            .utc_offset_secs(-86_399)
            .validate()
            .is_ok()
    );
}
