//! Fallback: triggers, cooldowns, markings, the OpenAI mapper; paused time
//! with mock services, and the simulator over real sockets.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use support::http::{completion, post_json, text};
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;
use tower_llm_resilience::client::HyperClient;
use tower_llm_resilience::fallback::{FallbackInfo, FallbackLayer, Target, Trigger};
use tower_llm_resilience::provider::ErrorKind;
use tower_llm_resilience::rate::{Limit, Limits, RateLimitLayer};
use tower_llm_resilience::request::{Deadline, ReplayBody, RequestMeta};
use tower_llm_resilience::response::{Outcome, ResponseBody};
use tower_llm_resilience::sim::{self, SimConfig, Simulator};

fn request(model: &str, stream: bool) -> Request<ReplayBody> {
    post_json(
        "http://upstream/v1/messages",
        &[("x-api-key", "sk-test")],
        format!(
            r#"{{"model":"{model}","max_tokens":2048,"stream":{stream},"messages":[{{"role":"user","content":"Hello"}}]}}"#
        ),
    )
}

/// A scripted answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

/// A mock upstream answering per model: `(status, headers, body)`; records
/// the models it was asked for.
#[derive(Clone)]
struct Mock {
    seen: Arc<Mutex<Vec<String>>>,
    answer: Arc<dyn Fn(&str) -> Answer + Send + Sync>,
}

impl Mock {
    fn new(
        answer: impl Fn(&str) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync + 'static,
    ) -> Self {
        Mock {
            seen: Arc::default(),
            answer: Arc::new(answer),
        }
    }
    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
    fn service(
        &self,
    ) -> impl Service<
        Request<ReplayBody>,
        Response = Response<String>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static {
        let this = self.clone();
        service_fn(move |req: Request<ReplayBody>| {
            let meta = RequestMeta::parse(req.uri().path(), req.headers(), req.body().as_bytes());
            let model = meta.model().unwrap_or("").to_owned();
            this.seen.lock().expect("lock").push(model.clone());
            let (status, headers, body) = (this.answer)(&model);
            let mut res = Response::builder().status(status);
            for (k, v) in headers {
                res = res.header(k, v);
            }
            let res = res.body(body).expect("response");
            async move { Ok::<_, Infallible>(res) }
        })
    }
}

fn ok_json(model: &str) -> Answer {
    (
        200,
        vec![("content-type", "application/json".into())],
        format!(
            r#"{{"type":"message","model":"{model}","content":[{{"type":"text","text":"hi"}}],"usage":{{"input_tokens":3,"output_tokens":1}}}}"#
        ),
    )
}

/// What the layer says it did.
fn fallback_info(res: &Response<ResponseBody>) -> FallbackInfo {
    res.extensions()
        .get::<FallbackInfo>()
        .expect("info")
        .clone()
}

#[tokio::test(start_paused = true)]
async fn overloaded_primary_falls_to_the_next_model_with_markings() {
    let mock = Mock::new(|model| {
        if model == "big" {
            (
                529,
                vec![],
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                    .into(),
            )
        } else {
            ok_json(model)
        }
    });
    let svc = FallbackLayer::new([Target::model("small").max_tokens(1024)]).layer(mock.service());
    let res = svc.oneshot(request("big", false)).await.expect("response");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-llm-model-used"], "small");
    assert_eq!(res.headers()["x-llm-original-model"], "big");
    assert_eq!(res.headers()["x-llm-fallback-hops"], "1");
    let info = fallback_info(&res);
    assert_eq!(info.original_model.as_deref(), Some("big"));
    assert_eq!(info.model_used.as_deref(), Some("small"));
    // The 529's body is read and classified: the trigger names the cause.
    assert_eq!(info.hops[0].trigger, Trigger::Error(ErrorKind::Overloaded));
    assert_eq!(mock.seen(), ["big", "small"]);
    assert!(text(res).await.contains("\"small\""));
}

