//! The shared state of one rate limiter: limit groups, their GCRA state, what
//! was learned from the provider, and the queue they wait in.

use std::fmt;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use super::config::{Config, Learning};
use super::gcra::{Bucket, DIMENSIONS, Denied, Dimension, Gcra, Limit, nanos};
use super::groups::{Groups, Judged, Tomb};
use super::stats::{GroupStats, ThresholdEvent};
use crate::error::TooManyGroups;
use crate::provider::{Quota, QuotaSnapshot, Usage, may_carry_quota, retry_after};
use crate::queue::{QueueKey, WaitQueue};
use crate::request::{KeyId, bounded_model};
use crate::sync::{Arc, Mutex, lock};
use crate::util::SharedRng;

/// What a limit group is keyed by: the API key's identity and the model.
#[derive(Clone)]
pub(crate) struct GroupKey {
    pub(crate) key: Option<KeyId>,
    pub(crate) model: Option<std::sync::Arc<str>>,
    /// Both, hashed once (the map hashes this word, not the model's bytes).
    hash: u64,
}

impl GroupKey {
    /// A model name over [`MAX_MODEL_NAME`](crate::request::MAX_MODEL_NAME)
    /// bytes is kept truncated and hashed (`request/model.rs`).
    pub(crate) fn new(key: Option<KeyId>, model: Option<std::sync::Arc<str>>) -> Self {
        let model = model.as_ref().map(bounded_model);
        let model_hash = model
            .as_deref()
            .map_or(0, |m| xxhash_rust::xxh3::xxh3_64(m.as_bytes()));
        let key_word = key.map_or(0, |k| k.word() ^ crate::util::GOLDEN_GAMMA);
        GroupKey {
            hash: crate::util::splitmix64(key_word ^ model_hash.rotate_left(32)),
            key,
            model,
        }
    }
}

impl GroupKey {
    /// The precomputed hash (shard, table and tombstone).
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

impl PartialEq for GroupKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key && self.model == other.model
    }
}

impl Eq for GroupKey {}

impl std::hash::Hash for GroupKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The groups map's hasher: the key is already a well-mixed hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `GroupKey`; anything else is mixed in.
        for b in bytes {
            self.0 = crate::util::splitmix64(self.0 ^ u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// One rate limiter: its groups, and what they share.
pub(crate) struct Limiter {
    shared: Arc<Shared>,
    groups: Groups,
}

/// What every group of one limiter shares. Each group holds it, so a
/// request's reservation reaches it through its group: the reference count
/// a request takes is its group's, not one every thread takes (which made
/// admitting over many groups from two threads scale poorly).
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) queue: WaitQueue,
    base: Instant,
    jitter: SharedRng,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitState")
            .field("groups", &self.groups.len())
            .field("queued", &self.shared.queue.len())
            .finish_non_exhaustive()
    }
}

/// One limit group: the state every request of one (key, model) shares.
///
/// Aligned to a cache line pair (as the groups map's shards are), so two
/// threads admitting in two groups made one after the other do not share
/// a line.
#[repr(align(128))]
pub(crate) struct Group {
    pub(crate) shared: Arc<Shared>,
    /// The group's key in the wait queue (unique: groups and limiters
    /// sharing one queue never wait behind each other).
    pub(crate) id: QueueKey,
    pub(crate) key: GroupKey,
    pub(crate) state: Mutex<GroupState>,
    /// Requests of the group waiting in the queue (a newcomer that sees
    /// any queues behind them instead of trying at the call).
    pub(crate) queued: AtomicU32,
    /// What this process holds of a Redis lease (with leases configured).
    #[cfg(feature = "redis")]
    /// (Boxed, and made only with leases: most limiters have none.)
    pub(crate) lease: Option<Box<super::remote::LeaseCell>>,
    /// The key pool's queue key when this group is a pool key's: what
    /// frees this group may let the pool's head in too (`rate/pool.rs`).
    pub(crate) pool_wake: Option<QueueKey>,
    /// The model as a metric label (bounded: `telemetry`).
    #[cfg(feature = "metrics")]
    pub(crate) label: crate::telemetry::record::ModelLabel,
}

