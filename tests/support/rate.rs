//! The rate limiter against Redis: the request, transports and limiter
//! builders the Redis rate suites (`redis_rate`, `redis_faults`) share.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tower::{Service, ServiceExt, service_fn};
use tower_llm_resilience::BoxError;
use tower_llm_resilience::rate::{Limit, Limits, RateLimitBuilder, RateLimitLayer};
use tower_llm_resilience::redis::{FailurePolicy, Redis};
use tower_llm_resilience::request::ReplayBody;

/// An Anthropic request on one key.
pub(crate) fn request() -> Request<ReplayBody> {
    Request::post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", "sk-test-shared-quota")
        .body(ReplayBody::from(
            r#"{"model":"claude-test","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}"#,
        ))
        .expect("request")
}

/// A transport that counts what it is sent.
pub(crate) fn counting(
    sent: Arc<AtomicU64>,
) -> impl Service<
    Request<ReplayBody>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |_req: Request<ReplayBody>| {
        sent.fetch_add(1, Ordering::Relaxed);
        async { Ok::<_, Infallible>(Response::new(String::from("{}"))) }
    })
}

/// A limit of `amount` requests per `per`, bursting to `burst`.
pub(crate) fn requests(amount: u64, per: Duration, burst: u64) -> Limits {
    Limits::unlimited().requests(Limit::new(amount, per, burst).expect("limit"))
}

/// One admission through `layer`: `Ok` when sent.
pub(crate) async fn one(layer: &RateLimitLayer, sent: &Arc<AtomicU64>) -> Result<(), BoxError> {
    let svc = tower::Layer::layer(layer, counting(Arc::clone(sent)));
    svc.oneshot(request()).await.map(drop)
}

/// A fail-fast limiter (waits at most 200 ms), on `redis` when given.
pub(crate) fn limiter(
    redis: Option<Redis>,
    limits: Limits,
    policy: FailurePolicy,
) -> RateLimitLayer {
    let mut b = RateLimitBuilder::default()
        .limits(limits)
        .fail_fast(true)
        .max_wait(Duration::from_millis(200))
        .redis_failure(policy);
    if let Some(redis) = redis {
        b = b.redis(redis);
    }
    b.build().expect("config")
}

/// A transport answering `status` with `body` (JSON) and `headers`.
pub(crate) fn answering(
    status: u16,
    body: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> impl Service<
    Request<ReplayBody>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |_req: Request<ReplayBody>| async move {
        let mut res = Response::builder()
            .status(status)
            .header("content-type", "application/json");
        for (k, v) in headers {
            res = res.header(*k, *v);
        }
        Ok::<_, Infallible>(res.body(String::from(body)).expect("response"))
    })
}

/// Sends one request through `layer` to `svc` and reads its body to the end.
pub(crate) async fn through<S>(layer: &RateLimitLayer, svc: S) -> Result<u16, BoxError>
where
    S: Service<Request<ReplayBody>, Response = Response<String>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    use http_body_util::BodyExt;
    let res = tower::Layer::layer(layer, svc).oneshot(request()).await?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}
