//! Calendar periods: a day or a month that starts at midnight in a fixed
//! UTC offset, computed on Unix seconds with the proleptic Gregorian
//! calendar (no time zone database: a fixed offset has no daylight-saving
//! changes, which is what providers' quotas use — UTC, or a stated offset).
//!
//! The math is the crate's (`src/calendar.rs`).

use std::time::SystemTime;

use crate::calendar::from_unix;
use crate::calendar::{Span, window};
use crate::error::InvalidConfig;

/// The largest UTC offset accepted, in minutes (±18 hours, as RFC 3339
/// and every time zone in use stay within).
pub const MAX_UTC_OFFSET_MINUTES: i32 = 18 * 60;

/// Which calendar period a cap counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeriodKind {
    /// A calendar day.
    Day,
    /// A calendar month.
    Month,
}

/// A calendar day or month, beginning at local midnight in a fixed UTC
/// offset (default UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Period {
    kind: PeriodKind,
    offset_minutes: i32,
}

/// One instance of a [`Period`]: `[start, end)` in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// The first second of the period.
    pub start: i64,
    /// The first second after it (the reset).
    pub end: i64,
}

impl Window {
    /// The start as a time.
    #[must_use]
    pub fn starts_at(&self) -> SystemTime {
        from_unix(self.start)
    }

    /// The reset (the end) as a time.
    #[must_use]
    pub fn resets_at(&self) -> SystemTime {
        from_unix(self.end)
    }

    /// Whether `t` (Unix seconds) falls in it.
    #[must_use]
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

impl Period {
    /// Calendar days, from midnight UTC.
    #[must_use]
    pub const fn day() -> Self {
        Period {
            kind: PeriodKind::Day,
            offset_minutes: 0,
        }
    }

    /// Calendar months, from midnight UTC on the 1st.
    #[must_use]
    pub const fn month() -> Self {
        Period {
            kind: PeriodKind::Month,
            offset_minutes: 0,
        }
    }

    /// Midnight in this UTC offset instead (`-300` is UTC−05:00). Checked
    /// by the budget's `build` (at most ±[`MAX_UTC_OFFSET_MINUTES`]).
    #[must_use]
    pub const fn utc_offset_minutes(mut self, minutes: i32) -> Self {
        self.offset_minutes = minutes;
        self
    }

    /// Day or month.
    #[must_use]
    pub const fn kind(&self) -> PeriodKind {
        self.kind
    }

    /// The UTC offset, in minutes.
    #[must_use]
    pub const fn offset_minutes(&self) -> i32 {
        self.offset_minutes
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.offset_minutes.abs() > MAX_UTC_OFFSET_MINUTES {
            return Err(InvalidConfig::new(
                "cap.period",
                "the UTC offset must be within ±18 hours",
            ));
        }
        Ok(())
    }

    /// The period instance that holds `t` (Unix seconds).
    #[must_use]
    pub fn window(&self, t: i64) -> Window {
        let span = match self.kind {
            PeriodKind::Day => Span::Day,
            PeriodKind::Month => Span::Month,
        };
        let (start, end) = window(span, i64::from(self.offset_minutes) * 60, t);
        Window { start, end }
    }

