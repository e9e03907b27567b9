//! A pure, multi-dimension GCRA (generic cell rate algorithm).
//!
//! This is the arithmetic of the rate limiter and nothing else: no clock, no
//! lock, no allocation. Every operation is a function of the state, the
//! caller's `now` and a cost, so the in-memory store can wrap a [`Gcra`] in a
//! mutex, the Redis store can run the same integer arithmetic in Lua, and the
//! property tests can drive it without sleeping (DESIGN §3: algorithm, clock
//! and store apart).
//!
//! # Time
//!
//! Points in time are **`u64` nanoseconds since a base the caller picks**
//! (for the in-memory store: a `tokio::time::Instant` captured when the
//! limiter is built; for Redis: the server's `TIME`). Lengths of time are
//! [`Duration`]s. Why not `Instant`: plain integers are what the Redis script
//! works in, they make the arithmetic exact and easy to property-test, and
//! `u64` nanoseconds cover 584 years from the base. [`nanos`] converts a
//! `Duration` (e.g. `instant - base`) saturatingly. `now` may go backwards
//! (a clock the caller does not control); nothing panics or underflows, the
//! state just does not move back in time.
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
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_resilience::rate::gcra::{Denied, Dimension, Gcra, Limit};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // 60 requests and 1 000 input tokens per minute, each bursting to its full amount.
//! let mut gcra = Gcra::default()
//!     .with_limit(Dimension::Requests, Limit::per_minute(60)?)
//!     .with_limit(Dimension::InputTokens, Limit::per_minute(1_000)?);
//!
//! let now = 0;
//! // One request of 900 input tokens fits…
//! assert_eq!(gcra.reserve([1, 900, 0], now), Ok(()));
//! // …a second one does not, and nothing was taken from the request bucket.
//! let denied = gcra.reserve([1, 900, 0], now).unwrap_err();
//! assert_eq!(gcra.available(Dimension::Requests, now), 59);
//! // 1 000 tokens/min is one token per 60 ms: 800 more tokens take 48 s.
//! assert_eq!(denied.wait(now), Some(Duration::from_secs(48)));
//! let at = denied.retry_at().unwrap();
//! assert_eq!(gcra.reserve([1, 900, 0], at), Ok(()));
//!
//! // The first call used only 200 tokens: give the rest back.
//! gcra.refund(Dimension::InputTokens, 700, at);
//! assert_eq!(gcra.available(Dimension::InputTokens, at), 700);
//!
//! // A cost above a bucket's burst can never succeed, so it is its own outcome.
//! assert!(matches!(
//!     gcra.reserve([1, 5_000, 0], at),
//!     Err(Denied::CostExceedsBurst(_))
//! ));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

/// How many dimensions a [`Gcra`] can limit at once (requests, input tokens,
/// output tokens). Cost vectors are `[u64; DIMENSIONS]` indexed by
/// [`Dimension::index`].
pub const DIMENSIONS: usize = 3;

/// The longest span, in nanoseconds, one bucket may cover (`burst · T` and
/// `per`): 2^62 ns, about 146 years. Far beyond any real limit, and it leaves
/// headroom so that `now + capacity` cannot overflow for any realistic `now`.
const MAX_SPAN_NANOS: u64 = 1 << 62;

/// Converts a [`Duration`] to whole nanoseconds, saturating at `u64::MAX`.
///
/// Use it to turn `instant.duration_since(base)` into the `now` the GCRA
/// operations take.
#[must_use]
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One quantity a provider limits separately.
///
/// Anthropic and OpenAI both publish separate per-minute limits for requests,
/// input (prompt) tokens and output (completion) tokens; a request must fit
/// all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Requests (a request usually costs 1).
    Requests = 0,
    /// Input tokens (estimated from the request body before it is sent).
    InputTokens = 1,
    /// Output tokens (reserved from `max_tokens`, corrected when usage is known).
    OutputTokens = 2,
}

impl Dimension {
    /// Every dimension, in index order.
    pub const ALL: [Dimension; DIMENSIONS] = [
        Dimension::Requests,
        Dimension::InputTokens,
        Dimension::OutputTokens,
    ];

