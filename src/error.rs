//! Typed errors shared by every layer.
//!
//! Conditions the stack creates itself are small public structs returned as a
//! [`BoxError`]; match them with `err.is::<T>()` or `err.downcast_ref::<T>()`.
//! An HTTP error response from upstream is never turned into an error: it is
//! returned as the `Ok(Response)` it is.
//!
//! Every struct here is `#[non_exhaustive]`: read its fields, make one with
//! its `new` (for tests of your own layers), and new fields can come without
//! a breaking change.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// The boxed error type every layer of this crate returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A request body was larger than the configured buffering limit.
///
/// Returned by [`BufferBodyLayer`](crate::request::BufferBodyLayer) before
/// anything past the limit is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BodyTooLarge {
    /// The configured limit, in bytes.
    pub limit: usize,
}

impl BodyTooLarge {
    /// The error for a body over `limit` bytes.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        BodyTooLarge { limit }
    }
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request body exceeds the buffering limit of {} bytes",
            self.limit
        )
    }
}

impl std::error::Error for BodyTooLarge {}

/// Admission would have to wait longer than the request can: the limiter's
/// fail-fast answer.
///
/// `retry_after` is when the request would have been admitted, had it
/// waited. A fallback layer above reacts to this by degrading at once (to
/// another model) instead of queueing past the request's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimited {
    /// How long the request would have had to wait.
    pub retry_after: Duration,
}

impl RateLimited {
    /// The error for a request that would have waited `retry_after`.
    #[must_use]
    pub fn new(retry_after: Duration) -> Self {
        RateLimited { retry_after }
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limited: admission would wait {:.3}s",
            self.retry_after.as_secs_f64()
        )
    }
}

impl std::error::Error for RateLimited {}

/// No API key of the rate limiter's [`KeyPool`](crate::rate::KeyPool) can
/// take the request in time: every key is cooling down after a 429, out of
/// its calendar quota, or has no room for the request's cost before its
/// deadline or the maximum wait.
///
/// `retry_after` is how long until the first key could take it (for
/// exhausted calendar quotas, until the earliest reset). It never names a
/// key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NoKeyAvailable {
    /// How long until a key of the pool could take the request.
    pub retry_after: Duration,
}

impl NoKeyAvailable {
    /// The error for a request no key can take for `retry_after`.
    #[must_use]
    pub fn new(retry_after: Duration) -> Self {
        NoKeyAvailable { retry_after }
    }
}

impl fmt::Display for NoKeyAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no API key of the pool can take the request: the first frees in {:.3}s",
            self.retry_after.as_secs_f64()
        )
    }
}

impl std::error::Error for NoKeyAvailable {}

/// A request waited in the admission queue for longer than the configured
/// maximum wait, and was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueTimeout {
    /// How long it waited.
    pub waited: Duration,
}

impl QueueTimeout {
    /// The error for a request given up after waiting `waited`.
    #[must_use]
    pub fn new(waited: Duration) -> Self {
        QueueTimeout { waited }
    }
}

impl fmt::Display for QueueTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after waiting {:.3}s in the admission queue",
            self.waited.as_secs_f64()
        )
    }
}

impl std::error::Error for QueueTimeout {}

/// The wait queue is at its bound; the request was not queued.
///
/// Returned at once, never after waiting, so that a caller under overload
/// fails fast instead of piling up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueFull {
    /// The queue's bound.
    pub max_len: usize,
}

impl QueueFull {
    /// The error for a queue bounded at `max_len` waiters.
    #[must_use]
    pub fn new(max_len: usize) -> Self {
        QueueFull { max_len }
    }
}

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wait queue is full ({} waiters)", self.max_len)
    }
}

impl std::error::Error for QueueFull {}

/// A request whose cost in one dimension is larger than that dimension's
/// burst capacity: it could never be admitted, however long it waited, so
/// it fails at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestTooLarge {
    /// The dimension (`requests`, `input_tokens`, `output_tokens`).
    pub dimension: &'static str,
    /// What the request would cost in it.
    pub cost: u64,
    /// The most the dimension can ever admit at once.
    pub burst: u64,
}

impl RequestTooLarge {
    /// The error for a `cost` in `dimension` above its `burst`.
    #[must_use]
    pub fn new(dimension: &'static str, cost: u64, burst: u64) -> Self {
        RequestTooLarge {
            dimension,
            cost,
            burst,
        }
    }
}

impl fmt::Display for RequestTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request too large: it costs {} {} but at most {} can ever be admitted at once",
            self.cost, self.dimension, self.burst
        )
    }
}

impl std::error::Error for RequestTooLarge {}

