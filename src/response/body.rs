//! [`ResponseBody`]: where its bytes come from (upstream, stored chunks,
//! given bytes), the [`Format`] it is observed as, and the [`Body`] and
//! [`Drop`] impls that hand its frames to the caller and tell its observers
//! how it ended.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Response, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

use crate::error::BoxError;
use crate::provider::Usage;

use super::json::JsonTracker;
use super::observer::{BodyObserver, Completion, OnComplete, Outcome, Watchers};
use super::peek::Peek;
use super::sse::SseTracker;

pub(super) enum Kind {
    Upstream(UnsyncBoxBody<Bytes, BoxError>),
    Replay { chunks: Arc<[Bytes]>, next: usize },
    Full(Option<Bytes>),
}

/// The one response body type of the stack.
///
/// Built from an upstream body with [`ResponseBody::new`] (or
/// [`from_response`](ResponseBody::from_response), which also picks the
/// usage observation from the `content-type`), from stored chunks with
/// [`replay`](ResponseBody::replay), or from bytes with
/// [`full`](ResponseBody::full).
pub struct ResponseBody {
    pub(super) kind: Kind,
    pub(super) tracker: Tracker,
    observers: Watchers,
    bytes: u64,
    /// Set once the body ended: what every observer was told.
    pub(super) ended: Option<Box<Completion>>,
    /// Frames read ahead (by [`poll_peek`](Self::poll_peek)) and not yet
    /// delivered.
    pub(super) peek: Option<Box<Peek>>,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Upstream(_) => "upstream",
            Kind::Replay { .. } => "replay",
            Kind::Full(_) => "full",
        };
        f.debug_struct("ResponseBody")
            .field("kind", &kind)
            .field("observers", &self.observers.len())
            .field("bytes", &self.bytes)
            .field("ended", &self.ended.as_ref().map(|c| c.outcome))
            .finish()
    }
}

/// How the body's format is read for usage and completeness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON body: complete when it ends; usage from its `usage` object.
    Json,
    /// A `text/event-stream`: complete only after its terminal event.
    Sse,
    /// Anything else: complete when it ends; no usage.
    Opaque,
}

impl Format {
    /// The format a response's `content-type` announces.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let Some(ct) = headers.get(header::CONTENT_TYPE) else {
            return Format::Opaque;
        };
        // The media type before any parameter, compared as bytes (no
        // string checks, no allocation: this runs once per response).
        let ct = ct.as_bytes();
        let essence = ct.split(|b| *b == b';').next().unwrap_or_default();
        let essence = essence.trim_ascii();
        if essence.eq_ignore_ascii_case(b"text/event-stream") {
            Format::Sse
        } else if essence.eq_ignore_ascii_case(b"application/json")
            || essence.len() >= 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json")
        {
            Format::Json
        } else {
            Format::Opaque
        }
    }
}

