//! The whole stack from one file: a serde configuration (TOML or JSON)
//! for every layer, provider rate-limit presets, and secrets read from the
//! environment variables the file names.
//!
//! ```toml
//! body_limit = 33554432
//!
//! [rate]
//! preset = "anthropic-tier-2"          # see rate::presets
//! max_wait = "30s"
//! [rate.models."claude-haiku-4-5"]
//! input_tokens_per_minute = 400000     # overrides the preset's class
//!
//! [concurrency]
//! max = 32
//! adaptive = { min = 4, max = 64 }
//!
//! [retry]
//! max_attempts = 4
//! retry_after = { max = "2m", over_cap = "give-up" }
//!
//! [cache]
//! ttl = "10m"
//! tenant_header = "x-tenant-id"
//!
//! [fallback]
//! targets = [{ model = "claude-haiku-4-5", max_tokens = 4096 }]
//!
//! [pool]
//! auth = "anthropic"
//! keys = [{ label = "team-a", api_key_env = "ANTHROPIC_KEY_A" }]
//! ```
//!
//! The full reference is `examples/llm.toml`, every setting with its
//! default. Each section maps one to one onto its layer's builder: a
//! setting left out keeps the builder's default, so the defaults are
//! written in one place, the builders' docs.
//!
//! # Secrets
//!
//! A file never holds a key or a password: there is no field for one (an
//! `api_key = "…"` is refused as an unknown field). It names the variable
//! instead — `api_key_env = "ANTHROPIC_API_KEY"`, `url_env = "REDIS_URL"`
//! — read when the stack is built, through the process environment
//! ([`Stack::from_config`](crate::stack::Stack::from_config)) or a lookup
//! of the caller's ([`Stack::from_config_with_env`](crate::stack::Stack::from_config_with_env)).
//! A variable that is not set is a [`ConfigError`] naming the field and
//! the variable, never a value. What is read goes straight into the layer
//! (a [`KeyPool`](crate::rate::KeyPool), a sensitive header, the Redis
//! handle), whose `Debug` does not show it.
//!
//! # Errors
//!
//! Every fault is one [`ConfigError`] whose `path` names the field:
//! parse and shape errors by the path serde was at
//! (`rate.models.claude-haiku-4-5.input_tokens_per_minute`), semantic
//! ones by the field the value came from (`pool.keys[1].api_key_env`).
//! Durations are strings such as `"500ms"`, `"2s"`, `"1m30s"`
//! ([`parse_duration`]); money is a decimal number or string (`"12.50"`).
//!
//! # What is built
//!
//! [`Stack::from_config`](crate::stack::Stack::from_config) builds the
//! prebuilt stack: body limit, cache, fallback, retry, rate limit (with
//! the key pool and Redis when configured) and concurrency. The budget is
//! not part of [`Stack`](crate::stack::Stack): [`Config::budget_layer`]
//! builds it, to add below the stack's fallback and retry (see
//! [`budget`](crate::budget)) or around it.

mod cache;
mod concurrency;
mod duration;
mod env;
mod error;
mod fallback;
mod money;
mod offset;
mod pool;
mod rate;
mod redis;
mod retry;
mod spend;

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

pub use cache::{CacheConfig, CacheStoreConfig};
pub use concurrency::{AdaptiveConfig, ConcurrencyConfig};
pub use duration::parse_duration;
use error::scrub;
pub use error::{ConfigError, ConfigErrorKind};
pub use fallback::{CooldownConfig, FallbackConfig, OpenAiTargetConfig, TargetConfig};
pub use money::Decimal;
pub use pool::{AuthConfig, PeriodConfig, PoolConfig, PoolKeyConfig, QuotaConfig, StrategyConfig};
pub use rate::{LearningConfig, LimitsConfig, QueueSettings, RateConfig, UnparsedConfig};
pub use redis::{RedisConfig, RedisFailureConfig};
pub use retry::{
    BackoffConfig, JitterConfig, OverCapConfig, RetryAfterConfig, RetryBudgetConfig, RetryConfig,
    ServerJitterConfig,
};
pub use spend::{
    BudgetConfig, BudgetStoreConfig, CapConfig, PriceConfig, PricesConfig, ScopeConfig,
    StoreFailureConfig,
};

pub(crate) use env::{Env, process_env};

/// The largest configuration file [`Config::from_path`] reads: 4 MiB.
pub const MAX_CONFIG_FILE: u64 = 4 * 1024 * 1024;

/// The configuration of every layer, as a TOML or JSON file gives it.
///
/// Every section is optional; a section left out leaves its layer at its
/// defaults (and `pool`, `budget`, `redis` out: not used). Unknown fields
/// are refused everywhere, so a typo is an error, not a silent default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The largest request body buffered, in bytes (default 32 MiB).
    pub body_limit: Option<usize>,
    /// The rate limiter.
    #[serde(default)]
    pub rate: RateConfig,
    /// The concurrency limit.
    #[serde(default)]
    pub concurrency: ConcurrencyConfig,
    /// Retries.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The response cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// The fallback chain.
    #[serde(default)]
    pub fallback: FallbackConfig,
    /// A key pool for requests without credentials of their own.
    pub pool: Option<PoolConfig>,
    /// Spend budgets ([`Config::budget_layer`]).
    pub budget: Option<BudgetConfig>,
    /// Shared state in Redis.
    pub redis: Option<RedisConfig>,
}

