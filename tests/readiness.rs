//! The readiness contract of every layer and of the prebuilt stack, pinned
//! down against tower-test mocks: what `poll_ready` answers when the inner
//! service is not ready and when it is, when the inner service's `call`
//! happens (at the layer's `call`, or when the response future is polled),
//! and what becomes of capacity an inner service reserves in its own
//! `poll_ready` when no `call` follows on that instance.
//!
//! The reserving inner service is tower's `ConcurrencyLimit`, which takes a
//! semaphore permit in `poll_ready` and gives it up only in `call` (to the
//! response future) or when dropped; a second clone of it shows whether the
//! permit is still held. tower-test's mock panics on a `call` not preceded
//! by a ready `poll_ready` on the same instance, so every test also checks
//! that each layer keeps the `poll_ready` → `call` contract below it.

mod support;

use std::convert::Infallible;
use std::fmt::Debug;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use support::http::anthropic;
use support::poll_once;
use tower::limit::ConcurrencyLimit as Reserving;
use tower_layer::Layer;
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::response::ResponseBody;
use tower_service::Service;
use tower_test::mock::{self, SendResponse, Spawn};

type Req = Request<ReplayBody>;
type Res = Response<String>;
type Mock = mock::Mock<Req, Res>;
type Handle = mock::Handle<Req, Res>;

const URI: &str = "https://api.anthropic.com/v1/messages";
/// No `temperature`: the default cache policy passes it through.
const PASS: &str =
    r#"{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}"#;
/// `temperature: 0`: cached.
const CACHEABLE: &str = r#"{"model":"claude-haiku-4-5","max_tokens":16,"temperature":0,"messages":[{"role":"user","content":"2+2?"}]}"#;

/// A request the cache passes through (and every other layer sends).
fn pass() -> Req {
    anthropic(URI, "sk-ant-test", PASS)
}

/// A request the cache stores, and answers from memory once stored.
fn cacheable() -> Req {
    anthropic(URI, "sk-ant-test", CACHEABLE)
}

fn ok_json() -> Res {
    Response::builder()
        .header("content-type", "application/json")
        .body(String::from(
            r#"{"type":"message","content":[{"type":"text","text":"4"}],"usage":{"input_tokens":5,"output_tokens":1}}"#,
        ))
        .expect("response")
}

/// A mock inner service that is ready (for any number of requests).
fn ready() -> (Mock, Handle) {
    mock::pair()
}

/// A mock inner service that is not ready until `handle.allow(n)`.
fn not_ready() -> (Mock, Handle) {
    let (inner, mut handle) = mock::pair();
    handle.allow(0);
    (inner, handle)
}

/// The next request the mock received, if any: its answer's sender.
fn received(handle: &mut Handle) -> Option<SendResponse<Res>> {
    match handle.poll_request() {
        Poll::Ready(Some((_, answer))) => Some(answer),
        _ => None,
    }
}

#[track_caller]
fn assert_ready<E: Debug>(poll: Poll<Result<(), E>>) {
    assert!(matches!(poll, Poll::Ready(Ok(()))), "{poll:?}");
}

#[track_caller]
fn assert_pending<E: Debug>(poll: Poll<Result<(), E>>) {
    assert!(poll.is_pending(), "{poll:?}");
}

/// A request body still being uploaded: it never yields a frame.
struct Uploading;

