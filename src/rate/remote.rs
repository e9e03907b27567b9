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

use super::future::Via;
use super::gcra::{CostExceedsBurst, DIMENSIONS, Denied, Limit};
use super::state::{Attempt, Group, Limiter, Shared};
use crate::redis::limiter::{Decision, NET_MODULUS, Nets, RemoteStore, Slot, net_minus};
use crate::redis::{FailurePolicy, Redis};
use crate::sync::{Arc, Mutex, lock};

/// A rate limiter's Redis store and, for [`FailurePolicy::Local`], the
/// in-memory limiter at divided limits it falls back on.
pub(crate) struct Remote {
    pub(crate) store: std::sync::Arc<RemoteStore>,
    fallback: Option<Arc<Limiter>>,
    /// Multiples of a request's cost one lease takes (≤ 1: no leases).
    lease: u64,
}

/// How long a lease's units may be used after it was taken; then what is
/// left goes back with the next lease.
const LEASE_MAX_AGE: Duration = Duration::from_secs(1);

/// A group's lease, and the right to ask Redis for the next one: one
/// request of the group asks at a time, the others wait for its answer
/// (its round trip, bounded by the handle's timeout) and use it — the
/// credit it brought, or the wait Redis gave — instead of asking too.
#[derive(Debug, Default)]
pub(crate) struct LeaseCell {
    pub(crate) state: Mutex<Lease>,
    asking: tokio::sync::Mutex<()>,
}

/// What a process holds of a lease, per group: units it may admit from
/// without asking Redis, and the corrections of settled requests not yet
/// sent (they go with the next lease).
#[derive(Debug, Default)]
pub(crate) struct Lease {
    credit: [u64; DIMENSIONS],
    /// The most credit held: what the last lease took. A refund beyond it
    /// is sent back rather than kept.
    cap: [u64; DIMENSIONS],
    /// Corrections to send (negative: give back).
    pending: [i128; DIMENSIONS],
    /// When the lease was taken (ns on the limiter's clock).
    taken: u64,
    /// Redis said the next lease fits no sooner than this (ns on the
    /// limiter's clock): nobody asks before.
    retry_at: u64,
    /// The group's net counters in Redis right after the lease was taken.
    net: Nets,
    /// The provider's `remaining` learned since the last lease, per
    /// dimension, as the net counter value at which the shared bucket
    /// holds nothing (`remaining` + the counter after the request it
    /// answered): the strictest of them, sent with the next lease.
    bounds: [Option<u64>; DIMENSIONS],
}

impl Lease {
    /// Takes `cost` from the credit when it covers every limited
    /// dimension and the lease is fresh; then returns the reservation's
    /// net counters: the lease's, less the credit still unused (that
    /// credit counts as reserved after this request, so a response's
    /// `remaining` is corrected by it too — strict if it goes unused).
    fn take(
        &mut self,
        cost: &[u64; DIMENSIONS],
        limits: &[Option<Limit>; DIMENSIONS],
        now: u64,
    ) -> Option<Nets> {
        let fresh = now.saturating_sub(self.taken) <= nanos(LEASE_MAX_AGE);
        let covers = (0..DIMENSIONS).all(|i| limits[i].is_none() || self.credit[i] >= cost[i]);
        if !fresh || !covers || self.cap.iter().all(|&c| c == 0) {
            return None;
        }
        for i in 0..DIMENSIONS {
            if limits[i].is_some() {
                self.credit[i] -= cost[i];
            }
        }
        Some(self.position())
    }

    /// The net counters of a reservation whose lease has `credit` left.
    fn position(&self) -> Nets {
        let mut out = self.net;
        for (o, c) in out.iter_mut().zip(self.credit) {
            *o = net_minus(*o, c);
        }
        out
    }

    /// Everything to send with the next lease: the pending corrections and
    /// the unused credit, given back. The lease is then empty.
    fn flush(&mut self) -> [i128; DIMENSIONS] {
        let mut out = self.pending;
        for (o, c) in out.iter_mut().zip(self.credit) {
            *o -= i128::from(c);
        }
        let (retry_at, bounds) = (self.retry_at, self.bounds);
        *self = Lease::default();
        self.retry_at = retry_at;
        self.bounds = bounds;
        out
    }