    /// A short name for labels and keys: `day`, `month`, `day+0530`.
    pub(crate) fn name(&self) -> String {
        let kind = match self.kind {
            PeriodKind::Day => "day",
            PeriodKind::Month => "month",
        };
        if self.offset_minutes == 0 {
            return kind.to_owned();
        }
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let m = self.offset_minutes.unsigned_abs();
        format!("{kind}{sign}{:02}{:02}", m / 60, m % 60)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::calendar::{DAY, days_from_civil, unix};
    use proptest::prelude::*;

    /// 2026-12-02T01:44:44Z.
    const NOW: i64 = 1_796_175_884;

    #[test]
    fn a_utc_day_and_month() {
        let day = Period::day().window(NOW);
        assert_eq!(
            httpdate::fmt_http_date(day.starts_at()),
            "Wed, 02 Dec 2026 00:00:00 GMT"
        );
        assert_eq!(
            httpdate::fmt_http_date(day.resets_at()),
            "Thu, 03 Dec 2026 00:00:00 GMT"
        );
        let month = Period::month().window(NOW);
        assert_eq!(
            httpdate::fmt_http_date(month.starts_at()),
            "Tue, 01 Dec 2026 00:00:00 GMT"
        );
        assert_eq!(
            httpdate::fmt_http_date(month.resets_at()),
            "Fri, 01 Jan 2027 00:00:00 GMT"
        );
    }

    #[test]
    fn an_offset_moves_midnight() {
        // 01:44Z is still 1 December at UTC−05:00, and its day ends at 05:00Z.
        let day = Period::day().utc_offset_minutes(-300).window(NOW);
        assert_eq!(
            httpdate::fmt_http_date(day.starts_at()),
            "Tue, 01 Dec 2026 05:00:00 GMT"
        );
        assert_eq!(
            httpdate::fmt_http_date(day.resets_at()),
            "Wed, 02 Dec 2026 05:00:00 GMT"
        );
        // At UTC+05:30 it is already 07:14 on 2 December.
        let day = Period::day().utc_offset_minutes(330).window(NOW);
        assert_eq!(
            httpdate::fmt_http_date(day.starts_at()),
            "Tue, 01 Dec 2026 18:30:00 GMT"
        );
        // A month at UTC+14:00 that began on the last day of November, UTC.
        let month = Period::month().utc_offset_minutes(14 * 60).window(NOW);
        assert_eq!(
            httpdate::fmt_http_date(month.starts_at()),
            "Mon, 30 Nov 2026 10:00:00 GMT"
        );
        assert_eq!(
            httpdate::fmt_http_date(month.resets_at()),
            "Thu, 31 Dec 2026 10:00:00 GMT"
        );
    }

    #[test]
    fn february_in_leap_and_common_years() {
        let feb_2028 = days_from_civil(2028, 2, 10) * DAY;
        let w = Period::month().window(feb_2028);
        assert_eq!(w.end - w.start, 29 * DAY);
        let feb_2100 = days_from_civil(2100, 2, 10) * DAY;
        let w = Period::month().window(feb_2100);
        assert_eq!(w.end - w.start, 28 * DAY, "2100 is not a leap year");
        let feb_2000 = days_from_civil(2000, 2, 10) * DAY;
        let w = Period::month().window(feb_2000);
        assert_eq!(w.end - w.start, 29 * DAY, "2000 is");
    }

    #[test]
    fn the_boundary_second_belongs_to_the_next_period() {
        let w = Period::day().utc_offset_minutes(60).window(NOW);
        assert_eq!(Period::day().utc_offset_minutes(60).window(w.end - 1), w);
        assert_eq!(
            Period::day().utc_offset_minutes(60).window(w.end).start,
            w.end
        );
        assert!(w.contains(w.start) && !w.contains(w.end));
    }

    #[test]
    fn times_before_1970_round_down() {
        let t = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(unix(t), -2);
        let w = Period::day().window(unix(t));
        assert_eq!(
            w,
            Window {
                start: -DAY,
                end: 0
            }
        );
    }

    #[test]
    fn an_offset_beyond_18_hours_is_refused() {
        assert!(Period::day().utc_offset_minutes(18 * 60).validate().is_ok());
        let err = Period::day()
            .utc_offset_minutes(18 * 60 + 1)
            .validate()
            .expect_err("over 18 hours");
        assert_eq!(err.field, "cap.period");
        assert_eq!(Period::month().utc_offset_minutes(-90).name(), "month-0130");
    }

    proptest! {
        /// Every window holds `t`, begins at local midnight (on the 1st for
        /// a month, as httpdate — an independent formatter — shows it),
        /// and the next window begins where it ends.
        #[test]
        fn windows_start_at_local_midnight_and_tile(
            t in 0i64..8_000_000_000,
            offset in -MAX_UTC_OFFSET_MINUTES..=MAX_UTC_OFFSET_MINUTES,
            month in any::<bool>(),
        ) {
            let period = if month { Period::month() } else { Period::day() }.utc_offset_minutes(offset);
            let w = period.window(t);
            prop_assert!(w.contains(t));
            let off = i64::from(offset) * 60;
            let local_start = httpdate::fmt_http_date(from_unix(w.start + off));
            prop_assert!(local_start.ends_with(" 00:00:00 GMT"), "{}", local_start);
            if month {
                prop_assert_eq!(&local_start[5..7], "01");
                let days = (w.end - w.start) / DAY;
                prop_assert!((28..=31).contains(&days));
                prop_assert_eq!((w.end - w.start) % DAY, 0);
            } else {
                prop_assert_eq!(w.end - w.start, DAY);
            }
            let next = period.window(w.end);
            prop_assert_eq!(next.start, w.end);
            prop_assert_eq!(period.window(w.start), w);
            prop_assert_eq!(period.window(w.end - 1), w);
        }
    }
}
