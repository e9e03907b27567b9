//! Heap accounting for the tests that measure memory: they install
//! `stats_alloc`'s counting allocator as their binary's global allocator,
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;
//! ```
//!
//! and read it here. In a binary that does not, every count is zero.

use std::sync::{Mutex, MutexGuard};

use stats_alloc::INSTRUMENTED_SYSTEM;

/// Heap bytes live now.
pub(crate) fn live() -> usize {
    let s = INSTRUMENTED_SYSTEM.stats();
    s.bytes_allocated.saturating_sub(s.bytes_deallocated)
}

/// Heap bytes allocated so far (growth by `realloc` included: stats_alloc
/// counts it there).
pub(crate) fn allocated() -> usize {
    INSTRUMENTED_SYSTEM.stats().bytes_allocated
}

/// One measuring test at a time: each measures the whole process's heap.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