pub(crate) struct GroupState {
    pub(crate) gcra: Gcra,
    /// Limits from the configuration (ceilings unless learning).
    configured: [Option<Limit>; DIMENSIONS],
    /// Limits the provider announced (`…-limit` headers).
    learned: [Option<Limit>; DIMENSIONS],
    /// The provider's last word on what remains, per dimension.
    server_remaining: [Option<u64>; DIMENSIONS],
    /// Net units reserved so far (reservations + charges − refunds), per
    /// dimension: lets a response's `remaining` be corrected for what was
    /// admitted after that request.
    net_reserved: [i128; DIMENSIONS],
    /// No request of the group is sent before this (ns since base).
    cooldown_until: u64,
    /// Auto mode before the first response taught the limits: one request
    /// at a time.
    probing: bool,
    /// Requests sent whose response body has not ended.
    pub(crate) in_flight: u32,
    /// Reservations held (sent or not): a group with any is never evicted.
    holds: u32,
    last_used: u64,
    /// Per configured threshold and dimension: whether it is above it now
    /// (so the callback fires once per crossing).
    above: Vec<[bool; DIMENSIONS]>,
}

/// The result of one admission attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Reserved: send it.
    Admitted(Ticket),
    /// Try again at `at` (ns since base); `cooldown` when a 429 gate, not
    /// the bucket, holds it.
    At { at: u64, cooldown: bool },
    /// Wait until woken (auto mode's first request holds its reservation).
    Parked,
    /// The request's own cooldown gate (the group's cooldown plus its
    /// jitter) has not passed: try again then. Made by the future, not by
    /// [`Shared::attempt`].
    Gated(Instant),
    /// Can never be admitted.
    Never(Denied),
}

/// How a cost fits a group now (for a key pool's choice).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fit {
    /// It fits; the least fraction of any limited bucket left after it.
    Now(f64),
    /// Not before `at` (ns since base): the bucket, or a 429 gate.
    At(u64),
    /// Auto mode's probe is out: when it ends.
    Parked,
    /// Never.
    Never(Denied),
}

/// What an admitted request reserved, for reconciliation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    pub(crate) cost: [u64; DIMENSIONS],
    /// `net_reserved` right after this reservation.
    net_after: [i128; DIMENSIONS],
    /// When it was admitted (ns since base).
    at: u64,
    /// The key pool's calendar reservation, when a pool chose the key.
    pub(crate) pool: Option<super::pool::PoolTicket>,
    /// Reserved in Redis: the group's net counters there right after this
    /// reservation (what a response's `remaining` is corrected by, for
    /// every process).
    #[cfg(feature = "redis")]
    pub(crate) remote_net: crate::redis::limiter::Nets,
}

impl Limiter {
    pub(crate) fn new(config: Config, queue: WaitQueue) -> Self {
        Limiter {
            groups: Groups::new(config.max_groups),
            shared: Arc::new(Shared {
                config,
                queue,
                base: Instant::now(),
                jitter: SharedRng::new(crate::util::GOLDEN_GAMMA),
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The groups map (for its tests).
    #[cfg(test)]
    pub(crate) fn groups(&self) -> &Groups {
        &self.groups
    }

    /// The group of `key`, created with the configured limits if new (from
    /// its tombstone if it was evicted still refilling; see `groups.rs`);
    /// `now` is the caller's clock reading (one per request).
    ///
    /// # Errors
    ///
    /// [`TooManyGroups`] when the key's shard is full and every group in it
    /// is in use.
    pub(crate) fn group(&self, key: GroupKey, now: u64) -> Result<Arc<Group>, TooManyGroups> {
        self.groups.get_or_insert(
            key,
            now,
            |g| self.shared.judge(g, now),
            |key, tomb| Shared::new_group(&self.shared, key, tomb, now),
        )
    }

    /// A snapshot of every group.
    pub(crate) fn stats(&self) -> Vec<GroupStats> {
        let now = self.shared.now();
        self.groups
            .all()
            .iter()
            .map(|g| {
                let s = lock(&g.state);
                s.stats(g, self.shared.queue.len_of(g.id), now)
            })
            .collect()
    }
}

impl Shared {
    /// Nanoseconds since this limiter was created, on tokio's clock.
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.base))
    }

    pub(crate) fn instant(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }

    /// A fresh value in `[0, max]` for positive-only jitter (SplitMix64 over
    /// a shared counter: cheap, lock-free, well spread).
    pub(crate) fn jitter(&self, max: Duration) -> Duration {
        let max = nanos(max);
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.jitter.next_u64() % (max + 1))
    }

