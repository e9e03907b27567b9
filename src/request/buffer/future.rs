//! Futures of [`BufferBody`](super::BufferBody).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::{BodyTooLarge, BoxError};
use crate::request::{ReplayBody, RequestMeta};

pin_project! {
    /// The response future of [`BufferBody`]: reads the body, then waits
    /// for the inner service and calls it.
    ///
    /// [`BufferBody`]: super::BufferBody
    pub struct ResponseFuture<S: Service<Request<ReplayBody>>, B> {
        #[pin]
        state: State<S, B>,
    }
}

impl<S: Service<Request<ReplayBody>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<ReplayBody>>, B> {
        Reading {
            #[pin]
            body: B,
            parts: Option<http::request::Parts>,
            buf: BytesMut,
            first: Option<Bytes>,
            limit: usize,
            inner: Option<S>,
        },
        Ready {
            req: Option<Request<ReplayBody>>,
            inner: S,
        },
        Calling {
            #[pin]
            fut: S::Future,
        },
        Failed {
            err: Option<BoxError>,
        },
    }
}

/// A request body: already buffered, or to read.
pub(super) enum ToRead<B> {
    Replay(ReplayBody),
    Other(B),
}

impl<S: Service<Request<ReplayBody>>, B: Body + 'static> ResponseFuture<S, B> {
    /// The request was sent at the call.
    pub(super) fn calling(fut: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
        }
    }

    pub(super) fn new(
        parts: http::request::Parts,
        body: ToRead<B>,
        inner: S,
        limit: usize,
    ) -> Self {
        let state = match body {
            ToRead::Replay(replay) if replay.len() > limit => State::Failed {
                err: Some(BodyTooLarge { limit }.into()),
            },
            ToRead::Replay(replay) => State::Ready {
                req: Some(finish(parts, replay)),
                inner,
            },
            ToRead::Other(body) => {
                if body.size_hint().lower() > limit as u64 {
                    State::Failed {
                        err: Some(BodyTooLarge { limit }.into()),
                    }
                } else {
                    State::Reading {
                        body,
                        parts: Some(parts),
                        buf: BytesMut::new(),
                        first: None,
                        limit,
                        inner: Some(inner),
                    }
                }
            }
        };
        ResponseFuture { state }
    }
}

pub(super) fn finish(parts: http::request::Parts, body: ReplayBody) -> Request<ReplayBody> {
    let mut req = Request::from_parts(parts, body);
    crate::request::key::mark_sensitive(req.headers_mut());
    RequestMeta::for_request(&mut req);
    req
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reading {
                    mut body,
                    parts,
                    buf,
                    first,
                    limit,
                    inner,
                } => {
                    let frame = match ready!(body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => return Poll::Ready(Err(e.into())),
                        None => {
                            // Zero-copy when the body came in one chunk.
                            let data = match first.take() {
                                Some(one) if buf.is_empty() => one,
                                Some(one) => {
                                    let mut all = BytesMut::with_capacity(one.len() + buf.len());
                                    all.extend_from_slice(&one);
                                    all.extend_from_slice(buf);
                                    all.freeze()
                                }
                                None => std::mem::take(buf).freeze(),
                            };
                            let (Some(parts), Some(inner)) = (parts.take(), inner.take()) else {
                                return Poll::Ready(Err(
                                    "buffer future polled after completion".into()
                                ));
                            };
                            let req = finish(parts, ReplayBody::new(data));
                            this.state.set(State::Ready {
                                req: Some(req),
                                inner,
                            });
                            continue;
                        }
                    };
                    let Ok(mut data) = frame.into_data() else {
                        continue; // trailers: dropped, see the type docs
                    };
                    let have = first.as_ref().map_or(0, |f| f.len()) + buf.len();
                    if data.remaining_len() > limit.saturating_sub(have) {
                        return Poll::Ready(Err(BodyTooLarge { limit: *limit }.into()));
                    }
                    if first.is_none() && buf.is_empty() {
                        *first = Some(data.copy_to_bytes_all());
                    } else {
                        buf.extend_from_slice(&data.copy_to_bytes_all());
                    }
                }
                StateProj::Ready { req, inner } => {
                    ready!(inner.poll_ready(cx)).map_err(Into::into)?;
                    let Some(req) = req.take() else {
                        return Poll::Ready(Err("buffer future polled after completion".into()));
                    };
                    let fut = inner.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    return fut.poll(cx).map_err(Into::into);
                }
                StateProj::Failed { err } => {
                    return Poll::Ready(Err(err
                        .take()
                        .unwrap_or_else(|| "buffer future polled after completion".into())));
                }
            }
        }
    }
}

/// Reading any `Buf` into `Bytes` (zero-copy when it already is `Bytes`).
trait BufExt {
    fn remaining_len(&self) -> usize;
    fn copy_to_bytes_all(&mut self) -> Bytes;
}

impl<T: bytes::Buf> BufExt for T {
    fn remaining_len(&self) -> usize {
        self.remaining()
    }
    fn copy_to_bytes_all(&mut self) -> Bytes {
        let n = self.remaining();
        self.copy_to_bytes(n)
    }
}
