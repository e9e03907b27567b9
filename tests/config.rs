//! The configuration file: the shipped example parses and builds (TOML and
//! JSON alike), every kind of invalid field is named by its path, secrets
//! come only from the environment and never show, presets hold their
//! documented figures, and a built stack enforces what the file says.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tower::{ServiceExt, service_fn};
use tower_llm_resilience::Stack;
use tower_llm_resilience::config::{Config, ConfigError, ConfigErrorKind};
use tower_llm_resilience::rate::presets;
use tower_llm_resilience::rate::{Dimension, Limits};
use tower_llm_resilience::request::ReplayBody;

const EXAMPLE_TOML: &str = include_str!("../examples/llm.toml");
const EXAMPLE_JSON: &str = include_str!("../examples/llm.json");

const SECRET_A: &str = "sk-ant-SECRET-AAAA-0001";
const SECRET_B: &str = "sk-ant-SECRET-BBBB-0002";
const SECRET_C: &str = "sk-ant-SECRET-CCCC-0004";
const SECRET_OPENAI: &str = "sk-proj-SECRET-OPENAI-0003";
const SECRET_REDIS: &str = "redis://:SECRET-PASSWORD@127.0.0.1:6399/0";

fn env() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("ANTHROPIC_KEY_A", SECRET_A),
        ("ANTHROPIC_KEY_B", SECRET_B),
        ("ANTHROPIC_KEY_C", SECRET_C),
        ("OPENAI_API_KEY", SECRET_OPENAI),
        ("REDIS_URL", SECRET_REDIS),
    ])
}

fn lookup(vars: &HashMap<&'static str, &'static str>) -> impl FnMut(&str) -> Option<String> {
    move |name| vars.get(name).map(|v| (*v).to_owned())
}

fn secrets() -> [&'static str; 5] {
    [
        SECRET_A,
        SECRET_B,
        SECRET_C,
        SECRET_OPENAI,
        "SECRET-PASSWORD",
    ]
}

fn assert_no_secret(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(s), "{what} shows a secret: {text}");
    }
}

/// Parses, builds the stack and the budget: the first error.
fn first_error(toml: &str, vars: &HashMap<&'static str, &'static str>) -> Option<ConfigError> {
    let config = match Config::from_toml_str(toml) {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    if let Err(e) = Stack::from_config_with_env(&config, lookup(vars)) {
        return Some(e);
    }
    config.budget_layer_with_env(lookup(vars)).err()
}

#[tokio::test]
async fn the_full_example_parses_and_builds() {
    let config = Config::from_toml_str(EXAMPLE_TOML).expect("the example parses");
    assert_eq!(config.body_limit, Some(32 * 1024 * 1024));
    assert_eq!(config.rate.preset.as_deref(), Some("anthropic-tier-2"));
    assert_eq!(config.rate.max_wait, Some(Duration::from_secs(30)));
    assert_eq!(
        config.rate.models["claude-haiku-4-5"].input_tokens_burst,
        Some(100_000)
    );
    assert_eq!(config.retry.max_attempts, Some(4));
    assert_eq!(config.fallback.targets.len(), 3);
    assert_eq!(config.pool.as_ref().map(|p| p.keys.len()), Some(3));
    assert_eq!(config.budget.as_ref().map(|b| b.caps.len()), Some(2));

    let vars = env();
    let stack = Stack::from_config_with_env(&config, lookup(&vars)).expect("the stack builds");
    let budget = config
        .budget_layer_with_env(lookup(&vars))
        .expect("the budget builds")
        .expect("the example has a budget");
    assert_no_secret("the stack's Debug", &format!("{stack:?}"));
    assert_no_secret("the budget's Debug", &format!("{budget:?}"));
    assert_no_secret("the config's Debug", &format!("{config:?}"));
}

#[tokio::test]
async fn a_redis_cache_is_built_from_the_redis_section() {
    let config = Config::from_toml_str(EXAMPLE_TOML).expect("parses");
    let vars = env();
    let stack = Stack::from_config_redis_cache_with_env(&config, lookup(&vars))
        .expect("builds (Redis connects on first use)");
    assert_no_secret("the stack's Debug", &format!("{stack:?}"));
    let e = Stack::from_config_redis_cache_with_env(&Config::default(), lookup(&vars))
        .expect_err("no [redis]");
    assert_eq!(e.path, "redis");
}

#[test]
fn the_json_equivalent_gives_the_same_config() {
    let toml = Config::from_toml_str(EXAMPLE_TOML).expect("toml");
    let json = Config::from_json_str(EXAMPLE_JSON).expect("json");
    assert_eq!(toml, json);
    assert_ne!(toml, Config::default());
}

#[test]
fn from_path_reads_toml_and_json_by_extension() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let t = Config::from_path(format!("{dir}/examples/llm.toml")).expect("toml file");
    let j = Config::from_path(format!("{dir}/examples/llm.json")).expect("json file");
    assert_eq!(t, j);
    let missing = Config::from_path(format!("{dir}/examples/no-such.toml")).expect_err("refused");
    assert_eq!(missing.kind, ConfigErrorKind::Io);
}

