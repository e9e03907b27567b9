//! The response side: one body type for every layer, with completion hooks
//! and usage observation.
//!
//! [`ResponseBody`] is an upstream stream, a replay of stored chunks (cache)
//! or a synthesized body (degraded responses). Layers attach
//! [`BodyObserver`]s to it instead of wrapping it, so the stack never builds
//! `Response<A<B<C<D>>>>`:
//!
//! - the concurrency limit releases its permit when the body ends or is
//!   dropped (streams hold it while they stream);
//! - the rate limiter corrects its reservation from the real [`Usage`];
//! - the cache commits an entry only when a stream completed cleanly.
//!
//! While the caller reads the body, it reads the token usage on the way:
//! from the `usage` object of a JSON body, or from the SSE events of a stream
//! (Anthropic `message_start` + `message_delta`, OpenAI's final usage chunk,
//! OpenAI Responses' `response.completed`). Each observer is told exactly
//! once how the body ended — see [`Outcome`]: a stream that ends without its
//! terminal event (`message_stop`, `data: [DONE]`) is
//! [`Truncated`](Outcome::Truncated), never complete.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::BodyExt;
//! use tower_llm_resilience::response::{Outcome, ResponseBody};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let sse = "event: message_start\n\
//!            data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
//!            event: message_delta\n\
//!            data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
//!            event: message_stop\n\
//!            data: {\"type\":\"message_stop\"}\n\n";
//! let (tx, rx) = std::sync::mpsc::channel();
//! let mut body = ResponseBody::full_sse(Bytes::from(sse));
//! body.on_complete(move |c| tx.send((c.outcome, c.usage)).unwrap());
//! body.collect().await.unwrap();
//! let (outcome, usage) = rx.recv().unwrap();
//! assert_eq!(outcome, Outcome::Complete);
//! assert_eq!(usage.map(|u| (u.input_tokens, u.output_tokens)), Some((25, 15)));
//! # }
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use serde::Deserialize;

use crate::error::BoxError;
use crate::provider::usage::UsageWire;
use crate::provider::{ErrorClass, Usage, classify_error};

/// The most bytes of a JSON response body kept to read its `usage` at the
/// end; a larger body is passed through with its usage unknown.
pub const JSON_USAGE_LIMIT: usize = 4 * 1024 * 1024;
/// The longest SSE line or event kept while looking for usage and terminal
/// events; past it the stream still passes through, but is no longer
/// observed (its outcome becomes [`Outcome::Unobserved`]).
pub const SSE_EVENT_LIMIT: usize = 1024 * 1024;
/// The longest SSE event name kept.
const SSE_NAME_LIMIT: usize = 64;

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
    /// (an SSE event larger than [`SSE_EVENT_LIMIT`]).
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
pub trait BodyObserver: Send + 'static {
    /// A data frame is passing to the caller.
    fn on_data(&mut self, _data: &Bytes) {}
    /// The body ended (or was dropped); called exactly once.
    fn on_complete(self: Box<Self>, completion: &Completion);
}

struct OnComplete<F>(F);

/// An observer a body holds: boxed, or a concurrency permit held inline
/// (no allocation for the commonest observer of the stack).
enum Watcher {
    Boxed(Box<dyn BodyObserver>),
    #[cfg(feature = "concurrency")]
    Permit(crate::concurrency::Release),
}

impl Watcher {
    fn on_data(&mut self, data: &Bytes) {
        match self {
            Watcher::Boxed(observer) => observer.on_data(data),
            #[cfg(feature = "concurrency")]
            Watcher::Permit(_) => {}
        }
    }