impl Body for Uploading {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

/// Stores the answer to [`cacheable`] through `svc`: a miss sent on the
/// mock behind `handle`, answered, and its body read to the end.
async fn fill<S>(svc: &mut Spawn<S>, handle: &mut Handle)
where
    S: Service<Req, Response = Response<ResponseBody>>,
    S::Error: Debug,
{
    assert_ready(svc.poll_ready::<Req>());
    let mut miss = Box::pin(svc.call(cacheable()));
    assert!(poll_once(&mut miss).is_none());
    received(handle)
        .expect("the miss is sent")
        .send_response(ok_json());
    let res = poll_once(&mut miss).expect("answered").expect("response");
    assert_eq!(res.headers()["x-llm-cache"], "MISS");
    support::http::bytes(res).await;
}

// ---- the checks the layers share

/// The service `make` builds says ready whether or not its inner service
/// is.
fn check_always_ready<S>(make: impl FnOnce(Mock) -> S)
where
    S: Service<Req>,
    S::Error: Debug,
{
    let (inner, mut handle) = not_ready();
    let mut svc = Spawn::new(make(inner));
    assert_ready(svc.poll_ready::<Req>());
    handle.allow(1);
    assert_ready(svc.poll_ready::<Req>());
}

/// The service `make` builds is ready when its inner service is: pending
/// until then, and its caller woken then.
fn check_forwards_readiness<S>(make: impl FnOnce(Mock) -> S)
where
    S: Service<Req>,
    S::Error: Debug,
{
    let (inner, mut handle) = not_ready();
    let mut svc = Spawn::new(make(inner));
    assert_pending(svc.poll_ready::<Req>());
    handle.allow(1);
    assert!(svc.is_woken());
    assert_ready(svc.poll_ready::<Req>());
}

/// Over a ready inner service, `call(req)` calls it before it returns.
fn check_sent_at_the_call<S>(make: impl FnOnce(Mock) -> S, req: Req)
where
    S: Service<Req>,
    S::Error: Debug,
{
    let (inner, mut handle) = ready();
    let mut svc = Spawn::new(make(inner));
    assert_ready(svc.poll_ready::<Req>());
    let _fut = svc.call(req);
    assert!(received(&mut handle).is_some(), "sent at the call");
}

/// Over an inner service that is not ready, `call(req)` does not call it:
/// the response future waits for it, calls it, and answers (returned).
fn check_sent_by_the_future<S, B>(make: impl FnOnce(Mock) -> S, req: Req) -> Response<B>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Debug,
{
    let (inner, mut handle) = not_ready();
    let mut svc = Spawn::new(make(inner));
    assert_ready(svc.poll_ready::<Req>());
    let mut fut = Box::pin(svc.call(req));
    assert!(received(&mut handle).is_none(), "not sent at the call");
    assert!(poll_once(&mut fut).is_none());
    handle.allow(1);
    assert!(poll_once(&mut fut).is_none(), "sent, not answered");
    received(&mut handle)
        .expect("sent by the future")
        .send_response(ok_json());
    poll_once(&mut fut).expect("answered").expect("response")
}

// ---- the hazard's scenes

type Other = Spawn<Reserving<Mock>>;

/// The service `make` builds over tower's `ConcurrencyLimit` of one
/// permit, another clone of that limit (ready only when the permit is
/// free), and the handle of the mock behind both.
fn over_one_permit<S>(make: impl FnOnce(Reserving<Mock>) -> S) -> (Spawn<S>, Other, Handle) {
    let (inner, handle) = ready();
    let limit = Reserving::new(inner, 1);
    let other = Spawn::new(limit.clone());
    (Spawn::new(make(limit)), other, handle)
}

/// A request still uploading its body through the service `make` builds
/// over one permit, polled ready first: its future (reading), the other
/// clone, the mock's handle.
fn uploading<S>(make: impl FnOnce(Reserving<Mock>) -> S) -> (Pin<Box<S::Future>>, Other, Handle)
where
    S: Service<Request<Uploading>>,
    S::Error: Debug,
{
    let (mut svc, other, handle) = over_one_permit(make);
    assert_ready(svc.poll_ready::<Request<Uploading>>());
    let mut upload = Box::pin(svc.call(Request::new(Uploading)));
    assert!(poll_once(&mut upload).is_none(), "still reading");
    (upload, other, handle)
}

/// A hit through the service `make` builds over one permit, polled ready
/// before the call — with the permit free then, or (`queued`) held by a
/// third clone and released after the hit: the service, the other clone,
/// the mock's handle.
async fn after_a_hit<S>(
    make: impl FnOnce(Reserving<Mock>) -> S,
    queued: bool,
) -> (Spawn<S>, Other, Handle)
where
    S: Service<Req, Response = Response<ResponseBody>>,
    S::Error: Debug,
{
    let (mut svc, other, mut handle) = over_one_permit(make);
    fill(&mut svc, &mut handle).await;
    let holder = queued.then(|| {
        let mut holder = other.clone();
        assert_ready(holder.poll_ready::<Req>()); // takes the permit
        holder
    });
    assert_ready(svc.poll_ready::<Req>());
    let hit = poll_once(Box::pin(svc.call(cacheable())))
        .expect("answered at once")
        .expect("hit");
    assert_eq!(hit.headers()["x-llm-cache"], "HIT");
    drop(holder);
    (svc, other, handle)
}

/// A request that waits its turn in the service `svc` (whose capacity is
/// used up), polled ready first: its future.
fn waiting<S: Service<Req>>(svc: &mut Spawn<S>) -> Pin<Box<S::Future>>
where
    S::Error: Debug,
{
    assert_ready(svc.poll_ready::<Req>());
    let mut waiting = Box::pin(svc.call(pass()));
    assert!(poll_once(&mut waiting).is_none(), "waits its turn");
    waiting
}

mod buffer_body {
    use super::*;
    use tower_llm_resilience::request::BufferBodyLayer;

