//! [`BufferBody`], the service: the body is read in its response future
//! (see [`future`]); a body already buffered goes to the inner service at
//! the call when that service had said it was ready.

use std::task::{Context, Poll};

use http::Request;
use http_body::Body;
use tower_service::Service;

use crate::error::BoxError;
use crate::request::ReplayBody;
use crate::util::Inner;

use super::future;

/// The service made by [`BufferBodyLayer`].
///
/// [`BufferBodyLayer`]: super::BufferBodyLayer
#[derive(Debug, Clone)]
pub struct BufferBody<S> {
    inner: Inner<S>,
    limit: usize,
}

impl<S> BufferBody<S> {
    /// Wraps `inner`, buffering bodies of at most `limit` bytes.
    pub fn new(inner: S, limit: usize) -> Self {
        BufferBody {
            inner: Inner::new(inner),
            limit,
        }
    }
    /// A layer buffering bodies of at most `limit` bytes: the same as
    /// [`BufferBodyLayer::new`](super::BufferBodyLayer::new).
    pub fn layer(limit: usize) -> super::BufferBodyLayer {
        super::BufferBodyLayer::new(limit)
    }
    crate::util::inner_service_accessors!(Inner);
}

impl<S, B> Service<Request<B>> for BufferBody<S>
where
    S: Service<Request<ReplayBody>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S, B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness of the inner service is awaited after the body is read:
        // holding a reserved slot of it while a slow client uploads would
        // starve everyone else. A body already buffered (a `ReplayBody`)
        // asks it at the call, and is sent there when it is ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let body = match crate::util::downcast::<ReplayBody, B>(body) {
            Ok(replay)
                if replay.len() <= self.limit && self.inner.ready_now::<Request<ReplayBody>>() =>
            {
                let req = future::finish(parts, replay);
                return future::ResponseFuture::calling(self.inner.call_ready(req));
            }
            Ok(replay) => future::ToRead::Replay(replay),
            Err(body) => future::ToRead::Other(body),
        };
        future::ResponseFuture::new(parts, body, self.inner.hand_off(), self.limit)
    }
}