impl Config {
    /// Parses TOML.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] of kind [`Syntax`](ConfigErrorKind::Syntax) naming
    /// the field (and the line and column) where parsing stopped. The
    /// message is the parser's, without the text of the line and with the
    /// values and unknown names it would quote replaced by `…`, so a value
    /// written where it should not be is not repeated.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let position = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| {
                let mut start = s.start.min(text.len());
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let before = &text[..start];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" (line {line}, column {column})")
            })
            .unwrap_or_default()
        };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            ConfigError::syntax(".", format!("{}{}", scrub(e.message()), position(e.span())))
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            ConfigError::syntax(
                path,
                format!("{}{}", scrub(inner.message()), position(inner.span())),
            )
        })
    }

    /// Parses JSON.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] of kind [`Syntax`](ConfigErrorKind::Syntax) naming
    /// the field where parsing stopped; values and unknown names the
    /// parser would quote are replaced by `…`, as for TOML.
    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            ConfigError::syntax(path, scrub(&message))
        })?;
        de.end()
            .map_err(|e| ConfigError::syntax(".", scrub(&e.to_string())))?;
        Ok(config)
    }

    /// Reads a file: JSON when its name ends in `.json`, TOML otherwise.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] of kind [`Io`](ConfigErrorKind::Io) when it cannot
    /// be read, is not UTF-8 or is over [`MAX_CONFIG_FILE`]; else as the
    /// parser's.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let io = |reason: String| ConfigError {
            path: ".".to_owned(),
            reason: reason.into(),
            kind: ConfigErrorKind::Io,
        };
        let file = std::fs::File::open(path)
            .map_err(|e| io(format!("cannot open {}: {e}", path.display())))?;
        let mut text = String::new();
        file.take(MAX_CONFIG_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| io(format!("cannot read {}: {e}", path.display())))?;
        if text.len() as u64 > MAX_CONFIG_FILE {
            return Err(io(format!("{} is over 4 MiB", path.display())));
        }
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Config::from_json_str(&text)
        } else {
            Config::from_toml_str(&text)
        }
    }

    /// The spend-budget layer of the `budget` section (`None` without
    /// one), its Redis store's URL read from the process environment.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field at fault.
    #[cfg(feature = "budget")]
    #[cfg_attr(docsrs, doc(cfg(feature = "budget")))]
    pub fn budget_layer(&self) -> Result<Option<crate::budget::BudgetLayer>, ConfigError> {
        self.budget_layer_with_env(process_env)
    }

    /// [`budget_layer`](Self::budget_layer), reading variables through
    /// `lookup`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field at fault.
    #[cfg(feature = "budget")]
    #[cfg_attr(docsrs, doc(cfg(feature = "budget")))]
    pub fn budget_layer_with_env(
        &self,
        mut lookup: impl FnMut(&str) -> Option<String>,
    ) -> Result<Option<crate::budget::BudgetLayer>, ConfigError> {
        let Some(budget) = &self.budget else {
            return Ok(None);
        };
        let mut env = Env::new(&mut lookup);
        budget.build(self.redis.as_ref(), &mut env).map(Some)
    }

    /// Every layer of the stack built, in the stack's order of use.
    pub(crate) fn stack(&self, env: &mut Env<'_>) -> Result<crate::stack::Stack, ConfigError> {
        let cache = self.cache.build()?;
        Ok(self.stack_without_cache(env)?.cache(cache))
    }

    /// The stack with its cache in Redis (the `[redis]` handle).
    #[cfg(feature = "redis")]
    pub(crate) fn stack_redis_cache(
        &self,
        env: &mut Env<'_>,
    ) -> Result<crate::stack::Stack<crate::redis::RedisStore>, ConfigError> {
        let Some(redis) = &self.redis else {
            return Err(ConfigError::invalid(
                "redis",
                "a Redis cache needs a [redis] section",
            ));
        };
        let cache = self.cache.build_redis(redis.handle(env)?)?;
        Ok(self.stack_without_cache(env)?.cache(cache))
    }

    fn stack_without_cache(&self, env: &mut Env<'_>) -> Result<crate::stack::Stack, ConfigError> {
        if self.budget.is_some() && !cfg!(feature = "budget") {
            return Err(ConfigError::feature("budget", "budget"));
        }
        let body_limit = match self.body_limit {
            Some(0) => {
                return Err(ConfigError::invalid(
                    "body_limit",
                    "must be at least 1 byte",
                ));
            }
            Some(n) => n,
            None => crate::request::DEFAULT_BODY_LIMIT,
        };
        let budget_prices = self.budget.as_ref().and_then(|b| b.prices.as_ref());
        let pool = self
            .pool
            .as_ref()
            .map(|p| p.build(env, budget_prices))
            .transpose()?;
        let rate = self.rate.build(pool, self.redis.as_ref(), env)?;
        let concurrency = self.concurrency.build(&rate)?;
        let retry = self.retry.build()?;
        let fallback = self.fallback.build(env, &rate, &concurrency)?;
        Ok(crate::stack::Stack::builder()
            .body_limit(body_limit)
            .rate_limit(rate)
            .concurrency_limit(concurrency)
            .retry(retry)
            .fallback(fallback))
    }
}

/// A header name from the file, or an error at `path`.
pub(crate) fn header_name(path: &str, name: &str) -> Result<http::HeaderName, ConfigError> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::invalid(path, "not a valid HTTP header name"))
}

/// A priority header setting: absent keeps the default, `""` turns
/// headers off.
pub(crate) fn priority_header(
    path: &str,
    name: Option<&str>,
) -> Result<Option<Option<http::HeaderName>>, ConfigError> {
    match name {
        None => Ok(None),
        Some("") => Ok(Some(None)),
        Some(n) => header_name(path, n).map(|h| Some(Some(h))),
    }
}
