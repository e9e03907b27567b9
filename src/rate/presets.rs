//! The providers' published rate limits per usage tier, as [`Limits`] per
//! model class: Anthropic tiers 1–4 (requests, input tokens and output
//! tokens per minute) and OpenAI tiers 1–5 (requests and combined tokens
//! per minute, [`Dimension::Tokens`](super::Dimension::Tokens)).
//!
//! The figures were written down on [`PRESETS_AS_OF`] from the providers'
//! rate-limit pages (<https://docs.anthropic.com/en/api/rate-limits>,
//! <https://platform.openai.com/docs/guides/rate-limits> and each model's
//! page) as the author knew them, not fetched on that day. Providers
//! change them, and an organisation may have custom limits: the headers
//! of its responses are the truth (the limiter learns from them, see
//! [`Learning`](super::Learning)), and the console shows them. Override a
//! class with [`RateLimitBuilder::model_limits`](super::RateLimitBuilder::model_limits)
//! after [`Preset::apply`], or in a config file with
//! `[rate.models."<prefix>"]`.
//!
//! ```
//! use tower_llm_resilience::rate::presets::{self, Preset};
//! use tower_llm_resilience::rate::{Dimension, RateLimitLayer};
//! let tier2 = presets::by_name("anthropic-tier-2").expect("a preset");
//! let haiku = tier2.limits_for("claude-haiku-4-5-20251001");
//! assert_eq!(haiku.get(Dimension::InputTokens).map(|l| l.amount()), Some(450_000));
//! let layer = tier2.apply(RateLimitLayer::builder()).build()?;
//! # let _ = layer;
//! # Ok::<(), tower_llm_resilience::error::InvalidConfig>(())
//! ```

use super::config::{Limits, RateLimitBuilder};
use super::limit::Limit;

/// When the figures were written down.
pub const PRESETS_AS_OF: &str = "2026-12-02";

/// Whose limits a preset holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// Anthropic: requests, input tokens and output tokens per minute.
    Anthropic,
    /// OpenAI: requests and tokens (input + output) per minute.
    OpenAi,
}

/// One model class's published per-minute limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ClassLimits {
    /// The model-name prefix the class covers (`claude-sonnet-4`,
    /// `gpt-4o-mini`); the longest matching prefix wins, as in
    /// [`RateLimitBuilder::model_limits`].
    pub prefix: &'static str,
    /// Requests per minute.
    pub requests_per_minute: u64,
    /// Input tokens per minute (Anthropic's ITPM).
    pub input_tokens_per_minute: Option<u64>,
    /// Output tokens per minute (Anthropic's OTPM).
    pub output_tokens_per_minute: Option<u64>,
    /// Input + output tokens per minute (OpenAI's TPM).
    pub tokens_per_minute: Option<u64>,
}

impl ClassLimits {
    const fn anthropic(prefix: &'static str, rpm: u64, itpm: u64, otpm: u64) -> Self {
        ClassLimits {
            prefix,
            requests_per_minute: rpm,
            input_tokens_per_minute: Some(itpm),
            output_tokens_per_minute: Some(otpm),
            tokens_per_minute: None,
        }
    }

    const fn openai(prefix: &'static str, rpm: u64, tpm: u64) -> Self {
        ClassLimits {
            prefix,
            requests_per_minute: rpm,
            input_tokens_per_minute: None,
            output_tokens_per_minute: None,
            tokens_per_minute: Some(tpm),
        }
    }

    /// The limits, each bucket holding one minute's worth.
    #[must_use]
    pub fn limits(&self) -> Limits {
        limits_of(
            Some(self.requests_per_minute),
            self.input_tokens_per_minute,
            self.output_tokens_per_minute,
            self.tokens_per_minute,
        )
    }
}

/// Every figure is a positive per-minute amount far below the limit's
/// bounds, so each converts.
fn limits_of(r: Option<u64>, i: Option<u64>, o: Option<u64>, t: Option<u64>) -> Limits {
    let mut limits = Limits::unlimited();
    let dims = [
        (super::Dimension::Requests, r),
        (super::Dimension::InputTokens, i),
        (super::Dimension::OutputTokens, o),
        (super::Dimension::Tokens, t),
    ];
    for (dim, amount) in dims {
        if let Some(limit) = amount.and_then(|a| Limit::per_minute(a).ok()) {
            limits = limits.with(dim, limit);
        }
    }
    limits
}

/// One provider tier's limits, per model class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Preset {
    name: &'static str,
    provider: Provider,
    tier: u8,
    classes: &'static [ClassLimits],
}

impl Preset {
    /// Its name, as a config file gives it: `anthropic-tier-1` …
    /// `anthropic-tier-4`, `openai-tier-1` … `openai-tier-5`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The provider.
    #[must_use]
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The usage tier.
    #[must_use]
    pub fn tier(&self) -> u8 {
        self.tier
    }

