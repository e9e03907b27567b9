use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Config;
use crate::error::BoxError;
use crate::request::ReplayBody;
use crate::response::ResponseBody;

/// Model fallback in front of `S` — made by
/// [`FallbackLayer`](super::FallbackLayer).
#[derive(Clone, Debug)]
pub struct Fallback<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Fallback<S> {
    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Fallback { inner, config }
    }
    /// `inner` behind a fallback chain of these targets
    /// ([`FallbackLayer::new`](super::FallbackLayer::new)).
    pub fn new(inner: S, targets: impl IntoIterator<Item = super::Target>) -> Self {
        tower_layer::Layer::layer(&super::FallbackLayer::new(targets), inner)
    }
    /// A layer with this chain: the same as
    /// [`FallbackLayer::new`](super::FallbackLayer::new).
    pub fn layer(targets: impl IntoIterator<Item = super::Target>) -> super::FallbackLayer {
        super::FallbackLayer::new(targets)
    }
    crate::util::inner_service_accessors!();
}

impl<S, RB> Service<Request<ReplayBody>> for Fallback<S>
where
    S: Service<Request<ReplayBody>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.config.is_passthrough() {
            return self.inner.poll_ready(cx).map_err(Into::into);
        }
        // A target that is not ready must never block the others: each
        // attempt waits for its own service.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        // Nothing to fall back to: the inner service answers, unmarked.
        if self.config.is_passthrough() {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        let inner = crate::util::hand_off(&mut self.inner);
        ResponseFuture::chain(Arc::clone(&self.config), inner, req)
    }
}
