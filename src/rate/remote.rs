//! Admission through a Redis store (the `redis` feature): what the waiting
//! path calls instead of the local buckets, and the failure policy.
//!
//! The local group keeps what is this process's own: the order and
//! priority of its waiters (the queue), the 429 gate and the probe it
//! learned, and what it holds. The buckets are Redis's
//! (`redis/limiter.rs`). The head of a group's queue runs the admission
//! script; a refusal is a wait it sleeps (re-checked on wake); a failure
//! follows the [`FailurePolicy`].

use std::fmt;
use std::time::Duration;

use super::gcra::{CostExceedsBurst, DIMENSIONS, Denied};
use super::state::{Attempt, Group, Limiter, Shared};
use crate::redis::limiter::{Decision, RemoteStore};
use crate::redis::{FailurePolicy, Redis};
use crate::sync::Arc;

/// A rate limiter's Redis store and, for [`FailurePolicy::Local`], the
/// in-memory limiter at divided limits it falls back on.
pub(crate) struct Remote {
    pub(crate) store: std::sync::Arc<RemoteStore>,
    fallback: Option<Arc<Limiter>>,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Remote {
    pub(crate) fn new(redis: Redis, policy: FailurePolicy, fallback: Option<Limiter>) -> Self {
        Remote {
            store: std::sync::Arc::new(RemoteStore::new(redis, policy)),
            fallback: fallback.map(Arc::new),
        }
    }
}

/// What one admission through Redis came to.
pub(crate) enum Step {
    /// Admitted: this group (the local group, or the fallback limiter's)
    /// holds `ticket`; `remote` when Redis reserved it (then its
    /// settlement goes to Redis too).
    Admitted {
        group: Arc<Group>,
        ticket: super::state::Ticket,
        remote: bool,
    },
    /// As the local path would answer.
    Attempt(Attempt),
}

/// One admission attempt of the head of `group`'s queue (or of a newcomer
/// nobody waits before) through Redis.
///
/// # Errors
///
/// [`BackendError`] when Redis fails and the policy is
/// [`FailurePolicy::FailClosed`]; `TooManyGroups` from the fallback
/// limiter.
pub(crate) async fn attempt(
    remote: &Remote,
    shared: &Arc<Shared>,
    group: &Arc<Group>,
    cost: [u64; DIMENSIONS],
) -> Result<Step, crate::error::BoxError> {
    let limits = match shared.remote_view(group, shared.now()) {
        Ok(limits) => limits,
        Err(local) => return Ok(Step::Attempt(local)),
    };
    let failure = match remote.store.admit(group.key.hash(), &limits, &cost).await {
        Ok(Decision::Admitted) => {
            let ticket = shared.hold_remote(group, cost, shared.now());
            return Ok(Step::Admitted {
                group: Arc::clone(group),
                ticket,
                remote: true,
            });
        }
        Ok(Decision::Wait { wait, gate }) => {
            // Measured on Redis's clock from when the script ran; counted
            // here from its answer (later), so never early by the trip.
            let at = shared.now().saturating_add(nanos(wait));
            return Ok(Step::Attempt(Attempt::At { at, cooldown: gate }));
        }
        Ok(Decision::Never { dimension, burst }) => {
            return Ok(Step::Attempt(Attempt::Never(Denied::CostExceedsBurst(
                CostExceedsBurst {
                    dimension,
                    cost: cost[dimension.index()],
                    burst,
                },
            ))));
        }
        Err(e) => e,
    };
    match remote.store.policy {
        FailurePolicy::FailOpen => {
            let ticket = shared.hold_remote(group, cost, shared.now());
            Ok(Step::Admitted {
                group: Arc::clone(group),
                ticket,
                remote: false,
            })
        }
        FailurePolicy::Local { .. } if remote.fallback.is_some() => {
            let fallback = remote.fallback.as_ref().expect("checked");
            let local = fallback.group(group.key.clone())?;
            let fshared = fallback.shared();
            match fshared.attempt(&local, cost, fshared.now(), false, false) {
                Attempt::Admitted(ticket) => Ok(Step::Admitted {
                    group: local,
                    ticket,
                    remote: false,
                }),
                // In this limiter's time, not the fallback's.
                Attempt::At { at, cooldown } => Ok(Step::Attempt(Attempt::At {
                    at: shared.ns(fshared.instant(at)),
                    cooldown,
                })),
                other => Ok(Step::Attempt(other)),
            }
        }
        _ => Err(failure.into()),
    }
}

fn nanos(d: Duration) -> u64 {
    super::gcra::nanos(d)
}

/// The limits of `limits` divided among `instances` processes: each
/// amount and burst ÷ `instances`, rounded down, at least one.
pub(crate) fn divided(limits: super::Limits, instances: u32) -> super::Limits {
    let n = u64::from(instances.max(1));
    let mut out = limits;
    for d in super::Dimension::ALL {
        if let Some(l) = limits.get(d) {
            let amount = (l.amount() / n).max(1);
            let burst = (l.burst() / n).max(1);
            out = out.with(d, super::Limit::new(amount, l.per(), burst).unwrap_or(l));
        }
    }
    out
}
