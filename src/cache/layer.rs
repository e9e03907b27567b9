use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::flight::Flights;
use super::key::{DefaultKeyPolicy, KeyPolicy};
use super::service::Cache;
use super::store::{CacheStore, DEFAULT_CAPACITY, MemoryStore};
use crate::error::InvalidConfig;

/// The shared configuration and state of one cache layer.
pub(crate) struct Shared<St> {
    pub(crate) store: St,
    pub(crate) policy: Box<dyn KeyPolicy>,
    pub(crate) ttl: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) max_entry: usize,
    pub(crate) nondeterministic: bool,
    /// The key policy is a [`DefaultKeyPolicy`], whose `deterministic` is
    /// the body's top-level `temperature` ≤ 0 — which the request's parsed
    /// metadata already tells, before any key is built.
    pub(crate) default_policy: bool,
    pub(crate) coalesce_timeout: Duration,
    pub(crate) flights: Arc<Flights>,
}

impl<St: fmt::Debug> fmt::Debug for Shared<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheConfig")
            .field("store", &self.store)
            .field("ttl", &self.ttl)
            .field("stale_if_error", &self.stale_if_error)
            .field("max_entry", &self.max_entry)
            .field("nondeterministic", &self.nondeterministic)
            .field("coalesce_timeout", &self.coalesce_timeout)
            .field("in_flight", &self.flights.len())
            .finish_non_exhaustive()
    }
}

/// Caches complete LLM responses — see the [module docs](super).
///
/// Every service made from one layer value, and every clone, shares one
/// store, one alias index and one table of in-flight requests.
pub struct CacheLayer<St = MemoryStore> {
    shared: Arc<Shared<St>>,
}

impl<St> Clone for CacheLayer<St> {
    fn clone(&self) -> Self {
        CacheLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<St: fmt::Debug> fmt::Debug for CacheLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("config", &self.shared)
            .finish()
    }
}

impl CacheLayer<MemoryStore> {
    /// The defaults: an in-memory store of 64 MiB, entries fresh for 10
    /// minutes and kept 5 more for stale-if-error, at most 4 MiB per
    /// entry, deterministic requests only, [`DefaultKeyPolicy`].
    pub fn new() -> Self {
        CacheBuilder::new().finish()
    }

    /// A builder for every setting, with the in-memory store.
    pub fn builder() -> CacheBuilder<MemoryStore> {
        CacheBuilder::new()
    }
}

impl Default for CacheLayer<MemoryStore> {
    fn default() -> Self {
        Self::new()
    }
}

impl<St> CacheLayer<St> {
    /// The store entries live in.
    pub fn store(&self) -> &St {
        &self.shared.store
    }

    /// Requests in flight upstream (coalescing leaders).
    pub fn in_flight(&self) -> usize {
        self.shared.flights.len()
    }
}

impl<S, St> Layer<S> for CacheLayer<St> {
    type Service = Cache<S, St>;
    fn layer(&self, inner: S) -> Cache<S, St> {
        Cache::from_shared(inner, Arc::clone(&self.shared))
    }
}

/// Builds a [`CacheLayer`].
#[must_use]
pub struct CacheBuilder<St = MemoryStore> {
    store: St,
    policy: Box<dyn KeyPolicy>,
    ttl: Duration,
    stale_if_error: Duration,
    max_entry: usize,
    nondeterministic: bool,
    default_policy: bool,
    coalesce_timeout: Duration,
}

impl<St: fmt::Debug> fmt::Debug for CacheBuilder<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("store", &self.store)
            .field("ttl", &self.ttl)
            .field("stale_if_error", &self.stale_if_error)
            .field("max_entry", &self.max_entry)
            .field("nondeterministic", &self.nondeterministic)
            .finish_non_exhaustive()
    }
}

/// The longest TTL, stale window or coalescing timeout: 30 days.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);

/// The default time an entry is fresh: 10 minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// The default stale-if-error window past the TTL: 5 minutes.
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(300);
/// The default longest wait for an identical request in flight: 5 minutes.
pub const DEFAULT_COALESCE_TIMEOUT: Duration = Duration::from_secs(300);
/// The default largest cached response: 4 MiB.
pub const DEFAULT_MAX_ENTRY: usize = 4 * 1024 * 1024;