    /// The position of this dimension in a cost vector.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short lowercase name, for messages and metrics labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::InputTokens => "input_tokens",
            Dimension::OutputTokens => "output_tokens",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A limit that cannot be enforced: zero, or too large to compute with.
///
/// Returned by [`Limit::new`] so that a bad configuration fails when it is
/// built, not as odd behaviour at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidLimit {
    reason: &'static str,
}

impl InvalidLimit {
    /// What is wrong with the limit.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid rate limit: {}", self.reason)
    }
}

impl std::error::Error for InvalidLimit {}

/// `amount` units per `per`, holding at most `burst` units at once.
///
/// Validated on construction, so every `Limit` can be computed with: the
/// emission interval `T = ceil(per / amount)` is at least one nanosecond and
/// `burst · T` fits comfortably in a `u64`. Rounding `T` up keeps the limiter
/// conservative; the relative error is below `1 / T`, i.e. under 0.1 % for
/// anything slower than a million units per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    amount: u64,
    per: Duration,
    burst: u64,
    /// `T`: nanoseconds one unit costs.
    interval: u64,
    /// `burst · T`: how far ahead of `now` the TAT may be after a reservation.
    capacity: u64,
}

impl Limit {
    /// `amount` units per `per`, bursting to `burst` units.
    ///
    /// Providers' buckets usually hold a full period's amount (`burst ==
    /// amount`); use a smaller `burst` to smooth traffic, a larger one only
    /// if the provider really allows it.
    ///
    /// # Errors
    ///
    /// [`InvalidLimit`] if `amount`, `per` or `burst` is zero, if the rate is
    /// faster than one unit per nanosecond, or if `per` or `burst · T`
    /// exceeds about 146 years.
    pub fn new(amount: u64, per: Duration, burst: u64) -> Result<Self, InvalidLimit> {
        let invalid = |reason| Err(InvalidLimit { reason });
        if amount == 0 {
            return invalid("amount must be at least 1");
        }
        if burst == 0 {
            return invalid("burst must be at least 1");
        }
        let per_nanos = nanos(per);
        if per_nanos == 0 {
            return invalid("period must be at least one nanosecond");
        }
        if per_nanos > MAX_SPAN_NANOS {
            return invalid("period is longer than 2^62 nanoseconds");
        }
        if amount > per_nanos {
            return invalid("rate is faster than one unit per nanosecond");
        }
        let interval = per_nanos.div_ceil(amount);
        let capacity = match burst.checked_mul(interval) {
            Some(capacity) if capacity <= MAX_SPAN_NANOS => capacity,
            _ => return invalid("burst takes longer than 2^62 nanoseconds to refill"),
        };
        Ok(Limit {
            amount,
            per,
            burst,
            interval,
            capacity,
        })
    }

    /// `amount` units per minute, bursting to `amount` — the shape of
    /// Anthropic's and OpenAI's published RPM / ITPM / OTPM limits.
    ///
    /// # Errors
    ///
    /// [`InvalidLimit`] if `amount` is zero or above 60 · 10⁹.
    pub fn per_minute(amount: u64) -> Result<Self, InvalidLimit> {
        Limit::new(amount, Duration::from_secs(60), amount)
    }

    /// The same rate with another burst.
    ///
    /// # Errors
    ///
    /// [`InvalidLimit`] as for [`Limit::new`].
    pub fn with_burst(self, burst: u64) -> Result<Self, InvalidLimit> {
        Limit::new(self.amount, self.per, burst)
    }

    /// Units allowed per [`per`](Self::per).
    #[must_use]
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The period `amount` refers to.
    #[must_use]
    pub fn per(&self) -> Duration {
        self.per
    }

    /// The most units the bucket holds, i.e. the largest cost that can ever fit.
    #[must_use]
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// The emission interval `T`: nanoseconds of refill one unit costs
    /// (`per / amount`, rounded up).
    #[must_use]
    pub fn interval_nanos(&self) -> u64 {
        self.interval
    }

    /// `burst · T`: nanoseconds an empty bucket takes to become full.
    #[must_use]
    pub fn capacity_nanos(&self) -> u64 {
        self.capacity
    }
}

/// A cost that exceeds a bucket's burst, so it can never be admitted.
///
/// Distinct from an ordinary "wait" because waiting would be forever: the
/// caller should fail the request (or split it), not queue it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostExceedsBurst {
    /// The dimension whose burst is too small.
    pub dimension: Dimension,
    /// The cost asked for in that dimension.
    pub cost: u64,
    /// That dimension's burst.
    pub burst: u64,
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
pub enum Denied {
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
    pub fn retry_at(&self) -> Option<u64> {
        match self {
            Denied::Until { at, .. } => Some(*at),
            Denied::CostExceedsBurst(_) => None,
        }
    }

