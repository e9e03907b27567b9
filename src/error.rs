//! Typed errors shared by every layer.
//!
//! Conditions the stack creates itself are small public structs returned as a
//! [`BoxError`]; match them with `err.is::<T>()` or `err.downcast_ref::<T>()`.
//! An HTTP error response from upstream is never turned into an error: it is
//! returned as the `Ok(Response)` it is.

use std::fmt;

/// The boxed error type every layer of this crate returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A request body was larger than the configured buffering limit.
///
/// Returned by [`BufferBodyLayer`](crate::request::BufferBodyLayer) before
/// anything past the limit is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge {
    /// The configured limit, in bytes.
    pub limit: usize,
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
pub struct RateLimited {
    /// How long the request would have had to wait.
    pub retry_after: std::time::Duration,
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

/// A request waited in the admission queue for longer than the configured
/// maximum wait, and was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueTimeout {
    /// How long it waited.
    pub waited: std::time::Duration,
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

/// A configuration that cannot work, refused when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidConfig {
    /// What is wrong.
    pub what: &'static str,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.what)
    }
}

impl std::error::Error for InvalidConfig {}

/// A request whose cost in one dimension is larger than that dimension's
/// burst capacity: it could never be admitted, however long it waited, so
/// it fails at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTooLarge {
    /// The dimension (`requests`, `input_tokens`, `output_tokens`).
    pub dimension: &'static str,
    /// What the request would cost in it.
    pub cost: u64,
    /// The most the dimension can ever admit at once.
    pub burst: u64,
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