    fn buffer_body<S>(inner: S) -> tower_llm_resilience::request::BufferBody<S> {
        BufferBodyLayer::default().layer(inner)
    }

    /// Always ready, whatever the inner service says: the body is read
    /// first, and the inner service waited for only then.
    #[test]
    fn always_ready_whatever_the_inner_service_says() {
        check_always_ready(buffer_body);
    }

    /// A body already buffered goes out at the call, on the inner service
    /// that said it was ready.
    #[test]
    fn a_buffered_body_is_sent_at_the_call_on_a_ready_inner_service() {
        check_sent_at_the_call(buffer_body, pass());
    }

    /// An inner service that was not ready is waited for, and called, by
    /// the response future.
    #[test]
    fn otherwise_the_future_waits_for_the_inner_service_and_sends() {
        let res = check_sent_by_the_future(buffer_body, pass());
        assert_eq!(res.status(), 200);
    }

    /// A body still to read is read first: the inner service is called by
    /// the response future once the body has ended, even when it was ready.
    #[test]
    fn a_body_to_read_is_read_before_the_inner_call() {
        let (inner, mut handle) = ready();
        let mut svc = Spawn::new(buffer_body(inner));
        assert_ready(svc.poll_ready::<Request<String>>());
        let req = Request::post(URI)
            .body(String::from(PASS))
            .expect("request");
        let mut fut = Box::pin(svc.call(req));
        assert!(received(&mut handle).is_none(), "not sent at the call");
        assert!(poll_once(&mut fut).is_none());
        assert!(received(&mut handle).is_some(), "sent once read");
    }

    /// A request whose body is still to read holds nothing
    /// below while it is read.
    #[test]
    fn an_upload_holds_no_reservation_below() {
        let (_upload, mut other, _handle) = uploading(buffer_body);
        assert_ready(other.poll_ready::<Req>());
    }
}

mod cache {
    use super::*;
    use tower::ServiceExt;
    use tower_llm_resilience::cache::{Cache, CacheLayer};

    fn cache<S>(inner: S) -> Cache<S> {
        CacheLayer::new().layer(inner)
    }

    /// Always ready, whatever the inner service says: a hit needs nothing
    /// below.
    #[test]
    fn always_ready_whatever_the_inner_service_says() {
        check_always_ready(cache);
    }

    /// A request that is not cached goes out at the call, on the inner
    /// service that said it was ready.
    #[test]
    fn a_pass_is_sent_at_the_call_on_a_ready_inner_service() {
        check_sent_at_the_call(cache, pass());
    }

    /// Otherwise — the inner service not ready, or a request that is
    /// looked up — the response future waits for the inner service and
    /// calls it.
    #[test]
    fn otherwise_the_future_waits_for_the_inner_service_and_sends() {
        for req in [pass(), cacheable()] {
            let res = check_sent_by_the_future(cache, req);
            assert_eq!(res.headers()["x-llm-cache"], "MISS");
        }
    }

    /// A hit is answered at the call, the inner service neither waited for
    /// nor called (here it is not even ready).
    #[tokio::test]
    async fn a_hit_never_calls_the_inner_service() {
        let (inner, mut handle) = ready();
        let mut svc = Spawn::new(cache(inner));
        fill(&mut svc, &mut handle).await;
        handle.allow(0);
        assert_ready(svc.poll_ready::<Req>());
        let res = poll_once(Box::pin(svc.call(cacheable())))
            .expect("answered at once")
            .expect("hit");
        assert_eq!(res.headers()["x-llm-cache"], "HIT");
        assert!(received(&mut handle).is_none());
    }

    /// The bound's common case: a service cloned per request and dropped
    /// after its call (`oneshot`) gives the reservation back at once.
    #[tokio::test]
    async fn a_hit_through_oneshot_keeps_nothing_reserved() {
        let (mut svc, mut other, mut handle) = over_one_permit(cache);
        fill(&mut svc, &mut handle).await;
        let hit = poll_once(Box::pin(svc.get_ref().clone().oneshot(cacheable())))
            .expect("answered at once")
            .expect("hit");
        assert_eq!(hit.headers()["x-llm-cache"], "HIT");
        assert_ready(other.poll_ready::<Req>());
    }