    /// How long to wait from `now`, or `None` if retrying can never succeed.
    #[must_use]
    pub fn wait(&self, now: u64) -> Option<Duration> {
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
pub struct Bucket {
    limit: Limit,
    tat: u64,
}

impl Bucket {
    /// A full bucket (TAT at the base, so full for every `now`).
    #[must_use]
    pub fn new(limit: Limit) -> Self {
        Bucket { limit, tat: 0 }
    }

    /// A bucket restored from stored state.
    #[must_use]
    pub fn from_parts(limit: Limit, tat: u64) -> Self {
        Bucket { limit, tat }
    }

    /// The bucket's limit.
    #[must_use]
    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// The theoretical arrival time: when the bucket is full again
    /// (nanoseconds since the base). At or before `now` means full.
    #[must_use]
    pub fn tat(&self) -> u64 {
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
pub struct Gcra {
    buckets: [Option<Bucket>; DIMENSIONS],
}

impl Gcra {
    /// A limiter with the given limit per dimension (index by
    /// [`Dimension::index`]), every bucket starting full.
    #[must_use]
    pub fn new(limits: [Option<Limit>; DIMENSIONS]) -> Self {
        Gcra {
            buckets: limits.map(|limit| limit.map(Bucket::new)),
        }
    }

    /// Builder form: this limiter with `dimension` limited by `limit` (a full bucket).
    #[must_use]
    pub fn with_limit(mut self, dimension: Dimension, limit: Limit) -> Self {
        self.buckets[dimension.index()] = Some(Bucket::new(limit));
        self
    }

    /// The limit on `dimension`, if any.
    #[must_use]
    pub fn limit(&self, dimension: Dimension) -> Option<Limit> {
        self.bucket(dimension).map(Bucket::limit)
    }

    /// The bucket of `dimension`, if limited (for stores and diagnostics).
    #[must_use]
    pub fn bucket(&self, dimension: Dimension) -> Option<&Bucket> {
        self.buckets[dimension.index()].as_ref()
    }

    /// Replaces the bucket of `dimension` (restoring stored state), or removes it.
    pub fn set_bucket(&mut self, dimension: Dimension, bucket: Option<Bucket>) {
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
    pub fn check(&self, cost: [u64; DIMENSIONS], now: u64) -> Result<(), Denied> {
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
    pub fn reserve(&mut self, cost: [u64; DIMENSIONS], now: u64) -> Result<(), Denied> {
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
    pub fn refund(&mut self, dimension: Dimension, amount: u64, now: u64) {
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
    pub fn charge(&mut self, dimension: Dimension, amount: u64, now: u64) {
        if let Some(bucket) = &mut self.buckets[dimension.index()] {
            bucket.advance(amount, now);
        }
    }

    /// How many units of `dimension` a reservation could take at `now`
    /// (0 when in debt, at most the burst; `u64::MAX` if unlimited).
    #[must_use]
    pub fn available(&self, dimension: Dimension, now: u64) -> u64 {
        self.bucket(dimension)
            .map_or(u64::MAX, |bucket| bucket.available(now))
    }

    /// How long until `dimension`'s bucket is full again (zero if it is, or
    /// if the dimension is unlimited).
    #[must_use]
    pub fn time_until_full(&self, dimension: Dimension, now: u64) -> Duration {
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
    pub fn tighten(&mut self, dimension: Dimension, remaining: u64, now: u64) {
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
    pub fn set_limit(&mut self, dimension: Dimension, limit: Limit, now: u64) {
        match &mut self.buckets[dimension.index()] {
            Some(bucket) => bucket.set_limit(limit, now),
            slot @ None => *slot = Some(Bucket::new(limit)),
        }
    }

    /// Makes `dimension` unlimited (its bucket is forgotten).
    pub fn remove_limit(&mut self, dimension: Dimension) {
        self.buckets[dimension.index()] = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    const R: Dimension = Dimension::Requests;
    const I: Dimension = Dimension::InputTokens;
    const O: Dimension = Dimension::OutputTokens;
    const SEC: u64 = 1_000_000_000;

    fn limit(amount: u64, per_secs: u64, burst: u64) -> Limit {
        Limit::new(amount, Duration::from_secs(per_secs), burst).unwrap()
    }

    /// 10 requests/s burst 10 (T = 100 ms); 100 input tokens/s burst 50 (T = 10 ms).
    fn two_dims() -> Gcra {
        Gcra::default()
            .with_limit(R, limit(10, 1, 10))
            .with_limit(I, limit(100, 1, 50))
    }

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
    fn new_bucket_is_full_and_burst_is_admitted_at_once() {
        let mut g = two_dims();
        assert_eq!(g.available(R, 0), 10);
        assert_eq!(g.available(I, 0), 50);
        assert_eq!(g.available(O, 0), u64::MAX, "unlimited");
        assert_eq!(g.reserve([10, 50, 1_000_000], 0), Ok(()));
        assert_eq!(g.available(R, 0), 0);
        assert_eq!(g.available(I, 0), 0);
    }

    #[test]
    fn refill_is_continuous() {
        let mut g = two_dims();
        g.reserve([10, 0, 0], 5 * SEC).unwrap();
        assert_eq!(g.available(R, 5 * SEC + 99_999_999), 0);
        assert_eq!(g.available(R, 5 * SEC + SEC / 10), 1);
        assert_eq!(g.available(R, 5 * SEC + SEC / 2), 5);
        assert_eq!(g.available(R, 5 * SEC + 10 * SEC), 10, "never above burst");
    }

    #[test]
    fn denied_reservation_changes_nothing_and_reports_max_over_dimensions() {
        let mut g = two_dims();
        g.reserve([1, 50, 0], 0).unwrap();
        let before = g.clone();
        // Requests have room; input tokens need 20 more units = 200 ms.
        let d = g.reserve([1, 20, 0], 0).unwrap_err();
        assert_eq!(
            d,
            Denied::Until {
                at: 200_000_000,
                dimension: I
            }
        );
        assert_eq!(g, before, "all or nothing");
        assert_eq!(d.wait(50_000_000), Some(Duration::from_millis(150)));
        // One nanosecond early is still too early; at the returned time it fits.
        assert!(g.reserve([1, 20, 0], 199_999_999).is_err());
        assert_eq!(g.reserve([1, 20, 0], 200_000_000), Ok(()));
    }

    #[test]
    fn dimension_with_longest_wait_is_reported() {
        let mut g = two_dims();
        g.reserve([10, 10, 0], 0).unwrap();
        let d = g.reserve([5, 10, 0], 0).unwrap_err();
        assert_eq!(
            d,
            Denied::Until {
                at: 500_000_000,
                dimension: R
            }
        );
    }

    #[test]
    fn cost_above_burst_is_its_own_outcome() {
        let mut g = two_dims();
        let before = g.clone();
        let d = g.reserve([1, 51, 0], 0).unwrap_err();
        assert_eq!(
            d,
            Denied::CostExceedsBurst(CostExceedsBurst {
                dimension: I,
                cost: 51,
                burst: 50
            })
        );
        assert_eq!(d.retry_at(), None);
        assert_eq!(d.wait(0), None);
        assert_eq!(g, before);
        assert!(d.to_string().contains("input_tokens"), "{d}");
        // Even when the bucket is merely empty, "never" wins over "later".
        g.reserve([10, 0, 0], 0).unwrap();
        assert!(matches!(
            g.reserve([1, u64::MAX, 0], 0),
            Err(Denied::CostExceedsBurst(_))
        ));
    }

    #[test]
    fn zero_cost_ignores_a_dimension_even_in_debt() {
        let mut g = two_dims();
        g.charge(I, 10_000, 0);
        assert_eq!(g.available(I, 0), 0);
        assert_eq!(g.reserve([1, 0, 0], 0), Ok(()));
        assert!(g.reserve([1, 1, 0], 0).is_err());
    }

    #[test]
    fn refund_gives_back_but_never_overfills() {
        let mut g = two_dims();
        g.reserve([0, 40, 0], 0).unwrap();
        assert_eq!(g.available(I, 0), 10);
        g.refund(I, 30, 0);
        assert_eq!(g.available(I, 0), 40);
        g.refund(I, 1_000, 0);
        assert_eq!(g.available(I, 0), 50, "full, not fuller");
        g.refund(I, u64::MAX, 0);
        assert_eq!(g.available(I, 0), 50);
        // Refunding a full bucket leaves its TAT alone.
        let tat = g.bucket(I).unwrap().tat();
        g.refund(I, 5, 7 * SEC);
        assert_eq!(g.bucket(I).unwrap().tat(), tat);
        // An unlimited dimension ignores refunds.
        g.refund(O, 5, 0);
        assert_eq!(g.available(O, 0), u64::MAX);
    }

    #[test]
    fn late_refund_is_capped_at_now() {
        let mut g = two_dims();
        g.reserve([0, 50, 0], 0).unwrap(); // TAT = 500 ms
        g.refund(I, 50, 400_000_000); // would go back to 0, stops at now
        assert_eq!(g.bucket(I).unwrap().tat(), 400_000_000);
        assert_eq!(g.available(I, 400_000_000), 50);
    }

    #[test]
    fn charge_creates_debt_beyond_the_burst() {
        let mut g = two_dims();
        g.reserve([0, 50, 0], 0).unwrap();
        g.charge(I, 100, 0); // 1 s of debt on top of the 0.5 s reservation
        assert_eq!(g.available(I, SEC), 0);
        assert_eq!(g.time_until_full(I, 0), Duration::from_millis(1_500));
        // The bucket has room again once the debt is paid off by time.
        assert_eq!(
            g.reserve([0, 1, 0], 0),
            Err(Denied::Until {
                at: SEC + 10_000_000,
                dimension: I
            })
        );
        assert_eq!(g.available(I, SEC + 10_000_000), 1);
        g.charge(I, u64::MAX, 0);
        assert_eq!(g.bucket(I).unwrap().tat(), u64::MAX, "saturates");
        assert_eq!(g.available(I, 0), 0);
        assert!(g.reserve([0, 1, 0], SEC).is_err());
    }

    #[test]
    fn time_until_full() {
        let mut g = two_dims();
        assert_eq!(g.time_until_full(R, 0), Duration::ZERO);
        g.reserve([3, 0, 0], SEC).unwrap();
        assert_eq!(g.time_until_full(R, SEC), Duration::from_millis(300));
        assert_eq!(
            g.time_until_full(R, SEC + 100_000_000),
            Duration::from_millis(200)
        );
        assert_eq!(g.time_until_full(R, 10 * SEC), Duration::ZERO);
        assert_eq!(g.time_until_full(O, 0), Duration::ZERO, "unlimited");
    }

    #[test]
    fn tighten_lowers_and_never_raises() {
        let mut g = two_dims();
        g.tighten(I, 20, 0);
        assert_eq!(g.available(I, 0), 20);
        g.tighten(I, 30, 0);
        assert_eq!(g.available(I, 0), 20, "never raised");
        g.tighten(I, 1_000, 0);
        assert_eq!(g.available(I, 0), 20);
        g.tighten(I, 0, 0);
        assert_eq!(g.available(I, 0), 0);
        // It still refills at the configured rate.
        assert_eq!(g.available(I, 100_000_000), 10);
        g.tighten(O, 0, 0);
        assert_eq!(g.available(O, 0), u64::MAX, "unlimited stays unlimited");
    }

    #[test]
    fn set_limit_keeps_used_part() {
        // Burst 50, 40 used.
        let mut g = two_dims();
        g.reserve([0, 40, 0], 0).unwrap();
        // Shrink to burst 45 at the same rate: the 40 used units stay used.
        g.set_limit(I, limit(100, 1, 45), 0);
        assert_eq!(g.available(I, 0), 5);
        // Grow to 1 000/s burst 450 (10×): same fraction (40/45) used.
        g.set_limit(I, limit(1_000, 1, 450), 0);
        assert_eq!(g.available(I, 0), 50);
        // Make it unlimited, then limited again: starts full.
        g.remove_limit(I);
        assert_eq!(g.available(I, 0), u64::MAX);
        g.set_limit(I, limit(100, 1, 50), 0);
        assert_eq!(g.available(I, 0), 50);
        // A full bucket stays full across a change.
        g.set_limit(I, limit(10, 1, 5), 0);
        assert_eq!(g.available(I, 0), 5);
    }

    #[test]
    fn set_limit_carries_debt() {
        let mut g = two_dims();
        g.charge(I, 100, 0); // 1 s of usage, 0.5 s beyond the burst.
        g.set_limit(I, limit(50, 1, 25), 0); // half the rate and burst
        assert_eq!(g.time_until_full(I, 0), Duration::from_secs(2));
        assert_eq!(g.available(I, SEC), 0);
        assert_eq!(g.available(I, 7 * SEC / 4), 12);
        assert_eq!(g.available(I, 2 * SEC), 25);
    }

    #[test]
    fn now_going_backwards_does_not_panic_or_rewind() {
        let mut g = two_dims();
        g.reserve([5, 5, 0], 10 * SEC).unwrap();
        let tat = g.bucket(R).unwrap().tat();
        assert_eq!(g.available(R, 0), 0, "the past looks fully used");
        g.refund(R, 5, 0);
        assert!(g.bucket(R).unwrap().tat() <= tat);
        assert!(g.reserve([1, 1, 0], 0).is_err());
        g.tighten(R, 0, 0);
        g.set_limit(R, limit(1, 1, 1), 0);
        // 10 s used at 100 ms/unit = 100 units, now at 1 s/unit.
        assert_eq!(g.time_until_full(R, 0), Duration::from_secs(100));
        assert_eq!(g.time_until_full(R, 200 * SEC), Duration::ZERO);
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let tiny = Limit::new(1_000_000_000, Duration::from_secs(1), 1 << 62).unwrap();
        let huge = Limit::new(1, Duration::from_nanos(1 << 62), 1).unwrap();
        let mut g = Gcra::new([Some(tiny), Some(huge), None]);
        for now in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            for cost in [0, 1, 1 << 62, u64::MAX] {
                let _ = g.check([cost, cost, cost], now);
                let _ = g.reserve([cost, cost, cost], now);
                for d in Dimension::ALL {
                    g.refund(d, cost, now);
                    g.charge(d, cost, now);
                    g.tighten(d, cost, now);
                    let _ = g.available(d, now);
                    let _ = g.time_until_full(d, now);
                }
                g.set_limit(R, huge, now);
                g.set_limit(R, tiny, now);
            }
        }
    }

    #[test]
    fn dimension_names_and_indices() {
        for (i, d) in Dimension::ALL.into_iter().enumerate() {
            assert_eq!(d.index(), i);
        }
        assert_eq!(O.to_string(), "output_tokens");
    }

    // ---- properties -------------------------------------------------------

    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        Reserve([u64; DIMENSIONS]),
        /// Refund a fraction (in 1/4ths) of the remaining part of an earlier
        /// reservation, chosen by index modulo the outstanding count.
        Refund(usize, Dimension, u8),
        Charge(Dimension, u64),
    }

    fn dimension() -> impl Strategy<Value = Dimension> {
        prop_oneof![Just(R), Just(I), Just(O)]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..3_000).prop_map(Op::Advance),
            4 => prop::array::uniform3(0u64..24).prop_map(Op::Reserve),
            2 => (any::<usize>(), dimension(), 0u8..=4).prop_map(|(i, d, q)| Op::Refund(i, d, q)),
            1 => (dimension(), 0u64..6).prop_map(|(d, n)| Op::Charge(d, n)),
        ]
    }

    /// Small nanosecond periods so that rounding of `T` matters and windows
    /// span many refills.
    fn small_limit() -> impl Strategy<Value = Limit> {
        (1u64..40, 1u64..5_000, 1u64..20).prop_filter_map("valid", |(amount, per, burst)| {
            Limit::new(amount, Duration::from_nanos(per), burst).ok()
        })
    }

    fn limits() -> impl Strategy<Value = [Option<Limit>; DIMENSIONS]> {
        prop::array::uniform3(prop::option::weighted(0.85, small_limit()))
    }

    /// A signed change of used units in one dimension at a time.
    struct Event {
        at: u64,
        dimension: Dimension,
        units: i128,
        /// A reservation the limiter admitted (windows end at these: a
        /// charge is debt the limiter could not prevent, only repay).
        admitted: bool,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn gcra_invariants(limits in limits(), ops in prop::collection::vec(op(), 1..80)) {
            let mut g = Gcra::new(limits);
            let mut now = 0u64;
            let mut events: Vec<Event> = Vec::new();
            // Remaining refundable units per admitted reservation.
            let mut outstanding: Vec<[u64; DIMENSIONS]> = Vec::new();

            for op in ops {
                match op {
                    Op::Advance(dt) => now += dt,
                    Op::Reserve(cost) => {
                        let before = g.clone();
                        match g.reserve(cost, now) {
                            Ok(()) => {
                                for d in Dimension::ALL {
                                    if let Some(l) = g.limit(d) {
                                        prop_assert!(cost[d.index()] <= l.burst());
                                        // A zero cost does not involve the dimension.
                                        if cost[d.index()] == 0 {
                                            continue;
                                        }
                                        events.push(Event { at: now, dimension: d, units: i128::from(cost[d.index()]), admitted: true });
                                    }
                                }
                                outstanding.push(cost);
                            }
                            Err(denied) => {
                                prop_assert_eq!(&g, &before, "a denied reservation changes nothing");
                                match denied {
                                    Denied::Until { at, dimension } => {
                                        prop_assert!(at > now);
                                        prop_assert!(cost[dimension.index()] > 0);
                                        // Retried at the returned time (nothing else
                                        // happening) it succeeds, one ns earlier it does not.
                                        let mut later = g.clone();
                                        prop_assert_eq!(later.reserve(cost, at), Ok(()));
                                        let mut early = g.clone();
                                        prop_assert!(early.reserve(cost, at - 1).is_err());
                                    }
                                    Denied::CostExceedsBurst(e) => {
                                        let l = g.limit(e.dimension).unwrap();
                                        prop_assert_eq!(e.burst, l.burst());
                                        prop_assert!(e.cost > l.burst());
                                        prop_assert_eq!(e.cost, cost[e.dimension.index()]);
                                    }
                                }
                            }
                        }
                    }
                    Op::Refund(i, d, quarters) => {
                        if !outstanding.is_empty() {
                            let n = outstanding.len();
                            let left = &mut outstanding[i % n][d.index()];
                            let amount = *left * u64::from(quarters) / 4;
                            *left -= amount;
                            g.refund(d, amount, now);
                            if g.limit(d).is_some() {
                                events.push(Event { at: now, dimension: d, units: -i128::from(amount), admitted: false });
                            }
                        }
                    }
                    Op::Charge(d, n) => {
                        g.charge(d, n, now);
                        if g.limit(d).is_some() {
                            events.push(Event { at: now, dimension: d, units: i128::from(n), admitted: false });
                        }
                    }
                }
                for d in Dimension::ALL {
                    if let Some(l) = g.limit(d) {
                        prop_assert!(g.available(d, now) <= l.burst(), "never more than full");
                    }
                }
            }

            // Sliding windows: net units in [s, e] ≤ amount·(e−s)/per + burst,
            // checked exactly as net·per ≤ amount·(e−s) + burst·per.
            for d in Dimension::ALL {
                let Some(l) = g.limit(d) else { continue };
                let per = i128::from(nanos(l.per()));
                let evs: Vec<&Event> = events.iter().filter(|e| e.dimension == d).collect();
                for (start, first) in evs.iter().enumerate() {
                    let mut net = 0i128;
                    for e in &evs[start..] {
                        net += e.units;
                        if !e.admitted {
                            continue;
                        }
                        let window = i128::from(e.at - first.at);
                        prop_assert!(
                            net * per <= i128::from(l.amount()) * window + i128::from(l.burst()) * per,
                            "{d}: {net} units in {window}ns with {l:?}"
                        );
                    }
                }
            }
        }

        #[test]
        fn reserve_never_panics(
            limits in limits(),
            cost in prop::array::uniform3(any::<u64>()),
            now in any::<u64>(),
            tat in any::<u64>(),
        ) {
            let mut g = Gcra::new(limits);
            for d in Dimension::ALL {
                if let Some(b) = g.bucket(d).copied() {
                    g.set_bucket(d, Some(Bucket::from_parts(b.limit(), tat)));
                }
            }
            let before = g.clone();
            if g.reserve(cost, now).is_err() {
                prop_assert_eq!(&g, &before);
            }
            for d in Dimension::ALL {
                g.refund(d, cost[d.index()], now);
                g.tighten(d, cost[d.index()], now);
                g.charge(d, cost[d.index()], now);
                let _ = g.available(d, now);
            }
        }
    }
}