    /// A response to a request with net counters `net` said `remaining`
    /// (each at most its dimension's burst): kept, the strictest per
    /// dimension, for the next lease. Every response carries these, so
    /// sending each at once would cost the round trip a lease saves.
    pub(crate) fn bound(&mut self, remaining: &[Option<u64>; DIMENSIONS], net: &Nets) {
        for i in 0..DIMENSIONS {
            let Some(r) = remaining[i] else { continue };
            let new = (r % NET_MODULUS + net[i]) % NET_MODULUS;
            self.bounds[i] = Some(match self.bounds[i] {
                // On the counters' circle: `new` is the lower when the
                // difference wraps.
                Some(old) if net_minus(new, old) < NET_MODULUS / 2 => old,
                _ => new,
            });
        }
    }

    /// The bounds to send with the next lease (then none are kept).
    fn take_bounds(&mut self) -> [Option<u64>; DIMENSIONS] {
        std::mem::take(&mut self.bounds)
    }

    /// A settled request's correction: a refund goes into the credit (up
    /// to the cap; the rest is sent later), a charge is taken from it (what
    /// it lacks is sent later).
    pub(crate) fn correct(&mut self, delta: &[i128; DIMENSIONS]) {
        for (i, &d) in delta.iter().enumerate() {
            if d < 0 {
                let back = u64::try_from(-d).unwrap_or(u64::MAX);
                let room = self.cap[i].saturating_sub(self.credit[i]);
                let kept = back.min(room);
                self.credit[i] += kept;
                self.pending[i] -= i128::from(back - kept);
            } else if d > 0 {
                let more = u64::try_from(d).unwrap_or(u64::MAX);
                let paid = more.min(self.credit[i]);
                self.credit[i] -= paid;
                self.pending[i] += i128::from(more - paid);
            }
        }
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Remote {
    pub(crate) fn new(
        redis: Redis,
        policy: FailurePolicy,
        fallback: Option<Limiter>,
        lease: u32,
    ) -> Self {
        Remote {
            store: std::sync::Arc::new(RemoteStore::new(redis, policy)),
            fallback: fallback.map(Arc::new),
            lease: u64::from(lease),
        }
    }

    /// The in-memory limiter at divided limits ([`FailurePolicy::Local`]).
    pub(crate) fn fallback(&self) -> Option<&Arc<Limiter>> {
        self.fallback.as_ref()
    }

    /// Whether settlements are kept in the lease (sent with the next one)
    /// rather than sent at once.
    pub(crate) fn leases(&self) -> bool {
        self.lease > 1
    }
}

/// What one admission through Redis came to.
pub(crate) enum Step {
    /// Admitted: this group (the local group, or the fallback limiter's)
    /// holds `ticket`, reserved `via` Redis or the fallback.
    Admitted {
        group: Arc<Group>,
        ticket: super::state::Ticket,
        via: Via,
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
    let answer = if let Some(cell) = group.lease.as_deref() {
        let admitted = |ticket| Step::Admitted {
            group: Arc::clone(group),
            ticket,
            via: Via::Redis,
        };
        let local = |lease: &mut Lease, now: u64| {
            if let Some(net) = lease.take(&cost, &limits, now) {
                Some(Ok(net))
            } else if lease.retry_at > now {
                Some(Err(lease.retry_at))
            } else {
                None
            }
        };
        let from_lease = |outcome: Result<Nets, u64>| match outcome {
            Ok(net) => admitted(shared.hold_remote(group, cost, shared.now(), net)),
            Err(at) => Step::Attempt(Attempt::At {
                at,
                cooldown: false,
            }),
        };
        if let Some(outcome) = local(&mut lock(&cell.state), shared.now()) {
            return Ok(from_lease(outcome));
        }
        // One asks at a time; the others use its answer.
        let _asking = cell.asking.lock().await;
        let (corrections, bounds) = {
            let mut lease = lock(&cell.state);
            if let Some(outcome) = local(&mut lease, shared.now()) {
                drop(lease);
                return Ok(from_lease(outcome));
            }
            (lease.flush(), lease.take_bounds())
        };
        let answer = remote
            .store
            .lease(
                slot(group),
                &limits,
                &cost,
                remote.lease,
                &corrections,
                &bounds,
            )
            .await;
        let mut lease = lock(&cell.state);
        match answer {
            Ok(Decision::Leased(multiples, net)) => {
                // One for this request; the rest is credit.
                for i in 0..DIMENSIONS {
                    if limits[i].is_some() {
                        lease.cap[i] = cost[i].saturating_mul(multiples);
                        lease.credit[i] =
                            lease.credit[i].saturating_add(cost[i].saturating_mul(multiples - 1));
                    }
                }
                lease.taken = shared.now();
                lease.net = net;
                let position = lease.position();
                drop(lease);
                Ok(Decision::Admitted(position))
            }
            Ok(Decision::Wait { wait, gate }) => {
                lease.retry_at = shared.now().saturating_add(nanos(wait));
                Ok(Decision::Wait { wait, gate })
            }
            Ok(other) => Ok(other),
            Err(e) => {
                // Unknown whether they were applied: charges are kept (a
                // second charge errs safe), refunds dropped (likewise).
                for (p, c) in lease.pending.iter_mut().zip(corrections) {
                    *p += c.max(0);
                }
                // A bound applied twice lowers nothing more: kept.
                for (kept, b) in lease.bounds.iter_mut().zip(bounds) {
                    if kept.is_none() {
                        *kept = b;
                    }
                }
                Err(e)
            }
        }
    } else {
        remote.store.admit(slot(group), &limits, &cost).await
    };
    let failure = match answer {
        Ok(Decision::Admitted(net) | Decision::Leased(_, net)) => {
            let ticket = shared.hold_remote(group, cost, shared.now(), net);
            return Ok(Step::Admitted {
                group: Arc::clone(group),
                ticket,
                via: Via::Redis,
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
            // Not reserved in Redis: no counters (nothing is sent there).
            let ticket = shared.hold_remote(group, cost, shared.now(), [0; DIMENSIONS]);
            Ok(Step::Admitted {
                group: Arc::clone(group),
                ticket,
                via: Via::Local,
            })
        }
        FailurePolicy::Local { instances } => {
            let Some(fallback) = &remote.fallback else {
                return Err(failure.into());
            };
            let fshared = fallback.shared();
            let now = fshared.now();
            let local = fallback.group(group.key.clone(), now)?;
            // The share of what this limiter knows now — learned from the
            // provider included — not of what was configured at build.
            fshared.follow(&local, &limits.map(|l| l.map(|l| share(l, instances))), now);
            match fshared.attempt(&local, cost, now, false, false) {
                Attempt::Admitted(ticket) => Ok(Step::Admitted {
                    group: local,
                    ticket,
                    via: Via::Fallback(Arc::clone(group)),
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

/// Where `group` lives in Redis: a key pool's groups carry the pool's hash
/// tag (one script chooses among them), any other group its own.
pub(crate) fn slot(group: &Group) -> Slot {
    let pool = group
        .pool_wake
        .and(group.shared.config.pool.as_ref())
        .map(super::pool::KeyPool::tag);
    Slot {
        group: group.key.hash(),
        pool,
    }
}

fn nanos(d: Duration) -> u64 {
    super::gcra::nanos(d)
}

/// The limits of `limits` divided among `instances` processes: each
/// amount and burst ÷ `instances`, rounded down, at least one.
///
/// # Errors
///
/// [`InvalidConfig`](crate::error::InvalidConfig) when a share is no valid
/// limit (`build` checks this, so the fallback never runs at the full
/// limit in a share's place).
pub(crate) fn try_divided(
    limits: super::Limits,
    instances: u32,
) -> Result<super::Limits, crate::error::InvalidConfig> {
    let mut out = limits;
    for d in super::Dimension::ALL {
        if let Some(l) = limits.get(d) {
            out = out.with(d, try_share(l, instances)?);
        }
    }
    Ok(out)
}

/// One process's share of `limit`: amount and burst ÷ `instances`,
/// rounded down, at least one.
fn try_share(limit: Limit, instances: u32) -> Result<Limit, crate::error::InvalidConfig> {
    let n = u64::from(instances.max(1));
    Limit::new(
        (limit.amount() / n).max(1),
        limit.per(),
        (limit.burst() / n).max(1),
    )
}

/// [`try_share`], never the full limit: a share that is no limit becomes
/// the smallest one, one unit per period.
fn share(limit: Limit, instances: u32) -> Limit {
    try_share(limit, instances)
        .or_else(|_| Limit::new(1, limit.per(), 1))
        .unwrap_or(limit)
}

/// [`try_divided`], for limits `build` checked: a share that is no limit
/// (not reached after `build`) becomes the smallest one, one unit per
/// period, never the full limit.
pub(crate) fn divided(limits: super::Limits, instances: u32) -> super::Limits {
    let mut out = limits;
    for d in super::Dimension::ALL {
        if let Some(l) = limits.get(d) {
            out = out.with(d, share(l, instances));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited() -> [Option<Limit>; DIMENSIONS] {
        let l = Limit::per_minute(1_000).expect("limit");
        [Some(l), None, Some(l), None]
    }

    #[test]
    fn a_lease_admits_from_its_credit_and_keeps_corrections_within_its_cap() {
        let limits = limited();
        let mut lease = Lease {
            credit: [3, 0, 30, 0],
            cap: [4, 0, 40, 0],
            ..Lease::default()
        };
        // The unlimited dimension is not asked for.
        assert!(lease.take(&[1, 999, 10, 0], &limits, 0).is_some());
        assert_eq!(lease.credit, [2, 0, 20, 0]);
        assert!(
            lease.take(&[1, 0, 21, 0], &limits, 0).is_none(),
            "credit too low"
        );
        // A refund beyond the cap waits to be sent; a charge beyond the
        // credit too.
        lease.correct(&[0, 0, -25, 0]);
        assert_eq!((lease.credit[2], lease.pending[2]), (40, -5));
        lease.correct(&[0, 0, 50, 0]);
        assert_eq!((lease.credit[2], lease.pending[2]), (0, 5));
        // Old: not used, and what is left goes back with the next lease.
        let mut old = Lease {
            credit: [3, 0, 30, 0],
            cap: [4, 0, 40, 0],
            pending: [0, 0, 7, 0],
            ..Lease::default()
        };
        assert!(
            old.take(&[1, 0, 1, 0], &limits, nanos(LEASE_MAX_AGE) + 1)
                .is_none()
        );
        assert_eq!(old.flush(), [-3, 0, -23, 0]);
        assert_eq!(old.credit, [0; DIMENSIONS]);
    }

    #[test]
    fn a_reservation_from_a_lease_counts_the_unused_credit_as_after_it() {
        let limits = limited();
        // A lease of 4 × (1 request, 10 tokens) left the counters at
        // (40, 0, 400); the first went to the request that took it.
        let mut lease = Lease {
            credit: [3, 0, 30, 0],
            cap: [4, 0, 40, 0],
            net: [40, 0, 400, 0],
            ..Lease::default()
        };
        assert_eq!(lease.position(), [37, 0, 370, 0]);
        assert_eq!(
            lease.take(&[1, 0, 10, 0], &limits, 0),
            Some([38, 0, 380, 0])
        );
        assert_eq!(
            lease.take(&[1, 0, 10, 0], &limits, 0),
            Some([39, 0, 390, 0])
        );
    }

    #[test]
    fn a_lease_keeps_the_strictest_bound_until_the_next_lease() {
        let mut lease = Lease::default();
        // 6 remain after the request at counter 10: nothing left at 16.
        lease.bound(&[Some(6), None, None, None], &[10, 0, 0, 0]);
        // A later response, looser (20 + 2 = 22), then stricter (1 + 14).
        lease.bound(&[Some(2), None, None, None], &[20, 0, 0, 0]);
        assert_eq!(lease.bounds[0], Some(16));
        lease.bound(
            &[Some(1), None, Some(5), None],
            &[14, 0, NET_MODULUS - 2, 0],
        );
        assert_eq!(lease.bounds, [Some(15), None, Some(3), None]);
        // They survive a flush and go once.
        let _ = lease.flush();
        assert_eq!(lease.take_bounds(), [Some(15), None, Some(3), None]);
        assert_eq!(lease.take_bounds(), [None; DIMENSIONS]);
    }

    #[test]
    fn divided_limits_keep_their_period_and_never_reach_zero() {
        let limits = super::super::Limits::per_minute(50, 20_000, 3).expect("limits");
        let d = divided(limits, 4);
        let get = |dim| d.get(dim).expect("limited");
        assert_eq!(get(super::super::Dimension::Requests).amount(), 12);
        assert_eq!(get(super::super::Dimension::InputTokens).burst(), 5_000);
        assert_eq!(get(super::super::Dimension::OutputTokens).amount(), 1);
        assert_eq!(
            get(super::super::Dimension::Requests).per(),
            Duration::from_secs(60)
        );
    }
}
