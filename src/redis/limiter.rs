//! The rate limiter's buckets in Redis: one atomic script per admission,
//! one per reconciliation, and what to do when Redis does not answer.
//!
//! # What is shared, and what stays local
//!
//! Each limit group is one Redis hash, `{prefix}{rl:<16 hex digits>}`,
//! named by the group's 64-bit hash (of its [`KeyId`](crate::request::KeyId)
//! and model — never the key material; processes that share a quota must
//! install one [`KeyIdentity`](crate::request::KeyIdentity) secret, or
//! their ids differ). The braces are the hash tag: everything of one group
//! lives in one Cluster slot. The hash holds the TAT of every dimension and
//! the 429 gate, in nanoseconds of **Redis's clock** (`TIME`, read inside the
//! script): no process sends its own time, so clients whose clocks disagree
//! cannot move the shared state.
//!
//! The *limits* are not stored: every admission passes the limits of the
//! local group (configured ⊓ learned), so learning stays local and each
//! process applies its own limits to the shared TATs. Processes configured
//! alike agree; one configured lower admits less.
//!
//! - `scripts/admit.lua`: the cooldown gate, then the multi-dimension GCRA
//!   check-and-reserve of `src/rate/gcra.rs` in the same integer
//!   arithmetic (TAT per dimension, emission interval rounded up, burst
//!   capacity), every dimension or none. A refusal is a wait relative to
//!   Redis's now, never an absolute time.
//! - `scripts/settle.lua`: a settled reservation's refund or extra charge
//!   per dimension (a refund never moves a TAT below now), and the gate a
//!   429 closes. It runs spawned, off the response path, bounded by the
//!   handle's timeout; a failure is counted.
//!
//! - `scripts/tighten.lua`: learning from the provider for every process.
//!   The hash also holds a net counter per dimension (reservations and
//!   leases, plus charges, minus refunds, by every process, modulo 2^50);
//!   an admission returns it, and the request keeps it. A response whose
//!   headers say `remaining` sends it back with that value: what was
//!   reserved since (the counter now minus then) is not in the provider's
//!   count, so the bucket is lowered to at most `remaining − since` from
//!   Redis's now — a TAT only ever raised, the refill since the request
//!   reached the provider not credited (it errs strict). This is the
//!   in-memory limiter's `learn` (`src/rate/state.rs`) on the shared
//!   state: admission and arrival at the provider differ by a variable
//!   delay, and with limits equal to the quota the provider's bucket is
//!   short now and then; its `remaining` says by how much. A request from
//!   a lease counts the lease's unused credit as reserved after it (it may
//!   be sent any time). Spawned, bounded and counted like `settle.lua`;
//!   with leases, the strictest `remaining` per dimension is kept and
//!   applied by the next lease instead (`lease.lua`), so a lease still
//!   costs one round trip.
//!   What it cannot see: a request admitted *before* another but reaching
//!   the provider after it is in neither that response's `remaining` nor
//!   its `since`.
//!
//! - `scripts/pool.lua`: a key pool's choice on the shared state (every
//!   key's calendar counter, gate and buckets; the strategy; the
//!   reservation on the key chosen), in one call. A pool's groups and
//!   calendar counters share the pool's hash tag,
//!   `{prefix}{rlp:<pool tag>}:…`, so the script may touch them all in
//!   Cluster too; `scripts/calendar.lua` corrects a calendar counter when
//!   the request is refused, unsent or reports its usage.
//!
//! Every write sets a TTL of the time until the group is full again plus a
//! second: an expired group is exactly a full one, so Redis never holds a
//! group that does not matter. Scripts run by `EVALSHA` and are loaded
//! again after `NOSCRIPT` ([`Redis`]).
//!
//! # When Redis is slow or down
//!
//! Every decision is bounded by the handle's [timeout](Redis::with_timeout).
//! A failed decision follows the [`FailurePolicy`]; after a failure the
//! limiter does not ask Redis again for [`FailurePolicy`]'s retry interval
//! (250 ms) — during an outage each admission would otherwise pay the whole
//! timeout first — and then uses the shared state again as soon as Redis
//! answers.

use std::fmt;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;

