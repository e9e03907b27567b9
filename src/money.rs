//! Amounts of money held exactly ([`Money`]), what a model's tokens cost
//! ([`Price`]), and the table that prices each model ([`PriceTable`]).
//!
//! Money is an integer count of nano-units (10⁻⁹ of the currency unit), so
//! sums of many small charges never drift as floating point would: a
//! million requests of 0.000_075 each sum to exactly 75. Prices are per
//! million tokens; the cost of `n` tokens is `n × price ÷ 10⁶` nano-units,
//! rounded *up* (computed in 128 bits, so it never overflows), so a charge
//! is never less than the exact one — by at most one nano-unit per
//! component.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::provider::{Api, Usage};

/// An amount of money in the table's currency (US dollars for the
/// presets), held as an integer count of nano-units (10⁻⁹).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(u64);

impl Money {
    /// Nothing.
    pub const ZERO: Money = Money(0);

    /// `n` nano-units (10⁻⁹ of the currency unit).
    #[must_use]
    pub const fn from_nanos(n: u64) -> Self {
        Money(n)
    }

    /// `n` micro-units (10⁻⁶): `Money::from_micros(75_000)` is 0.075.
    /// Saturates at [`Money::MAX`].
    #[must_use]
    pub const fn from_micros(n: u64) -> Self {
        Money(n.saturating_mul(1_000))
    }

    /// `n` cents (10⁻²). Saturates at [`Money::MAX`].
    #[must_use]
    pub const fn from_cents(n: u64) -> Self {
        Money(n.saturating_mul(10_000_000))
    }

    /// `n` whole units (dollars). Saturates at [`Money::MAX`].
    #[must_use]
    pub const fn from_units(n: u64) -> Self {
        Money(n.saturating_mul(1_000_000_000))
    }

    /// The largest amount (about 18.4 billion units).
    pub const MAX: Money = Money(u64::MAX);

    /// The amount in nano-units.
    #[must_use]
    pub const fn nanos(self) -> u64 {
        self.0
    }

    /// The sum, saturating at [`Money::MAX`].
    #[must_use]
    pub const fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    /// What `tokens` cost at `per_million` per million tokens, rounded up.
    #[must_use]
    pub fn for_tokens(per_million: Money, tokens: u64) -> Money {
        let exact = u128::from(per_million.0) * u128::from(tokens);
        let nanos = exact.div_ceil(1_000_000);
        Money(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// `units.nnnnnnnnn`, trailing zeros of the fraction dropped (at least two
/// digits kept): `0.075`, `15.00`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = self.0 / 1_000_000_000;
        let frac = format!("{:09}", self.0 % 1_000_000_000);
        let keep = frac.trim_end_matches('0').len().max(2);
        write!(f, "{units}.{}", &frac[..keep])
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self})")
    }
}

/// What one model's tokens cost, per million tokens of each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Price {
    /// Input tokens read neither from nor into the prompt cache.
    pub input: Money,
    /// Output tokens.
    pub output: Money,
    /// Input tokens written to the prompt cache (Anthropic's 5-minute cache
    /// write; OpenAI charges no premium, so its presets use `input`).
    pub cache_write: Money,
    /// Input tokens read from the prompt cache.
    pub cache_read: Money,
}

impl Price {
    /// Per million tokens: input, output, cache write, cache read.
    #[must_use]
    pub const fn per_mtok(
        input: Money,
        output: Money,
        cache_write: Money,
        cache_read: Money,
    ) -> Self {
        Price {
            input,
            output,
            cache_write,
            cache_read,
        }
    }

    /// The same, each in micro-units per million tokens (`3_000_000` is 3.00).
    #[must_use]
    pub const fn micros_per_mtok(
        input: u64,
        output: u64,
        cache_write: u64,
        cache_read: u64,
    ) -> Self {
        Price::per_mtok(
            Money::from_micros(input),
            Money::from_micros(output),
            Money::from_micros(cache_write),
            Money::from_micros(cache_read),
        )
    }

    /// What `usage` cost. `api` says how its input counts: OpenAI's input
    /// tokens *include* the cached ones (so only the rest are priced as
    /// input); Anthropic's exclude them. With no `api` known, input is
    /// priced as Anthropic reports it — which over-counts an OpenAI answer
    /// (its cached tokens priced twice), never under-counts.
    #[must_use]
    pub fn cost(&self, usage: &Usage, api: Option<Api>) -> Money {
        let input = match api {
            Some(Api::OpenAiChat) => usage
                .input_tokens
                .saturating_sub(usage.cache_read_input_tokens),
            _ => usage.input_tokens,
        };
        Money::for_tokens(self.input, input)
            .saturating_add(Money::for_tokens(self.output, usage.output_tokens))
            .saturating_add(Money::for_tokens(
                self.cache_write,
                usage.cache_creation_input_tokens,
            ))
            .saturating_add(Money::for_tokens(
                self.cache_read,
                usage.cache_read_input_tokens,
            ))
    }