#[tokio::test(start_paused = true)]
async fn the_rewritten_request_caps_max_tokens_and_updates_metadata() {
    let seen_max = Arc::new(Mutex::new(Vec::new()));
    let s = seen_max.clone();
    let upstream = service_fn(move |req: Request<ReplayBody>| {
        let meta = RequestMeta::of(&req).cloned();
        let body: serde_json::Value = serde_json::from_slice(req.body().as_bytes()).expect("json");
        s.lock().expect("lock").push((
            body["max_tokens"].as_u64(),
            meta.and_then(|m| m.max_tokens()),
        ));
        let status = if body["model"] == "big" { 503 } else { 200 };
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .body(String::new())
                    .expect("res"),
            )
        }
    });
    let svc = FallbackLayer::new([Target::model("small").max_tokens(1024)]).layer(upstream);
    svc.oneshot(request("big", false)).await.expect("response");
    let seen = seen_max.lock().expect("lock").clone();
    assert_eq!(
        seen[1],
        (Some(1024), Some(1024)),
        "body and metadata both capped"
    );
}

#[tokio::test(start_paused = true)]
async fn request_errors_never_trigger() {
    let mock = Mock::new(|_| {
        (400, vec![], r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: field required"}}"#.into())
    });
    let svc = FallbackLayer::new([Target::model("small")]).layer(mock.service());
    let res = svc.oneshot(request("big", false)).await.expect("response");
    assert_eq!(res.status(), 400);
    assert_eq!(mock.seen(), ["big"], "exactly one attempt");
    assert!(
        text(res).await.contains("field required"),
        "the failure is returned as it is"
    );
}

#[tokio::test(start_paused = true)]
async fn context_length_moves_to_a_larger_context_without_cooling_the_first() {
    let mock = Mock::new(|model| {
        if model == "small-context" {
            (400, vec![], r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#.into())
        } else {
            ok_json(model)
        }
    });
    let layer = FallbackLayer::new([Target::model("long-context")]);
    let svc = layer.layer(mock.service());
    let res = svc
        .clone()
        .oneshot(request("small-context", false))
        .await
        .expect("response");
    let info = fallback_info(&res);
    assert_eq!(
        info.hops[0].trigger,
        Trigger::Error(ErrorKind::ContextLength)
    );
    assert!(
        layer.cooling().is_empty(),
        "a request-specific failure cools nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn cooldown_skips_an_exhausted_target_without_sending() {
    let mock = Mock::new(|model| {
        if model == "big" {
            (
                429,
                vec![("retry-after", "30".into())],
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
                    .into(),
            )
        } else {
            ok_json(model)
        }
    });
    let layer = FallbackLayer::new([Target::model("small")]);
    let svc = layer.layer(mock.service());
    svc.clone()
        .oneshot(request("big", false))
        .await
        .expect("response");
    for _ in 0..5 {
        let res = svc
            .clone()
            .oneshot(request("big", false))
            .await
            .expect("response");
        let info = fallback_info(&res);
        assert_eq!(info.hops[0].trigger, Trigger::CoolingDown);
    }
    assert_eq!(
        mock.seen().iter().filter(|m| *m == "big").count(),
        1,
        "skipped while cooling"
    );
    let cooling = layer.cooling();
    assert!(
        cooling
            .iter()
            .any(|(n, d)| &**n == "big" && *d <= Duration::from_secs(30))
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    svc.oneshot(request("big", false)).await.expect("response");
    assert_eq!(
        mock.seen().iter().filter(|m| *m == "big").count(),
        2,
        "tried again after the cooldown"
    );
}

#[tokio::test(start_paused = true)]
async fn all_failing_returns_the_last_failure_or_the_degraded_response() {
    let mock = Mock::new(|_| (529, vec![], "overloaded".into()));
    let svc = FallbackLayer::new([Target::model("b"), Target::model("c")]).layer(mock.service());
    let res = svc.oneshot(request("a", false)).await.expect("response");
    assert_eq!(res.status(), 529);
    assert_eq!(mock.seen(), ["a", "b", "c"]);
    assert_eq!(
        text(res).await,
        "overloaded",
        "the last failure, body intact"
    );

    let layer = FallbackLayer::builder()
        .target(Target::model("b"))
        .degraded(|meta, info| {
            let body = format!(
                "degraded for {} after {} hops",
                meta.and_then(|m| m.model()).unwrap_or("?"),
                info.hops.len()
            );
            Response::builder()
                .status(503)
                .body(ResponseBody::full(body))
                .expect("res")
        })
        .build()
        .expect("layer");
    let res = layer
        .layer(mock.service())
        .oneshot(request("a", false))
        .await
        .expect("response");
    assert_eq!(res.headers()["x-llm-degraded"], "true");
    assert!(
        res.extensions()
            .get::<FallbackInfo>()
            .expect("info")
            .degraded
    );
    assert_eq!(text(res).await, "degraded for a after 2 hops");
}

#[tokio::test(start_paused = true)]
async fn a_stream_starting_with_an_overload_error_falls_back_before_any_byte() {
    let mock = Mock::new(|model| {
        if model == "big" {
            (200, vec![("content-type", "text/event-stream".into())],
             "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".into())
        } else {
            (200, vec![("content-type", "text/event-stream".into())],
             "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\nevent: message_stop\ndata: {}\n\n".into())
        }
    });
    let svc = FallbackLayer::new([Target::model("small")]).layer(mock.service());
    let res = svc.oneshot(request("big", true)).await.expect("response");
    assert_eq!(res.headers()["x-llm-model-used"], "small");
    assert!(text(res).await.starts_with("event: content_block_delta"));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_bound_request_degrades_at_once_instead_of_queueing() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let upstream = service_fn(move |_req: Request<ReplayBody>| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(200)
                    .body(String::new())
                    .expect("res"),
            )
        }
    });
    // One request per minute for "big": the first takes it, the second would wait a minute.
    let limiter = RateLimitLayer::builder()
        .model_limits(
            "big",
            Limits::unlimited().requests(Limit::per_minute(1).expect("limit")),
        )
        .fail_fast(true)
        .build()
        .expect("limiter");
    let svc = FallbackLayer::new([Target::model("small")]).layer(limiter.layer(upstream));
    let res = svc
        .clone()
        .oneshot(request("big", false))
        .await
        .expect("response");
    assert_eq!(res.headers()["x-llm-model-used"], "big");
    let start = tokio::time::Instant::now();
    let mut req = request("big", false);
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(5)));
    let res = svc.oneshot(req).await.expect("response");
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no queueing past the deadline"
    );
    assert_eq!(res.headers()["x-llm-model-used"], "small");
    let info = fallback_info(&res);
    assert!(matches!(info.hops[0].trigger, Trigger::RateLimited(d) if d > Duration::from_secs(50)));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_primary_quota_exhausted_served_by_the_second_model() {
    // The primary model has a tiny quota; the second plenty.
    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(sim::Limits::TIER_4)
            .with_model_limits("claude-opus-4-1", sim::Limits::new(5, 100_000, 100_000))
            .with_time_scale(1.0)
            .with_seed(9),
    )
    .await
    .expect("sim");
    let url = sim.url();
    let svc = FallbackLayer::new([Target::model("claude-haiku-4-5")]).layer(HyperClient::new());
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let svc = svc.clone();
        let req = post_json(
            &format!("{url}/v1/messages"),
            &[("x-api-key", "sk-ant-fallback")],
            r#"{"model":"claude-opus-4-1","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}"#,
        );
        tasks.push(tokio::spawn(async move {
            let res = svc.oneshot(req).await.expect("response");
            let used = res.headers().get("x-llm-model-used").cloned();
            let ok = res.status().is_success();
            res.into_body().collect().await.expect("body");
            (ok, used)
        }));
    }
    let mut by_haiku = 0;
    for t in tasks {
        let (ok, used) = t.await.expect("task");
        assert!(ok, "zero failed requests");
        if used.as_ref().is_some_and(|u| u == "claude-haiku-4-5") {
            by_haiku += 1;
        }
    }
    assert!(by_haiku >= 35, "{by_haiku} served by the second model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_openai_mapped_fallback_returns_a_valid_anthropic_response() {
    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(sim::Limits::TIER_4)
            .with_model_limits("claude-opus-4-1", sim::Limits::new(1, 100_000, 100_000))
            .with_time_scale(1.0)
            .with_output_tokens(5, 30)
            .with_seed(10),
    )
    .await
    .expect("sim");
    let url = sim.url();
    let endpoint: Uri = format!("{url}/v1/chat/completions").parse().expect("uri");
    let layer = FallbackLayer::new([Target::openai(
        "gpt-4o-mini",
        HyperClient::new(),
        endpoint,
        HeaderValue::from_static("sk-openai-fallback"),
    )]);
    let svc = layer.layer(HyperClient::new());
    for (i, stream) in [false, false, true].into_iter().enumerate() {
        let req = support::http::anthropic(
            &format!("{url}/v1/messages"),
            "sk-ant-fallback",
            format!(
                r#"{{"model":"claude-opus-4-1","max_tokens":64,"stream":{stream},"system":"Be brief.","messages":[{{"role":"user","content":"Hello"}}]}}"#
            ),
        );
        let mut res = svc.clone().oneshot(req).await.expect("response");
        assert_eq!(res.status(), 200, "request {i}");
        let ended = completion(&mut res);
        let used = res.headers()["x-llm-model-used"].clone();
        let body = text(res).await;
        let c = ended.recv().expect("completion");
        let (outcome, usage) = (c.outcome, c.usage);
        assert_eq!(outcome, Outcome::Complete, "{body}");
        assert!(usage.is_some_and(|u| u.output_tokens > 0), "{body}");
        if i == 0 {
            assert_eq!(
                used, "claude-opus-4-1",
                "the first request fits the primary"
            );
            continue;
        }
        assert_eq!(used, "gpt-4o-mini");
        if stream {
            assert!(body.starts_with("event: message_start"), "{body}");
            assert!(body.contains("event: message_stop"));
        } else {
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert_eq!(v["type"], "message");
            assert_eq!(v["role"], "assistant");
            assert_eq!(v["content"][0]["type"], "text");
            assert!(v["usage"]["input_tokens"].as_u64().is_some_and(|n| n > 0));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_deadline_bound_request_degrades_at_once() {
    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(sim::Limits::TIER_4)
            .with_time_scale(1.0)
            .with_seed(12),
    )
    .await
    .expect("sim");
    let url = sim.url();
    // The limiter allows one request a minute of the primary model: the
    // second would wait about a minute.
    let limiter = RateLimitLayer::builder()
        .model_limits(
            "claude-opus-4-1",
            Limits::unlimited().requests(Limit::per_minute(1).expect("limit")),
        )
        .fail_fast(true)
        .build()
        .expect("limiter");
    let svc = FallbackLayer::new([Target::model("claude-haiku-4-5")])
        .layer(limiter.layer(HyperClient::new()));
    let req = |deadline: Option<Duration>| {
        let mut r = post_json(
            &format!("{url}/v1/messages"),
            &[("x-api-key", "sk-ant-deadline")],
            r#"{"model":"claude-opus-4-1","max_tokens":32,"messages":[{"role":"user","content":"Hello"}]}"#,
        );
        if let Some(d) = deadline {
            r.extensions_mut().insert(Deadline::after(d));
        }
        r
    };
    let first = svc.clone().oneshot(req(None)).await.expect("response");
    assert_eq!(first.headers()["x-llm-model-used"], "claude-opus-4-1");
    text(first).await;

    let start = std::time::Instant::now();
    let res = svc
        .oneshot(req(Some(Duration::from_secs(5))))
        .await
        .expect("response");
    let took = start.elapsed();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-llm-model-used"], "claude-haiku-4-5");
    let info = fallback_info(&res);
    assert!(matches!(info.hops[0].trigger, Trigger::RateLimited(_)));
    text(res).await;
    assert!(
        took < Duration::from_secs(2),
        "no queueing toward the deadline: took {took:?}"
    );
    assert_eq!(
        sim.counters().received,
        2,
        "the primary was never sent the second request"
    );
}

/// With no chain and no degraded response there is nothing to fall back
/// to: requests and answers pass through untouched (a 529 stays a 529,
/// nothing is marked), one attempt each.
#[tokio::test(start_paused = true)]
async fn an_empty_chain_passes_through_unmarked() {
    let mock = Mock::new(|model| {
        if model == "claude-opus-4-1" {
            (529, vec![], String::from("overloaded"))
        } else {
            ok_json(model)
        }
    });
    let svc = FallbackLayer::new([]).layer(mock.service());
    let res = svc
        .clone()
        .oneshot(request("claude-sonnet-4-5", false))
        .await
        .expect("response");
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-llm-model-used").is_none());
    assert!(res.extensions().get::<FallbackInfo>().is_none());
    assert!(text(res).await.contains("claude-sonnet-4-5"));
    let res = svc
        .oneshot(request("claude-opus-4-1", false))
        .await
        .expect("response");
    assert_eq!(res.status(), 529);
    assert_eq!(text(res).await, "overloaded");
    assert_eq!(mock.seen(), ["claude-sonnet-4-5", "claude-opus-4-1"]);
}
