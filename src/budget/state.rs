//! What one budget shares between its clones: the configuration, the
//! store, and the rules that turn a request into charges and a response
//! into settlements.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use http::{HeaderName, Request};

use super::cap::Cap;
use super::config::{BudgetEvent, Callback, FailurePolicy, Tenant};
use super::store::{BudgetStore, Charge, Counter, Reserve, Settlement, Spend, TenantId};
use crate::calendar::Clock;
use crate::error::{
    BackendError, BoxError, BudgetExceeded, BudgetUnit, TooManyBudgets, UnpricedModel,
};
use crate::money::{Price, PriceTable};
use crate::provider::{Api, Usage};
use crate::request::{KeyId, RequestMeta};

pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) caps: Vec<Cap>,
    pub(crate) prices: PriceTable,
    pub(crate) tenant_header: Option<HeaderName>,
    pub(crate) thresholds: Vec<f64>,
    pub(crate) callback: Option<Callback>,
    pub(crate) store: Arc<dyn BudgetStore>,
    pub(crate) default_output_tokens: u64,
    pub(crate) failure: FailurePolicy,
    pub(crate) clock: Clock,
    pub(crate) tag_by_tenant: bool,
    /// The store's clock minus ours, in seconds, as last learned.
    pub(crate) skew: AtomicI64,
    /// Store failures met (reserving or settling).
    pub(crate) store_errors: AtomicU64,
    /// The `llm_resilience.budget.spent` keys, one per cap.
    pub(crate) spent: crate::telemetry::record::CapKeys,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("name", &self.name)
            .field("caps", &self.caps)
            .field("failure", &self.failure)
            .field("store_errors", &self.store_errors())
            .finish_non_exhaustive()
    }
}

/// What a request is charged by.
pub(crate) struct Facts {
    tenant: TenantId,
    key: Option<KeyId>,
    model: Option<Arc<str>>,
    api: Option<Api>,
    input: u64,
    output: u64,
    price: Option<Price>,
}

/// How a sent request ended, for its settlement.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    /// Not sent, or refused by the provider: nothing spent.
    Refund,
    /// Sent, cost unknown: the estimate stands.
    Estimate,
    /// The provider reported usage; `complete` when the body ended whole.
    Usage { usage: Usage, complete: bool },
}

/// What `call` does with a reservation's answer.
pub(crate) enum Decision {
    Admit(Hold),
    Refuse(BoxError),
    /// The store's clock says another period: try again at its `now`.
    Clock(i64, Facts),
}

/// The charges a request holds until its response ends.
pub(crate) struct Hold {
    pub(crate) shared: Arc<Shared>,
    charges: Vec<Charge>,
    facts: Facts,
    pub(crate) sent: bool,
    done: bool,
}

impl Shared {
    /// Our clock, corrected by the store's.
    pub(crate) fn now(&self) -> i64 {
        self.clock
            .unix()
            .saturating_add(self.skew.load(Ordering::Relaxed))
    }

