//! The budget layer end to end over a scripted upstream: reservations
//! under concurrency, reconciliation from reported usage, refunds,
//! thresholds, resets, and what its errors and events show.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::Full;
use support::http::{anthropic, bytes, post_json};
use tower::{Service, ServiceExt};
use tower_llm_resilience::budget::{
    BudgetEvent, BudgetLayer, Cap, Clock, MemoryBudgetStore, Money, Period, Price, PriceTable,
    Scope, Tenant, UnknownModel,
};
use tower_llm_resilience::error::{BudgetExceeded, BudgetUnit, InvalidConfig, UnpricedModel};
use tower_llm_resilience::{ReplayBody, RequestMeta};

const URI: &str = "http://upstream.test/v1/messages";
const SECRET: &str = "sk-ant-api03-SECRET-DO-NOT-PRINT-0123456789";
/// 2026-12-02T01:44:44Z.
const NOW: i64 = 1_796_175_884;

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

fn body(model: &str, max_tokens: u64) -> String {
    format!(
        r#"{{"model":"{model}","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"Say hello to the budget, please."}}]}}"#
    )
}

/// The layer's estimate of a request: its parsed input plus `max_tokens`.
fn estimate(body: &str, max_tokens: u64) -> u64 {
    let req = anthropic(URI, SECRET, body.to_owned());
    let meta = RequestMeta::parse(req.uri().path(), req.headers(), body.as_bytes());
    meta.input_tokens() + max_tokens
}

/// What the upstream answers: a status, a content type and a body, after
/// `delay` (paused time), counting how many are in flight at once.
#[derive(Clone)]
struct Script {
    status: u16,
    content_type: &'static str,
    body: Arc<str>,
    delay: Duration,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Script {
    fn json(body: String) -> Self {
        Script {
            status: 200,
            content_type: "application/json",
            body: Arc::from(body),
            delay: Duration::from_millis(100),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn usage(input: u64, output: u64, write: u64, read: u64) -> Self {
        Script::json(format!(
            r#"{{"type":"message","usage":{{"input_tokens":{input},"output_tokens":{output},"cache_creation_input_tokens":{write},"cache_read_input_tokens":{read}}}}}"#
        ))
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<ReplayBody>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        let s = self.clone();
        tower::service_fn(move |_req: Request<ReplayBody>| {
            let s = s.clone();
            async move {
                s.calls.fetch_add(1, Ordering::SeqCst);
                let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                s.max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(s.delay).await;
                s.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(s.status)
                        .header("content-type", s.content_type)
                        .body(Full::new(Bytes::from(s.body.to_string())))
                        .expect("response"),
                )
            }
        })
    }
}

fn spent_and_reserved(store: &MemoryBudgetStore, cap: &str) -> (u64, u64) {
    store
        .counters()
        .iter()
        .filter(|(c, _)| c.cap() == cap)
        .fold((0, 0), |(s, r), (_, b)| (s + b.spent, r + b.reserved))
}

fn exceeded(e: &tower_llm_resilience::BoxError) -> &BudgetExceeded {
    e.downcast_ref::<BudgetExceeded>()
        .unwrap_or_else(|| panic!("not BudgetExceeded: {e}"))
}

/// 200 requests at once against a cap of 10 requests' estimates: exactly
/// 10 are admitted (the reservation, not the settled spend, is checked),
/// and the spend passes the cap only by what those 10 cost beyond their
/// estimates.
#[tokio::test(start_paused = true)]
async fn concurrent_requests_overshoot_a_cap_by_at_most_what_is_in_flight() {
    let b = body("claude-sonnet-4-5", 100);
    let e = estimate(&b, 100);
    let cap = 10 * e + e / 2;
    // Each answer reports 7 more input tokens than estimated.
    let over = 7;
    let input = e - 100 + over;
    let script = Script::usage(input, 100, 0, 0);
    let store = Arc::new(MemoryBudgetStore::new(1_000));
    let layer = BudgetLayer::builder()
        .cap(Cap::tokens("global", Scope::GLOBAL, Period::day(), cap))
        .store(Arc::clone(&store))
        .clock(Clock::new(|| at(NOW)))
        .build()
        .expect("budget");
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(script.service());
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let req = anthropic(URI, SECRET, b.clone());
            let svc = svc.clone();
            tokio::spawn(async move {
                match svc.oneshot(req).await {
                    Ok(res) => {
                        bytes(res).await;
                        Ok(())
                    }
                    Err(e) => Err(exceeded(&e).clone()),
                }
            })
        })
        .collect();
    let mut admitted = 0u64;
    for t in tasks {
        match t.await.expect("task") {
            Ok(()) => admitted += 1,
            Err(err) => {
                assert_eq!(err.limit, cap);
                assert!(err.used + err.cost > cap, "{err}");
                assert_eq!(err.unit, BudgetUnit::Tokens);
            }
        }
    }
    assert_eq!(
        admitted, 10,
        "a naive check of settled spend admits all 200"
    );
    let in_flight = script.max_in_flight.load(Ordering::SeqCst) as u64;
    assert_eq!(in_flight, 10, "all admitted were in flight together");
    let (spent, reserved) = spent_and_reserved(&store, "global");
    assert_eq!(reserved, 0, "every reservation settled");
    assert_eq!(spent, admitted * (e + over));
    assert!(
        spent <= cap + in_flight * over,
        "{spent} > {cap} + {in_flight}×{over}"
    );

