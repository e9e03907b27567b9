//! `[retry]`: attempts, backoff, the retry budget, how server advice is
//! honoured, timeouts.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::duration::{deserialize as dur, deserialize_opt as dur_opt};
use crate::retry::{Backoff, Jitter, OverCap, RetryLayer};

/// `[retry]`: maps onto [`RetryBuilder`](crate::retry::RetryBuilder).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included (default 3; 1 disables
    /// retries).
    pub max_attempts: Option<u32>,
    /// The computed backoff for failures without server advice (default
    /// 500 ms doubling to 8 s, full jitter).
    pub backoff: Option<BackoffConfig>,
    /// The jitter added to server advice (default 10 %, at most 1 s).
    pub server_jitter: Option<ServerJitterConfig>,
    /// The longest `retry-after` honoured, and what to do beyond it
    /// (default 60 s, give up).
    pub retry_after: Option<RetryAfterConfig>,
    /// The retry budget (default 10 s, 10/s, 20 %).
    pub budget: Option<RetryBudgetConfig>,
    /// No budget: retry every retryable failure up to `max_attempts`.
    pub no_budget: Option<bool>,
    /// The total timeout, every attempt and delay included (default none).
    #[serde(default, deserialize_with = "dur_opt")]
    pub timeout: Option<Duration>,
    /// Each attempt's timeout up to its response head (default none).
    #[serde(default, deserialize_with = "dur_opt")]
    pub attempt_timeout: Option<Duration>,
    /// How long a body is read ahead to classify it (default 30 s).
    #[serde(default, deserialize_with = "dur_opt")]
    pub peek_timeout: Option<Duration>,
    /// How much of a body is read ahead (default 64 KiB).
    pub peek_limit: Option<usize>,
}

/// [`Backoff::new`]'s settings.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// The first delay.
    #[serde(deserialize_with = "dur")]
    pub base: Duration,
    /// The growth per retry (≥ 1).
    pub factor: f64,
    /// The longest delay.
    #[serde(deserialize_with = "dur")]
    pub cap: Duration,
    /// The jitter (default `full`).
    pub jitter: Option<JitterConfig>,
}

/// [`Jitter`], by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum JitterConfig {
    /// [`Jitter::None`].
    None,
    /// [`Jitter::Full`].
    Full,
    /// [`Jitter::Equal`].
    Equal,
    /// [`Jitter::Decorrelated`].
    Decorrelated,
}

/// [`RetryBuilder::server_jitter`](crate::retry::RetryBuilder::server_jitter).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerJitterConfig {
    /// The share of the advice (0 to 1).
    pub ratio: f64,
    /// The most added.
    #[serde(deserialize_with = "dur")]
    pub max: Duration,
}

/// [`RetryBuilder::max_server_delay`](crate::retry::RetryBuilder::max_server_delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryAfterConfig {
    /// The longest server advice honoured.
    #[serde(deserialize_with = "dur")]
    pub max: Duration,
    /// What to do when the advice is longer (default `give-up`).
    pub over_cap: Option<OverCapConfig>,
}

/// [`OverCap`], by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OverCapConfig {
    /// [`OverCap::GiveUp`].
    GiveUp,
    /// [`OverCap::Backoff`].
    Backoff,
}

/// [`RetryBuilder::budget`](crate::retry::RetryBuilder::budget).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryBudgetConfig {
    /// The window (1 s to 60 s).
    #[serde(deserialize_with = "dur")]
    pub ttl: Duration,
    /// Retries allowed per second regardless of traffic.
    pub min_per_sec: u32,
    /// Retries allowed per request (0 to 1000).
    pub ratio: f64,
}

impl RetryConfig {
    pub(crate) fn build(&self) -> Result<RetryLayer, ConfigError> {
        let mut b = RetryLayer::builder();
        if let Some(n) = self.max_attempts {
            b = b.max_attempts(n);
        }
        if let Some(c) = self.backoff {
            let jitter = match c.jitter.unwrap_or(JitterConfig::Full) {
                JitterConfig::None => Jitter::None,
                JitterConfig::Full => Jitter::Full,
                JitterConfig::Equal => Jitter::Equal,
                JitterConfig::Decorrelated => Jitter::Decorrelated,
            };
            let backoff = Backoff::new(c.base, c.factor, c.cap, jitter)
                .map_err(|e| ConfigError::from_builder("retry", e))?;
            b = b.backoff(backoff);
        }
        if let Some(j) = self.server_jitter {
            b = b.server_jitter(j.ratio, j.max);
        }
        if let Some(r) = self.retry_after {
            let over = match r.over_cap.unwrap_or(OverCapConfig::GiveUp) {
                OverCapConfig::GiveUp => OverCap::GiveUp,
                OverCapConfig::Backoff => OverCap::Backoff,
            };
            b = b.max_server_delay(r.max, over);
        }
        match (self.no_budget, self.budget) {
            (Some(true), Some(_)) => {
                return Err(ConfigError::invalid(
                    "retry.no_budget",
                    "conflicts with retry.budget",
                ));
            }
            (Some(true), None) => b = b.no_budget(),
            (_, Some(c)) => b = b.budget(c.ttl, c.min_per_sec, c.ratio),
            (_, None) => {}
        }
        if let Some(t) = self.timeout {
            b = b.timeout(t);
        }
        if let Some(t) = self.attempt_timeout {
            b = b.attempt_timeout(t);
        }
        if let Some(t) = self.peek_timeout {
            b = b.peek_timeout(t);
        }
        if let Some(n) = self.peek_limit {
            b = b.peek_limit(n);
        }
        b.build().map_err(|e| {
            let path = match e.field {
                "server_jitter" if e.reason.contains("ratio") => "retry.server_jitter.ratio",
                "server_jitter" => "retry.server_jitter.max",
                "max_server_delay" => "retry.retry_after.max",
                _ => return ConfigError::from_builder("retry", e),
            };
            ConfigError::invalid(path, e.reason)
        })
    }
}