    pub(crate) fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::Relaxed)
    }

    pub(crate) fn learn_clock(&self, store_now: i64) {
        let ours = self.clock.unix();
        self.skew
            .store(store_now.saturating_sub(ours), Ordering::Relaxed);
    }

    /// The tenant, key, model and estimate of a request, or its refusal
    /// (a money cap and a model without a price).
    pub(crate) fn facts<B>(
        &self,
        req: &Request<B>,
        meta: Option<&RequestMeta>,
    ) -> Result<Facts, BoxError> {
        let key = KeyId::of(req);
        let named = req
            .extensions()
            .get::<Tenant>()
            .map(|t| Arc::clone(&t.0))
            .or_else(|| {
                let v = req
                    .headers()
                    .get(self.tenant_header.as_ref()?)?
                    .to_str()
                    .ok()?;
                (!v.is_empty()).then(|| Arc::from(v))
            });
        let tenant = match (named, key) {
            (Some(n), _) => TenantId::Named(crate::request::bounded_model(&n)),
            (None, Some(k)) => TenantId::Key(k),
            (None, None) => TenantId::Anonymous,
        };
        let model = meta
            .and_then(|m| m.model_arc())
            .map(crate::request::bounded_model);
        let (input, output) = match meta {
            Some(m) if m.is_parsed() => (
                m.input_tokens(),
                m.max_tokens().unwrap_or(self.default_output_tokens),
            ),
            Some(m) if m.body_len() == 0 => (0, 0),
            // Unreadable: bytes ÷ 3.5 rounded up, and the default output.
            Some(m) => (
                (m.body_len() as u64 * 2).div_ceil(7),
                self.default_output_tokens,
            ),
            None => (0, self.default_output_tokens),
        };
        let price = self.prices.price(model.as_deref());
        if price.is_none() && self.caps.iter().any(|c| c.unit == BudgetUnit::Nanos) {
            return Err(UnpricedModel::new(model.as_deref().map(str::to_owned)).into());
        }
        Ok(Facts {
            tenant,
            key,
            model,
            api: meta.and_then(RequestMeta::api),
            input,
            output,
            price,
        })
    }

    /// One charge per cap, for the periods holding `now`.
    pub(crate) fn charges(&self, f: &Facts, now: i64) -> Vec<Charge> {
        let tag: Arc<str> = if self.tag_by_tenant {
            let mut t = String::new();
            match &f.tenant {
                TenantId::Named(n) => super::store::escape(&mut t, n),
                TenantId::Key(k) => t = format!("k.{:016x}", k.word()),
                TenantId::Anonymous => t.push('-'),
            }
            Arc::from(format!("{}:{t}", self.name))
        } else {
            Arc::clone(&self.name)
        };
        let reservation = super::store::reservation_id();
        self.caps
            .iter()
            .map(|cap| {
                let counter = Counter {
                    cap: Arc::clone(&cap.name),
                    tenant: cap.scope.has_tenant().then(|| f.tenant.clone()),
                    key: cap.scope.has_key().then_some(f.key),
                    model: cap.scope.has_model().then(|| f.model.clone()),
                    period: cap.period,
                    window: cap.period.window(now),
                    tag: Arc::clone(&tag),
                };
                let amount = match cap.unit {
                    BudgetUnit::Nanos => {
                        f.price.map_or(0, |p| p.estimate(f.input, f.output).nanos())
                    }
                    _ => f.input.saturating_add(f.output),
                };
                Charge {
                    counter,
                    limit: cap.limit,
                    amount,
                    reservation,
                }
            })
            .collect()
    }

    /// What a reservation's answer means for the request.
    pub(crate) fn decide(
        self: &Arc<Self>,
        answer: Result<Reserve, BackendError>,
        charges: Vec<Charge>,
        facts: Facts,
    ) -> Decision {
        if let Ok(Reserve::Clock { now }) = answer {
            return Decision::Clock(now, facts);
        }
        let hold = |charges| Hold {
            shared: Arc::clone(self),
            charges,
            facts,
            sent: false,
            done: false,
        };
        match answer {
            Ok(Reserve::Reserved) => {
                for (c, cap) in charges.iter().zip(&self.caps) {
                    // The kind of scope, never the tenant or key itself.
                    tracing::debug!(
                        llm_resilience.budget.cap = &*cap.name,
                        llm_resilience.budget.scope = scope_kind(cap),
                        llm_resilience.budget.unit = unit_label(cap.unit),
                        llm_resilience.budget.amount = c.amount,
                        "budget: charged (reserved)"
                    );
                }
                Decision::Admit(hold(charges))
            }
            Ok(Reserve::Exceeded { index, used }) => {
                let Some(c) = charges.get(index) else {
                    return Decision::Refuse(
                        BackendError::new("store named no such charge").into(),
                    );
                };
                let unit = self
                    .caps
                    .get(index)
                    .map_or(BudgetUnit::Tokens, |cap| cap.unit);
                Decision::Refuse(
                    BudgetExceeded::new(
                        c.counter.cap.to_string(),
                        c.counter.scope_label(),
                        unit,
                        c.limit,
                        used,
                        c.amount,
                        c.counter.window.resets_at(),
                    )
                    .into(),
                )
            }
            Ok(Reserve::Clock { .. }) => unreachable_clock(),
            Ok(Reserve::Full { max_counters }) => {
                Decision::Refuse(TooManyBudgets::new(max_counters).into())
            }
            Err(e) => {
                self.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(budget = %self.name, error = %e, "budget store failed at admission");
                match self.failure {
                    FailurePolicy::FailClosed => Decision::Refuse(e.into()),
                    // Sent unreserved: nothing to settle.
                    _ => Decision::Admit(hold(Vec::new())),
                }
            }
        }
    }

    fn after_settle(&self, settlements: &[Settlement], result: Result<Vec<Spend>, BackendError>) {
        let spends = match result {
            Ok(s) => {
                for st in settlements {
                    let found = self
                        .caps
                        .iter()
                        .enumerate()
                        .find(|(_, c)| c.name == st.counter.cap);
                    if let Some((i, cap)) = found {
                        crate::telemetry::record::budget_spent(&self.spent, i, st.actual);
                        tracing::debug!(
                            llm_resilience.budget.cap = &*cap.name,
                            llm_resilience.budget.scope = scope_kind(cap),
                            llm_resilience.budget.unit = unit_label(cap.unit),
                            llm_resilience.budget.reserved = st.reserved,
                            llm_resilience.budget.amount = st.actual,
                            "budget: settled"
                        );
                    }
                }
                s
            }
            Err(e) => {
                self.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(budget = %self.name, error = %e, "budget store failed to settle");
                return;
            }
        };
        let Some(callback) = &self.callback else {
            return;
        };
        for (st, spend) in settlements.iter().zip(spends) {
            let Some(cap) = self.caps.iter().find(|c| c.name == st.counter.cap) else {
                continue;
            };
            for &t in &self.thresholds {
                let mark = threshold_amount(t, cap.limit);
                if spend.before < mark && spend.after >= mark {
                    callback(&BudgetEvent {
                        cap: Arc::clone(&cap.name),
                        scope: st.counter.scope_label(),
                        unit: cap.unit,
                        limit: cap.limit,
                        spent: spend.after,
                        threshold: t,
                        period: cap.period,
                        window: st.counter.window,
                    });
                }
            }
        }
    }
}