    pub(crate) fn new_group(
        shared: &Arc<Shared>,
        key: GroupKey,
        tomb: Option<Tomb>,
        now: u64,
    ) -> Arc<Group> {
        let limits = shared.config.limits_for(key.model.as_deref());
        let mut gcra = Gcra::new(limits);
        let mut cooldown_until = 0;
        if let Some(t) = tomb {
            for d in Dimension::ALL {
                if let Some(limit) = gcra.limit(d) {
                    gcra.set_bucket(d, Some(Bucket::from_parts(limit, t.tat[d.index()])));
                }
            }
            cooldown_until = t.cooldown_until;
        }
        let pool_wake = shared
            .config
            .pool
            .as_ref()
            .and_then(|p| p.wake_key(key.key));
        #[cfg(feature = "metrics")]
        let label = crate::telemetry::record::ModelLabel::of(key.model.as_ref());
        Arc::new(Group {
            shared: Arc::clone(shared),
            id: QueueKey::unique(),
            key,
            state: Mutex::new(GroupState {
                gcra,
                configured: limits,
                learned: [None; DIMENSIONS],
                server_remaining: [None; DIMENSIONS],
                net_reserved: [0; DIMENSIONS],
                cooldown_until,
                probing: shared.config.learning == Learning::Auto,
                in_flight: 0,
                holds: 0,
                last_used: now,
                above: vec![[false; DIMENSIONS]; shared.config.thresholds.len()],
            }),
            queued: AtomicU32::new(0),
            #[cfg(feature = "redis")]
            lease: shared
                .config
                .remote
                .as_ref()
                .is_some_and(super::remote::Remote::leases)
                .then(Box::default),
            pool_wake,
            #[cfg(feature = "metrics")]
            label,
        })
    }

    /// How eviction sees `group` (which only the map holds): busy while it
    /// holds a reservation or anyone of it queues; else free, idle once
    /// unused for the idle timeout with its buckets full and its gate open,
    /// and with a tombstone when they are not (dropping it as it is would
    /// hand the key a second burst).
    fn judge(&self, group: &Group, now: u64) -> Judged {
        let s = lock(&group.state);
        if s.holds > 0 || self.queue.len_of(group.id) > 0 {
            return Judged::Busy;
        }
        let mut tat = [0; DIMENSIONS];
        let mut until = s.cooldown_until;
        for d in Dimension::ALL {
            if let Some(b) = s.gcra.bucket(d) {
                tat[d.index()] = b.tat();
                until = until.max(b.tat());
            }
        }
        let settled = until <= now;
        Judged::Free {
            idle: settled && now.saturating_sub(s.last_used) >= nanos(self.config.idle_timeout),
            tomb: (!settled).then_some(Tomb {
                hash: group.key.hash(),
                tat,
                cooldown_until: s.cooldown_until,
                until,
            }),
        }
    }

