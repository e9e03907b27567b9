//! Integration tests of the simulated provider over real sockets, real time.
//! Time scales are large so limits refill quickly and tests stay short.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_llm_resilience::sim::{
    Faults, Limits, SimConfig, SimHandle, Simulator, count_input_tokens,
};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing header {name}: {:?}", self.headers))
            .to_str()
            .unwrap()
    }
    fn num(&self, name: &str) -> u64 {
        self.header(name).parse().unwrap()
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
}

const ANTHROPIC: &str = "/v1/messages";
const OPENAI: &str = "/v1/chat/completions";

async fn send(c: &HttpClient, sim: &SimHandle, path: &str, key: Option<&str>, body: &str) -> Resp {
    let mut b = Request::post(format!("{}{path}", sim.url()))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01");
    if let Some(k) = key {
        b = if path == OPENAI {
            b.header("authorization", format!("Bearer {k}"))
        } else {
            b.header("x-api-key", k)
        };
    }
    let res = c
        .request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = support::http::bytes(res).await;
    Resp {
        status,
        headers,
        body,
    }
}

async fn post(c: &HttpClient, sim: &SimHandle, path: &str, body: &Value) -> Resp {
    send(c, sim, path, Some("sk-test"), &body.to_string()).await
}

/// A request body in the shape both APIs accept: `model`, `max_tokens`
/// and one user message.
fn chat_req(model: &str, max_tokens: u64, prompt: &str) -> Value {
    json!({"model": model, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": prompt}]})
}

/// A bare request to `url` with key `k` (no `content-type`, no version).
fn keyed(url: String, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("x-api-key", "k")
        .body(Full::new(body.into()))
        .unwrap()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn parse_rfc3339(s: &str) -> SystemTime {
    let s = s.strip_suffix('Z').expect("UTC");
    let (date, time) = s.split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<u64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let (y, m, day) = (d[0], d[1], d[2]);
    // days from civil (H. Hinnant)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    let ms: u64 = format!("{frac:0<3}")[..3].parse().unwrap();
    UNIX_EPOCH
        + Duration::from_secs(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
        + Duration::from_millis(ms)
}

/// Parses Go durations such as `1h2m3.5s`, `12ms`, `0s`.
fn parse_go(s: &str) -> Duration {
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let v: f64 = num
            .parse()
            .unwrap_or_else(|_| panic!("bad go duration {s}"));
        num.clear();
        total += match c {
            'h' => v * 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                v / 1000.0
            }
            'm' => v * 60.0,
            's' => v,
            _ => panic!("bad unit in {s}"),
        };
    }
    assert!(num.is_empty(), "trailing number in {s}");
    Duration::from_millis((total * 1000.0).round() as u64)
}

fn until(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::now()) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn assert_anthropic_headers(r: &Resp) {
    assert!(r.header("request-id").starts_with("req_"));
    httpdate::parse_http_date(r.header("date")).unwrap();
    for dim in ["requests", "tokens", "input-tokens", "output-tokens"] {
        r.num(&format!("anthropic-ratelimit-{dim}-limit"));
        r.num(&format!("anthropic-ratelimit-{dim}-remaining"));
        let reset = parse_rfc3339(r.header(&format!("anthropic-ratelimit-{dim}-reset")));
        assert!(until(reset) < 61.0, "reset too far: {dim}");
    }
    assert_eq!(
        r.num("anthropic-ratelimit-tokens-limit"),
        r.num("anthropic-ratelimit-input-tokens-limit")
            + r.num("anthropic-ratelimit-output-tokens-limit")
    );
}

fn assert_openai_headers(r: &Resp) {
    assert!(r.header("x-request-id").starts_with("req_"));
    httpdate::parse_http_date(r.header("date")).unwrap();
    for dim in ["requests", "tokens"] {
        r.num(&format!("x-ratelimit-limit-{dim}"));
        r.num(&format!("x-ratelimit-remaining-{dim}"));
        parse_go(r.header(&format!("x-ratelimit-reset-{dim}")));
    }
}

#[test]
fn test_parsers_agree_with_the_formatters() {
    use tower_llm_resilience::sim::{format_go_duration, format_rfc3339};
    let t = UNIX_EPOCH + Duration::from_millis(1_755_780_059_125);
    assert_eq!(parse_rfc3339(&format_rfc3339(t, true)), t);
    for ms in [0, 12, 999, 1574, 61_250, 3_723_000] {
        let d = Duration::from_millis(ms);
        assert_eq!(parse_go(&format_go_duration(d)), d, "{ms}");
    }
}

#[tokio::test]
async fn burst_beyond_rpm_gets_429_with_consistent_retry_after() {
    // 10 RPM, a provider minute = 10 s: one request refills per second.
    let config = SimConfig::new()
        .with_limits(Limits::new(10, 100_000, 100_000))
        .with_time_scale(6.0);
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let body = chat_req("claude-x", 16, "hi");
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..12 {
        let r = post(&c, &sim, ANTHROPIC, &body).await;
        assert_anthropic_headers(&r);
        statuses.push(r.status);
        last = Some(r);
    }
    assert_eq!(&statuses[..10], &[200; 10]);
    assert_eq!(&statuses[10..], &[429, 429]);
    let r = last.unwrap();
    assert_eq!(r.num("anthropic-ratelimit-requests-remaining"), 0);
    assert_eq!(r.num("anthropic-ratelimit-requests-limit"), 10);
    let full_in = until(parse_rfc3339(
        r.header("anthropic-ratelimit-requests-reset"),
    ));
    assert!(
        (8.5..=10.5).contains(&full_in),
        "requests full again in {full_in}"
    );
    assert_eq!(r.num("retry-after"), 1);
    let ms = r.num("retry-after-ms");
    assert!((500..=1000).contains(&ms), "retry-after-ms {ms}");
    let e = r.json();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert_eq!(e["request_id"], r.header("request-id"));
    // Waiting exactly as advised is enough.
    tokio::time::sleep(Duration::from_millis(ms)).await;
    assert_eq!(post(&c, &sim, ANTHROPIC, &body).await.status, 200);

    // OpenAI shape for a different model (separate buckets).
    let body = chat_req("gpt-x", 16, "hi");
    let mut last = None;
    for _ in 0..11 {
        last = Some(post(&c, &sim, OPENAI, &body).await);
    }
    let r = last.unwrap();
    assert_eq!(r.status, 429);
    assert_openai_headers(&r);
    assert_eq!(r.num("x-ratelimit-remaining-requests"), 0);
    let reset = parse_go(r.header("x-ratelimit-reset-requests")).as_secs_f64();
    assert!((8.5..=10.5).contains(&reset), "{reset}");
    let e = r.json();
    assert_eq!(e["error"]["type"], "requests");
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
    assert!(e["error"]["param"].is_null());
    let msg = e["error"]["message"].as_str().unwrap();
    let advised = msg
        .split("Please try again in ")
        .nth(1)
        .and_then(|s| s.split(". ").next())
        .unwrap();
    let advised = parse_go(advised).as_millis() as u64;
    assert_eq!(advised, r.num("retry-after-ms"), "{msg}");
    assert_eq!(sim.counters().rate_limited(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn remaining_falls_with_each_request_and_recovers_at_the_rate() {
    // 60 RPM at scale 10: 10 requests per real second refill.
    let config = SimConfig::new()
        .with_limits(Limits::new(60, 600, 600))
        .with_time_scale(10.0)
        .with_output_tokens(5, 5)
        .with_round_remaining_tokens(false);
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let body = chat_req("m", 50, "hello");
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let r = post(&c, &sim, ANTHROPIC, &body).await;
        assert_eq!(r.status, 200);
        remaining.push(r.num("anthropic-ratelimit-requests-remaining"));
    }
    assert_eq!(remaining[0], 59);
    assert!(remaining.windows(2).all(|w| w[1] < w[0]), "{remaining:?}");
    let low = remaining[4];
    let since = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = post(&c, &sim, ANTHROPIC, &body).await;
    let elapsed = since.elapsed().as_secs_f64();
    let now = r.num("anthropic-ratelimit-requests-remaining");
    // refilled at 10/s for `elapsed` (±1 for the fractional level), −1 used
    let refilled = elapsed * 10.0;
    let lo = (low as f64 + refilled - 2.0).floor() as u64;
    let hi = ((low as f64 + refilled).ceil() as u64).min(59);
    assert!((lo..=hi).contains(&now), "{low} → {now} after {elapsed}s");
    assert!(now >= low + 2, "recovered: {low} → {now}");

    // Output tokens: reserved from max_tokens, corrected at the end.
    let input_each = count_input_tokens(&body);
    let out_left = r.num("anthropic-ratelimit-output-tokens-remaining");
    let in_left = r.num("anthropic-ratelimit-input-tokens-remaining");
    assert!(in_left <= 600 - input_each, "{in_left}");
    let r2 = post(&c, &sim, ANTHROPIC, &chat_req("m", 5, "hello")).await;
    let out_left2 = r2.num("anthropic-ratelimit-output-tokens-remaining");
    // the previous request's 50 reserved became 5 used: +45 back, −5 reserved now
    assert!(
        (out_left + 40..=out_left + 45).contains(&out_left2),
        "{out_left} → {out_left2}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn input_and_output_token_limits_bite_while_rpm_has_room() {
    let config = SimConfig::new()
        .with_limits(Limits::new(1000, 1000, 1000))
        .with_output_tokens(10, 10)
        .with_round_remaining_tokens(false);
    let sim = Simulator::start(config).await.unwrap();
    let c = client();

    // ITPM: a 600-token prompt fits once, not twice.
    let prompt = "x".repeat(2384); // 596 + 4 = 600 tokens
    let big = chat_req("m-in", 10, &prompt);
    assert_eq!(count_input_tokens(&big), 600);
    let r = post(&c, &sim, ANTHROPIC, &big).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["usage"]["input_tokens"], 600);
    assert_eq!(r.num("anthropic-ratelimit-input-tokens-remaining"), 400);
    let r = post(&c, &sim, ANTHROPIC, &big).await;
    assert_eq!(r.status, 429);
    assert!(r.num("anthropic-ratelimit-requests-remaining") >= 998);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("input tokens"), "{msg}");
    // 200 missing at 1000/60 per second = 12 s
    assert_eq!(r.num("retry-after"), 12);
    assert!(r.headers.get("retry-after-ms").is_none(), "unscaled");

    // OTPM: max_tokens is reserved at the start, the unused part refunded.
    let big_out = chat_req("m-out", 700, "hi");
    let r = post(&c, &sim, ANTHROPIC, &big_out).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.num("anthropic-ratelimit-output-tokens-remaining"), 300);
    // 10 used: 990 left, a second 700 fits only thanks to the refund
    assert_eq!(post(&c, &sim, ANTHROPIC, &big_out).await.status, 200);
    let r = post(&c, &sim, ANTHROPIC, &chat_req("m-out", 1000, "hi")).await;
    assert_eq!(r.status, 429, "1000 reserved needs a full bucket");
    assert!(r.num("anthropic-ratelimit-requests-remaining") >= 990);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("output tokens"), "{msg}");

    // OpenAI: a token limit is type "tokens".
    let r = post(&c, &sim, OPENAI, &chat_req("o", 10, &prompt)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["usage"]["prompt_tokens"], 600);
    let r = post(&c, &sim, OPENAI, &chat_req("o", 10, &prompt)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "tokens");

    // A prompt above the limit can never fit: 429 without retry-after.
    let huge = chat_req("m-huge", 10, &"y".repeat(8000));
    let r = post(&c, &sim, ANTHROPIC, &huge).await;
    assert_eq!(r.status, 429);
    assert!(r.headers.get("retry-after").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn error_bodies_match_each_provider() {
    let config = SimConfig::new().with_max_body_bytes(10_000);
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let ok = chat_req("m", 10, "hi").to_string();

    let anthropic_err = |r: &Resp, status: u16, ty: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert!(r.header("content-type").starts_with("application/json"));
        let e = r.json();
        assert_eq!(e["type"], "error");
        assert_eq!(e["error"]["type"], ty);
        assert!(e["error"]["message"].is_string());
        assert_eq!(e["request_id"], r.header("request-id"));
    };
    let openai_err = |r: &Resp, status: u16, ty: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["type"], ty);
        assert!(e["error"]["message"].is_string());
        assert!(e["error"].get("param").is_some() && e["error"].get("code").is_some());
        assert!(r.header("x-request-id").starts_with("req_"));
    };

    anthropic_err(
        &send(&c, &sim, ANTHROPIC, None, &ok).await,
        401,
        "authentication_error",
    );
    openai_err(
        &send(&c, &sim, OPENAI, None, &ok).await,
        401,
        "invalid_request_error",
    );
    for bad in [
        "{not json",
        r#"{"max_tokens": 10, "messages": []}"#,
        r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#,
        r#"{"model": "m", "max_tokens": "10", "messages": [{"role": "user", "content": "hi"}]}"#,
        r#"{"model": "m", "max_tokens": 10, "messages": "hi"}"#,
        r#"{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}"#,
    ] {
        let r = send(&c, &sim, ANTHROPIC, Some("k"), bad).await;
        anthropic_err(&r, 400, "invalid_request_error");
    }
    let r = send(
        &c,
        &sim,
        ANTHROPIC,
        Some("k"),
        r#"{"model":"m","messages":[]}"#,
    )
    .await;
    assert!(r.text().contains("max_tokens: Field required"));
    for bad in [
        "[1, 2",
        r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
        r#"{"model": "m"}"#,
        r#"{"model": "m", "max_tokens": "x", "messages": [{"role": "user", "content": "hi"}]}"#,
    ] {
        let r = send(&c, &sim, OPENAI, Some("k"), bad).await;
        openai_err(&r, 400, "invalid_request_error");
    }
    let big = chat_req("m", 10, &"z".repeat(20_000)).to_string();
    anthropic_err(
        &send(&c, &sim, ANTHROPIC, Some("k"), &big).await,
        413,
        "request_too_large",
    );
    let r = send(&c, &sim, OPENAI, Some("k"), &big).await;
    assert_eq!(r.status, 413);
    sim.shutdown().await;

    // Overload: Anthropic 529 overloaded_error, OpenAI 503 server_error.
    let config = SimConfig::new().with_faults(Faults::none().with_overloaded(1.0));
    let sim = Simulator::start(config).await.unwrap();
    let r = post(&c, &sim, ANTHROPIC, &chat_req("m", 10, "hi")).await;
    anthropic_err(&r, 529, "overloaded_error");
    assert_anthropic_headers(&r);
    let r = post(&c, &sim, OPENAI, &chat_req("m", 10, "hi")).await;
    openai_err(&r, 503, "server_error");
    assert_openai_headers(&r);
    let counters = sim.counters();
    assert_eq!((counters.overloaded(), counters.status(503)), (1, 1));
    sim.shutdown().await;

    // 500 faults.
    let config = SimConfig::new().with_faults(Faults::none().with_server_error(1.0));
    let sim = Simulator::start(config).await.unwrap();
    let r = post(&c, &sim, ANTHROPIC, &chat_req("m", 10, "hi")).await;
    anthropic_err(&r, 500, "api_error");
    let r = post(&c, &sim, OPENAI, &chat_req("m", 10, "hi")).await;
    openai_err(&r, 500, "server_error");
    sim.shutdown().await;

    // Restricted keys.
    let config = SimConfig::new().with_api_keys(["good-key"]);
    let sim = Simulator::start(config).await.unwrap();
    assert!(!format!("{sim:?}").contains("good-key"));
    let r = send(&c, &sim, ANTHROPIC, Some("bad"), &ok).await;
    anthropic_err(&r, 401, "authentication_error");
    assert_eq!(
        send(&c, &sim, ANTHROPIC, Some("good-key"), &ok)
            .await
            .status,
        200
    );
    let r = send(&c, &sim, OPENAI, Some("bad"), &ok).await;
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    sim.shutdown().await;
}

