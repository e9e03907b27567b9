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

/// The observers of a body, in the order they were added.
#[derive(Default)]
pub(super) struct Watchers(Vec<Box<dyn BodyObserver>>);

impl Watchers {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn push(&mut self, observer: Box<dyn BodyObserver>) {
        self.0.push(observer);
    }

    pub(super) fn on_data(&mut self, data: &Bytes) {
        for observer in &mut self.0 {
            observer.on_data(data);
        }
    }

    /// Tells each, in the order they were added, and forgets them.
    pub(super) fn complete(&mut self, completion: &Completion) {
        for observer in std::mem::take(&mut self.0) {
            observer.on_complete(completion);
        }
    }
}

impl<F: FnOnce(&Completion) + Send + 'static> BodyObserver for OnComplete<F> {
    fn on_complete(self: Box<Self>, completion: &Completion) {
        (self.0)(completion)
    }
}
