//! `examples/axum_gateway.rs` end to end, on real sockets and real time:
//! the gateway module the example runs (`examples/gateway/mod.rs`) started
//! in-process in front of a simulator, driven by reqwest clients.

#![cfg(not(loom))]

#[path = "support/gateway.rs"]
mod client;
#[path = "../examples/gateway/mod.rs"]
mod gateway;

use std::sync::atomic::Ordering;
use std::time::Duration;

use client::{anthropic_body, openai_body, post, valid_answer};
use gateway::{Gateway, Options, Secret};
use tower_llm_resilience::sim::{self, SimConfig, Simulator};

/// A tight quota on a fast clock: a provider minute lasts one second.
fn tight(rpm: u64) -> Options {
    Options {
        port: 0,
        quota: sim::Limits::new(rpm, 100_000, 100_000),
        time_scale: 60.0,
        seed: 3,
        output_tokens: (5, 20),
        timeout: Duration::from_secs(60),
        ..Options::default()
    }
}

/// 200 clients at once, each with its own connection, half of them on each
/// API, against 30 requests per provider second per model: the burst
/// cannot fit, so the gateway must queue; every client gets a valid
/// answer and none sees a 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients_all_answered_without_429s() {
    let gw = Gateway::start(&tight(30)).await.expect("gateway starts");
    let url = gw.url();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new(); // a connection of its own
            let anthropic = i % 2 == 0;
            let (path, body) = if anthropic {
                (
                    "/v1/messages",
                    anthropic_body("claude-haiku-4-5", 32, false),
                )
            } else {
                (
                    "/v1/chat/completions",
                    openai_body("gpt-4o-mini", 32, false),
                )
            };
            let res = post(&client, format!("{url}{path}"), body)
                .await
                .expect("the gateway answers");
            let status = res.status().as_u16();
            let body = res.bytes().await.expect("whole body");
            (status, valid_answer(anthropic, &body))
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    let mut valid = 0;
    for t in tasks {
        let (status, ok) = t.await.expect("client task");
        *statuses.entry(status).or_insert(0) += 1;
        valid += usize::from(ok && status == 200);
    }
    let c = gw.sim().expect("embedded").counters();
    eprintln!(
        "client statuses {statuses:?}; upstream {:?}, {} windows",
        c.statuses,
        c.windows.len()
    );
    assert_eq!(statuses.get(&429), None, "no 429 reaches a client");
    assert_eq!(valid, 200, "every client got a valid answer: {statuses:?}");
    assert_eq!(gw.counters().status_429.load(Ordering::Relaxed), 0);
    assert_eq!(c.ok(), 200, "each answer came from the upstream");
    // The quota was really tight: 100 requests per model at 30 a second
    // could not all be admitted in the first provider minute.
    assert!(
        c.windows.len() >= 3,
        "admissions spread over {} windows",
        c.windows.len()
    );
    gw.shutdown().await.expect("shuts down");
}

/// Streams pass through as the upstream sends them, in both shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_through_event_by_event() {
    let o = Options {
        token_latency: Duration::from_millis(2),
        output_tokens: (20, 20),
        ..tight(600)
    };
    let gw = Gateway::start(&o).await.expect("gateway starts");
    let client = reqwest::Client::new();
    for (path, body, start, end) in [
        (
            "/v1/messages",
            anthropic_body("claude-haiku-4-5", 64, true),
            "event: message_start",
            "event: message_stop",
        ),
        (
            "/v1/chat/completions",
            openai_body("gpt-4o-mini", 64, true),
            "\"object\":\"chat.completion.chunk\"",
            "data: [DONE]",
        ),
    ] {
        let mut res = post(&client, format!("{}{path}", gw.url()), body)
            .await
            .expect("answers");
        assert_eq!(res.status(), 200, "{path}");
        let content_type = res.headers()["content-type"].to_str().expect("ascii");
        assert!(
            content_type.starts_with("text/event-stream"),
            "{path}: {content_type}"
        );
        let mut chunks = 0;
        let mut text = String::new();
        while let Some(chunk) = res.chunk().await.expect("stream reads") {
            chunks += 1;
            text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
        assert!(text.contains(start), "{path}: {text}");
        // The last event is the stream's terminal one.
        let prefix = &end[..end.find(' ').expect("a space")];
        let last = text.lines().rfind(|l| l.starts_with(prefix));
        assert_eq!(last, Some(end), "{path}: {text}");
        // 20 tokens, 2 ms apart: the body arrives in pieces, not at once.
        assert!(chunks > 5, "{path}: {chunks} chunks");
    }
    gw.shutdown().await.expect("shuts down");
}

/// The gateway sends its own key upstream and never the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_are_replaced_by_the_gateways_key() {
    let upstream = Simulator::start(
        SimConfig::new()
            .with_time_scale(60.0)
            .with_api_keys(["sk-upstream-only"]),
    )
    .await
    .expect("simulator");
    let client = reqwest::Client::new();
    // The upstream does refuse the client's key…
    let direct = post(
        &client,
        format!("{}/v1/messages", upstream.url()),
        anthropic_body("claude-haiku-4-5", 16, false),
    )
    .await
    .expect("answers");
    assert_eq!(direct.status(), 401);

    // …and through the gateway the same request is answered.
    let o = Options {
        upstream: Some(upstream.url()),
        anthropic_key: Some(Secret("sk-upstream-only".into())),
        openai_key: Some(Secret("sk-upstream-only".into())),
        configure_limits: false,
        ..tight(600)
    };
    let gw = Gateway::start(&o).await.expect("gateway starts");
    for (path, body) in [
        (
            "/v1/messages",
            anthropic_body("claude-haiku-4-5", 16, false),
        ),
        (
            "/v1/chat/completions",
            openai_body("gpt-4o-mini", 16, false),
        ),
    ] {
        let res = post(&client, format!("{}{path}", gw.url()), body)
            .await
            .expect("answers");
        assert_eq!(res.status(), 200, "{path}");
    }
    assert_eq!(upstream.counters().ok(), 2);
    gw.shutdown().await.expect("shuts down");
    upstream.shutdown().await;
}