#[tokio::test]
async fn non_streaming_bodies_have_the_provider_shape() {
    let config = SimConfig::new().with_output_tokens(5, 8).with_seed(3);
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let body = chat_req("claude-m", 100, "Hello there");
    let r = post(&c, &sim, ANTHROPIC, &body).await;
    assert_anthropic_headers(&r);
    let m = r.json();
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["model"], "claude-m");
    assert_eq!(m["stop_reason"], "end_turn");
    assert!(m["stop_sequence"].is_null());
    let out = m["usage"]["output_tokens"].as_u64().unwrap();
    assert!((5..=8).contains(&out));
    let text = m["content"][0]["text"].as_str().unwrap();
    assert_eq!(m["content"][0]["type"], "text");
    assert_eq!(text.split(' ').count() as u64, out);
    assert_eq!(m["usage"]["input_tokens"], count_input_tokens(&body));
    assert_eq!(m["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(m["usage"]["cache_read_input_tokens"], 0);
    // capped by max_tokens
    let m = post(&c, &sim, ANTHROPIC, &chat_req("claude-m", 3, "Hi"))
        .await
        .json();
    assert_eq!(m["stop_reason"], "max_tokens");
    assert_eq!(m["usage"]["output_tokens"], 3);

    let r = post(&c, &sim, OPENAI, &chat_req("gpt-m", 100, "Hello there")).await;
    assert_openai_headers(&r);
    let m = r.json();
    assert!(m["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(m["object"], "chat.completion");
    assert!(m["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(m["choices"][0]["message"]["role"], "assistant");
    assert_eq!(m["choices"][0]["finish_reason"], "stop");
    let u = &m["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );
    let m = post(&c, &sim, OPENAI, &chat_req("gpt-m", 2, "Hi"))
        .await
        .json();
    assert_eq!(m["choices"][0]["finish_reason"], "length");
    assert_eq!(m["usage"]["completion_tokens"], 2);
    sim.shutdown().await;
}

/// (event name, data JSON) pairs of an Anthropic SSE body.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            assert_eq!(data["type"], name.as_str(), "event name matches data.type");
            (name, data)
        })
        .collect()
}

/// `data:` payloads of an OpenAI SSE body (`[DONE]` as a string).
fn sse_data(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let d = b.strip_prefix("data: ").unwrap();
            if d == "[DONE]" {
                Value::String(d.to_owned())
            } else {
                serde_json::from_str(d).unwrap()
            }
        })
        .collect()
}

#[tokio::test]
async fn anthropic_stream_follows_the_event_sequence() {
    let config = SimConfig::new().with_output_tokens(4, 6).with_seed(9);
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let mut body = chat_req("m", 100, "Stream please");
    body["stream"] = json!(true);
    let r = post(&c, &sim, ANTHROPIC, &body).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    assert_anthropic_headers(&r);
    let events = sse_events(&r.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let n = names
        .iter()
        .filter(|n| **n == "content_block_delta")
        .count();
    assert!((4..=6).contains(&n));
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", n));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["usage"]["input_tokens"], count_input_tokens(&body));
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert!(start["stop_reason"].is_null());
    assert_eq!(events[3].1["delta"]["type"], "text_delta");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], n as u64);
    sim.shutdown().await;
}

