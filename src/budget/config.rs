//! The budget's configuration: [`BudgetBuilder`], the tenant a request is
//! charged to ([`Tenant`]), threshold events ([`BudgetEvent`]) and what to
//! do when the store fails ([`FailurePolicy`]).

use crate::calendar::Clock;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderName;

use super::BudgetLayer;
use super::calendar::{Period, Window};
use super::cap::Cap;
use super::state::Shared;
use super::store::{BudgetStore, DEFAULT_MAX_COUNTERS, MemoryBudgetStore};
use crate::error::{BudgetUnit, InvalidConfig};
use crate::money::PriceTable;

/// The tenant a request is charged to, set as a request extension (it
/// wins over the tenant header).
///
/// Without either, a request's tenant is its API key's
/// [`KeyId`](crate::KeyId); a request with neither shares one anonymous
/// tenant. Names over 256 bytes are kept as their first bytes and a hash
/// (as model names are).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tenant(pub Arc<str>);

impl Tenant {
    /// The tenant `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Tenant(name.into())
    }
}

/// What the budget does when its store fails or does not answer within
/// its timeout (a shared store, such as Redis). Named as the rate
/// limiter's [`redis::FailurePolicy`](crate::redis::FailurePolicy), which
/// adds a local fallback; a budget has none (a local share of a money cap
/// would let n processes spend n shares).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Refuse the request with the
    /// [`BackendError`](crate::error::BackendError) (the default: a budget
    /// guards money, and while the store is away nobody could tell how
    /// much is left).
    #[default]
    FailClosed,
    /// Send the request unreserved and uncounted: availability over the
    /// budget. Spend during the outage is not charged to any counter.
    FailOpen,
}

/// A threshold was crossed: a counter's settled spend reached `threshold`
/// of its cap's limit.
///
/// Fired once per crossing: by the settlement that took the spend from
/// below to at or above it. Spend only grows within a period, so the next
/// chance to cross again is the next period. No key material: `scope` is
/// made of names and [`KeyId`](crate::KeyId) labels.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BudgetEvent {
    /// The cap's name.
    pub cap: Arc<str>,
    /// Which counter of the cap (`tenant=acme model=…`, `key=1a2b3c4d`).
    pub scope: String,
    /// What the cap counts.
    pub unit: BudgetUnit,
    /// The limit.
    pub limit: u64,
    /// The spend now.
    pub spent: u64,
    /// The fraction crossed (0.8 by default).
    pub threshold: f64,
    /// The cap's period.
    pub period: Period,
    /// The period instance.
    pub window: Window,
}

impl BudgetEvent {
    /// When the period resets.
    #[must_use]
    pub fn resets_at(&self) -> SystemTime {
        self.window.resets_at()
    }
}

pub(crate) type Callback = Arc<dyn Fn(&BudgetEvent) + Send + Sync>;

/// Builds a [`BudgetLayer`]: its caps, prices, tenant source, thresholds,
/// store and failure policy.
///
/// ```
/// use tower_llm_resilience::budget::{BudgetLayer, Cap, Money, Period, PriceTable, Scope};
/// let layer = BudgetLayer::builder()
///     .prices(PriceTable::presets())
///     .cap(Cap::money("tenant-daily", Scope::TENANT, Period::day(), Money::from_units(50)))
///     .cap(Cap::tokens("key-monthly", Scope::KEY, Period::month(), 500_000_000))
///     .on_threshold(|e| eprintln!("{} {} at {:.0}%", e.cap, e.scope, e.threshold * 100.0))
///     .build()
///     .expect("valid");
/// # let _ = layer;
/// ```
pub struct BudgetBuilder {
    name: Arc<str>,
    caps: Vec<Cap>,
    prices: PriceTable,
    tenant_header: Option<HeaderName>,
    thresholds: Vec<f64>,
    callback: Option<Callback>,
    store: Option<Arc<dyn BudgetStore>>,
    max_counters: usize,
    default_output_tokens: u64,
    failure: FailurePolicy,
    clock: Option<Clock>,
}

impl fmt::Debug for BudgetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetBuilder")
            .field("name", &self.name)
            .field("caps", &self.caps)
            .field("tenant_header", &self.tenant_header)
            .field("thresholds", &self.thresholds)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

/// The most caps one budget takes.
pub const MAX_CAPS: usize = 32;

impl Default for BudgetBuilder {
    fn default() -> Self {
        BudgetBuilder {
            name: Arc::from("budget"),
            caps: Vec::new(),
            prices: PriceTable::empty(),
            tenant_header: None,
            thresholds: vec![0.8],
            callback: None,
            store: None,
            max_counters: DEFAULT_MAX_COUNTERS,
            default_output_tokens: 4096,
            failure: FailurePolicy::FailClosed,
            clock: None,
        }
    }
}

