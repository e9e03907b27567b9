//! The [`BudgetLayer`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::Budget;
use super::config::BudgetBuilder;
use super::state::Shared;

/// Applies spend caps ([`Budget`]); made by
/// [`BudgetLayer::builder`](super::BudgetLayer::builder). Every service it makes
/// (and every clone) shares one budget.
#[derive(Clone)]
pub struct BudgetLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for BudgetLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetLayer")
            .field("name", &self.shared.name)
            .field("caps", &self.shared.caps)
            .field("failure", &self.shared.failure)
            .finish_non_exhaustive()
    }
}

impl BudgetLayer {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        BudgetLayer { shared }
    }

    /// A builder of the budget: caps, prices, tenants, thresholds, store.
    #[must_use]
    pub fn builder() -> BudgetBuilder {
        BudgetBuilder::default()
    }

    /// Store failures met so far (admissions and settlements).
    #[must_use]
    pub fn store_errors(&self) -> u64 {
        self.shared.store_errors()
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budget::from_shared(inner, Arc::clone(&self.shared))
    }
}