    /// A hit leaves nothing reserved below.
    #[tokio::test]
    async fn a_hit_holds_no_reservation_below() {
        let (_svc, mut other, _handle) = after_a_hit(cache, false).await;
        assert_ready(other.poll_ready::<Req>());
    }

    /// A hit leaves nothing queued below either.
    #[tokio::test]
    async fn a_hit_after_a_pending_ask_holds_no_permit() {
        let (_svc, mut other, _handle) = after_a_hit(cache, true).await;
        assert_ready(other.poll_ready::<Req>());
    }

    /// Two identical cacheable requests through two instances over one
    /// permit, both polled ready first (the first takes the permit): the
    /// leader's future (polled) and the waiter's (polled after it).
    type Pending = Pin<Box<<Cache<Reserving<Mock>> as Service<Req>>::Future>>;

    fn coalescing() -> (Pending, Pending, Handle) {
        let layer = CacheLayer::new();
        let (mut waiter, _, handle) = over_one_permit(|limit| layer.layer(limit));
        let mut leader = Spawn::new(waiter.get_ref().clone());
        assert_ready(waiter.poll_ready::<Req>()); // its inner takes the permit
        assert_ready(leader.poll_ready::<Req>()); // none left for this one
        let mut led = Box::pin(leader.call(cacheable()));
        assert!(poll_once(&mut led).is_none(), "leads");
        let mut waits = Box::pin(waiter.call(cacheable()));
        assert!(poll_once(&mut waits).is_none(), "waits for the leader");
        (led, waits, handle)
    }

    /// A waiter holds nothing below, so its leader is sent
    /// at once and serves it.
    #[tokio::test(start_paused = true)]
    async fn a_coalesced_waiter_holds_no_reservation_below() {
        let (mut led, mut waits, mut handle) = coalescing();
        assert!(poll_once(&mut led).is_none(), "sent");
        received(&mut handle)
            .expect("the leader's request")
            .send_response(ok_json());
        let res = poll_once(&mut led).expect("answered").expect("response");
        support::http::bytes(res).await;
        let res = poll_once(&mut waits).expect("served").expect("response");
        assert_eq!(res.headers()["x-llm-cache"], "HIT");
        assert!(received(&mut handle).is_none(), "one request upstream");
    }
}

mod fallback {
    use super::*;
    use tower_llm_resilience::fallback::{Fallback, FallbackLayer, Target};

    fn passthrough<S>(inner: S) -> Fallback<S> {
        FallbackLayer::new([]).layer(inner)
    }

    fn chain<S>(inner: S) -> Fallback<S> {
        FallbackLayer::new([Target::model("claude-sonnet-4-5")]).layer(inner)
    }

    /// With nothing to fall back to, the layer is a passthrough: readiness
    /// is the inner service's, and the call is its call.
    #[test]
    fn without_targets_readiness_and_call_are_the_inner_services() {
        check_forwards_readiness(passthrough);
        check_sent_at_the_call(passthrough, pass());
    }

    /// With targets, always ready without asking the inner service (a
    /// target that is not ready must not block the others): each attempt
    /// waits for its service in the response future, which calls it.
    #[test]
    fn with_targets_always_ready_without_asking_and_sent_by_the_future() {
        let (inner, mut handle) = not_ready();
        let mut svc = Spawn::new(chain(inner));
        assert_ready(svc.poll_ready::<Req>());
        handle.allow(1);
        assert!(!svc.is_woken(), "the inner service was not asked");
        let res = check_sent_by_the_future(chain, pass());
        assert_eq!(res.status(), 200);
    }

    /// No hazard: with targets nothing is reserved below before the
    /// response future runs, and there each `poll_ready` below is followed
    /// by its `call`.
    #[test]
    fn with_targets_nothing_is_reserved_below_before_the_future_runs() {
        let (mut svc, mut other, _handle) = over_one_permit(chain);
        assert_ready(svc.poll_ready::<Req>());
        let unpolled = svc.call(pass());
        assert_ready(other.poll_ready::<Req>());
        drop(unpolled);
    }
}

mod retry {
    use super::*;
    use tower_llm_resilience::retry::{Retry, RetryLayer};

    fn retry<S>(inner: S) -> Retry<S> {
        RetryLayer::new().layer(inner)
    }

