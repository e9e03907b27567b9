//! Read-ahead: frames of a [`ResponseBody`] read before the caller asks for
//! them, so that a layer can look at an error body or at how a stream starts
//! ([`StreamStart`]) before the response reaches the caller. Every byte is
//! still delivered, in order, and observers see it only then.
//!
//! A read-ahead is a wait the layer makes on its own account, so it is
//! always bounded in time as well as in size ([`look_until`]); a body that
//! stalls past the bound is given up ([`ResponseBody::give_up_stalled`]):
//! what was read is kept, the upstream body — and what it holds below — is
//! let go at once.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep, sleep_until};

use crate::error::{BodyStalled, BoxError};
use crate::provider::ErrorClass;

use super::body::{Format, ResponseBody, Tracker};
use super::sse::SseTracker;

/// Frames read ahead of the caller.
#[derive(Default)]
pub(super) struct Peek {
    pub(super) frames: std::collections::VecDeque<Frame<Bytes>>,
    pub(super) bytes: usize,
    /// How the upstream ended while peeking: `Ok` for its end, `Err` for
    /// its error, to be delivered after the frames.
    pub(super) end: Option<Result<(), BoxError>>,
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

impl ResponseBody {
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

    /// The trailers read ahead and not yet delivered, if the body sent
    /// them (a gRPC call's `grpc-status` lives there).
    pub fn peeked_trailers(&self) -> Option<&http::HeaderMap> {
        self.peek
            .as_ref()?
            .frames
            .iter()
            .find_map(Frame::trailers_ref)
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
}

impl ResponseBody {
    /// Gives up a body whose read-ahead stalled for `waited`: the frames
    /// read ahead are kept and delivered, then a [`BodyStalled`] error ends
    /// the body. The upstream body is dropped now — its observers are told
    /// [`Dropped`](super::Outcome::Dropped), which releases what they hold
    /// (a concurrency permit, a rate-limit reservation) — instead of when a
    /// caller that may never read it lets it go.
    #[cfg_attr(not(any(feature = "retry", feature = "fallback")), allow(dead_code))]
    pub(crate) fn give_up_stalled(&mut self, waited: Duration) {
        let frames = self.peek.take().map(|p| p.frames).unwrap_or_default();
        let format = match &self.tracker {
            Tracker::Opaque => Format::Opaque,
            Tracker::Json(_) => Format::Json,
            Tracker::Sse(_) => Format::Sse,
        };
        let rest = Stalled {
            frames,
            error: Some(BodyStalled::new(waited)),
        };
        // The old body is dropped here, telling its observers.
        *self = ResponseBody::new(rest).with_format(format);
    }
}

/// What is left of a body given up: the frames read ahead, then the error.
#[cfg_attr(not(any(feature = "retry", feature = "fallback")), allow(dead_code))]
struct Stalled {
    frames: VecDeque<Frame<Bytes>>,
    error: Option<BodyStalled>,
}

impl Body for Stalled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(frame) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Poll::Ready(this.error.take().map(|e| Err(e.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.error.is_none()
    }
}

/// Polls `look` on `body` until it is ready — or, first, `until` passes
/// (`None`). Without `until` it waits as long as `look` does: callers pass
/// the earlier of the request's deadline and their own look-ahead timeout.
/// The timer is made only when `look` has to wait (a body already there
/// needs no runtime timer).
#[cfg_attr(not(any(feature = "retry", feature = "fallback")), allow(dead_code))]
pub(crate) async fn look_until<T>(
    body: &mut ResponseBody,
    until: Option<Instant>,
    mut look: impl FnMut(&mut ResponseBody, &mut Context<'_>) -> Poll<T>,
) -> Option<T> {
    let mut timer = pin!(None::<Sleep>);
    poll_fn(|cx| {
        if let Poll::Ready(t) = look(body, cx) {
            return Poll::Ready(Some(t));
        }
        let Some(at) = until else {
            return Poll::Pending;
        };
        if timer.is_none() {
            timer.set(Some(sleep_until(at)));
        }
        match timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
}
