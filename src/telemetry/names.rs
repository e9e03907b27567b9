//! The names of attributes, labels and metrics, as constants: for
//! exporters' filters, dashboards and tests.
//!
//! `GEN_AI_*` and [`ERROR_TYPE`] are the OpenTelemetry semantic
//! conventions' (v1.37.0); the rest are this crate's, under `llm_resilience.`.

/// The model the request asked for.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// The provider, from the request's API shape: `anthropic` or `openai`.
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// The operation: `chat` (Messages and Chat Completions).
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// Which tokens a `gen_ai.client.token.usage` value counts: `input` or
/// `output`.
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
/// Input tokens the provider reported (an event field).
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// Output tokens the provider reported (an event field).
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// What failed: the HTTP status (`429`, `503`, …; `_OTHER` for a status
/// providers do not use), `transport` for an attempt with no response, or
/// this crate's decision (`queue_timeout`, `rate_limited`, …).
pub const ERROR_TYPE: &str = "error.type";

/// Histogram of the tokens of each response, by `gen_ai.token.type`.
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
/// Histogram of each attempt's duration in seconds, from admission to the
/// response body's end (or to the failure of an attempt with no response).
pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";

/// Histogram of the time a request waited for admission, in seconds.
pub const QUEUE_WAIT: &str = "llm_resilience.queue.wait";
/// Counter of 429 responses seen from upstream.
pub const UPSTREAM_429: &str = "llm_resilience.rate_limit.upstream_429";
/// Counter of requests that waited for the bucket or a cooldown instead of
/// being sent into a 429.
pub const AVOIDED_429: &str = "llm_resilience.rate_limit.avoided_429";
/// Gauge of the fraction of a group's bucket in use (0 = full bucket), per
/// dimension.
pub const QUOTA_UTILIZATION: &str = "llm_resilience.rate_limit.utilization";
/// Counter of retries, by reason.
pub const RETRIES: &str = "llm_resilience.retry.attempts";
/// Counter of the cache's answers, by result.
pub const CACHE_REQUESTS: &str = "llm_resilience.cache.requests";
/// Counter of fallback hops, by the target moved to and the trigger.
pub const FALLBACK_HOPS: &str = "llm_resilience.fallback.hops";
/// Counter of what budgets settled as spent, in the cap's unit.
pub const BUDGET_SPENT: &str = "llm_resilience.budget.spent";

/// Label: the layer that made a request wait (`rate`, `concurrency`).
pub const LAYER: &str = "llm_resilience.layer";
/// Label: the rate-limit dimension (`requests`, `input_tokens`,
/// `output_tokens`, `tokens`).
pub const DIMENSION: &str = "llm_resilience.dimension";
/// Label: why a request was retried (`rate_limited`, `overloaded`,
/// `server_error`, `status`, `stream_error`, `transport`).
pub const RETRY_REASON: &str = "llm_resilience.retry.reason";
/// Label: the cache's answer (`hit`, `miss`, `stale`, `coalesced`, `bypass`: a request the cache does not key).
pub const CACHE_RESULT: &str = "llm_resilience.cache.result";
/// Label: the fallback target moved to (a name from the chain).
pub const FALLBACK_TO: &str = "llm_resilience.fallback.to";
/// Label: what moved the request (`status`, `error`, `rate_limited`,
/// `timeout`, `cooling_down`).
pub const FALLBACK_TRIGGER: &str = "llm_resilience.fallback.trigger";
/// Label: the budget cap (its configured name).
pub const BUDGET_CAP: &str = "llm_resilience.budget.cap";
/// Label: the cap's unit (`tokens`, `nanos`).
pub const BUDGET_UNIT: &str = "llm_resilience.budget.unit";
