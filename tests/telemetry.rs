//! What the stack tells: `tracing` events at every decision (never a
//! secret, even at TRACE), the `metrics` feature's names and values
//! (captured by `metrics-util`'s `DebuggingRecorder`), and the rate
//! limiter's `stats()` reached from the stack.
//!
//! The `tracing` subscriber is process-wide (set once by the first test that
//! needs it, as `tests/cache_trace.rs` does, so every test's events are
//! captured and checked for secrets); the metrics recorder is local to the
//! thread that drives each test's current-thread runtime.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use support::http::{anthropic, post_json, text};
use support::trace::logs;
use tower::{ServiceExt, service_fn};
use tower_layer::Layer;
use tower_llm_resilience::budget::{BudgetLayer, Cap, Period, Scope};
use tower_llm_resilience::fallback::FallbackLayer;
use tower_llm_resilience::rate::{AuthStyle, KeyPool, Limit, Limits, RateLimitLayer};
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::retry::RetryLayer;
use tower_llm_resilience::{Stack, Target};

const SECRET: &str = "sk-ant-api03-SECRET-4f9c2b";
const POOL_SECRET: &str = "sk-ant-api03-POOLSECRET-77aa";
const URI: &str = "http://upstream/v1/messages";
const INPUT: u64 = 12;
const OUTPUT: u64 = 3;

fn body(model: &str) -> String {
    format!(
        r#"{{"model":"{model}","max_tokens":16,"temperature":0,"messages":[{{"role":"user","content":"2+2?"}}]}}"#
    )
}

fn logged() -> String {
    logs().text()
}

/// An Anthropic-shaped upstream: `claude-primary` is always overloaded
/// (529); every other model's first request is a 429 (retry-after 1 s),
/// then it answers 200 with usage.
fn upstream() -> impl tower::Service<
    Request<ReplayBody>,
    Response = Response<String>,
    Error = Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    let calls = Arc::new(AtomicUsize::new(0));
    service_fn(move |req: Request<ReplayBody>| {
        let calls = Arc::clone(&calls);
        async move {
            let body = String::from_utf8_lossy(req.body().as_bytes()).into_owned();
            let res = if body.contains("claude-primary") {
                Response::builder().status(529).body(
                    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                        .to_owned(),
                )
            } else if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Response::builder()
                    .status(429)
                    .header("retry-after", "1")
                    .body(
                    r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
                        .to_owned(),
                )
            } else {
                Response::builder().body(format!(
                    r#"{{"type":"message","content":[{{"type":"text","text":"4"}}],"usage":{{"input_tokens":{INPUT},"output_tokens":{OUTPUT}}}}}"#
                ))
            };
            Ok::<_, Infallible>(
                res.map(|mut r| {
                    r.headers_mut()
                        .insert("content-type", "application/json".parse().expect("value"));
                    r
                })
                .expect("response"),
            )
        }
    })
}

/// The whole stack, with a fallback target and a budget below it.
fn stack() -> (
    Stack,
    impl tower::Service<
        Request<ReplayBody>,
        Response = Response<tower_llm_resilience::ResponseBody>,
        Error = tower_llm_resilience::BoxError,
    > + Clone,
) {
    let stack = Stack::builder()
        .limits(Limits::unlimited().requests(Limit::per_minute(100).expect("limit")))
        .retry(
            RetryLayer::builder()
                .max_attempts(2)
                .build()
                .expect("retry"),
        )
        .fallback(FallbackLayer::new([Target::model("claude-backup")]));
    let budget = BudgetLayer::builder()
        .cap(Cap::tokens(
            "daily",
            Scope::TENANT,
            Period::day(),
            1_000_000,
        ))
        .build()
        .expect("budget");
    let svc = stack.clone().service(budget.layer(upstream()));
    (stack, svc)
}

async fn drive<S>(svc: &S, req: Request<ReplayBody>) -> (u16, String)
where
    S: tower::Service<
            Request<ReplayBody>,
            Response = Response<tower_llm_resilience::ResponseBody>,
            Error = tower_llm_resilience::BoxError,
        > + Clone,
{
    let res = svc.clone().oneshot(req).await.expect("response");
    let status = res.status().as_u16();
    (status, text(res).await)
}

