use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::{Body, Frame};
use http_body_util::StreamBody;
use tower_layer::Layer;
use tower_service::Service;

use super::*;
use crate::error::BodyTooLarge;
use crate::request::{ReplayBody, RequestMeta};

type Echoed = (Bytes, Option<Arc<RequestMeta>>);

fn echo() -> impl Service<
    Request<ReplayBody>,
    Response = Echoed,
    Error = Infallible,
    Future = std::future::Ready<Result<Echoed, Infallible>>,
> + Clone {
    tower::service_fn(|req: Request<ReplayBody>| {
        let meta = RequestMeta::of(&req).cloned();
        std::future::ready(Ok((req.body().as_bytes().clone(), meta)))
    })
}

fn chunked(chunks: Vec<&'static [u8]>) -> impl Body<Data = Bytes, Error = Infallible> {
    StreamBody::new(futures_util_iter(chunks))
}

fn futures_util_iter(
    chunks: Vec<&'static [u8]>,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    struct It(std::vec::IntoIter<&'static [u8]>);
    impl futures_core::Stream for It {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(
                self.0
                    .next()
                    .map(|c| Ok(Frame::data(Bytes::from_static(c)))),
            )
        }
    }
    It(chunks.into_iter())
}

#[tokio::test]
async fn layer_buffers_chunks_and_attaches_meta() {
    use tower::ServiceExt;
    let svc = BufferBodyLayer::new(1024).layer(echo());
    let req = Request::post("/v1/messages")
        .body(chunked(vec![
            br#"{"model":"claude-haiku","max_"#,
            br#"tokens":9,"messages":[]}"#,
        ]))
        .expect("request");
    let (bytes, meta) = svc.oneshot(req).await.expect("ok");
    assert_eq!(
        bytes.as_ref(),
        br#"{"model":"claude-haiku","max_tokens":9,"messages":[]}"#
    );
    let meta = meta.expect("meta attached");
    assert_eq!(
        (meta.model(), meta.max_tokens()),
        (Some("claude-haiku"), Some(9))
    );
}

/// Guards the buffered path's readiness: a `ReplayBody` request is sent
/// at the call when the inner service said it was ready; otherwise (or
/// for a body still to read) it waits in the response future.
#[tokio::test]
async fn buffered_requests_are_sent_at_the_call_when_ready() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;
    #[derive(Clone)]
    struct Counted {
        checks: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
    }
    impl Service<Request<ReplayBody>> for Counted {
        type Response = ();
        type Error = Infallible;
        type Future = std::future::Ready<Result<(), Infallible>>;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            // Not ready at the first check.
            if self.checks.fetch_add(1, Ordering::SeqCst) == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<ReplayBody>) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(()))
        }
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = BufferBodyLayer::new(1024).layer(Counted {
        checks: Arc::default(),
        calls: Arc::clone(&calls),
    });
    let replay = || {
        Request::post("/v1/messages")
            .body(ReplayBody::from("{}"))
            .expect("req")
    };
    for (i, sent_at_call) in [(0, false), (1, true)] {
        let fut = ServiceExt::<Request<ReplayBody>>::ready(&mut svc)
            .await
            .expect("ready")
            .call(replay());
        assert_eq!(calls.load(Ordering::SeqCst), i + usize::from(sent_at_call));
        fut.await.expect("ok");
    }
    // A body still to read never goes at the call.
    /// Waits for readiness, then calls (the future is not polled).
    async fn ready_call<S: Service<R>, R>(svc: &mut S, req: R) -> S::Future
    where
        S::Error: fmt::Debug,
    {
        std::future::poll_fn(|cx| svc.poll_ready(cx))
            .await
            .expect("ready");
        svc.call(req)
    }
    let chunks = Request::post("/x").body(chunked(vec![b"{}"])).expect("req");
    let fut = ready_call(&mut svc, chunks).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    fut.await.expect("ok");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn over_limit_fails_without_buffering_past_it() {
    use tower::ServiceExt;
    let svc = BufferBodyLayer::new(10).layer(echo());
    // Exactly the limit is fine.
    let ok = Request::post("/x")
        .body(chunked(vec![b"12345", b"67890"]))
        .expect("req");
    assert!(svc.clone().oneshot(ok).await.is_ok());
    // One byte over, discovered while streaming.
    let req = Request::post("/x")
        .body(chunked(vec![b"12345", b"678901"]))
        .expect("req");
    let err = svc.clone().oneshot(req).await.expect_err("too large");
    assert_eq!(
        err.downcast_ref::<BodyTooLarge>(),
        Some(&BodyTooLarge { limit: 10 })
    );
    // Known from the size hint: refused before reading.
    let req = Request::post("/x")
        .body(String::from("01234567890"))
        .expect("req");
    let err = svc.clone().oneshot(req).await.expect_err("too large");
    assert!(err.is::<BodyTooLarge>());
    // A ReplayBody over the limit is refused too.
    let req = Request::post("/x")
        .body(ReplayBody::from("01234567890"))
        .expect("req");
    assert!(
        svc.oneshot(req)
            .await
            .expect_err("too large")
            .is::<BodyTooLarge>()
    );
}

#[tokio::test]
async fn replay_body_is_not_copied_and_meta_not_reparsed() {
    use tower::ServiceExt;
    let svc = BufferBodyLayer::new(1024).layer(echo());
    let data = Bytes::from_static(br#"{"model":"a","max_tokens":1}"#);
    let mut req = Request::post("/v1/messages")
        .body(ReplayBody::new(data.clone()))
        .expect("req");
    // A pre-existing meta is kept as it is (parse once).
    let preset = Arc::new(RequestMeta::parse(
        "/v1/messages",
        &HeaderMap::new(),
        b"{\"model\":\"preset\"}",
    ));
    req.extensions_mut().insert(Arc::clone(&preset));
    let (bytes, meta) = svc.oneshot(req).await.expect("ok");
    assert_eq!(bytes.as_ptr(), data.as_ptr(), "same allocation");
    assert!(Arc::ptr_eq(&meta.expect("meta"), &preset));
}

#[tokio::test]
async fn body_errors_surface() {
    use tower::ServiceExt;
    struct Broken;
    impl Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(Err(std::io::Error::other("reset by peer"))))
        }
    }
    let svc = BufferBodyLayer::new(1024).layer(echo());
    let err = svc
        .oneshot(Request::post("/x").body(Broken).expect("req"))
        .await
        .expect_err("body error");
    assert!(err.to_string().contains("reset by peer"));
}
