//! A key pool's choice through Redis (the `redis` feature).
//!
//! # Why one script chooses
//!
//! With the buckets in Redis, a process's local buckets are not charged by
//! the others' admissions, so a choice made on them would read stale
//! state: process 2 would keep sending to the key process 1 just saw
//! refused with a 429, and two processes would both pick the key each
//! believes fullest. So the choice itself runs in Redis: one script
//! (`redis/scripts/pool.lua`) reads every usable key's calendar counter,
//! 429 gate and buckets on Redis's clock, applies the pool's strategy to
//! them, and reserves on the key it chose — atomically, in one round trip,
//! however many keys are cooling down or full. The alternative, the local
//! choice as a hint followed by an atomic reserve on that key and the next
//! on a refusal, costs up to one round trip per key exactly when the pool
//! is saturated, and still orders the keys by a stale view.
//!
//! For one script to touch every key of a pool, they share a hash tag: a
//! pool key's group lives at `{prefix}{rlp:<pool tag>}:<group hash>`, its
//! calendar counters at `{prefix}{rlp:<pool tag>}:cal:<key id>` (a hash of
//! the period index, requests, tokens and spend, expiring a day after the period
//! ends), where the pool tag is a hash of the pool's groups' ids: processes
//! sharing a pool declare the same keys (and one
//! [`KeyIdentity`](crate::request::KeyIdentity) secret). A request that
//! carries a pool key's own credentials is admitted in the same hash.
//!
//! What stays local: the process's own 429 gate and auto-mode probe (a key
//! whose local gate is closed is not offered to the script), the learned
//! limits (sent with each call, as for single groups), and the queue. The
//! 429 gate a response closes is written to the key's hash for every
//! process (as for single groups); a refund or correction of the calendar
//! counter is sent to Redis off the response path (`calendar.lua`).
//!
//! When Redis fails, the [`FailurePolicy`] applies: `FailClosed` answers
//! [`BackendError`](crate::error::BackendError); `FailOpen` sends on the
//! first key not cooling down locally, unreserved (no calendar quota, in
//! spend neither, is checked or counted: availability over every limit);
//! `Local` chooses among the keys in the in-memory limiter at divided
//! limits, with this process's own calendar counters held to its share
//! (1 ÷ instances) of each quota, and settles them (what it admits then is
//! not in Redis's counters). Pool admissions through Redis take no leases.

use super::super::gcra::{CostExceedsBurst, DIMENSIONS, Denied, Dimension, Limit};
use super::super::remote::Remote;
use super::super::state::{Attempt, Group, GroupKey, Limiter};
use super::{Choice, KeyPool, PoolStrategy, PoolTicket, Priced, period_cost};
use crate::error::BoxError;
use crate::redis::FailurePolicy;
use crate::redis::limiter::{PoolDecision, PoolMember};
use crate::sync::{Arc, lock};

/// A group's limits, per dimension.
type Limits = [Option<Limit>; DIMENSIONS];

