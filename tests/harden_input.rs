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
use support::ReplayService;
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
fn advising(advice: &'static str) -> (impl ReplayService, Arc<Mutex<Vec<Instant>>>) {
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

/// The same class in quota headers: a 429 with no `retry-after` whose
/// exhausted dimension resets beyond the 31-day cap. The reset was dropped
/// as nonsense, so the gate paused the 1 s default; too long is now the
/// cap, and the gate its maximum.
#[tokio::test(start_paused = true)]
async fn a_reset_beyond_the_cap_closes_the_gate_for_the_maximum_cooldown() {
    let layer = RateLimitLayer::builder()
        .cooldown(Duration::from_secs(1), Duration::from_secs(60))
        .cooldown_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_req: Request<ReplayBody>| async {
        let mut res = too_many("0");
        let h = res.headers_mut();
        h.remove("retry-after");
        h.insert(
            "anthropic-ratelimit-requests-remaining",
            "0".parse().unwrap(),
        );
        h.insert(
            "anthropic-ratelimit-requests-reset",
            "9999-12-31T23:59:59Z".parse().unwrap(),
        );
        Ok::<_, BoxError>(res)
    }));
    let res = svc.clone().oneshot(request("k")).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(res);
    assert_eq!(svc.stats()[0].cooldown, Some(Duration::from_secs(60)));
}

