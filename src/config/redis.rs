//! `[redis]`: the shared store — its URL from the environment, key
//! prefix, command timeout, and the rate limiter's failure policy and
//! leases.

use std::time::Duration;

use serde::Deserialize;

use super::duration::deserialize_opt as dur;
#[allow(unused_imports)]
use super::{ConfigError, Env};

/// `[redis]`: the [`Redis`](crate::redis::Redis) handle (feature `redis`)
/// and how the rate limiter uses it.
///
/// With this section the rate limiter's buckets live in Redis (unless
/// `rate = false`); a budget uses it with `budget.store = "redis"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The environment variable holding the URL
    /// (`redis://[:password@]host:port[/db]`; it may hold a password, so
    /// it is never in the file).
    pub url_env: String,
    /// The prefix of every key (default `llm:`).
    pub prefix: Option<String>,
    /// The bound on every command (default `"50ms"`).
    #[serde(default, deserialize_with = "dur")]
    pub timeout: Option<Duration>,
    /// Share the rate limiter's buckets (default true).
    pub rate: Option<bool>,
    /// What the rate limiter does while Redis does not answer (default
    /// `local`).
    pub failure: Option<RedisFailureConfig>,
    /// With `failure = "local"`: how many processes share the quota
    /// (default 1).
    pub instances: Option<u32>,
    /// Requests' worth of credit one round trip reserves (default 0: one
    /// round trip per admission).
    pub lease: Option<u32>,
}

/// [`FailurePolicy`](crate::redis::FailurePolicy), by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RedisFailureConfig {
    /// Refuse what Redis cannot admit.
    FailClosed,
    /// Admit without limit.
    FailOpen,
    /// Admit by a local limiter at limit ÷ `instances`.
    Local,
}

impl RedisConfig {
    /// The handle: made inside a tokio runtime, connecting on first use.
    #[cfg(feature = "redis")]
    pub(crate) fn handle(&self, env: &mut Env<'_>) -> Result<crate::redis::Redis, ConfigError> {
        let url = env.secret("redis.url_env", &self.url_env)?;
        let mut redis = crate::redis::Redis::new(url.expose()).map_err(|e| {
            let path = if e.field == "redis.url" {
                "redis.url_env"
            } else {
                "redis"
            };
            ConfigError::invalid(path, e.reason)
        })?;
        if let Some(t) = self.timeout {
            if t.is_zero() {
                return Err(ConfigError::invalid("redis.timeout", "must be above zero"));
            }
            redis = redis.with_timeout(t);
        }
        if let Some(p) = &self.prefix {
            redis = redis.with_prefix(p.as_str());
        }
        Ok(redis)
    }

    pub(crate) fn apply_rate(
        &self,
        b: crate::rate::RateLimitBuilder,
        env: &mut Env<'_>,
    ) -> Result<crate::rate::RateLimitBuilder, ConfigError> {
        #[cfg(feature = "redis")]
        {
            use crate::redis::FailurePolicy;
            let failure = match (
                self.failure.unwrap_or(RedisFailureConfig::Local),
                self.instances,
            ) {
                (RedisFailureConfig::Local, n) => FailurePolicy::Local {
                    instances: n.unwrap_or(1),
                },
                (_, Some(_)) => {
                    return Err(ConfigError::invalid(
                        "redis.instances",
                        "applies only with failure = \"local\"",
                    ));
                }
                (RedisFailureConfig::FailClosed, None) => FailurePolicy::FailClosed,
                (RedisFailureConfig::FailOpen, None) => FailurePolicy::FailOpen,
            };
            let mut b = b.redis(self.handle(env)?).redis_failure(failure);
            if let Some(k) = self.lease {
                b = b.redis_lease(k);
            }
            Ok(b)
        }
        #[cfg(not(feature = "redis"))]
        {
            let _ = (b, env);
            Err(ConfigError::feature("redis", "redis"))
        }
    }
}
