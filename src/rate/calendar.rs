//! Per-key quotas per calendar period: requests, tokens and/or spend per
//! day or per month, reset at midnight of a configured UTC offset.
//!
//! Providers (and the contracts behind a key) often cap a key per day or
//! per month besides per minute. Those caps are not a rate: a bucket that
//! refills continuously would hand out tomorrow's quota tonight. So they are
//! counters per period — the period being a calendar day or month in a
//! fixed UTC offset (`+09:00` for a quota that resets at midnight in Tokyo)
//! — reserved at admission and refunded like the GCRA's reservations when a
//! request is refused by the provider or never sent.
//!
//! The math is the crate's (`src/calendar.rs`), on Unix seconds; a property
//! test checks it against a naive count of days and months.
//!
//! The wall clock is read through a [`Clock`], so tests move time by hand.

use std::time::Duration;

use crate::error::InvalidConfig;
use crate::money::Money;

#[cfg(all(test, not(loom)))]
#[path = "calendar/tests.rs"]
mod tests;

pub use crate::calendar::Clock;
use crate::calendar::{DAY, Span, civil_from_days, window};

/// A calendar period a quota counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Period {
    /// A calendar day, midnight to midnight in the quota's UTC offset.
    Day,
    /// A calendar month, from the first at midnight in the quota's UTC
    /// offset.
    Month,
}

/// A key's quota per calendar [`Period`] for a [`PoolKey`](super::PoolKey):
/// requests; tokens (input + output); spend, in money priced by the pool's
/// [`PriceTable`](super::PriceTable) — any of them. Tokens and spend are
/// estimated at admission (as the rate limiter and the spend budget
/// estimate them) and corrected from the usage reported.
///
/// Spend is the pool keys' money cap. A spend budget
/// ([`BudgetLayer`](crate::budget::BudgetLayer)) sits above the rate
/// limiter and so is charged before a pool key is chosen; a key's cap
/// belongs where the key is chosen, so that a key out of money is skipped
/// for one that is not, as a key out of requests is. It is settled by the
/// budget's rule: the usage reported, priced input, output, cache write and
/// cache read apart; nothing for a refused request.
///
/// Such caps are counters per period, not a rate: a bucket that refills
/// continuously would hand out tomorrow's quota tonight. The period is a
/// calendar day or month in a fixed UTC offset (`+09:00` for a quota that
/// resets at midnight in Tokyo), counted on the pool's [`Clock`]. A
/// request's share is reserved when its key is chosen, and given back like
/// the GCRA's reservation when the provider refuses the request (any
/// non-2xx answer) or it is never sent; its tokens and spend are corrected
/// to the usage the response reports. A request whose estimate alone is
/// over a key's limit never fits that key; it is told to wait for the
/// reset like the others.
///
/// Without Redis the counters live in the process: they start from zero
/// when it starts (a restart in the middle of a month forgets that month's
/// spend). Shared through Redis, they are Redis's, kept until a day after
/// the period ends. A key out of its quota is skipped until the
/// period ends; when every key is,
/// [`NoKeyAvailable`](crate::error::NoKeyAvailable) says how long until
/// the earliest reset.
///
/// ```
/// use tower_llm_resilience::rate::CalendarQuota;
/// // 10,000 requests a day, the day starting at midnight in UTC−05:00.
/// let q = CalendarQuota::daily().requests(10_000).utc_offset_secs(-5 * 3600);
/// # let _ = q;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalendarQuota {
    pub(crate) period: Period,
    pub(crate) requests: Option<u64>,
    pub(crate) tokens: Option<u64>,
    pub(crate) spend: Option<Money>,
    pub(crate) offset_secs: i32,
}

impl CalendarQuota {
    /// A quota per calendar day (UTC, until [`utc_offset_secs`](Self::utc_offset_secs)),
    /// limiting nothing until [`requests`](Self::requests) or
    /// [`tokens`](Self::tokens) or [`spend`](Self::spend) is set.
    pub fn daily() -> Self {
        CalendarQuota {
            period: Period::Day,
            requests: None,
            tokens: None,
            spend: None,
            offset_secs: 0,
        }
    }

    /// A quota per calendar month (UTC, until
    /// [`utc_offset_secs`](Self::utc_offset_secs)).
    pub fn monthly() -> Self {
        CalendarQuota {
            period: Period::Month,
            ..CalendarQuota::daily()
        }
    }

    /// At most `n` requests per period.
    #[must_use]
    pub fn requests(mut self, n: u64) -> Self {
        self.requests = Some(n);
        self
    }

    /// At most `n` tokens (input + output) per period.
    #[must_use]
    pub fn tokens(mut self, n: u64) -> Self {
        self.tokens = Some(n);
        self
    }

    /// At most `limit` spent per period, priced by the pool's
    /// [`PriceTable`](super::PriceTable). A request the table cannot price
    /// goes to a key without such a cap; when every key has one, it is
    /// refused with [`UnpricedModel`](crate::error::UnpricedModel).
    #[must_use]
    pub fn spend(mut self, limit: Money) -> Self {
        self.spend = Some(limit);
        self
    }

