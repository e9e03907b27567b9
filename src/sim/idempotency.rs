//! Counting by `idempotency-key`: how often each logical request reached
//! the simulator, and how often it was answered in full.
//!
//! A client that retries re-sends the same key, so a key's arrivals are
//! its attempts; a key with two completions is a request the provider
//! would have served (and billed) twice. The map is bounded: past its
//! capacity, new keys are counted in aggregate only, never stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use http::HeaderMap;

use super::bucket::fingerprint;

/// The request header counted.
pub(crate) const HEADER: &str = "idempotency-key";

/// What the simulator saw of one idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct KeyCount {
    /// Requests to a simulated endpoint that carried the key, however they
    /// were answered (counted as they arrive, with `received`).
    pub arrivals: u64,
    /// 200 responses with the key whose whole body was handed to the
    /// connection: a JSON body, or a stream up to its terminal event. A
    /// truncated, errored or stalled stream, a stalled body and any error
    /// status are not completions.
    pub completions: u64,
}

/// Per-key counts, summarised.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct IdempotencySnapshot {
    /// Distinct keys counted.
    pub keys: u64,
    /// Arrivals of counted keys.
    pub arrivals: u64,
    /// Completions of counted keys.
    pub completions: u64,
    /// How many keys arrived exactly `n` times, by `n`.
    pub by_arrivals: BTreeMap<u64, u64>,
    /// How many keys completed exactly `n` times, by `n` (0 included).
    pub by_completions: BTreeMap<u64, u64>,
    /// The most arrivals of one key.
    pub max_arrivals: u64,
    /// Keys completed more than once.
    pub duplicated: u64,
    /// Arrivals with a key that was not counted because the map was full.
    pub untracked_arrivals: u64,
    /// Completions with a key that was not counted.
    pub untracked_completions: u64,
}

#[derive(Debug, Default)]
struct State {
    /// By the key's 64-bit fingerprint (the key itself is never stored).
    keys: HashMap<u64, KeyCount>,
    untracked_arrivals: u64,
    untracked_completions: u64,
}

/// The bounded per-key counts of one simulator.
#[derive(Debug)]
pub(crate) struct Ledger {
    max: usize,
    state: Mutex<State>,
}

impl Ledger {
    pub(crate) fn new(max: usize) -> Self {
        Ledger {
            max,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fingerprint of the request's key, if it has one (a value that is
    /// not visible ASCII is counted by its bytes all the same).
    pub(crate) fn key_of(headers: &HeaderMap) -> Option<u64> {
        let value = headers.get(HEADER)?;
        Some(fingerprint(&String::from_utf8_lossy(value.as_bytes())))
    }

    /// Counts one arrival of `key`.
    pub(crate) fn arrived(&self, key: u64) {
        let mut s = self.lock();
        let full = s.keys.len() >= self.max;
        match s.keys.get_mut(&key) {
            Some(c) => c.arrivals += 1,
            None if full => s.untracked_arrivals += 1,
            None => {
                s.keys.insert(
                    key,
                    KeyCount {
                        arrivals: 1,
                        completions: 0,
                    },
                );
            }
        }
    }

    /// Counts one completion of `key`.
    pub(crate) fn completed(&self, key: u64) {
        let mut s = self.lock();
        match s.keys.get_mut(&key) {
            Some(c) => c.completions += 1,
            None => s.untracked_completions += 1,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<KeyCount> {
        self.lock().keys.get(&fingerprint(key)).copied()
    }

    pub(crate) fn snapshot(&self) -> IdempotencySnapshot {
        let s = self.lock();
        let mut out = IdempotencySnapshot {
            keys: s.keys.len() as u64,
            untracked_arrivals: s.untracked_arrivals,
            untracked_completions: s.untracked_completions,
            ..IdempotencySnapshot::default()
        };
        for c in s.keys.values() {
            out.arrivals += c.arrivals;
            out.completions += c.completions;
            *out.by_arrivals.entry(c.arrivals).or_insert(0) += 1;
            *out.by_completions.entry(c.completions).or_insert(0) += 1;
            out.max_arrivals = out.max_arrivals.max(c.arrivals);
            out.duplicated += u64::from(c.completions > 1);
        }
        out
    }
}

/// A completion to record once a 200's whole body has been handed over.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) ledger: std::sync::Arc<Ledger>,
    pub(crate) key: u64,
}

impl Done {
    pub(crate) fn fire(self) {
        self.ledger.completed(self.key);
    }
}

#[cfg(test)]
mod tests;
