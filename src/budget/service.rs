//! The [`Budget`] middleware.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::ResponseFuture;
use super::state::{Decision, Shared};
use super::store::Answer;
use crate::error::BoxError;
use crate::request::RequestMeta;
use crate::response::ResponseBody;
use std::sync::Arc;

/// Spend caps in front of `S` — made by [`BudgetLayer`](super::BudgetLayer).
///
/// `poll_ready` is the inner service's readiness. `call` reserves the
/// request's estimate against every cap: with a memory store at once
/// (sending on the ready `S`, or refusing with
/// [`BudgetExceeded`](crate::error::BudgetExceeded)); with a store that
/// answers later, in the response future, which then drives a clone of
/// `S` (`poll_ready` → `call`).
#[derive(Clone, Debug)]
pub struct Budget<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Budget<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Budget { inner, shared }
    }

    crate::util::inner_service_accessors!();

    /// Store failures met so far (admissions and settlements).
    pub fn store_errors(&self) -> u64 {
        self.shared.store_errors()
    }
}

impl<S, B, RB> Service<Request<B>> for Budget<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let meta = RequestMeta::for_request(&mut req);
        let facts = match self.shared.facts(&req, meta.as_deref()) {
            Ok(f) => f,
            Err(e) => return ResponseFuture::refused(e),
        };
        let now = self.shared.now();
        let charges = self.shared.charges(&facts, now);
        let shared = Arc::clone(&self.shared);
        match self.shared.store.reserve(now, charges.clone()) {
            Answer::Now(answer) => match shared.decide(answer, charges, facts) {
                Decision::Admit(hold) => ResponseFuture::called(self.inner.call(req), hold),
                Decision::Refuse(e) => ResponseFuture::refused(e),
                Decision::Clock(now, facts) => {
                    // A store that answers now with another clock: ask
                    // again with its periods, from the future.
                    shared.learn_clock(now);
                    let charges = shared.charges(&facts, now);
                    let again = shared.store.reserve(now, charges.clone());
                    let inner = crate::util::unready_clone(&mut self.inner);
                    ResponseFuture::reserving(shared, facts, charges, again, req, inner)
                }
            },
            later @ Answer::Later(_) => {
                let inner = crate::util::unready_clone(&mut self.inner);
                ResponseFuture::reserving(shared, facts, charges, later, req, inner)
            }
        }
    }
}
