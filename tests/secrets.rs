//! Secrets: no part of an API key reaches anything the crate shows.
//!
//! The suite's scenarios — a success, a 429 and its cooldown, a retry, a
//! fallback hop, a budget exceeded, key pools of each auth style
//! (`x-api-key`, `Bearer`, Azure's `api-key`), Redis failing, config
//! errors with a key pasted where it does not belong, and the gateway —
//! run with every `tracing` event captured at TRACE, and everything they
//! print is kept: `{:?}` of requests (as the upstream receives them),
//! responses, errors, config, stats and layers, the gateway's `/metrics`.
//! No 6-byte window of any key may appear in any of it (a window, not the
//! whole key: a key cut, or shown by its first bytes, still leaks).

#![cfg(not(loom))]

mod support;

#[path = "support/gateway.rs"]
mod client;
#[path = "../examples/gateway/mod.rs"]
mod gateway;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use support::http::{anthropic, post_json, text};
use support::redis::RedisServer;
use support::trace::logs;
use tower::{ServiceExt, service_fn};
use tower_layer::Layer;
use tower_llm_resilience::budget::{BudgetLayer, Cap, Period, Scope};
use tower_llm_resilience::cache::CacheLayer;
use tower_llm_resilience::config::Config;
use tower_llm_resilience::fallback::FallbackLayer;
use tower_llm_resilience::rate::{AuthStyle, KeyPool, Limit, Limits, RateLimitLayer};
use tower_llm_resilience::redis::{FailurePolicy, Redis};
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::retry::RetryLayer;
use tower_llm_resilience::{BoxError, ResponseBody, Stack, Target};

/// A caller's own key, sent as `x-api-key`.
const CALLER: &str = "sk-ant-api03-Cq4Pv6Mg2Zr9Xe4WqJ";
/// Pool keys, one pool per auth style.
const POOL_ANTHROPIC: &str = "sk-ant-api03-Pa7Wq8RtZ2pLx7Nv4Kd";
const POOL_OPENAI: &str = "sk-proj-Po3Jm5Hc9Ty3Bf6Ue1Qa";
const POOL_AZURE: &str = "Az7Kq2Wm9Xp4Rt6Yn3Lb8Vc5Gd1Hf0Js";
/// The gateway's upstream key.
const GATEWAY: &str = "sk-gw-Ug8Tn4Bx8Qk2Wy7Jd";
/// A Redis password.
const REDIS_PASSWORD: &str = "Rp5Kx3Vn8Mq5Zt2Lh9";

const KEYS: [&str; 6] = [
    CALLER,
    POOL_ANTHROPIC,
    POOL_OPENAI,
    POOL_AZURE,
    GATEWAY,
    REDIS_PASSWORD,
];

const URI: &str = "http://upstream.test/v1/messages";

/// Where a window of a key was found: (which text shown, key index,
/// offset of the window in the key, offset in the text). The key itself
/// is not repeated.
type Leak = (usize, usize, usize, usize);

/// Every 6-byte window of every key, searched in every text.
fn leaks(keys: &[&str], shown: &[(String, String)]) -> Vec<Leak> {
    let mut found = Vec::new();
    for (t, (_, text)) in shown.iter().enumerate() {
        for (k, key) in keys.iter().enumerate() {
            for (at, window) in key.as_bytes().windows(6).enumerate() {
                if let Some(pos) = find(text.as_bytes(), window) {
                    found.push((t, k, at, pos));
                }
            }
        }
    }
    found
}

