//! A pure, multi-dimension GCRA (generic cell rate algorithm).
//!
//! This is the arithmetic of the rate limiter and nothing else: no clock, no
//! lock, no allocation. Every operation is a function of the state, the
//! caller's `now` and a cost, so the in-memory store wraps a [`Gcra`] in a
//! mutex, a store outside the process could run the same integer arithmetic
//! (in a Redis Lua script, say), and the property tests drive it without
//! sleeping: the algorithm, the clock and the store are kept apart.
//!
//! # Time
//!
//! Points in time are **`u64` nanoseconds since a base the caller picks**
//! (for the in-memory store: a `tokio::time::Instant` captured when the
//! limiter is built; a store outside the process would use its own clock,
//! e.g. Redis's `TIME`). Lengths of time are [`Duration`](std::time::Duration)s. Why not
//! `Instant`: plain integers are what such a store works in, they make the
//! arithmetic exact and easy to property-test, and `u64` nanoseconds cover
//! 584 years from the base. [`nanos`] converts a `Duration` (e.g.
//! `instant - base`) saturatingly. `now` may go backwards (a clock the
//! caller does not control); nothing panics or underflows, the state just
//! does not move back in time.
//!
//! # Model
//!
//! Each configured [`Dimension`] (requests, input tokens, output tokens) is a
//! [`Bucket`] with a [`Limit`] of `amount` units per `per`, holding at most
//! `burst` units. Internally a bucket is one number, its *theoretical arrival
//! time* (TAT): the moment at which the bucket would be full again. A unit
//! costs one *emission interval* `T = ceil(per / amount)` nanoseconds (rounded
//! **up**, so the limiter never admits faster than configured), and a cost of
//! `n` fits at `now` when `max(TAT, now) + n·T ≤ now + burst·T`.
//!
//! A [`Gcra`] holds up to three buckets and [`reserves`](Gcra::reserve) a cost
//! vector all-or-nothing: either every dimension is charged or none is, and a
//! refusal says the earliest time at which the *whole* cost fits.
//!
//! In any window of length `W`, the units a bucket admits (reservations and
//! [charges](Gcra::charge) minus [refunds](Gcra::refund) made in that window)
//! never exceed `amount · W / per + burst`; the property tests check exactly
//! that.
//!
//! `tests::module_example` walks through reserving, refusing, refunding
//! and a cost above the burst.

use std::fmt;
#[cfg(test)]
use std::time::Duration;

// What is limited, and by how much, is defined in `limit.rs`; this file is
// the algorithm.
pub(crate) use super::limit::{DIMENSIONS, Dimension, Limit, nanos};

#[cfg(all(test, not(loom)))]
#[path = "gcra/tests.rs"]
mod tests;

/// A cost that exceeds a bucket's burst, so it can never be admitted.
///
/// Distinct from an ordinary "wait" because waiting would be forever: the
/// caller should fail the request (or split it), not queue it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CostExceedsBurst {
    /// The dimension whose burst is too small.
    pub(crate) dimension: Dimension,
    /// The cost asked for in that dimension.
    pub(crate) cost: u64,
    /// That dimension's burst.
    pub(crate) burst: u64,
}

impl fmt::Display for CostExceedsBurst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a cost of {} {} exceeds the burst of {} and can never be admitted",
            self.cost, self.dimension, self.burst
        )
    }
}

impl std::error::Error for CostExceedsBurst {}

/// Why a reservation was refused. Nothing was reserved in either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// Not now: the whole cost fits at `at` (nanoseconds since the base),
    /// provided nothing else is reserved in between.
    Until {
        /// The earliest time at which every dimension has room.
        at: u64,
        /// The dimension that needs the longest wait (the one that sets `at`).
        dimension: Dimension,
    },
    /// Never: a dimension's cost is above its burst.
    CostExceedsBurst(CostExceedsBurst),
}

