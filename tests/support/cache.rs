//! The response cache against Redis: the request, upstream and helpers
//! the Redis cache suites (`redis_cache`, `redis_faults`) share.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tower::{ServiceExt, service_fn};
use tower_llm_resilience::BoxError;
use tower_llm_resilience::cache::{CacheStatus, Status};
use tower_llm_resilience::redis::RedisStore;
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::response::ResponseBody;

/// A deterministic (cacheable) Anthropic request.
pub(crate) const PROMPT: &str = r#"{"model":"claude-haiku-4-5","max_tokens":16,"temperature":0,"messages":[{"role":"user","content":"2+2?"}]}"#;
/// Its answer.
pub(crate) const ANSWER: &str = r#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"4"}],"usage":{"input_tokens":5,"output_tokens":1}}"#;

/// [`PROMPT`] on `key`.
pub(crate) fn ask(key: &str) -> Request<ReplayBody> {
    super::http::anthropic(
        "https://api.anthropic.com/v1/messages",
        key,
        PROMPT.to_owned(),
    )
}

/// An upstream answering `body` as JSON, counting its calls.
pub(crate) fn upstream(calls: Arc<AtomicUsize>, body: String) -> impl super::ReplayService {
    service_fn(move |_req: Request<ReplayBody>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let body = body.clone();
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("content-type", "application/json")
                    .header("request-id", "req_1")
                    .body(ResponseBody::full(body))
                    .expect("response"),
            )
        }
    })
}

/// Sends `req` through `svc`, reads the whole body (the commit happens at
/// its end): the cache status and the body.
pub(crate) async fn send<S: super::ReplayService>(
    svc: &mut S,
    req: Request<ReplayBody>,
) -> (Status, String) {
    let res = svc
        .ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("call");
    let status = res
        .extensions()
        .get::<CacheStatus>()
        .expect("cache status")
        .status;
    (status, super::http::text(res).await)
}

/// Waits until `store` has written `n` entries (writes are spawned after
/// the body ends).
pub(crate) async fn written(store: &RedisStore, n: u64) {
    let give_up = Instant::now() + Duration::from_secs(5);
    while store.stats().writes < n {
        assert!(Instant::now() < give_up, "not written: {:?}", store.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
