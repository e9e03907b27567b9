//! The priority wait queue that rate and concurrency admission both wait in.
//!
//! A request that cannot be admitted yet takes a place in a [`WaitQueue`] and
//! waits for its *turn*: it is the head of the queue **for its key**. The rate
//! limiter uses one key per limit group (API key × model), the concurrency
//! limiter a single key, so unrelated groups never wait behind each other,
//! while one bound ([`QueueConfig::max_len`]) caps the total number of
//! waiters across all keys. Neither layer owns the queue: it lives below both, and
//! one queue can be shared by both.
//!
//! Being the head does not admit anything. The head checks its resource (a
//! bucket, a permit) and, if that is not available yet, keeps waiting while
//! the others wait behind it — that is what makes the order fair. Whoever
//! frees the resource calls [`WaitQueue::wake_head`]; a head that leaves (it
//! was admitted, timed out or was cancelled) wakes the next head when its
//! [`Waiter`] is dropped.
//!
//! # Order
//!
//! Higher [`Priority`] first, first-come first-served within a priority, and
//! *aging* so that low priorities are never starved: each waiter is ordered by
//! its virtual time
//!
//! ```text
//! enqueue_time + (255 − priority) · aging        (then by arrival)
//! ```
//!
//! which orders exactly like `enqueue_time − priority · aging` without ever
//! going below zero. A waiter thus gains one priority level per
//! [`aging`](QueueConfig::aging) it has waited, relative to newcomers: with the
//! default 250 ms, a [`Priority::LOW`] waiter is served before any
//! [`Priority::HIGH`] newcomer that arrives more than 32 s after it. The
//! arithmetic is in `u128`, so no input can overflow it.
//!
//! The order is re-evaluated on every check: a newcomer of higher (aged)
//! priority becomes the head in front of a head that is still waiting for its
//! resource.
//!
//! # Example
//!
//! One queue shared by a rate limiter and a concurrency limiter, so that
//! their waiters share one bound:
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_resilience::concurrency::ConcurrencyLimitLayer;
//! use tower_llm_resilience::queue::{QueueConfig, WaitQueue};
//! use tower_llm_resilience::rate::{Limits, RateLimitLayer};
//!
//! # fn main() -> Result<(), tower_llm_resilience::BoxError> {
//! let queue = WaitQueue::new(QueueConfig::new(100, Duration::from_millis(250))?);
//! let rate = RateLimitLayer::builder()
//!     .limits(Limits::per_minute(50, 20_000, 8_000)?)
//!     .shared_queue(queue.clone())
//!     .build()?;
//! let concurrency = ConcurrencyLimitLayer::builder(16)
//!     .shared_queue(queue.clone())
//!     .build()?;
//! assert!(queue.is_empty());
//! # drop((rate, concurrency));
//! # Ok(())
//! # }
//! ```
//!
//! Waiting in it, as the limiters do:
//!
//! ```
//! use std::time::Duration;
//! use tokio::time::Instant;
//! use tower_llm_resilience::queue::{Priority, QueueConfig, QueueKey, WaitQueue, Waiter};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = WaitQueue::new(QueueConfig::new(100, Duration::from_millis(250))?);
//! let (group, other) = (QueueKey::unique(), QueueKey::unique());
//! let now = Instant::now();
//!
//! let batch = queue.try_enqueue(group, Priority::LOW, now)?;
//! let chat = queue.try_enqueue(group, Priority::HIGH, now)?;
//! let other_group = queue.try_enqueue(other, Priority::LOW, now)?;
//! assert!(chat.is_turn() && !batch.is_turn());
//! assert!(other_group.is_turn(), "keys wait independently");
//!
//! // The head leaves (admitted or cancelled): the next one's turn comes.
//! drop(chat);
//! assert!(batch.is_turn());
//! assert_eq!(queue.len(), 2);
//!
//! // In a future: wait for the turn, then try the resource; if it is not
//! // free, return Pending — `poll_turn` has registered the waker, and the
//! // code that frees the resource calls `queue.wake_head(group)`.
//! async fn wait_for_turn(waiter: &mut Waiter) {
//!     std::future::poll_fn(|cx| waiter.poll_turn(cx)).await
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::InvalidConfig;
pub use crate::error::QueueFull;
use crate::sync::{Arc, Mutex, lock};

/// How urgent a request is: higher is served first.
///
/// Insert it as a request extension to set a request's priority; requests
/// without one get [`Priority::NORMAL`] (the `Default`). The named levels
/// leave room in between for finer distinctions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub u8);

