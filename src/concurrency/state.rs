//! The shared state of one concurrency limiter: the cap, the count in
//! flight, and the queue key it waits under.

use std::fmt;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderName;

use super::adaptive::Aimd;
use crate::queue::{Priority, QueueFull, WaitQueue, Waiter};
use crate::sync::{Arc, AtomicU64, AtomicUsize, Mutex, fence, lock};

/// Queue keys of concurrency limiters: unique per limiter and without the
/// top bit, which the rate limiter's group keys all carry, so the two can
/// share one queue.
/// (std's atomic even under loom: a `static` needs a `const` constructor.)
static NEXT_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_key() -> u64 {
    NEXT_KEY.fetch_add(1, Ordering::Relaxed) & !(1 << 63)
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
    pub(crate) key: u64,
    pub(crate) queue: WaitQueue,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) priority_header: Option<HeaderName>,
    cap: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// Our waiters in the queue — exactly `queue.len_of(key)`, as only this
    /// limiter uses its key, but read without the queue's lock: the fast
    /// path and every release look at it.
    queued: AtomicUsize,
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
            key: next_key(),
            queue,
            max_wait,
            priority_header,
            cap: AtomicUsize::new(aimd.as_ref().map_or(cap, |a| a.cap)),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            aimd: aimd.map(Mutex::new),
            epoch: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> ConcurrencyStats {
        ConcurrencyStats {
            cap: self.cap.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            peak: self.peak.load(Ordering::SeqCst),
            queued: self.queued.load(Ordering::SeqCst),
        }
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        self.aimd.is_some()
    }

    /// Whether anyone of this limiter is waiting (the fast path may only
    /// take a permit when no one is, so it never jumps the queue).
    pub(crate) fn has_waiters(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > 0
    }

    /// Takes a permit if one is free; returns the adaptive epoch it was
    /// taken in. The caller wraps it in a [`Permit`] at once.
    pub(crate) fn try_acquire(&self) -> Option<u64> {
        // A waiter bumps `queued` and then (after a SeqCst fence) tries
        // here; a release lowers `in_flight` and then (after a SeqCst
        // fence) reads `queued`. The fences order the two pairs, so either
        // the waiter sees the freed permit or the release sees the waiter
        // and wakes the head. (SeqCst accesses alone would do in the C++
        // model, but loom models them as AcqRel and finds the lost wake-up;
        // fences it models exactly.)
        let cap = self.cap.load(Ordering::SeqCst);
        let mut current = self.in_flight.load(Ordering::SeqCst);
        loop {
            if current >= cap {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        if current + 1 > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(current + 1, Ordering::Relaxed);
        }
        Some(if self.aimd.is_some() {
            self.epoch.load(Ordering::SeqCst)
        } else {
            0
        })
    }

    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.has_waiters() {
            self.queue.wake_head(self.key);
        }
    }

    /// Takes a place in the queue, counted in `queued` first.
    /// (An associated function, not a method: loom's `Arc` cannot be a
    /// receiver.)
    pub(crate) fn enqueue(
        this: &Arc<Self>,
        priority: Priority,
        now: tokio::time::Instant,
    ) -> Result<Queued, QueueFull> {
        this.queued.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `release` (see `try_acquire`).
        fence(Ordering::SeqCst);
        match this.queue.try_enqueue(this.key, priority, now) {
            Ok(waiter) => Ok(Queued {
                shared: Arc::clone(this),
                waiter: Some(waiter),
            }),
            Err(full) => {
                this.queued.fetch_sub(1, Ordering::SeqCst);
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
        // Same pairing as in `release`: a raised cap is a freed permit.
        fence(Ordering::SeqCst);
        if raised && self.has_waiters() {
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

/// A place in the queue that keeps `queued` exact: it is lowered before the
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
        self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        drop(self.waiter.take());
    }
}