    fn on_complete(self, completion: &Completion) {
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
struct Watchers {
    first: Option<Watcher>,
    rest: Vec<Watcher>,
}

impl Watchers {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn push(&mut self, watcher: Watcher) {
        if self.first.is_none() {
            self.first = Some(watcher);
        } else {
            self.rest.push(watcher);
        }
    }

    fn for_each_mut(&mut self, mut f: impl FnMut(&mut Watcher)) {
        if let Some(first) = self.first.as_mut() {
            f(first);
            self.rest.iter_mut().for_each(f);
        }
    }

    /// Tells each, in the order they were added, and forgets them.
    fn complete(&mut self, completion: &Completion) {
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

enum Kind {
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
    kind: Kind,
    tracker: Tracker,
    observers: Watchers,
    /// Whether [`ResponseBody::from_response`] already chose the format
    /// (so the layers above do not read the `content-type` again).
    format_chosen: bool,
    bytes: u64,
    /// Set once the body ended: what every observer was told.
    ended: Option<Box<Completion>>,
    /// Frames read ahead (by [`poll_peek`](Self::poll_peek)) and not yet
    /// delivered.
    peek: Option<Box<Peek>>,
}

/// Frames read ahead of the caller.
#[derive(Default)]
struct Peek {
    frames: std::collections::VecDeque<Frame<Bytes>>,
    bytes: usize,
    /// How the upstream ended while peeking: `Ok` for its end, `Err` for
    /// its error, to be delivered after the frames.
    end: Option<Result<(), BoxError>>,
    /// The peeked bytes read as SSE, to tell how a stream starts.
    scan: SseTracker,
}

/// How a streamed response starts, as far as it was read ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamStart {
    /// Content (a text or tool delta) arrived first, or the body is not a
    /// stream: the response is what it looks like.
    Content,
    /// An `error` event arrived before any content (e.g. `overloaded_error`
    /// after HTTP 200): nothing usable reached the caller yet.
    Error(ErrorClass),
    /// The stream ended (or failed) before content or an error.
    Ended,
    /// The read-ahead limit was reached first.
    Undecided,
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
        // A response whose body already is a `ResponseBody` keeps the
        // observation a layer below chose: each layer of the stack converts
        // its inner response, and only the first reads the `content-type`
        // (the whole response is moved once, not taken apart).
        let mut slot = Some(res);
        let mut res = match (&mut slot as &mut dyn std::any::Any)
            .downcast_mut::<Option<Response<ResponseBody>>>()
            .and_then(Option::take)
        {
            Some(res) => res,
            None => match slot {
                Some(res) => res.map(ResponseBody::new),
                None => unreachable!("the slot is only taken for a ResponseBody"),
            },
        };
        let body = res.body_mut();
        if !body.format_chosen {
            body.format_chosen = true;
            if matches!(body.tracker, Tracker::Opaque) {
                match Format::from_headers(res.headers()) {
                    Format::Opaque => {}
                    format => res.body_mut().set_format(format),
                }
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
            format_chosen: false,
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
        self.watch(Watcher::Boxed(observer));
    }

    /// Holds a concurrency permit until the body ends (no allocation).
    #[cfg(feature = "concurrency")]
    pub(crate) fn hold_permit(&mut self, release: crate::concurrency::Release) {
        self.watch(Watcher::Permit(release));
    }

    fn watch(&mut self, watcher: Watcher) {
        if let Some(completion) = &self.ended {
            watcher.on_complete(completion);
        } else {
            self.observers.push(watcher);
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

    fn inner_is_end(&self) -> bool {
        match &self.kind {
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Replay { chunks, next } => *next >= chunks.len(),
            Kind::Full(d) => d.is_none(),
        }
    }

    fn poll_source(
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

    /// Reads one more frame from upstream into a read-ahead buffer without
    /// delivering it: the caller still gets every byte, in order, and
    /// observers see them only then. `Ready(false)` once upstream has
    /// ended or failed (its end is delivered after the buffered frames).
    ///
    /// The retry layer uses this to look at an error body, or at how a
    /// stream starts, before deciding whether the response reaches the
    /// caller at all.
    pub fn poll_peek(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.ended.is_some() || self.peek.as_ref().is_some_and(|p| p.end.is_some()) {
            return Poll::Ready(false);
        }
        if self.peek.as_ref().is_none_or(|p| p.frames.is_empty()) && self.inner_is_end() {
            return Poll::Ready(false);
        }
        let polled = ready!(self.poll_source(cx));
        let peek = self.peek.get_or_insert_with(Box::default);
        match polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    peek.bytes += data.len();
                    peek.scan.feed(data);
                }
                peek.frames.push_back(frame);
                Poll::Ready(true)
            }
            Some(Err(e)) => {
                peek.end = Some(Err(e));
                Poll::Ready(false)
            }
            None => {
                peek.end = Some(Ok(()));
                Poll::Ready(false)
            }
        }
    }

    /// Reads ahead until upstream ends or `limit` bytes are buffered.
    pub fn poll_peek_to_end(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<()> {
        while self.peeked_len() < limit {
            if !ready!(self.poll_peek(cx)) {
                break;
            }
        }
        Poll::Ready(())
    }

    /// Reads ahead until it can tell how a stream starts (see
    /// [`StreamStart`]), at most `limit` bytes. A body not observed as SSE
    /// is [`Content`](StreamStart::Content) at once.
    pub fn poll_stream_start(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<StreamStart> {
        if !matches!(self.tracker, Tracker::Sse(_)) {
            return Poll::Ready(StreamStart::Content);
        }
        loop {
            // Content first: one frame may carry content *and* a later
            // error event; the stream then started with content, however
            // the bytes were split into frames.
            if let Some(peek) = &self.peek {
                if peek.scan.content_started {
                    return Poll::Ready(StreamStart::Content);
                }
                if let Some(error) = peek.scan.error {
                    return Poll::Ready(StreamStart::Error(error));
                }
                if peek.bytes >= limit {
                    return Poll::Ready(StreamStart::Undecided);
                }
            }
            if !ready!(self.poll_peek(cx)) {
                let scan = self.peek.as_ref().map(|p| &p.scan);
                return Poll::Ready(match scan {
                    Some(s) if s.content_started => StreamStart::Content,
                    Some(s) => s.error.map_or(StreamStart::Ended, StreamStart::Error),
                    None => StreamStart::Ended,
                });
            }
        }
    }

    /// The bytes read ahead and not yet delivered.
    pub fn peeked_len(&self) -> usize {
        self.peek.as_ref().map_or(0, |p| p.bytes)
    }

    /// The bytes read ahead, as one buffer (a copy when there are several
    /// frames).
    pub fn peeked(&self) -> Bytes {
        let Some(peek) = &self.peek else {
            return Bytes::new();
        };
        let mut data = peek.frames.iter().filter_map(Frame::data_ref);
        match (data.next(), data.next()) {
            (None, _) => Bytes::new(),
            (Some(one), None) => one.clone(),
            _ => {
                let mut all = Vec::with_capacity(peek.bytes);
                for d in peek.frames.iter().filter_map(Frame::data_ref) {
                    all.extend_from_slice(d);
                }
                Bytes::from(all)
            }
        }
    }

    fn on_data(&mut self, data: &Bytes) {
        self.bytes = self.bytes.saturating_add(data.len() as u64);
        self.tracker.feed(data);
        self.observers.for_each_mut(|w| w.on_data(data));
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

enum Tracker {
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

#[derive(Default)]
struct JsonTracker {
    /// The first chunk, kept apart: most JSON bodies arrive in one.
    first: Option<Bytes>,
    rest: Vec<Bytes>,
    len: usize,
    overflow: bool,
}

impl JsonTracker {
    fn feed(&mut self, data: &Bytes) {
        if self.overflow {
            return;
        }
        self.len = self.len.saturating_add(data.len());
        if self.len > JSON_USAGE_LIMIT {
            self.overflow = true;
            self.first = None;
            self.rest = Vec::new();
        } else if self.first.is_none() {
            self.first = Some(data.clone());
        } else {
            self.rest.push(data.clone());
        }
    }

    fn usage(&self) -> Option<Usage> {
        if self.overflow {
            return None;
        }
        let first = self.first.as_deref().unwrap_or_default();
        if self.rest.is_empty() {
            return crate::provider::usage_from_json(first);
        }
        let mut all = Vec::with_capacity(self.len);
        all.extend_from_slice(first);
        for chunk in &self.rest {
            all.extend_from_slice(chunk);
        }
        crate::provider::usage_from_json(&all)
    }
}

/// An incremental SSE reader that keeps only what it needs: the current
/// line's unfinished tail, the current event's name and (bounded) data.
/// A final event without its blank line is incomplete (the SSE spec
/// discards it), so the end of the stream dispatches nothing.
#[derive(Default)]
struct SseTracker {
    line: Vec<u8>,
    name: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    usage: Usage,
    usage_seen: bool,
    terminal: bool,
    content_started: bool,
    error: Option<ErrorClass>,
    overflow: bool,
}

impl SseTracker {
    fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !self.overflow {
            let Some(i) = rest.iter().position(|&b| b == b'\n') else {
                if self.line.len().saturating_add(rest.len()) > SSE_EVENT_LIMIT {
                    self.overflow();
                } else {
                    self.line.extend_from_slice(rest);
                }
                return;
            };
            if self.line.is_empty() {
                self.line_done(&rest[..i]);
            } else if self.line.len().saturating_add(i) > SSE_EVENT_LIMIT {
                self.overflow();
                return;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&rest[..i]);
                self.line_done(&line);
                line.clear();
                self.line = line;
            }
            rest = &rest[i + 1..];
        }
    }

    fn overflow(&mut self) {
        self.overflow = true;
        self.line = Vec::new();
        self.data = Vec::new();
    }

    fn line_done(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.name.clear();
                self.name
                    .extend_from_slice(&value[..value.len().min(SSE_NAME_LIMIT)]);
            }
            b"data" => {
                if self.data.len().saturating_add(value.len()) >= SSE_EVENT_LIMIT {
                    self.overflow();
                    return;
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let name = std::mem::take(&mut self.name);
        let data = std::mem::take(&mut self.data);
        let had_data = std::mem::replace(&mut self.has_data, false);
        if had_data {
            self.event(&name, &data);
        }
        // Reuse the allocations for the next event.
        self.name = name;
        self.name.clear();
        self.data = data;
        self.data.clear();
    }

    fn event(&mut self, name: &[u8], data: &[u8]) {
        match name {
            b"message_start" => {
                #[derive(Deserialize)]
                struct Start {
                    message: Option<WithUsage>,
                }
                if let Ok(Start { message: Some(m) }) = serde_json::from_slice(data) {
                    self.merge(m.usage);
                }
            }
            b"message_delta" => {
                if let Ok(m) = serde_json::from_slice::<WithUsage>(data) {
                    self.merge(m.usage);
                }
            }
            b"message_stop" => self.terminal = true,
            // A block start carries no text yet: only deltas are content.
            b"content_block_delta" | b"response.output_text.delta" => {
                self.content_started = true;
            }
            b"response.completed" => {
                #[derive(Deserialize)]
                struct Done {
                    response: Option<WithUsage>,
                }
                if let Ok(Done { response: Some(r) }) = serde_json::from_slice(data) {
                    self.merge(r.usage);
                }
                self.terminal = true;
            }
            b"error" | b"response.failed" => self.error(data),
            // OpenAI Chat Completions: unnamed events.
            b"" | b"message" => {
                if data == b"[DONE]" {
                    self.terminal = true;
                    return;
                }
                if !(contains(data, b"\"usage\"") || contains(data, b"\"error\"")) {
                    self.content_started |= contains(data, b"\"choices\"");
                    return;
                }
                #[derive(Deserialize)]
                struct Chunk {
                    usage: Option<UsageWire>,
                    error: Option<serde::de::IgnoredAny>,
                    #[serde(default)]
                    choices: Vec<serde::de::IgnoredAny>,
                }
                match serde_json::from_slice::<Chunk>(data) {
                    Ok(c) if c.error.is_some() => self.error(data),
                    Ok(c) => {
                        self.content_started |= !c.choices.is_empty();
                        self.merge(c.usage);
                    }
                    Err(_) => {}
                }
            }
            _ => {}
        }
    }

    fn merge(&mut self, usage: Option<UsageWire>) {
        if let Some(u) = usage {
            self.usage_seen |= u.merge_into(&mut self.usage);
        }
    }

    fn error(&mut self, data: &[u8]) {
        // An error event arrives inside an HTTP 200.
        self.error = Some(classify_error(StatusCode::OK, data));
    }
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<UsageWire>,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// An upstream body yielding the given chunks, then optionally an error.
    struct Chunks(VecDeque<Result<Bytes, std::io::Error>>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|r| r.map(Frame::data)))
        }
    }

    fn upstream(chunks: &[&[u8]]) -> ResponseBody {
        ResponseBody::new(Chunks(
            chunks
                .iter()
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect(),
        ))
    }

    #[derive(Default, Clone)]
    struct Seen(Arc<Mutex<(Vec<u8>, Vec<Completion>)>>);

    impl BodyObserver for Seen {
        fn on_data(&mut self, data: &Bytes) {
            self.0.lock().expect("lock").0.extend_from_slice(data);
        }
        fn on_complete(self: Box<Self>, c: &Completion) {
            self.0.lock().expect("lock").1.push(c.clone());
        }
    }

    impl Seen {
        fn attach(body: &mut ResponseBody) -> Seen {
            let s = Seen::default();
            body.observe(Box::new(s.clone()));
            s
        }
        fn completions(&self) -> Vec<Completion> {
            self.0.lock().expect("lock").1.clone()
        }
        fn one(&self) -> Completion {
            let all = self.completions();
            assert_eq!(all.len(), 1, "exactly one completion: {all:?}");
            all[0].clone()
        }
        fn data(&self) -> Vec<u8> {
            self.0.lock().expect("lock").0.clone()
        }
    }

    fn drain(mut body: ResponseBody) -> Result<Vec<u8>, BoxError> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(f))) => out.extend_from_slice(f.data_ref().expect("data")),
                Poll::Ready(Some(Err(e))) => return Err(e),
                Poll::Ready(None) => return Ok(out),
                Poll::Pending => unreachable!("test bodies are always ready"),
            }
        }
    }