use super::Redis;
use crate::error::BackendError;
use crate::rate::{CalendarQuota, Dimension, Limit, Period};

/// Dimensions of a cost vector (the rate limiter's).
const DIMENSIONS: usize = Dimension::ALL.len();

/// The longest bucket (`burst · T`) the scripts hold exactly: 2^51 ns,
/// about 26 days (Lua numbers are doubles).
pub(crate) const MAX_CAPACITY_NANOS: u64 = 1 << 51;

static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Redis::script(concat!(
        include_str!("scripts/prelude.lua"),
        include_str!("scripts/admit.lua")
    ))
});

static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Redis::script(concat!(
        include_str!("scripts/prelude.lua"),
        include_str!("scripts/settle.lua")
    ))
});

static TIGHTEN: LazyLock<Script> = LazyLock::new(|| {
    Redis::script(concat!(
        include_str!("scripts/prelude.lua"),
        include_str!("scripts/tighten.lua")
    ))
});

static POOL: LazyLock<Script> = LazyLock::new(|| Redis::script(include_str!("scripts/pool.lua")));

static CALENDAR: LazyLock<Script> =
    LazyLock::new(|| Redis::script(include_str!("scripts/calendar.lua")));

static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Redis::script(concat!(
        include_str!("scripts/prelude.lua"),
        include_str!("scripts/lease.lua")
    ))
});

/// What a rate limiter with a Redis store does when Redis gives no answer
/// within its timeout (or an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Refuse: the request fails with
    /// [`BackendError`]. Nothing is sent that the shared limit has not
    /// admitted.
    FailClosed,
    /// Admit without limit. Nothing is lost but the limit: expect 429s
    /// while Redis is away (a retry layer above handles them).
    FailOpen,
    /// Admit by an in-memory limiter of this process at every limit ÷
    /// `instances` (rounded down, at least one unit), so the instances
    /// together stay near the shared limit. The shares are of the limits
    /// the shared path used last, learned ones included, and the fallback
    /// only tightens by what the provider answers (never raises a share to
    /// the limit the provider announces for all). The default, with `instances:
    /// 1` — set it to the number of processes that share the quota.
    Local {
        /// How many processes share the quota.
        instances: u32,
    },
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy::Local { instances: 1 }
    }
}

/// Counts of a rate limiter's dealings with Redis, since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteStats {
    /// Scripts run (admissions, reconciliations and tightenings),
    /// answered or not.
    pub round_trips: u64,
    /// Admission decisions Redis did not make (error, timeout, or skipped
    /// just after one), decided by the failure policy instead.
    pub failed_decisions: u64,
    /// Reconciliations (refunds, charges, gates, tightenings) that did not
    /// reach Redis.
    pub failed_reconciles: u64,
}

/// The group's net counters in Redis, per dimension: everything every
/// process reserved, plus charges, minus refunds, modulo [`NET_MODULUS`].
pub(crate) type Nets = [u64; DIMENSIONS];

/// Where the scripts' net counters wrap (2^50: exact in a Lua double).
pub(crate) const NET_MODULUS: u64 = 1 << 50;

/// `net − units` on the counters' circle (a reservation's place before
/// the credit of a lease it came from).
pub(crate) fn net_minus(net: u64, units: u64) -> u64 {
    (net % NET_MODULUS + NET_MODULUS - units % NET_MODULUS) % NET_MODULUS
}

/// Where a limit group lives in Redis: its hash, and its key pool's tag
/// when it is a pool key's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) group: u64,
    pub(crate) pool: Option<u64>,
}

/// One key of a pool, as the pool script sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolMember {
    /// The member's key id word (its calendar counter's name).
    pub(crate) id: u64,
    /// Its group, an index into the groups passed with it.
    pub(crate) group: usize,
    /// Skipped (its local gate is closed, or its probe is out).
    pub(crate) usable: bool,
    /// Its calendar quota.
    pub(crate) quota: Option<CalendarQuota>,
}