    /// Tries to reserve `cost` in `group` now.
    ///
    /// `send`: the request is sent at once when admitted (counted in
    /// flight under this lock, not a second one).
    ///
    /// `behind_others`: the request has no place in the queue yet and
    /// others of the group are waiting. It must then queue behind them even
    /// if its cost would fit now (else a stream of cheap newcomers takes the
    /// tokens a large head waits for, and starves it): the answer is what it
    /// would be, but nothing is reserved and a fit is reported as `At(now)`.
    pub(crate) fn attempt(
        &self,
        group: &Group,
        cost: [u64; DIMENSIONS],
        now: u64,
        behind_others: bool,
        send: bool,
    ) -> Attempt {
        let mut s = lock(&group.state);
        s.last_used = now;
        if s.cooldown_until > now {
            return Attempt::At {
                at: s.cooldown_until,
                cooldown: true,
            };
        }
        // One probe at a time counts a probe admitted but not yet sent
        // (its inner service not ready): `holds`, not `in_flight`.
        if s.probing && s.holds > 0 {
            return Attempt::Parked;
        }
        if behind_others {
            return match s.gcra.check(cost, now) {
                Ok(()) => Attempt::At {
                    at: now,
                    cooldown: false,
                },
                Err(Denied::Until { at, .. }) => Attempt::At {
                    at,
                    cooldown: false,
                },
                Err(never) => Attempt::Never(never),
            };
        }
        match s.gcra.reserve(cost, now) {
            Ok(()) => {
                for (net, c) in s.net_reserved.iter_mut().zip(cost) {
                    *net += i128::from(c);
                }
                s.holds += 1;
                if send {
                    s.in_flight += 1;
                }
                let ticket = Ticket {
                    cost,
                    net_after: s.net_reserved,
                    at: now,
                    pool: None,
                    #[cfg(feature = "redis")]
                    remote_net: [0; DIMENSIONS],
                };
                let events = self.check_thresholds(group, &mut s, now);
                drop(s);
                self.fire(events);
                Attempt::Admitted(ticket)
            }
            Err(Denied::Until { at, .. }) => Attempt::At {
                at,
                cooldown: false,
            },
            Err(never) => Attempt::Never(never),
        }
    }

    /// Wakes the head of `group`'s waiters, and of its key pool's.
    fn wake(&self, group: &Group) {
        self.queue.wake_head(group.id);
        if let Some(pool) = group.pool_wake {
            self.queue.wake_head(pool);
        }
    }

    /// Whether `cost` fits `group` now, and with how much headroom, for a
    /// key pool's choice (`rate/pool.rs`); nothing is reserved.
    pub(crate) fn fit(&self, group: &Group, cost: [u64; DIMENSIONS], now: u64) -> Fit {
        let s = lock(&group.state);
        if s.cooldown_until > now {
            return Fit::At(s.cooldown_until);
        }
        if s.probing && s.holds > 0 {
            return Fit::Parked;
        }
        match s.gcra.check(cost, now) {
            Ok(()) => {
                // The least fraction of a limited dimension left after this
                // cost: 1 when nothing is limited.
                let mut headroom = 1.0f64;
                for d in Dimension::ALL {
                    if let Some(limit) = s.gcra.limit(d) {
                        let left = s.gcra.available(d, now).saturating_sub(cost[d.index()]);
                        headroom = headroom.min(left as f64 / limit.burst() as f64);
                    }
                }
                Fit::Now(headroom)
            }
            Err(Denied::Until { at, .. }) => Fit::At(at),
            Err(never) => Fit::Never(never),
        }
    }

    /// The earliest time `cost` could be admitted, ignoring the queue (a
    /// lower bound on the wait, for fail-fast decisions).
    pub(crate) fn earliest(&self, group: &Group, cost: [u64; DIMENSIONS], now: u64) -> u64 {
        let s = lock(&group.state);
        let gate = s.cooldown_until;
        match s.gcra.check(cost, now) {
            Ok(()) => gate.max(now),
            Err(Denied::Until { at, .. }) => gate.max(at),
            Err(_) => u64::MAX,
        }
    }

    /// The request was sent.
    pub(crate) fn sent(&self, group: &Group) {
        lock(&group.state).in_flight += 1;
    }

    /// A request counted as sent at the call was not sent after all (its
    /// future was dropped before its first poll): no longer in flight. Its
    /// hold then cancels the reservation.
    pub(crate) fn unsent(&self, group: &Group) {
        let mut s = lock(&group.state);
        s.in_flight = s.in_flight.saturating_sub(1);
    }

