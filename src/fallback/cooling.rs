//! Which chain entries are cooling down, by name — a bounded map.
//!
//! The chain's own targets (at most 16) are always remembered. Other names
//! are the requests' own models, which callers choose: at most
//! [`MAX_OTHERS`] of them are kept, the oldest forgotten first (a FIFO, so
//! eviction is O(1)); a forgotten model is simply tried again. Names are
//! bounded as everywhere in the crate
//! ([`MAX_MODEL_NAME`](crate::request::MAX_MODEL_NAME)).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::request::bounded_model;

/// The most names kept besides the chain's targets.
pub(crate) const MAX_OTHERS: usize = 1024;

#[derive(Default)]
struct Inner {
    targets: HashMap<Arc<str>, Instant>,
    others: HashMap<Arc<str>, Instant>,
    /// `others`' names, oldest first (each once).
    order: VecDeque<Arc<str>>,
}

pub(crate) struct Cooling {
    target_names: Vec<Arc<str>>,
    /// Whether anything was ever cooled: until then no lock is taken.
    any: AtomicBool,
    inner: Mutex<Inner>,
}

impl Cooling {
    pub(crate) fn new(target_names: Vec<Arc<str>>) -> Self {
        Cooling {
            target_names,
            any: AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_cooling(&self, name: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let bounded;
        let name = if name.len() > crate::request::MAX_MODEL_NAME {
            bounded = bounded_model(&Arc::from(name));
            &*bounded
        } else {
            name
        };
        let now = Instant::now();
        let inner = self.lock();
        inner
            .targets
            .get(name)
            .or_else(|| inner.others.get(name))
            .is_some_and(|until| *until > now)
    }

    pub(crate) fn cool(&self, name: &Arc<str>, d: Duration) {
        let name = bounded_model(name);
        let until = Instant::now() + d;
        let mut inner = self.lock();
        self.any.store(true, Ordering::Release);
        let inner = &mut *inner;
        if self.target_names.iter().any(|t| bounded_model(t) == name) {
            let e = inner.targets.entry(name).or_insert(until);
            *e = (*e).max(until);
            return;
        }
        if let Some(e) = inner.others.get_mut(&name) {
            *e = (*e).max(until);
            return;
        }
        if inner.others.len() >= MAX_OTHERS
            && let Some(oldest) = inner.order.pop_front()
        {
            inner.others.remove(&oldest);
        }
        inner.order.push_back(Arc::clone(&name));
        inner.others.insert(name, until);
    }

    /// Names cooling now, with the time left.
    pub(crate) fn cooling(&self) -> Vec<(Arc<str>, Duration)> {
        let now = Instant::now();
        let inner = self.lock();
        inner
            .targets
            .iter()
            .chain(inner.others.iter())
            .filter(|(_, t)| **t > now)
            .map(|(n, t)| (Arc::clone(n), *t - now))
            .collect()
    }

    /// Names remembered (cooling or not), for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let inner = self.lock();
        inner.targets.len() + inner.others.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cooling_map_is_bounded_with_targets_kept() {
        let c = Cooling::new(vec![Arc::from("target")]);
        c.cool(&Arc::from("target"), Duration::from_secs(60));
        for i in 0..5_000 {
            c.cool(&Arc::from(format!("model-{i}")), Duration::from_secs(60));
            assert!(c.len() <= MAX_OTHERS + 1);
        }
        assert_eq!(c.len(), MAX_OTHERS + 1);
        assert!(c.is_cooling("target"), "a flood forgot a chain target");
        assert!(c.is_cooling("model-4999"));
        assert!(!c.is_cooling("model-0"), "the oldest is forgotten first");
    }

    #[tokio::test(start_paused = true)]
    async fn long_names_are_kept_bounded() {
        let c = Cooling::new(Vec::new());
        let long: Arc<str> = Arc::from("m".repeat(1 << 20));
        c.cool(&long, Duration::from_secs(60));
        let names = c.cooling();
        assert_eq!(names.len(), 1);
        assert!(names[0].0.len() <= crate::request::MAX_MODEL_NAME);
        assert!(c.is_cooling(&bounded_model(&long)));
    }
}