impl Denied {
    /// When to retry, or `None` if retrying can never succeed.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn retry_at(&self) -> Option<u64> {
        match self {
            Denied::Until { at, .. } => Some(*at),
            Denied::CostExceedsBurst(_) => None,
        }
    }

    /// How long to wait from `now`, or `None` if retrying can never succeed.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn wait(&self, now: u64) -> Option<Duration> {
        self.retry_at()
            .map(|at| Duration::from_nanos(at.saturating_sub(now)))
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Until { at, dimension } => {
                write!(f, "rate limited on {dimension} until t={at}ns")
            }
            Denied::CostExceedsBurst(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Denied {}

/// Clamps a `u128` intermediate back into a `u64`.
fn clamp(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// One dimension's state: a [`Limit`] and its theoretical arrival time.
///
/// Exposed so that stores can persist and restore it ([`Bucket::from_parts`],
/// [`Bucket::tat`]); the operations live on [`Gcra`], which applies them per
/// dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    limit: Limit,
    tat: u64,
}

impl Bucket {
    /// A full bucket (TAT at the base, so full for every `now`).
    #[must_use]
    pub(crate) fn new(limit: Limit) -> Self {
        Bucket { limit, tat: 0 }
    }

    /// A bucket restored from stored state.
    #[must_use]
    pub(crate) fn from_parts(limit: Limit, tat: u64) -> Self {
        Bucket { limit, tat }
    }

    /// The bucket's limit.
    #[must_use]
    pub(crate) fn limit(&self) -> Limit {
        self.limit
    }

    /// The theoretical arrival time: when the bucket is full again
    /// (nanoseconds since the base). At or before `now` means full.
    #[must_use]
    pub(crate) fn tat(&self) -> u64 {
        self.tat
    }

    /// The earliest time at which `cost` fits: `TAT + cost·T − burst·T`.
    fn earliest(&self, cost: u64, dimension: Dimension) -> Result<u64, CostExceedsBurst> {
        if cost > self.limit.burst {
            return Err(CostExceedsBurst {
                dimension,
                cost,
                burst: self.limit.burst,
            });
        }
        // cost ≤ burst, so cost·T ≤ capacity ≤ 2^62: no overflow in u128 either way.
        let needed = u128::from(self.tat) + u128::from(cost) * u128::from(self.limit.interval);
        Ok(clamp(
            needed.saturating_sub(u128::from(self.limit.capacity)),
        ))
    }

    /// Moves the TAT forward by `cost` units from `max(TAT, now)`, without
    /// any bound (used for admitted reservations and for charges).
    fn advance(&mut self, cost: u64, now: u64) {
        let from = u128::from(self.tat.max(now));
        self.tat = clamp(from + u128::from(cost) * u128::from(self.limit.interval));
    }

    fn refund(&mut self, amount: u64, now: u64) {
        // A bucket that is already full (TAT ≤ now) stays exactly as it is: a
        // full bucket cannot get fuller, and leaving the TAT alone keeps it
        // correct if a later `now` is smaller.
        if self.tat > now {
            let back = u128::from(amount) * u128::from(self.limit.interval);
            let tat = u128::from(self.tat).saturating_sub(back);
            self.tat = clamp(tat).max(now);
        }
    }

    fn available(&self, now: u64) -> u64 {
        let used = self.tat.saturating_sub(now);
        match self.limit.capacity.checked_sub(used) {
            Some(free) => free / self.limit.interval,
            None => 0,
        }
    }

    fn tighten(&mut self, remaining: u64, now: u64) {
        if remaining >= self.limit.burst {
            return;
        }
        // remaining < burst, so remaining·T < capacity.
        let used = self.limit.capacity - remaining * self.limit.interval;
        let floor = now.saturating_add(used);
        self.tat = self.tat.max(floor);
    }

    fn set_limit(&mut self, limit: Limit, now: u64) {
        let used = u128::from(self.tat.saturating_sub(now));
        if used > 0 {
            // Keep the larger of "the same units used" and "the same fraction
            // used": shrinking a limit keeps what was spent, growing it does
            // not hand out the whole difference at once.
            let by_units =
                (used * u128::from(limit.interval)).div_ceil(u128::from(self.limit.interval));
            let by_fraction =
                (used * u128::from(limit.capacity)).div_ceil(u128::from(self.limit.capacity));
            self.tat = clamp(u128::from(now) + by_units.max(by_fraction));
        }
        self.limit = limit;
    }
}

/// The state of a multi-dimension limit: up to [`DIMENSIONS`] buckets.
///
/// A dimension without a bucket is unlimited: its cost is ignored and
/// [`available`](Gcra::available) reports `u64::MAX`. `Default` is a `Gcra`
/// with no limits at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Gcra {
    buckets: [Option<Bucket>; DIMENSIONS],
}

