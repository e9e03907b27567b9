//! What the layers tell: `tracing` events at every decision, and (feature
//! `metrics`) metrics through the [`metrics`](https://docs.rs/metrics)
//! facade.
//!
//! # Naming
//!
//! Attributes and metrics that the OpenTelemetry semantic conventions for
//! generative AI define keep their names there (**semantic conventions
//! v1.37.0**, where `gen_ai.provider.name` replaced `gen_ai.system`; the
//! GenAI conventions are still of status *Development*): `gen_ai.request.model`,
//! `gen_ai.provider.name`, `gen_ai.operation.name`, `gen_ai.token.type`,
//! `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, `error.type`,
//! and the metrics `gen_ai.client.token.usage` and
//! `gen_ai.client.operation.duration`. Everything else this crate decides is
//! named under one prefix, `llm_resilience.`: a field or label is
//! `llm_resilience.<layer>.<what>`, a duration carries its unit in the name
//! of a `tracing` field (`…_ms`) and is in seconds in a metric (as the
//! conventions want). The names are the constants of [`names`].
//!
//! # Events
//!
//! Every event has the `tracing` target of the module that made it (e.g.
//! `tower_llm_resilience::rate::future`), so `RUST_LOG`-style filters can
//! pick layers. Per-request decisions are `DEBUG`; `WARN` is kept for what
//! an operator must act on: the first 429 that closes a rate-limit group's
//! gate (the configured limits are above the provider's), a store that
//! fails. Field values are recorded, never formatted, when the level is
//! disabled (the `tracing` macros check the level first).
//!
//! | decision | layer | level | fields |
//! |---|---|---|---|
//! | admitted at the call | rate | DEBUG | `gen_ai.request.model`, `llm_resilience.queue.wait_ms` (0) |
//! | queued | rate | DEBUG | `gen_ai.request.model`, `llm_resilience.queue.position` |
//! | admitted after waiting | rate | DEBUG | `gen_ai.request.model`, `llm_resilience.queue.wait_ms` |
//! | gave up waiting | rate | DEBUG | `gen_ai.request.model`, `llm_resilience.queue.wait_ms`, `error.type` |
//! | 429: the group cools down | rate | WARN (first), DEBUG (while cooling) | `gen_ai.request.model`, `llm_resilience.rate_limit.cooldown_ms` |
//! | response settled | rate | DEBUG | `gen_ai.request.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` |
//! | waiting for a permit, permit after a wait | concurrency | DEBUG | `llm_resilience.queue.position`, `llm_resilience.queue.wait_ms` |
//! | retried | retry | DEBUG | `llm_resilience.retry.attempt`, `llm_resilience.retry.reason`, `llm_resilience.retry.delay_ms`, `error.type` |
//! | hit, miss, stale, coalesced, bypass | cache | DEBUG | `llm_resilience.cache.result`, `llm_resilience.cache.age_ms` |
//! | fallback hop | fallback | DEBUG | `llm_resilience.fallback.from`, `llm_resilience.fallback.to`, `llm_resilience.fallback.trigger` |
//! | budget charged | budget | DEBUG | `llm_resilience.budget.cap`, `llm_resilience.budget.scope`, `llm_resilience.budget.unit`, `llm_resilience.budget.amount` |
//!
//! Secrets never appear: API keys are shown as their [`KeyId`](crate::KeyId)
//! (a keyed hash) when at all, a key pool's key by its label, a budget's
//! tenant not at all (only the *kind* of scope: `tenant`, `key+model`, …).
//!
//! # Metrics (feature `metrics`)
//!
//! | name | kind | unit | labels |
//! |---|---|---|---|
//! | `gen_ai.client.token.usage` | histogram | `{token}` | `gen_ai.token.type` (`input`, `output`), `gen_ai.request.model`, `gen_ai.provider.name`, `gen_ai.operation.name` |
//! | `gen_ai.client.operation.duration` | histogram | s | `gen_ai.request.model`, `gen_ai.provider.name`, `gen_ai.operation.name`, `error.type` (the status when not 2xx; `transport` when the attempt failed with no response) |
//! | `llm_resilience.queue.wait` | histogram | s | `llm_resilience.layer` (`rate`, `concurrency`) |
//! | `llm_resilience.rate_limit.upstream_429` | counter | {response} | `gen_ai.request.model` |
//! | `llm_resilience.rate_limit.avoided_429` | counter | {request} | `gen_ai.request.model` |
//! | `llm_resilience.rate_limit.utilization` | gauge | 1 (0–1) | `gen_ai.request.model`, `llm_resilience.dimension` |
//! | `llm_resilience.retry.attempts` | counter | {retry} | `llm_resilience.retry.reason` |
//! | `llm_resilience.cache.requests` | counter | {request} | `llm_resilience.cache.result` (`hit`, `miss`, `stale`, `coalesced`, `bypass`: a request the cache does not key) |
//! | `llm_resilience.fallback.hops` | counter | {hop} | `llm_resilience.fallback.to`, `llm_resilience.fallback.trigger` |
//! | `llm_resilience.budget.spent` | counter | tokens or nano-units | `llm_resilience.budget.cap`, `llm_resilience.budget.unit` |
//!
//! The two `gen_ai.client.*` histograms and the rate-limit metrics are
//! recorded by the rate limiter (one per attempt that reached it: it is the
//! layer that watches every response body end with its usage); the queue
//! wait by both limiters; the rest by their layers.
//!
//! **Label cardinality is bounded.** Every label value is a `&'static str`
//! of this crate, a name from the configuration (fallback targets, budget
//! caps: bounded by the configuration), or a model name. Model names come
//! from requests, so they pass a process-wide table of at most
//! [`MAX_MODEL_LABELS`] names (each at most 256 bytes, as everywhere in the
//! crate), the first ones seen; any other model is labelled `_OTHER` (the
//! conventions' value for "none of the known ones"). The table is looked up
//! once per rate-limit group, when the group is made, not per request.
//!
//! Without the feature no metric code is compiled. With it, a metric costs
//! what the installed recorder costs; label sets made only of static
//! strings are `static` keys, and the keys of each model name and each
//! budget cap are made once (with the label table's entry, or when the
//! budget is built), so recording allocates no label set per request.

pub mod names;
pub(crate) mod record;

/// How many distinct model names the metrics label by; others are
/// `_OTHER`.
pub const MAX_MODEL_LABELS: usize = 64;