    const ANTHROPIC: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":40}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello \\\"usage\\\"\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

    const OPENAI: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n\
data: [DONE]\n\n";

    fn sse(chunks: &[&[u8]]) -> (ResponseBody, Seen) {
        let mut body = upstream(chunks).with_format(Format::Sse);
        let seen = Seen::attach(&mut body);
        (body, seen)
    }

    #[test]
    fn anthropic_stream_complete_at_every_split() {
        let all = ANTHROPIC.as_bytes();
        for cut in 0..=all.len() {
            let (body, seen) = sse(&[&all[..cut], &all[cut..]]);
            assert_eq!(drain(body).expect("ok"), all);
            let c = seen.one();
            assert_eq!(c.outcome, Outcome::Complete, "cut at {cut}");
            let u = c.usage.expect("usage");
            assert_eq!(
                (u.input_tokens, u.output_tokens, u.cache_read_input_tokens),
                (25, 15, 40),
                "cut at {cut}"
            );
            assert!(c.content_started);
            assert_eq!(c.bytes, all.len() as u64);
            assert_eq!(seen.data(), all);
        }
    }

    #[test]
    fn crlf_line_endings() {
        let crlf = ANTHROPIC.replace('\n', "\r\n");
        let (body, seen) = sse(&[crlf.as_bytes()]);
        drain(body).expect("ok");
        let c = seen.one();
        assert_eq!(c.outcome, Outcome::Complete);
        assert_eq!(c.usage.map(|u| u.output_tokens), Some(15));
    }

