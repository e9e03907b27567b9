use std::any::Any;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Config;
use super::template::Template;
use crate::error::BoxError;
use crate::request::{Deadline, ReplayBody};
use crate::response::ResponseBody;
use crate::util::Inner;

/// Retries failures worth retrying in front of `S` — made by
/// [`RetryLayer`](super::RetryLayer).
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: Inner<S>,
    config: Arc<Config>,
}

impl<S> Retry<S> {
    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Retry {
            inner: Inner::new(inner),
            config,
        }
    }
    /// `inner` behind the default retry
    /// ([`RetryLayer::new`](super::RetryLayer::new)).
    pub fn new(inner: S) -> Self {
        tower_layer::Layer::layer(&super::RetryLayer::new(), inner)
    }
    /// The default retry layer: the same as
    /// [`RetryLayer::new`](super::RetryLayer::new).
    pub fn layer() -> super::RetryLayer {
        super::RetryLayer::new()
    }
    crate::util::inner_service_accessors!(Inner);
}

/// Turns a `Request<ReplayBody>` back into the service's request type (the
/// same type, known only at run time).
pub(crate) fn as_request<B: 'static>(req: Request<ReplayBody>) -> Option<Request<B>> {
    crate::util::downcast(req).ok()
}

impl<S, B, RB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Always ready: each attempt waits for the inner service's
        // readiness itself, in the response future. The inner readiness is
        // asked here too, without waiting: when ready, the first attempt is
        // sent at the call (the request does not travel through the
        // future).
        self.inner.ask(cx);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(budget) = &self.config.budget {
            budget.deposit();
        }
        // Whether the body can be replayed at all, and a copy to replay only
        // when there may be a retry or a dead letter to hand over.
        let replay = (&req as &dyn Any).downcast_ref::<Request<ReplayBody>>();
        let (can_replay, template) =
            if self.config.max_attempts > 1 || self.config.dead_letter.is_some() {
                let template = replay.and_then(Template::new);
                (template.is_some(), template)
            } else {
                (replay.is_some(), None)
            };
        // The request's deadline, shortened by the layer's total timeout;
        // the clock is read only when a timeout needs it.
        let requested = req.extensions().get::<Deadline>().map(|d| d.0);
        let started = (self.config.timeout.is_some() || self.config.attempt_timeout.is_some())
            .then(tokio::time::Instant::now);
        let deadline = match (requested, self.config.timeout.zip(started)) {
            (Some(d), Some((t, now))) => Some(d.min(now + t)),
            (Some(d), None) => Some(d),
            (None, Some((t, now))) => Some(now + t),
            (None, None) => None,
        };
        if self.inner.is_ready() {
            // The ready service sends the first attempt; a clone waits for
            // readiness only if a retry is due.
            let spare = self.inner.get_ref().clone();
            let fut = self.inner.call_ready(req);
            return ResponseFuture::sent(
                Arc::clone(&self.config),
                spare,
                fut,
                can_replay,
                template,
                deadline,
                started,
            );
        }
        ResponseFuture::new(
            Arc::clone(&self.config),
            self.inner.hand_off(),
            req,
            can_replay,
            template,
            deadline,
            started,
        )
    }
}
