//! `[fallback]`: the chain of models (and providers) a request moves
//! along when its own model is exhausted or overloaded.

use std::time::Duration;

use serde::Deserialize;

use super::duration::{deserialize as dur, deserialize_opt as dur_opt};
use super::{ConfigError, Env};
use crate::concurrency::ConcurrencyLimitLayer;
use crate::fallback::{FallbackLayer, Target};
use crate::rate::RateLimitLayer;

/// `[fallback]`: maps onto [`FallbackBuilder`](crate::fallback::FallbackBuilder).
///
/// One chain serves every request: after the request's own model, each
/// target in order (a target equal to the request's model is tried
/// again, so list each model once). No targets: the layer passes requests
/// through.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FallbackConfig {
    /// The chain, in order (at most 16).
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// How long a target that failed is skipped without advice, and the
    /// longest (default 10 s and 5 min).
    pub cooldown: Option<CooldownConfig>,
    /// How long an error body or a stream's start is read ahead (default
    /// 30 s).
    #[serde(default, deserialize_with = "dur_opt")]
    pub peek_timeout: Option<Duration>,
}

/// A cooldown without advice, and the longest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CooldownConfig {
    /// The cooldown when the failure gave no advice.
    #[serde(deserialize_with = "dur")]
    pub default: Duration,
    /// The longest cooldown.
    #[serde(deserialize_with = "dur")]
    pub max: Duration,
}

/// One step of the chain: another model on the same upstream, or — with
/// `openai` — an OpenAI Chat Completions model (Anthropic Messages
/// requests mapped to it and its answers back, see
/// [`Target::openai`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TargetConfig {
    /// The model.
    pub model: String,
    /// A cap on `max_tokens` for this model (same-upstream targets).
    pub max_tokens: Option<u64>,
    /// Top-level body fields set for this model (same-upstream targets).
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// Another provider: OpenAI's Chat Completions.
    pub openai: Option<OpenAiTargetConfig>,
}

/// Where an OpenAI target is, and the variable holding its key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OpenAiTargetConfig {
    /// The full URL of `/v1/chat/completions` (default OpenAI's).
    pub endpoint: Option<String>,
    /// The environment variable holding the API key, sent as a sensitive
    /// bearer token.
    pub api_key_env: String,
}

const OPENAI_ENDPOINT: &str = "https://api.openai.com/v1/chat/completions";

impl FallbackConfig {
    pub(crate) fn build(
        &self,
        env: &mut Env<'_>,
        rate: &RateLimitLayer,
        concurrency: &ConcurrencyLimitLayer,
    ) -> Result<FallbackLayer, ConfigError> {
        if self.targets.is_empty() {
            return Ok(FallbackLayer::new([]));
        }
        if self.targets.len() > 16 {
            return Err(ConfigError::invalid(
                "fallback.targets",
                "a fallback chain holds at most 16 targets",
            ));
        }
        let mut b = FallbackLayer::builder();
        for (i, t) in self.targets.iter().enumerate() {
            let path = format!("fallback.targets[{i}]");
            if t.model.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{path}.model"),
                    "must not be empty",
                ));
            }
            let target = match &t.openai {
                None => {
                    let mut target = Target::model(t.model.as_str());
                    if let Some(cap) = t.max_tokens {
                        target = target.max_tokens(cap);
                    }
                    for (name, value) in t.fields.iter().flatten() {
                        if name == "model" {
                            return Err(ConfigError::invalid(
                                format!("{path}.fields.model"),
                                "the model is the target's `model`",
                            ));
                        }
                        target = target.with_field(name.clone(), value.clone());
                    }
                    target
                }
                Some(o) => {
                    if t.max_tokens.is_some() || t.fields.is_some() {
                        let field = if t.max_tokens.is_some() {
                            "max_tokens"
                        } else {
                            "fields"
                        };
                        return Err(ConfigError::invalid(
                            format!("{path}.{field}"),
                            "applies to same-upstream targets only, not to an `openai` one",
                        ));
                    }
                    openai_target(&t.model, o, &path, env, rate, concurrency)?
                }
            };
            b = b.target(target);
        }
        if let Some(c) = self.cooldown {
            b = b.cooldown(c.default, c.max);
        }
        if let Some(t) = self.peek_timeout {
            b = b.peek_timeout(t);
        }
        b.build()
            .map_err(|e| ConfigError::from_builder("fallback", e))
    }
}

/// An OpenAI target over the crate's HTTP client, through the stack's own
/// rate and concurrency limiters (the same layer values, so the same
/// state: the target's requests are admitted by its key and model like
/// any other).
#[allow(unused_variables)]
fn openai_target(
    model: &str,
    o: &OpenAiTargetConfig,
    path: &str,
    env: &mut Env<'_>,
    rate: &RateLimitLayer,
    concurrency: &ConcurrencyLimitLayer,
) -> Result<Target, ConfigError> {
    let endpoint: http::Uri = o
        .endpoint
        .as_deref()
        .unwrap_or(OPENAI_ENDPOINT)
        .parse()
        .ok()
        .filter(|u: &http::Uri| u.scheme().is_some() && u.authority().is_some())
        .ok_or_else(|| {
            ConfigError::invalid(format!("{path}.openai.endpoint"), "not an absolute URL")
        })?;
    let key_path = format!("{path}.openai.api_key_env");
    let secret = env.secret(&key_path, &o.api_key_env)?;
    let mut key = http::HeaderValue::from_str(secret.expose())
        .map_err(|_| ConfigError::invalid(&key_path, "the key is not a valid header value"))?;
    key.set_sensitive(true);
    #[cfg(feature = "hyper-client")]
    let client = crate::client::HyperClient::new();
    #[cfg(all(not(feature = "hyper-client"), feature = "reqwest"))]
    let client = crate::client::ReqwestClient::new();
    #[cfg(any(feature = "hyper-client", feature = "reqwest"))]
    {
        use tower_layer::Layer;
        let svc = rate.layer(concurrency.layer(client));
        Ok(Target::openai(model, svc, endpoint, key))
    }
    #[cfg(not(any(feature = "hyper-client", feature = "reqwest")))]
    Err(ConfigError::feature(
        format!("{path}.openai"),
        "hyper-client",
    ))
}