    /// The estimate before the answer: `input` tokens at the higher of the
    /// input and cache-write prices (the request does not say which it
    /// will be), `output` tokens at the output price.
    #[must_use]
    pub fn estimate(&self, input: u64, output: u64) -> Money {
        Money::for_tokens(self.input.max(self.cache_write), input)
            .saturating_add(Money::for_tokens(self.output, output))
    }

    /// What a request estimated at `input` and `output` tokens is charged
    /// once answered with `usage`: the reported input (the estimate when
    /// none was reported), and the output — at least the estimate when the
    /// body was cut off (`complete` false: the tokens generated after the
    /// last report were billed too). The one rule for every counter in
    /// money: budgets and key pools' calendar quotas.
    #[must_use]
    pub(crate) fn settled(
        &self,
        (input, output): (u64, u64),
        usage: &Usage,
        complete: bool,
        api: Option<Api>,
    ) -> Money {
        let output = if complete {
            usage.output_tokens
        } else {
            usage.output_tokens.max(output)
        };
        let input = if usage.total_input_tokens() > 0 {
            let only_input = Usage {
                output_tokens: 0,
                ..*usage
            };
            self.cost(&only_input, api)
        } else {
            self.estimate(input, 0)
        };
        input.saturating_add(Money::for_tokens(self.output, output))
    }
}

/// What a model the table does not know costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownModel {
    /// Refuse the request with [`UnpricedModel`](crate::error::UnpricedModel)
    /// when a cap in money applies to it (the default: a budget in money
    /// must never under-count, and no price is a guess that may).
    Refuse,
    /// Price it at this price.
    Price(Price),
}

/// When the presets were written down (see [`PriceTable::presets`]).
pub const PRESETS_AS_OF: &str = "2026-12-02";

/// A price per model, in one currency.
///
/// A model matches an entry when its name is
/// - the entry's name exactly;
/// - the entry's name, `-`, then a version of digits and `-` only (a date
///   or a minor version): `claude-sonnet-4-5-20250929` and
///   `claude-sonnet-4-5` match `claude-sonnet-4-5`; `gpt-4o-2024-08-06`
///   matches `gpt-4o`; but `gpt-4o-mini` does not match `gpt-4o`, nor
///   `o3-pro` `o3` (a different model, at a different price);
/// - or, for entries added with [`insert_prefix`](Self::insert_prefix),
///   any name that starts with it.
///
/// The longest matching entry wins, an exact name before all. A model that
/// matches none is priced by the [`UnknownModel`] rule (refused by
/// default).
#[derive(Clone, Debug)]
pub struct PriceTable {
    exact: HashMap<Arc<str>, Price>,
    versioned: Vec<(Arc<str>, Price)>,
    prefixes: Vec<(Arc<str>, Price)>,
    unknown: UnknownModel,
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable::empty()
    }
}

impl PriceTable {
    /// A table with no entries; unknown models are refused.
    #[must_use]
    pub fn empty() -> Self {
        PriceTable {
            exact: HashMap::new(),
            versioned: Vec::new(),
            prefixes: Vec::new(),
            unknown: UnknownModel::Refuse,
        }
    }

    /// The providers' list prices in US dollars for the Anthropic Claude
    /// (Opus, Sonnet, Haiku) and OpenAI GPT-4o, GPT-4.1 and o-series
    /// models, standard tier, as written down on [`PRESETS_AS_OF`].
    ///
    /// Not covered: long-context premiums (Sonnet's input over 200K
    /// tokens), batch discounts, Anthropic's 1-hour cache writes (priced
    /// here as 5-minute writes, which cost less), regional or priority
    /// tiers. The figures were written from the providers' pricing pages
    /// as the author knew them, not fetched on that day: check them
    /// against your invoice, and override any with
    /// [`insert`](Self::insert).
    #[must_use]
    pub fn presets() -> Self {
        let mut t = PriceTable::empty();
        for (name, price) in PRESETS {
            t = t.insert(*name, *price);
        }
        t
    }

    /// Sets the price of `model` (and its dated versions, see above),
    /// replacing one set before.
    #[must_use]
    pub fn insert(mut self, model: impl Into<Arc<str>>, price: Price) -> Self {
        let model = model.into();
        self.versioned.retain(|(m, _)| *m != model);
        self.versioned.push((Arc::clone(&model), price));
        self.exact.insert(model, price);
        self
    }