    // Now spent is over: nothing fits until the reset.
    let err = svc
        .clone()
        .oneshot(anthropic(URI, SECRET, b.clone()))
        .await
        .expect_err("spent");
    assert_eq!(exceeded(&err).used, spent);
}

/// Reported usage, priced by the table with cache writes and reads apart,
/// replaces the estimate; a money cap counts nano-units exactly.
#[tokio::test(start_paused = true)]
async fn reported_usage_is_priced_with_cache_writes_and_reads_apart() {
    let price = Price::micros_per_mtok(3_000_000, 15_000_000, 3_750_000, 300_000);
    let script = Script::usage(1_234, 567, 2_000, 10_000);
    let store = Arc::new(MemoryBudgetStore::new(1_000));
    let layer = BudgetLayer::builder()
        .prices(PriceTable::empty().insert("house-model", price))
        .cap(Cap::money(
            "usd",
            Scope::TENANT,
            Period::month(),
            Money::from_units(10),
        ))
        .store(Arc::clone(&store))
        .clock(Clock::new(|| at(NOW)))
        .build()
        .expect("budget");
    let mut svc = layer_on(layer, &script);
    let res = svc
        .call(anthropic(URI, SECRET, body("house-model-2025-01-01", 300)))
        .await
        .expect("admitted");
    // Reserved while the body is unread.
    let (_, reserved) = spent_and_reserved(&store, "usd");
    assert!(reserved > 0);
    bytes(res).await;
    let expect = Money::for_tokens(price.input, 1_234)
        .saturating_add(Money::for_tokens(price.output, 567))
        .saturating_add(Money::for_tokens(price.cache_write, 2_000))
        .saturating_add(Money::for_tokens(price.cache_read, 10_000));
    assert_eq!(spent_and_reserved(&store, "usd"), (expect.nanos(), 0));
}