/// The kind of a cap's scope (`global`, `tenant`, `key+model`, …): what
/// events show instead of the tenant or key.
fn scope_kind(cap: &Cap) -> &'static str {
    let s = cap.scope;
    match (s.has_tenant(), s.has_key(), s.has_model()) {
        (false, false, false) => "global",
        (true, false, false) => "tenant",
        (false, true, false) => "key",
        (false, false, true) => "model",
        (true, true, false) => "tenant+key",
        (true, false, true) => "tenant+model",
        (false, true, true) => "key+model",
        (true, true, true) => "tenant+key+model",
    }
}

/// `llm_resilience.budget.unit`.
pub(crate) fn unit_label(unit: BudgetUnit) -> &'static str {
    match unit {
        BudgetUnit::Tokens => "tokens",
        BudgetUnit::Nanos => "nanos",
    }
}

fn unreachable_clock() -> Decision {
    Decision::Refuse(BackendError::new("clock answer handled above").into())
}

/// The smallest spend at or past `fraction` of `limit` (at least 1).
fn threshold_amount(fraction: f64, limit: u64) -> u64 {
    // Limits are at most 2^53: exact as f64.
    ((fraction * limit as f64).ceil() as u64).max(1)
}

impl Hold {
    pub(crate) fn charges(&self) -> &[Charge] {
        &self.charges
    }

    /// Settles every charge for `outcome` (at most once).
    pub(crate) fn settle(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) || self.charges.is_empty() {
            return;
        }
        let f = &self.facts;
        let settlements: Vec<Settlement> = self
            .charges
            .drain(..)
            .zip(&self.shared.caps)
            .map(|(c, cap)| {
                let actual = match outcome {
                    Outcome::Refund => 0,
                    Outcome::Estimate => c.amount,
                    Outcome::Usage { usage, complete } => actual(cap.unit, f, &usage, complete),
                };
                Settlement {
                    reserved: c.amount,
                    actual,
                    counter: c.counter,
                    reservation: c.reservation,
                }
            })
            .collect();
        let shared = Arc::clone(&self.shared);
        match self.shared.store.settle(settlements.clone()) {
            super::store::Answer::Now(r) => shared.after_settle(&settlements, r),
            super::store::Answer::Later(fut) => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        let r = fut.await;
                        shared.after_settle(&settlements, r);
                    });
                }
                Err(_) => shared.after_settle(
                    &settlements,
                    Err(BackendError::new("no runtime to settle on")),
                ),
            },
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Dropped after sending, the estimate stands; before, all back.
        let outcome = if self.sent {
            Outcome::Estimate
        } else {
            Outcome::Refund
        };
        self.settle(outcome);
    }
}

/// What a response with `usage` cost against a cap counting `unit`: the
/// reported input (the estimate when none was reported), and the output —
/// at least the estimate when the body was cut off (the tokens generated
/// after the last report were billed too).
fn actual(unit: BudgetUnit, f: &Facts, usage: &Usage, complete: bool) -> u64 {
    if unit == BudgetUnit::Nanos {
        return f.price.map_or(0, |p| {
            p.settled((f.input, f.output), usage, complete, f.api)
                .nanos()
        });
    }
    let output = if complete {
        usage.output_tokens
    } else {
        usage.output_tokens.max(f.output)
    };
    let input = if usage.total_input_tokens() == 0 {
        f.input
    } else if f.api == Some(Api::OpenAiChat) {
        // OpenAI's input already includes the cached tokens.
        usage
            .input_tokens
            .saturating_add(usage.cache_creation_input_tokens)
    } else {
        usage.total_input_tokens()
    };
    input.saturating_add(output)
}
