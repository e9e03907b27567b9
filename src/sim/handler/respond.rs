//! Rendering responses: the headers every response carries, errors in each
//! API's shape, and the body a stream task feeds.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, DATE, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

use crate::sim::bucket::RateSnapshot;
use crate::sim::config::SimConfig;
use crate::sim::idempotency::Done;
use crate::sim::wire::{ceil_millis, ceil_secs};
use crate::sim::{anthropic, openai};

use super::{Api, SimError};

pub(super) fn base_headers(api: Api, request_id: &str, wall: SystemTime) -> HeaderMap {
    let mut h = HeaderMap::new();
    let name = match api {
        Api::Anthropic => HeaderName::from_static("request-id"),
        Api::OpenAi => HeaderName::from_static("x-request-id"),
    };
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(name, v);
    }
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(wall)) {
        h.insert(DATE, v);
    }
    h
}

pub(crate) fn put(h: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        h.insert(HeaderName::from_static(name), v);
    }
}

pub(super) fn rate_headers(
    api: Api,
    config: &SimConfig,
    h: &mut HeaderMap,
    snap: &RateSnapshot,
    wall: SystemTime,
) {
    match api {
        Api::Anthropic => anthropic::rate_headers(h, snap, wall, config),
        Api::OpenAi => openai::rate_headers(h, snap),
    }
}

pub(super) fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// Renders an error in the API's shape, with rate-limit headers when the
/// (key, model) is known and `retry-after` for a rate limit.
pub(crate) fn error_response(
    api: Api,
    config: &SimConfig,
    request_id: &str,
    err: &SimError,
    snap: Option<&RateSnapshot>,
) -> Response<Body> {
    let wall = SystemTime::now();
    let mut headers = base_headers(api, request_id, wall);
    if let Some(s) = snap {
        rate_headers(api, config, &mut headers, s, wall);
    }
    if let SimError::RateLimited { wait, .. } = err {
        put(&mut headers, "retry-after", ceil_secs(*wait));
        if config.time_scale != 1.0 {
            put(&mut headers, "retry-after-ms", ceil_millis(*wait));
        }
    }
    let (status, body) = match api {
        Api::Anthropic => anthropic::error(err, request_id),
        Api::OpenAi => openai::error(err),
    };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    build(status, headers, Body::from(body.to_string()))
}

/// Rounds to the nearest thousand (half up), never above `limit`.
pub(crate) fn round_thousand(n: u64, limit: u64) -> u64 {
    (n.saturating_add(500) / 1000 * 1000).min(limit)
}

/// What the body task sends: bytes, or the cut that ends a stalled body.
#[derive(Debug)]
pub(super) enum Piece {
    Data(Bytes),
    Cut,
}

/// The error a stalled body ends with once the stall has run out: hyper
/// closes the connection, so the client sees an incomplete body.
#[derive(Debug)]
pub(crate) struct StalledBody;

impl fmt::Display for StalledBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("simulated stalled body cut")
    }
}

impl std::error::Error for StalledBody {}

/// A response body fed by a task (a stream, or a stalled body).
#[derive(Debug)]
pub(super) struct ChannelBody {
    rx: mpsc::Receiver<Piece>,
    /// Recorded when the task has sent everything and the connection has
    /// taken it all: only given for a complete stream.
    done: Option<Done>,
}

impl ChannelBody {
    pub(super) fn new(rx: mpsc::Receiver<Piece>, done: Option<Done>) -> Self {
        ChannelBody { rx, done }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = StalledBody;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StalledBody>>> {
        let piece = std::task::ready!(self.rx.poll_recv(cx));
        Poll::Ready(match piece {
            Some(Piece::Data(b)) => Some(Ok(Frame::data(b))),
            Some(Piece::Cut) => Some(Err(StalledBody)),
            None => {
                if let Some(done) = self.done.take() {
                    done.fire();
                }
                None
            }
        })
    }
}

/// A whole JSON body, recording its completion when the connection takes
/// it.
#[derive(Debug)]
pub(super) struct WholeBody {
    bytes: Option<Bytes>,
    done: Option<Done>,
}

impl WholeBody {
    pub(super) fn new(bytes: Bytes, done: Option<Done>) -> Self {
        WholeBody {
            bytes: Some(bytes),
            done,
        }
    }
}

impl http_body::Body for WholeBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let bytes = self.bytes.take();
        if bytes.is_some()
            && let Some(done) = self.done.take()
        {
            done.fire();
        }
        Poll::Ready(bytes.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(round_thousand(19_499, 20_000), 19_000);
        assert_eq!(round_thousand(19_500, 20_000), 20_000);
        assert_eq!(round_thousand(1_500, 1_500), 1_500);
        assert_eq!(round_thousand(0, 10), 0);
    }
}