    #[test]
    fn anthropic_truncated_stream() {
        let cut = ANTHROPIC.find("event: message_delta").expect("delta");
        let (body, seen) = sse(&[&ANTHROPIC.as_bytes()[..cut]]);
        drain(body).expect("ok");
        let c = seen.one();
        assert_eq!(c.outcome, Outcome::Truncated);
        // The input tokens of message_start were seen before the cut.
        assert_eq!(
            c.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((25, 1))
        );
        // Cut inside the final event (no blank line after message_stop).
        let (body, seen) = sse(&[ANTHROPIC.trim_end().as_bytes()]);
        drain(body).expect("ok");
        assert_eq!(seen.one().outcome, Outcome::Truncated);
    }

    #[test]
    fn anthropic_mid_stream_overloaded_error() {
        let cut = ANTHROPIC.find("event: content_block_stop").expect("stop");
        let stream = format!(
            "{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n",
            &ANTHROPIC[..cut]
        );
        let (body, seen) = sse(&[stream.as_bytes()]);
        drain(body).expect("ok");
        let c = seen.one();
        assert_eq!(c.outcome, Outcome::ErrorEvent);
        let e = c.error.expect("classified");
        assert_eq!(e.kind, crate::provider::ErrorKind::Overloaded);
        assert_eq!(
            e.error_type.map(|t| t.as_str().to_owned()).as_deref(),
            Some("overloaded_error")
        );
        assert!(c.content_started);
        // An error before any content: content_started stays false.
        let early = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (body, seen) = sse(&[early.as_bytes()]);
        drain(body).expect("ok");
        let c = seen.one();
        assert_eq!((c.outcome, c.content_started), (Outcome::ErrorEvent, false));
    }

