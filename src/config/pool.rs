//! `[pool]`: API keys the rate limiter chooses from, each read from the
//! environment variable the file names.

use serde::Deserialize;

use super::money::Decimal;
use super::offset::parse_utc_offset;
use super::spend::PricesConfig;
use super::{ConfigError, Env};
use crate::rate::{AuthStyle, CalendarQuota, KeyPool, MAX_POOL_KEYS, Money, PoolKey, PoolStrategy};

/// `[pool]`: maps onto [`KeyPoolBuilder`](crate::rate::KeyPoolBuilder).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Which header carries a key.
    pub auth: AuthConfig,
    /// How a key is chosen (default `most-headroom`).
    pub strategy: Option<StrategyConfig>,
    /// The keys (1 to 256).
    pub keys: Vec<PoolKeyConfig>,
    /// The prices quotas in `spend` charge by (default: `[budget.prices]`,
    /// so one table prices both).
    pub prices: Option<PricesConfig>,
}

/// [`AuthStyle`], by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AuthConfig {
    /// `x-api-key: <key>`.
    Anthropic,
    /// `authorization: Bearer <key>`.
    Openai,
    /// `api-key: <key>`.
    Azure,
}

/// [`PoolStrategy`], by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StrategyConfig {
    /// [`PoolStrategy::MostHeadroom`].
    MostHeadroom,
    /// [`PoolStrategy::FewestUsed`].
    FewestUsed,
}

/// One key: its label, the variable holding it, its organisation and
/// calendar quota.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolKeyConfig {
    /// The name logs and stats show (never the key).
    pub label: String,
    /// The environment variable holding the key.
    pub api_key_env: String,
    /// The organisation: keys of one share one limiter group.
    pub organization: Option<String>,
    /// A quota per calendar day or month.
    pub quota: Option<QuotaConfig>,
}

/// [`CalendarQuota`]'s settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QuotaConfig {
    /// Day or month.
    pub period: PeriodConfig,
    /// Requests per period.
    pub requests: Option<u64>,
    /// Tokens (input + output) per period.
    pub tokens: Option<u64>,
    /// Spend per period (`"25.00"`), priced by `[pool.prices]`.
    pub spend: Option<Decimal>,
    /// Where the period starts at midnight (`"+09:00"`; default UTC).
    pub utc_offset: Option<String>,
}

/// A calendar period, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PeriodConfig {
    /// A calendar day.
    Day,
    /// A calendar month.
    Month,
}

impl PoolConfig {
    /// The pool; `budget_prices` is `[budget.prices]`, used when the pool
    /// has no table of its own.
    pub(crate) fn build(
        &self,
        env: &mut Env<'_>,
        budget_prices: Option<&PricesConfig>,
    ) -> Result<KeyPool, ConfigError> {
        if self.keys.is_empty() || self.keys.len() > MAX_POOL_KEYS {
            return Err(ConfigError::invalid("pool.keys", "between 1 and 256 keys"));
        }
        let auth = match self.auth {
            AuthConfig::Anthropic => AuthStyle::Anthropic,
            AuthConfig::Openai => AuthStyle::OpenAi,
            AuthConfig::Azure => AuthStyle::Azure,
        };
        let mut b = KeyPool::builder(auth);
        match (&self.prices, budget_prices) {
            (Some(p), _) => b = b.prices(p.build("pool.prices")?),
            (None, Some(p)) => b = b.prices(p.build("budget.prices")?),
            (None, None) => {}
        }
        if let Some(s) = self.strategy {
            b = b.strategy(match s {
                StrategyConfig::MostHeadroom => PoolStrategy::MostHeadroom,
                StrategyConfig::FewestUsed => PoolStrategy::FewestUsed,
            });
        }
        let mut secrets: Vec<(String, usize)> = Vec::with_capacity(self.keys.len());
        for (i, k) in self.keys.iter().enumerate() {
            let path = format!("pool.keys[{i}]");
            if k.label.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{path}.label"),
                    "must not be empty",
                ));
            }
            if self.keys[..i].iter().any(|o| o.label == k.label) {
                return Err(ConfigError::invalid(
                    format!("{path}.label"),
                    "two keys have the same label",
                ));
            }
            let env_path = format!("{path}.api_key_env");
            let secret = env.secret(&env_path, &k.api_key_env)?;
            if http::HeaderValue::from_str(secret.expose()).is_err() {
                return Err(ConfigError::invalid(
                    env_path,
                    "the key is not a valid header value",
                ));
            }
            if let Some((_, first)) = secrets.iter().find(|(s, _)| s == secret.expose()) {
                return Err(ConfigError::invalid(
                    env_path,
                    format!("the same key as pool.keys[{first}]"),
                ));
            }
            secrets.push((secret.expose().to_owned(), i));
            let mut key = PoolKey::new(k.label.as_str(), secret.expose());
            if let Some(org) = &k.organization {
                key = key.organization(org.as_str());
            }
            if let Some(q) = &k.quota {
                if q.spend.is_some() && self.prices.is_none() && budget_prices.is_none() {
                    return Err(ConfigError::invalid(
                        format!("{path}.quota.spend"),
                        "needs [pool.prices] or [budget.prices]",
                    ));
                }
                key = key.quota(q.build(&format!("{path}.quota"))?);
            }
            b = b.add_key(key);
        }
        b.build()
            .map_err(|e| ConfigError::invalid("pool", e.reason))
    }
}

impl QuotaConfig {
    fn build(&self, path: &str) -> Result<CalendarQuota, ConfigError> {
        let mut q = match self.period {
            PeriodConfig::Day => CalendarQuota::daily(),
            PeriodConfig::Month => CalendarQuota::monthly(),
        };
        if self.requests.is_none() && self.tokens.is_none() && self.spend.is_none() {
            return Err(ConfigError::invalid(
                path,
                "set any of `requests`, `tokens` and `spend`",
            ));
        }
        for (field, n) in [("requests", self.requests), ("tokens", self.tokens)] {
            if n == Some(0) {
                return Err(ConfigError::invalid(
                    format!("{path}.{field}"),
                    "must be at least 1",
                ));
            }
        }
        if let Some(n) = self.requests {
            q = q.requests(n);
        }
        if let Some(n) = self.tokens {
            q = q.tokens(n);
        }
        match self.spend.map(|d| Money::from_nanos(d.nanos())) {
            Some(Money::ZERO) => {
                return Err(ConfigError::invalid(
                    format!("{path}.spend"),
                    "must be more than zero",
                ));
            }
            Some(m) => q = q.spend(m),
            None => {}
        }
        if let Some(o) = &self.utc_offset {
            let secs = parse_utc_offset(o)
                .map_err(|r| ConfigError::invalid(format!("{path}.utc_offset"), r))?;
            q = q.utc_offset_secs(secs);
        }
        q.validate()
            .map_err(|e| ConfigError::invalid(path, e.reason))?;
        Ok(q)
    }
}
