//! Step 7, hostile input: server advice longer than any cap is "too long",
//! never "none" (defect 4), and request bodies are charged the way the
//! provider reads them — duplicate keys, the last wins — or, when they
//! cannot be read, a conservative estimate, never zero (defect 3).
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use proptest::prelude::*;
use support::http::{ANTHROPIC_VERSION, post_json};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_llm_resilience::BoxError;
use tower_llm_resilience::rate::RateLimitLayer;
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::response::ResponseBody;
use tower_llm_resilience::retry::{OverCap, RetryInfo, RetryLayer, StopReason};

const RATE_LIMIT_BODY: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit"}}"#;

/// The advice values of the issue that were read as "no advice".
const LONG_ADVICE: [&str; 3] = ["86401", "100000", "99999999999999999999"];

fn too_many(retry_after: &str) -> Response<ResponseBody> {
    Response::builder()
        .status(429)
        .header("content-type", "application/json")
        .header("retry-after", retry_after)
        .body(ResponseBody::new(Full::new(Bytes::from_static(
            RATE_LIMIT_BODY.as_bytes(),
        ))))
        .unwrap()
}

fn ok() -> Response<ResponseBody> {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(ResponseBody::new(Full::new(Bytes::from_static(
            br#"{"ok":true}"#,
        ))))
        .unwrap()
}

fn request(key: &str) -> Request<ReplayBody> {
    post_json(
        "http://api.test/v1/messages",
        &[("x-api-key", key), ("anthropic-version", ANTHROPIC_VERSION)],
        r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#,
    )
}

/// An upstream answering `429 retry-after: advice` first, then 200; the
/// instants of its calls.
fn advising(
    advice: &'static str,
) -> (
    impl Service<
        Request<ReplayBody>,
        Response = Response<ResponseBody>,
        Error = BoxError,
        Future: Send,
    > + Clone
    + Send
    + 'static,
    Arc<Mutex<Vec<Instant>>>,
) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&calls);
    let svc = service_fn(move |_req: Request<ReplayBody>| {
        let n = {
            let mut v = log.lock().unwrap();
            v.push(Instant::now());
            v.len() - 1
        };
        async move { Ok::<_, BoxError>(if n == 0 { too_many(advice) } else { ok() }) }
    });
    (svc, calls)
}

// ------------------------------------------------------------- defect 4

/// Defect 4, retry layer: `retry-after` of 86401, 100000 and
/// 99999999999999999999 s were "no advice" and retried after ~300 ms.
/// They are over the cap: the layer gives up at once with `AdviceTooLong`
/// (as it does for 3600), or, with `OverCap::Backoff`, backs off.
#[tokio::test(start_paused = true)]
async fn longer_advice_is_not_retried_sooner() {
    for advice in ["3600"].into_iter().chain(LONG_ADVICE) {
        let layer = RetryLayer::builder().no_budget().build().unwrap();
        let (svc, calls) = advising(advice);
        let t0 = Instant::now();
        let res = layer.layer(svc).oneshot(request("k")).await.unwrap();
        assert_eq!(res.status(), 429, "{advice}");
        assert_eq!(t0.elapsed(), Duration::ZERO, "{advice}: gave up at once");
        assert_eq!(calls.lock().unwrap().len(), 1, "{advice}: not retried");
        let info = *res.extensions().get::<RetryInfo>().unwrap();
        assert_eq!(info.stopped, Some(StopReason::AdviceTooLong), "{advice}");

        // Over the cap, `OverCap::Backoff` takes the computed backoff.
        let layer = RetryLayer::builder()
            .no_budget()
            .max_server_delay(Duration::from_secs(60), OverCap::Backoff)
            .build()
            .unwrap();
        let (svc, calls) = advising(advice);
        let res = layer.layer(svc).oneshot(request("k")).await.unwrap();
        assert_eq!(res.status(), 200, "{advice}");
        assert_eq!(calls.lock().unwrap().len(), 2, "{advice}");
    }
}