#[tokio::test(start_paused = true)]
async fn every_decision_is_traced_with_gen_ai_names_and_no_secret_is_ever_printed() {
    logs();
    let (_stack, svc) = stack();
    // A 429 then a retry (cooldown, retried with reason), a miss, a hit.
    let (s, _) = drive(&svc, anthropic(URI, SECRET, body("claude-haiku-4-5"))).await;
    assert_eq!(s, 200);
    let (s, _) = drive(&svc, anthropic(URI, SECRET, body("claude-haiku-4-5"))).await;
    assert_eq!(s, 200);
    // Overloaded twice, then the fallback hop to the backup.
    let (s, _) = drive(&svc, anthropic(URI, SECRET, body("claude-primary"))).await;
    assert_eq!(s, 200);

    // A request without a key of its own, through a key pool, queued
    // behind a one-request bucket.
    let pool = KeyPool::builder(AuthStyle::Anthropic)
        .key("team-a", POOL_SECRET)
        .build()
        .expect("pool");
    let limiter = RateLimitLayer::builder()
        .limits(Limits::unlimited().requests(Limit::per_minute(1).expect("limit")))
        .key_pool(pool)
        .build()
        .expect("limiter");
    let pooled = Stack::builder().rate_limit(limiter).service(upstream());
    for prompt in ["1+1", "1+2"] {
        let b = body("claude-opus-4-1").replace("2+2", prompt);
        let req = post_json(URI, &[("anthropic-version", "2023-06-01")], b);
        pooled.clone().oneshot(req).await.expect("pooled");
    }
    // Two requests behind a one-request bucket and one permit: the second
    // queues for the bucket, the third for the permit held by a slow
    // upstream.
    let slow = service_fn(|_req: Request<ReplayBody>| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, Infallible>(Response::new(String::from("{}")))
    });
    let narrow = Stack::builder()
        .limits(Limits::unlimited().requests(Limit::per_minute(2).expect("limit")))
        .concurrency(1)
        .service(slow);
    let tasks: Vec<_> = ["3+1", "3+2", "3+3"]
        .into_iter()
        .map(|prompt| {
            let b = body("claude-narrow").replace("2+2", prompt);
            let svc = narrow.clone();
            tokio::spawn(async move {
                let res = svc
                    .oneshot(anthropic(URI, SECRET, b))
                    .await
                    .expect("narrow");
                text(res).await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    tokio::time::sleep(Duration::from_millis(10)).await;

    let logs = logged();
    for expected in [
        "rate limit: admitted",
        "gen_ai.request.model=\"claude-haiku-4-5\"",
        "rate limit: upstream 429, the group cools down",
        "llm_resilience.rate_limit.cooldown_ms=",
        "retry: retrying",
        "llm_resilience.retry.reason=\"rate_limited\"",
        "llm_resilience.retry.delay_ms=",
        "error.type=\"429\"",
        "llm_resilience.retry.reason=\"overloaded\"",
        "llm_resilience.cache.result=\"miss\"",
        "llm_resilience.cache.result=\"hit\"",
        "fallback: hop",
        "llm_resilience.fallback.from=\"claude-primary\"",
        "llm_resilience.fallback.to=\"claude-backup\"",
        "budget: charged",
        "llm_resilience.budget.scope=\"tenant\"",
        "llm_resilience.budget.amount=",
        "gen_ai.usage.input_tokens=12",
        "gen_ai.usage.output_tokens=3",
        "llm_resilience.queue.wait_ms=",
        "key pool: key chosen",
        "key=team-a",
        "a key of the pool admitted the request",
        "llm_resilience.rate_limit.wait{",
        "rate limit: queued",
        "llm_resilience.queue.position=",
        "rate limit: admitted after waiting",
        "concurrency: waiting for a permit",
        "concurrency: permit after waiting",
        "llm_resilience.concurrency.wait",
    ] {
        assert!(logs.contains(expected), "no {expected:?} in: {logs}");
    }
    // The first 429 is the operator's; it is WARN.
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("upstream 429")),
        "{logs}"
    );
    for secret in [SECRET, POOL_SECRET, "SECRET"] {
        assert!(!logs.contains(secret), "a secret was printed: {logs}");
    }
}

#[tokio::test(start_paused = true)]
async fn stats_are_reached_from_the_stack_and_from_its_service() {
    let (stack, svc) = stack();
    let (s, _) = drive(&svc, anthropic(URI, SECRET, body("claude-sonnet-4-5"))).await;
    assert_eq!(s, 200);
    let from_layer = stack.rate_limiter().stats();
    let group = from_layer
        .iter()
        .find(|g| g.model.as_deref() == Some("claude-sonnet-4-5"))
        .expect("the group of the request");
    assert!(group.key.is_some(), "keyed by the API key's identity");
    assert_eq!(
        group.limit(tower_llm_resilience::rate::Dimension::Requests),
        Some(Limit::per_minute(100).expect("limit"))
    );
    assert_eq!(group.queued, 0);
    assert_eq!(group.in_flight, 0);
    // The same limiter, reached through the service's layers.
    let from_service = svc_stats(&stack);
    assert_eq!(from_service, from_layer.len());
    assert_eq!(stack.concurrency_limiter().stats().in_flight, 0);
}

/// The groups the stack's service sees (`StackService::rate_limit`).
fn svc_stats(stack: &Stack) -> usize {
    let svc = stack.clone().service(upstream());
    let stats = svc.rate_limit().stats();
    assert_eq!(svc.concurrency_limit().stats().cap, 1024);
    stats.len()
}

#[cfg(feature = "metrics")]
mod metrics_feature {
    use super::*;
    use metrics_util::MetricKind;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use tower_llm_resilience::telemetry::names;

    type Rows = Vec<(MetricKind, String, Vec<(String, String)>, DebugValue)>;

    fn rows(snapshotter: &Snapshotter) -> Rows {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(ck, _, _, v)| {
                let labels = ck
                    .key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                (ck.kind(), ck.key().name().to_owned(), labels, v)
            })
            .collect()
    }

    /// The values of `name` whose labels include every one of `with`.
    fn find<'a>(rows: &'a Rows, name: &str, with: &[(&str, &str)]) -> Vec<&'a DebugValue> {
        rows.iter()
            .filter(|(_, n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, _, v)| v)
            .collect()
    }

    fn counter(rows: &Rows, name: &str, with: &[(&str, &str)]) -> u64 {
        find(rows, name, with)
            .into_iter()
            .map(|v| match v {
                DebugValue::Counter(c) => *c,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    fn histogram(rows: &Rows, name: &str, with: &[(&str, &str)]) -> Vec<f64> {
        find(rows, name, with)
            .into_iter()
            .flat_map(|v| match v {
                DebugValue::Histogram(h) => h.iter().map(|f| f.0).collect::<Vec<_>>(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .collect()
    }

    /// Runs `f` on a paused current-thread runtime with `recorder` as this
    /// thread's recorder: every poll (and spawned task) is on this thread.
    fn with_recorder<F: std::future::Future>(recorder: &DebuggingRecorder, f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        metrics::with_local_recorder(recorder, || rt.block_on(f))
    }

    #[test]
    fn a_driven_request_emits_the_gen_ai_and_crate_metrics() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        with_recorder(&recorder, async {
            let (_stack, svc) = stack();
            // 429 → retried → 200 (a miss), then a hit.
            drive(&svc, anthropic(URI, SECRET, body("claude-haiku-4-5"))).await;
            drive(&svc, anthropic(URI, SECRET, body("claude-haiku-4-5"))).await;
            // 529 twice → a hop to the backup → 200.
            drive(&svc, anthropic(URI, SECRET, body("claude-primary"))).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        });
        let rows = rows(&snapshotter);
        let haiku = (names::GEN_AI_REQUEST_MODEL, "claude-haiku-4-5");
        let anthropic_p = (names::GEN_AI_PROVIDER_NAME, "anthropic");
        let chat = (names::GEN_AI_OPERATION_NAME, "chat");

        // Token usage: one input and one output value per 200 with usage.
        let input = histogram(
            &rows,
            names::TOKEN_USAGE,
            &[
                haiku,
                anthropic_p,
                chat,
                (names::GEN_AI_TOKEN_TYPE, "input"),
            ],
        );
        let output = histogram(
            &rows,
            names::TOKEN_USAGE,
            &[haiku, (names::GEN_AI_TOKEN_TYPE, "output")],
        );
        assert_eq!(input, vec![INPUT as f64], "{rows:#?}");
        assert_eq!(output, vec![OUTPUT as f64]);
        let backup = histogram(
            &rows,
            names::TOKEN_USAGE,
            &[(names::GEN_AI_REQUEST_MODEL, "claude-backup")],
        );
        assert_eq!(backup.len(), 2, "the backup's input and output");

        // Duration: the 429 attempt with its error.type, the 200 without.
        let failed = histogram(
            &rows,
            names::OPERATION_DURATION,
            &[haiku, (names::ERROR_TYPE, "429")],
        );
        assert_eq!(failed.len(), 1);
        let all = histogram(&rows, names::OPERATION_DURATION, &[haiku]);
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|s| *s >= 0.0));
        let overloaded = histogram(
            &rows,
            names::OPERATION_DURATION,
            &[(names::ERROR_TYPE, "529")],
        );
        assert_eq!(overloaded.len(), 2, "two attempts at the primary");

        assert_eq!(counter(&rows, names::UPSTREAM_429, &[haiku]), 1);
        assert_eq!(
            counter(
                &rows,
                names::RETRIES,
                &[(names::RETRY_REASON, "rate_limited")]
            ),
            1
        );
        assert_eq!(
            counter(
                &rows,
                names::RETRIES,
                &[(names::RETRY_REASON, "overloaded")]
            ),
            1
        );
        assert_eq!(
            counter(
                &rows,
                names::CACHE_REQUESTS,
                &[(names::CACHE_RESULT, "hit")]
            ),
            1
        );
        assert_eq!(
            counter(
                &rows,
                names::CACHE_REQUESTS,
                &[(names::CACHE_RESULT, "miss")]
            ),
            2
        );
        assert_eq!(
            counter(
                &rows,
                names::FALLBACK_HOPS,
                &[(names::FALLBACK_TO, "claude-backup")]
            ),
            1
        );
        assert_eq!(
            counter(&rows, names::FALLBACK_HOPS, &[]),
            1,
            "one hop, and only to a target of the chain"
        );
        // The tenant cap settled what the provider reported, twice
        // (haiku, backup); the refused attempts were refunded (zero).
        assert_eq!(
            counter(
                &rows,
                names::BUDGET_SPENT,
                &[(names::BUDGET_CAP, "daily"), (names::BUDGET_UNIT, "tokens")]
            ),
            2 * (INPUT + OUTPUT)
        );
        // Utilisation of the request bucket: 2 of 100 used by haiku's two
        // attempts (minus what refilled meanwhile).
        let util = find(
            &rows,
            names::QUOTA_UTILIZATION,
            &[haiku, (names::DIMENSION, "requests")],
        );
        let [DebugValue::Gauge(g)] = util.as_slice() else {
            panic!("one gauge: {util:?}")
        };
        assert!(g.0 >= 0.0 && g.0 <= 0.02 + 1e-9, "{g:?}");
    }

    #[test]
    fn queue_waits_and_avoided_429s_are_counted() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        with_recorder(&recorder, async {
            // One request a second, burst one: the second and third wait.
            let svc = Stack::builder()
                .limits(
                    Limits::unlimited()
                        .requests(Limit::new(1, Duration::from_secs(1), 1).expect("limit")),
                )
                .service(service_fn(|_req: Request<ReplayBody>| async {
                    Ok::<_, Infallible>(Response::new(String::from("{}")))
                }));
            // Distinct prompts, so the cache does not coalesce them;
            // spawned on this thread's runtime, so all wait at once.
            let tasks: Vec<_> = (0..3)
                .map(|i| {
                    let b = body("claude-q-0").replace("2+2", &format!("{i}+2"));
                    tokio::spawn(svc.clone().oneshot(anthropic(URI, SECRET, b)))
                })
                .collect();
            for t in tasks {
                assert_eq!(t.await.expect("task").expect("admitted").status(), 200);
            }
        });
        let rows = rows(&snapshotter);
        let waits = histogram(&rows, names::QUEUE_WAIT, &[(names::LAYER, "rate")]);
        let mut waits = waits;
        waits.sort_by(f64::total_cmp);
        assert_eq!(waits.len(), 2, "{rows:#?}");
        assert!(
            (waits[0] - 1.0).abs() < 0.05 && (waits[1] - 2.0).abs() < 0.05,
            "{waits:?}"
        );
        assert_eq!(
            counter(
                &rows,
                names::AVOIDED_429,
                &[(names::GEN_AI_REQUEST_MODEL, "claude-q-0")]
            ),
            2
        );
    }

    #[test]
    fn an_attempt_without_a_response_is_measured_as_a_transport_error() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        with_recorder(&recorder, async {
            let svc = Stack::builder()
                .retry(
                    RetryLayer::builder()
                        .max_attempts(1)
                        .build()
                        .expect("retry"),
                )
                .service(service_fn(|_req: Request<ReplayBody>| async {
                    Err::<Response<String>, _>(std::io::Error::other("connection reset"))
                }));
            let req = anthropic(URI, SECRET, body("claude-down"));
            assert!(svc.oneshot(req).await.is_err());
        });
        let rows = rows(&snapshotter);
        let failed = histogram(
            &rows,
            names::OPERATION_DURATION,
            &[
                (names::GEN_AI_REQUEST_MODEL, "claude-down"),
                (names::GEN_AI_PROVIDER_NAME, "anthropic"),
                (names::ERROR_TYPE, "transport"),
            ],
        );
        assert_eq!(failed.len(), 1, "{rows:#?}");
        assert!(histogram(&rows, names::TOKEN_USAGE, &[]).is_empty());
    }
}