    /// A reserved request was dropped before it was sent: everything back.
    pub(crate) fn cancel(&self, group: &Group, ticket: &Ticket) {
        let now = self.now();
        {
            let mut s = lock(&group.state);
            for d in Dimension::ALL {
                s.refund(d, ticket.cost[d.index()], now);
            }
            s.holds = s.holds.saturating_sub(1);
        }
        if let (Some(t), Some(pool)) = (&ticket.pool, &self.config.pool) {
            pool.refund(t, None);
        }
        self.wake(group);
    }

    /// A sent request is over (its response ended, failed or was dropped):
    /// correct the reservation from what the provider reported.
    ///
    /// Returns the correction made per dimension (negative: given back),
    /// for a store outside the process to apply too.
    pub(crate) fn settle(
        &self,
        group: &Group,
        ticket: &Ticket,
        outcome: Settle,
    ) -> [i128; DIMENSIONS] {
        // The clock is read only when something is corrected or watched
        // (an unknown outcome with no threshold changes nothing in time).
        let now = if matches!(outcome, Settle::Unknown) && self.config.thresholds.is_empty() {
            0
        } else {
            self.now()
        };
        let mut refunded = false;
        #[cfg(feature = "metrics")]
        let mut used = [None; DIMENSIONS];
        let (events, probing, delta) = {
            let mut s = lock(&group.state);
            let before = s.net_reserved;
            s.in_flight = s.in_flight.saturating_sub(1);
            s.holds = s.holds.saturating_sub(1);
            let [_, input, output, tokens] = ticket.cost;
            match outcome {
                Settle::Usage { usage, complete } => {
                    // Every real request reads some input: a zero means the
                    // usage named only output tokens, and the estimate stands.
                    let actual = usage.total_input_tokens();
                    let input_used = if actual > 0 {
                        let used = usage.rate_limited_input_tokens();
                        refunded |= s.correct(Dimension::InputTokens, input, used, now);
                        Some(used)
                    } else {
                        None
                    };
                    let output_used = complete.then_some(usage.output_tokens);
                    if let Some(used) = output_used {
                        refunded |= s.correct(Dimension::OutputTokens, output, used, now);
                    }
                    // The combined dimension: what is known of each part
                    // replaces its estimate (OpenAI's TPM counts every
                    // prompt token, cached ones included).
                    if input_used.is_some() || output_used.is_some() {
                        let used = input_used
                            .unwrap_or(input)
                            .saturating_add(output_used.unwrap_or(output));
                        refunded |= s.correct(Dimension::Tokens, tokens, used, now);
                    }
                }
                Settle::Refused => {
                    // The provider refused it (429, 5xx…) before generating:
                    // no tokens were spent. The request itself still counts.
                    refunded |= s.correct(Dimension::InputTokens, input, 0, now);
                    refunded |= s.correct(Dimension::OutputTokens, output, 0, now);
                    refunded |= s.correct(Dimension::Tokens, tokens, 0, now);
                }
                Settle::Unknown => {}
            }
            // A charge can cross a threshold as well as an admission can.
            // `probing` is read under this lock, not a second one: it only
            // ever goes from true to false, so this can only add a spurious
            // wake in a race with the probe's end (whose `learn` wakes the
            // head anyway), never lose one.
            let mut delta = [0; DIMENSIONS];
            for ((d, after), before) in delta.iter_mut().zip(s.net_reserved).zip(before) {
                *d = after - before;
            }
            #[cfg(feature = "metrics")]
            {
                // Read under the lock, recorded after it.
                let now = if now == 0 { self.now() } else { now };
                for d in Dimension::ALL {
                    if let Some(limit) = s.gcra.limit(d) {
                        used[d.index()] =
                            Some(1.0 - s.gcra.available(d, now) as f64 / limit.burst() as f64);
                    }
                }
            }
            (self.check_thresholds(group, &mut s, now), s.probing, delta)
        };
        #[cfg(feature = "metrics")]
        for (d, used) in used.iter().enumerate() {
            if let Some(used) = used {
                crate::telemetry::record::utilization(&group.label, d, *used);
            }
        }
        self.fire(events);
        if let (Some(t), Some(pool)) = (&ticket.pool, &self.config.pool) {
            refunded |= pool.refund(t, Some(&outcome));
        }
        // A refund or a finished probe may let the head of the queue in.
        if refunded || probing {
            self.wake(group);
        }
        delta
    }

