//! The public surface a user meets first: the root re-exports, the
//! tower-http-style constructors, `Stack` as a `Layer`, and the one
//! configuration error naming its field.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_llm_resilience::error::InvalidConfig;
use tower_llm_resilience::{
    BufferBody, Cache, ConcurrencyLimit, Fallback, Limits, RateLimit, RateLimitLayer, ReplayBody,
    Retry, RetryLayer, Stack,
};

type Answer = std::future::Ready<Result<Response<String>, Infallible>>;

fn transport() -> tower::util::ServiceFn<fn(Request<ReplayBody>) -> Answer> {
    service_fn(|_req| std::future::ready(Ok(Response::new(String::from("{}")))))
}

fn request() -> Request<String> {
    Request::post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", "sk-ant-surface")
        .body(r#"{"model":"claude-haiku-4-5","max_tokens":16,"messages":[]}"#.to_owned())
        .unwrap()
}

#[tokio::test]
async fn stack_is_a_layer_inside_a_service_builder() {
    let stack = Stack::builder().limits(Limits::per_minute(50, 20_000, 8_000).unwrap());
    let svc = ServiceBuilder::new().layer(stack).service(transport());
    let res = svc.oneshot(request()).await.unwrap();
    assert_eq!(res.status(), 200);
}

/// Every layer as a `ServiceBuilder` method: each applies (the rate
/// limit's one request a minute makes the second request wait a minute).
#[tokio::test(start_paused = true)]
async fn service_builder_ext_adds_each_layer() {
    use tower_llm_resilience::{Limit, ServiceBuilderExt, Target};
    let svc = ServiceBuilder::new()
        .buffer_llm_body(1 << 20)
        .llm_cache()
        .llm_fallback([Target::model("claude-sonnet-4-5")])
        .llm_retry()
        .llm_rate_limit(
            Limits::unlimited().requests(Limit::new(1, Duration::from_secs(60), 1).unwrap()),
        )
        .llm_concurrency_limit(4)
        .service(transport());
    let t0 = tokio::time::Instant::now();
    for _ in 0..2 {
        let res = svc.clone().oneshot(request()).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    assert!(
        t0.elapsed() >= Duration::from_secs(59),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn services_made_from_one_stack_share_its_default_layers() {
    let stack = Stack::builder().concurrency(1);
    let a = tower::Layer::layer(&stack, transport());
    let b = stack.clone().service(transport());
    // Both share one concurrency cap of 1: the first response's body holds
    // the permit, so the second must wait (and gives up at its deadline).
    let held = a.oneshot(request()).await.unwrap();
    let mut req = request();
    req.extensions_mut()
        .insert(tower_llm_resilience::Deadline::after(
            Duration::from_millis(50),
        ));
    let second = tokio::time::timeout(Duration::from_secs(5), b.oneshot(req)).await;
    assert!(
        matches!(&second, Ok(Err(_))),
        "the second request must not get the permit the first holds: {second:?}"
    );
    drop(held);
}

#[tokio::test]
async fn each_service_has_new_and_layer() {
    let limits = Limits::per_minute(50, 20_000, 8_000).unwrap();
    let svc = BufferBody::new(
        Cache::new(Fallback::new(
            Retry::new(RateLimit::new(
                ConcurrencyLimit::new(transport(), 4),
                limits,
            )),
            [],
        )),
        1 << 20,
    );
    assert_eq!(svc.oneshot(request()).await.unwrap().status(), 200);

    let svc = ServiceBuilder::new()
        .layer(BufferBody::<()>::layer(1 << 20))
        .layer(Cache::<()>::layer())
        .layer(Fallback::<()>::layer([]))
        .layer(Retry::<()>::layer())
        .layer(RateLimit::<()>::layer(limits))
        .layer(ConcurrencyLimit::<()>::layer(4))
        .service(transport());
    assert_eq!(svc.oneshot(request()).await.unwrap().status(), 200);
}

#[test]
fn configuration_errors_name_their_field() {
    let field = |e: InvalidConfig| e.field;
    assert_eq!(
        field(RateLimitLayer::builder().max_groups(0).build().unwrap_err()),
        "max_groups"
    );
    assert_eq!(
        field(
            RateLimitLayer::builder()
                .idle_timeout(Duration::MAX)
                .build()
                .unwrap_err()
        ),
        "idle_timeout"
    );
    assert_eq!(
        field(RetryLayer::builder().max_attempts(0).build().unwrap_err()),
        "max_attempts"
    );
    assert_eq!(
        field(
            tower_llm_resilience::queue::QueueConfig::new(0, Duration::from_secs(1)).unwrap_err()
        ),
        "queue.max_len"
    );
    let e = RetryLayer::builder().max_attempts(0).build().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid configuration: max_attempts: must be at least 1"
    );
}
