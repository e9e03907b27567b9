//! gRPC responses through the retry future: the status in trailers-only
//! headers or in trailers before any message, the pushback as the delay,
//! and a call that has sent a message is never retried.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::provider::GrpcCode;
use crate::request::ReplayBody;
use crate::response::ResponseBody;
use crate::retry::{RetryInfo, RetryLayer, RetryReason, StopReason};

/// A body of scripted frames; a `None` in the script is a frame that is
/// not ready yet (the body wakes itself and answers the next poll).
struct Frames(VecDeque<Option<Frame<Bytes>>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.pop_front() {
            Some(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(None) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn trailers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().expect("value"));
    }
    h
}

/// An answer of the scripted upstream.
enum Answer {
    /// A trailers-only response: the status in the headers, no body.
    TrailersOnly(&'static [(&'static str, &'static str)]),
    /// Headers, then these frames: `Some(data)` a message, `None` a pause.
    Frames(
        Vec<Option<&'static [u8]>>,
        &'static [(&'static str, &'static str)],
    ),
}

fn respond(answer: Answer) -> Response<Frames> {
    let builder = Response::builder().header("content-type", "application/grpc");
    match answer {
        Answer::TrailersOnly(status) => {
            let mut res = builder.body(Frames(VecDeque::new())).expect("response");
            res.headers_mut().extend(trailers(status));
            res
        }
        Answer::Frames(data, status) => {
            let mut frames: VecDeque<_> = data
                .into_iter()
                .map(|d| d.map(|d| Frame::data(Bytes::from_static(d))))
                .collect();
            frames.push_back(Some(Frame::trailers(trailers(status))));
            builder.body(Frames(frames)).expect("response")
        }
    }
}

/// Sends one request through the retry layer to an upstream answering
/// `answers` in turn; returns the response, the attempts' instants, and
/// the body's data and trailers as the caller reads them.
async fn run(answers: Vec<Answer>) -> (RetryInfo, Vec<Instant>, Vec<u8>, Option<HeaderMap>) {
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = {
        let (answers, seen) = (answers.clone(), seen.clone());
        tower::service_fn(move |_req: Request<ReplayBody>| {
            seen.lock().expect("lock").push(Instant::now());
            let answer = answers
                .lock()
                .expect("lock")
                .pop_front()
                .expect("an answer left");
            async move { Ok::<_, Infallible>(respond(answer)) }
        })
    };
    let mut svc = RetryLayer::builder()
        .max_attempts(4)
        .build()
        .expect("config")
        .layer(upstream);
    std::future::poll_fn(|cx| svc.poll_ready(cx))
        .await
        .expect("ready");
    let res: Response<ResponseBody> = svc
        .call(Request::new(ReplayBody::from(&b"\0\0\0\0\x02hi"[..])))
        .await
        .expect("response");
    let info = *res.extensions().get::<RetryInfo>().expect("info");
    let collected = res.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    let data = collected.to_bytes().to_vec();
    let seen = seen.lock().expect("lock").clone();
    (info, seen, data, trailers)
}

#[tokio::test(start_paused = true)]
async fn trailers_only_resource_exhausted_waits_for_the_pushback() {
    let (info, seen, data, trailers) = run(vec![
        Answer::TrailersOnly(&[("grpc-status", "8"), ("grpc-retry-pushback-ms", "300")]),
        Answer::Frames(vec![Some(b"\0\0\0\0\x02ok")], &[("grpc-status", "0")]),
    ])
    .await;
    assert_eq!(info.attempts, 2);
    assert_eq!(
        info.last_reason,
        Some(RetryReason::Grpc(GrpcCode::ResourceExhausted))
    );
    assert_eq!(info.stopped, None);
    let waited = seen[1] - seen[0];
    // The pushback exactly, plus positive jitter of at most 10 % (+1 ms
    // timer rounding).
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited <= Duration::from_millis(331), "{waited:?}");
    assert_eq!(data, b"\0\0\0\0\x02ok");
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
}

#[tokio::test(start_paused = true)]
async fn unavailable_in_trailers_before_any_message_is_retried() {
    // Headers, a pause (the read-ahead has to wait), then trailers only.
    let (info, seen, data, trailers) = run(vec![
        Answer::Frames(vec![None], &[("grpc-status", "14")]),
        Answer::Frames(vec![Some(b"\0\0\0\0\x02ok")], &[("grpc-status", "0")]),
    ])
    .await;
    assert_eq!(seen.len(), 2);
    assert_eq!(
        info.last_reason,
        Some(RetryReason::Grpc(GrpcCode::Unavailable))
    );
    assert_eq!(data, b"\0\0\0\0\x02ok");
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
}

#[tokio::test(start_paused = true)]
async fn a_call_that_sent_a_message_is_never_retried() {
    let (info, seen, data, trailers) = run(vec![Answer::Frames(
        vec![None, Some(b"\0\0\0\0\x01a")],
        &[("grpc-status", "14")],
    )])
    .await;
    assert_eq!(seen.len(), 1);
    assert_eq!(info.attempts, 1);
    assert_eq!(info.stopped, None);
    // Every byte and the failing trailers reach the caller.
    assert_eq!(data, b"\0\0\0\0\x01a");
    assert_eq!(trailers.expect("trailers")["grpc-status"], "14");
}

#[tokio::test(start_paused = true)]
async fn negative_pushback_is_not_retried() {
    let (info, seen, _, _) = run(vec![Answer::TrailersOnly(&[
        ("grpc-status", "14"),
        ("grpc-retry-pushback-ms", "-1"),
    ])])
    .await;
    assert_eq!(seen.len(), 1);
    assert_eq!(info.stopped, Some(StopReason::NotRetryable));
}

#[tokio::test(start_paused = true)]
async fn non_retryable_codes_and_ok_are_delivered() {
    let (info, seen, _, _) = run(vec![Answer::TrailersOnly(&[("grpc-status", "3")])]).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(info.stopped, Some(StopReason::NotRetryable));

    let (info, seen, _, trailers) =
        run(vec![Answer::Frames(vec![], &[("grpc-status", "0")])]).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(info.stopped, None);
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
}

#[tokio::test(start_paused = true)]
async fn unavailable_without_pushback_backs_off_until_attempts_run_out() {
    let (info, seen, _, _) = run(vec![
        Answer::TrailersOnly(&[("grpc-status", "14")]),
        Answer::TrailersOnly(&[("grpc-status", "14")]),
        Answer::TrailersOnly(&[("grpc-status", "14")]),
        Answer::TrailersOnly(&[("grpc-status", "14")]),
    ])
    .await;
    assert_eq!(seen.len(), 4);
    assert_eq!(info.attempts, 4);
    assert_eq!(info.stopped, Some(StopReason::Exhausted));
}