impl CacheBuilder<MemoryStore> {
    fn new() -> Self {
        CacheBuilder {
            store: MemoryStore::new(DEFAULT_CAPACITY),
            policy: Box::new(DefaultKeyPolicy::new()),
            ttl: DEFAULT_TTL,
            stale_if_error: DEFAULT_STALE_IF_ERROR,
            max_entry: DEFAULT_MAX_ENTRY,
            nondeterministic: false,
            default_policy: true,
            coalesce_timeout: DEFAULT_COALESCE_TIMEOUT,
        }
    }

    /// The in-memory store's capacity in bytes (default 64 MiB); entries
    /// weigh their body and headers, and the least useful are evicted.
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.store = MemoryStore::new(bytes);
        self
    }
}

impl<St: CacheStore> CacheBuilder<St> {
    /// Another store (e.g. one shared by many processes).
    pub fn store<St2: CacheStore>(self, store: St2) -> CacheBuilder<St2> {
        CacheBuilder {
            store,
            policy: self.policy,
            ttl: self.ttl,
            stale_if_error: self.stale_if_error,
            max_entry: self.max_entry,
            nondeterministic: self.nondeterministic,
            default_policy: self.default_policy,
            coalesce_timeout: self.coalesce_timeout,
        }
    }

    /// How cache keys are made (default [`DefaultKeyPolicy`]); any
    /// `Fn(&Request<ReplayBody>) -> Option<CacheKey>` closure works.
    pub fn key_policy(mut self, policy: impl KeyPolicy) -> Self {
        self.default_policy = (&policy as &dyn std::any::Any).is::<DefaultKeyPolicy>();
        self.policy = Box::new(policy);
        self
    }

    /// How long an entry is fresh (default 10 minutes).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long past its TTL an entry is kept to answer in place of an
    /// upstream failure (429, 529, 5xx, transport error), marked `STALE`
    /// (default 5 minutes; zero disables).
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// The largest response cached, in bytes (default 4 MiB); larger ones
    /// pass through uncached.
    pub fn max_entry_size(mut self, bytes: usize) -> Self {
        self.max_entry = bytes;
        self
    }

    /// Also cache non-deterministic requests — a `temperature` absent
    /// (the providers default to 1.0) or above 0 — whose repeated answers
    /// are expected to differ (default: no).
    pub fn cache_nondeterministic(mut self, yes: bool) -> Self {
        self.nondeterministic = yes;
        self
    }

    /// How long a request waits for an identical one in flight — whose
    /// entry is committed only when its caller has read the whole body —
    /// before going upstream on its own (default 5 minutes).
    pub fn coalesce_timeout(mut self, timeout: Duration) -> Self {
        self.coalesce_timeout = timeout;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] for a zero TTL, a TTL, stale window or coalescing
    /// timeout over 30 days, or a zero maximum entry size.
    pub fn build(self) -> Result<CacheLayer<St>, InvalidConfig> {
        let invalid = |field, reason| Err(InvalidConfig::new(field, reason));
        let month = MAX_DURATION;
        if self.ttl.is_zero() {
            return invalid("ttl", "must be positive");
        }
        if self.ttl > month || self.stale_if_error > month || self.coalesce_timeout > month {
            let field = if self.ttl > month {
                "ttl"
            } else if self.stale_if_error > month {
                "stale_if_error"
            } else {
                "coalesce_timeout"
            };
            return invalid(field, "must be at most 30 days");
        }
        if self.max_entry == 0 {
            return invalid("max_entry_size", "must be positive");
        }
        Ok(self.finish())
    }

    pub(crate) fn finish(self) -> CacheLayer<St> {
        CacheLayer {
            shared: Arc::new(Shared {
                store: self.store,
                policy: self.policy,
                ttl: self.ttl,
                stale_if_error: self.stale_if_error,
                max_entry: self.max_entry,
                nondeterministic: self.nondeterministic,
                default_policy: self.default_policy,
                coalesce_timeout: self.coalesce_timeout,
                flights: Arc::default(),
            }),
        }
    }
}