impl BudgetBuilder {
    /// The budget's name (default `budget`; same rules as a cap's name):
    /// stores key its counters under it, so budgets sharing a store must
    /// have different names, and processes sharing one budget the same.
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.name = Arc::from(name);
        self
    }

    /// Adds a cap. Every cap that applies to a request must have room for
    /// it.
    #[must_use]
    pub fn cap(mut self, cap: Cap) -> Self {
        self.caps.push(cap);
        self
    }

    /// The prices money caps charge by (default: empty, refusing unknown
    /// models; see [`PriceTable::presets`]).
    #[must_use]
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// A request header naming the tenant (the [`Tenant`] extension wins
    /// over it; an empty or non-UTF-8 value counts as none).
    #[must_use]
    pub fn tenant_header(mut self, name: HeaderName) -> Self {
        self.tenant_header = Some(name);
        self
    }

    /// The fractions of a limit at which [`on_threshold`](Self::on_threshold)
    /// fires (default `[0.8]`; each in `(0, 1]`, at most 8).
    #[must_use]
    pub fn thresholds(mut self, fractions: &[f64]) -> Self {
        self.thresholds = fractions.to_vec();
        self
    }

    /// Called once per threshold crossing, on the task that settled the
    /// response (keep it short; hand heavy work to a channel).
    #[must_use]
    pub fn on_threshold(mut self, f: impl Fn(&BudgetEvent) + Send + Sync + 'static) -> Self {
        self.callback = Some(Arc::new(f));
        self
    }

    /// Where counters live (default: a [`MemoryBudgetStore`] of
    /// [`max_counters`](Self::max_counters)).
    #[must_use]
    pub fn store(mut self, store: impl BudgetStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The default memory store's bound (default 100,000 counters).
    #[must_use]
    pub fn max_counters(mut self, n: usize) -> Self {
        self.max_counters = n;
        self
    }

    /// The output estimate of a request that names no `max_tokens`
    /// (default 4,096, as the rate limiter's).
    #[must_use]
    pub fn default_output_tokens(mut self, tokens: u64) -> Self {
        self.default_output_tokens = tokens;
        self
    }

    /// What to do when the store fails (default [`FailurePolicy::FailClosed`]).
    #[must_use]
    pub fn on_store_error(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// The wall clock periods are read from (default `SystemTime::now`).
    /// A shared store may correct it by its own (see
    /// [`Reserve::Clock`](super::Reserve::Clock)).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The layer.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] naming the setting: no cap or over [`MAX_CAPS`]
    /// (`caps`), two caps of one name (`cap.name`), a bad cap
    /// (`cap.name`, `cap.limit`, `cap.period`), a bad budget name
    /// (`name`), thresholds outside `(0, 1]` or over 8 (`thresholds`),
    /// `max_counters` of 0.
    pub fn build(self) -> Result<BudgetLayer, InvalidConfig> {
        if self.caps.is_empty() || self.caps.len() > MAX_CAPS {
            return Err(InvalidConfig::new("caps", "between 1 and 32 caps"));
        }
        Cap::tokens(&self.name, super::Scope::GLOBAL, Period::day(), 0)
            .validate()
            .map_err(|_| {
                InvalidConfig::new("name", "1 to 64 bytes of letters, digits, '.', '_' or '-'")
            })?;
        for (i, cap) in self.caps.iter().enumerate() {
            cap.validate()?;
            if self.caps[..i].iter().any(|c| c.name == cap.name) {
                return Err(InvalidConfig::new("cap.name", "two caps share a name"));
            }
        }
        if self.thresholds.len() > 8
            || self
                .thresholds
                .iter()
                .any(|t| !(t.is_finite() && *t > 0.0 && *t <= 1.0))
        {
            return Err(InvalidConfig::new(
                "thresholds",
                "at most 8 fractions, each in (0, 1]",
            ));
        }
        if self.max_counters == 0 {
            return Err(InvalidConfig::new("max_counters", "must be at least 1"));
        }
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryBudgetStore::new(self.max_counters)));
        // Per tenant throughout: each tenant's counters may live apart.
        let tag_by_tenant = self.caps.iter().all(|c| c.scope.has_tenant());
        let spent = crate::telemetry::record::CapKeys::new(
            self.caps
                .iter()
                .map(|c| (&c.name, super::state::unit_label(c.unit))),
        );
        let shared = Shared {
            spent,
            name: self.name,
            caps: self.caps,
            prices: self.prices,
            tenant_header: self.tenant_header,
            thresholds: self.thresholds,
            callback: self.callback,
            store,
            default_output_tokens: self.default_output_tokens,
            failure: self.failure,
            clock: self.clock.unwrap_or_default(),
            tag_by_tenant,
            skew: Default::default(),
            store_errors: Default::default(),
        };
        Ok(BudgetLayer::from_shared(Arc::new(shared)))
    }
}