impl Gcra {
    /// A limiter with the given limit per dimension (index by
    /// [`Dimension::index`]), every bucket starting full.
    #[must_use]
    pub(crate) fn new(limits: [Option<Limit>; DIMENSIONS]) -> Self {
        Gcra {
            buckets: limits.map(|limit| limit.map(Bucket::new)),
        }
    }

    /// Builder form: this limiter with `dimension` limited by `limit` (a full bucket).
    #[must_use]
    #[cfg(test)]
    pub(crate) fn with_limit(mut self, dimension: Dimension, limit: Limit) -> Self {
        self.buckets[dimension.index()] = Some(Bucket::new(limit));
        self
    }

    /// The limit on `dimension`, if any.
    #[must_use]
    pub(crate) fn limit(&self, dimension: Dimension) -> Option<Limit> {
        self.bucket(dimension).map(Bucket::limit)
    }

    /// The bucket of `dimension`, if limited (for stores and diagnostics).
    #[must_use]
    pub(crate) fn bucket(&self, dimension: Dimension) -> Option<&Bucket> {
        self.buckets[dimension.index()].as_ref()
    }

    /// Replaces the bucket of `dimension` (restoring stored state), or removes it.
    pub(crate) fn set_bucket(&mut self, dimension: Dimension, bucket: Option<Bucket>) {
        self.buckets[dimension.index()] = bucket;
    }

    /// Whether `cost` would be admitted at `now`, without reserving it.
    ///
    /// A zero cost in a dimension does not involve that dimension, even if
    /// it is in debt (a request whose token count is unknown is limited by
    /// request count only).
    ///
    /// # Errors
    ///
    /// [`Denied::CostExceedsBurst`] if some cost is above its bucket's burst
    /// (checked first: it never succeeds), else [`Denied::Until`] with the
    /// earliest time at which every dimension has room.
    pub(crate) fn check(&self, cost: [u64; DIMENSIONS], now: u64) -> Result<(), Denied> {
        let mut latest: Option<(u64, Dimension)> = None;
        for dimension in Dimension::ALL {
            let units = cost[dimension.index()];
            let Some(bucket) = self.bucket(dimension) else {
                continue;
            };
            if units == 0 {
                continue;
            }
            let at = bucket
                .earliest(units, dimension)
                .map_err(Denied::CostExceedsBurst)?;
            if latest.is_none_or(|(best, _)| at > best) {
                latest = Some((at, dimension));
            }
        }
        match latest {
            Some((at, dimension)) if at > now => Err(Denied::Until { at, dimension }),
            _ => Ok(()),
        }
    }

    /// Reserves `cost` in every dimension at `now`, or nothing at all.
    ///
    /// On success each limited dimension's TAT moves to `max(TAT, now) +
    /// cost·T`. On refusal the state is unchanged, and
    /// [`Denied::retry_at`] is the earliest time at which the whole vector
    /// fits: retrying then succeeds if nothing else was reserved meanwhile.
    ///
    /// # Errors
    ///
    /// As for [`check`](Self::check).
    pub(crate) fn reserve(&mut self, cost: [u64; DIMENSIONS], now: u64) -> Result<(), Denied> {
        self.check(cost, now)?;
        for (bucket, units) in self.buckets.iter_mut().zip(cost) {
            if let Some(bucket) = bucket.as_mut().filter(|_| units > 0) {
                bucket.advance(units, now);
            }
        }
        Ok(())
    }