    /// Always ready (each attempt waits for the inner service itself); the
    /// inner service is asked too, without waiting: its wake-up reaches
    /// the caller (a spurious one, for this always-ready service).
    #[test]
    fn always_ready_and_asks_the_inner_service() {
        check_always_ready(retry);
        let (inner, mut handle) = not_ready();
        let mut svc = Spawn::new(retry(inner));
        assert_ready(svc.poll_ready::<Req>());
        handle.allow(1);
        assert!(svc.is_woken(), "the inner service was asked");
    }

    /// The first attempt goes out at the call, on the inner service that
    /// said it was ready.
    #[test]
    fn the_first_attempt_is_sent_at_the_call_on_a_ready_inner_service() {
        check_sent_at_the_call(retry, pass());
    }

    /// An inner service that was not ready is waited for, and called, by
    /// the response future.
    #[test]
    fn otherwise_the_future_waits_for_the_inner_service_and_sends() {
        let res = check_sent_by_the_future(retry, pass());
        assert_eq!(res.status(), 200);
    }

    /// No hazard: the call that follows `poll_ready` always sends on the
    /// instance that was asked (at once when it said ready, else from the
    /// future it moves into), so what it reserved — or is queued for — is
    /// used, never kept.
    #[test]
    fn what_the_inner_service_reserved_when_asked_is_used_by_the_call() {
        let (mut first, mut other, mut handle) = over_one_permit(retry);
        let mut second = Spawn::new(first.get_ref().clone());
        assert_ready(first.poll_ready::<Req>()); // takes the permit
        assert_ready(second.poll_ready::<Req>()); // queued for it
        let mut a = Box::pin(first.call(pass()));
        let answer_a = received(&mut handle).expect("sent at the call");
        let mut b = Box::pin(second.call(pass()));
        assert!(poll_once(&mut b).is_none(), "waits for the permit");
        answer_a.send_response(ok_json());
        assert!(poll_once(&mut a).expect("answered").is_ok());
        drop(a);
        assert!(poll_once(&mut b).is_none(), "sent, not answered");
        received(&mut handle)
            .expect("sent by the future, on the permit")
            .send_response(ok_json());
        assert_pending(other.poll_ready::<Req>());
        assert!(poll_once(&mut b).expect("answered").is_ok());
        drop(b);
        assert_ready(other.poll_ready::<Req>());
    }
}

mod rate {
    use super::*;
    use tower_llm_resilience::rate::{Limit, Limits, RateLimit, RateLimitLayer};

    fn one_per_minute<S>(inner: S) -> RateLimit<S> {
        let limit = Limit::new(1, Duration::from_secs(60), 1).expect("limit");
        RateLimitLayer::new(Limits::unlimited().requests(limit)).layer(inner)
    }

    /// Sends one request through `svc`, answered and read: the bucket is
    /// empty for the next minute.
    async fn admit_one<S>(svc: &mut Spawn<S>, handle: &mut Handle)
    where
        S: Service<Req, Response = Response<ResponseBody>>,
        S::Error: Debug,
    {
        assert_ready(svc.poll_ready::<Req>());
        let mut fut = Box::pin(svc.call(pass()));
        received(handle)
            .expect("sent at the call")
            .send_response(ok_json());
        let res = poll_once(&mut fut).expect("answered").expect("response");
        support::http::bytes(res).await;
    }

    /// Readiness is the inner service's: admission depends on the request,
    /// so it is decided at the call.
    #[test]
    fn forwards_the_inner_services_readiness() {
        check_forwards_readiness(one_per_minute);
    }

    /// Admitted at once: sent at the call. Else the request waits in the
    /// response future, which sends it when admitted.
    #[tokio::test(start_paused = true)]
    async fn sent_at_the_call_when_admitted_at_once_else_by_the_future() {
        let (inner, mut handle) = ready();
        let mut svc = Spawn::new(one_per_minute(inner));
        admit_one(&mut svc, &mut handle).await;
        let mut second = waiting(&mut svc);
        assert!(received(&mut handle).is_none(), "not sent at the call");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(poll_once(&mut second).is_none(), "sent, not answered");
        assert!(received(&mut handle).is_some(), "sent by the future");
    }

    /// A request waiting for the bucket, through a limiter over one permit
    /// polled ready first: its future, the other clone, the mock's handle.
    type Waiting = Pin<Box<<RateLimit<Reserving<Mock>> as Service<Req>>::Future>>;

