//! `[budget]`: spend caps per tenant, key or model and calendar period,
//! and the prices money caps charge by.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;
use super::money::Decimal;
#[cfg(feature = "budget")]
use super::offset::parse_utc_offset;
use super::pool::PeriodConfig;
#[cfg(feature = "budget")]
use super::{Env, header_name};

/// `[budget]`: maps onto [`BudgetBuilder`](crate::budget::BudgetBuilder)
/// (feature `budget`); built by [`Config::budget_layer`](super::Config::budget_layer).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// The budget's name, which keys its counters (default `budget`).
    pub name: Option<String>,
    /// The caps (1 to 32); every cap that applies must have room.
    #[serde(default)]
    pub caps: Vec<CapConfig>,
    /// The prices money caps charge by (default none: a money cap refuses
    /// every model).
    pub prices: Option<PricesConfig>,
    /// A request header naming the tenant (default: the API key's
    /// identity).
    pub tenant_header: Option<String>,
    /// The fractions of a limit at which a threshold event fires
    /// (default `[0.8]`).
    pub thresholds: Option<Vec<f64>>,
    /// The in-memory store's bound (default 100,000 counters).
    pub max_counters: Option<usize>,
    /// The output estimate of a request without `max_tokens`.
    pub default_output_tokens: Option<u64>,
    /// What to do when the store fails (default `fail-closed`).
    pub on_store_error: Option<StoreFailureConfig>,
    /// Where counters live (default `memory`; `redis` uses `[redis]`).
    pub store: Option<BudgetStoreConfig>,
}

/// One cap: a limit in tokens or money per counter of a scope and period.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CapConfig {
    /// Its name (letters, digits, `.`, `_`, `-`; 1–64 bytes).
    pub name: String,
    /// What one counter covers: any of `tenant`, `key`, `model`; empty or
    /// absent, one counter for all.
    #[serde(default)]
    pub scope: Vec<ScopeConfig>,
    /// Day or month.
    pub period: PeriodConfig,
    /// Where the period starts at midnight (`"-05:00"`; default UTC).
    pub utc_offset: Option<String>,
    /// A limit in tokens (input + output, cache writes and reads).
    pub tokens: Option<u64>,
    /// A limit in money (`"50.00"`), priced by `prices`.
    pub money: Option<Decimal>,
}

/// One part of a cap's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ScopeConfig {
    /// Per tenant.
    Tenant,
    /// Per API key.
    Key,
    /// Per model.
    Model,
}

/// The price table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PricesConfig {
    /// Start from the providers' list prices
    /// ([`PriceTable::presets`](crate::budget::PriceTable::presets), as of
    /// [`PRESETS_AS_OF`](crate::budget::PRESETS_AS_OF); default false).
    pub presets: Option<bool>,
    /// Prices per model (and its dated versions), over the presets.
    #[serde(default)]
    pub models: BTreeMap<String, PriceConfig>,
    /// Prices for every model starting with a prefix.
    #[serde(default)]
    pub prefixes: BTreeMap<String, PriceConfig>,
    /// The price of a model nothing matches (default: refuse it under a
    /// money cap).
    pub unknown: Option<PriceConfig>,
}

/// One model's prices per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PriceConfig {
    /// Input tokens.
    pub input: Decimal,
    /// Output tokens.
    pub output: Decimal,
    /// Prompt-cache writes (default: the input price).
    pub cache_write: Option<Decimal>,
    /// Prompt-cache reads (default: the input price, which never
    /// under-counts).
    pub cache_read: Option<Decimal>,
}

/// [`FailurePolicy`](crate::budget::FailurePolicy), by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StoreFailureConfig {
    /// Refuse the request.
    FailClosed,
    /// Send it uncounted.
    FailOpen,
}

/// Where a budget's counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BudgetStoreConfig {
    /// In this process.
    Memory,
    /// In Redis (`[redis]`), shared by every process.
    Redis,
}

impl PricesConfig {
    /// The table; `path` names the section in errors.
    pub(crate) fn build(&self, path: &str) -> Result<crate::money::PriceTable, ConfigError> {
        use crate::money::{PriceTable, UnknownModel};
        let mut t = if self.presets == Some(true) {
            PriceTable::presets()
        } else {
            PriceTable::empty()
        };
        for (model, price) in &self.models {
            t = t.insert(model.as_str(), price.build());
        }
        for (prefix, price) in &self.prefixes {
            if prefix.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{path}.prefixes"),
                    "a prefix must not be empty",
                ));
            }
            t = t.insert_prefix(prefix.as_str(), price.build());
        }
        if let Some(u) = &self.unknown {
            t = t.unknown(UnknownModel::Price(u.build()));
        }
        Ok(t)
    }
}