/// Each leak's place: its label and the text around it, the window
/// itself masked.
fn context(found: &[Leak], shown: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut last = None;
    for (t, k, _, pos) in found {
        if last == Some((t, k)) {
            continue;
        }
        last = Some((t, k));
        let (label, text) = &shown[*t];
        let bytes = text.as_bytes();
        let before = String::from_utf8_lossy(&bytes[pos.saturating_sub(60)..*pos]);
        let after = String::from_utf8_lossy(
            &bytes[(pos + 6).min(bytes.len())..(pos + 40).min(bytes.len())],
        );
        out.push_str(&format!("  {label} (key {k}): …{before}******{after}…\n"));
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a test shows, labelled.
#[derive(Clone, Default)]
struct Shown(Arc<Mutex<Vec<(String, String)>>>);

impl Shown {
    fn add(&self, label: &str, text: impl Into<String>) {
        self.0
            .lock()
            .expect("lock")
            .push((label.to_owned(), text.into()));
    }

    /// Asserts nothing shown (and nothing logged so far) holds a window
    /// of a key; how much was searched.
    fn assert_clean(&self) -> usize {
        self.add("logs", logs().text());
        let shown = self.0.lock().expect("lock").clone();
        let found = leaks(&KEYS, &shown);
        assert!(
            found.is_empty(),
            "key material shown:\n{}",
            context(&found, &shown)
        );
        shown.iter().map(|(_, t)| t.len()).sum()
    }
}

/// An upstream recording `{:?}` of each request it receives: a 429
/// (retry-after 1 s) for the first `claude-cool` request, 529 always for
/// `claude-primary`, 200 with usage otherwise.
fn upstream(
    shown: Shown,
) -> impl tower::Service<
    Request<ReplayBody>,
    Response = Response<String>,
    Error = Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    let cooled = Arc::new(Mutex::new(false));
    service_fn(move |req: Request<ReplayBody>| {
        let shown = shown.clone();
        let cooled = Arc::clone(&cooled);
        async move {
            shown.add("request at the upstream", format!("{req:?}"));
            let body = String::from_utf8_lossy(req.body().as_bytes()).into_owned();
            let first_cool = body.contains("claude-cool") && {
                let mut c = cooled.lock().expect("lock");
                !std::mem::replace(&mut *c, true)
            };
            let res = if body.contains("claude-primary") {
                Response::builder().status(529).body(
                    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                        .to_owned(),
                )
            } else if first_cool {
                Response::builder()
                    .status(429)
                    .header("retry-after", "1")
                    .body(
                        r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#
                            .to_owned(),
                    )
            } else {
                Response::builder().body(
                    r#"{"type":"message","content":[{"type":"text","text":"4"}],"usage":{"input_tokens":12,"output_tokens":3}}"#
                        .to_owned(),
                )
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

fn body(model: &str) -> String {
    format!(
        r#"{{"model":"{model}","max_tokens":16,"temperature":0,"messages":[{{"role":"user","content":"2+2?"}}]}}"#
    )
}

/// Sends `req` through `svc`, showing the response (`{:?}`, then its
/// body) or the error (`Display` and `{:?}`): the status, if answered.
async fn drive<S>(shown: &Shown, svc: &S, req: Request<ReplayBody>) -> Option<u16>
where
    S: tower::Service<Request<ReplayBody>, Response = Response<ResponseBody>, Error = BoxError>
        + Clone,
{
    match svc.clone().oneshot(req).await {
        Ok(res) => {
            shown.add("response", format!("{res:?}"));
            let status = res.status().as_u16();
            shown.add("response body", text(res).await);
            Some(status)
        }
        Err(e) => {
            shown.add("error", format!("{e} {e:?}"));
            None
        }
    }
}

/// The checker finds a planted window — six bytes from the middle of a
/// key, in a real `{:?}` of a request whose key header was not marked
/// sensitive — and passes five bytes or none.
#[test]
fn the_checker_catches_a_planted_leak() {
    let req = Request::post(URI)
        .header("x-api-key", POOL_OPENAI)
        .body(())
        .expect("request");
    let planted = vec![
        ("debug".to_owned(), format!("{req:?}")),
        ("cut".to_owned(), format!("key ..{}..", &POOL_AZURE[13..19])),
    ];
    let found = leaks(&KEYS, &planted);
    assert!(found.iter().any(|l| l.0 == 0 && l.1 == 2), "{found:?}");
    assert!(
        found.iter().any(|l| l.0 == 1 && l.1 == 3 && l.2 == 13),
        "{found:?}"
    );
    let clean = vec![
        (
            "five".to_owned(),
            format!("key ..{}..", &POOL_AZURE[13..18]),
        ),
        ("none".to_owned(), "x-api-key: Sensitive".to_owned()),
    ];
    assert_eq!(leaks(&KEYS, &clean), Vec::new());
}

/// Success, a 429 and its cooldown, a retry, a fallback hop, a cache hit,
/// a budget exceeded, three pools and config errors: nothing shown holds
/// a window of a key.
#[tokio::test(start_paused = true)]
async fn no_key_material_in_logs_debug_errors_or_stats() {
    logs();
    let shown = Shown::default();

    // The whole stack, a budget below it: success, 429 then retried,
    // overloaded then the fallback hop, a cache hit, then over budget.
    let stack = Stack::builder()
        .limits(Limits::unlimited().requests(Limit::per_minute(100).expect("limit")))
        .retry(
            RetryLayer::builder()
                .max_attempts(2)
                .build()
                .expect("retry"),
        )
        .fallback(FallbackLayer::new([Target::model("claude-backup")]))
        .cache(CacheLayer::new());
    let budget = BudgetLayer::builder()
        .cap(Cap::tokens("daily", Scope::KEY, Period::day(), 60))
        .build()
        .expect("budget");
    let svc = stack.clone().service(budget.layer(upstream(shown.clone())));
    let mut statuses = Vec::new();
    for model in [
        "claude-ok",
        "claude-cool",
        "claude-primary",
        "claude-ok",
        "claude-big",
        "claude-big2",
        "claude-big3",
    ] {
        let req = anthropic(URI, CALLER, body(model));
        statuses.push(drive(&shown, &svc, req).await);
    }
    // Answered, retried past the 429, hopped, hit, then the budget runs out.
    assert_eq!(&statuses[..4], &[Some(200); 4], "{statuses:?}");
    assert!(statuses.contains(&None), "the budget never refused");
    let mut req = anthropic(URI, CALLER, body("claude-ok"));
    let counters = budget.counters(&mut req).expect("counters");
    let balance = budget.balance(&counters[0]).await.expect("balance");
    assert!(balance.spent > 0);
    shown.add(
        "stack and stats",
        format!(
            "{stack:?} {:?} {:?} {budget:?} {counters:?} {balance:?}",
            stack.rate_limiter().stats(),
            stack.concurrency_limiter().stats(),
        ),
    );

    // A pool of each auth style, its key set on the way up.
    for (style, secret, header) in [
        (AuthStyle::Anthropic, POOL_ANTHROPIC, "x-api-key"),
        (AuthStyle::OpenAi, POOL_OPENAI, "authorization"),
        (AuthStyle::Azure, POOL_AZURE, "api-key"),
    ] {
        let pool = KeyPool::builder(style)
            .key("team", secret)
            .build()
            .expect("pool");
        let limiter = RateLimitLayer::builder()
            .limits(Limits::unlimited().requests(Limit::per_minute(1).expect("limit")))
            .key_pool(pool.clone())
            .fail_fast(true)
            .build()
            .expect("limiter");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recording = {
            let seen = Arc::clone(&seen);
            upstream(shown.clone()).map_request(move |req: Request<ReplayBody>| {
                seen.lock()
                    .expect("lock")
                    .push(req.headers().contains_key(header));
                req
            })
        };
        let pooled = Stack::builder()
            .rate_limit(limiter.clone())
            .service(recording);
        let mut answered = 0;
        for _ in 0..2 {
            let req = post_json(
                URI,
                &[("anthropic-version", "2023-06-01")],
                body("claude-ok"),
            );
            answered += usize::from(drive(&shown, &pooled, req).await.is_some());
        }
        // Each sent upstream with the pool's key in the style's header.
        let seen = seen.lock().expect("lock").clone();
        assert!(answered >= 1 && !seen.is_empty(), "{style:?}");
        assert!(seen.iter().all(|had| *had), "{style:?}: {seen:?}");
        let dup = KeyPool::builder(style)
            .key("x", secret)
            .key("y", secret)
            .build()
            .expect_err("duplicate");
        shown.add(
            "pool",
            format!(
                "{pool:?} {limiter:?} {:?} {:?} {dup} {dup:?}",
                pool.stats(),
                limiter.stats()
            ),
        );
    }

    // Config: keys from the environment, and keys pasted where they do
    // not belong (a value of the wrong type or variant, a variable's name,
    // JSON). Not a key written as a field's name: an unknown field's path
    // names it, on purpose (that is how a typo is found).
    let toml = r#"
[rate]
preset = "anthropic-tier-2"
[pool]
auth = "azure"
[[pool.keys]]
label = "team-a"
api_key_env = "POOL_KEY_A"
"#;
    let config = Config::from_toml_str(toml).expect("config");
    let env = |name: &str| (name == "POOL_KEY_A").then(|| POOL_AZURE.to_owned());
    let built = Stack::from_config_with_env(&config, env).expect("stack");
    shown.add("config", format!("{config:?} {built:?}"));
    let pasted = [
        format!("[rate]\nmax_groups = \"{POOL_OPENAI}\"\n"),
        format!("[rate]\npreset = \"{POOL_OPENAI}\"\n"),
        format!("[rate]\nmax_wait = \"{POOL_ANTHROPIC}\"\n"),
        format!(
            "[pool]\nauth = \"openai\"\n[[pool.keys]]\nlabel = \"a\"\napi_key_env = \"{POOL_OPENAI}\"\n"
        ),
        format!(
            "[pool]\nauth = \"azure\"\n[[pool.keys]]\nlabel = \"a\"\napi_key_env = \"{POOL_AZURE}\"\n"
        ),
        format!(
            "[pool]\nauth = \"azure\"\n[[pool.keys]]\nlabel = \"{POOL_AZURE}\"\napi_key = \"{POOL_OPENAI}\"\n"
        ),
        format!("[pool]\nauth = \"openai\n[[pool.keys]]\nlabel = \"{POOL_OPENAI}\"\n"),
    ];
    let mut refused = 0;
    for text in &pasted {
        let err = match Config::from_toml_str(text) {
            Err(e) => e,
            Ok(c) => match Stack::from_config_with_env(&c, |_| None) {
                Err(e) => e,
                Ok(_) => continue,
            },
        };
        refused += 1;
        shown.add("config error", format!("{err} {err:?}"));
    }
    assert_eq!(refused, pasted.len(), "every pasted key is refused");
    let json = format!(r#"{{"rate":{{"max_groups":"{POOL_OPENAI}"}}}}"#);
    let err = Config::from_json_str(&json).expect_err("json");
    shown.add("config error", format!("{err} {err:?}"));

    tokio::time::sleep(Duration::from_millis(10)).await;
    let searched = shown.assert_clean();
    eprintln!("secrets: {searched} bytes searched, none held a key's window");
    assert!(searched > 10_000, "only {searched} bytes searched");
}

/// Redis failing (a password in its URL; dead, or refusing a wrong one)
/// and the gateway (its logs and `/metrics`): nothing shown holds a window
/// of a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_material_from_redis_errors_or_the_gateway() {
    logs();
    let shown = Shown::default();

    // Redis: nothing listens on port 1, then (with a server) a wrong
    // password.
    let mut urls = vec![format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1/0")];
    let server = RedisServer::get("secrets");
    if let Some(s) = server.as_ref().and_then(|s| s.port) {
        urls.push(format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{s}/0"));
    }
    for url in &urls {
        let redis = Redis::new(url)
            .expect("url")
            .with_timeout(Duration::from_millis(100));
        let err = redis.ping().await.expect_err("no server, or no auth");
        shown.add("redis error", format!("{redis:?} {err} {err:?}"));
        let limiter = RateLimitLayer::builder()
            .limits(Limits::unlimited().requests(Limit::per_minute(10).expect("limit")))
            .redis(redis.clone())
            .redis_failure(FailurePolicy::FailClosed)
            .build()
            .expect("limiter");
        let svc = limiter.layer(upstream(shown.clone()));
        let svc = tower::ServiceBuilder::new()
            .map_response(|r: Response<ResponseBody>| r)
            .service(svc);
        assert_eq!(
            drive(&shown, &svc, anthropic(URI, CALLER, body("claude-ok"))).await,
            None,
            "fail closed"
        );
        shown.add(
            "redis limiter",
            format!(
                "{limiter:?} {:?} {:?}",
                limiter.stats(),
                limiter.remote_stats()
            ),
        );
    }
    let bad = Redis::new("redis://:pw@[not a host").expect_err("bad url");
    shown.add("redis error", format!("{bad} {bad:?}"));

    // The gateway, in front of a simulator that only takes its key.
    let sim = tower_llm_resilience::sim::Simulator::start(
        tower_llm_resilience::sim::SimConfig::new()
            .with_time_scale(60.0)
            .with_api_keys([GATEWAY]),
    )
    .await
    .expect("simulator");
    let o = gateway::Options {
        port: 0,
        upstream: Some(sim.url()),
        anthropic_key: Some(gateway::Secret(GATEWAY.into())),
        openai_key: Some(gateway::Secret(GATEWAY.into())),
        configure_limits: false,
        ..gateway::Options::default()
    };
    shown.add("gateway options", format!("{o:?}"));
    let gw = gateway::Gateway::start(&o).await.expect("gateway");
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/v1/messages",
            client::anthropic_body("claude-haiku-4-5", 16, false),
        ),
        (
            "/v1/chat/completions",
            client::openai_body("gpt-4o-mini", 16, false),
        ),
        (
            "/v1/messages",
            client::anthropic_body("claude-haiku-4-5", 16, true),
        ),
    ] {
        let res = http
            .post(format!("{}{path}", gw.url()))
            .header("content-type", "application/json")
            .header("x-api-key", CALLER)
            .header("authorization", format!("Bearer {CALLER}"))
            .body(body)
            .send()
            .await
            .expect("answers");
        assert_eq!(res.status(), 200, "{path}");
        shown.add("gateway response", format!("{res:?}"));
        shown.add("gateway body", res.text().await.expect("body"));
    }
    let metrics = http
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("gateway_requests_total"), "{metrics}");
    shown.add("metrics", metrics);
    gw.shutdown().await.expect("shuts down");
    sim.shutdown().await;

    let searched = shown.assert_clean();
    eprintln!("secrets (redis, gateway): {searched} bytes searched, none held a key's window");
    assert!(searched > 1_000, "only {searched} bytes searched");
}
