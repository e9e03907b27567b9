//! [`Deadline`]: the request extension every layer that waits respects.

/// The instant by which a request must have its answer: a request
/// extension.
///
/// Admission never waits past it (with fail-fast it refuses at once when the
/// wait would), and retries never sleep past it. Set it per request, or give
/// a layer a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub tokio::time::Instant);

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: std::time::Duration) -> Self {
        Deadline(tokio::time::Instant::now() + timeout)
    }

    /// The time left from `now` (zero once passed).
    pub fn remaining(&self, now: tokio::time::Instant) -> std::time::Duration {
        self.0.saturating_duration_since(now)
    }
}