    /// Learns from a response's status and headers.
    ///
    /// Returns the provider's `remaining` per dimension when learning
    /// tightens by it (for a store outside the process to apply too), else
    /// nothing.
    pub(crate) fn learn(
        &self,
        group: &Group,
        ticket: &Ticket,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> [Option<u64>; DIMENSIONS] {
        // Most responses carry no rate-limit header and are no 429: then
        // there is nothing to learn — unless a probe (auto mode) just ended.
        let carries = may_carry_quota(headers);
        if !carries
            && status != StatusCode::TOO_MANY_REQUESTS
            && self.config.learning != Learning::Auto
        {
            return [None; DIMENSIONS];
        }
        let now = self.now();
        // Skip the snapshot (and its wall-clock read) when it would be empty.
        let snapshot = if carries {
            QuotaSnapshot::from_headers(headers, SystemTime::now())
        } else {
            QuotaSnapshot::default()
        };
        let mut s = lock(&group.state);
        let quotas = [
            snapshot.requests,
            snapshot.input_tokens,
            snapshot.output_tokens,
            snapshot.combined_tokens,
        ];
        let mut learned_any = false;
        for d in Dimension::ALL {
            let Some(q) = quotas[d.index()] else { continue };
            learned_any |= s.learn_dimension(d, q, ticket, now, &self.config);
        }
        if s.probing && (learned_any || s.gcra_has_limits()) {
            s.probing = false;
        }
        // (Whether the group was cooling down already, and for how long it
        // does now: told once the lock is let go.)
        let mut cooled = None;
        if status == StatusCode::TOO_MANY_REQUESTS {
            // A 429 pauses every caller of the group until the server's
            // advice has passed; without advice, until the exhausted
            // dimension's reset, or a short default.
            let wait = retry_after(headers, SystemTime::now())
                .or_else(|| {
                    quotas
                        .iter()
                        .flatten()
                        .filter(|q| q.remaining == Some(0))
                        .filter_map(|q| q.reset)
                        .max()
                })
                .unwrap_or(self.config.default_cooldown)
                .min(self.config.max_cooldown);
            let until = now.saturating_add(nanos(wait));
            let was_cooling = s.cooldown_until > now;
            s.cooldown_until = s.cooldown_until.max(until);
            cooled = Some((
                was_cooling,
                s.cooldown_until.saturating_sub(now) / 1_000_000,
            ));
        }
        // The server's `remaining` or a lower limit can cross a threshold.
        let events = self.check_thresholds(group, &mut s, now);
        drop(s);
        if let Some((was_cooling, cooldown_ms)) = cooled {
            let model = group.key.model.as_deref();
            // The 429 that closes the gate is for the operator (the limits
            // are above the provider's); the herd's others are not.
            if was_cooling {
                tracing::debug!(
                    gen_ai.request.model = model,
                    llm_resilience.rate_limit.cooldown_ms = cooldown_ms,
                    "rate limit: 429 while cooling down"
                );
            } else {
                tracing::warn!(
                    gen_ai.request.model = model,
                    llm_resilience.rate_limit.cooldown_ms = cooldown_ms,
                    "rate limit: upstream 429, the group cools down"
                );
            }
        }
        self.fire(events);
        // The end of a probe, a lower limit or a cooldown: the head of the
        // queue re-decides.
        self.wake(group);
        if self.config.learning == Learning::Off {
            return [None; DIMENSIONS];
        }
        quotas.map(|q| q.and_then(|q| q.remaining))
    }

    fn check_thresholds(&self, group: &Group, s: &mut GroupState, now: u64) -> Vec<ThresholdEvent> {
        let mut events = Vec::new();
        for (i, t) in self.config.thresholds.iter().enumerate() {
            for d in Dimension::ALL {
                let Some(limit) = s.gcra.limit(d) else {
                    continue;
                };
                let used = 1.0 - s.gcra.available(d, now) as f64 / limit.burst() as f64;
                let above = used >= t.fraction;
                if above && !s.above[i][d.index()] {
                    events.push(ThresholdEvent {
                        threshold: i,
                        fraction: t.fraction,
                        dimension: d,
                        utilization: used,
                        key: group.key.key,
                        model: group.key.model.clone(),
                    });
                }
                s.above[i][d.index()] = above;
            }
        }
        events
    }

    fn fire(&self, events: Vec<ThresholdEvent>) {
        for e in events {
            if let Some(t) = self.config.thresholds.get(e.threshold) {
                (t.callback)(&e);
            }
        }
    }
}

/// What admission through a store outside the process (Redis) needs of
/// the local group: the group's gate and probe are still local, and so is
/// the bookkeeping of what it holds; the buckets are the store's.
#[cfg(feature = "redis")]
impl Shared {
    /// The group's effective limits (configured ⊓ learned) to admit by, or
    /// the local answer when its 429 gate is closed or a probe is out.
    // The error is an `Attempt` (the ticket variant makes it large), moved
    // once per admission beside a network round trip.
    #[allow(clippy::result_large_err)]
    pub(crate) fn remote_view(
        &self,
        group: &Group,
        now: u64,
    ) -> Result<[Option<Limit>; DIMENSIONS], Attempt> {
        let mut s = lock(&group.state);
        s.last_used = now;
        if s.cooldown_until > now {
            return Err(Attempt::At {
                at: s.cooldown_until,
                cooldown: true,
            });
        }
        if s.probing && s.holds > 0 {
            return Err(Attempt::Parked);
        }
        Ok(Dimension::ALL.map(|d| s.gcra.limit(d)))
    }