impl Priority {
    /// The lowest priority (0).
    pub const LOWEST: Priority = Priority(0);
    /// Background work: batch jobs, evaluations (64).
    pub const LOW: Priority = Priority(64);
    /// The default (128).
    pub const NORMAL: Priority = Priority(128);
    /// Interactive traffic a user is waiting on (192).
    pub const HIGH: Priority = Priority(192);
    /// The highest priority (255).
    pub const HIGHEST: Priority = Priority(255);

    #[cfg(any(feature = "rate", feature = "concurrency"))]
    /// A request's priority: its `Priority` extension, else the value
    /// (0–255) of the `header` named, else the default.
    pub(crate) fn of<B>(req: &http::Request<B>, header: Option<&http::HeaderName>) -> Priority {
        req.extensions()
            .get::<Priority>()
            .copied()
            .or_else(|| {
                let value = req.headers().get(header?)?.to_str().ok()?;
                value.trim().parse::<u8>().ok().map(Priority)
            })
            .unwrap_or_default()
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

/// The bound and the aging rate of a [`WaitQueue`].
///
/// `Default` is 1 024 waiters and 250 ms of aging per priority level (a
/// [`Priority::LOWEST`] waiter overtakes [`Priority::HIGHEST`] newcomers after
/// about 64 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    max_len: usize,
    aging: Duration,
}

impl QueueConfig {
    /// At most `max_len` waiters in total (across keys); a waiter gains one
    /// priority level per `aging` waited.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] if `max_len` is zero (every request would be
    /// refused: disable queueing in the layer instead) or `aging` is zero
    /// (priorities would mean nothing).
    pub fn new(max_len: usize, aging: Duration) -> Result<Self, InvalidConfig> {
        if max_len == 0 {
            return Err(InvalidConfig::new("queue.max_len", "must be at least 1"));
        }
        if aging.is_zero() {
            return Err(InvalidConfig::new(
                "queue.aging",
                "must be longer than zero",
            ));
        }
        Ok(QueueConfig { max_len, aging })
    }

    /// The most waiters the queue holds, across all keys.
    #[must_use]
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// How long a waiter waits to gain one priority level over newcomers.
    #[must_use]
    pub fn aging(&self) -> Duration {
        self.aging
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_len: 1024,
            aging: Duration::from_millis(250),
        }
    }
}

/// A waiter's place: virtual time, then arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Ticket {
    vtime: u128,
    seq: u64,
}

/// The waiters of one key, in order, each with the waker of its last poll.
type KeyQueue = BTreeMap<Ticket, Option<Waker>>;

#[derive(Debug, Default)]
struct State {
    /// Only keys with at least one waiter: an idle key costs nothing.
    keys: BTreeMap<QueueKey, KeyQueue>,
    len: usize,
    next_seq: u64,
}

/// Whose turn a waiter waits for: the rate limiter takes one key per limit
/// group, the concurrency limiter one per limiter. Drawn from one
/// process-wide counter, so nothing sharing a queue ever shares a key by
/// accident.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey(u64);

impl fmt::Debug for QueueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl QueueKey {
    /// A key nothing else in the process has.
    #[must_use]
    pub fn unique() -> Self {
        // std's atomic even under loom: a `static` needs a `const` constructor.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        QueueKey(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

#[derive(Debug)]
struct Shared {
    config: QueueConfig,
    /// Enqueue times are measured from here.
    base: Instant,
    state: Mutex<State>,
}

/// A bounded, keyed priority queue of waiting requests.
///
/// Cheap to clone: clones share one queue, as every clone of a layer
/// shares its state. See the [module docs](self) for the order.
#[derive(Clone)]
pub struct WaitQueue {
    shared: Arc<Shared>,
}

impl fmt::Debug for WaitQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("WaitQueue")
            .field("config", &self.shared.config)
            .field("len", &state.len)
            .field("keys", &state.keys.len())
            .finish()
    }
}

impl Default for WaitQueue {
    fn default() -> Self {
        WaitQueue::new(QueueConfig::default())
    }
}

