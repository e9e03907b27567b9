//! The wait of a pool request that no key could take at the call: one
//! place in the limiter's queue for the whole pool, whose head re-decides
//! when any key frees (a refund, a gate, a learned limit wake it) or when
//! the first key's bucket has refilled (its timer).

use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::task::Poll;

use tokio::time::{Instant, Sleep};

use super::super::future::{Hold, Reconcile, Via, elapsed_or_woken};
use super::super::gcra::{DIMENSIONS, Denied};
use super::super::state::Limiter;
use super::{Choice, KeyPool, PoolInner, Priced};
use crate::admitted::{earliest, poll_sleep_until};
use crate::error::{BoxError, NoKeyAvailable, RequestTooLarge};
use crate::queue::{Priority, QueueFull, Waiter};
use crate::sync::Arc;

/// A place in the queue, counted in the pool while it lasts.
struct Queued {
    waiter: Waiter,
    pool: Arc<PoolInner>,
}

impl Queued {
    fn enqueue(
        limiter: &Limiter,
        pool: &Arc<PoolInner>,
        priority: Priority,
    ) -> Result<Self, QueueFull> {
        pool.queued.fetch_add(1, Ordering::SeqCst);
        match limiter
            .shared()
            .queue
            .try_enqueue(pool.queue_key, priority, Instant::now())
        {
            Ok(waiter) => Ok(Queued {
                waiter,
                pool: Arc::clone(pool),
            }),
            Err(full) => {
                pool.queued.fetch_sub(1, Ordering::SeqCst);
                Err(full)
            }
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.pool.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The error for a cost above every key's burst.
pub(crate) fn too_large(denied: Denied) -> BoxError {
    match denied {
        Denied::CostExceedsBurst(e) => RequestTooLarge {
            dimension: e.dimension.name(),
            cost: e.cost,
            burst: e.burst,
        }
        .into(),
        other => other.into(),
    }
}

/// Waits for a key of `pool` to take `cost`, and reserves it there; the
/// chosen member comes back with the reservation.
///
/// Gives up with [`NoKeyAvailable`] at once when the first key to free is
/// later than `give_up_at` or every key is out of its calendar quota, and
/// at `give_up_at` when it is still waiting then.
pub(crate) async fn admit(
    limiter: Arc<Limiter>,
    pool: KeyPool,
    model: Option<std::sync::Arc<str>>,
    cost: [u64; DIMENSIONS],
    priced: Option<Priced>,
    priority: Priority,
    give_up_at: Option<Instant>,
) -> Result<(Box<Reconcile>, usize), BoxError> {
    let shared = Arc::clone(limiter.shared());
    let mut queued: Option<Queued> = None;
    let mut sleep = pin!(None::<Sleep>);
    // The earliest time a key was last seen to free (for the error).
    let mut first_free: Option<Instant> = None;
    let no_key = |at: Option<Instant>| -> BoxError {
        let now = Instant::now();
        NoKeyAvailable::new(at.map_or(std::time::Duration::ZERO, |at| {
            at.saturating_duration_since(now)
        }))
        .into()
    };
    loop {
        if let Some(place) = queued.as_mut() {
            let turn = poll_fn(|cx| {
                if place.waiter.poll_turn(cx).is_ready() {
                    return Poll::Ready(true);
                }
                let Some(at) = give_up_at else {
                    return Poll::Pending;
                };
                poll_sleep_until(sleep.as_mut(), at, cx).map(|()| false)
            })
            .await;
            if !turn {
                return Err(no_key(first_free));
            }
        }
        let now = shared.now();
        // A newcomer does not overtake the pool's waiters: it only asks.
        let behind_others = queued.is_none() && pool.queued() > 0;
        let send = (!behind_others).then_some(false);
        let (choice, remote) =
            match remote_choose(&limiter, &pool, model.as_ref(), cost, priced, send) {
                // Through Redis: the head (or a newcomer nobody waits before)
                // asks the shared state; the round trip ends by the give-up
                // time too, not only by the handle's timeout.
                Some(step) => match give_up_at {
                    Some(at) => match tokio::time::timeout_at(at, step).await {
                        Ok(step) => step?,
                        Err(_) => return Err(no_key(first_free)),
                    },
                    None => step.await?,
                },
                None => (
                    pool.choose(&limiter, model.as_ref(), cost, priced, now, send)?,
                    false,
                ),
            };
        let wake_at = match choice {
            Choice::Admitted {
                group,
                ticket,
                member,
            } => {
                drop(queued);
                let hold = Hold {
                    group,
                    ticket,
                    sent: false,
                    done: false,
                    via: Via::of(remote),
                };
                return Ok((Reconcile::boxed(hold), member));
            }
            Choice::Exhausted(after) => return Err(NoKeyAvailable::new(after).into()),
            Choice::Never(denied) => return Err(too_large(denied)),
            Choice::Wait(at) => at.map(|at| shared.instant(at)),
        };
        first_free = wake_at;
        if let (Some(at), Some(limit)) = (wake_at, give_up_at)
            && at > limit
        {
            // No key frees in time: say so now, not at the deadline.
            return Err(no_key(Some(at)));
        }
        if queued.is_none() {
            queued = Some(Queued::enqueue(&limiter, pool.inner(), priority)?);
            continue;
        }
        if !elapsed_or_woken(sleep.as_mut(), earliest(wake_at, give_up_at)).await {
            continue;
        }
        if let Some(limit) = give_up_at
            && Instant::now() >= limit
            && wake_at.is_none_or(|at| at > limit)
        {
            return Err(no_key(wake_at));
        }
    }
}

/// The choice through Redis, when the limiter has a Redis store: `None`
/// without one. A newcomer behind the pool's waiters does not ask Redis:
/// it queues.
#[cfg(feature = "redis")]
#[allow(clippy::type_complexity)]
fn remote_choose<'a>(
    limiter: &'a Limiter,
    pool: &'a KeyPool,
    model: Option<&'a std::sync::Arc<str>>,
    cost: [u64; DIMENSIONS],
    priced: Option<Priced>,
    send: Option<bool>,
) -> Option<std::pin::Pin<Box<dyn Future<Output = Result<(Choice, bool), BoxError>> + Send + 'a>>> {
    let remote = limiter.shared().config.remote.as_ref()?;
    let now = limiter.shared().now();
    Some(match send {
        None => Box::pin(std::future::ready(Ok((Choice::Wait(Some(now)), false)))),
        Some(_) => Box::pin(super::remote::choose(
            limiter, pool, remote, model, cost, priced,
        )),
    })
}

#[cfg(not(feature = "redis"))]
#[allow(clippy::type_complexity)]
fn remote_choose<'a>(
    _limiter: &'a Limiter,
    _pool: &'a KeyPool,
    _model: Option<&'a std::sync::Arc<str>>,
    _cost: [u64; DIMENSIONS],
    _priced: Option<Priced>,
    _send: Option<bool>,
) -> Option<std::pin::Pin<Box<dyn Future<Output = Result<(Choice, bool), BoxError>> + Send + 'a>>> {
    None
}