/// A configuration that cannot work, refused when it is built.
///
/// The one configuration error of the crate: every builder, limit and the
/// simulator's configuration return it, naming the setting at fault as its
/// builder method (or config field) is called — `max_groups`,
/// `queue.max_len`, `limit.period`, `time_scale` — and saying what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidConfig {
    /// The setting at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: Cow<'static, str>,
}

impl InvalidConfig {
    /// The error for `field`, wrong because of `reason`.
    #[must_use]
    pub fn new(field: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidConfig {}

/// The request's deadline (its [`Deadline`](crate::request::Deadline), or
/// a layer's total timeout) passed while a layer waited for an answer, and
/// no answer was there to return.
///
/// A layer that has an answer at its deadline (a failed attempt, a stale
/// entry) returns that instead; this error means there was none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadlineElapsed {}

impl DeadlineElapsed {
    /// The error for a request whose deadline passed unanswered.
    #[must_use]
    pub fn new() -> Self {
        DeadlineElapsed {}
    }
}

impl fmt::Display for DeadlineElapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request's deadline passed before an answer came")
    }
}

impl std::error::Error for DeadlineElapsed {}

/// One attempt got no response head within the retry layer's
/// [`attempt_timeout`](crate::retry::RetryBuilder::attempt_timeout).
///
/// Treated as a transport failure: the retry policy may try again, time
/// and budget permitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptTimeout {
    /// The configured per-attempt timeout.
    pub timeout: Duration,
}

impl AttemptTimeout {
    /// The error for an attempt unanswered after `timeout`.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        AttemptTimeout { timeout }
    }
}

impl fmt::Display for AttemptTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attempt got no response within {:.3}s",
            self.timeout.as_secs_f64()
        )
    }
}

impl std::error::Error for AttemptTimeout {}

/// A layer stopped reading ahead in a response body that made no progress
/// within its bound (the request's deadline or the layer's look-ahead
/// timeout), and gave the body up: the bytes read before are delivered,
/// then this error ends the body.
///
/// Giving the body up drops the upstream body at once, so whatever it held
/// below (a concurrency permit, a connection) is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BodyStalled {
    /// How long the layer waited for the body.
    pub waited: Duration,
}

impl BodyStalled {
    /// The error for a body given up after waiting `waited`.
    #[must_use]
    pub fn new(waited: Duration) -> Self {
        BodyStalled { waited }
    }
}

impl fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "response body stalled: given up after waiting {:.3}s",
            self.waited.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyStalled {}

/// The rate limiter could not read the request's body, and was built to
/// refuse such requests ([`Unparsed::Refuse`](crate::rate::Unparsed::Refuse))
/// rather than charge an estimate.
///
/// A body is unreadable when it is not a JSON object, is truncated or
/// malformed, nests too deep, gives a read field a value of the wrong type
/// (a `model` that is not a string), or is not buffered at all (no
/// [`BufferBodyLayer`](crate::request::BufferBodyLayer) above): its cost
/// cannot be known. An empty body costs no tokens and is not refused.
/// Never retried: the same body would be refused again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnreadableRequest {
    /// The body's length in bytes, when the limiter saw it.
    pub body_len: Option<usize>,
}

impl UnreadableRequest {
    /// The error for a body of `body_len` bytes (`None`: not seen).
    #[must_use]
    pub fn new(body_len: Option<usize>) -> Self {
        UnreadableRequest { body_len }
    }
}

impl fmt::Display for UnreadableRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.body_len {
            Some(n) => write!(
                f,
                "request refused: its {n}-byte body could not be read to know its cost"
            ),
            None => {
                f.write_str("request refused: its body was not buffered, so its cost is unknown")
            }
        }
    }
}

impl std::error::Error for UnreadableRequest {}

/// A request of a new limit group (API key and model) found its part of
/// the rate limiter's group map full, with every group in it in use by a
/// request (waiting, reserved or in flight): none could make room without
/// splitting a group in two.
///
/// Returned at once by [`RateLimit`](crate::rate::RateLimit); the map never
/// holds more than `max_groups` groups. Raise `max_groups` if it is seen
/// under normal load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TooManyGroups {
    /// The most groups the map holds.
    pub max_groups: usize,
}

impl TooManyGroups {
    /// The error for a map holding at most `max_groups` groups.
    #[must_use]
    pub fn new(max_groups: usize) -> Self {
        TooManyGroups { max_groups }
    }
}

impl fmt::Display for TooManyGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limiter: every group that could make room for a new key is in use ({} groups at most)",
            self.max_groups
        )
    }
}

impl std::error::Error for TooManyGroups {}