impl PriceConfig {
    fn build(&self) -> crate::money::Price {
        use crate::money::{Money, Price};
        let m = |d: Decimal| Money::from_nanos(d.nanos());
        Price::per_mtok(
            m(self.input),
            m(self.output),
            m(self.cache_write.unwrap_or(self.input)),
            m(self.cache_read.unwrap_or(self.input)),
        )
    }
}

#[cfg(feature = "budget")]
impl BudgetConfig {
    pub(crate) fn build(
        &self,
        redis: Option<&super::RedisConfig>,
        env: &mut Env<'_>,
    ) -> Result<crate::budget::BudgetLayer, ConfigError> {
        use crate::budget::{BudgetLayer, Cap, FailurePolicy, Money, Period, Scope};
        let mut b = BudgetLayer::builder();
        if let Some(n) = &self.name {
            b = b.name(n);
        }
        if self.caps.is_empty() || self.caps.len() > crate::budget::MAX_CAPS {
            return Err(ConfigError::invalid("budget.caps", "between 1 and 32 caps"));
        }
        for (i, c) in self.caps.iter().enumerate() {
            let path = format!("budget.caps[{i}]");
            if self.caps[..i].iter().any(|o| o.name == c.name) {
                return Err(ConfigError::invalid(
                    format!("{path}.name"),
                    "two caps share a name",
                ));
            }
            let scope = c.scope.iter().fold(Scope::GLOBAL, |s, part| {
                s.and(match part {
                    ScopeConfig::Tenant => Scope::TENANT,
                    ScopeConfig::Key => Scope::KEY,
                    ScopeConfig::Model => Scope::MODEL,
                })
            });
            let mut period = match c.period {
                PeriodConfig::Day => Period::day(),
                PeriodConfig::Month => Period::month(),
            };
            if let Some(o) = &c.utc_offset {
                let secs = parse_utc_offset(o)
                    .map_err(|r| ConfigError::invalid(format!("{path}.utc_offset"), r))?;
                if secs % 60 != 0 {
                    return Err(ConfigError::invalid(
                        format!("{path}.utc_offset"),
                        "whole minutes",
                    ));
                }
                period = period.utc_offset_minutes(secs / 60);
            }
            let cap = match (c.tokens, c.money) {
                (Some(t), None) => Cap::tokens(&c.name, scope, period, t),
                (None, Some(m)) => Cap::money(&c.name, scope, period, Money::from_nanos(m.nanos())),
                _ => {
                    return Err(ConfigError::invalid(
                        path,
                        "give exactly one of `tokens` and `money`",
                    ));
                }
            };
            cap.validate().map_err(|e| {
                let field = e.field.strip_prefix("cap.").unwrap_or(e.field);
                let field = match field {
                    "limit" if c.tokens.is_some() => "tokens",
                    "limit" => "money",
                    "period" | "utc_offset" => "utc_offset",
                    f => f,
                };
                ConfigError::invalid(format!("{path}.{field}"), e.reason)
            })?;
            b = b.cap(cap);
        }
        if let Some(p) = &self.prices {
            b = b.prices(p.build("budget.prices")?);
        }
        if let Some(h) = &self.tenant_header {
            b = b.tenant_header(header_name("budget.tenant_header", h)?);
        }
        if let Some(t) = &self.thresholds {
            b = b.thresholds(t);
        }
        if let Some(n) = self.max_counters {
            b = b.max_counters(n);
        }
        if let Some(n) = self.default_output_tokens {
            b = b.default_output_tokens(n);
        }
        if let Some(f) = self.on_store_error {
            b = b.on_store_error(match f {
                StoreFailureConfig::FailClosed => FailurePolicy::FailClosed,
                StoreFailureConfig::FailOpen => FailurePolicy::FailOpen,
            });
        }
        if self.store == Some(BudgetStoreConfig::Redis) {
            #[cfg(feature = "redis")]
            {
                let r = redis.ok_or_else(|| {
                    ConfigError::invalid("budget.store", "`redis` needs a [redis] section")
                })?;
                b = b.store(crate::redis::RedisBudgetStore::new(r.handle(env)?));
            }
            #[cfg(not(feature = "redis"))]
            {
                let _ = (redis, env);
                return Err(ConfigError::feature("budget.store", "redis"));
            }
        }
        #[cfg(not(feature = "redis"))]
        let _ = (redis, env);
        b.build()
            .map_err(|e| ConfigError::from_builder("budget", e))
    }
}
