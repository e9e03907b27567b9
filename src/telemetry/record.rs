//! The recording helpers the layers call: no-ops (and no code) without the
//! `metrics` feature.

// Each helper is called by the layer of its own feature.
#![allow(dead_code)]
#![cfg_attr(not(feature = "metrics"), allow(unused_variables))]

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::provider::Api;

/// `error.type` for a response status: its code, for the statuses LLM
/// providers answer with, else `_OTHER` (a `&'static str` either way).
pub(crate) fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        529 => "529",
        _ => "_OTHER",
    }
}

/// `gen_ai.provider.name` for a request's API shape.
pub(crate) fn provider(api: Option<Api>) -> &'static str {
    match api {
        Some(Api::AnthropicMessages) => "anthropic",
        Some(Api::OpenAiChat) => "openai",
        None => "_OTHER",
    }
}

/// A model name as a metric label: one of at most
/// [`MAX_MODEL_LABELS`](super::MAX_MODEL_LABELS) names, or `_OTHER`, with
/// the metric keys that carry it made once per name (so recording them
/// allocates nothing). Looked up once per rate-limit group (under a lock).
#[derive(Clone, Debug)]
pub(crate) struct ModelLabel {
    #[cfg(feature = "metrics")]
    keys: Arc<imp::ModelKeys>,
}

impl ModelLabel {
    pub(crate) fn of(model: Option<&Arc<str>>) -> Self {
        #[cfg(feature = "metrics")]
        {
            ModelLabel {
                keys: imp::intern(model),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = model;
            ModelLabel {}
        }
    }
}

/// The time a request waited for admission in `layer`.
#[inline]
pub(crate) fn queue_wait(layer: &'static str, wait: Duration) {
    #[cfg(feature = "metrics")]
    imp::queue_wait(layer, wait);
}

/// A 429 seen from upstream.
#[inline]
pub(crate) fn upstream_429(model: &ModelLabel) {
    #[cfg(feature = "metrics")]
    imp::counter(&model.keys.upstream_429, 1);
}

/// A request that waited instead of being sent into a 429.
#[inline]
pub(crate) fn avoided_429(model: &ModelLabel) {
    #[cfg(feature = "metrics")]
    imp::counter(&model.keys.avoided_429, 1);
}

/// The fraction of a group's bucket in use, for one dimension.
#[inline]
pub(crate) fn utilization(model: &ModelLabel, dimension: usize, used: f64) {
    #[cfg(feature = "metrics")]
    imp::utilization(model, dimension, used);
}

/// One attempt ended: its duration, its status (`None`: it failed below,
/// with no response) and the usage it reported.
#[inline]
pub(crate) fn operation(
    model: &ModelLabel,
    provider: &'static str,
    duration: Duration,
    status: Option<StatusCode>,
    usage: Option<(u64, u64)>,
) {
    #[cfg(feature = "metrics")]
    imp::operation(model, provider, duration, status, usage);
}

/// A retry, for `reason`.
#[inline]
pub(crate) fn retry(reason: &'static str) {
    #[cfg(feature = "metrics")]
    imp::retry(reason);
}

/// The cache's answer: `hit`, `miss`, `stale`, `coalesced` or `bypass`.
#[inline]
pub(crate) fn cache(result: &'static str) {
    #[cfg(feature = "metrics")]
    imp::cache(result);
}

/// A fallback hop to `to` (a name from the chain).
#[inline]
pub(crate) fn fallback(to: &Arc<str>, trigger: &'static str) {
    #[cfg(feature = "metrics")]
    imp::fallback(to, trigger);
}

/// The `llm_resilience.budget.spent` keys of a budget's caps, made when
/// the budget is built.
#[derive(Debug)]
pub(crate) struct CapKeys {
    #[cfg(feature = "metrics")]
    keys: Box<[metrics::Key]>,
}

impl CapKeys {
    /// One key per cap: its name and unit.
    pub(crate) fn new<'a>(caps: impl Iterator<Item = (&'a Arc<str>, &'static str)>) -> Self {
        #[cfg(feature = "metrics")]
        {
            CapKeys {
                keys: caps
                    .map(|(name, unit)| imp::spent_key(name, unit))
                    .collect(),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            drop(caps);
            CapKeys {}
        }
    }
}

/// What cap `index` of a budget settled as spent.
#[inline]
pub(crate) fn budget_spent(keys: &CapKeys, index: usize, amount: u64) {
    #[cfg(feature = "metrics")]
    if let Some(key) = keys.keys.get(index) {
        imp::counter(key, amount);
    }
}

#[cfg(feature = "metrics")]
mod imp {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use http::StatusCode;
    use metrics::{Key, Label, Level, Metadata, SharedString};

