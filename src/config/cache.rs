//! `[cache]`: the response cache in memory — size, freshness,
//! stale-if-error, tenant isolation.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::duration::deserialize_opt as dur;
use super::{ConfigError, header_name};
use crate::cache::{CacheBuilder, CacheLayer, DefaultKeyPolicy};

/// `[cache]`: maps onto [`CacheBuilder`](crate::cache::CacheBuilder) and
/// its [`DefaultKeyPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// The in-memory store's capacity in bytes (default 64 MiB).
    pub capacity: Option<u64>,
    /// How long an entry is fresh (default `"10m"`).
    #[serde(default, deserialize_with = "dur")]
    pub ttl: Option<Duration>,
    /// How long past its TTL an entry may answer in place of an upstream
    /// failure (default `"5m"`; `"0s"` disables).
    #[serde(default, deserialize_with = "dur")]
    pub stale_if_error: Option<Duration>,
    /// The largest response cached, in bytes (default 4 MiB).
    pub max_entry_size: Option<usize>,
    /// Also cache requests whose answers are expected to differ (a
    /// `temperature` absent or above 0; default false).
    pub cache_nondeterministic: Option<bool>,
    /// How long a request waits for an identical one in flight (default
    /// `"5m"`).
    #[serde(default, deserialize_with = "dur")]
    pub coalesce_timeout: Option<Duration>,
    /// Tenant isolation: a request header naming the tenant whose entries
    /// a request may see (entries are never shared between tenants).
    /// Without it — or when a request lacks it — the tenant is the API
    /// key's identity. Set it only when something trusted in front (a
    /// gateway's authentication) sets the header: a caller choosing its
    /// own tenant name could read another tenant's entries.
    pub tenant_header: Option<String>,
    /// The largest request body keyed (default 2 MiB; larger ones pass
    /// uncached).
    pub max_key_body: Option<usize>,
    /// How many raw-body aliases are remembered (default 16,384).
    pub aliases: Option<usize>,
    /// Where entries live (default `memory`). `redis` (the `[redis]`
    /// handle, shared by every process) changes the stack's type: build it
    /// with `Stack::from_config_redis_cache` (features `config` and
    /// `redis`); `capacity` is then Redis's own `maxmemory`.
    pub store: Option<CacheStoreConfig>,
}

/// Where cache entries live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CacheStoreConfig {
    /// In this process ([`MemoryStore`](crate::cache::MemoryStore)).
    Memory,
    /// In Redis (`RedisStore`), shared by every process.
    Redis,
}

impl CacheConfig {
    /// The layer over the in-memory store.
    pub(crate) fn build(&self) -> Result<CacheLayer, ConfigError> {
        if self.store == Some(CacheStoreConfig::Redis) {
            return Err(ConfigError::invalid(
                "cache.store",
                "a Redis cache changes the stack's type: build it with Stack::from_config_redis_cache",
            ));
        }
        self.builder()?
            .build()
            .map_err(|e| ConfigError::from_builder("cache", e))
    }

    /// The layer over a Redis store.
    #[cfg(feature = "redis")]
    pub(crate) fn build_redis(
        &self,
        redis: crate::redis::Redis,
    ) -> Result<CacheLayer<crate::redis::RedisStore>, ConfigError> {
        let mut store = crate::redis::RedisStore::builder(redis);
        if let Some(n) = self.max_entry_size {
            store = store.max_entry_size(n);
        }
        let store = store
            .build()
            .map_err(|e| ConfigError::from_builder("cache", e))?;
        self.builder()?
            .store(store)
            .build()
            .map_err(|e| ConfigError::from_builder("cache", e))
    }

    fn builder(&self) -> Result<CacheBuilder, ConfigError> {
        let mut b = CacheLayer::builder();
        if let Some(c) = self.capacity {
            if c == 0 {
                return Err(ConfigError::invalid("cache.capacity", "must be positive"));
            }
            b = b.capacity(c);
        }
        let mut policy = DefaultKeyPolicy::new();
        if let Some(name) = &self.tenant_header {
            let name = header_name("cache.tenant_header", name)?;
            policy = policy.with_tenant(move |req| {
                let v = req.headers().get(&name)?.to_str().ok()?;
                (!v.is_empty()).then(|| Arc::from(v))
            });
        }
        if let Some(n) = self.max_key_body {
            policy = policy.with_max_body(n);
        }
        if let Some(n) = self.aliases {
            if n == 0 {
                return Err(ConfigError::invalid("cache.aliases", "must be at least 1"));
            }
            policy = policy.with_aliases(n);
        }
        b = b.key_policy(policy);
        if let Some(t) = self.ttl {
            b = b.ttl(t);
        }
        if let Some(t) = self.stale_if_error {
            b = b.stale_if_error(t);
        }
        if let Some(n) = self.max_entry_size {
            b = b.max_entry_size(n);
        }
        if let Some(y) = self.cache_nondeterministic {
            b = b.cache_nondeterministic(y);
        }
        if let Some(t) = self.coalesce_timeout {
            b = b.coalesce_timeout(t);
        }
        Ok(b)
    }
}