/// OpenAI's prompt tokens include the cached ones: they are priced once,
/// at the cached price.
#[tokio::test(start_paused = true)]
async fn openai_cached_tokens_are_priced_once() {
    let script = Script::json(
        r#"{"object":"chat.completion","usage":{"prompt_tokens":1000,"completion_tokens":10,"prompt_tokens_details":{"cached_tokens":400}}}"#
            .to_owned(),
    );
    let store = Arc::new(MemoryBudgetStore::new(1_000));
    let layer = BudgetLayer::builder()
        .prices(PriceTable::presets())
        .cap(Cap::money(
            "usd",
            Scope::GLOBAL,
            Period::day(),
            Money::from_units(1),
        ))
        .cap(Cap::tokens("tok", Scope::GLOBAL, Period::day(), 1_000_000))
        .store(Arc::clone(&store))
        .build()
        .expect("budget");
    let mut svc = layer_on(layer, &script);
    let req = post_json(
        "http://upstream.test/v1/chat/completions",
        &[("authorization", "Bearer sk-proj-SECRET")],
        r#"{"model":"gpt-4o-mini","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    bytes(svc.call(req).await.expect("admitted")).await;
    // gpt-4o-mini: 0.15 in, 0.075 cached, 0.60 out per million.
    let expect = 600 * 150 + 400 * 75 + 10 * 600; // nano-units
    assert_eq!(spent_and_reserved(&store, "usd"), (expect, 0));
    assert_eq!(spent_and_reserved(&store, "tok"), (1_010, 0));
}

fn layer_on(
    layer: BudgetLayer,
    script: &Script,
) -> impl Service<
    Request<ReplayBody>,
    Response = Response<tower_llm_resilience::ResponseBody>,
    Error = tower_llm_resilience::BoxError,
> + Clone {
    tower::ServiceBuilder::new()
        .layer(layer)
        .service(script.service())
}

/// A non-2xx answer refunds the reservation; a request dropped before it
/// was sent refunds it; an error after sending keeps the estimate.
#[tokio::test(start_paused = true)]
async fn refunds_and_what_stands() {
    let b = body("claude-haiku-4-5", 64);
    let e = estimate(&b, 64);
    let mut script =
        Script::json(r#"{"type":"error","error":{"type":"rate_limit_error"}}"#.to_owned());
    script.status = 429;
    let store = Arc::new(MemoryBudgetStore::new(1_000));
    let layer = BudgetLayer::builder()
        .cap(Cap::tokens("tok", Scope::KEY, Period::day(), 1_000_000))
        .store(Arc::clone(&store))
        .build()
        .expect("budget");
    let mut svc = layer_on(layer.clone(), &script);
    let res = svc
        .call(anthropic(URI, SECRET, b.clone()))
        .await
        .expect("answered");
    assert_eq!(res.status(), 429);
    bytes(res).await;
    assert_eq!(
        spent_and_reserved(&store, "tok"),
        (0, 0),
        "a 429 costs nothing"
    );

    // Made, never polled: nothing was sent.
    let fut = svc.call(anthropic(URI, SECRET, b.clone()));
    assert_eq!(spent_and_reserved(&store, "tok"), (0, e));
    drop(fut);
    assert_eq!(spent_and_reserved(&store, "tok"), (0, 0));

    // A transport error after sending: the estimate stands.
    let failing = tower::service_fn(|_req: Request<ReplayBody>| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Err::<Response<Full<Bytes>>, _>(std::io::Error::other("reset"))
    });
    let mut svc = tower::ServiceBuilder::new().layer(layer).service(failing);
    svc.call(anthropic(URI, SECRET, b))
        .await
        .expect_err("reset");
    assert_eq!(spent_and_reserved(&store, "tok"), (e, 0));
}

/// A stream cut off after its first usage report is charged the reported
/// input, and for output the estimate (more was generated than reported).
#[tokio::test(start_paused = true)]
async fn a_cut_stream_keeps_the_estimate_for_output() {
    let mut script = Script::json(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n"
            .to_owned(),
    );
    script.content_type = "text/event-stream";
    let store = Arc::new(MemoryBudgetStore::new(1_000));
    let layer = BudgetLayer::builder()
        .cap(Cap::tokens("tok", Scope::GLOBAL, Period::day(), 1_000_000))
        .store(Arc::clone(&store))
        .build()
        .expect("budget");
    let mut svc = layer_on(layer, &script);
    let b = r#"{"model":"claude-sonnet-4-5","max_tokens":500,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    bytes(svc.call(anthropic(URI, SECRET, b)).await.expect("admitted")).await;
    assert_eq!(spent_and_reserved(&store, "tok"), (10 + 500, 0));
}

/// With a money cap, a model the table does not price is refused by
/// default, and charged the configured price otherwise; token caps need
/// no price.
#[tokio::test(start_paused = true)]
async fn unknown_models_are_refused_or_charged_the_default() {
    let script = Script::usage(100, 100, 0, 0);
    let cap = Cap::money("usd", Scope::GLOBAL, Period::day(), Money::from_units(1));
    let layer = BudgetLayer::builder()
        .prices(PriceTable::presets())
        .cap(cap.clone())
        .build()
        .expect("budget");
    let mut svc = layer_on(layer, &script);
    let err = svc
        .call(anthropic(URI, SECRET, body("mystery-model", 10)))
        .await
        .expect_err("unpriced");
    let err = err.downcast_ref::<UnpricedModel>().expect("UnpricedModel");
    assert_eq!(err.model.as_deref(), Some("mystery-model"));
    assert_eq!(script.calls.load(Ordering::SeqCst), 0, "never sent");

    let dear = Price::micros_per_mtok(1_000_000_000, 1_000_000_000, 1_000_000_000, 1_000_000_000);
    let store = Arc::new(MemoryBudgetStore::new(10));
    let layer = BudgetLayer::builder()
        .prices(PriceTable::presets().unknown(UnknownModel::Price(dear)))
        .cap(cap)
        .store(Arc::clone(&store))
        .build()
        .expect("budget");
    let mut svc = layer_on(layer, &script);
    bytes(
        svc.call(anthropic(URI, SECRET, body("mystery-model", 10)))
            .await
            .expect("priced"),
    )
    .await;
    assert_eq!(
        spent_and_reserved(&store, "usd").0,
        Money::from_micros(200_000).nanos(),
        "200 tokens at 1,000 per million"
    );

    // A token cap alone prices nothing.
    let layer = BudgetLayer::builder()
        .cap(Cap::tokens("tok", Scope::GLOBAL, Period::day(), 1_000))
        .build()
        .expect("budget");
    let mut svc = layer_on(layer, &script);
    bytes(
        svc.call(anthropic(URI, SECRET, body("mystery-model", 10)))
            .await
            .expect("tokens"),
    )
    .await;
}

/// Each threshold fires once when crossed; not again in the period, and
/// again in the next.
#[tokio::test(start_paused = true)]
async fn the_threshold_callback_fires_once_per_crossing() {
    let clock = Arc::new(AtomicI64::new(NOW));
    let events: Arc<Mutex<Vec<BudgetEvent>>> = Arc::default();
    // Each request is charged 300 tokens.
    let script = Script::usage(200, 100, 0, 0);
    let c = Arc::clone(&clock);
    let ev = Arc::clone(&events);
    let layer = BudgetLayer::builder()
        .cap(Cap::tokens("daily", Scope::TENANT, Period::day(), 1_000))
        .tenant_header(HeaderName::from_static("x-tenant"))
        .thresholds(&[0.5, 0.8])
        .on_threshold(move |e| ev.lock().expect("events").push(e.clone()))
        .clock(Clock::new(move || at(c.load(Ordering::SeqCst))))
        .build()
        .expect("budget");
    let mut svc = layer_on(layer, &script);
    let request = || {
        let mut r = anthropic(URI, SECRET, body("m", 100));
        r.headers_mut()
            .insert("x-tenant", "acme".parse().expect("value"));
        r
    };
    // 300, 600 (crosses 0.5), 900 (crosses 0.8); then nothing fits.
    for _ in 0..3 {
        bytes(svc.call(request()).await.expect("admitted")).await;
    }
    svc.call(request()).await.expect_err("over");
    {
        let events = events.lock().expect("events");
        let fired: Vec<(f64, u64)> = events.iter().map(|e| (e.threshold, e.spent)).collect();
        assert_eq!(fired, [(0.5, 600), (0.8, 900)]);
        assert_eq!(events[0].scope, "tenant=acme");
        assert_eq!(&*events[0].cap, "daily");
        assert_eq!(events[0].limit, 1_000);
        assert_eq!(
            httpdate::fmt_http_date(events[0].resets_at()),
            "Thu, 03 Dec 2026 00:00:00 GMT"
        );
    }
    // The next day the counter starts again, and so do the crossings.
    clock.fetch_add(86_400, Ordering::SeqCst);
    for _ in 0..2 {
        bytes(svc.call(request()).await.expect("admitted")).await;
    }
    let fired: Vec<f64> = events
        .lock()
        .expect("events")
        .iter()
        .map(|e| e.threshold)
        .collect();
    assert_eq!(fired, [0.5, 0.8, 0.5]);
}

/// `BudgetExceeded` carries the end of the period: local midnight at the
/// cap's UTC offset, for a day and for a month.
#[tokio::test(start_paused = true)]
async fn budget_exceeded_carries_the_reset_at_an_offset() {
    let script = Script::usage(10, 10, 0, 0);
    for (period, reset) in [
        (
            Period::day().utc_offset_minutes(-300),
            "Wed, 02 Dec 2026 05:00:00 GMT",
        ),
        (
            Period::day().utc_offset_minutes(330),
            "Wed, 02 Dec 2026 18:30:00 GMT",
        ),
        (Period::month(), "Fri, 01 Jan 2027 00:00:00 GMT"),
        (
            Period::month().utc_offset_minutes(14 * 60),
            "Thu, 31 Dec 2026 10:00:00 GMT",
        ),
    ] {
        let layer = BudgetLayer::builder()
            .cap(Cap::tokens("tiny", Scope::KEY, period, 1))
            .clock(Clock::new(|| at(NOW)))
            .build()
            .expect("budget");
        let mut svc = layer_on(layer, &script);
        let err = svc
            .call(anthropic(URI, SECRET, body("m", 10)))
            .await
            .expect_err("over");
        let err = exceeded(&err);
        assert_eq!(httpdate::fmt_http_date(err.resets_at), reset, "{period:?}");
        assert_eq!(err.used, 0);
    }
}

/// Tenants from the extension (which wins) or the header, else the key:
/// one tenant's spend does not touch another's.
#[tokio::test(start_paused = true)]
async fn tenants_are_counted_apart() {
    let script = Script::usage(10, 10, 0, 0);
    let store = Arc::new(MemoryBudgetStore::new(100));
    let layer = BudgetLayer::builder()
        .cap(Cap::tokens(
            "t",
            Scope::TENANT.and(Scope::MODEL),
            Period::day(),
            1_000,
        ))
        .tenant_header(HeaderName::from_static("x-tenant"))
        .store(Arc::clone(&store))
        .build()
        .expect("budget");
    let mut svc = layer_on(layer, &script);
    let mut a = anthropic(URI, SECRET, body("m", 10));
    a.headers_mut()
        .insert("x-tenant", "from-header".parse().expect("v"));
    a.extensions_mut().insert(Tenant::new("from-extension"));
    bytes(svc.call(a).await.expect("a")).await;
    let mut b = anthropic(URI, SECRET, body("m", 10));
    b.headers_mut()
        .insert("x-tenant", "from-header".parse().expect("v"));
    bytes(svc.call(b).await.expect("b")).await;
    bytes(
        svc.call(anthropic(URI, SECRET, body("m", 10)))
            .await
            .expect("c"),
    )
    .await;
    let mut labels: Vec<String> = store
        .counters()
        .iter()
        .map(|(c, _)| c.scope_label())
        .collect();
    labels.sort();
    assert_eq!(labels.len(), 3);
    assert_eq!(labels[0], "tenant=from-extension model=m");
    assert_eq!(labels[1], "tenant=from-header model=m");
    assert!(
        labels[2].starts_with("tenant=key:") && labels[2].ends_with(" model=m"),
        "{}",
        labels[2]
    );
}

/// No key material in the error, the event, the counters or any `Debug`.
#[tokio::test(start_paused = true)]
async fn no_key_material_in_events_errors_or_debug() {
    let script = Script::usage(200, 100, 0, 0);
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let ev = Arc::clone(&events);
    let store = Arc::new(MemoryBudgetStore::new(100));
    let layer = BudgetLayer::builder()
        .cap(Cap::tokens(
            "per-key",
            Scope::KEY.and(Scope::TENANT),
            Period::day(),
            350,
        ))
        .on_threshold(move |e| ev.lock().expect("events").push(format!("{e:?}")))
        .store(Arc::clone(&store))
        .build()
        .expect("budget");
    let mut svc = layer_on(layer.clone(), &script);
    bytes(
        svc.call(anthropic(URI, SECRET, body("m", 100)))
            .await
            .expect("admitted"),
    )
    .await;
    let err = svc
        .call(anthropic(URI, SECRET, body("m", 100)))
        .await
        .expect_err("over");
    let mut shown = vec![
        err.to_string(),
        format!("{err:?}"),
        format!("{layer:?}"),
        format!("{:?}", {
            use tower::Layer;
            layer.layer(tower::service_fn(|_: Request<ReplayBody>| async {
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            }))
        }),
        format!("{store:?}"),
    ];
    shown.extend(
        store
            .counters()
            .iter()
            .flat_map(|(c, b)| [format!("{c:?}"), c.id(), c.label(), format!("{b:?}")]),
    );
    shown.extend(events.lock().expect("events").iter().cloned());
    assert!(shown.len() >= 8 && !events.lock().expect("events").is_empty());
    for s in &shown {
        assert!(!s.contains("SECRET"), "{s}");
        assert!(!s.contains("sk-ant"), "{s}");
    }
    assert!(
        exceeded(&err).scope.starts_with("tenant=key:"),
        "{}",
        exceeded(&err).scope
    );
}

#[test]
fn bad_configurations_are_typed_errors() {
    let cap = || Cap::tokens("c", Scope::GLOBAL, Period::day(), 10);
    let field = |r: Result<BudgetLayer, InvalidConfig>| r.expect_err("invalid").field;
    assert_eq!(field(BudgetLayer::builder().build()), "caps");
    assert_eq!(
        field(BudgetLayer::builder().cap(cap()).cap(cap()).build()),
        "cap.name"
    );
    assert_eq!(
        field(
            BudgetLayer::builder()
                .cap(Cap::tokens("a b", Scope::GLOBAL, Period::day(), 1))
                .build()
        ),
        "cap.name"
    );
    assert_eq!(
        field(
            BudgetLayer::builder()
                .cap(Cap::tokens("c", Scope::GLOBAL, Period::day(), u64::MAX))
                .build()
        ),
        "cap.limit"
    );
    assert_eq!(
        field(
            BudgetLayer::builder()
                .cap(Cap::tokens(
                    "c",
                    Scope::GLOBAL,
                    Period::month().utc_offset_minutes(24 * 60),
                    1
                ))
                .build()
        ),
        "cap.period"
    );
    assert_eq!(
        field(BudgetLayer::builder().cap(cap()).thresholds(&[1.5]).build()),
        "thresholds"
    );
    assert_eq!(
        field(
            BudgetLayer::builder()
                .cap(cap())
                .thresholds(&[f64::NAN])
                .build()
        ),
        "thresholds"
    );
    assert_eq!(
        field(BudgetLayer::builder().cap(cap()).name("").build()),
        "name"
    );
    assert_eq!(
        field(BudgetLayer::builder().cap(cap()).max_counters(0).build()),
        "max_counters"
    );
}

/// Retry above the budget (the stack's order) does not retry a refusal:
/// nothing changes before the reset.
#[tokio::test(start_paused = true)]
async fn retry_does_not_retry_budget_exceeded() {
    let script = Script::usage(10, 10, 0, 0);
    let layer = BudgetLayer::builder()
        .cap(Cap::tokens("tiny", Scope::GLOBAL, Period::day(), 1))
        .build()
        .expect("budget");
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let retry = tower_llm_resilience::retry::RetryLayer::builder()
        .no_budget()
        .build()
        .expect("retry");
    let mut svc = tower::ServiceBuilder::new()
        .layer(retry)
        .map_request(move |r: Request<ReplayBody>| {
            counted.fetch_add(1, Ordering::SeqCst);
            r
        })
        .layer(layer)
        .service(script.service());
    let err = svc
        .ready()
        .await
        .expect("ready")
        .call(anthropic(URI, SECRET, body("m", 10)))
        .await
        .expect_err("over");
    assert!(err.is::<BudgetExceeded>(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one attempt");
}

/// A store that never answers a reservation.
struct Silent;

impl tower_llm_resilience::budget::BudgetStore for Silent {
    fn reserve(
        &self,
        _now: i64,
        _charges: Vec<tower_llm_resilience::budget::Charge>,
    ) -> tower_llm_resilience::budget::Answer<tower_llm_resilience::budget::Reserve> {
        tower_llm_resilience::budget::Answer::Later(Box::pin(std::future::pending()))
    }
    fn settle(
        &self,
        _settlements: Vec<tower_llm_resilience::budget::Settlement>,
    ) -> tower_llm_resilience::budget::Answer<Vec<tower_llm_resilience::budget::Spend>> {
        tower_llm_resilience::budget::Answer::Later(Box::pin(std::future::pending()))
    }
    fn read(
        &self,
        _counter: &tower_llm_resilience::budget::Counter,
    ) -> tower_llm_resilience::budget::Answer<tower_llm_resilience::budget::Balance> {
        tower_llm_resilience::budget::Answer::Later(Box::pin(std::future::pending()))
    }
}

/// A store that never answers holds no request past its deadline: it is
/// answered `DeadlineElapsed` at the deadline, never sent.
#[tokio::test(start_paused = true)]
async fn a_store_that_never_answers_ends_by_the_deadline() {
    let b = body("claude-haiku-4-5", 64);
    let script = Script::json(r#"{"type":"message"}"#.to_owned());
    let layer = BudgetLayer::builder()
        .cap(Cap::tokens("tok", Scope::KEY, Period::day(), 1_000_000))
        .store(Silent)
        .build()
        .expect("budget");
    let svc = layer_on(layer, &script);
    let mut req = anthropic(URI, SECRET, b);
    req.extensions_mut()
        .insert(tower_llm_resilience::Deadline::after(Duration::from_secs(
            2,
        )));
    let started = tokio::time::Instant::now();
    let err = svc.oneshot(req).await.expect_err("no answer in time");
    assert!(
        err.is::<tower_llm_resilience::error::DeadlineElapsed>(),
        "{err}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}
