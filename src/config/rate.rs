//! `[rate]`: the rate limiter — limits per model, presets, learning,
//! queueing, cooldowns.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::duration::deserialize_opt as dur;
use super::{ConfigError, Env, priority_header};
use crate::queue::QueueConfig;
use crate::rate::{
    Dimension, KeyPool, Learning, Limit, Limits, RateLimitBuilder, RateLimitLayer, Unparsed,
    presets,
};

/// `[rate]`: maps onto [`RateLimitBuilder`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateConfig {
    /// A provider tier's published limits ([`presets::names`]), e.g.
    /// `"anthropic-tier-2"`: the default limits and one entry per model
    /// class, under `default` and `models` below.
    pub preset: Option<String>,
    /// Limits for models without an entry in `models` (over the preset's
    /// default, field by field).
    pub default: Option<LimitsConfig>,
    /// Limits per model-name prefix (the longest matching prefix wins),
    /// each field over what the preset gives that prefix.
    #[serde(default)]
    pub models: BTreeMap<String, LimitsConfig>,
    /// How responses' rate-limit headers teach the limiter (default
    /// `tighten`).
    pub learning: Option<LearningConfig>,
    /// The period learned `…-limit` amounts refer to (default `"1m"`).
    #[serde(default, deserialize_with = "dur")]
    pub learn_period: Option<Duration>,
    /// The wait queue's bound and aging.
    pub queue: Option<QueueSettings>,
    /// The longest a request waits for admission (default: only its
    /// deadline).
    #[serde(default, deserialize_with = "dur")]
    pub max_wait: Option<Duration>,
    /// Fail at once with `RateLimited` when the wait would pass the
    /// deadline or `max_wait` (default false: wait, then time out).
    pub fail_fast: Option<bool>,
    /// A 429's cooldown when it gives no advice, and the longest one.
    pub cooldown: Option<super::CooldownConfig>,
    /// The jitter spreading callers released from a cooldown.
    #[serde(default, deserialize_with = "dur")]
    pub cooldown_jitter: Option<Duration>,
    /// How long an idle group is kept.
    #[serde(default, deserialize_with = "dur")]
    pub idle_timeout: Option<Duration>,
    /// The most (key, model) groups tracked (default 10,000).
    pub max_groups: Option<usize>,
    /// The request header giving a priority (default `x-llm-priority`;
    /// `""` ignores headers).
    pub priority_header: Option<String>,
    /// The output estimate of a request without `max_tokens`.
    pub default_output_tokens: Option<u64>,
    /// What an unreadable body is charged (default `estimate`).
    pub unparsed: Option<UnparsedConfig>,
}

/// One group's limits: per-minute amounts and optional bursts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// The most requests at once (default: a minute's worth).
    pub requests_burst: Option<u64>,
    /// Input tokens per minute (Anthropic's ITPM).
    pub input_tokens_per_minute: Option<u64>,
    /// The input-token bucket's size.
    pub input_tokens_burst: Option<u64>,
    /// Output tokens per minute (Anthropic's OTPM).
    pub output_tokens_per_minute: Option<u64>,
    /// The output-token bucket's size.
    pub output_tokens_burst: Option<u64>,
    /// Input + output tokens per minute (OpenAI's TPM).
    pub tokens_per_minute: Option<u64>,
    /// The combined-token bucket's size.
    pub tokens_burst: Option<u64>,
}

impl LimitsConfig {
    /// `base` with each given field over it.
    pub(crate) fn over(&self, mut base: Limits, path: &str) -> Result<Limits, ConfigError> {
        let dims = [
            (
                Dimension::Requests,
                "requests",
                self.requests_per_minute,
                self.requests_burst,
            ),
            (
                Dimension::InputTokens,
                "input_tokens",
                self.input_tokens_per_minute,
                self.input_tokens_burst,
            ),
            (
                Dimension::OutputTokens,
                "output_tokens",
                self.output_tokens_per_minute,
                self.output_tokens_burst,
            ),
            (
                Dimension::Tokens,
                "tokens",
                self.tokens_per_minute,
                self.tokens_burst,
            ),
        ];
        for (dim, name, amount, burst) in dims {
            let limit = match (amount, burst, base.get(dim)) {
                (Some(amount), _, _) => Limit::per_minute(amount).map_err(|e| {
                    ConfigError::invalid(format!("{path}.{name}_per_minute"), e.reason)
                })?,
                (None, Some(_), Some(limit)) => limit,
                (None, Some(_), None) => {
                    return Err(ConfigError::invalid(
                        format!("{path}.{name}_burst"),
                        format!("a burst needs `{name}_per_minute` (here or from the preset)"),
                    ));
                }
                (None, None, _) => continue,
            };
            let limit = match burst {
                Some(b) => limit
                    .with_burst(b)
                    .map_err(|e| ConfigError::invalid(format!("{path}.{name}_burst"), e.reason))?,
                None => limit,
            };
            base = base.with(dim, limit);
        }
        Ok(base)
    }
}