    /// Sets `group`'s limits to `limits` in every dimension `limits`
    /// has: how the Redis fallback keeps to its share of what the main
    /// limiter learned. Each changed bucket keeps what is in use
    /// ([`Gcra::set_limit`](super::gcra::Gcra::set_limit)).
    #[cfg(feature = "redis")]
    pub(crate) fn follow(&self, group: &Group, limits: &[Option<Limit>; DIMENSIONS], now: u64) {
        let mut s = lock(&group.state);
        for d in Dimension::ALL {
            if let Some(limit) = limits[d.index()] {
                s.configured[d.index()] = Some(limit);
                if s.gcra.limit(d) != Some(limit) {
                    s.gcra.set_limit(d, limit, now);
                }
            }
        }
    }

    /// The group's effective limits now.
    pub(crate) fn limits_of(&self, group: &Group) -> [Option<Limit>; DIMENSIONS] {
        let s = lock(&group.state);
        Dimension::ALL.map(|d| s.gcra.limit(d))
    }

    /// Records a reservation the store made (the local buckets are not
    /// charged): held, and counted as reserved for learning.
    /// `remote_net`: the store's net counters right after it (zero when
    /// the store did not reserve it).
    pub(crate) fn hold_remote(
        &self,
        group: &Group,
        cost: [u64; DIMENSIONS],
        now: u64,
        remote_net: crate::redis::limiter::Nets,
    ) -> Ticket {
        let mut s = lock(&group.state);
        for (net, c) in s.net_reserved.iter_mut().zip(cost) {
            *net += i128::from(c);
        }
        s.holds += 1;
        Ticket {
            cost,
            net_after: s.net_reserved,
            at: now,
            pool: None,
            remote_net,
        }
    }

    /// Closes the group's 429 gate for `gate` from now (or leaves it
    /// closed longer).
    #[cfg(feature = "redis")]
    pub(crate) fn close_gate(&self, group: &Group, gate: Duration) {
        let until = self.now().saturating_add(nanos(gate));
        let mut s = lock(&group.state);
        s.cooldown_until = s.cooldown_until.max(until);
    }

    /// How long the group's 429 gate stays closed from `now`.
    pub(crate) fn cooldown_left(&self, group: &Group, now: u64) -> Duration {
        Duration::from_nanos(lock(&group.state).cooldown_until.saturating_sub(now))
    }

    /// `at` in this limiter's nanoseconds (the inverse of `instant`).
    pub(crate) fn ns(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.base))
    }
}

