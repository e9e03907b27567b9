//! Spend budgets: caps in tokens or money, per tenant, API key or model,
//! per calendar day or month — reserved at admission, reconciled from the
//! usage the provider reports.
//!
//! # How a request is charged
//!
//! At the call, the request's cost is *estimated* from its parsed
//! [`RequestMeta`](crate::RequestMeta) as the rate limiter estimates it:
//! input tokens from the text (bytes ÷ 3.5, which errs high), output
//! tokens from `max_tokens` (else 4,096). A money cap prices that with the
//! model's [`Price`] (input at the higher of the input and cache-write
//! prices). The estimate is then *reserved* against every [`Cap`] that
//! applies, atomically — all or none ([`BudgetStore::reserve`]). If any
//! cap has no room, the request fails at once with
//! [`BudgetExceeded`](crate::error::BudgetExceeded), which names the cap,
//! the counter (as labels, never key material) and `resets_at`, the end
//! of the period.
//!
//! When the response body ends, the reservation is *reconciled* (the
//! rate limiter's rule):
//!
//! | the request… | is charged |
//! |---|---|
//! | answered 2xx with usage, body complete | the reported usage, priced (input, output, cache write, cache read apart) |
//! | answered 2xx, stream cut after some usage | the reported input; for output the larger of the reported and the estimate |
//! | answered 2xx without usage | the estimate |
//! | answered non-2xx (429, 5xx, 400…) | nothing (providers do not bill refused requests) |
//! | failed after sending (transport error, dropped while in flight) | the estimate |
//! | dropped before it was sent | nothing |
//!
//! So a counter passes its limit only by what requests admitted under it
//! cost beyond their estimates: concurrent requests overshoot a cap by at
//! most what is in flight, in one process or — with a shared store
//! (`redis::RedisBudgetStore`, feature `redis`) — in many.
//!
//! # Scopes, tenants, periods
//!
//! A cap keeps one counter per value of its [`Scope`]: per tenant, per
//! key ([`KeyId`](crate::KeyId)), per model, any combination, or one for
//! all. The tenant is the [`Tenant`] request extension, else the
//! configured tenant header, else the API key's `KeyId`. A [`Period`] is a
//! calendar day or month from local midnight at a fixed UTC offset; the
//! clock is injectable ([`BudgetBuilder::clock`]), and a shared store's
//! clock is the authority over every client's ([`Reserve::Clock`]).
//!
//! The keys of a [`KeyPool`](crate::rate::KeyPool) are chosen below the
//! budget, in the rate limiter; their caps in money are the pool's
//! [`CalendarQuota::spend`](crate::rate::CalendarQuota::spend), priced by
//! the same [`PriceTable`] and settled by the same rule, so that a key out
//! of money is skipped for another rather than refused.
//!
//! # Thresholds
//!
//! [`BudgetBuilder::on_threshold`] is called when a counter's settled
//! spend crosses a fraction of its limit (80% by default) — once per
//! crossing: by the one settlement that went from below to at or above it
//! (in a shared store, across every process). The [`BudgetEvent`] carries
//! the cap, the scope's labels, the limit, the spend and the period.
//!
//! # Bounds
//!
//! The [`MemoryBudgetStore`] holds at most `max_counters` counters
//! (default 100,000) and never forgets spend of a current period: it
//! evicts only counters of ended periods or holding nothing, and refuses a
//! request needing a new counter with
//! [`TooManyBudgets`](crate::error::TooManyBudgets) when nothing may go.
//!
//! # Where it sits
//!
//! Below retry and fallback, above the rate limiter: it must see the
//! model that is really sent (after a fallback's rewrite), and each
//! attempt a retry makes is charged on its own (each reached the
//! provider, and a refused one is refunded) — so the budget counts what
//! the provider bills. The retry layer does not retry `BudgetExceeded`.
//!
//! What lives where: `src/money.rs` (Money, Price, PriceTable and presets,
//! shared with key pools' calendar quotas),
//! `calendar.rs` (periods), `cap.rs` (Cap, Scope), `store.rs` (the store
//! abstraction and memory store), `state.rs` (charging and settling),
//! `config.rs` (the builder), `layer.rs`, `service.rs`, `future.rs`.

mod calendar;
mod cap;
mod config;
mod future;
mod layer;
mod service;
mod state;
mod store;

pub use crate::calendar::Clock;
pub use crate::error::BudgetUnit;
pub use crate::money::{Money, PRESETS_AS_OF, Price, PriceTable, UnknownModel};
pub use calendar::{MAX_UTC_OFFSET_MINUTES, Period, PeriodKind, Window};
pub use cap::{Cap, MAX_LIMIT, Scope};
pub use config::{BudgetBuilder, BudgetEvent, FailurePolicy, MAX_CAPS, Tenant};
pub use future::ResponseFuture;
pub use layer::BudgetLayer;
pub use service::Budget;
pub use store::{
    Answer, Balance, BudgetStore, Charge, Counter, DEFAULT_MAX_COUNTERS, MemoryBudgetStore,
    Reserve, Settlement, Spend, StoreFuture,
};

#[cfg(test)]
mod tests;