/// The wait queue: how many wait, and how fast they age.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QueueSettings {
    /// The most waiters (default 1,024).
    pub max_len: usize,
    /// The wait that gains a waiter one priority level (default `"250ms"`).
    #[serde(deserialize_with = "super::duration::deserialize")]
    pub aging: Duration,
}

impl QueueSettings {
    pub(crate) fn build(&self, path: &str) -> Result<QueueConfig, ConfigError> {
        QueueConfig::new(self.max_len, self.aging).map_err(|e| {
            let field = e.field.strip_prefix("queue.").unwrap_or(e.field);
            ConfigError::invalid(format!("{path}.{field}"), e.reason)
        })
    }
}

/// [`Learning`], by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LearningConfig {
    /// [`Learning::Off`].
    Off,
    /// [`Learning::Tighten`].
    Tighten,
    /// [`Learning::Auto`].
    Auto,
}

/// [`Unparsed`], by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum UnparsedConfig {
    /// [`Unparsed::Estimate`].
    Estimate,
    /// [`Unparsed::Refuse`].
    Refuse,
}

impl RateConfig {
    /// The limits the configuration gives every model not listed, and
    /// each listed prefix (for tests and tools).
    pub(crate) fn limits(&self) -> Result<(Limits, Vec<(String, Limits)>), ConfigError> {
        let preset = match &self.preset {
            None => None,
            Some(name) => Some(presets::by_name(name).ok_or_else(|| {
                ConfigError::invalid(
                    "rate.preset",
                    format!("unknown preset; one of {}", presets::names().join(", ")),
                )
            })?),
        };
        let base = preset.map_or_else(Limits::unlimited, |p| p.default_limits());
        let default = match &self.default {
            Some(d) => d.over(base, "rate.default")?,
            None => base,
        };
        let mut models: Vec<(String, Limits)> = preset
            .iter()
            .flat_map(|p| p.classes())
            .filter(|c| !self.models.contains_key(c.prefix))
            .map(|c| (c.prefix.to_owned(), c.limits()))
            .collect();
        for (model, l) in &self.models {
            if model.is_empty() {
                return Err(ConfigError::invalid(
                    "rate.models",
                    "a model prefix must not be empty",
                ));
            }
            let base = preset.map_or(default, |p| {
                if p.classes().iter().any(|c| model.starts_with(c.prefix)) {
                    p.limits_for(model)
                } else {
                    default
                }
            });
            models.push((
                model.clone(),
                l.over(base, &format!("rate.models.{model}"))?,
            ));
        }
        Ok((default, models))
    }

    pub(crate) fn build(
        &self,
        pool: Option<KeyPool>,
        redis: Option<&super::RedisConfig>,
        env: &mut Env<'_>,
    ) -> Result<RateLimitLayer, ConfigError> {
        let (default, models) = self.limits()?;
        let mut b: RateLimitBuilder = RateLimitLayer::builder().limits(default);
        for (model, limits) in models {
            b = b.model_limits(model, limits);
        }
        if let Some(l) = self.learning {
            b = b.learning(match l {
                LearningConfig::Off => Learning::Off,
                LearningConfig::Tighten => Learning::Tighten,
                LearningConfig::Auto => Learning::Auto,
            });
        }
        if let Some(p) = self.learn_period {
            b = b.learn_period(p);
        }
        if let Some(q) = &self.queue {
            b = b.queue(q.build("rate.queue")?);
        }
        if let Some(w) = self.max_wait {
            b = b.max_wait(w);
        }
        if let Some(f) = self.fail_fast {
            b = b.fail_fast(f);
        }
        if let Some(c) = &self.cooldown {
            b = b.cooldown(c.default, c.max);
        }
        if let Some(j) = self.cooldown_jitter {
            b = b.cooldown_jitter(j);
        }
        if let Some(i) = self.idle_timeout {
            b = b.idle_timeout(i);
        }
        if let Some(m) = self.max_groups {
            b = b.max_groups(m);
        }
        if let Some(h) = priority_header("rate.priority_header", self.priority_header.as_deref())? {
            b = b.priority_header(h);
        }
        if let Some(t) = self.default_output_tokens {
            b = b.default_output_tokens(t);
        }
        if let Some(u) = self.unparsed {
            b = b.unparsed(match u {
                UnparsedConfig::Estimate => Unparsed::Estimate,
                UnparsedConfig::Refuse => Unparsed::Refuse,
            });
        }
        if let Some(pool) = pool {
            b = b.key_pool(pool);
        }
        let mut uses_redis = false;
        if let Some(r) = redis.filter(|r| r.rate.unwrap_or(true)) {
            uses_redis = true;
            b = r.apply_rate(b, env)?;
        }
        b.build().map_err(|e| {
            let path = match e.field {
                "cooldown" => "rate.cooldown".to_owned(),
                "key_pool" => "pool".to_owned(),
                "limits" if uses_redis => "rate.models".to_owned(),
                "redis_failure" => "redis.instances".to_owned(),
                f => format!("rate.{f}"),
            };
            ConfigError::invalid(path, e.reason)
        })
    }
}
