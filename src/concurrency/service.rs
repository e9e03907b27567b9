use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::ResponseFuture;
use super::state::{ConcurrencyStats, Permit, Shared};
use crate::error::BoxError;
use crate::response::ResponseBody;
use crate::sync::Arc;

/// An in-flight cap in front of `S` — made by
/// [`ConcurrencyLimitLayer`](super::ConcurrencyLimitLayer).
///
/// `poll_ready` is the inner service's readiness, not a permit's. `call`
/// takes a free permit when nobody waits and calls `S` at once; otherwise
/// the response future waits in the shared queue (where the request's
/// priority counts), then drives a clone of `S` it was given
/// (`poll_ready` → `call`). The permit is held until the response body
/// ends or is dropped.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> ConcurrencyLimit<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        ConcurrencyLimit { inner, shared }
    }
    /// `inner` behind a concurrency limit of its own, at most `max` in
    /// flight ([`ConcurrencyLimitLayer::new`](super::ConcurrencyLimitLayer::new)).
    ///
    /// # Panics
    ///
    /// If `max` is zero.
    pub fn new(inner: S, max: usize) -> Self {
        tower_layer::Layer::layer(&super::ConcurrencyLimitLayer::new(max), inner)
    }
    /// A layer allowing at most `max` in flight: the same as
    /// [`ConcurrencyLimitLayer::new`](super::ConcurrencyLimitLayer::new).
    ///
    /// # Panics
    ///
    /// If `max` is zero.
    pub fn layer(max: usize) -> super::ConcurrencyLimitLayer {
        super::ConcurrencyLimitLayer::new(max)
    }
    crate::util::inner_service_accessors!();
    /// A snapshot of the shared limiter: cap, in flight, peak, queued.
    pub fn stats(&self) -> ConcurrencyStats {
        self.shared.stats()
    }
}

impl<S, B, RB> Service<Request<B>> for ConcurrencyLimit<S>
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
        // The inner service's readiness, not a permit: a request waits for
        // its permit in the queue, by priority (which only the request
        // carries).
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // A free permit and nobody waiting: call the (ready) inner service
        // now.
        if let Some(epoch) = self.shared.try_acquire(true) {
            let permit = Permit {
                shared: Arc::clone(&self.shared),
                epoch,
            };
            return ResponseFuture::called(self.inner.call(req), permit);
        }
        // Else the request waits its turn with a clone of the service, which
        // its future asks once admitted (the ready one, and whatever it
        // reserved when asked, is let go).
        let inner = crate::util::unready_clone(&mut self.inner);
        ResponseFuture::waiting(Arc::clone(&self.shared), req, inner)
    }
}
