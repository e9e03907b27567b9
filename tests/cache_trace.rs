//! No raw API key in cache keys, statuses or logs — with TRACE output
//! captured by a process-wide subscriber (its own test binary, so no other
//! test races the call sites' cached interest).

mod support;

use std::convert::Infallible;

use http::{Request, Response};
use http_body_util::BodyExt;
use tower::{ServiceExt, service_fn};
use tower_layer::Layer;
use tower_llm_resilience::cache::{CacheLayer, CacheStatus, DefaultKeyPolicy, KeyPolicy, Status};
use tower_llm_resilience::request::ReplayBody;

const KEY: &str = "sk-ant-api03-SECRET-4f9c2b";
const PROMPT: &str = r#"{"model":"claude-haiku-4-5","max_tokens":16,"temperature":0,"messages":[{"role":"user","content":"2+2?"}]}"#;

fn req() -> Request<ReplayBody> {
    support::http::anthropic("http://upstream/v1/messages", KEY, PROMPT)
}

#[tokio::test]
async fn no_raw_key_in_keys_status_or_traces() {
    let captured = support::trace::logs();

    let upstream = service_fn(|_req: Request<ReplayBody>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(String::from(r#"{"content":[{"type":"text","text":"4"}]}"#))
                .expect("response"),
        )
    });
    let svc = CacheLayer::new().layer(upstream);
    let miss = svc.clone().oneshot(req()).await.expect("miss");
    assert_eq!(
        miss.extensions().get::<CacheStatus>().map(|s| s.status),
        Some(Status::Miss)
    );
    miss.into_body().collect().await.expect("body");
    let hit = svc.oneshot(req()).await.expect("hit");
    let status = *hit.extensions().get::<CacheStatus>().expect("status");
    assert_eq!(status.status, Status::Hit);
    let key = DefaultKeyPolicy::new().key(&req()).expect("key");

    let logs = captured.text();
    assert!(
        logs.contains("cache hit") && logs.contains("key="),
        "TRACE output captured: {logs}"
    );
    for shown in [
        logs,
        format!("{key:?}"),
        format!("{status:?}"),
        format!("{hit:?}"),
    ] {
        assert!(!shown.contains("SECRET"), "raw key leaked: {shown}");
    }
}
