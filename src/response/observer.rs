//! How a body ended ([`Outcome`], [`Completion`]), who is told
//! ([`BodyObserver`]), and the list of observers a body holds.

use bytes::Bytes;

use crate::provider::{ErrorClass, Usage};

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The whole body was read: a JSON body to its end, or a stream through
    /// its terminal event.
    Complete,
    /// A stream ended (cleanly, at the transport level) without its
    /// terminal event.
    Truncated,
    /// A stream carried a provider `error` event (e.g. `overloaded_error`
    /// after HTTP 200); [`Completion::error`] says which.
    ErrorEvent,
    /// Reading the body failed at the transport level.
    BodyError,
    /// The body was dropped before it ended.
    Dropped,
    /// The body ended, but it could not be told whether it was complete
    /// (an SSE event larger than [`SSE_EVENT_LIMIT`](super::SSE_EVENT_LIMIT)).
    Unobserved,
}

impl Outcome {
    /// Whether the response reached its end intact (only then may it be cached).
    pub fn is_complete(self) -> bool {
        self == Outcome::Complete
    }
}

/// What observers are told when a body ends, once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completion {
    /// How the body ended.
    pub outcome: Outcome,
    /// The usage the provider reported, when it did (in a stream, possibly
    /// before it was cut off).
    pub usage: Option<Usage>,
    /// The classified SSE `error` event (e.g. `overloaded_error` →
    /// [`ErrorKind::Overloaded`](crate::provider::ErrorKind::Overloaded)).
    pub error: Option<ErrorClass>,
    /// Data bytes that passed through to the caller.
    pub bytes: u64,
    /// Whether any content (a text or tool delta, a JSON body) had passed
    /// through before the end.
    pub content_started: bool,
}

/// Something that watches a [`ResponseBody`]: its data frames as they pass,
/// and how it ended.
///
/// Implemented for you by [`ResponseBody::on_complete`] closures; implement
/// it to see the data too (a cache filling an entry).
///
/// [`ResponseBody`]: super::ResponseBody
/// [`ResponseBody::on_complete`]: super::ResponseBody::on_complete
pub trait BodyObserver: Send + 'static {
    /// A data frame is passing to the caller.
    fn on_data(&mut self, _data: &Bytes) {}
    /// The body ended (or was dropped); called exactly once.
    fn on_complete(self: Box<Self>, completion: &Completion);
}

pub(super) struct OnComplete<F>(pub(super) F);

/// An observer a body holds: boxed, or a concurrency permit held inline
/// (no allocation for the commonest observer of the stack).
pub(super) enum Watcher {
    Boxed(Box<dyn BodyObserver>),
    #[cfg(feature = "concurrency")]
    Permit(crate::concurrency::Release),
}

impl Watcher {
    pub(super) fn on_data(&mut self, data: &Bytes) {
        match self {
            Watcher::Boxed(observer) => observer.on_data(data),
            #[cfg(feature = "concurrency")]
            Watcher::Permit(_) => {}
        }
    }

    pub(super) fn on_complete(self, completion: &Completion) {
        match self {
            Watcher::Boxed(observer) => observer.on_complete(completion),
            #[cfg(feature = "concurrency")]
            Watcher::Permit(release) => release.on_complete(completion),
        }
    }
}

/// The observers of a body, the first one inline (most bodies have one or
/// two: a `Vec` would allocate for the first).
#[derive(Default)]
pub(super) struct Watchers {
    first: Option<Watcher>,
    rest: Vec<Watcher>,
}

impl Watchers {
    pub(super) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(super) fn push(&mut self, watcher: Watcher) {
        if self.first.is_none() {
            self.first = Some(watcher);
        } else {
            self.rest.push(watcher);
        }
    }

    pub(super) fn for_each_mut(&mut self, mut f: impl FnMut(&mut Watcher)) {
        if let Some(first) = self.first.as_mut() {
            f(first);
            self.rest.iter_mut().for_each(f);
        }
    }

    /// Tells each, in the order they were added, and forgets them.
    pub(super) fn complete(&mut self, completion: &Completion) {
        if let Some(first) = self.first.take() {
            first.on_complete(completion);
            for watcher in std::mem::take(&mut self.rest) {
                watcher.on_complete(completion);
            }
        }
    }
}

impl<F: FnOnce(&Completion) + Send + 'static> BodyObserver for OnComplete<F> {
    fn on_complete(self: Box<Self>, completion: &Completion) {
        (self.0)(completion)
    }
}