/// A request that cannot be admitted before its deadline gets the
/// provider's 429 shape with `retry-after`, at once, instead of a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_gets_a_429_with_retry_after() {
    let o = Options {
        quota: sim::Limits::new(1, 100_000, 100_000),
        time_scale: 1.0,
        timeout: Duration::from_secs(2),
        ..tight(1)
    };
    let gw = Gateway::start(&o).await.expect("gateway starts");
    let client = reqwest::Client::new();
    let url = format!("{}/v1/messages", gw.url());
    let first = post(
        &client,
        url.clone(),
        anthropic_body("claude-haiku-4-5", 16, false),
    )
    .await
    .expect("answers");
    assert_eq!(first.status(), 200);
    // The next request fits in a minute: far past its 2 s deadline.
    let second = post(&client, url, anthropic_body("claude-haiku-4-5", 16, false))
        .await
        .expect("answers");
    assert_eq!(second.status(), 429);
    let retry: u64 = second.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((2..=61).contains(&retry), "retry-after {retry}");
    let body: serde_json::Value =
        serde_json::from_slice(&second.bytes().await.expect("body")).expect("json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // Only the first reached the upstream.
    assert_eq!(gw.sim().expect("embedded").counters().received, 1);
    gw.shutdown().await.expect("shuts down");
}

/// `/metrics` has the gateway's counters and the limiter's state; every
/// answer carries a request id, the client's own when it sent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_request_ids() {
    let gw = Gateway::start(&tight(600)).await.expect("gateway starts");
    let client = reqwest::Client::new();
    let res = post(
        &client,
        format!("{}/v1/messages", gw.url()),
        anthropic_body("claude-metrics", 16, false),
    )
    .await
    .expect("answers");
    assert_eq!(res.status(), 200);
    let id = res.headers()[gateway::REQUEST_ID.as_str()]
        .to_str()
        .expect("ascii");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let res = client
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header(gateway::REQUEST_ID.as_str(), "mine-42")
        .body(openai_body("gpt-metrics", 16, false))
        .send()
        .await
        .expect("answers");
    assert_eq!(res.headers()[gateway::REQUEST_ID.as_str()], "mine-42");

    let text = client
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(r#"gateway_requests_total{api="anthropic",status="200"}"#),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("tower_llm_rate_limit{")
            && l.contains(r#"model="claude-metrics""#)
            && l.contains(r#"dimension="requests""#)
            && l.ends_with(" 600")),
        "{text}"
    );
    gw.shutdown().await.expect("shuts down");
}

// ---- the body limit, before the body ----

/// A request head for `/v1/messages` with these framing headers.
fn raw_head(framing: &str) -> String {
    format!(
        "POST /v1/messages HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\nx-api-key: sk-client-whatever\r\nanthropic-version: 2023-06-01\r\n{framing}\r\n\r\n"
    )
}

/// Reads until a whole response head is in, or the connection ends.
async fn read_head(stream: &mut tokio::net::tcp::OwnedReadHalf) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Guards "the body limit is enforced before the body is read", on a real
/// socket: a request whose `content-length` says 64 MiB against a 1 MiB
/// limit is answered 413 with not one body byte sent — so nothing of it
/// was buffered — and never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_over_the_limit_is_refused_before_it_is_sent() {
    use tokio::io::AsyncWriteExt;
    let o = Options {
        body_limit: 1 << 20,
        ..tight(1_000)
    };
    let gw = Gateway::start(&o).await.expect("gateway starts");
    let addr = gw.url().trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connects");
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(raw_head(&format!("content-length: {}", 64 << 20)).as_bytes())
        .await
        .expect("head sent");
    let head = tokio::time::timeout(Duration::from_secs(30), read_head(&mut rd))
        .await
        .expect("answered without the body");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(gw.sim().expect("embedded").counters().received, 0);
    gw.shutdown().await.expect("shuts down");
}

/// A chunked upload (no length declared) over the limit is read no
/// further than the limit: the 413 comes while the client is still
/// sending, after at most the limit plus what the sockets' buffers hold —
/// far from the 64 MiB offered — and the upstream never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_is_refused_within_the_limit() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::AsyncWriteExt;
    const LIMIT: usize = 1 << 20;
    const OFFERED: usize = 64 << 20;
    let o = Options {
        body_limit: LIMIT,
        ..tight(1_000)
    };
    let gw = Gateway::start(&o).await.expect("gateway starts");
    let addr = gw.url().trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connects");
    let (mut rd, mut wr) = stream.into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            wr.write_all(raw_head("transfer-encoding: chunked").as_bytes())
                .await?;
            let chunk = [b' '; 64 * 1024];
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            while sent.load(Ordering::SeqCst) < OFFERED {
                wr.write_all(&framed).await?;
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            wr.write_all(b"0\r\n\r\n").await
        })
    };
    let head = tokio::time::timeout(Duration::from_secs(30), read_head(&mut rd))
        .await
        .expect("answered while sending");
    let at_answer = sent.load(Ordering::SeqCst);
    writer.abort();
    eprintln!("413 after {at_answer} B of a {OFFERED} B chunked body (limit {LIMIT} B)");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        at_answer <= LIMIT + (16 << 20),
        "{at_answer} B sent before the 413"
    );
    assert_eq!(gw.sim().expect("embedded").counters().received, 0);
    gw.shutdown().await.expect("shuts down");
}
