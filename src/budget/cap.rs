//! What a cap limits ([`Cap`]): an amount in tokens or money, over a
//! calendar [`Period`], counted separately for each value of its
//! [`Scope`] (each tenant, key or model — or all requests together).

use std::sync::Arc;

use super::calendar::Period;
use crate::error::{BudgetUnit, InvalidConfig};
use crate::money::Money;

/// Which requests share one counter of a cap: those of the same tenant,
/// key and/or model — the parts the scope names — or, for
/// [`Scope::GLOBAL`], every request.
///
/// ```
/// use tower_llm_resilience::budget::Scope;
/// // One counter per (tenant, model).
/// let per_tenant_model = Scope::TENANT.and(Scope::MODEL);
/// assert!(per_tenant_model.has_tenant() && per_tenant_model.has_model() && !per_tenant_model.has_key());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Scope {
    tenant: bool,
    key: bool,
    model: bool,
}

impl Scope {
    /// One counter for every request.
    pub const GLOBAL: Scope = Scope {
        tenant: false,
        key: false,
        model: false,
    };
    /// One counter per tenant.
    pub const TENANT: Scope = Scope {
        tenant: true,
        key: false,
        model: false,
    };
    /// One counter per API key ([`KeyId`](crate::KeyId)) the request
    /// carries here, above the rate limiter — so not a
    /// [`KeyPool`](crate::rate::KeyPool)'s key, which is chosen below
    /// (cap those with the pool's calendar quotas, in requests, tokens or
    /// [`spend`](crate::rate::CalendarQuota::spend)).
    pub const KEY: Scope = Scope {
        tenant: false,
        key: true,
        model: false,
    };
    /// One counter per model (the request's `model`, as sent).
    pub const MODEL: Scope = Scope {
        tenant: false,
        key: false,
        model: true,
    };

    /// Both scopes' parts: one counter per combination.
    #[must_use]
    pub const fn and(self, other: Scope) -> Scope {
        Scope {
            tenant: self.tenant || other.tenant,
            key: self.key || other.key,
            model: self.model || other.model,
        }
    }

    /// Whether counters are per tenant.
    #[must_use]
    pub const fn has_tenant(&self) -> bool {
        self.tenant
    }
    /// Whether counters are per key.
    #[must_use]
    pub const fn has_key(&self) -> bool {
        self.key
    }
    /// Whether counters are per model.
    #[must_use]
    pub const fn has_model(&self) -> bool {
        self.model
    }
}

/// The largest limit a cap takes: 2⁵³, so every store holds and compares
/// it exactly (Redis's Lua numbers are doubles). In money that is about
/// 9 million units.
pub const MAX_LIMIT: u64 = 1 << 53;

/// One spend cap: at most `limit` per `period`, for each counter of its
/// `scope`.
///
/// A token cap counts every token the model read or wrote: input, output,
/// cache writes and cache reads. A money cap counts their price
/// ([`PriceTable`](super::PriceTable)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cap {
    pub(crate) name: Arc<str>,
    pub(crate) scope: Scope,
    pub(crate) period: Period,
    pub(crate) unit: BudgetUnit,
    pub(crate) limit: u64,
}

impl Cap {
    /// At most `limit` tokens per `period` for each counter of `scope`.
    /// `name` (letters, digits, `.`, `_`, `-`; 1–64 bytes) labels its
    /// events and errors, and keys its counters.
    #[must_use]
    pub fn tokens(name: &str, scope: Scope, period: Period, limit: u64) -> Self {
        Cap {
            name: Arc::from(name),
            scope,
            period,
            unit: BudgetUnit::Tokens,
            limit,
        }
    }

    /// At most `limit` of money per `period` for each counter of `scope`.
    #[must_use]
    pub fn money(name: &str, scope: Scope, period: Period, limit: Money) -> Self {
        Cap {
            name: Arc::from(name),
            scope,
            period,
            unit: BudgetUnit::Nanos,
            limit: limit.nanos(),
        }
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its scope.
    #[must_use]
    pub fn scope(&self) -> Scope {
        self.scope
    }
    /// Its period.
    #[must_use]
    pub fn period(&self) -> Period {
        self.period
    }
    /// What it counts.
    #[must_use]
    pub fn unit(&self) -> BudgetUnit {
        self.unit
    }
    /// Its limit, in its unit (tokens, or nano-units of money).
    #[must_use]
    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(InvalidConfig::new(
                "cap.name",
                "1 to 64 bytes of letters, digits, '.', '_' or '-'",
            ));
        }
        if self.limit > MAX_LIMIT {
            return Err(InvalidConfig::new("cap.limit", "at most 2^53"));
        }
        self.period.validate()
    }
}
