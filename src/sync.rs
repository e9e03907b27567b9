//! The synchronization primitives the crate's shared state uses.
//!
//! Everything that shares state across tasks imports `Arc` and `Mutex` from
//! here, so that `RUSTFLAGS="--cfg loom"` swaps in loom's model-checked
//! versions and `tests/loom.rs` can explore every interleaving.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
// Which of these a build uses depends on its features.
#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Locks `mutex`, recovering the data if a thread panicked while holding it.
///
/// Every critical section in this crate leaves its data consistent at each
/// step that can panic (there are none by design), so a poisoned lock carries
/// no broken invariant; refusing service for the rest of the process would be
/// worse than carrying on.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