    /// The period starts at midnight `secs` seconds east of UTC (negative:
    /// west), e.g. `-8 * 3600` for UTC−08:00. Validated by the pool's
    /// `build`: within ±24 hours.
    #[must_use]
    pub fn utc_offset_secs(mut self, secs: i32) -> Self {
        self.offset_secs = secs;
        self
    }

    /// The period.
    pub fn period(&self) -> Period {
        self.period
    }

    /// The requests allowed per period, if limited.
    pub fn request_limit(&self) -> Option<u64> {
        self.requests
    }

    /// The tokens allowed per period, if limited.
    pub fn token_limit(&self) -> Option<u64> {
        self.tokens
    }

    /// The spend allowed per period, if limited.
    pub fn spend_limit(&self) -> Option<Money> {
        self.spend
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.offset_secs.unsigned_abs() >= DAY as u32 {
            return Err(InvalidConfig::new(
                "calendar_quota.utc_offset",
                "must be within ±24 hours",
            ));
        }
        if self.requests == Some(0) || self.tokens == Some(0) || self.spend == Some(Money::ZERO) {
            return Err(InvalidConfig::new(
                "calendar_quota",
                "a limit must be at least 1",
            ));
        }
        Ok(())
    }

    /// One `n`th of each limit (rounded down, at least 1): a `Local`
    /// fallback's share, while the other processes' use is out of sight.
    pub(crate) fn share(mut self, n: u32) -> Self {
        if n > 1 {
            let part = |l: u64| (l / u64::from(n)).max(1);
            self.requests = self.requests.map(part);
            self.tokens = self.tokens.map(part);
            self.spend = self.spend.map(|m| Money::from_nanos(part(m.nanos())));
        }
        self
    }

    /// The period `unix` (seconds) falls in, and when it ends (Unix
    /// seconds).
    pub(crate) fn period_at(&self, unix: i64) -> (i64, i64) {
        period_at(self.period, self.offset_secs, unix)
    }
}

/// The index of the period `unix` (seconds) falls in — days since
/// 1970-01-01 or months since 1970-01 in local time at `offset` — and the
/// Unix second at which the next one starts.
pub(crate) fn period_at(period: Period, offset: i32, unix: i64) -> (i64, i64) {
    let offset = i64::from(offset);
    let span = match period {
        Period::Day => Span::Day,
        Period::Month => Span::Month,
    };
    let (start, end) = window(span, offset, unix);
    let first = (start + offset).div_euclid(DAY);
    let index = match period {
        Period::Day => first,
        Period::Month => {
            let (y, m, _) = civil_from_days(first);
            y * 12 + i64::from(m) - 1 - 1970 * 12
        }
    };
    (index, end)
}

/// What one key used in its current period.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PeriodUsage {
    pub(crate) index: i64,
    pub(crate) requests: u64,
    pub(crate) tokens: u64,
    /// In nano-units (see [`Money`]).
    pub(crate) spend: u64,
}

/// Whether a cost fits a key's quota now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuotaFit {
    /// It fits.
    Fits,
    /// Not before the period ends (Unix seconds).
    Exhausted { reset_at: i64 },
}

impl PeriodUsage {
    /// Rolls over to the period of `unix`, if it is a new one.
    pub(crate) fn roll(&mut self, quota: Option<&CalendarQuota>, unix: i64) -> i64 {
        let quota = quota.copied().unwrap_or_else(CalendarQuota::daily);
        let (index, end) = quota.period_at(unix);
        // Only forward: a clock stepped back across midnight keeps the
        // later period's counts (counting more, never handing out a fresh
        // quota).
        if index > self.index {
            *self = PeriodUsage {
                index,
                requests: 0,
                tokens: 0,
                spend: 0,
            };
        }
        end
    }

    /// Whether one more request of `cost` fits `quota` in the period of
    /// `unix` (rolling over first).
    pub(crate) fn fits(
        &mut self,
        quota: Option<&CalendarQuota>,
        cost: PeriodCost,
        unix: i64,
    ) -> QuotaFit {
        let end = self.roll(quota, unix);
        let Some(q) = quota else {
            return QuotaFit::Fits;
        };
        let requests_ok = q.requests.is_none_or(|n| self.requests < n);
        let tokens_ok = q
            .tokens
            .is_none_or(|n| self.tokens.saturating_add(cost.tokens) <= n);
        let spend_ok = q
            .spend
            .is_none_or(|n| self.spend.saturating_add(cost.spend) <= n.nanos());
        if requests_ok && tokens_ok && spend_ok {
            QuotaFit::Fits
        } else {
            QuotaFit::Exhausted { reset_at: end }
        }
    }

    /// Counts one more request of `cost`.
    pub(crate) fn add(&mut self, cost: PeriodCost) {
        self.requests += 1;
        self.tokens = self.tokens.saturating_add(cost.tokens);
        self.spend = self.spend.saturating_add(cost.spend);
    }
}

/// What one request counts against a calendar quota, besides itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PeriodCost {
    /// Input + output tokens.
    pub(crate) tokens: u64,
    /// Nano-units (0 when the pool cannot price the request).
    pub(crate) spend: u64,
}

/// A wall-clock span from `now` to `at` (Unix seconds), zero if past.
pub(crate) fn until(now: i64, at: i64) -> Duration {
    Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}
