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
