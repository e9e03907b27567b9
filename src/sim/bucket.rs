//! Continuously replenished token buckets and the bounded (key, model) map.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use super::config::Limits;

/// A float token bucket: capacity = the per-minute limit, refilled at
/// `limit / 60 × time_scale` tokens per real second.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    capacity: f64,
    /// Tokens per real second.
    rate: f64,
    level: f64,
    updated: Instant,
}

/// What a bucket looks like now (for headers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BucketView {
    pub(crate) limit: u64,
    /// Whole tokens available (floored).
    pub(crate) remaining: u64,
    /// Real time until the bucket is full again.
    pub(crate) until_full: Duration,
}

impl Bucket {
    pub(crate) fn new(limit: u64, time_scale: f64, now: Instant) -> Self {
        let capacity = limit as f64;
        Self {
            capacity,
            rate: capacity / 60.0 * time_scale,
            level: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + dt * self.rate).min(self.capacity);
        self.updated = now;
    }

    /// Time until `cost` fits: `Some(ZERO)` if it fits now, `None` if it
    /// can never fit (cost above capacity).
    pub(crate) fn wait_for(&mut self, cost: f64, now: Instant) -> Option<Duration> {
        self.refill(now);
        if cost > self.capacity {
            return None;
        }
        if self.level >= cost {
            return Some(Duration::ZERO);
        }
        Some(Duration::from_secs_f64((cost - self.level) / self.rate))
    }

    pub(crate) fn take(&mut self, cost: f64, now: Instant) {
        self.refill(now);
        self.level -= cost;
    }

    pub(crate) fn give(&mut self, amount: f64, now: Instant) {
        self.refill(now);
        self.level = (self.level + amount).min(self.capacity);
    }

    pub(crate) fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.level >= self.capacity
    }

    pub(crate) fn view(&mut self, now: Instant) -> BucketView {
        self.refill(now);
        let missing = (self.capacity - self.level).max(0.0);
        BucketView {
            limit: self.capacity as u64,
            remaining: self.level.max(0.0).floor() as u64,
            until_full: Duration::from_secs_f64(missing / self.rate),
        }
    }
}

/// The three buckets of one (key, model) pair.
#[derive(Debug, Clone)]
pub(crate) struct BucketSet {
    requests: Bucket,
    input: Bucket,
    output: Bucket,
    last_used: Instant,
}

/// The state of all three buckets of a (key, model) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateSnapshot {
    pub(crate) requests: BucketView,
    pub(crate) input: BucketView,
    pub(crate) output: BucketView,
}

/// Which limit stopped a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dimension {
    Requests,
    InputTokens,
    OutputTokens,
}

/// The cost of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cost {
    pub(crate) input: u64,
    /// Output reserved from `max_tokens` (capped at the OTPM capacity).
    pub(crate) output: u64,
}

/// The limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decision {
    /// Admitted and reserved; the snapshot is after the reservation.
    Admitted(RateSnapshot),
    /// Does not fit yet: retry after `wait`.
    Limited {
        snapshot: RateSnapshot,
        wait: Duration,
        dimension: Dimension,
    },
    /// Can never fit (cost above a bucket's capacity).
    TooLarge {
        snapshot: RateSnapshot,
        dimension: Dimension,
    },
}

impl BucketSet {
    fn new(limits: Limits, time_scale: f64, now: Instant) -> Self {
        Self {
            requests: Bucket::new(limits.requests_per_minute, time_scale, now),
            input: Bucket::new(limits.input_tokens_per_minute, time_scale, now),
            output: Bucket::new(limits.output_tokens_per_minute, time_scale, now),
            last_used: now,
        }
    }

    fn snapshot(&mut self, now: Instant) -> RateSnapshot {
        RateSnapshot {
            requests: self.requests.view(now),
            input: self.input.view(now),
            output: self.output.view(now),
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.requests.is_full(now) && self.input.is_full(now) && self.output.is_full(now)
    }

    fn admit(&mut self, cost: Cost, now: Instant) -> Decision {
        self.last_used = now;
        let checks = [
            (Dimension::Requests, self.requests.wait_for(1.0, now)),
            (
                Dimension::InputTokens,
                self.input.wait_for(cost.input as f64, now),
            ),
            (
                Dimension::OutputTokens,
                self.output.wait_for(cost.output as f64, now),
            ),
        ];
        if let Some((dimension, _)) = checks.iter().find(|(_, w)| w.is_none()) {
            return Decision::TooLarge {
                snapshot: self.snapshot(now),
                dimension: *dimension,
            };
        }
        let (dimension, wait) = checks.iter().filter_map(|(d, w)| w.map(|w| (*d, w))).fold(
            (Dimension::Requests, Duration::ZERO),
            |acc, x| {
                if x.1 > acc.1 { x } else { acc }
            },
        );
        if !wait.is_zero() {
            return Decision::Limited {
                snapshot: self.snapshot(now),
                wait,
                dimension,
            };
        }
        self.requests.take(1.0, now);
        self.input.take(cost.input as f64, now);
        self.output.take(cost.output as f64, now);
        Decision::Admitted(self.snapshot(now))
    }
}

/// A stable, non-reversible fingerprint of an API key; the key itself is
/// never stored.
pub(crate) fn fingerprint(key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    "tower-llm-resilience-sim".hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// All bucket sets, keyed by (key fingerprint, model), bounded.
#[derive(Debug)]
pub(crate) struct Buckets {
    map: HashMap<(u64, String), BucketSet>,
    max_keys: usize,
    time_scale: f64,
}

impl Buckets {
    pub(crate) fn new(max_keys: usize, time_scale: f64) -> Self {
        Self {
            map: HashMap::new(),
            max_keys,
            time_scale,
        }
    }

    fn entry(&mut self, key: u64, model: &str, limits: Limits, now: Instant) -> &mut BucketSet {
        let id = (key, model.to_owned());
        if !self.map.contains_key(&id) && self.map.len() >= self.max_keys {
            self.evict(now);
        }
        let scale = self.time_scale;
        self.map
            .entry(id)
            .or_insert_with(|| BucketSet::new(limits, scale, now))
    }

    /// Drops full (idle) sets; if none is, drops the least recently used.
    fn evict(&mut self, now: Instant) {
        self.map.retain(|_, set| !set.is_full(now));
        if self.map.len() >= self.max_keys {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
    }

    pub(crate) fn admit(
        &mut self,
        key: u64,
        model: &str,
        limits: Limits,
        cost: Cost,
        now: Instant,
    ) -> Decision {
        self.entry(key, model, limits, now).admit(cost, now)
    }

    pub(crate) fn snapshot(
        &mut self,
        key: u64,
        model: &str,
        limits: Limits,
        now: Instant,
    ) -> RateSnapshot {
        self.entry(key, model, limits, now).snapshot(now)
    }

    /// Gives back unused reserved output tokens (ignored if evicted).
    pub(crate) fn refund_output(&mut self, key: u64, model: &str, amount: u64, now: Instant) {
        if amount == 0 {
            return;
        }
        if let Some(set) = self.map.get_mut(&(key, model.to_owned())) {
            set.output.give(amount as f64, now);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests;
