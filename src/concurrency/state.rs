//! The shared state of one concurrency limiter: the cap, the count in
//! flight, and the queue key it waits under.

use std::fmt;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderName;

use super::adaptive::Aimd;
use crate::queue::{Priority, QueueFull, QueueKey, WaitQueue, Waiter};
use crate::sync::{Arc, AtomicU64, AtomicUsize, Mutex, fence, lock};

/// The most permits one limiter counts (the cap is clamped to it).
const MAX_CAP: usize = u32::MAX as usize;
const HELD_MASK: u64 = (1 << 32) - 1;
const ONE_WAITER: u64 = 1 << 32;

fn held(word: u64) -> usize {
    (word & HELD_MASK) as usize
}

fn waiting(word: u64) -> usize {
    (word >> 32) as usize
}

/// A snapshot of a concurrency limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConcurrencyStats {
    /// The cap in force (it moves in adaptive mode).
    pub cap: usize,
    /// Permits held now: requests sent whose response body has not ended.
    pub in_flight: usize,
    /// The highest `in_flight` seen since the limiter was built.
    pub peak: usize,
    /// Requests waiting for a permit.
    pub queued: usize,
}

pub(crate) struct Shared {
    pub(crate) key: QueueKey,
    pub(crate) queue: WaitQueue,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) priority_header: Option<HeaderName>,
    cap: AtomicUsize,
    /// Permits held (low 32 bits) and this limiter's waiters in the queue
    /// (high 32 bits: exactly `queue.len_of(key)`, as only this limiter
    /// uses its key, but read without the queue's lock). One word, so the
    /// fast path checks both in one CAS, and a release learns from its own
    /// `fetch_sub` whether anyone waits: every read that matters is an RMW
    /// or follows one on the same word, so no fence is needed.
    word: AtomicU64,
    peak: AtomicUsize,
    aimd: Option<Mutex<Aimd>>,
    /// `aimd.epoch`, readable without the lock when a permit is taken.
    epoch: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyState")
            .field("key", &self.key)
            .field("stats", &self.stats())
            .field("adaptive", &self.aimd.as_ref().map(|a| lock(a).config))
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        cap: usize,
        queue: WaitQueue,
        max_wait: Option<Duration>,
        priority_header: Option<HeaderName>,
        aimd: Option<Aimd>,
    ) -> Self {
        Shared {
            key: QueueKey::unique(),
            queue,
            max_wait,
            priority_header,
            cap: AtomicUsize::new(aimd.as_ref().map_or(cap, |a| a.cap).min(MAX_CAP)),
            word: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
            aimd: aimd.map(Mutex::new),
            epoch: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> ConcurrencyStats {
        let word = self.word.load(Ordering::SeqCst);
        ConcurrencyStats {
            cap: self.cap.load(Ordering::SeqCst),
            in_flight: held(word),
            peak: self.peak.load(Ordering::SeqCst),
            queued: waiting(word),
        }
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        self.aimd.is_some()
    }

    /// Takes a permit if one is free; returns the adaptive epoch it was
    /// taken in. The caller wraps it in a [`Permit`] at once.
    ///
    /// `fast`: for a newcomer, which may only take a permit when no one of
    /// this limiter waits (it never jumps the queue). The head of the queue
    /// passes `false` (it is one of the waiters).
    pub(crate) fn try_acquire(&self, fast: bool) -> Option<u64> {
        // Why no wake-up is lost: a waiter counts itself in (an RMW on
        // `word`) before it registers its waker and tries here; a release
        // is an RMW on `word` too. If the release comes first in the word's
        // order, the waiter's own RMW, and so this load, sees the freed
        // permit; if it comes after, the release sees the waiter and wakes
        // the head (under the queue's lock, which orders it after or before
        // the registration — either way the head tries again).
        let cap = self.cap.load(Ordering::SeqCst) as u64;
        let mut current = self.word.load(Ordering::SeqCst);
        loop {
            if (fast && waiting(current) > 0) || current & HELD_MASK >= cap {
                return None;
            }
            match self.word.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let now_held = held(current) + 1;
        if now_held > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(now_held, Ordering::Relaxed);
        }
        Some(if self.aimd.is_some() {
            self.epoch.load(Ordering::SeqCst)
        } else {
            0
        })
    }

    fn release(&self) {
        let before = self.word.fetch_sub(1, Ordering::SeqCst);
        if waiting(before) > 0 {
            self.queue.wake_head(self.key);
        }
    }

    /// Takes a place in the queue, counted in first.
    /// (An associated function, not a method: loom's `Arc` cannot be a
    /// receiver.)
    pub(crate) fn enqueue(
        this: &Arc<Self>,
        priority: Priority,
        now: tokio::time::Instant,
    ) -> Result<Queued, QueueFull> {
        this.word.fetch_add(ONE_WAITER, Ordering::SeqCst);
        match this.queue.try_enqueue(this.key, priority, now) {
            Ok(waiter) => Ok(Queued {
                shared: Arc::clone(this),
                waiter: Some(waiter),
            }),
            Err(full) => {
                this.word.fetch_sub(ONE_WAITER, Ordering::SeqCst);
                Err(full)
            }
        }
    }

    /// An overload signal from a request admitted in `epoch`.
    pub(crate) fn overload(&self, epoch: u64) {
        if let Some(aimd) = &self.aimd {
            let mut a = lock(aimd);
            if a.overload(epoch) {
                self.cap.store(a.cap, Ordering::SeqCst);
            }
            self.epoch.store(a.epoch, Ordering::SeqCst);
        }
    }

    /// A request that succeeded.
    pub(crate) fn success(&self) {
        let Some(aimd) = &self.aimd else { return };
        let raised = {
            let mut a = lock(aimd);
            let raised = a.success();
            if raised {
                self.cap.store(a.cap, Ordering::SeqCst);
            }
            raised
        };
        // A raised cap is a freed permit. The fence pairs the `cap` store
        // with a waiter's count-in; if a waiter still misses it, the next
        // release wakes it (a raise only matters while permits are held).
        fence(Ordering::SeqCst);
        if raised && waiting(self.word.load(Ordering::SeqCst)) > 0 {
            self.queue.wake_head(self.key);
        }
    }
}

/// One admitted request's permit: released (and the head of the queue
/// woken) when dropped.
pub(crate) struct Permit {
    pub(crate) shared: Arc<Shared>,
    /// The adaptive epoch it was taken in.
    pub(crate) epoch: u64,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.release();
    }
}

/// A place in the queue that keeps the waiter count exact: it is lowered before the
/// place is given back (which wakes the next head).
pub(crate) struct Queued {
    shared: Arc<Shared>,
    waiter: Option<Waiter>,
}

impl fmt::Debug for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued")
            .field("waiter", &self.waiter)
            .finish()
    }
}

impl Queued {
    pub(crate) fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.waiter.as_mut() {
            Some(w) => w.poll_turn(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.shared.word.fetch_sub(ONE_WAITER, Ordering::SeqCst);
        drop(self.waiter.take());
    }
}
