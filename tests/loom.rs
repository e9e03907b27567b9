//! Model-checks the wait queue and admission accounting under every
//! interleaving loom can find.
//!
//! Run with:
//!
//! ```text
//! CARGO_TARGET_DIR=target-loom RUSTFLAGS="--cfg loom" cargo test --release --test loom
//! ```
//!
//! Under `cfg(loom)` the crate's `Arc`/`Mutex` (src/sync.rs) are loom's, so
//! every lock taken by `WaitQueue` and `Waiter` is a scheduling point. A lost
//! wake-up shows up as a loom deadlock: `block_on` parks a thread whose waker
//! nobody will ever call.
#![cfg(loom)]
#![allow(clippy::unwrap_used)]

use std::future::poll_fn;
use std::task::{Poll, ready};
use std::time::Duration;

use loom::future::block_on;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use tokio::time::Instant;
use tower_llm_resilience::queue::{Priority, QueueConfig, QueueKey, WaitQueue};

use gcra::{Dimension, Gcra, Limit};

// The GCRA is private to the crate: the model compiles its two source files
// as modules of its own (with the crate's error type, all they import), as
// the admission bench does, to check the accounting the rate limiter runs.
#[allow(dead_code, unreachable_pub)]
#[path = "../src/rate/gcra.rs"]
mod gcra;
#[allow(dead_code, unreachable_pub)]
#[path = "../src/rate/limit.rs"]
mod limit;
mod error {
    pub(crate) use tower_llm_resilience::error::InvalidConfig;
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Small enough to finish in seconds, large enough for the races that
    // matter (a drop between another waiter's check and its registration).
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

#[derive(Default)]
struct Log {
    /// Ids in the order they took a place (recorded under the same lock as
    /// the enqueue, so this is the queue's arrival order).
    enqueued: Vec<usize>,
    /// Ids in the order their turn came.
    turns: Vec<usize>,
}

/// Two threads wait for their turn while a third takes a place and cancels
/// (drops it unpolled, possibly while it is the head). Every waiting thread
/// gets exactly one turn, turns are mutually exclusive and in arrival order,
/// and the queue ends empty.
#[test]
fn enqueue_wait_and_cancel_concurrently() {
    model(|| {
        let now = Instant::now();
        let queue = WaitQueue::new(QueueConfig::new(3, Duration::from_millis(1)).unwrap());
        let key = QueueKey::unique();
        let log = Arc::new(Mutex::new(Log::default()));
        let in_turn = Arc::new(AtomicUsize::new(0));

        let waiters: Vec<_> = (0..2)
            .map(|id| {
                let queue = queue.clone();
                let log = Arc::clone(&log);
                let in_turn = Arc::clone(&in_turn);
                thread::spawn(move || {
                    let mut waiter = {
                        let mut log = log.lock().unwrap();
                        let waiter = queue.try_enqueue(key, Priority::NORMAL, now).unwrap();
                        log.enqueued.push(id);
                        waiter
                    };
                    block_on(poll_fn(|cx| waiter.poll_turn(cx)));
                    assert_eq!(
                        in_turn.fetch_add(1, Ordering::SeqCst),
                        0,
                        "one head at a time"
                    );
                    log.lock().unwrap().turns.push(id);
                    in_turn.fetch_sub(1, Ordering::SeqCst);
                    drop(waiter);
                })
            })
            .collect();

        // The canceller: a request dropped while queued.
        {
            let mut log = log.lock().unwrap();
            let waiter = queue.try_enqueue(key, Priority::NORMAL, now).unwrap();
            log.enqueued.push(2);
            drop(log);
            drop(waiter);
        }

        for t in waiters {
            t.join().unwrap();
        }
        assert!(queue.is_empty());
        assert_eq!(queue.len_of(key), 0);
        let log = log.lock().unwrap();
        let expected: Vec<usize> = log.enqueued.iter().copied().filter(|&id| id != 2).collect();
        assert_eq!(log.turns, expected, "turns in arrival order");
    });
}

/// Weighted admission the way the rate layer does it: wait for the turn,
/// then reserve from a shared `Mutex<Gcra>`; if the bucket has no room, stay
/// head and return `Pending` (the waker is registered by `poll_turn`); the
/// releaser refunds and calls `wake_head`. Time is frozen, so the bucket acts
/// as a 3-unit weighted semaphore. In-flight weight never exceeds 3, no
/// wake-up is lost, and everything is given back at the end.
#[test]
fn weighted_reserve_and_refund_through_the_queue() {
    const NOW: u64 = 1_000;
    const CAPACITY: u64 = 3;
    model(|| {
        let now = Instant::now();
        let limit = Limit::new(CAPACITY, Duration::from_secs(1), CAPACITY).unwrap();
        let gcra = Arc::new(Mutex::new(
            Gcra::default().with_limit(Dimension::InputTokens, limit),
        ));
        let queue = WaitQueue::new(QueueConfig::new(4, Duration::from_millis(1)).unwrap());
        let key = QueueKey::unique();
        let in_flight = Arc::new(AtomicU64::new(0));

        let threads: Vec<_> = [2u64, 2]
            .into_iter()
            .map(|weight| {
                let gcra = Arc::clone(&gcra);
                let queue = queue.clone();
                let in_flight = Arc::clone(&in_flight);
                thread::spawn(move || {
                    let mut waiter = queue.try_enqueue(key, Priority::NORMAL, now).unwrap();
                    block_on(poll_fn(|cx| {
                        ready!(waiter.poll_turn(cx));
                        let admitted = gcra.lock().unwrap().reserve([0, weight, 0, 0], NOW);
                        if admitted.is_ok() {
                            Poll::Ready(())
                        } else {
                            Poll::Pending
                        }
                    }));
                    // Admitted: leave the queue (wakes the next head).
                    drop(waiter);

                    let total = in_flight.fetch_add(weight, Ordering::SeqCst) + weight;
                    assert!(total <= CAPACITY, "in flight {total} > {CAPACITY}");
                    in_flight.fetch_sub(weight, Ordering::SeqCst);

                    gcra.lock()
                        .unwrap()
                        .refund(Dimension::InputTokens, weight, NOW);
                    queue.wake_head(key);
                })
            })
            .collect();

        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(in_flight.load(Ordering::SeqCst), 0);
        assert!(queue.is_empty());
        let gcra = gcra.lock().unwrap();
        assert_eq!(gcra.available(Dimension::InputTokens, NOW), CAPACITY);
    });
}

/// A no-op inner service for the concurrency limit.
#[derive(Clone, Copy)]
struct Noop;

impl tower::Service<http::Request<()>> for Noop {
    type Response = http::Response<tower_llm_resilience::response::ResponseBody>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _req: http::Request<()>) -> Self::Future {
        std::future::ready(Ok(http::Response::new(
            tower_llm_resilience::response::ResponseBody::empty(),
        )))
    }
}

/// Guards the concurrency limit's lock-free accounting: the fast path, the
/// queue, and a release racing a waiter's registration. A lost wake-up is
/// a loom deadlock; a leaked permit or place fails the final assertions.
#[test]
fn concurrency_permits_and_wakeups_are_never_lost() {
    use tower::{Layer, ServiceExt};
    use tower_llm_resilience::concurrency::ConcurrencyLimitLayer;
    model(|| {
        let layer = ConcurrencyLimitLayer::new(1);
        let svc = layer.layer(Noop);
        let other = svc.clone();
        let t = thread::spawn(move || {
            let res = block_on(other.oneshot(http::Request::new(()))).unwrap();
            drop(res);
        });
        let res = block_on(svc.oneshot(http::Request::new(()))).unwrap();
        drop(res);
        t.join().unwrap();
        let stats = layer.stats();
        assert_eq!((stats.in_flight, stats.queued), (0, 0));
        assert!(layer.queue().is_empty());
        assert_eq!(stats.peak, 1);
    });
}