    use super::ModelLabel;
    use crate::telemetry::MAX_MODEL_LABELS;
    use crate::telemetry::names::*;

    static META: Metadata<'static> = Metadata::new(
        "tower_llm_resilience",
        Level::INFO,
        Some("tower_llm_resilience::telemetry"),
    );

    const OTHER: &str = "_OTHER";

    const PROVIDERS: [&str; 3] = ["anthropic", "openai", OTHER];
    const DIMENSIONS: [&str; 4] = ["requests", "input_tokens", "output_tokens", "tokens"];

    /// The keys of every metric labelled by one model name.
    #[derive(Debug)]
    pub(crate) struct ModelKeys {
        value: SharedString,
        pub(super) upstream_429: Key,
        pub(super) avoided_429: Key,
        /// Per dimension (`Dimension::index`).
        utilization: [Key; 4],
        /// Per provider: the duration of a 2xx, and the input and output
        /// token usage.
        ok: [Key; 3],
        tokens: [[Key; 2]; 3],
    }

    impl ModelKeys {
        fn new(value: SharedString) -> Self {
            let model = || Label::new(GEN_AI_REQUEST_MODEL, value.clone());
            let op = |p: &'static str| {
                vec![
                    model(),
                    Label::from_static_parts(GEN_AI_PROVIDER_NAME, p),
                    Label::from_static_parts(GEN_AI_OPERATION_NAME, "chat"),
                ]
            };
            let with = |mut labels: Vec<Label>, k: &'static str, v: &'static str| {
                labels.push(Label::from_static_parts(k, v));
                labels
            };
            ModelKeys {
                upstream_429: Key::from_parts(UPSTREAM_429, vec![model()]),
                avoided_429: Key::from_parts(AVOIDED_429, vec![model()]),
                utilization: DIMENSIONS.map(|d| {
                    Key::from_parts(
                        QUOTA_UTILIZATION,
                        vec![model(), Label::from_static_parts(DIMENSION, d)],
                    )
                }),
                ok: PROVIDERS.map(|p| Key::from_parts(OPERATION_DURATION, op(p))),
                tokens: PROVIDERS.map(|p| {
                    ["input", "output"]
                        .map(|t| Key::from_parts(TOKEN_USAGE, with(op(p), GEN_AI_TOKEN_TYPE, t)))
                }),
                value,
            }
        }
    }

    /// The first model names seen, each kept once with its keys.
    pub(super) fn intern(model: Option<&Arc<str>>) -> Arc<ModelKeys> {
        static SEEN: OnceLock<Mutex<HashMap<Arc<str>, Arc<ModelKeys>>>> = OnceLock::new();
        static OTHER_KEYS: OnceLock<Arc<ModelKeys>> = OnceLock::new();
        let other = || {
            Arc::clone(
                OTHER_KEYS.get_or_init(|| Arc::new(ModelKeys::new(SharedString::const_str(OTHER)))),
            )
        };
        let Some(model) = model else {
            return other();
        };
        let seen = SEEN.get_or_init(Default::default);
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(keys) = seen.get(&**model) {
            return Arc::clone(keys);
        }
        if seen.len() >= MAX_MODEL_LABELS {
            return other();
        }
        let keys = Arc::new(ModelKeys::new(SharedString::from(Arc::clone(model))));
        seen.insert(Arc::clone(model), Arc::clone(&keys));
        keys
    }

    pub(super) fn counter(key: &Key, by: u64) {
        metrics::with_recorder(|r| r.register_counter(key, &META).increment(by));
    }

    fn histogram(key: &Key, value: f64) {
        metrics::with_recorder(|r| r.register_histogram(key, &META).record(value));
    }

    /// A `static` key with static labels: no allocation to record it.
    macro_rules! static_key {
        ($name:expr, $($k:expr => $v:expr),+) => {{
            static LABELS: [Label; [$($v),+].len()] = [$(Label::from_static_parts($k, $v)),+];
            static KEY: Key = Key::from_static_parts($name, &LABELS);
            &KEY
        }};
    }

    pub(super) fn queue_wait(layer: &'static str, wait: Duration) {
        let key = match layer {
            "rate" => static_key!(QUEUE_WAIT, LAYER => "rate"),
            _ => static_key!(QUEUE_WAIT, LAYER => "concurrency"),
        };
        histogram(key, wait.as_secs_f64());
    }

    pub(super) fn utilization(label: &ModelLabel, dimension: usize, used: f64) {
        if let Some(key) = label.keys.utilization.get(dimension) {
            metrics::with_recorder(|r| r.register_gauge(key, &META).set(used));
        }
    }

    pub(super) fn operation(
        label: &ModelLabel,
        provider: &'static str,
        duration: Duration,
        status: Option<StatusCode>,
        usage: Option<(u64, u64)>,
    ) {
        let keys = &label.keys;
        let p = PROVIDERS.iter().position(|&x| x == provider).unwrap_or(2);
        let error = match status {
            Some(s) if s.is_success() => None,
            Some(s) => Some(super::error_type(s)),
            None => Some("transport"),
        };
        match error {
            None => histogram(&keys.ok[p], duration.as_secs_f64()),
            // A failure's key is made when it happens (failures are the
            // exception, and `error.type` has many values).
            Some(e) => {
                let labels = vec![
                    Label::new(GEN_AI_REQUEST_MODEL, keys.value.clone()),
                    Label::from_static_parts(GEN_AI_PROVIDER_NAME, provider),
                    Label::from_static_parts(GEN_AI_OPERATION_NAME, "chat"),
                    Label::from_static_parts(ERROR_TYPE, e),
                ];
                histogram(
                    &Key::from_parts(OPERATION_DURATION, labels),
                    duration.as_secs_f64(),
                );
            }
        }
        if let Some((input, output)) = usage {
            histogram(&keys.tokens[p][0], input as f64);
            histogram(&keys.tokens[p][1], output as f64);
        }
    }

    pub(super) fn retry(reason: &'static str) {
        let key = match reason {
            "rate_limited" => static_key!(RETRIES, RETRY_REASON => "rate_limited"),
            "overloaded" => static_key!(RETRIES, RETRY_REASON => "overloaded"),
            "server_error" => static_key!(RETRIES, RETRY_REASON => "server_error"),
            "stream_error" => static_key!(RETRIES, RETRY_REASON => "stream_error"),
            "transport" => static_key!(RETRIES, RETRY_REASON => "transport"),
            _ => static_key!(RETRIES, RETRY_REASON => "status"),
        };
        counter(key, 1);
    }

    pub(super) fn cache(result: &'static str) {
        let key = match result {
            "hit" => static_key!(CACHE_REQUESTS, CACHE_RESULT => "hit"),
            "stale" => static_key!(CACHE_REQUESTS, CACHE_RESULT => "stale"),
            "coalesced" => static_key!(CACHE_REQUESTS, CACHE_RESULT => "coalesced"),
            "bypass" => static_key!(CACHE_REQUESTS, CACHE_RESULT => "bypass"),
            _ => static_key!(CACHE_REQUESTS, CACHE_RESULT => "miss"),
        };
        counter(key, 1);
    }

    pub(super) fn fallback(to: &Arc<str>, trigger: &'static str) {
        let labels = vec![
            Label::new(FALLBACK_TO, SharedString::from(Arc::clone(to))),
            Label::from_static_parts(FALLBACK_TRIGGER, trigger),
        ];
        counter(&Key::from_parts(FALLBACK_HOPS, labels), 1);
    }

    pub(super) fn spent_key(cap: &Arc<str>, unit: &'static str) -> Key {
        let labels = vec![
            Label::new(BUDGET_CAP, SharedString::from(Arc::clone(cap))),
            Label::from_static_parts(BUDGET_UNIT, unit),
        ];
        Key::from_parts(BUDGET_SPENT, labels)
    }
}
