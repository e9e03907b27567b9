//! The priority wait queue that rate and concurrency admission both wait in.
//!
//! A request that cannot be admitted yet takes a place in a [`WaitQueue`] and
//! waits for its *turn*: it is the head of the queue **for its key**. The rate
//! limiter uses one key per limit group (API key × model), the concurrency
//! limiter a single key, so unrelated groups never wait behind each other,
//! while one bound ([`QueueConfig::max_len`]) caps the total number of
//! waiters across all keys. Neither layer owns the queue: it lives below both
//! (DESIGN §4).
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
//! ```
//! use std::time::Duration;
//! use tokio::time::Instant;
//! use tower_llm_resilience::queue::{Priority, QueueConfig, WaitQueue, Waiter};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = WaitQueue::new(QueueConfig::new(100, Duration::from_millis(250))?);
//! let now = Instant::now();
//!
//! let batch = queue.try_enqueue(7, Priority::LOW, now)?;
//! let chat = queue.try_enqueue(7, Priority::HIGH, now)?;
//! let other_group = queue.try_enqueue(8, Priority::LOW, now)?;
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
//! // code that frees the resource calls `queue.wake_head(key)`.
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

/// A queue configuration that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidQueueConfig {
    reason: &'static str,
}

impl InvalidQueueConfig {
    /// What is wrong with the configuration.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidQueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid wait queue configuration: {}", self.reason)
    }
}

impl std::error::Error for InvalidQueueConfig {}

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
    /// [`InvalidQueueConfig`] if `max_len` is zero (every request would be
    /// refused: disable queueing in the layer instead) or `aging` is zero
    /// (priorities would mean nothing).
    pub fn new(max_len: usize, aging: Duration) -> Result<Self, InvalidQueueConfig> {
        if max_len == 0 {
            return Err(InvalidQueueConfig {
                reason: "max_len must be at least 1",
            });
        }
        if aging.is_zero() {
            return Err(InvalidQueueConfig {
                reason: "aging must be longer than zero",
            });
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

/// The wait queue is at its bound; the request was not queued.
///
/// Returned at once, never after waiting, so that a caller under overload
/// fails fast instead of piling up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    /// The queue's bound.
    pub max_len: usize,
}

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wait queue is full ({} waiters)", self.max_len)
    }
}

