//! Calendar math on Unix seconds, shared by every part of the crate that
//! counts in days or months (per-key quotas, spend budgets) or reads a
//! calendar date (RFC 3339 resets).
//!
//! The proleptic Gregorian calendar in a fixed UTC offset — no time zone
//! database: a fixed offset has no daylight-saving changes, which is what
//! providers' quotas use (UTC, or a stated offset). The civil-date
//! conversions are Howard Hinnant's `days_from_civil` / `civil_from_days`,
//! exact for every `i64` day this crate can meet.

#[cfg(any(feature = "rate", feature = "budget"))]
use std::fmt;
#[cfg(any(feature = "rate", feature = "budget"))]
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds in a day.
pub(crate) const DAY: i64 = 86_400;

/// A calendar day or a calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(any(feature = "rate", feature = "budget")), allow(dead_code))]
pub(crate) enum Span {
    Day,
    Month,
}

/// The span of `t` (Unix seconds) in local time at `offset` seconds east
/// of UTC: `[start, end)`, both Unix seconds (the boundary second belongs
/// to the next one).
#[cfg_attr(not(any(feature = "rate", feature = "budget")), allow(dead_code))]
pub(crate) fn window(span: Span, offset: i64, t: i64) -> (i64, i64) {
    let day = t.saturating_add(offset).div_euclid(DAY);
    let (start, end) = match span {
        Span::Day => (day, day + 1),
        Span::Month => {
            let (y, m, _) = civil_from_days(day);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (days_from_civil(y, m, 1), days_from_civil(ny, nm, 1))
        }
    };
    (start * DAY - offset, end * DAY - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (`m` in 1..=12).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date (year, month 1–12, day 1–31) of a day since
/// 1970-01-01.
#[cfg_attr(not(any(feature = "rate", feature = "budget")), allow(dead_code))]
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // In range by construction: 1..=31 and 1..=12.
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix seconds of `t`, rounded down (times before 1970 are negative).
#[cfg_attr(not(any(feature = "rate", feature = "budget")), allow(dead_code))]
pub(crate) fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -secs - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// The instant of `secs` Unix seconds.
#[cfg_attr(not(feature = "budget"), allow(dead_code))]
pub(crate) fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg_attr(
    not(any(feature = "rate", feature = "budget")),
    allow(dead_code, unreachable_pub)
)]
/// The wall clock calendar periods are counted by — per-key quotas
/// ([`rate::CalendarQuota`](crate::rate::CalendarQuota)) and spend budgets
/// ([`budget`](crate::budget)): [`SystemTime::now`] unless a test injects
/// another ([`Clock::new`]).
#[cfg(any(feature = "rate", feature = "budget"))]
#[derive(Clone)]
pub struct Clock(Option<Arc<dyn Fn() -> SystemTime + Send + Sync>>);

#[cfg(any(feature = "rate", feature = "budget"))]
impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Clock(None)
    }

    /// A clock that reads `now` (for tests: a time moved by hand).
    pub fn new(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Clock(Some(Arc::new(now)))
    }

    /// Now, in Unix seconds (negative before 1970).
    pub(crate) fn unix(&self) -> i64 {
        unix(self.0.as_ref().map_or_else(SystemTime::now, |f| f()))
    }
}

#[cfg(any(feature = "rate", feature = "budget"))]
impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

#[cfg(any(feature = "rate", feature = "budget"))]
impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Clock(injected)"
        } else {
            "Clock(system)"
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2024-02-29 exists, 2100 is not a leap year.
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
            1
        );
    }

    proptest! {
        #[test]
        fn civil_round_trips(day in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(day);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), day);
        }

        /// Windows start at local midnight (the 1st for months), hold `t`,
        /// and tile: the next starts where this one ends.
        #[test]
        fn windows_hold_their_time_and_tile(
            t in -2_000_000_000i64..4_000_000_000,
            offset in -64_800i64..=64_800,
            month in any::<bool>(),
        ) {
            let span = if month { Span::Month } else { Span::Day };
            let (start, end) = window(span, offset, t);
            prop_assert!(start <= t && t < end);
            prop_assert_eq!((start + offset).rem_euclid(DAY), 0);
            if month {
                prop_assert_eq!(civil_from_days((start + offset).div_euclid(DAY)).2, 1);
            } else {
                prop_assert_eq!(end - start, DAY);
            }
            prop_assert_eq!(window(span, offset, end).0, end);
            prop_assert_eq!(window(span, offset, end - 1), (start, end));
        }

        #[test]
        fn unix_round_trips(secs in -10_000_000_000i64..10_000_000_000) {
            prop_assert_eq!(unix(from_unix(secs)), secs);
        }
    }
}