/// Defect 4, the limiter's 429 gate: after a 429 with such advice the
/// group paused its 1 s default; it now pauses its maximum cooldown.
#[tokio::test(start_paused = true)]
async fn longer_advice_closes_the_gate_for_the_maximum_cooldown() {
    for advice in ["3600"].into_iter().chain(LONG_ADVICE) {
        let layer = RateLimitLayer::builder()
            .cooldown(Duration::from_secs(1), Duration::from_secs(60))
            .cooldown_jitter(Duration::ZERO)
            .build()
            .unwrap();
        let (svc, calls) = advising(advice);
        let svc = layer.layer(svc);
        let t0 = Instant::now();
        let res = svc.clone().oneshot(request("k")).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        drop(res);
        let stats = svc.stats();
        assert_eq!(
            stats[0].cooldown,
            Some(Duration::from_secs(60)),
            "{advice}: the gate's maximum"
        );
        // The next request of the group waits the whole cooldown.
        let res = svc.clone().oneshot(request("k")).await.unwrap();
        assert_eq!(res.status(), 200);
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls[1] - t0, Duration::from_secs(60), "{advice}");
    }
}

/// An upstream answering every request `429 retry-after: advice`.
fn always_429(
    advice: String,
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<ReplayBody>,
    Response = Response<ResponseBody>,
    Error = BoxError,
    Future: Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |_req: Request<ReplayBody>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let advice = advice.clone();
        async move { Ok::<_, BoxError>(too_many(&advice)) }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For any advice `v` (whole seconds, any length), the retry layer's
    /// delay is `v` plus its jitter up to the cap — monotone in `v` — and
    /// "too long" (give up at once, one attempt) above it; the limiter's
    /// gate is `min(v, max cooldown)`, never its default.
    #[test]
    fn chosen_delay_is_monotone_up_to_the_cap_and_too_long_above(
        v in prop_oneof![
            1u64..=120,
            121u64..200_000,
            Just(u64::MAX),
        ],
        extra_digits in 0usize..30,
    ) {
        let text = if v == u64::MAX {
            format!("{v}{}", "9".repeat(extra_digits))
        } else {
            v.to_string()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (elapsed, attempts, stopped, gate) = rt.block_on(async {
            let cap = Duration::from_secs(60);
            let layer = RetryLayer::builder()
                .no_budget()
                .max_attempts(2)
                .server_jitter(0.0, Duration::ZERO)
                .max_server_delay(cap, OverCap::GiveUp)
                .build()
                .unwrap();
            let calls = Arc::new(AtomicUsize::new(0));
            let t0 = Instant::now();
            let res = layer
                .layer(always_429(text.clone(), Arc::clone(&calls)))
                .oneshot(request("k"))
                .await
                .unwrap();
            let info = *res.extensions().get::<RetryInfo>().unwrap();
            let elapsed = t0.elapsed();

            let limiter = RateLimitLayer::builder()
                .cooldown(Duration::from_secs(1), Duration::from_secs(90))
                .cooldown_jitter(Duration::ZERO)
                .build()
                .unwrap();
            let svc = limiter.layer(always_429(text.clone(), Arc::new(AtomicUsize::new(0))));
            drop(svc.clone().oneshot(request("k")).await.unwrap());
            let gate = svc.stats()[0].cooldown;
            (elapsed, calls.load(Ordering::SeqCst), info.stopped, gate)
        });
        let secs = Duration::from_secs(v);
        if v <= 60 {
            // Honoured exactly (no jitter configured): waited, then retried.
            prop_assert_eq!(elapsed, secs);
            prop_assert_eq!(attempts, 2);
            prop_assert_eq!(stopped, Some(StopReason::Exhausted));
        } else {
            prop_assert_eq!(elapsed, Duration::ZERO);
            prop_assert_eq!(attempts, 1);
            prop_assert_eq!(stopped, Some(StopReason::AdviceTooLong));
        }
        prop_assert_eq!(gate, Some(secs.min(Duration::from_secs(90))));
    }
}