    #[test]
    fn openai_stream_with_usage_complete_and_truncated() {
        let (body, seen) = sse(&[OPENAI.as_bytes()]);
        drain(body).expect("ok");
        let c = seen.one();
        assert_eq!(c.outcome, Outcome::Complete);
        assert_eq!(
            c.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((9, 2))
        );

        let without_done = OPENAI.replace("data: [DONE]\n\n", "");
        let (body, seen) = sse(&[without_done.as_bytes()]);
        drain(body).expect("ok");
        assert_eq!(seen.one().outcome, Outcome::Truncated);

        // No include_usage: complete, usage unknown.
        let no_usage: String = OPENAI
            .split("\n\n")
            .filter(|e| !e.contains("prompt_tokens"))
            .map(|e| format!("{e}\n\n"))
            .collect();
        let (body, seen) = sse(&[no_usage.trim_end_matches('\n').as_bytes(), b"\n\n"]);
        drain(body).expect("ok");
        let c = seen.one();
        assert_eq!((c.outcome, c.usage), (Outcome::Complete, None));
    }

    #[test]
    fn openai_mid_stream_error() {
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n\
                      data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
        let (body, seen) = sse(&[stream.as_bytes()]);
        drain(body).expect("ok");
        let c = seen.one();
        assert_eq!(c.outcome, Outcome::ErrorEvent);
        let e = c.error.expect("classified");
        assert_eq!(
            e.error_type.map(|t| t.as_str().to_owned()).as_deref(),
            Some("server_error")
        );
    }