    /// Sets the price of every model whose name starts with `prefix`
    /// (longer entries still win).
    #[must_use]
    pub fn insert_prefix(mut self, prefix: impl Into<Arc<str>>, price: Price) -> Self {
        let prefix = prefix.into();
        self.prefixes.retain(|(m, _)| *m != prefix);
        self.prefixes.push((prefix, price));
        self
    }

    /// What a model no entry matches costs (default
    /// [`UnknownModel::Refuse`]).
    #[must_use]
    pub fn unknown(mut self, rule: UnknownModel) -> Self {
        self.unknown = rule;
        self
    }

    /// The price of `model`: its entry, else the unknown-model price, else
    /// `None` (refuse).
    #[must_use]
    pub fn price(&self, model: Option<&str>) -> Option<Price> {
        let found = model.and_then(|m| self.lookup(m));
        match (found, self.unknown) {
            (Some(p), _) => Some(p),
            (None, UnknownModel::Price(p)) => Some(p),
            (None, UnknownModel::Refuse) => None,
        }
    }

    fn lookup(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.exact.get(model) {
            return Some(*p);
        }
        let versioned = self.versioned.iter().filter(|(name, _)| {
            model
                .strip_prefix(&**name)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|v| {
                    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                })
        });
        let prefixed = self
            .prefixes
            .iter()
            .filter(|(name, _)| model.starts_with(&**name));
        versioned
            .chain(prefixed)
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| *p)
    }
}

const fn usd(input_micros: u64, output_micros: u64, write_micros: u64, read_micros: u64) -> Price {
    Price::micros_per_mtok(input_micros, output_micros, write_micros, read_micros)
}

/// Standard list prices, US dollars per million tokens (in micro-dollars
/// here): input, output, cache write, cache read.
const PRESETS: &[(&str, Price)] = &[
    // Anthropic: cache writes (5 minutes) at 1.25× input, reads at 0.1×.
    (
        "claude-opus-4-5",
        usd(5_000_000, 25_000_000, 6_250_000, 500_000),
    ),
    (
        "claude-opus-4-1",
        usd(15_000_000, 75_000_000, 18_750_000, 1_500_000),
    ),
    (
        "claude-opus-4",
        usd(15_000_000, 75_000_000, 18_750_000, 1_500_000),
    ),
    (
        "claude-3-opus",
        usd(15_000_000, 75_000_000, 18_750_000, 1_500_000),
    ),
    (
        "claude-sonnet-4-5",
        usd(3_000_000, 15_000_000, 3_750_000, 300_000),
    ),
    (
        "claude-sonnet-4",
        usd(3_000_000, 15_000_000, 3_750_000, 300_000),
    ),
    (
        "claude-3-7-sonnet",
        usd(3_000_000, 15_000_000, 3_750_000, 300_000),
    ),
    (
        "claude-3-5-sonnet",
        usd(3_000_000, 15_000_000, 3_750_000, 300_000),
    ),
    (
        "claude-haiku-4-5",
        usd(1_000_000, 5_000_000, 1_250_000, 100_000),
    ),
    (
        "claude-3-5-haiku",
        usd(800_000, 4_000_000, 1_000_000, 80_000),
    ),
    ("claude-3-haiku", usd(250_000, 1_250_000, 300_000, 30_000)),
    // OpenAI: no cache-write premium; cached input at the cached price.
    ("gpt-4o", usd(2_500_000, 10_000_000, 2_500_000, 1_250_000)),
    // The first gpt-4o snapshot kept its launch price.
    (
        "gpt-4o-2024-05-13",
        usd(5_000_000, 15_000_000, 5_000_000, 5_000_000),
    ),
    ("gpt-4o-mini", usd(150_000, 600_000, 150_000, 75_000)),
    ("gpt-4.1", usd(2_000_000, 8_000_000, 2_000_000, 500_000)),
    ("gpt-4.1-mini", usd(400_000, 1_600_000, 400_000, 100_000)),
    ("gpt-4.1-nano", usd(100_000, 400_000, 100_000, 25_000)),
    ("o1", usd(15_000_000, 60_000_000, 15_000_000, 7_500_000)),
    ("o1-mini", usd(1_100_000, 4_400_000, 1_100_000, 550_000)),
    (
        "o1-pro",
        usd(150_000_000, 600_000_000, 150_000_000, 150_000_000),
    ),
    ("o3", usd(2_000_000, 8_000_000, 2_000_000, 500_000)),
    ("o3-mini", usd(1_100_000, 4_400_000, 1_100_000, 550_000)),
    (
        "o3-pro",
        usd(20_000_000, 80_000_000, 20_000_000, 20_000_000),
    ),
    ("o4-mini", usd(1_100_000, 4_400_000, 1_100_000, 275_000)),
];
