//! Read-ahead: frames of a [`ResponseBody`] read before the caller asks for
//! them, so that a layer can look at an error body or at how a stream starts
//! ([`StreamStart`]) before the response reaches the caller. Every byte is
//! still delivered, in order, and observers see it only then.

use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Frame;

use crate::error::BoxError;
use crate::provider::ErrorClass;

use super::body::{ResponseBody, Tracker};
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
