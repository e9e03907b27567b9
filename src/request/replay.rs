//! [`ReplayBody`], a request body that can be sent again, and
//! [`replay_request`], a copy of a request to send again.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};

use super::RequestMeta;

/// A cheap, replayable request body backed by [`Bytes`].
///
/// Cloning it clones a reference count, so retry, fallback and cache can send
/// the same body again without copying. It yields its bytes as one data
/// frame and never fails.
#[derive(Clone, Default)]
pub struct ReplayBody {
    data: Bytes,
    sent: bool,
    /// The metadata parsed from these bytes, carried with them (see
    /// [`RequestMeta::of`]): no extension map to allocate per request.
    pub(super) meta: Option<Arc<RequestMeta>>,
}

/// Equal bytes (and progress): the metadata is derived from the bytes.
impl PartialEq for ReplayBody {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data && self.sent == other.sent
    }
}

impl Eq for ReplayBody {}

impl fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("len", &self.data.len())
            .finish()
    }
}

impl ReplayBody {
    /// A body of these bytes.
    pub fn new(data: impl Into<Bytes>) -> Self {
        ReplayBody {
            data: data.into(),
            sent: false,
            meta: None,
        }
    }
    /// An empty body.
    pub fn empty() -> Self {
        Self::default()
    }
    /// The whole body, whether or not it has been polled.
    pub fn as_bytes(&self) -> &Bytes {
        &self.data
    }
    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// A fresh copy that will yield the whole body again, even if this one
    /// was already polled.
    #[must_use]
    pub fn replay(&self) -> Self {
        ReplayBody {
            data: self.data.clone(),
            sent: false,
            meta: self.meta.clone(),
        }
    }
}

/// A copy of a request to send again: the same method, URI, version,
/// headers and extensions, and a fresh [`ReplayBody`] of the same bytes (a
/// reference count, not a copy). What retry, fallback and cache send when
/// they re-issue a request.
pub fn replay_request(req: &Request<ReplayBody>) -> Request<ReplayBody> {
    let mut copy = Request::new(req.body().replay());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    copy
}

macro_rules! replay_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ReplayBody {
            fn from(v: $t) -> Self {
                Self::new(v)
            }
        }
    )*};
}
replay_from!(Bytes, Vec<u8>, String, &'static str, &'static [u8]);

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent || self.data.is_empty() {
            self.sent = true;
            return Poll::Ready(None);
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(self.data.clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent || self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(if self.sent { 0 } else { self.data.len() as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn replay_body_yields_once_and_replays() {
        let body = ReplayBody::from("abc");
        let copy = body.clone();
        let bytes = futures_executor_block(body.collect())
            .expect("infallible")
            .to_bytes();
        assert_eq!(bytes, "abc");
        assert_eq!(copy.size_hint().exact(), Some(3));
        let again = futures_executor_block(copy.replay().collect())
            .expect("infallible")
            .to_bytes();
        assert_eq!(again, "abc");
        assert!(ReplayBody::empty().is_end_stream());
    }

    fn futures_executor_block<F: Future>(f: F) -> F::Output
    where
        F::Output: Sized,
    {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }
}