/// A shared backend (Redis) failed a command or did not answer within its
/// timeout. A store meeting it follows its failure policy; this error
/// reaches the caller only under a fail-closed policy.
///
/// `reason` is redis-rs's category of the failure (never a URL, a key or
/// a value).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendError {
    /// Set when the command timed out: the bound it exceeded.
    pub timeout: Option<Duration>,
    /// What failed.
    pub reason: Cow<'static, str>,
}

impl BackendError {
    /// A failure for `reason`.
    #[must_use]
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        BackendError {
            timeout: None,
            reason: reason.into(),
        }
    }

    /// No answer within `timeout`.
    #[must_use]
    pub fn timeout(timeout: Duration) -> Self {
        BackendError {
            timeout: Some(timeout),
            reason: Cow::Borrowed("timed out"),
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn unavailable(reason: &str) -> Self {
        BackendError::new(reason.to_owned())
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.timeout {
            Some(t) => write!(f, "shared backend gave no answer within {t:?}"),
            None => write!(f, "shared backend failed: {}", self.reason),
        }
    }
}

impl std::error::Error for BackendError {}

/// What a spend budget counts: tokens, or money in nano-units (10⁻⁹ of the
/// currency unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BudgetUnit {
    /// Tokens (input, output, cache writes and reads together).
    Tokens,
    /// Money, in nano-units of the price table's currency.
    Nanos,
}

impl fmt::Display for BudgetUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BudgetUnit::Tokens => "tokens",
            BudgetUnit::Nanos => "nano-units",
        })
    }
}

/// A request would take a spend cap past its limit for the current
/// period: refused at once, before anything is sent.
///
/// `scope` names the counter without key material (`tenant=acme`,
/// `key=1a2b3c4d` — a [`KeyId`](crate::KeyId) label —, `model=…`);
/// `resets_at` is when the period ends and the counter starts again. Not
/// retried by the retry layer (nothing changes before `resets_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetExceeded {
    /// The cap's name.
    pub cap: Cow<'static, str>,
    /// Which counter of the cap: its scope's values, as labels.
    pub scope: String,
    /// What the cap counts.
    pub unit: BudgetUnit,
    /// The cap's limit.
    pub limit: u64,
    /// What the counter held (spent and reserved) when the request came.
    pub used: u64,
    /// The request's estimated cost.
    pub cost: u64,
    /// When the period resets.
    pub resets_at: std::time::SystemTime,
}

impl BudgetExceeded {
    /// The error for cap `cap`'s counter `scope` at `used` of `limit`,
    /// refusing `cost`, until `resets_at`.
    #[must_use]
    pub fn new(
        cap: impl Into<Cow<'static, str>>,
        scope: impl Into<String>,
        unit: BudgetUnit,
        limit: u64,
        used: u64,
        cost: u64,
        resets_at: std::time::SystemTime,
    ) -> Self {
        BudgetExceeded {
            cap: cap.into(),
            scope: scope.into(),
            unit,
            limit,
            used,
            cost,
            resets_at,
        }
    }

    /// How long until the period resets, from now (zero if it has).
    #[must_use]
    pub fn retry_after(&self) -> Duration {
        self.resets_at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
    }
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "budget {} ({}) exceeded: {} of {} {} used, the request needs {}; resets at {}",
            self.cap,
            self.scope,
            self.used,
            self.limit,
            self.unit,
            self.cost,
            httpdate::fmt_http_date(self.resets_at)
        )
    }
}

impl std::error::Error for BudgetExceeded {}

/// A cap in money applies to a request whose model the price table does
/// not know, and the table refuses unknown models (its default: a guess
/// could under-count): a budget's money cap, or a pool key's
/// [`CalendarQuota::spend`](crate::rate::CalendarQuota::spend).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnpricedModel {
    /// The model (bounded to 256 bytes), or `None` when the request named
    /// none.
    pub model: Option<String>,
}

impl UnpricedModel {
    /// The error for `model`.
    #[must_use]
    pub fn new(model: Option<String>) -> Self {
        UnpricedModel { model }
    }
}

impl fmt::Display for UnpricedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.model {
            Some(m) => write!(f, "no price for model {m:?} under a cap in money"),
            None => f.write_str("the request names no model to price under a cap in money"),
        }
    }
}

impl std::error::Error for UnpricedModel {}

/// The budget's counter map is full of counters that still hold spend in
/// their current period: forgetting one would under-count, so a request
/// needing a new counter is refused instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TooManyBudgets {
    /// The most counters the map holds.
    pub max_counters: usize,
}

impl TooManyBudgets {
    /// The error for a map of at most `max_counters` counters.
    #[must_use]
    pub fn new(max_counters: usize) -> Self {
        TooManyBudgets { max_counters }
    }
}

impl fmt::Display for TooManyBudgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "budget: all {} counters hold spend of their current period",
            self.max_counters
        )
    }
}

impl std::error::Error for TooManyBudgets {}