    /// The model classes it lists.
    #[must_use]
    pub fn classes(&self) -> &'static [ClassLimits] {
        self.classes
    }

    /// The limits for models of no listed class: in each dimension the
    /// lowest of the classes' — a model the preset does not know is
    /// limited as the tightest one it does, never left unlimited.
    #[must_use]
    pub fn default_limits(&self) -> Limits {
        let min = |f: fn(&ClassLimits) -> Option<u64>| self.classes.iter().filter_map(f).min();
        limits_of(
            min(|c| Some(c.requests_per_minute)),
            min(|c| c.input_tokens_per_minute),
            min(|c| c.output_tokens_per_minute),
            min(|c| c.tokens_per_minute),
        )
    }

    /// The limits a request for `model` is admitted by: its class's (the
    /// longest matching prefix), else [`default_limits`](Self::default_limits).
    #[must_use]
    pub fn limits_for(&self, model: &str) -> Limits {
        self.classes
            .iter()
            .filter(|c| model.starts_with(c.prefix))
            .max_by_key(|c| c.prefix.len())
            .map_or_else(|| self.default_limits(), ClassLimits::limits)
    }

    /// Sets `builder`'s limits to [`default_limits`](Self::default_limits)
    /// and adds each class as [`model_limits`](RateLimitBuilder::model_limits).
    /// Model limits added after this call replace a class of the same
    /// prefix (of equal prefixes the last added wins), and a longer prefix
    /// wins over a class for the models it matches.
    pub fn apply(&self, builder: RateLimitBuilder) -> RateLimitBuilder {
        let mut builder = builder.limits(self.default_limits());
        for class in self.classes {
            builder = builder.model_limits(class.prefix, class.limits());
        }
        builder
    }
}

const fn a(prefix: &'static str, rpm: u64, itpm: u64, otpm: u64) -> ClassLimits {
    ClassLimits::anthropic(prefix, rpm, itpm, otpm)
}

const fn o(prefix: &'static str, rpm: u64, tpm: u64) -> ClassLimits {
    ClassLimits::openai(prefix, rpm, tpm)
}

/// Anthropic's standard tiers: Claude Opus 4.x, Sonnet 4.x, Haiku 4.5,
/// Sonnet 3.7, Haiku 3.5 and Haiku 3 (ITPM counts uncached input and
/// cache writes, not cache reads).
const ANTHROPIC: [&[ClassLimits]; 4] = [
    &[
        a("claude-opus-4", 50, 30_000, 8_000),
        a("claude-sonnet-4", 50, 30_000, 8_000),
        a("claude-haiku-4", 50, 50_000, 10_000),
        a("claude-3-7-sonnet", 50, 20_000, 8_000),
        a("claude-3-5-haiku", 50, 50_000, 10_000),
        a("claude-3-haiku", 50, 50_000, 10_000),
    ],
    &[
        a("claude-opus-4", 1_000, 450_000, 90_000),
        a("claude-sonnet-4", 1_000, 450_000, 90_000),
        a("claude-haiku-4", 1_000, 450_000, 90_000),
        a("claude-3-7-sonnet", 1_000, 40_000, 16_000),
        a("claude-3-5-haiku", 1_000, 100_000, 20_000),
        a("claude-3-haiku", 1_000, 100_000, 20_000),
    ],
    &[
        a("claude-opus-4", 2_000, 800_000, 160_000),
        a("claude-sonnet-4", 2_000, 800_000, 160_000),
        a("claude-haiku-4", 2_000, 1_000_000, 200_000),
        a("claude-3-7-sonnet", 2_000, 80_000, 32_000),
        a("claude-3-5-haiku", 2_000, 200_000, 40_000),
        a("claude-3-haiku", 2_000, 200_000, 40_000),
    ],
    &[
        a("claude-opus-4", 4_000, 2_000_000, 400_000),
        a("claude-sonnet-4", 4_000, 2_000_000, 400_000),
        a("claude-haiku-4", 4_000, 4_000_000, 800_000),
        a("claude-3-7-sonnet", 4_000, 200_000, 80_000),
        a("claude-3-5-haiku", 4_000, 400_000, 80_000),
        a("claude-3-haiku", 4_000, 400_000, 80_000),
    ],
];