/// How a sent request ended, for reconciliation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settle {
    /// The provider reported usage; `complete` when the response ended
    /// intact (else only input tokens are trusted: a cut stream's output
    /// count is partial).
    Usage { usage: Usage, complete: bool },
    /// The provider refused the request before doing any work.
    Refused,
    /// Nothing is known (transport error, dropped, no usage): the estimate
    /// stands.
    Unknown,
}

impl GroupState {
    fn refund(&mut self, d: Dimension, amount: u64, now: u64) {
        if amount > 0 {
            self.gcra.refund(d, amount, now);
            self.net_reserved[d.index()] -= i128::from(amount);
        }
    }

    fn charge(&mut self, d: Dimension, amount: u64, now: u64) {
        if amount > 0 {
            self.gcra.charge(d, amount, now);
            self.net_reserved[d.index()] += i128::from(amount);
        }
    }

    /// Moves a reservation of `reserved` units to `actual`; true on refund.
    fn correct(&mut self, d: Dimension, reserved: u64, actual: u64, now: u64) -> bool {
        if actual < reserved {
            self.refund(d, reserved - actual, now);
            true
        } else {
            self.charge(d, actual - reserved, now);
            false
        }
    }

    fn gcra_has_limits(&self) -> bool {
        Dimension::ALL.iter().any(|d| self.gcra.limit(*d).is_some())
    }

    /// Applies one dimension of a quota snapshot; true if a limit is known.
    fn learn_dimension(
        &mut self,
        d: Dimension,
        q: Quota,
        ticket: &Ticket,
        now: u64,
        config: &Config,
    ) -> bool {
        let i = d.index();
        let current = self.gcra.limit(d);
        if let Some(announced) = q.limit.filter(|&l| l > 0) {
            // The provider states per-minute limits; its buckets hold a
            // full minute. (Under a time-scaled simulator, configure limits
            // instead: the headers' numbers are provider minutes.)
            if let Ok(limit) = Limit::new(announced, config.learn_period, announced) {
                self.learned[i] = Some(limit);
                let target = match (config.learning, self.configured[i]) {
                    (Learning::Auto, _) => Some(limit),
                    (Learning::Tighten, Some(c)) if limit.burst() < c.burst() => Some(limit),
                    (Learning::Tighten, Some(c)) => Some(c),
                    (Learning::Tighten, None) => Some(limit),
                    (Learning::Off, c) => c,
                };
                if target != current {
                    match target {
                        Some(limit) => self.gcra.set_limit(d, limit, now),
                        None => self.gcra.remove_limit(d),
                    }
                }
            }
        }
        if let Some(remaining) = q.remaining {
            self.server_remaining[i] = Some(remaining);
            if config.learning != Learning::Off {
                // The server counted everything admitted up to this
                // request; what was admitted after it is not in its
                // `remaining` but is in ours, so take it off before
                // comparing, as of the time this request was admitted.
                let since = (self.net_reserved[i] - ticket.net_after[i]).max(0);
                let since = u64::try_from(since).unwrap_or(u64::MAX);
                let _ = now;
                self.gcra
                    .tighten(d, remaining.saturating_sub(since), ticket.at);
            }
        }
        self.gcra.limit(d).is_some()
    }

    fn stats(&self, group: &Group, queued: usize, now: u64) -> GroupStats {
        let mut st = GroupStats {
            key: group.key.key,
            model: group.key.model.clone(),
            configured: self.configured,
            learned: self.learned,
            effective: [None; DIMENSIONS],
            available: [None; DIMENSIONS],
            server_remaining: self.server_remaining,
            utilization: [None; DIMENSIONS],
            queued,
            in_flight: self.in_flight,
            cooldown: (self.cooldown_until > now)
                .then(|| Duration::from_nanos(self.cooldown_until - now)),
        };
        for d in Dimension::ALL {
            let i = d.index();
            if let Some(limit) = self.gcra.limit(d) {
                let avail = self.gcra.available(d, now);
                st.effective[i] = Some(limit);
                st.available[i] = Some(avail);
                st.utilization[i] = Some(1.0 - avail as f64 / limit.burst() as f64);
            }
        }
        st
    }
}