    async fn waiting_over_one_permit() -> (Waiting, Other, Handle) {
        let (mut svc, other, mut handle) = over_one_permit(one_per_minute);
        admit_one(&mut svc, &mut handle).await;
        (waiting(&mut svc), other, handle)
    }

    /// A waiting request holds nothing below until it is
    /// admitted.
    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_holds_no_reservation_below() {
        let (_waiting, mut other, _handle) = waiting_over_one_permit().await;
        assert_ready(other.poll_ready::<Req>());
    }
}

mod concurrency {
    use super::*;
    use tower_llm_resilience::concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};

    fn one_in_flight<S>(inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimitLayer::new(1).layer(inner)
    }

    /// Sends one request through `svc` and keeps its response, whose body
    /// holds the limiter's only permit (its future, and what that held
    /// below, is gone).
    fn take_the_permit<S>(svc: &mut Spawn<S>, handle: &mut Handle) -> Response<ResponseBody>
    where
        S: Service<Req, Response = Response<ResponseBody>>,
        S::Error: Debug,
    {
        assert_ready(svc.poll_ready::<Req>());
        let mut fut = Box::pin(svc.call(pass()));
        received(handle)
            .expect("sent at the call")
            .send_response(ok_json());
        poll_once(&mut fut).expect("answered").expect("response")
    }

    /// Readiness is the inner service's, not a permit's: a request waits
    /// for its permit in the queue, by its priority.
    #[test]
    fn forwards_the_inner_services_readiness() {
        check_forwards_readiness(one_in_flight);
    }

    /// A free permit: sent at the call. Else the request waits in the
    /// response future, which sends it when a permit is released.
    #[test]
    fn sent_at_the_call_when_a_permit_is_free_else_by_the_future() {
        let (inner, mut handle) = ready();
        let mut svc = Spawn::new(one_in_flight(inner));
        let held = take_the_permit(&mut svc, &mut handle);
        let mut second = waiting(&mut svc);
        assert!(received(&mut handle).is_none(), "not sent at the call");
        drop(held);
        assert!(poll_once(&mut second).is_none(), "sent, not answered");
        assert!(received(&mut handle).is_some(), "sent by the future");
    }

    /// A request waiting for a permit, through a limiter over one permit
    /// below it, polled ready first: its future, the other clone, the held
    /// response, the mock's handle.
    type Waiting = Pin<Box<<ConcurrencyLimit<Reserving<Mock>> as Service<Req>>::Future>>;

    fn waiting_over_one_permit() -> (Waiting, Other, Response<ResponseBody>, Handle) {
        let (mut svc, other, mut handle) = over_one_permit(one_in_flight);
        let held = take_the_permit(&mut svc, &mut handle);
        (waiting(&mut svc), other, held, handle)
    }

    /// A waiting request holds nothing below until it has
    /// its permit.
    #[test]
    fn a_waiting_request_holds_no_reservation_below() {
        let (_waiting, mut other, _held, _handle) = waiting_over_one_permit();
        assert_ready(other.poll_ready::<Req>());
    }
}

mod stack {
    use super::*;
    use tower_llm_resilience::stack::{Stack, StackService};

    fn stack<S>(transport: S) -> StackService<S> {
        Stack::builder().service(transport)
    }

    /// Always ready, whatever the transport says: the first layer,
    /// BufferBody, is.
    #[test]
    fn always_ready_whatever_the_transport_says() {
        check_always_ready(stack);
    }

    /// A buffered request that passes the cache and is admitted at once
    /// reaches the transport at the call, when the transport said it was
    /// ready.
    #[test]
    fn sent_at_the_call_when_the_transport_was_ready() {
        check_sent_at_the_call(stack, pass());
    }

    /// A transport that was not ready is waited for, and called, by the
    /// response future.
    #[test]
    fn otherwise_the_future_waits_for_the_transport_and_sends() {
        let res = check_sent_by_the_future(stack, pass());
        assert_eq!(res.status(), 200);
    }

    /// After the cache's fix: a hit through the stack leaves nothing
    /// reserved at the transport.
    #[tokio::test]
    async fn a_hit_holds_no_transport_reservation() {
        let (_svc, mut other, _handle) = after_a_hit(stack, false).await;
        assert_ready(other.poll_ready::<Req>());
    }

    /// After BufferBody's fix: an upload through the stack holds nothing at
    /// the transport.
    #[test]
    fn an_upload_holds_no_transport_reservation() {
        let (_upload, mut other, _handle) = uploading(stack);
        assert_ready(other.poll_ready::<Req>());
    }
}