    /// Gives back `amount` units of `dimension` that were reserved but not
    /// used (e.g. `max_tokens` reserved, fewer generated).
    ///
    /// The TAT moves back by `amount · T` but never below `now`: a full
    /// bucket cannot get fuller, so [`available`](Self::available) never
    /// exceeds the burst. This mirrors the provider's own bucket, which
    /// corrects the output-token reservation when a response ends. A no-op on
    /// an unlimited dimension.
    pub(crate) fn refund(&mut self, dimension: Dimension, amount: u64, now: u64) {
        if let Some(bucket) = &mut self.buckets[dimension.index()] {
            bucket.refund(amount, now);
        }
    }

    /// Records `amount` units of `dimension` used beyond what was reserved
    /// (the estimate was too low).
    ///
    /// The TAT moves forward by `amount · T` with no cap, past the burst if
    /// need be: the overuse really happened, so it is a debt that delays
    /// later reservations until it is paid off by time. A no-op on an
    /// unlimited dimension.
    pub(crate) fn charge(&mut self, dimension: Dimension, amount: u64, now: u64) {
        if let Some(bucket) = &mut self.buckets[dimension.index()] {
            bucket.advance(amount, now);
        }
    }

    /// How many units of `dimension` a reservation could take at `now`
    /// (0 when in debt, at most the burst; `u64::MAX` if unlimited).
    #[must_use]
    pub(crate) fn available(&self, dimension: Dimension, now: u64) -> u64 {
        self.bucket(dimension)
            .map_or(u64::MAX, |bucket| bucket.available(now))
    }

    /// How long until `dimension`'s bucket is full again (zero if it is, or
    /// if the dimension is unlimited).
    #[must_use]
    #[cfg(test)]
    pub(crate) fn time_until_full(&self, dimension: Dimension, now: u64) -> Duration {
        self.bucket(dimension).map_or(Duration::ZERO, |bucket| {
            Duration::from_nanos(bucket.tat.saturating_sub(now))
        })
    }

    /// Lowers what is available in `dimension` to at most `remaining` units,
    /// never raising it.
    ///
    /// For learning from the provider: when a response says only `remaining`
    /// units are left (e.g. `anthropic-ratelimit-tokens-remaining`), other
    /// traffic on the same key is using quota this limiter cannot see. Local
    /// availability is lowered to match; if the local view is already
    /// stricter it is kept. A no-op on an unlimited dimension.
    pub(crate) fn tighten(&mut self, dimension: Dimension, remaining: u64, now: u64) {
        if let Some(bucket) = &mut self.buckets[dimension.index()] {
            bucket.tighten(remaining, now);
        }
    }

    /// Reconfigures `dimension` with `limit`, keeping what has been used.
    ///
    /// For learning from the provider (e.g. `anthropic-ratelimit-tokens-limit`
    /// differs from the configured limit). The part of the bucket in use at
    /// `now` is carried over as the larger of the same number of units and
    /// the same fraction of the burst: a lower limit keeps the units already
    /// spent (so it cannot over-admit), a higher one frees room in
    /// proportion instead of all at once. Debt is carried the same way. A
    /// dimension that was unlimited starts full.
    pub(crate) fn set_limit(&mut self, dimension: Dimension, limit: Limit, now: u64) {
        match &mut self.buckets[dimension.index()] {
            Some(bucket) => bucket.set_limit(limit, now),
            slot @ None => *slot = Some(Bucket::new(limit)),
        }
    }

    /// Makes `dimension` unlimited (its bucket is forgotten).
    pub(crate) fn remove_limit(&mut self, dimension: Dimension) {
        self.buckets[dimension.index()] = None;
    }
}