/// Redis's answer to a key pool's admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolDecision {
    /// Reserved on `member` (an index into the members passed), in the
    /// calendar period `period` (Redis's clock); its group's net counters
    /// right after.
    Admitted {
        member: usize,
        period: i64,
        nets: Nets,
    },
    /// No usable key now: the earliest frees after `wait`; `gate` when a
    /// 429's cooldown holds it.
    Wait { wait: Duration, gate: bool },
    /// Every usable key is out of its calendar quota for `wait`.
    Exhausted(Duration),
    /// Never: `dimension`'s cost is above its burst.
    Never { dimension: Dimension, burst: u64 },
}

/// Redis's answer to one admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Reserved in every dimension; the net counters right after.
    Admitted(Nets),
    /// A lease: this many multiples of the cost reserved (at least one);
    /// the net counters right after.
    Leased(u64, Nets),
    /// Not yet: try again after `wait` (measured on Redis's clock); `gate`
    /// when a 429's cooldown, not a bucket, holds it.
    Wait { wait: Duration, gate: bool },
    /// Never: `dimension`'s cost is above its burst.
    Never { dimension: Dimension, burst: u64 },
}

/// The Redis side of one rate limiter: the handle, the policy, counts.
pub(crate) struct RemoteStore {
    redis: Redis,
    pub(crate) policy: FailurePolicy,
    /// No decision asks Redis before this (ns on tokio's clock since
    /// `base`): set for a short while after a failure.
    skip_until: AtomicU64,
    base: tokio::time::Instant,
    round_trips: AtomicU64,
    failed_decisions: AtomicU64,
    failed_reconciles: AtomicU64,
}

impl fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStore")
            .field("redis", &self.redis)
            .field("policy", &self.policy)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// How long a failure keeps the limiter from asking Redis.
const RETRY_INTERVAL: Duration = Duration::from_millis(250);