#[tokio::test]
async fn each_invalid_field_is_named_by_its_path() {
    use ConfigErrorKind::{Invalid, Syntax};
    let pool = |keys: &str| format!("[pool]\nauth = \"anthropic\"\nkeys = [{keys}]\n");
    let cases: Vec<(String, &str, ConfigErrorKind)> = vec![
        (
            "[rate.models.\"claude-haiku-4-5\"]\ninput_tokens_per_minute = 0".into(),
            "rate.models.claude-haiku-4-5.input_tokens_per_minute",
            Invalid,
        ),
        (
            "[rate.models.\"claude-haiku-4-5\"]\ninput_tokens_per_minute = \"lots\"".into(),
            "rate.models.claude-haiku-4-5.input_tokens_per_minute",
            Syntax,
        ),
        (
            "[rate.default]\nrequests_per_minute = 10\nrequests_burst = 0".into(),
            "rate.default.requests_burst",
            Invalid,
        ),
        ("[rate.default]\ntokens_burst = 5".into(), "rate.default.tokens_burst", Invalid),
        ("[rate]\npreset = \"anthropic-tier-9\"".into(), "rate.preset", Invalid),
        ("[rate]\nmax_wait = \"5 parsecs\"".into(), "rate.max_wait", Syntax),
        ("[rate]\nmax_wait = 30".into(), "rate.max_wait", Syntax),
        ("[rate]\nlearning = \"sometimes\"".into(), "rate.learning", Syntax),
        ("[rate]\nmax_groups = 0".into(), "rate.max_groups", Invalid),
        ("[rate]\nlearn_period = \"0s\"".into(), "rate.learn_period", Invalid),
        (
            "[rate]\nqueue = { max_len = 0, aging = \"1s\" }".into(),
            "rate.queue.max_len",
            Invalid,
        ),
        ("[rate]\npriority_header = \"no spaces\"".into(), "rate.priority_header", Invalid),
        ("[concurrency]\nmax = 0".into(), "concurrency.max", Invalid),
        (
            "[concurrency]\nadaptive = { min = 0, max = 4 }".into(),
            "concurrency.adaptive.min",
            Invalid,
        ),
        (
            "[concurrency]\nadaptive = { min = 2, max = 4, decrease_factor = 1.5 }".into(),
            "concurrency.adaptive.decrease_factor",
            Invalid,
        ),
        ("[retry]\nmax_attempts = 0".into(), "retry.max_attempts", Invalid),
        ("[retry]\nmax_attempts = -1".into(), "retry.max_attempts", Syntax),
        (
            "[retry]\nbackoff = { base = \"1s\", factor = 0.5, cap = \"2s\" }".into(),
            "retry.backoff.factor",
            Invalid,
        ),
        (
            "[retry]\nbackoff = { base = \"1s\", factor = 2.0, cap = \"2s\", jitter = \"wild\" }"
                .into(),
            "retry.backoff.jitter",
            Syntax,
        ),
        ("[retry]\nretry_after = { max = \"2d\" }".into(), "retry.retry_after.max", Invalid),
        (
            "[retry]\nserver_jitter = { ratio = 2.0, max = \"1s\" }".into(),
            "retry.server_jitter.ratio",
            Invalid,
        ),
        (
            "[retry]\nbudget = { ttl = \"5m\", min_per_sec = 1, ratio = 0.1 }".into(),
            "retry.budget.ttl",
            Invalid,
        ),
        ("[retry]\ntimeout = \"0s\"".into(), "retry.timeout", Invalid),
        ("[cache]\nttl = \"0s\"".into(), "cache.ttl", Invalid),
        ("[cache]\nstore = \"redis\"".into(), "cache.store", Invalid),
        ("[cache]\nstore = \"disk\"".into(), "cache.store", Syntax),
        ("[cache]\nstale_if_error = \"90d\"".into(), "cache.stale_if_error", Invalid),
        ("[cache]\ntenant_header = \"bad header\"".into(), "cache.tenant_header", Invalid),
        ("[fallback]\ntargets = [{ model = \"\" }]".into(), "fallback.targets[0].model", Invalid),
        (
            "[fallback]\ntargets = [{ model = \"a\" }, { model = \"b\", max_tokens = 5, openai = { api_key_env = \"OPENAI_API_KEY\" } }]".into(),
            "fallback.targets[1].max_tokens",
            Invalid,
        ),
        (
            "[fallback]\ntargets = [{ model = \"b\", openai = { endpoint = \"/relative\", api_key_env = \"OPENAI_API_KEY\" } }]".into(),
            "fallback.targets[0].openai.endpoint",
            Invalid,
        ),
        (
            "[fallback]\ncooldown = { default = \"2d\", max = \"2d\" }\ntargets = [{ model = \"a\" }]"
                .into(),
            "fallback.cooldown",
            Invalid,
        ),
        (
            pool("{ label = \"a\", api_key_env = \"ANTHROPIC_KEY_A\" }, { label = \"a\", api_key_env = \"ANTHROPIC_KEY_B\" }"),
            "pool.keys[1].label",
            Invalid,
        ),
        (
            pool("{ label = \"a\", api_key_env = \"ANTHROPIC_KEY_A\", quota = { period = \"day\", requests = 5, utc_offset = \"+25:00\" } }"),
            "pool.keys[0].quota.utc_offset",
            Invalid,
        ),
        (
            pool("{ label = \"a\", api_key_env = \"ANTHROPIC_KEY_A\", quota = { period = \"day\", tokens = 0 } }"),
            "pool.keys[0].quota.tokens",
            Invalid,
        ),
        (
            pool("{ label = \"a\", api_key_env = \"ANTHROPIC_KEY_A\", quota = { period = \"day\", spend = \"0\" } }") + "[pool.prices]\npresets = true\n",
            "pool.keys[0].quota.spend",
            Invalid,
        ),
        (
            pool("{ label = \"a\", api_key_env = \"ANTHROPIC_KEY_A\", quota = { period = \"month\", spend = \"5\" } }"),
            "pool.keys[0].quota.spend",
            Invalid,
        ),
        (
            pool("{ label = \"a\", api_key_env = \"ANTHROPIC_KEY_A\", quota = { period = \"fortnight\", tokens = 5 } }"),
            "pool.keys[0].quota.period",
            Syntax,
        ),
        (
            pool("{ label = \"a\", api_key_env = \"not a name\" }"),
            "pool.keys[0].api_key_env",
            Invalid,
        ),
        ("[pool]\nauth = \"anthropic\"\nkeys = []".into(), "pool.keys", Invalid),
        ("body_limit = 0".into(), "body_limit", Invalid),
        ("[budget]\nname = \"b\"".into(), "budget.caps", Invalid),
        (
            "[[budget.caps]]\nname = \"c\"\nperiod = \"day\"\ntokens = 5\nmoney = \"1\"".into(),
            "budget.caps[0]",
            Invalid,
        ),
        (
            "[[budget.caps]]\nname = \"c\"\nperiod = \"day\"\nmoney = \"-1\"".into(),
            "budget.caps[0].money",
            Syntax,
        ),
        (
            "[[budget.caps]]\nname = \"c d\"\nperiod = \"day\"\ntokens = 5".into(),
            "budget.caps[0].name",
            Invalid,
        ),
        (
            "[[budget.caps]]\nname = \"c\"\nperiod = \"day\"\ntokens = 9007199254740993".into(),
            "budget.caps[0].tokens",
            Invalid,
        ),
        (
            "[[budget.caps]]\nname = \"c\"\nperiod = \"day\"\ntokens = 5\nscope = [\"planet\"]".into(),
            "budget.caps[0].scope[0]",
            Syntax,
        ),
        (
            "[budget]\nthresholds = [1.5]\n[[budget.caps]]\nname = \"c\"\nperiod = \"day\"\ntokens = 5"
                .into(),
            "budget.thresholds",
            Invalid,
        ),
        (
            "[budget]\nstore = \"redis\"\n[[budget.caps]]\nname = \"c\"\nperiod = \"day\"\ntokens = 5"
                .into(),
            "budget.store",
            Invalid,
        ),
        (
            "[redis]\nurl_env = \"REDIS_URL\"\nfailure = \"fail-open\"\ninstances = 2".into(),
            "redis.instances",
            Invalid,
        ),
        (
            "[redis]\nurl_env = \"REDIS_URL\"\nfailure = \"local\"\ninstances = 0".into(),
            "redis.instances",
            Invalid,
        ),
        ("[redis]\nurl_env = \"REDIS_URL\"\ntimeout = \"0s\"".into(), "redis.timeout", Invalid),
    ];
    let vars = env();
    // A key pool over a Redis rate limiter builds (its choice runs in Redis).
    let pooled = "[redis]\nurl_env = \"REDIS_URL\"\n".to_owned()
        + &pool("{ label = \"a\", api_key_env = \"ANTHROPIC_KEY_A\" }");
    if let Some(e) = first_error(&pooled, &vars) {
        panic!("a pool with Redis refused: {e}");
    }
    let mut wrong = Vec::new();
    for (toml, path, kind) in cases {
        match first_error(&toml, &vars) {
            None => wrong.push(format!("accepted:\n{toml}")),
            Some(e) if e.path != path || e.kind != kind => {
                wrong.push(format!(
                    "{toml}\n→ {e} ({:?}), expected {path} ({kind:?})",
                    e.kind
                ));
            }
            Some(e) => {
                assert!(e.to_string().contains(path), "{e}");
                assert!(!e.reason.is_empty());
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn json_errors_name_the_path_too() {
    let e = Config::from_json_str(r#"{"rate":{"models":{"gpt-4o":{"tokens_per_minute":"many"}}}}"#)
        .expect_err("refused");
    assert_eq!(e.path, "rate.models.gpt-4o.tokens_per_minute");
    assert_eq!(e.kind, ConfigErrorKind::Syntax);
    let e = Config::from_json_str(r#"{"retry":{"max_attempts":3}} trailing"#).expect_err("refused");
    assert_eq!(e.kind, ConfigErrorKind::Syntax);
}

#[test]
fn unknown_fields_are_refused_and_no_field_holds_a_secret() {
    let e = Config::from_toml_str("[rate]\nrequests_per_minut = 5").expect_err("refused");
    assert_eq!(e.path, "rate.requests_per_minut");
    assert!(e.reason.contains("unknown field"), "{e}");

    let e = Config::from_toml_str("colour = \"blue\"").expect_err("refused");
    assert_eq!(e.path, "colour");

    // Positions are found in text that is not ASCII, too.
    let e = Config::from_toml_str("# grüße\n[rate]\n\"mäx\" = 1").expect_err("refused");
    assert_eq!(e.path, "rate.mäx");
    assert!(e.reason.contains("line 3"), "{e}");
    let e = Config::from_toml_str("[rate]\npreset = \"ü").expect_err("refused");
    assert_eq!(e.kind, ConfigErrorKind::Syntax);

    // An inline key is refused: there is no field for it, and the error
    // does not repeat its value (nor the line it is on).
    let toml = format!(
        "[pool]\nauth = \"anthropic\"\n[[pool.keys]]\nlabel = \"a\"\napi_key = \"{SECRET_A}\"\n"
    );
    let e = Config::from_toml_str(&toml).expect_err("refused");
    assert_eq!(e.path, "pool.keys[0].api_key");
    assert!(e.reason.contains("line 5"), "{e}");
    assert_no_secret("the error", &format!("{e} {e:?}"));

    let toml = format!("[redis]\nurl = \"{SECRET_REDIS}\"\n");
    let e = Config::from_toml_str(&toml).expect_err("refused");
    assert_eq!(e.path, "redis.url");
    assert_no_secret("the error", &format!("{e} {e:?}"));

    let json = format!(
        r#"{{"fallback":{{"targets":[{{"model":"m","openai":{{"api_key":"{SECRET_OPENAI}"}}}}]}}}}"#
    );
    let e = Config::from_json_str(&json).expect_err("refused");
    assert_eq!(e.path, "fallback.targets[0].openai.api_key");
    assert_no_secret("the error", &format!("{e} {e:?}"));
}

/// A key pasted where a variable's name belongs (an Azure key is letters
/// and digits, a valid name) is not repeated when no such variable is set;
/// nor is a key written as a value of the wrong type or variant (serde
/// quotes those).
#[tokio::test]
async fn a_key_pasted_in_place_of_a_name_or_value_is_not_repeated() {
    let key = "Az7Kq2Wm9Xp4Rt6Yn3Lb8Vc5Gd1Hf0Js";
    let toml = format!(
        "[pool]\nauth = \"azure\"\n[[pool.keys]]\nlabel = \"a\"\napi_key_env = \"{key}\"\n"
    );
    let config = Config::from_toml_str(&toml).expect("parses");
    let e = Stack::from_config_with_env(&config, |_| None).expect_err("unset");
    assert_eq!(e.path, "pool.keys[0].api_key_env");
    assert_eq!(e.kind, ConfigErrorKind::Invalid);
    for e in [
        e,
        Config::from_toml_str(&format!("[rate]\nmax_groups = \"{key}\"\n")).expect_err("type"),
        Config::from_toml_str(&format!("[pool]\nauth = \"{key}\"\n")).expect_err("variant"),
        Config::from_json_str(&format!(r#"{{"rate":{{"max_groups":"{key}"}}}}"#))
            .expect_err("json"),
    ] {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(&key[4..14]), "{shown}");
    }
}

#[tokio::test]
async fn a_missing_variable_is_named_with_its_field() {
    let config = Config::from_toml_str(EXAMPLE_TOML).expect("parses");
    for (unset, path) in [
        ("ANTHROPIC_KEY_B", "pool.keys[1].api_key_env"),
        ("OPENAI_API_KEY", "fallback.targets[2].openai.api_key_env"),
        ("REDIS_URL", "redis.url_env"),
    ] {
        let mut vars = env();
        vars.remove(unset);
        let e = Stack::from_config_with_env(&config, lookup(&vars))
            .err()
            .or_else(|| config.budget_layer_with_env(lookup(&vars)).err())
            .unwrap_or_else(|| panic!("built without {unset}"));
        assert_eq!(e.kind, ConfigErrorKind::MissingEnv(unset.to_owned()));
        assert_eq!(e.path, path);
        assert!(e.to_string().contains(unset), "{e}");
        assert_no_secret("the error", &format!("{e} {e:?}"));
    }
    // Set but empty is refused too, by name.
    let mut vars = env();
    vars.insert("ANTHROPIC_KEY_A", "");
    let e = Stack::from_config_with_env(&config, lookup(&vars)).expect_err("refused");
    assert_eq!(e.path, "pool.keys[0].api_key_env");
    assert!(e.reason.contains("ANTHROPIC_KEY_A"), "{e}");
}

#[tokio::test]
async fn secrets_never_show_in_errors_about_them() {
    let config = Config::from_toml_str(EXAMPLE_TOML).expect("parses");
    // The same key twice.
    let mut vars = env();
    vars.insert("ANTHROPIC_KEY_B", SECRET_A);
    let e = Stack::from_config_with_env(&config, lookup(&vars)).expect_err("refused");
    assert_eq!(e.path, "pool.keys[1].api_key_env");
    assert!(e.reason.contains("pool.keys[0]"), "{e}");
    assert_no_secret("the error", &format!("{e} {e:?}"));
    // A key that is no header value.
    let bad = "sk-ant-SECRET-AAAA-0001\nInjected: 1";
    let mut vars = env();
    vars.insert("ANTHROPIC_KEY_A", bad);
    let e = Stack::from_config_with_env(&config, lookup(&vars)).expect_err("refused");
    assert_eq!(e.path, "pool.keys[0].api_key_env");
    assert_no_secret("the error", &format!("{e} {e:?}"));
    // A Redis URL that does not parse.
    let mut vars = env();
    vars.insert("REDIS_URL", "SECRET-PASSWORD is not a url");
    let e = config
        .budget_layer_with_env(lookup(&vars))
        .expect_err("refused");
    assert_eq!(e.path, "redis.url_env");
    assert_no_secret("the error", &format!("{e} {e:?}"));
}

fn amount(l: &Limits, d: Dimension) -> Option<u64> {
    l.get(d).map(|l| l.amount())
}

#[test]
fn presets_give_the_documented_figures() {
    assert_eq!(presets::PRESETS_AS_OF, "2026-12-02");
    assert_eq!(presets::names().len(), 9);
    let rpm_itpm_otpm = |l: &Limits| {
        (
            amount(l, Dimension::Requests),
            amount(l, Dimension::InputTokens),
            amount(l, Dimension::OutputTokens),
            amount(l, Dimension::Tokens),
        )
    };
    let t1 = presets::anthropic(1).expect("tier 1");
    assert_eq!(
        rpm_itpm_otpm(&t1.limits_for("claude-sonnet-4-5-20250929")),
        (Some(50), Some(30_000), Some(8_000), None)
    );
    assert_eq!(
        rpm_itpm_otpm(&t1.limits_for("claude-haiku-4-5")),
        (Some(50), Some(50_000), Some(10_000), None)
    );
    let t4 = presets::by_name("anthropic-tier-4").expect("tier 4");
    assert_eq!(
        rpm_itpm_otpm(&t4.limits_for("claude-opus-4-1")),
        (Some(4_000), Some(2_000_000), Some(400_000), None)
    );
    // OpenAI: requests and combined tokens, no separate input/output.
    let o1 = presets::by_name("openai-tier-1").expect("openai 1");
    assert_eq!(
        rpm_itpm_otpm(&o1.limits_for("gpt-4o-2024-08-06")),
        (Some(500), None, None, Some(30_000))
    );
    assert_eq!(
        rpm_itpm_otpm(&o1.limits_for("gpt-4o-mini")),
        (Some(500), None, None, Some(200_000))
    );
    let o5 = presets::openai(5).expect("openai 5");
    assert_eq!(
        rpm_itpm_otpm(&o5.limits_for("gpt-4.1-mini")),
        (Some(30_000), None, None, Some(150_000_000))
    );
    // A model the preset does not list gets the tightest class, not nothing.
    assert_eq!(
        rpm_itpm_otpm(&t1.limits_for("claude-unknown")),
        (Some(50), Some(20_000), Some(8_000), None)
    );
    assert!(presets::anthropic(5).is_none());
    assert!(presets::openai(0).is_none());
}

fn counting_transport(
    sent: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<ReplayBody>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |_req: Request<ReplayBody>| {
        sent.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(String::from("{}"))) }
    })
}

fn request(model: &str) -> Request<String> {
    Request::post("http://upstream.test/v1/messages")
        .header("x-api-key", "caller-key")
        .body(format!(
            r#"{{"model":"{model}","max_tokens":16,"messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
        .expect("request")
}

#[tokio::test(start_paused = true)]
async fn a_built_stack_enforces_the_configured_limit() {
    // The preset's class for haiku, overridden to 2 requests per minute.
    let config = Config::from_toml_str(
        r#"
        [rate]
        preset = "anthropic-tier-1"
        [rate.models."claude-haiku-4-5"]
        requests_per_minute = 2
        "#,
    )
    .expect("parses");
    let stack = Stack::from_config_with_env(&config, |_| None).expect("builds");
    let sent = Arc::new(AtomicUsize::new(0));
    let svc = stack.service(counting_transport(Arc::clone(&sent)));

    let start = tokio::time::Instant::now();
    for _ in 0..2 {
        let res = svc
            .clone()
            .oneshot(request("claude-haiku-4-5"))
            .await
            .expect("admitted");
        assert_eq!(res.status(), 200);
    }
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "the burst is admitted at once"
    );
    assert_eq!(sent.load(Ordering::SeqCst), 2);

    // The third waits in the queue for the bucket: one request per 30 s.
    let third = tokio::spawn(svc.clone().oneshot(request("claude-haiku-4-5")));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!third.is_finished(), "the third request was not held");
    assert_eq!(sent.load(Ordering::SeqCst), 2);
    let res = third.await.expect("joined").expect("admitted later");
    assert_eq!(res.status(), 200);
    assert!(
        start.elapsed() >= Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(31),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(sent.load(Ordering::SeqCst), 3);

    // Another model keeps the preset's own figures (50 RPM): not held.
    let before = tokio::time::Instant::now();
    svc.clone()
        .oneshot(request("claude-sonnet-4-5"))
        .await
        .expect("admitted");
    assert_eq!(before.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_built_stack_times_out_by_the_configured_max_wait() {
    let config = Config::from_toml_str(
        r#"
        [rate]
        max_wait = "5s"
        [rate.default]
        requests_per_minute = 1
        [retry]
        max_attempts = 1
        "#,
    )
    .expect("parses");
    let stack = Stack::from_config(&config).expect("builds");
    let sent = Arc::new(AtomicUsize::new(0));
    let svc = stack.service(counting_transport(Arc::clone(&sent)));
    svc.clone()
        .oneshot(request("any-model"))
        .await
        .expect("the first fits");
    let start = tokio::time::Instant::now();
    let err = svc
        .clone()
        .oneshot(request("any-model"))
        .await
        .expect_err("refused");
    assert!(
        err.is::<tower_llm_resilience::error::QueueTimeout>()
            || err.is::<tower_llm_resilience::error::RateLimited>(),
        "{err}"
    );
    assert!(
        start.elapsed() <= Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(sent.load(Ordering::SeqCst), 1);
}