    #[test]
    fn openai_responses_completed_event() {
        let stream = "event: response.output_text.delta\ndata: {\"delta\":\"hi\"}\n\n\
                      event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":3}}}\n\n";
        let (body, seen) = sse(&[stream.as_bytes()]);
        drain(body).expect("ok");
        let c = seen.one();
        assert_eq!(c.outcome, Outcome::Complete);
        assert_eq!(
            c.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((7, 3))
        );
    }

    #[test]
    fn json_body_usage_across_chunks() {
        let json = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":3,"output_tokens":4}}"#;
        let mut body =
            upstream(&[&json[..10], &json[10..50], &json[50..]]).with_format(Format::Json);
        let seen = Seen::attach(&mut body);
        drain(body).expect("ok");
        let c = seen.one();
        assert_eq!(c.outcome, Outcome::Complete);
        assert_eq!(
            c.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((3, 4))
        );
    }

    #[test]
    fn from_response_picks_format_from_content_type() {
        let res = Response::builder()
            .header("content-type", "text/event-stream; charset=utf-8")
            .body(Chunks(VecDeque::from([Ok(Bytes::from_static(
                b"data: [DONE]\n\n",
            ))])))
            .expect("response");
        let mut res = ResponseBody::from_response(res);
        let seen = Seen::attach(res.body_mut());
        drain(res.into_body()).expect("ok");
        assert_eq!(seen.one().outcome, Outcome::Complete);
        // The same bytes as opaque JSON are complete too, but with no usage.
        let mut h = HeaderMap::new();
        h.insert("content-type", "Application/JSON".parse().expect("hv"));
        assert_eq!(Format::from_headers(&h), Format::Json);
        h.insert(
            "content-type",
            "application/problem+json".parse().expect("hv"),
        );
        assert_eq!(Format::from_headers(&h), Format::Json);
        h.insert("content-type", "text/plain".parse().expect("hv"));
        assert_eq!(Format::from_headers(&h), Format::Opaque);
        h.insert(
            "content-type",
            " Text/Event-Stream ; charset=utf-8".parse().expect("hv"),
        );
        assert_eq!(Format::from_headers(&h), Format::Sse);
        h.insert("content-type", "application/jsonx".parse().expect("hv"));
        assert_eq!(Format::from_headers(&h), Format::Opaque);
        h.insert(
            "content-type",
            http::HeaderValue::from_bytes(b"application/json\xff").expect("hv"),
        );
        assert_eq!(Format::from_headers(&h), Format::Opaque);
    }

    #[test]
    fn dropped_before_end_reports_dropped_once() {
        let (mut body, seen) = sse(&[ANTHROPIC.as_bytes(), b"more"]);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let first = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(first, Poll::Ready(Some(Ok(_)))));
        assert!(seen.completions().is_empty());
        drop(body);
        let c = seen.one();
        assert_eq!(c.outcome, Outcome::Dropped);
        assert_eq!(c.usage.map(|u| u.output_tokens), Some(15));
    }

    #[test]
    fn body_error_reported() {
        let mut body = ResponseBody::new(Chunks(VecDeque::from([
            Ok(Bytes::from_static(b"{\"usa")),
            Err(std::io::Error::other("connection reset")),
        ])))
        .with_format(Format::Json);
        let seen = Seen::attach(&mut body);
        let err = drain(body).expect_err("error");
        assert!(err.to_string().contains("connection reset"));
        let c = seen.one();
        assert_eq!((c.outcome, c.usage), (Outcome::BodyError, None));
    }

    #[test]
    fn end_noticed_without_polling_for_none() {
        // hyper stops once `is_end_stream` is true; the completion must
        // fire then, not only at drop.
        let mut body = ResponseBody::full_sse(Bytes::from_static(ANTHROPIC.as_bytes()));
        let seen = Seen::attach(&mut body);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(body.is_end_stream());
        assert_eq!(seen.one().outcome, Outcome::Complete);
        drop(body);
        assert_eq!(seen.completions().len(), 1, "not told twice");
    }

    #[test]
    fn observer_added_after_end_is_told_at_once() {
        let mut body = ResponseBody::full_sse(Bytes::from_static(ANTHROPIC.as_bytes()));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let _ = Pin::new(&mut body).poll_frame(&mut cx);
        let seen = Seen::attach(&mut body);
        let c = seen.one();
        assert_eq!(c.outcome, Outcome::Complete);
        assert_eq!(c.usage.map(|u| u.output_tokens), Some(15));
    }

    #[test]
    fn oversized_event_stops_observing_with_bounded_memory() {
        let huge = vec![b'x'; SSE_EVENT_LIMIT + 10];
        let mut chunks: Vec<&[u8]> = vec![b"data: "];
        chunks.extend(huge.chunks(4096));
        chunks.push(b"\n\ndata: [DONE]\n\n");
        let (body, seen) = sse(&chunks);
        let out = drain(body).expect("ok");
        assert_eq!(out.len(), 6 + huge.len() + 16, "data still passes through");
        assert_eq!(seen.one().outcome, Outcome::Unobserved);
    }

    #[test]
    fn replay_is_byte_identical() {
        let chunks: Arc<[Bytes]> = ANTHROPIC
            .as_bytes()
            .chunks(17)
            .map(Bytes::copy_from_slice)
            .collect();
        let mut body = ResponseBody::replay(Arc::clone(&chunks)).with_format(Format::Sse);
        assert_eq!(body.size_hint().exact(), Some(ANTHROPIC.len() as u64));
        let seen = Seen::attach(&mut body);
        assert_eq!(drain(body).expect("ok"), ANTHROPIC.as_bytes());
        assert_eq!(seen.one().outcome, Outcome::Complete);
    }

    #[test]
    fn wrapping_a_response_body_does_not_nest() {
        let mut inner = ResponseBody::full("abc");
        let seen = Seen::attach(&mut inner);
        let outer = ResponseBody::new(inner);
        assert!(matches!(outer.kind, Kind::Full(_)), "not boxed again");
        assert_eq!(drain(outer).expect("ok"), b"abc");
        assert_eq!(seen.one().outcome, Outcome::Complete);
    }

    fn cx() -> Context<'static> {
        Context::from_waker(std::task::Waker::noop())
    }

    #[test]
    fn peek_to_end_then_deliver_everything_once() {
        let json = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
        let mut body = upstream(&[&json[..20], &json[20..]]).with_format(Format::Json);
        let seen = Seen::attach(&mut body);
        assert_eq!(body.poll_peek_to_end(&mut cx(), 1 << 16), Poll::Ready(()));
        assert_eq!(body.peeked(), Bytes::from_static(json));
        assert!(seen.data().is_empty(), "peeking delivers nothing");
        assert!(!body.is_end_stream());
        assert_eq!(drain(body).expect("ok"), json);
        assert_eq!(seen.data(), json);
        assert_eq!(seen.one().outcome, Outcome::Complete);
    }

    #[test]
    fn peek_respects_its_limit() {
        let mut body = upstream(&[b"aaaa", b"bbbb", b"cccc"]);
        assert_eq!(body.poll_peek_to_end(&mut cx(), 5), Poll::Ready(()));
        assert_eq!(
            body.peeked_len(),
            8,
            "stops at the first frame past the limit"
        );
        assert_eq!(drain(body).expect("ok"), b"aaaabbbbcccc");
    }

    #[test]
    fn stream_start_error_before_content() {
        let early = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
                     event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (mut body, seen) = sse(&[&early.as_bytes()[..30], &early.as_bytes()[30..]]);
        match body.poll_stream_start(&mut cx(), 1 << 16) {
            Poll::Ready(StreamStart::Error(e)) => {
                assert_eq!(e.kind, crate::provider::ErrorKind::Overloaded)
            }
            other => panic!("{other:?}"),
        }
        drop(body);
        assert_eq!(seen.one().outcome, Outcome::Dropped);
    }

    #[test]
    fn stream_start_content_keeps_every_byte() {
        let (mut body, seen) = sse(&ANTHROPIC.as_bytes().chunks(40).collect::<Vec<_>>());
        assert_eq!(
            body.poll_stream_start(&mut cx(), 1 << 16),
            Poll::Ready(StreamStart::Content)
        );
        assert!(body.peeked_len() > 0);
        assert_eq!(drain(body).expect("ok"), ANTHROPIC.as_bytes());
        let c = seen.one();
        assert_eq!(c.outcome, Outcome::Complete);
        assert_eq!(
            c.usage.map(|u| u.output_tokens),
            Some(15),
            "usage observed once, at delivery"
        );
    }

    #[test]
    fn stream_start_ended_and_undecided() {
        let (mut body, _) = sse(&[b"event: ping\ndata: {}\n\n"]);
        assert_eq!(
            body.poll_stream_start(&mut cx(), 1 << 16),
            Poll::Ready(StreamStart::Ended)
        );
        let (mut body, _) = sse(&[b"event: ping\ndata: {}\n\n", b"event: ping\ndata: {}\n\n"]);
        assert_eq!(
            body.poll_stream_start(&mut cx(), 10),
            Poll::Ready(StreamStart::Undecided)
        );
        let mut json = ResponseBody::full("{}").with_format(Format::Json);
        assert_eq!(
            json.poll_stream_start(&mut cx(), 10),
            Poll::Ready(StreamStart::Content)
        );
    }

    #[test]
    fn peeked_upstream_error_is_delivered_after_the_frames() {
        let mut body = ResponseBody::new(Chunks(VecDeque::from([
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("reset")),
        ])));
        let seen = Seen::attach(&mut body);
        assert_eq!(body.poll_peek_to_end(&mut cx(), 100), Poll::Ready(()));
        let mut cx = cx();
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(Some(Err(_)))
        ));
        assert_eq!(seen.one().outcome, Outcome::BodyError);
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_gives_the_same_observation(cuts in proptest::collection::vec(0usize..2000, 0..12)) {
            for stream in [ANTHROPIC, OPENAI] {
                let bytes = stream.as_bytes();
                let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
                points.sort_unstable();
                let mut chunks = Vec::new();
                let mut last = 0;
                for p in points {
                    chunks.push(&bytes[last..p]);
                    last = p;
                }
                chunks.push(&bytes[last..]);
                let (body, seen) = sse(&chunks);
                proptest::prop_assert_eq!(drain(body).expect("ok"), bytes);
                let c = seen.one();
                proptest::prop_assert_eq!(c.outcome, Outcome::Complete);
                proptest::prop_assert!(c.usage.is_some());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let (body, seen) = sse(&[&data]);
            drain(body).expect("ok");
            proptest::prop_assert_eq!(seen.completions().len(), 1);
        }
    }
}