impl RemoteStore {
    pub(crate) fn new(redis: Redis, policy: FailurePolicy) -> Self {
        RemoteStore {
            redis,
            policy,
            skip_until: AtomicU64::new(0),
            base: tokio::time::Instant::now(),
            round_trips: AtomicU64::new(0),
            failed_decisions: AtomicU64::new(0),
            failed_reconciles: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> RemoteStats {
        RemoteStats {
            round_trips: self.round_trips.load(Ordering::Relaxed),
            failed_decisions: self.failed_decisions.load(Ordering::Relaxed),
            failed_reconciles: self.failed_reconciles.load(Ordering::Relaxed),
        }
    }

    /// The Redis key of a group: hash-tagged by the group, or by its key
    /// pool (every group and calendar counter of one pool in one slot, so
    /// one script can choose among them).
    fn key(&self, slot: Slot) -> String {
        match slot.pool {
            None => format!("{}{{rl:{:016x}}}", self.redis.prefix(), slot.group),
            Some(pool) => format!(
                "{}{{rlp:{pool:016x}}}:{:016x}",
                self.redis.prefix(),
                slot.group
            ),
        }
    }

    /// The Redis key of a pool member's calendar counters.
    fn calendar_key(&self, pool: u64, member: u64) -> String {
        format!(
            "{}{{rlp:{pool:016x}}}:cal:{member:016x}",
            self.redis.prefix()
        )
    }

    fn clock(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Runs the admission script for `cost` under `limits` (bounded by the
    /// handle's timeout; skipped for a short while after a failure).
    pub(crate) async fn admit(
        &self,
        group: Slot,
        limits: &[Option<Limit>; DIMENSIONS],
        cost: &[u64; DIMENSIONS],
    ) -> Result<Decision, BackendError> {
        if self.clock() < self.skip_until.load(Ordering::Relaxed) {
            self.failed_decisions.fetch_add(1, Ordering::Relaxed);
            return Err(BackendError::new("skipped: Redis failed just before"));
        }
        let mut invocation = ADMIT.prepare_invoke();
        invocation.key(self.key(group)).arg(DIMENSIONS);
        for (limit, cost) in limits.iter().zip(cost) {
            match limit {
                Some(l) => invocation.arg(l.interval_nanos()).arg(l.burst()).arg(*cost),
                None => invocation.arg(0).arg(0).arg(0),
            };
        }
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let reply: Vec<i64> = match self.redis.run(&invocation).await {
            Ok(reply) => reply,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        decode(&reply).ok_or_else(|| {
            let e = BackendError::new("unexpected reply from the admission script");
            self.failed(&e);
            e
        })
    }

    /// Runs the lease script: applies `bounds` (the provider's
    /// `remaining` learned since the last lease, as net counter values:
    /// `Lease::bound` in `rate/remote.rs`) and `corrections`
    /// (negative: give back), then reserves up to `multiples` × `cost`, at
    /// least one.
    pub(crate) async fn lease(
        &self,
        group: Slot,
        limits: &[Option<Limit>; DIMENSIONS],
        cost: &[u64; DIMENSIONS],
        multiples: u64,
        corrections: &[i128; DIMENSIONS],
        bounds: &[Option<u64>; DIMENSIONS],
    ) -> Result<Decision, BackendError> {
        if self.clock() < self.skip_until.load(Ordering::Relaxed) {
            self.failed_decisions.fetch_add(1, Ordering::Relaxed);
            return Err(BackendError::new("skipped: Redis failed just before"));
        }
        let mut invocation = LEASE.prepare_invoke();
        invocation
            .key(self.key(group))
            .arg(DIMENSIONS)
            .arg(multiples);
        for ((limit, cost), delta) in limits.iter().zip(cost).zip(corrections) {
            let (refund, charge) = split(*delta);
            match limit {
                Some(l) => invocation
                    .arg(l.interval_nanos())
                    .arg(l.burst())
                    .arg(*cost)
                    .arg(refund)
                    .arg(charge),
                None => invocation.arg(0).arg(0).arg(0).arg(0).arg(0),
            };
        }
        for (limit, bound) in limits.iter().zip(bounds) {
            match (limit, bound) {
                (Some(_), Some(b)) => invocation.arg(b % NET_MODULUS),
                _ => invocation.arg(-1),
            };
        }
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let reply: Vec<i64> = match self.redis.run(&invocation).await {
            Ok(reply) => reply,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        let decision = match *reply {
            [0, m, ..] => u64::try_from(m)
                .ok()
                .filter(|&m| m >= 1)
                .zip(nets(&reply[2..]))
                .map(|(m, nets)| Decision::Leased(m, nets)),
            _ => decode(&reply),
        };
        decision.ok_or_else(|| {
            let e = BackendError::new("unexpected reply from the lease script");
            self.failed(&e);
            e
        })
    }

    /// Runs the pool script: chooses among `members` (whose groups are
    /// `groups`, each with its limits) on the shared state and reserves
    /// `cost` on the one chosen — and, in its calendar counters, one
    /// request, `tokens` and `spend` (nano-units).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn pool_admit(
        &self,
        pool: u64,
        groups: &[(u64, [Option<Limit>; DIMENSIONS])],
        members: &[PoolMember],
        fewest_used: bool,
        cost: &[u64; DIMENSIONS],
        (tokens, spend): (u64, u64),
    ) -> Result<PoolDecision, BackendError> {
        if self.clock() < self.skip_until.load(Ordering::Relaxed) {
            self.failed_decisions.fetch_add(1, Ordering::Relaxed);
            return Err(BackendError::new("skipped: Redis failed just before"));
        }
        let mut invocation = POOL.prepare_invoke();
        for (group, _) in groups {
            invocation.key(self.key(Slot {
                group: *group,
                pool: Some(pool),
            }));
        }
        for m in members {
            invocation.key(self.calendar_key(pool, m.id));
        }
        invocation
            .arg(DIMENSIONS)
            .arg(groups.len())
            .arg(members.len())
            .arg(u8::from(fewest_used))
            .arg(tokens)
            .arg(spend);
        for c in cost {
            invocation.arg(*c);
        }
        for (_, limits) in groups {
            for limit in limits {
                match limit {
                    Some(l) => invocation.arg(l.interval_nanos()).arg(l.burst()),
                    None => invocation.arg(0).arg(0),
                };
            }
        }
        let limit = |n: Option<u64>| n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        for m in members {
            let q = m.quota.unwrap_or_else(CalendarQuota::daily);
            invocation
                .arg(m.group + 1)
                .arg(u8::from(m.usable))
                .arg(if q.period == Period::Month { 2 } else { 1 })
                .arg(q.offset_secs)
                .arg(limit(q.requests))
                .arg(limit(q.tokens))
                .arg(limit(q.spend.map(crate::money::Money::nanos)));
        }
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let reply: Vec<i64> = match self.redis.run(&invocation).await {
            Ok(reply) => reply,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        let ns = |n: i64| u64::try_from(n).ok().map(Duration::from_nanos);
        let decision = match *reply {
            [0, member, period, ..] => usize::try_from(member)
                .ok()
                .filter(|&m| m < members.len())
                .zip(nets(&reply[3..]))
                .map(|(member, nets)| PoolDecision::Admitted {
                    member,
                    period,
                    nets,
                }),
            [1, wait, gate] => ns(wait).map(|wait| PoolDecision::Wait {
                wait,
                gate: gate < 0,
            }),
            [3, wait] => ns(wait).map(PoolDecision::Exhausted),
            [2, dimension, burst] => (|| {
                Some(PoolDecision::Never {
                    dimension: *Dimension::ALL.get(usize::try_from(dimension).ok()?)?,
                    burst: u64::try_from(burst).ok()?,
                })
            })(),
            _ => None,
        };
        decision.ok_or_else(|| {
            let e = BackendError::new("unexpected reply from the pool script");
            self.failed(&e);
            e
        })
    }

    /// Corrects a pool member's calendar counters in `period` (spawned,
    /// as [`reconcile`](Self::reconcile) is): what `delta` adds, negative
    /// to give back.
    pub(crate) fn calendar(
        self: &std::sync::Arc<Self>,
        pool: u64,
        member: u64,
        period: i64,
        delta: crate::rate::pool::CalendarDelta,
    ) {
        if delta == crate::rate::pool::CalendarDelta::default() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.failed_reconciles.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let store = std::sync::Arc::clone(self);
        let key = self.calendar_key(pool, member);
        runtime.spawn(async move {
            let mut invocation = CALENDAR.prepare_invoke();
            invocation
                .key(key)
                .arg(period)
                .arg(delta.requests)
                .arg(delta.tokens)
                .arg(delta.spend);
            store.round_trips.fetch_add(1, Ordering::Relaxed);
            if store.redis.run::<i64>(&invocation).await.is_err() {
                store.failed_reconciles.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    fn failed(&self, _e: &BackendError) {
        self.failed_decisions.fetch_add(1, Ordering::Relaxed);
        let until = self
            .clock()
            .saturating_add(u64::try_from(RETRY_INTERVAL.as_nanos()).unwrap_or(u64::MAX));
        self.skip_until.fetch_max(until, Ordering::Relaxed);
    }

    /// Applies a settled reservation's correction (`delta` per dimension:
    /// negative gives back, positive charges) and closes the gate for
    /// `gate`, in a task of its own: the response path never waits for it.
    /// Nothing to do, nothing sent. Outside a tokio runtime it is counted
    /// as failed.
    pub(crate) fn reconcile(
        self: &std::sync::Arc<Self>,
        group: Slot,
        limits: [Option<Limit>; DIMENSIONS],
        delta: [i128; DIMENSIONS],
        gate: Duration,
    ) {
        let limited = |i: usize| limits[i].is_some() && delta[i] != 0;
        if gate.is_zero() && !(0..DIMENSIONS).any(limited) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.failed_reconciles.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let store = std::sync::Arc::clone(self);
        let key = self.key(group);
        runtime.spawn(async move {
            let mut invocation = SETTLE.prepare_invoke();
            let gate = u64::try_from(gate.as_nanos()).unwrap_or(u64::MAX);
            invocation.key(key).arg(DIMENSIONS).arg(gate);
            for (limit, delta) in limits.iter().zip(delta) {
                let (refund, charge) = split(delta);
                match limit {
                    Some(l) => invocation.arg(l.interval_nanos()).arg(refund).arg(charge),
                    None => invocation.arg(0).arg(0).arg(0),
                };
            }
            store.round_trips.fetch_add(1, Ordering::Relaxed);
            if store.redis.run::<i64>(&invocation).await.is_err() {
                store.failed_reconciles.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

impl RemoteStore {
    /// Lowers the shared buckets to what the provider said `remaining`
    /// (per dimension; `None`: not said) in the response to a request
    /// admitted with net counters `net`, less what every process reserved
    /// since (tighten-only), in a task of its own like
    /// [`reconcile`](Self::reconcile). Nothing said of a limited
    /// dimension, nothing sent.
    pub(crate) fn tighten(
        self: &std::sync::Arc<Self>,
        group: Slot,
        limits: [Option<Limit>; DIMENSIONS],
        remaining: [Option<u64>; DIMENSIONS],
        net: Nets,
    ) {
        if !(0..DIMENSIONS).any(|i| limits[i].is_some() && remaining[i].is_some()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.failed_reconciles.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let store = std::sync::Arc::clone(self);
        let key = self.key(group);
        runtime.spawn(async move {
            let mut invocation = TIGHTEN.prepare_invoke();
            invocation.key(key).arg(DIMENSIONS);
            for ((limit, remaining), net) in limits.iter().zip(remaining).zip(net) {
                match (limit, remaining) {
                    // Above any burst, a `remaining` lowers nothing; kept
                    // exact in a Lua double.
                    (Some(l), Some(r)) => invocation
                        .arg(l.interval_nanos())
                        .arg(l.burst())
                        .arg(r.min(l.burst()))
                        .arg(net % NET_MODULUS),
                    _ => invocation.arg(0).arg(0).arg(-1).arg(0),
                };
            }
            store.round_trips.fetch_add(1, Ordering::Relaxed);
            if store.redis.run::<i64>(&invocation).await.is_err() {
                store.failed_reconciles.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// A correction as (units to give back, units to charge).
fn split(delta: i128) -> (u64, u64) {
    let magnitude = u64::try_from(delta.unsigned_abs()).unwrap_or(u64::MAX);
    if delta < 0 {
        (magnitude, 0)
    } else {
        (0, magnitude)
    }
}

/// The net counters of a reply (one per dimension, each below
/// [`NET_MODULUS`]).
fn nets(reply: &[i64]) -> Option<Nets> {
    let nets: Nets = reply
        .iter()
        .map(|&n| u64::try_from(n).ok().filter(|&n| n < NET_MODULUS))
        .collect::<Option<Vec<_>>>()?
        .try_into()
        .ok()?;
    Some(nets)
}

/// The admission script's reply.
fn decode(reply: &[i64]) -> Option<Decision> {
    match *reply {
        [0, _, ..] => nets(&reply[2..]).map(Decision::Admitted),
        [1, wait, dimension] => Some(Decision::Wait {
            wait: Duration::from_nanos(u64::try_from(wait).ok()?),
            gate: dimension < 0,
        }),
        [2, dimension, burst] => Some(Decision::Never {
            dimension: *Dimension::ALL.get(usize::try_from(dimension).ok()?)?,
            burst: u64::try_from(burst).ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode_and_nonsense_is_refused() {
        assert_eq!(
            decode(&[0, 17, 1, 0, 5, 0]),
            Some(Decision::Admitted([1, 0, 5, 0]))
        );
        // The counters are part of an admission.
        assert_eq!(decode(&[0, 17]), None);
        assert_eq!(decode(&[0, 17, 1, -1, 5, 0]), None);
        assert_eq!(
            decode(&[1, 1_500, -1]),
            Some(Decision::Wait {
                wait: Duration::from_nanos(1_500),
                gate: true
            })
        );
        assert_eq!(
            decode(&[2, 1, 10]),
            Some(Decision::Never {
                dimension: Dimension::InputTokens,
                burst: 10
            })
        );
        assert_eq!(decode(&[1, -5, 0]), None);
        assert_eq!(decode(&[2, 9, 1]), None);
        assert_eq!(decode(&[7]), None);
    }

    #[test]
    fn net_counters_subtract_on_their_circle() {
        assert_eq!(net_minus(10, 4), 6);
        // Across the wrap, as the scripts' counters wrap.
        assert_eq!(net_minus(3, 5), NET_MODULUS - 2);
        assert_eq!(net_minus(NET_MODULUS + 7, 2), 5);
    }
}