impl WaitQueue {
    /// An empty queue.
    #[must_use]
    pub fn new(config: QueueConfig) -> Self {
        WaitQueue {
            shared: Arc::new(Shared {
                config,
                base: Instant::now(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The queue's configuration.
    #[must_use]
    pub fn config(&self) -> QueueConfig {
        self.shared.config
    }

    /// Takes a place among the waiters of `key`, enqueued at `now`.
    ///
    /// `now` is normally `Instant::now()`; it is a parameter so that the
    /// caller's single reading of the clock is used everywhere. Times before
    /// the queue was created count as its creation time.
    ///
    /// # Errors
    ///
    /// [`QueueFull`] at once if the queue already holds
    /// [`max_len`](QueueConfig::max_len) waiters.
    pub fn try_enqueue(
        &self,
        key: QueueKey,
        priority: Priority,
        now: Instant,
    ) -> Result<Waiter, QueueFull> {
        let config = self.shared.config;
        let since_base = now.saturating_duration_since(self.shared.base).as_nanos();
        // (255 − p) · aging ≤ 255 · 2^96 and since_base < 2^96: no overflow.
        let handicap = u128::from(u8::MAX - priority.0) * config.aging.as_nanos();
        let mut state = lock(&self.shared.state);
        if state.len >= config.max_len {
            return Err(QueueFull {
                max_len: config.max_len,
            });
        }
        let ticket = Ticket {
            vtime: since_base + handicap,
            seq: state.next_seq,
        };
        state.next_seq = state.next_seq.wrapping_add(1);
        state.len += 1;
        state.keys.entry(key).or_default().insert(ticket, None);
        drop(state);
        Ok(Waiter {
            shared: Arc::clone(&self.shared),
            key,
            priority,
            ticket,
        })
    }

    /// Wakes the current head of `key`, if it has polled; returns whether a
    /// task was woken.
    ///
    /// Call it after freeing what waiters of `key` wait for (a permit
    /// released, a reservation refunded, a cooldown over), so the head
    /// re-checks at once instead of at its next timer.
    pub fn wake_head(&self, key: QueueKey) -> bool {
        let waker = {
            let state = lock(&self.shared.state);
            state
                .keys
                .get(&key)
                .and_then(|queue| queue.first_key_value())
                .and_then(|(_, waker)| waker.clone())
        };
        match waker {
            Some(waker) => {
                waker.wake();
                true
            }
            None => false,
        }
    }

    /// The number of waiters, across all keys.
    #[must_use]
    pub fn len(&self) -> usize {
        lock(&self.shared.state).len
    }

    /// Whether no one is waiting.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of waiters of `key`.
    #[must_use]
    pub fn len_of(&self, key: QueueKey) -> usize {
        lock(&self.shared.state)
            .keys
            .get(&key)
            .map_or(0, BTreeMap::len)
    }
}

/// A place in a [`WaitQueue`]; dropping it gives the place back.
///
/// Dropping is the only way to leave, so leaving is cancellation-safe: a
/// request future dropped while waiting frees its place at once, and if it
/// was the head, the next head of its key is woken at once.
pub struct Waiter {
    shared: Arc<Shared>,
    key: QueueKey,
    priority: Priority,
    ticket: Ticket,
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("key", &self.key)
            .field("priority", &self.priority)
            .field("seq", &self.ticket.seq)
            .finish_non_exhaustive()
    }
}

impl Waiter {
    /// `Ready` when this waiter is the head of its key.
    ///
    /// Registers `cx`'s waker in both cases: while not the head, to be woken
    /// when the waiter in front leaves; as the head, so that
    /// [`WaitQueue::wake_head`] can wake it when the resource it then waits
    /// for is freed. Register first, then check the resource: a release in
    /// between is then never missed.
    pub fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.shared.state);
        let Some(queue) = state.keys.get_mut(&self.key) else {
            // Cannot happen (the place is only removed on drop); never hang on it.
            return Poll::Ready(());
        };
        let is_head = queue.first_key_value().map(|(ticket, _)| *ticket) == Some(self.ticket);
        if let Some(slot) = queue.get_mut(&self.ticket) {
            match slot {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        if is_head {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether this waiter is now the head of its key (no waker registered).
    #[must_use]
    pub fn is_turn(&self) -> bool {
        let state = lock(&self.shared.state);
        state
            .keys
            .get(&self.key)
            .and_then(|queue| queue.first_key_value())
            .is_none_or(|(ticket, _)| *ticket == self.ticket)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let next = {
            let mut state = lock(&self.shared.state);
            let State { keys, len, .. } = &mut *state;
            let mut next = None;
            if let Some(queue) = keys.get_mut(&self.key) {
                let was_head =
                    queue.first_key_value().map(|(ticket, _)| *ticket) == Some(self.ticket);
                if queue.remove(&self.ticket).is_some() {
                    *len = len.saturating_sub(1);
                }
                if was_head {
                    next = queue.first_key_value().and_then(|(_, waker)| waker.clone());
                }
                if queue.is_empty() {
                    keys.remove(&self.key);
                }
            }
            next
        };
        // Woken outside the lock: a waker may run arbitrary code.
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