/// Chooses a key of `pool` for `cost` on the shared state and reserves it
/// there; `true` with an admission Redis made (its settlement goes to
/// Redis too).
///
/// # Errors
///
/// [`BackendError`](crate::error::BackendError) when Redis fails under
/// [`FailurePolicy::FailClosed`]; `TooManyGroups` when a key's group
/// cannot be made.
pub(crate) async fn choose(
    limiter: &Limiter,
    pool: &KeyPool,
    remote: &Remote,
    model: Option<&std::sync::Arc<str>>,
    cost: [u64; DIMENSIONS],
    priced: Option<Priced>,
) -> Result<(Choice, bool), BoxError> {
    let inner = &*pool.inner;
    let shared = limiter.shared();
    let now = shared.now();
    let input = cost[Dimension::InputTokens.index()];
    let output = cost[Dimension::OutputTokens.index()];
    let period_cost = period_cost(input, output, priced);
    // The distinct groups, each with its limits (`None`: not usable here).
    let mut groups: Vec<(Arc<Group>, Option<Limits>)> = Vec::new();
    let mut members: Vec<PoolMember> = Vec::with_capacity(inner.members.len());
    let mut local_wait: Option<u64> = None;
    for m in &inner.members {
        let group = limiter.group(GroupKey::new(Some(m.group), model.cloned()), now)?;
        let index = match groups.iter().position(|(g, _)| Arc::ptr_eq(g, &group)) {
            Some(i) => i,
            None => {
                let limits = match shared.remote_view(&group, now) {
                    Ok(limits) => Some(limits),
                    Err(Attempt::At { at, .. }) => {
                        local_wait = Some(local_wait.map_or(at, |w| w.min(at)));
                        None
                    }
                    // A probe out (or anything else): woken when it ends.
                    Err(_) => None,
                };
                groups.push((group, limits));
                groups.len() - 1
            }
        };
        members.push(PoolMember {
            id: m.id.word(),
            group: index,
            // A key capped in money takes only what the pool can price.
            usable: groups[index].1.is_some() && (priced.is_some() || !m.capped_in_money()),
            quota: m.quota,
        });
    }
    if members.iter().all(|m| !m.usable) {
        return Ok((Choice::Wait(local_wait), false));
    }
    let sent: Vec<(u64, [Option<Limit>; DIMENSIONS])> = groups
        .iter()
        .map(|(g, l)| (g.key.hash(), l.unwrap_or([None; DIMENSIONS])))
        .collect();
    let fewest = inner.strategy == PoolStrategy::FewestUsed;
    let answer = remote
        .store
        .pool_admit(
            pool.tag(),
            &sent,
            &members,
            fewest,
            &cost,
            (period_cost.tokens, period_cost.spend),
        )
        .await;
    let earliest = |at: u64| Some(local_wait.map_or(at, |w| w.min(at)));
    match answer {
        Ok(PoolDecision::Admitted {
            member,
            period,
            nets,
        }) => {
            let group = Arc::clone(&groups[members[member].group].0);
            let mut ticket = shared.hold_remote(&group, cost, shared.now(), nets);
            let t = PoolTicket {
                member: u32::try_from(member).unwrap_or(u32::MAX),
                period,
                input,
                output,
                spend: period_cost.spend,
                priced,
            };
            // Mirrored in this process's counters (its stats), when its
            // clock is in the same period as Redis's.
            let m = &inner.members[member];
            {
                let mut u = lock(&m.usage);
                u.roll(m.quota.as_ref(), inner.clock.unix());
                if u.index == period {
                    u.add(period_cost);
                }
            }
            ticket.pool = Some(t);
            Ok((
                Choice::Admitted {
                    group,
                    ticket,
                    member,
                },
                true,
            ))
        }
        Ok(PoolDecision::Wait { wait, .. }) => {
            let at = shared.now().saturating_add(super::super::gcra::nanos(wait));
            Ok((Choice::Wait(earliest(at)), false))
        }
        Ok(PoolDecision::Exhausted(after)) => match local_wait {
            // A key cooling down here may still take it before the reset.
            Some(w) => {
                let at = shared
                    .now()
                    .saturating_add(super::super::gcra::nanos(after));
                Ok((Choice::Wait(Some(w.min(at))), false))
            }
            None => Ok((Choice::Exhausted(after), false)),
        },
        Ok(PoolDecision::Never { dimension, burst }) => Ok((
            Choice::Never(Denied::CostExceedsBurst(CostExceedsBurst {
                dimension,
                cost: cost[dimension.index()],
                burst,
            })),
            false,
        )),
        Err(failure) => match remote.store.policy {
            FailurePolicy::FailOpen => {
                // Unreserved, on the first key not cooling down here.
                let member = members.iter().position(|m| m.usable).unwrap_or(0);
                let group = Arc::clone(&groups[members[member].group].0);
                let ticket = shared.hold_remote(&group, cost, shared.now(), [0; DIMENSIONS]);
                Ok((
                    Choice::Admitted {
                        group,
                        ticket,
                        member,
                    },
                    false,
                ))
            }
            FailurePolicy::Local { .. } => {
                let Some(fallback) = remote.fallback() else {
                    return Err(failure.into());
                };
                let fshared = fallback.shared();
                let choice =
                    pool.choose(fallback, model, cost, priced, fshared.now(), Some(false))?;
                Ok((
                    match choice {
                        // In this limiter's time, not the fallback's.
                        Choice::Wait(at) => {
                            Choice::Wait(at.map(|at| shared.ns(fshared.instant(at))))
                        }
                        other => other,
                    },
                    false,
                ))
            }
            _ => Err(failure.into()),
        },
    }
}
