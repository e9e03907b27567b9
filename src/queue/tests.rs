#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;

/// A key with a chosen number, for tests that name their keys.
fn k(n: u64) -> QueueKey {
    QueueKey(n)
}

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
    let w = q
        .try_enqueue(k(1), Priority::NORMAL, Instant::now())
        .unwrap();
    assert!(format!("{q:?}").contains("len: 1"));
    assert!(format!("{w:?}").contains("key: 1"));
}

#[tokio::test(start_paused = true)]
async fn fifo_within_a_priority() {
    let q = queue(10, 100);
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for id in 0..5 {
        let mut w = q
            .try_enqueue(k(0), Priority::NORMAL, Instant::now())
            .unwrap();
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
    let low = q.try_enqueue(k(0), Priority::LOW, now).unwrap();
    let normal = q.try_enqueue(k(0), Priority::NORMAL, now).unwrap();
    let high = q.try_enqueue(k(0), Priority::HIGH, now).unwrap();
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
    let mut normal = q
        .try_enqueue(k(0), Priority::NORMAL, Instant::now())
        .unwrap();
    assert_eq!(poll(&mut normal, &waker), Poll::Ready(()));
    let mut high = q.try_enqueue(k(0), Priority::HIGH, Instant::now()).unwrap();
    assert_eq!(poll(&mut high, &waker), Poll::Ready(()));
    assert_eq!(poll(&mut normal, &waker), Poll::Pending);
}

#[tokio::test(start_paused = true)]
async fn aging_lets_an_old_low_priority_waiter_pass_newer_high_ones() {
    // LOW (64) vs HIGH (192): 128 levels × 1 s = 128 s of aging.
    let q = queue(10, 1_000);
    let low = q.try_enqueue(k(0), Priority::LOW, Instant::now()).unwrap();

    tokio::time::advance(Duration::from_secs(127)).await;
    let early = q.try_enqueue(k(0), Priority::HIGH, Instant::now()).unwrap();
    assert!(early.is_turn(), "127 s is not yet enough");
    drop(early);
    assert!(low.is_turn());

    tokio::time::advance(Duration::from_secs(1)).await;
    let late = q.try_enqueue(k(0), Priority::HIGH, Instant::now()).unwrap();
    assert!(low.is_turn(), "after 128 s the old waiter goes first");
    assert!(!late.is_turn());

    // A HIGHEST newcomer still needs 191 levels: it goes first.
    let top = q
        .try_enqueue(k(0), Priority::HIGHEST, Instant::now())
        .unwrap();
    assert!(top.is_turn());
}

#[tokio::test(start_paused = true)]
async fn keys_are_independent() {
    let q = queue(10, 100);
    let now = Instant::now();
    let a1 = q.try_enqueue(k(1), Priority::NORMAL, now).unwrap();
    let a2 = q.try_enqueue(k(1), Priority::NORMAL, now).unwrap();
    let b1 = q.try_enqueue(k(2), Priority::LOWEST, now).unwrap();
    let b2 = q.try_enqueue(k(2), Priority::LOWEST, now).unwrap();
    assert!(a1.is_turn() && b1.is_turn());
    assert!(!a2.is_turn() && !b2.is_turn());
    assert_eq!(
        (q.len(), q.len_of(k(1)), q.len_of(k(2)), q.len_of(k(3))),
        (4, 2, 2, 0)
    );
    drop(a1);
    assert!(a2.is_turn() && b1.is_turn() && !b2.is_turn());
    drop((a2, b1, b2));
    assert_eq!((q.len(), q.len_of(k(1)), q.len_of(k(2))), (0, 0, 0));
    assert_eq!(lock(&q.shared.state).keys.len(), 0, "idle keys are removed");
}

#[tokio::test(start_paused = true)]
async fn queue_full_then_a_slot_frees_when_a_waiter_drops() {
    let q = queue(2, 100);
    let clone = q.clone();
    let now = Instant::now();
    let a = q.try_enqueue(k(1), Priority::NORMAL, now).unwrap();
    let _b = clone.try_enqueue(k(2), Priority::HIGH, now).unwrap();
    let full = q.try_enqueue(k(3), Priority::HIGHEST, now).unwrap_err();
    assert_eq!(full, QueueFull { max_len: 2 });
    assert_eq!(full.to_string(), "wait queue is full (2 waiters)");
    let boxed: crate::BoxError = Box::new(full);
    assert!(boxed.is::<QueueFull>());
    drop(a);
    assert_eq!(clone.len(), 1, "clones share one queue");
    assert!(q.try_enqueue(k(3), Priority::NORMAL, now).is_ok());
}

#[test]
fn dropping_the_head_wakes_the_next_and_only_it() {
    let q = queue(10, 100);
    let now = Instant::now();
    let (c1, w1) = counting();
    let (c2, w2) = counting();
    let (c3, w3) = counting();
    let mut first = q.try_enqueue(k(0), Priority::NORMAL, now).unwrap();
    let mut second = q.try_enqueue(k(0), Priority::NORMAL, now).unwrap();
    let mut third = q.try_enqueue(k(0), Priority::NORMAL, now).unwrap();
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
    assert!(!q.wake_head(k(0)), "no waiter");
    let mut head = q
        .try_enqueue(k(0), Priority::NORMAL, Instant::now())
        .unwrap();
    assert!(!q.wake_head(k(0)), "not polled yet");
    assert_eq!(poll(&mut head, &waker), Poll::Ready(()));
    assert!(q.wake_head(k(0)));
    assert!(!q.wake_head(k(1)), "other keys unaffected");
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_head_lets_the_next_task_run() {
    let q = queue(10, 100);
    let head = q
        .try_enqueue(k(0), Priority::NORMAL, Instant::now())
        .unwrap();
    let mut next = q
        .try_enqueue(k(0), Priority::NORMAL, Instant::now())
        .unwrap();
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
    let a = q
        .try_enqueue(k(0), Priority::NORMAL, Instant::now())
        .unwrap();
    let shared = std::sync::Arc::clone(&q.shared);
    let panicked = std::thread::spawn(move || {
        let _guard = shared.state.lock().unwrap();
        panic!("poison the queue's lock");
    })
    .join();
    assert!(panicked.is_err());
    assert!(q.shared.state.is_poisoned());
    let b = q
        .try_enqueue(k(0), Priority::NORMAL, Instant::now())
        .unwrap();
    assert!(a.is_turn() && !b.is_turn());
    drop(a);
    assert!(b.is_turn());
    assert!(!q.wake_head(k(0)));
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
                    match q.try_enqueue(k(key), Priority(p), now) {
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
                prop_assert_eq!(q.len_of(k(key)), live.iter().filter(|l| l.key == key).count());
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
        prop_assert!(q.try_enqueue(k(0), Priority::NORMAL, t0).is_ok());
    }
}