/// OpenAI's usage tiers for the GPT-4o, GPT-4.1 and o3 / o4-mini models.
const OPENAI: [&[ClassLimits]; 5] = [
    &[
        o("gpt-4o", 500, 30_000),
        o("gpt-4o-mini", 500, 200_000),
        o("gpt-4.1", 500, 30_000),
        o("gpt-4.1-mini", 500, 200_000),
        o("gpt-4.1-nano", 500, 200_000),
        o("o3", 500, 30_000),
        o("o4-mini", 1_000, 100_000),
    ],
    &[
        o("gpt-4o", 5_000, 450_000),
        o("gpt-4o-mini", 5_000, 2_000_000),
        o("gpt-4.1", 5_000, 450_000),
        o("gpt-4.1-mini", 5_000, 2_000_000),
        o("gpt-4.1-nano", 5_000, 2_000_000),
        o("o3", 5_000, 450_000),
        o("o4-mini", 2_000, 2_000_000),
    ],
    &[
        o("gpt-4o", 5_000, 800_000),
        o("gpt-4o-mini", 5_000, 4_000_000),
        o("gpt-4.1", 5_000, 800_000),
        o("gpt-4.1-mini", 5_000, 4_000_000),
        o("gpt-4.1-nano", 5_000, 4_000_000),
        o("o3", 5_000, 800_000),
        o("o4-mini", 5_000, 4_000_000),
    ],
    &[
        o("gpt-4o", 10_000, 2_000_000),
        o("gpt-4o-mini", 10_000, 10_000_000),
        o("gpt-4.1", 10_000, 2_000_000),
        o("gpt-4.1-mini", 10_000, 10_000_000),
        o("gpt-4.1-nano", 10_000, 10_000_000),
        o("o3", 10_000, 2_000_000),
        o("o4-mini", 10_000, 10_000_000),
    ],
    &[
        o("gpt-4o", 10_000, 30_000_000),
        o("gpt-4o-mini", 30_000, 150_000_000),
        o("gpt-4.1", 10_000, 30_000_000),
        o("gpt-4.1-mini", 30_000, 150_000_000),
        o("gpt-4.1-nano", 30_000, 150_000_000),
        o("o3", 10_000, 30_000_000),
        o("o4-mini", 30_000, 150_000_000),
    ],
];

const NAMES: [&str; 9] = [
    "anthropic-tier-1",
    "anthropic-tier-2",
    "anthropic-tier-3",
    "anthropic-tier-4",
    "openai-tier-1",
    "openai-tier-2",
    "openai-tier-3",
    "openai-tier-4",
    "openai-tier-5",
];

/// Anthropic's tier `tier` (1–4).
#[must_use]
pub fn anthropic(tier: u8) -> Option<Preset> {
    let classes = ANTHROPIC.get(usize::from(tier).checked_sub(1)?)?;
    Some(Preset {
        name: NAMES[usize::from(tier) - 1],
        provider: Provider::Anthropic,
        tier,
        classes,
    })
}

/// OpenAI's tier `tier` (1–5).
#[must_use]
pub fn openai(tier: u8) -> Option<Preset> {
    let classes = OPENAI.get(usize::from(tier).checked_sub(1)?)?;
    Some(Preset {
        name: NAMES[3 + usize::from(tier)],
        provider: Provider::OpenAi,
        tier,
        classes,
    })
}

/// The preset of this name (see [`names`]).
#[must_use]
pub fn by_name(name: &str) -> Option<Preset> {
    let tier = |rest: &str| rest.parse::<u8>().ok();
    if let Some(rest) = name.strip_prefix("anthropic-tier-") {
        return anthropic(tier(rest)?);
    }
    openai(tier(name.strip_prefix("openai-tier-")?)?)
}

/// Every preset's name.
#[must_use]
pub fn names() -> &'static [&'static str] {
    &NAMES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::Dimension;

    fn amount(l: &Limits, d: Dimension) -> Option<u64> {
        l.get(d).map(|l| l.amount())
    }

    #[test]
    fn every_name_resolves_to_itself() {
        for name in names() {
            let p = by_name(name).expect("listed");
            assert_eq!(p.name(), *name);
        }
        for bad in [
            "anthropic-tier-0",
            "anthropic-tier-5",
            "openai-tier-6",
            "openai",
            "",
        ] {
            assert!(by_name(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn longest_prefix_wins_and_unknown_models_get_the_tightest() {
        let p = openai(1).expect("tier 1");
        let mini = p.limits_for("gpt-4o-mini-2024-07-18");
        assert_eq!(amount(&mini, Dimension::Tokens), Some(200_000));
        let big = p.limits_for("gpt-4o-2024-08-06");
        assert_eq!(amount(&big, Dimension::Tokens), Some(30_000));
        let unknown = p.limits_for("some-other-model");
        assert_eq!(amount(&unknown, Dimension::Tokens), Some(30_000));
        assert_eq!(amount(&unknown, Dimension::Requests), Some(500));
        assert_eq!(amount(&unknown, Dimension::InputTokens), None);
    }
}