impl std::error::Error for QueueFull {}

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
    keys: BTreeMap<u64, KeyQueue>,
    len: usize,
    next_seq: u64,
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
/// Cheap to clone: clones share one queue (DESIGN §3, shared state by
/// default). See the [module docs](self) for the order.
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
        key: u64,
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
    pub fn wake_head(&self, key: u64) -> bool {
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
    pub fn len_of(&self, key: u64) -> usize {
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
    key: u64,
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

    /// The key this waiter waits under.
    #[must_use]
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The priority it was enqueued with.
    #[must_use]
    pub fn priority(&self) -> Priority {
        self.priority
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
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (std::sync::Arc<CountingWaker>, Waker) {
        let counter = std::sync::Arc::new(CountingWaker::default());
        let waker = Waker::from(std::sync::Arc::clone(&counter));
        (counter, waker)
    }

    fn poll(waiter: &mut Waiter, waker: &Waker) -> Poll<()> {
        waiter.poll_turn(&mut Context::from_waker(waker))
    }

    fn queue(max_len: usize, aging_ms: u64) -> WaitQueue {
        WaitQueue::new(QueueConfig::new(max_len, Duration::from_millis(aging_ms)).unwrap())
    }

    async fn turn(waiter: &mut Waiter) {
        std::future::poll_fn(|cx| waiter.poll_turn(cx)).await;
    }

    #[test]
    fn config_validation() {
        assert!(QueueConfig::new(0, Duration::from_secs(1)).is_err());
        let e = QueueConfig::new(1, Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("aging"), "{e}");
        let c = QueueConfig::new(3, Duration::MAX).unwrap();
        assert_eq!((c.max_len(), c.aging()), (3, Duration::MAX));
        assert_eq!(QueueConfig::default().max_len(), 1024);
        assert_eq!(Priority::default(), Priority::NORMAL);
        assert!(Priority::HIGH > Priority::NORMAL);
    }

    #[test]
    fn queue_and_waiter_are_send_sync_and_debug() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<WaitQueue>();
        assert_send_sync::<Waiter>();
        assert_send_sync::<Priority>();
        let q = queue(4, 10);
        let w = q.try_enqueue(1, Priority::NORMAL, Instant::now()).unwrap();
        assert!(format!("{q:?}").contains("len: 1"));
        assert!(format!("{w:?}").contains("key: 1"));
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_within_a_priority() {
        let q = queue(10, 100);
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for id in 0..5 {
            let mut w = q.try_enqueue(0, Priority::NORMAL, Instant::now()).unwrap();
            let order = std::sync::Arc::clone(&order);
            tasks.push(tokio::spawn(async move {
                turn(&mut w).await;
                order.lock().unwrap().push(id);
                // Hold the turn for a while, as if waiting for a resource.
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(w);
            }));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn higher_priority_first() {
        let q = queue(10, 100);
        let now = Instant::now();
        let low = q.try_enqueue(0, Priority::LOW, now).unwrap();
        let normal = q.try_enqueue(0, Priority::NORMAL, now).unwrap();
        let high = q.try_enqueue(0, Priority::HIGH, now).unwrap();
        assert!(high.is_turn() && !normal.is_turn() && !low.is_turn());
        drop(high);
        assert!(normal.is_turn() && !low.is_turn());
        drop(normal);
        assert!(low.is_turn());
    }

    #[tokio::test(start_paused = true)]
    async fn newcomer_of_higher_priority_overtakes_a_waiting_head() {
        let q = queue(10, 100);
        let (_, waker) = counting();
        let mut normal = q.try_enqueue(0, Priority::NORMAL, Instant::now()).unwrap();
        assert_eq!(poll(&mut normal, &waker), Poll::Ready(()));
        let mut high = q.try_enqueue(0, Priority::HIGH, Instant::now()).unwrap();
        assert_eq!(poll(&mut high, &waker), Poll::Ready(()));
        assert_eq!(poll(&mut normal, &waker), Poll::Pending);
    }

    #[tokio::test(start_paused = true)]
    async fn aging_lets_an_old_low_priority_waiter_pass_newer_high_ones() {
        // LOW (64) vs HIGH (192): 128 levels × 1 s = 128 s of aging.
        let q = queue(10, 1_000);
        let low = q.try_enqueue(0, Priority::LOW, Instant::now()).unwrap();

        tokio::time::advance(Duration::from_secs(127)).await;
        let early = q.try_enqueue(0, Priority::HIGH, Instant::now()).unwrap();
        assert!(early.is_turn(), "127 s is not yet enough");
        drop(early);
        assert!(low.is_turn());

        tokio::time::advance(Duration::from_secs(1)).await;
        let late = q.try_enqueue(0, Priority::HIGH, Instant::now()).unwrap();
        assert!(low.is_turn(), "after 128 s the old waiter goes first");
        assert!(!late.is_turn());

        // A HIGHEST newcomer still needs 191 levels: it goes first.
        let top = q.try_enqueue(0, Priority::HIGHEST, Instant::now()).unwrap();
        assert!(top.is_turn());
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_independent() {
        let q = queue(10, 100);
        let now = Instant::now();
        let a1 = q.try_enqueue(1, Priority::NORMAL, now).unwrap();
        let a2 = q.try_enqueue(1, Priority::NORMAL, now).unwrap();
        let b1 = q.try_enqueue(2, Priority::LOWEST, now).unwrap();
        let b2 = q.try_enqueue(2, Priority::LOWEST, now).unwrap();
        assert!(a1.is_turn() && b1.is_turn());
        assert!(!a2.is_turn() && !b2.is_turn());
        assert_eq!(
            (q.len(), q.len_of(1), q.len_of(2), q.len_of(3)),
            (4, 2, 2, 0)
        );
        drop(a1);
        assert!(a2.is_turn() && b1.is_turn() && !b2.is_turn());
        drop((a2, b1, b2));
        assert_eq!((q.len(), q.len_of(1), q.len_of(2)), (0, 0, 0));
        assert_eq!(lock(&q.shared.state).keys.len(), 0, "idle keys are removed");
    }

    #[tokio::test(start_paused = true)]
    async fn queue_full_then_a_slot_frees_when_a_waiter_drops() {
        let q = queue(2, 100);
        let clone = q.clone();
        let now = Instant::now();
        let a = q.try_enqueue(1, Priority::NORMAL, now).unwrap();
        let _b = clone.try_enqueue(2, Priority::HIGH, now).unwrap();
        let full = q.try_enqueue(3, Priority::HIGHEST, now).unwrap_err();
        assert_eq!(full, QueueFull { max_len: 2 });
        assert_eq!(full.to_string(), "wait queue is full (2 waiters)");
        let boxed: crate::BoxError = Box::new(full);
        assert!(boxed.is::<QueueFull>());
        drop(a);
        assert_eq!(clone.len(), 1, "clones share one queue");
        assert!(q.try_enqueue(3, Priority::NORMAL, now).is_ok());
    }

    #[test]
    fn dropping_the_head_wakes_the_next_and_only_it() {
        let q = queue(10, 100);
        let now = Instant::now();
        let (c1, w1) = counting();
        let (c2, w2) = counting();
        let (c3, w3) = counting();
        let mut first = q.try_enqueue(0, Priority::NORMAL, now).unwrap();
        let mut second = q.try_enqueue(0, Priority::NORMAL, now).unwrap();
        let mut third = q.try_enqueue(0, Priority::NORMAL, now).unwrap();
        assert_eq!(poll(&mut first, &w1), Poll::Ready(()));
        assert_eq!(poll(&mut second, &w2), Poll::Pending);
        assert_eq!(poll(&mut third, &w3), Poll::Pending);

        // A non-head leaving wakes no one.
        drop(third);
        assert_eq!(c2.0.load(Ordering::SeqCst), 0);
        assert_eq!(c3.0.load(Ordering::SeqCst), 0);

        drop(first);
        assert_eq!(c2.0.load(Ordering::SeqCst), 1, "next head woken at once");
        assert_eq!(c1.0.load(Ordering::SeqCst), 0);
        assert_eq!(poll(&mut second, &w2), Poll::Ready(()));
    }

    #[test]
    fn wake_head_reaches_a_head_that_already_saw_its_turn() {
        let q = queue(10, 100);
        let (count, waker) = counting();
        assert!(!q.wake_head(0), "no waiter");
        let mut head = q.try_enqueue(0, Priority::NORMAL, Instant::now()).unwrap();
        assert!(!q.wake_head(0), "not polled yet");
        assert_eq!(poll(&mut head, &waker), Poll::Ready(()));
        assert!(q.wake_head(0));
        assert!(!q.wake_head(1), "other keys unaffected");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_head_lets_the_next_task_run() {
        let q = queue(10, 100);
        let head = q.try_enqueue(0, Priority::NORMAL, Instant::now()).unwrap();
        let mut next = q.try_enqueue(0, Priority::NORMAL, Instant::now()).unwrap();
        let task = tokio::spawn(async move {
            turn(&mut next).await;
        });
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        drop(head);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
        assert!(q.is_empty());
    }

    #[test]
    fn a_poisoned_lock_does_not_stop_the_queue() {
        let q = queue(4, 10);
        let a = q.try_enqueue(0, Priority::NORMAL, Instant::now()).unwrap();
        let shared = std::sync::Arc::clone(&q.shared);
        let panicked = std::thread::spawn(move || {
            let _guard = shared.state.lock().unwrap();
            panic!("poison the queue's lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(q.shared.state.is_poisoned());
        let b = q.try_enqueue(0, Priority::NORMAL, Instant::now()).unwrap();
        assert!(a.is_turn() && !b.is_turn());
        drop(a);
        assert!(b.is_turn());
        assert!(!q.wake_head(0));
        drop(b);
        assert!(q.is_empty());
        assert!(format!("{q:?}").contains("len: 0"));
    }

    #[test]
    fn priority_is_a_request_extension() {
        let mut request = http::Request::new(());
        assert_eq!(
            request
                .extensions()
                .get::<Priority>()
                .copied()
                .unwrap_or_default(),
            Priority::NORMAL
        );
        request.extensions_mut().insert(Priority::HIGH);
        assert_eq!(
            request.extensions().get::<Priority>(),
            Some(&Priority::HIGH)
        );
    }

    // ---- properties -------------------------------------------------------

    #[derive(Debug, Clone)]
    enum Op {
        /// key, priority, milliseconds since the start
        Enqueue(u64, u8, u64),
        /// drop the waiter at this index (modulo the live count)
        Drop(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..3, prop::sample::select(vec![0u8, 64, 128, 192, 255]), 0u64..2_000)
                .prop_map(|(k, p, t)| Op::Enqueue(k, p, t)),
            2 => any::<usize>().prop_map(Op::Drop),
        ]
    }

    struct Live {
        waiter: Waiter,
        counter: std::sync::Arc<CountingWaker>,
        waker: Waker,
        key: u64,
        model: (u128, u64),
    }

    fn model_head(live: &[Live], key: u64) -> Option<(u128, u64)> {
        live.iter().filter(|l| l.key == key).map(|l| l.model).min()
    }

    proptest! {
        #[test]
        fn queue_matches_a_model(max_len in 1usize..8, ops in prop::collection::vec(op(), 1..60)) {
            let aging_ms = 10u64;
            let q = queue(max_len, aging_ms);
            let t0 = Instant::now();
            let mut live: Vec<Live> = Vec::new();
            let mut seq = 0u64;
            for op in ops {
                match op {
                    Op::Enqueue(key, p, ms) => {
                        let now = t0 + Duration::from_millis(ms);
                        match q.try_enqueue(key, Priority(p), now) {
                            Ok(mut waiter) => {
                                prop_assert!(live.len() < max_len);
                                let (counter, waker) = counting();
                                // Everyone polls once, so drops can be observed.
                                let _ = poll(&mut waiter, &waker);
                                let vtime = u128::from(ms) + u128::from(255 - p) * u128::from(aging_ms);
                                live.push(Live { waiter, counter, waker, key, model: (vtime, seq) });
                                seq += 1;
                            }
                            Err(full) => {
                                prop_assert_eq!(live.len(), max_len);
                                prop_assert_eq!(full.max_len, max_len);
                            }
                        }
                    }
                    Op::Drop(i) => {
                        if live.is_empty() { continue; }
                        let gone = live.swap_remove(i % live.len());
                        let was_head = model_head(&live, gone.key).is_none_or(|h| gone.model < h);
                        let before: Vec<usize> = live.iter().map(|l| l.counter.0.load(Ordering::SeqCst)).collect();
                        drop(gone.waiter);
                        let next = if was_head { model_head(&live, gone.key) } else { None };
                        for (l, b) in live.iter().zip(before) {
                            let woken = l.counter.0.load(Ordering::SeqCst) - b;
                            let expected = usize::from(Some(l.model) == next);
                            prop_assert_eq!(woken, expected, "exactly the new head is woken");
                        }
                    }
                }
                prop_assert_eq!(q.len(), live.len());
                for key in 0..3 {
                    prop_assert_eq!(q.len_of(key), live.iter().filter(|l| l.key == key).count());
                    let head = model_head(&live, key);
                    for l in live.iter_mut().filter(|l| l.key == key) {
                        let expected = Some(l.model) == head;
                        prop_assert_eq!(l.waiter.is_turn(), expected);
                        let polled = l.waiter.poll_turn(&mut Context::from_waker(&l.waker));
                        prop_assert_eq!(polled.is_ready(), expected);
                    }
                }
            }
            live.clear();
            prop_assert_eq!(q.len(), 0);
            prop_assert!(lock(&q.shared.state).keys.is_empty(), "every slot returned");
            prop_assert!(q.try_enqueue(0, Priority::NORMAL, t0).is_ok());
        }
    }
}
