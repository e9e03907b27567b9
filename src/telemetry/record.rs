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
/// [`MAX_MODEL_LABELS`](super::MAX_MODEL_LABELS) names, or `_OTHER`.
/// Made once per rate-limit group (a lookup under a lock).
#[derive(Clone, Debug)]
pub(crate) struct ModelLabel {
    #[cfg(feature = "metrics")]
    value: metrics::SharedString,
}

impl ModelLabel {
    pub(crate) fn of(model: Option<&Arc<str>>) -> Self {
        #[cfg(feature = "metrics")]
        {
            ModelLabel {
                value: imp::intern(model),
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
    imp::model_counter(super::names::UPSTREAM_429, model);
}

/// A request that waited instead of being sent into a 429.
#[inline]
pub(crate) fn avoided_429(model: &ModelLabel) {
    #[cfg(feature = "metrics")]
    imp::model_counter(super::names::AVOIDED_429, model);
}

/// The fraction of a group's bucket in use, for one dimension.
#[inline]
pub(crate) fn utilization(model: &ModelLabel, dimension: &'static str, used: f64) {
    #[cfg(feature = "metrics")]
    imp::utilization(model, dimension, used);
}

/// One attempt ended: its duration, status and the usage it reported.
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

/// What a budget's cap settled as spent.
#[inline]
pub(crate) fn budget_spent(cap: &Arc<str>, unit: &'static str, amount: u64) {
    #[cfg(feature = "metrics")]
    imp::budget_spent(cap, unit, amount);
}

#[cfg(feature = "metrics")]
mod imp {
    use std::collections::HashSet;
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

    /// The first model names seen, each kept once.
    pub(super) fn intern(model: Option<&Arc<str>>) -> SharedString {
        static SEEN: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
        let Some(model) = model else {
            return SharedString::const_str(OTHER);
        };
        let seen = SEEN.get_or_init(Default::default);
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(name) = seen.get(&**model) {
            return SharedString::from(Arc::clone(name));
        }
        if seen.len() >= MAX_MODEL_LABELS {
            return SharedString::const_str(OTHER);
        }
        seen.insert(Arc::clone(model));
        SharedString::from(Arc::clone(model))
    }

    fn model(label: &ModelLabel) -> Label {
        Label::new(GEN_AI_REQUEST_MODEL, label.value.clone())
    }

    fn counter(key: &Key, by: u64) {
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

    pub(super) fn model_counter(name: &'static str, label: &ModelLabel) {
        counter(&Key::from_parts(name, vec![model(label)]), 1);
    }

    pub(super) fn utilization(label: &ModelLabel, dimension: &'static str, used: f64) {
        let key = Key::from_parts(
            QUOTA_UTILIZATION,
            vec![model(label), Label::from_static_parts(DIMENSION, dimension)],
        );
        metrics::with_recorder(|r| r.register_gauge(&key, &META).set(used));
    }

    pub(super) fn operation(
        label: &ModelLabel,
        provider: &'static str,
        duration: Duration,
        status: Option<StatusCode>,
        usage: Option<(u64, u64)>,
    ) {
        let common = [
            model(label),
            Label::from_static_parts(GEN_AI_PROVIDER_NAME, provider),
            Label::from_static_parts(GEN_AI_OPERATION_NAME, "chat"),
        ];
        let mut labels = Vec::with_capacity(4);
        labels.extend(common.iter().cloned());
        if let Some(status) = status.filter(|s| !s.is_success()) {
            labels.push(Label::from_static_parts(
                ERROR_TYPE,
                super::error_type(status),
            ));
        } else if status.is_none() {
            labels.push(Label::from_static_parts(ERROR_TYPE, "_OTHER"));
        }
        histogram(
            &Key::from_parts(OPERATION_DURATION, labels),
            duration.as_secs_f64(),
        );
        let Some((input, output)) = usage else { return };
        for (kind, tokens) in [("input", input), ("output", output)] {
            let mut labels = Vec::with_capacity(4);
            labels.extend(common.iter().cloned());
            labels.push(Label::from_static_parts(GEN_AI_TOKEN_TYPE, kind));
            histogram(&Key::from_parts(TOKEN_USAGE, labels), tokens as f64);
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

    pub(super) fn budget_spent(cap: &Arc<str>, unit: &'static str, amount: u64) {
        let labels = vec![
            Label::new(BUDGET_CAP, SharedString::from(Arc::clone(cap))),
            Label::from_static_parts(BUDGET_UNIT, unit),
        ];
        counter(&Key::from_parts(BUDGET_SPENT, labels), amount);
    }
}
