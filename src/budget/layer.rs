//! The [`BudgetLayer`].

use std::fmt;
use std::sync::Arc;

use http::Request;
use tower_layer::Layer;

use super::store::{Balance, Counter};
use crate::error::{BackendError, BoxError};
use crate::request::RequestMeta;

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

    /// The counters `req` would be charged to now, one per cap (for
    /// reading a tenant's spend with [`balance`](Self::balance)). Parses
    /// the request's metadata as the layer would.
    ///
    /// # Errors
    ///
    /// What the layer would refuse the request with before reserving:
    /// [`UnpricedModel`](crate::error::UnpricedModel).
    pub fn counters<B: 'static>(&self, req: &mut Request<B>) -> Result<Vec<Counter>, BoxError> {
        let meta = RequestMeta::for_request(req);
        let facts = self.shared.facts(req, meta.as_deref())?;
        let now = self.shared.now();
        Ok(self
            .shared
            .charges(&facts, now)
            .into_iter()
            .map(|c| c.counter)
            .collect())
    }

    /// A counter's spend and reservations, from the store.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when a shared store fails.
    pub async fn balance(&self, counter: &Counter) -> Result<Balance, BackendError> {
        self.shared.store.read(counter).get().await
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
