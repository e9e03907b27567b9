//! What a GCRA limits, and by how much: the [`Dimension`]s, a validated
//! [`Limit`] per dimension, and [`nanos`], the time unit of the algorithm
//! (see [`gcra`](super::gcra)).

use std::fmt;
use std::time::Duration;

use crate::error::InvalidConfig;

#[cfg(all(test, not(loom)))]
#[path = "limit/tests.rs"]
mod tests;

/// How many dimensions a [`Gcra`] can limit at once (requests, input tokens,
/// output tokens, and input + output tokens together). Cost vectors are `[u64; DIMENSIONS]` indexed by
/// [`Dimension::index`].
///
/// [`Gcra`]: super::gcra::Gcra
pub(crate) const DIMENSIONS: usize = 4;

/// The longest span, in nanoseconds, one bucket may cover (`burst · T` and
/// `per`): 2^62 ns, about 146 years. Far beyond any real limit, and it leaves
/// headroom so that `now + capacity` cannot overflow for any realistic `now`.
const MAX_SPAN_NANOS: u64 = 1 << 62;

/// Converts a [`Duration`] to whole nanoseconds, saturating at `u64::MAX`.
///
/// Use it to turn `instant.duration_since(base)` into the `now` the GCRA
/// operations take.
#[must_use]
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One quantity a provider limits separately.
///
/// Anthropic publishes separate per-minute limits for requests, input
/// tokens and output tokens; OpenAI limits requests and *tokens* — input and
/// output counted together against one tokens-per-minute limit
/// ([`Dimension::Tokens`], its `x-ratelimit-*-tokens` headers). A request
/// must fit every dimension that is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Requests (a request usually costs 1).
    Requests = 0,
    /// Input tokens (estimated from the request body before it is sent).
    InputTokens = 1,
    /// Output tokens (reserved from `max_tokens`, corrected when usage is known).
    OutputTokens = 2,
    /// Input and output tokens together against one limit, as OpenAI's
    /// tokens-per-minute counts them: reserved as the input estimate plus
    /// the output budget, reconciled to input plus output used.
    Tokens = 3,
}

impl Dimension {
    /// Every dimension, in index order.
    pub const ALL: [Dimension; DIMENSIONS] = [
        Dimension::Requests,
        Dimension::InputTokens,
        Dimension::OutputTokens,
        Dimension::Tokens,
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
            Dimension::Tokens => "tokens",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
    pub(super) burst: u64,
    /// `T`: nanoseconds one unit costs.
    pub(super) interval: u64,
    /// `burst · T`: how far ahead of `now` the TAT may be after a reservation.
    pub(super) capacity: u64,
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
    /// [`InvalidConfig`] if `amount`, `per` or `burst` is zero, if the rate is
    /// faster than one unit per nanosecond, or if `per` or `burst · T`
    /// exceeds about 146 years.
    pub fn new(amount: u64, per: Duration, burst: u64) -> Result<Self, InvalidConfig> {
        let invalid = |field, reason| Err(InvalidConfig::new(field, reason));
        if amount == 0 {
            return invalid("limit.amount", "must be at least 1");
        }
        if burst == 0 {
            return invalid("limit.burst", "must be at least 1");
        }
        let per_nanos = nanos(per);
        if per_nanos == 0 {
            return invalid("limit.per", "must be at least one nanosecond");
        }
        if per_nanos > MAX_SPAN_NANOS {
            return invalid("limit.per", "is longer than 2^62 nanoseconds");
        }
        if amount > per_nanos {
            return invalid("limit.amount", "is faster than one unit per nanosecond");
        }
        let interval = per_nanos.div_ceil(amount);
        let capacity = match burst.checked_mul(interval) {
            Some(capacity) if capacity <= MAX_SPAN_NANOS => capacity,
            _ => {
                return invalid(
                    "limit.burst",
                    "takes longer than 2^62 nanoseconds to refill",
                );
            }
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
    /// [`InvalidConfig`] if `amount` is zero or above 60 · 10⁹.
    pub fn per_minute(amount: u64) -> Result<Self, InvalidConfig> {
        Limit::new(amount, Duration::from_secs(60), amount)
    }

    /// The same rate with another burst.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] as for [`Limit::new`].
    pub fn with_burst(self, burst: u64) -> Result<Self, InvalidConfig> {
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
