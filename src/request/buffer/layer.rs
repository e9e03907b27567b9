//! [`BufferBodyLayer`], the layer that makes a [`BufferBody`].

use tower_layer::Layer;

use super::{BufferBody, DEFAULT_BODY_LIMIT};

/// Buffers request bodies into a [`ReplayBody`] up to a limit and attaches
/// the parsed [`RequestMeta`].
///
/// A body larger than the limit fails with [`BodyTooLarge`]: at once when
/// its size hint already says so, otherwise as soon as the bytes read pass
/// the limit — never buffering past it. Trailers are dropped (no LLM API
/// uses request trailers). Requests whose body is already a `ReplayBody`
/// are not copied again.
///
/// [`ReplayBody`]: crate::request::ReplayBody
/// [`RequestMeta`]: crate::request::RequestMeta
/// [`BodyTooLarge`]: crate::error::BodyTooLarge
#[derive(Debug, Clone, Copy)]
pub struct BufferBodyLayer {
    limit: usize,
}

impl BufferBodyLayer {
    /// A layer buffering bodies of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        BufferBodyLayer { limit }
    }
}

impl Default for BufferBodyLayer {
    fn default() -> Self {
        Self::new(DEFAULT_BODY_LIMIT)
    }
}

impl<S> Layer<S> for BufferBodyLayer {
    type Service = BufferBody<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BufferBody::new(inner, self.limit)
    }
}