impl ResponseBody {
    /// Wraps an upstream body, observed as [`Format::Opaque`] (see
    /// [`with_format`](Self::with_format)). A `ResponseBody` passed in is
    /// returned as it is, not wrapped again.
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match crate::util::downcast::<ResponseBody, B>(body) {
            Ok(this) => this,
            Err(body) => Self::from_kind(Kind::Upstream(body.map_err(Into::into).boxed_unsync())),
        }
    }

    /// Converts a response, observing its body in the format its
    /// `content-type` announces. A `ResponseBody` that a layer below
    /// already observes (as JSON or SSE) is returned as it is.
    #[inline]
    pub fn from_response<B>(res: Response<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // `ResponseBody::new` returns a `ResponseBody` as it is, so a body a
        // layer below already observes (as JSON or SSE) keeps its tracker;
        // the `content-type` is read only while it is still opaque.
        let mut res = res.map(ResponseBody::new);
        if matches!(res.body().tracker, Tracker::Opaque) {
            match Format::from_headers(res.headers()) {
                Format::Opaque => {}
                format => res.body_mut().set_format(format),
            }
        }
        res
    }

    /// A body that replays stored chunks, byte for byte (a cache hit).
    pub fn replay(chunks: Arc<[Bytes]>) -> Self {
        Self::from_kind(Kind::Replay { chunks, next: 0 })
    }

    /// A body of these bytes (a synthesized or degraded response).
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Self::from_kind(Kind::Full((!data.is_empty()).then_some(data)))
    }

    /// A complete SSE stream given as one buffer, observed as SSE.
    pub fn full_sse(data: impl Into<Bytes>) -> Self {
        Self::full(data).with_format(Format::Sse)
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::from_kind(Kind::Full(None))
    }

    fn from_kind(kind: Kind) -> Self {
        ResponseBody {
            kind,
            tracker: Tracker::Opaque,
            observers: Watchers::default(),
            bytes: 0,
            ended: None,
            peek: None,
        }
    }

    /// Observes the body as `format` from now on (usage and completeness).
    #[must_use]
    pub fn with_format(mut self, format: Format) -> Self {
        self.set_format(format);
        self
    }

    /// Observes the body as `format` from now on, in place; ignored once
    /// data has passed (the observation would start mid-body).
    pub fn set_format(&mut self, format: Format) {
        if self.bytes == 0 {
            self.tracker = match format {
                Format::Json => Tracker::Json(JsonTracker::default()),
                Format::Sse => Tracker::Sse(Box::default()),
                Format::Opaque => Tracker::Opaque,
            };
        }
    }

    /// Adds an observer. Observers see frames and the completion in the
    /// order they were added. An observer added after the body ended is
    /// told at once how it ended.
    pub fn observe(&mut self, observer: Box<dyn BodyObserver>) {
        if let Some(completion) = &self.ended {
            observer.on_complete(completion);
        } else {
            self.observers.push(observer);
        }
    }

    /// Runs `f` once when the body ends or is dropped.
    pub fn on_complete(&mut self, f: impl FnOnce(&Completion) + Send + 'static) {
        self.observe(Box::new(OnComplete(f)));
    }

    /// Data bytes that have passed to the caller so far.
    pub fn bytes_delivered(&self) -> u64 {
        self.bytes
    }

    /// The usage seen so far (a stream reports input tokens at its start).
    pub fn usage_so_far(&self) -> Option<Usage> {
        match &self.tracker {
            Tracker::Sse(s) => s.usage_seen.then_some(s.usage),
            _ => None,
        }
    }

    fn completion(&self, outcome: Outcome) -> Completion {
        let mut c = Completion {
            outcome,
            usage: None,
            error: None,
            bytes: self.bytes,
            content_started: self.bytes > 0,
        };
        match &self.tracker {
            Tracker::Opaque => {}
            Tracker::Json(j) => {
                if outcome == Outcome::Complete {
                    c.usage = j.usage();
                }
            }
            Tracker::Sse(s) => {
                c.usage = s.usage_seen.then_some(s.usage);
                c.error = s.error;
                c.content_started = s.content_started;
                if outcome == Outcome::Complete {
                    c.outcome = if s.overflow {
                        Outcome::Unobserved
                    } else if s.error.is_some() {
                        Outcome::ErrorEvent
                    } else if s.terminal {
                        Outcome::Complete
                    } else {
                        Outcome::Truncated
                    };
                }
            }
        }
        c
    }

    /// How the body ended, once it has.
    pub fn completion_if_ended(&self) -> Option<&Completion> {
        self.ended.as_deref()
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.ended.is_some() {
            return;
        }
        let completion = self.completion(outcome);
        // Buffered bytes are no longer needed.
        self.tracker = Tracker::Opaque;
        self.observers.complete(&completion);
        self.ended = Some(Box::new(completion));
    }

    pub(super) fn inner_is_end(&self) -> bool {
        match &self.kind {
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Replay { chunks, next } => *next >= chunks.len(),
            Kind::Full(d) => d.is_none(),
        }
    }

    pub(super) fn poll_source(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Replay { chunks, next } => {
                let chunk = chunks.get(*next).cloned();
                *next += 1;
                Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
            }
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    /// Hands a frame to the caller: observers see it, and the end is
    /// noticed as soon as nothing follows (hyper stops at `is_end_stream`
    /// without polling for `None`).
    fn deliver(&mut self, frame: Frame<Bytes>) -> Frame<Bytes> {
        if let Some(data) = frame.data_ref() {
            self.on_data(data);
        }
        if self.is_end_stream() {
            self.finish(Outcome::Complete);
        }
        frame
    }

    fn on_data(&mut self, data: &Bytes) {
        self.bytes = self.bytes.saturating_add(data.len() as u64);
        self.tracker.feed(data);
        self.observers.on_data(data);
    }
}

impl Default for ResponseBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(peek) = this.peek.as_mut() {
            if let Some(frame) = peek.frames.pop_front() {
                peek.bytes -= frame.data_ref().map_or(0, Bytes::len);
                return Poll::Ready(Some(Ok(this.deliver(frame))));
            }
            let end = peek.end.take();
            this.peek = None;
            match end {
                Some(Ok(())) => {
                    this.finish(Outcome::Complete);
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    this.finish(Outcome::BodyError);
                    return Poll::Ready(Some(Err(e)));
                }
                None => {}
            }
        }
        match ready!(this.poll_source(cx)) {
            None => {
                this.finish(Outcome::Complete);
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                this.finish(Outcome::BodyError);
                Poll::Ready(Some(Err(e)))
            }
            Some(Ok(frame)) => Poll::Ready(Some(Ok(this.deliver(frame)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.peek.as_deref() {
            Some(p) if !p.frames.is_empty() => false,
            // An upstream error still has to be delivered.
            Some(Peek { end: Some(end), .. }) => end.is_ok(),
            _ => self.inner_is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(b) => b.size_hint(),
            Kind::Replay { chunks, next } => SizeHint::with_exact(
                chunks
                    .get(*next..)
                    .unwrap_or_default()
                    .iter()
                    .map(|c| c.len() as u64)
                    .sum(),
            ),
            Kind::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Nobody can ask how it ended any more: observers are told, and the
        // completion is not kept.
        if self.ended.is_none() && !self.observers.is_empty() {
            let outcome = if self.is_end_stream() {
                Outcome::Complete
            } else {
                Outcome::Dropped
            };
            let completion = self.completion(outcome);
            self.observers.complete(&completion);
        }
    }
}

pub(super) enum Tracker {
    Opaque,
    Json(JsonTracker),
    Sse(Box<SseTracker>),
}

impl Tracker {
    fn feed(&mut self, data: &Bytes) {
        match self {
            Tracker::Opaque => {}
            Tracker::Json(j) => j.feed(data),
            Tracker::Sse(s) => s.feed(data),
        }
    }
}