/// An upstream answering every request `429 retry-after: advice`.
fn always_429(advice: String, calls: Arc<AtomicUsize>) -> impl ReplayService {
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

// ------------------------------------------------------------- defect 3

/// A body asking for 4,000 output tokens, its `model` given twice when
/// `duplicate`.
fn four_thousand(duplicate: bool) -> String {
    let model = if duplicate {
        r#""model":"claude-haiku-4-5","model":"claude-sonnet-4-5""#
    } else {
        r#""model":"claude-sonnet-4-5""#
    };
    format!(r#"{{{model},"max_tokens":4000,"messages":[{{"role":"user","content":"Hi"}}]}}"#)
}

/// Four 4,000-token requests through a fail-fast limiter of 8,000 output
/// tokens a minute, against the simulator with the same quota; what each
/// got: its status, or "RateLimited".
async fn four_requests(duplicate: bool) -> Vec<String> {
    use tower_llm_resilience::client::HyperClient;
    use tower_llm_resilience::error::RateLimited;
    use tower_llm_resilience::rate::Limits;
    use tower_llm_resilience::sim::{self, SimConfig, Simulator};

    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(sim::Limits::new(50, 1_000_000, 8_000))
            // Every answer uses its whole budget: nothing is refunded.
            .with_output_tokens(4_000, 4_000),
    )
    .await
    .unwrap();
    let layer = RateLimitLayer::builder()
        .limits(Limits::per_minute(50, 1_000_000, 8_000).unwrap())
        .fail_fast(true)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = layer.layer(HyperClient::new());
    let mut got = Vec::new();
    for _ in 0..4 {
        let req = support::http::anthropic(
            &format!("{}/v1/messages", sim.url()),
            "sk-ant-duplicates",
            four_thousand(duplicate),
        );
        match svc.clone().oneshot(req).await {
            Ok(res) => {
                let status = res.status();
                support::http::bytes(res).await;
                got.push(status.as_u16().to_string());
            }
            Err(e) if e.is::<RateLimited>() => got.push("RateLimited".into()),
            Err(e) => got.push(format!("error: {e}")),
        }
    }
    got
}

/// Defect 3: with a duplicated `model` key serde refused the body, the
/// limiter charged 1 request and 0 tokens, and the provider — reading the
/// last key — answered 429 to the third and fourth. The body is now read
/// as the provider reads it, and charged as a normal body is.
#[tokio::test]
async fn duplicate_keys_get_no_free_tokens() {
    let want = ["200", "200", "RateLimited", "RateLimited"];
    assert_eq!(four_requests(false).await, want, "a normal body");
    assert_eq!(four_requests(true).await, want, "a duplicated model key");
}

/// An upstream that never answers: what `call` reserved stays reserved.
fn never_answers() -> impl ReplayService {
    service_fn(|_req: Request<ReplayBody>| {
        std::future::pending::<Result<Response<ResponseBody>, BoxError>>()
    })
}

const BURST: u64 = 1_000_000_000;

/// What a fresh limiter with this policy charged for one request of
/// `body` (requests, input, output tokens), read from its group's bucket
/// (paused time: no refill).
async fn charged(
    unparsed: tower_llm_resilience::rate::Unparsed,
    body: Vec<u8>,
) -> Result<[u64; 3], BoxError> {
    let mut svc = wide_limiter(unparsed).layer(never_answers());
    let req = post_json(
        "http://api.test/v1/messages",
        &[("x-api-key", "k"), ("anthropic-version", ANTHROPIC_VERSION)],
        body,
    );
    let fut = svc.ready().await.unwrap().call(req);
    // Admitted at the call, or refused: a refusal answers at once.
    let early = support::poll_once(Box::pin(fut));
    if let Some(Err(e)) = early {
        return Err(e);
    }
    let stats = svc.stats();
    assert_eq!(stats.len(), 1);
    let used = |i: usize| BURST - stats[0].available[i].unwrap();
    Ok([used(0), used(1), used(2)])
}

fn wide_limiter(unparsed: tower_llm_resilience::rate::Unparsed) -> RateLimitLayer {
    use tower_llm_resilience::rate::Limits;
    RateLimitLayer::builder()
        .limits(Limits::per_minute(BURST, BURST, BURST).unwrap())
        .unparsed(unparsed)
        .build()
        .unwrap()
}

/// Bodies that cannot be read are charged an estimate from their size and
/// the default output budget — never zero tokens — or, when configured,
/// refused with `UnreadableRequest`; an empty body costs no tokens.
#[tokio::test(start_paused = true)]
async fn unreadable_bodies_are_estimated_or_refused_never_free() {
    use tower_llm_resilience::error::UnreadableRequest;
    use tower_llm_resilience::rate::Unparsed;

    let (estimate, refuse) = (Unparsed::Estimate, Unparsed::Refuse);
    let deep = format!(
        r#"{{"model":"m","max_tokens":10,"messages":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    for body in [
        b"not json at all".to_vec(),
        br#"{"model":"m","max_tokens":4000,"messages":[{"role":"user","content":"Hi"#.to_vec(),
        br#"{"model":5,"max_tokens":4000}"#.to_vec(),
        br#"{"model":"m","max_tokens":1.5}"#.to_vec(),
        deep.into_bytes(),
    ] {
        let len = body.len() as u64;
        let cost = charged(estimate, body.clone()).await.unwrap();
        // len ÷ 3.5, rounded up; the default output budget (4,096).
        assert_eq!(cost, [1, (len * 2).div_ceil(7), 4096], "{len} bytes");
        let err = charged(refuse, body).await.unwrap_err();
        let err = err.downcast_ref::<UnreadableRequest>().expect("typed");
        assert_eq!(err.body_len, Some(len as usize));
    }
    // Nothing to read: one request, no tokens, under either policy.
    assert_eq!(charged(estimate, Vec::new()).await.unwrap(), [1, 0, 0]);
    assert_eq!(charged(refuse, Vec::new()).await.unwrap(), [1, 0, 0]);
    // A readable body is charged as before.
    let cost = charged(refuse, four_thousand(true).into_bytes())
        .await
        .unwrap();
    assert_eq!(cost[2], 4000);
}

// --------------------------------------- property: never under-counted

/// How a provider counts a body: parsed as JSON where a key given twice
/// keeps its last value (serde_json's `Value`, as Python's and JS's
/// parsers do), refused (nothing spent) unless the read fields have their
/// types; input tokens as the simulator counts them — text bytes ÷ 4,
/// rounded up, plus 4 per message — and output tokens up to `max_tokens`.
fn provider_count(body: &[u8]) -> Option<(u64, u64)> {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(body).ok()?;
    let o = v.as_object()?;
    let field = |k: &str| o.get(k).filter(|x| !x.is_null());
    if let Some(m) = field("model") {
        m.as_str()?;
    }
    let mut max = None;
    for k in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
        if let Some(n) = field(k) {
            let n = n.as_u64()?;
            max = max.or(Some(n));
        }
    }
    if let Some(s) = field("stream") {
        s.as_bool()?;
    }
    if let Some(t) = field("temperature") {
        t.as_f64()?;
    }
    if let Some(so) = field("stream_options") {
        let include = so.as_object()?.get("include_usage");
        include
            .filter(|u| !u.is_null())
            .map_or(Some(false), |u| u.as_bool())?;
    }
    fn text(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.len() as u64,
            Value::Array(a) => a.iter().map(text).sum(),
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| match k.as_str() {
                    "type" | "role" | "cache_control" => 0,
                    "text" | "content" => text(v),
                    _ => k.len() as u64 + text(v),
                })
                .sum(),
            Value::Null => 0,
            _ => 1,
        }
    }
    let mut bytes = 0;
    let mut messages = 0;
    for k in ["system", "tools", "input", "instructions", "messages"] {
        if let Some(x) = field(k) {
            bytes += text(x);
        }
    }
    if let Some(m) = field("messages") {
        messages = m.as_array()?.len() as u64;
    }
    Some((bytes.div_ceil(4) + 4 * messages, max.unwrap_or(0)))
}

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        Just("5".to_string()),
        Just("4000".to_string()),
        Just("1.5".to_string()),
        Just("true".to_string()),
        Just(r#""claude-sonnet-4-5""#.to_string()),
        Just(r#""m""#.to_string()),
        Just(r#"[{"role":"user","content":"Hello there, how are you?"}]"#.to_string()),
        Just(r#"[{"role":"user","content":[{"type":"text","text":"a longer text block"}]},{"role":"assistant","content":"x"}]"#.to_string()),
        Just(r#"{"include_usage":true,"include_usage":false}"#.to_string()),
        Just(r#"[{"name":"tool","input_schema":{"type":"object"}}]"#.to_string()),
        "[a-z ]{0,40}".prop_map(|s| format!("\"{s}\"")),
        (0u64..100_000).prop_map(|n| n.to_string()),
    ]
}

fn request_body() -> impl Strategy<Value = Vec<u8>> {
    let key = prop::sample::select(vec![
        "model",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "stream",
        "stream_options",
        "temperature",
        "system",
        "messages",
        "tools",
        "input",
        "instructions",
        "metadata",
    ]);
    (
        prop::collection::vec((key, field_value()), 0..10),
        prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(fields, flip, cut)| {
            let members: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let mut b = format!("{{{}}}", members.join(",")).into_bytes();
            if let Some((i, c)) = flip {
                let i = i.index(b.len());
                b[i] = c;
            }
            if let Some(i) = cut {
                b.truncate(i.index(b.len() + 1));
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// For any body — duplicate keys, wrong types, corrupted, truncated —
    /// the limiter charges at least the input and output tokens the
    /// provider would count reading it with the last key winning, and
    /// never zero tokens for a body it cannot read.
    #[test]
    fn charged_tokens_are_never_below_what_the_provider_counts(body in request_body()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let estimate = tower_llm_resilience::rate::Unparsed::Estimate;
        let [requests, input, output] = rt.block_on(charged(estimate, body.clone())).unwrap();
        prop_assert_eq!(requests, 1);
        if let Some((want_in, want_out)) = provider_count(&body) {
            prop_assert!(input >= want_in, "input {} < {}: {}", input, want_in, String::from_utf8_lossy(&body));
            prop_assert!(output >= want_out, "output {} < {}: {}", output, want_out, String::from_utf8_lossy(&body));
        }
        let meta = tower_llm_resilience::request::RequestMeta::parse(
            "/v1/messages",
            &http::HeaderMap::new(),
            &body,
        );
        if !meta.is_parsed() && !body.is_empty() {
            prop_assert!(output > 0 && input > 0, "unreadable, charged {} / {}", input, output);
        }
    }
}