#[tokio::test]
async fn openai_stream_has_final_chunk_usage_chunk_and_done() {
    let config = SimConfig::new().with_output_tokens(4, 6);
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let mut body = chat_req("gpt", 100, "Stream please");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&c, &sim, OPENAI, &body).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    let chunks = sse_data(&r.text());
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    let usage = &chunks[chunks.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    let completion = usage["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], count_input_tokens(&body));
    let last = &chunks[chunks.len() - 3];
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content_chunks = &chunks[1..chunks.len() - 3];
    assert_eq!(content_chunks.len() as u64, completion);
    for ch in &chunks[..chunks.len() - 1] {
        assert_eq!(ch["object"], "chat.completion.chunk");
    }
    for ch in content_chunks {
        assert!(ch["choices"][0]["finish_reason"].is_null());
        assert!(ch["usage"].is_null());
    }
    // without include_usage: no usage chunk, no usage field
    body["stream_options"] = json!(null);
    let chunks = sse_data(&post(&c, &sim, OPENAI, &body).await.text());
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_faults_mid_stream_error_and_truncation() {
    let c = client();
    let mut a = chat_req("m", 100, "x");
    a["stream"] = json!(true);
    let mut o = chat_req("m", 100, "x");
    o["stream"] = json!(true);

    let config = SimConfig::new()
        .with_output_tokens(10, 10)
        .with_faults(Faults::none().with_mid_stream_error(1.0));
    let sim = Simulator::start(config).await.unwrap();
    let r = post(&c, &sim, ANTHROPIC, &a).await;
    assert_eq!(r.status, 200);
    let events = sse_events(&r.text());
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "overloaded_error");
    assert!(
        events
            .iter()
            .all(|(n, _)| n != "message_stop" && n != "message_delta")
    );
    let chunks = sse_data(&post(&c, &sim, OPENAI, &o).await.text());
    assert!(chunks.last().unwrap()["error"]["message"].is_string());
    assert!(chunks.iter().all(|c| c != "[DONE]"));
    assert_eq!(sim.counters().mid_stream_errors, 2);
    sim.shutdown().await;

    let config = SimConfig::new()
        .with_output_tokens(10, 10)
        .with_faults(Faults::none().with_truncate_stream(1.0));
    let sim = Simulator::start(config).await.unwrap();
    let r = post(&c, &sim, ANTHROPIC, &a).await;
    assert_eq!(r.status, 200);
    let events = sse_events(&r.text());
    assert_eq!(events[0].0, "message_start");
    assert!(
        events
            .iter()
            .all(|(n, _)| n != "message_stop" && n != "error")
    );
    let chunks = sse_data(&post(&c, &sim, OPENAI, &o).await.text());
    assert!(
        chunks
            .iter()
            .all(|c| c != "[DONE]" && c.get("error").is_none())
    );
    assert_eq!(sim.counters().truncated_streams, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn dropped_connection_gives_the_client_a_connection_error() {
    let config = SimConfig::new().with_faults(Faults::none().with_drop_connection(1.0));
    let sim = Simulator::start(config).await.unwrap();
    // Raw socket: the server closes without sending a single byte.
    let body = chat_req("m", 10, "hi").to_string();
    let mut tcp = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: k\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    match read.expect("connection closed promptly") {
        Ok(n) => assert_eq!(
            n,
            0,
            "no response bytes: {:?}",
            String::from_utf8_lossy(&buf)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    // A hyper client sees an error, not a response.
    let c = client();
    let req = keyed(format!("{}{ANTHROPIC}", sim.url()), body);
    assert!(c.request(req).await.is_err());
    let counters = sim.counters();
    assert_eq!(counters.dropped, 2);
    assert!(counters.statuses.is_empty(), "{counters:?}");
    sim.shutdown().await;
}

async fn run_sequence(seed: u64) -> Vec<(u16, String)> {
    let config = SimConfig::new().with_seed(seed).with_faults(
        Faults::none()
            .with_overloaded(0.2)
            .with_server_error(0.1)
            .with_service_unavailable(0.1)
            .with_mid_stream_error(0.3)
            .with_truncate_stream(0.2),
    );
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let mut out = Vec::new();
    for i in 0..24u64 {
        let mut body = chat_req("m", 20 + i * 7, "same prompt");
        body["stream"] = json!(i % 2 == 1);
        let r = post(&c, &sim, ANTHROPIC, &body).await;
        out.push((r.status, format!("{}|{}", r.header("request-id"), r.text())));
    }
    sim.shutdown().await;
    out
}

#[tokio::test]
async fn same_seed_same_requests_same_outputs_and_faults() {
    let a = run_sequence(42).await;
    let b = run_sequence(42).await;
    assert_eq!(a, b);
    let statuses: Vec<u16> = a.iter().map(|(s, _)| *s).collect();
    assert!(
        statuses.contains(&200) && statuses.iter().any(|s| *s >= 500),
        "{statuses:?}"
    );
    let c = run_sequence(43).await;
    assert_ne!(a, c);
}

#[tokio::test]
async fn counters_track_statuses_concurrency_and_admitted_tokens() {
    let config = SimConfig::new()
        .with_limits(Limits::new(8, 100_000, 100_000))
        .with_request_latency(Duration::from_millis(300))
        .with_output_tokens(10, 10)
        .with_window(Duration::from_secs(60));
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let body = chat_req("m", 50, "concurrent");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, body) = (c.clone(), body.clone());
        let url = format!("{}{ANTHROPIC}", sim.url());
        tasks.push(tokio::spawn(async move {
            let req = keyed(url, body.to_string());
            let res = c.request(req).await.unwrap();
            let status = res.status().as_u16();
            res.into_body().collect().await.unwrap();
            status
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(sim.counters().in_flight, 8);
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // RPM exhausted now: two more are 429s (fast, no latency).
    for _ in 0..2 {
        let r = send(&c, &sim, ANTHROPIC, Some("k"), &body.to_string()).await;
        assert_eq!(r.status, 429);
    }
    let s = sim.counters();
    assert_eq!(s.received, 10);
    assert_eq!((s.ok(), s.rate_limited()), (8, 2));
    assert_eq!((s.peak_in_flight, s.in_flight), (8, 0));
    let (requests, input, output) = s.admitted_totals();
    assert_eq!(requests, 8);
    assert_eq!(input, 8 * count_input_tokens(&body));
    assert_eq!(output, 80);
    assert_eq!(s.windows.len(), 1);
    assert_eq!(s.windows[0].output_tokens_reserved, 8 * 50);
    sim.shutdown().await;
}

#[tokio::test]
async fn paced_stream_takes_token_latency_and_stays_in_flight_until_the_end() {
    let config = SimConfig::new()
        .with_output_tokens(10, 10)
        .with_token_latency(Duration::from_millis(20));
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let mut body = chat_req("m", 100, "x");
    body["stream"] = json!(true);
    let started = std::time::Instant::now();
    let req = keyed(format!("{}{ANTHROPIC}", sim.url()), body.to_string());
    let res = c.request(req).await.unwrap();
    assert_eq!(
        sim.counters().in_flight,
        1,
        "headers sent, body still streaming"
    );
    let text = res.into_body().collect().await.unwrap().to_bytes();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(String::from_utf8_lossy(&text).contains("message_stop"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sim.counters().in_flight, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_invalid_config_is_refused() {
    let sim = Simulator::start(SimConfig::new()).await.unwrap();
    let addr = sim.addr();
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let err = Simulator::start(SimConfig::new().with_time_scale(-1.0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(Simulator::new(SimConfig::new().with_limits(Limits::new(0, 1, 1))).is_err());
}

#[tokio::test]
async fn router_embeds_in_an_axum_server() {
    let sim = Simulator::new(SimConfig::new()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, sim.router()).into_future());
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = chat_req("gpt", 10, "hi").to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body.as_bytes()).await.unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-ratelimit-remaining-requests: 49"));
    assert_eq!(sim.counters().ok(), 1);
    server.abort();
}

#[tokio::test]
async fn serves_http2_prior_knowledge_too() {
    let sim = Simulator::start(SimConfig::new()).await.unwrap();
    let c: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut body = chat_req("m", 50, "over h2");
    body["stream"] = json!(true);
    let r = post(&c, &sim, ANTHROPIC, &body).await;
    assert_eq!(r.status, 200);
    assert_anthropic_headers(&r);
    assert!(r.text().contains("event: message_stop"));
    sim.shutdown().await;
}

#[tokio::test]
async fn per_model_limits_override_the_defaults_and_keys_are_separate() {
    let config = SimConfig::new()
        .with_limits(Limits::new(5, 10_000, 10_000))
        .with_model_limits("small", Limits::new(2, 10_000, 10_000));
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let small = chat_req("small", 10, "hi").to_string();
    let statuses = [
        send(&c, &sim, ANTHROPIC, Some("k1"), &small).await.status,
        send(&c, &sim, ANTHROPIC, Some("k1"), &small).await.status,
        send(&c, &sim, ANTHROPIC, Some("k1"), &small).await.status,
    ];
    assert_eq!(statuses, [200, 200, 429]);
    // another key has its own buckets
    let r = send(&c, &sim, ANTHROPIC, Some("k2"), &small).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.num("anthropic-ratelimit-requests-limit"), 2);
    // another model gets the defaults
    let big = chat_req("big", 10, "hi").to_string();
    let r = send(&c, &sim, ANTHROPIC, Some("k1"), &big).await;
    assert_eq!(r.num("anthropic-ratelimit-requests-limit"), 5);
    assert_eq!(r.num("anthropic-ratelimit-requests-remaining"), 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_provider_shape() {
    let sim = Simulator::start(SimConfig::new()).await.unwrap();
    let c = client();
    let r = send(&c, &sim, "/v1/nope", Some("k"), "{}").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    assert!(r.header("request-id").starts_with("req_"));
    let req = Request::get(format!("{}{OPENAI}", sim.url()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = c.request(req).await.unwrap();
    assert_eq!(res.status().as_u16(), 405);
    assert!(res.headers().contains_key("x-request-id"));
    sim.shutdown().await;
}

#[tokio::test]
async fn client_abandoning_a_stream_refunds_the_unused_reservation() {
    let config = SimConfig::new()
        .with_limits(Limits::new(100, 10_000, 1_000))
        .with_output_tokens(50, 50)
        .with_token_latency(Duration::from_millis(20))
        .with_round_remaining_tokens(false);
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let mut body = chat_req("m", 500, "x");
    body["stream"] = json!(true);
    let req = keyed(format!("{}{ANTHROPIC}", sim.url()), body.to_string());
    let res = c.request(req).await.unwrap();
    assert_eq!(
        res.headers()["anthropic-ratelimit-output-tokens-remaining"],
        "500"
    );
    let mut body = res.into_body();
    let _ = body.frame().await; // message_start
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(body); // hang up after a few deltas
    // the server notices on its next send (≤ one token latency later)
    tokio::time::sleep(Duration::from_millis(150)).await;
    let s = sim.counters();
    assert_eq!(s.in_flight, 0);
    let delivered = s.windows[0].output_tokens;
    assert!((1..50).contains(&delivered), "{delivered}");
    // 500 reserved, `delivered` used: the rest is back in the bucket
    let r = post(&c, &sim, ANTHROPIC, &chat_req("m", 1, "x")).await;
    let left = r.num("anthropic-ratelimit-output-tokens-remaining");
    assert!(
        (1000 - delivered - 1..=1000 - delivered + 15).contains(&left),
        "{delivered} delivered, {left} left"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_rate_limits_carry_retry_after_and_consume_no_quota() {
    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(Limits::new(100, 1_000_000, 1_000_000))
            .with_time_scale(60.0)
            .with_faults(Faults::none().with_rate_limited(1.0))
            .with_seed(4),
    )
    .await
    .unwrap();
    let c = client();
    for path in [ANTHROPIC, OPENAI] {
        let r = post(&c, &sim, path, &chat_req("m", 10, "hi")).await;
        assert_eq!(r.status, 429, "{}", r.text());
        // One provider second at scale 60: about 17 ms.
        let ms: f64 = r.header("retry-after-ms").parse().unwrap();
        assert!((10.0..=20.0).contains(&ms), "{ms}");
        assert_eq!(r.header("retry-after"), "1");
    }
    let counters = sim.counters();
    assert_eq!(counters.injected_rate_limits, 2);
    assert_eq!(counters.admitted_totals().0, 0, "no quota consumed");
}

/// A request with an `idempotency-key`, authenticated for either API.
fn with_key(url: String, idempotency_key: &str, body: &Value) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .header("x-api-key", "k")
        .header("authorization", "Bearer k")
        .header("idempotency-key", idempotency_key)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Reads `body` frame by frame until it ends or fails: the bytes, and
/// whether it failed.
async fn read_until_end<B>(mut body: B) -> (Vec<u8>, bool)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => got.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// A stalled body sends its head and a part, then nothing until the stall
/// has run out; then the connection closes, so the client sees an error,
/// never a complete answer. Neither counts as a completion of its key.
#[tokio::test]
async fn stalled_body_sends_head_and_part_then_is_cut() {
    let stall = Duration::from_millis(300);
    let config = SimConfig::new()
        .with_output_tokens(10, 10)
        .with_stall_duration(stall)
        .with_faults(Faults::none().with_stalled_body(1.0));
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let mut stream = chat_req("m", 100, "x");
    stream["stream"] = json!(true);
    let json = chat_req("m", 100, "x");
    for (i, (path, body)) in [(ANTHROPIC, &stream), (OPENAI, &stream), (ANTHROPIC, &json)]
        .into_iter()
        .enumerate()
    {
        let started = tokio::time::Instant::now();
        let key = format!("stall-{i}");
        let res = c
            .request(with_key(format!("{}{path}", sim.url()), &key, body))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let (got, failed) = read_until_end(res.into_body()).await;
        let text = String::from_utf8_lossy(&got);
        assert!(failed, "{path}: the body ends in an error: {text}");
        assert!(started.elapsed() >= stall, "{path}: silent for the stall");
        assert!(!got.is_empty(), "{path}: a part was sent");
        assert!(
            !text.contains("message_stop") && !text.contains("[DONE]"),
            "{path}: never the terminal event: {text}"
        );
        if body == &json {
            assert!(
                serde_json::from_slice::<Value>(&got).is_err(),
                "half a JSON"
            );
        }
        let k = sim.simulator().idempotency_key(&key).unwrap();
        assert_eq!((k.arrivals, k.completions), (1, 0));
    }
    let counters = sim.counters();
    assert_eq!((counters.stalled_bodies, counters.ok()), (3, 3));
    sim.shutdown().await;
}

/// A client that gives up on a stalled body frees the simulator of it at
/// once, though the stall itself lasts ten minutes.
#[tokio::test]
async fn stalled_body_ends_when_the_client_leaves() {
    let config = SimConfig::new().with_faults(Faults::none().with_stalled_body(1.0));
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let mut stream = chat_req("m", 100, "x");
    stream["stream"] = json!(true);
    for body in [&stream, &chat_req("m", 100, "x")] {
        let res = c
            .request(with_key(format!("{}{ANTHROPIC}", sim.url()), "leave", body))
            .await
            .unwrap();
        let mut body = res.into_body();
        let mut frames = 0;
        // the part, then silence
        while let Ok(frame) = tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
            assert!(frame.unwrap().unwrap().is_data(), "data until the stall");
            frames += 1;
        }
        assert!(frames >= 1, "a part was sent");
        assert_eq!(sim.counters().in_flight, 1, "held while the client waits");
        drop(body);
        let freed = tokio::time::timeout(Duration::from_secs(5), async {
            while sim.counters().in_flight > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(freed.is_ok(), "the stall ended with the client");
    }
    sim.shutdown().await;
}

/// A latency spike delays the head by its duration, whatever the answer.
#[tokio::test]
async fn latency_spike_delays_the_head() {
    let spike = Duration::from_millis(250);
    let config = SimConfig::new()
        .with_latency_spike(spike)
        .with_faults(Faults::none().with_latency_spike(1.0));
    let sim = Simulator::start(config).await.unwrap();
    let c = client();
    let started = tokio::time::Instant::now();
    let r = post(&c, &sim, ANTHROPIC, &chat_req("m", 10, "x")).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= spike, "{:?}", started.elapsed());
    assert_eq!(sim.counters().latency_spikes, 1);
    sim.shutdown().await;

    // At rate 0 nothing is delayed and nothing counted.
    let sim = Simulator::start(SimConfig::new().with_latency_spike(Duration::from_secs(600)))
        .await
        .unwrap();
    let r = post(&c, &sim, ANTHROPIC, &chat_req("m", 10, "x")).await;
    assert_eq!((r.status, sim.counters().latency_spikes), (200, 0));
    sim.shutdown().await;
}

/// Arrivals and successful completions are counted per `idempotency-key`:
/// a key sent twice and answered twice is a duplicate; one whose attempts
/// all failed arrived but never completed; requests without the header
/// are not counted.
#[tokio::test]
async fn idempotency_keys_count_arrivals_and_completions() {
    let sim = Simulator::start(SimConfig::new()).await.unwrap();
    let c = client();
    let url = format!("{}{ANTHROPIC}", sim.url());
    let mut stream = chat_req("m", 10, "x");
    stream["stream"] = json!(true);
    for (key, body) in [("twice", &stream), ("twice", &chat_req("m", 10, "x"))] {
        let res = c.request(with_key(url.clone(), key, body)).await.unwrap();
        let (_, failed) = read_until_end(res.into_body()).await;
        assert!(!failed);
    }
    let res = c
        .request(with_key(url.clone(), "once", &chat_req("m", 10, "x")))
        .await
        .unwrap();
    support::http::bytes(res).await;
    post(&c, &sim, ANTHROPIC, &chat_req("m", 10, "x")).await; // no key
    let s = sim.simulator().idempotency();
    assert_eq!((s.keys, s.arrivals, s.completions), (2, 3, 3));
    assert_eq!((s.max_arrivals, s.duplicated), (2, 1));
    sim.shutdown().await;

    let config = SimConfig::new().with_faults(Faults::none().with_drop_connection(1.0));
    let sim = Simulator::start(config).await.unwrap();
    let url = format!("{}{ANTHROPIC}", sim.url());
    for _ in 0..3 {
        let r = c.request(with_key(url.clone(), "failing", &chat_req("m", 10, "x")));
        assert!(r.await.is_err());
    }
    let k = sim.simulator().idempotency_key("failing").unwrap();
    assert_eq!((k.arrivals, k.completions), (3, 0));
    assert_eq!(sim.simulator().idempotency().duplicated, 0);
    sim.shutdown().await;

    // Stream faults cut streams only: a JSON answer drawn in their range
    // is whole, and completes its key; a cut stream does not.
    let config = SimConfig::new().with_faults(Faults::none().with_truncate_stream(1.0));
    let sim = Simulator::start(config).await.unwrap();
    let url = format!("{}{ANTHROPIC}", sim.url());
    for (key, body) in [("json", &chat_req("m", 10, "x")), ("cut", &stream)] {
        let res = c.request(with_key(url.clone(), key, body)).await.unwrap();
        support::http::bytes(res).await;
    }
    let completions = |k| sim.simulator().idempotency_key(k).unwrap().completions;
    assert_eq!((completions("json"), completions("cut")), (1, 0));
    sim.shutdown().await;
}
