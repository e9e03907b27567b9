//! The ready clients (hyper and reqwest) and the response body against the
//! simulator, over real sockets: usage and completeness are observed from
//! what really crosses the wire, for JSON bodies and both providers' SSE
//! streams, through each client.

mod support;

use http::Request;
use support::http::{completion, post_json, text};
use tower::ServiceExt;
use tower_llm_resilience::client::{HyperClient, ReqwestClient};
use tower_llm_resilience::provider::ErrorKind;
use tower_llm_resilience::request::{ReplayBody, RequestMeta};
use tower_llm_resilience::response::{Completion, Outcome};
use tower_llm_resilience::sim::{Faults, Limits, SimConfig, SimHandle, Simulator};

async fn sim(faults: Faults) -> SimHandle {
    Simulator::start(
        SimConfig::new()
            .with_limits(Limits::TIER_4)
            .with_time_scale(60.0)
            .with_output_tokens(5, 40)
            .with_faults(faults)
            .with_seed(3),
    )
    .await
    .expect("simulator")
}

fn anthropic(url: &str, stream: bool) -> Request<ReplayBody> {
    support::http::anthropic(
        &format!("{url}/v1/messages"),
        "sk-ant-test",
        format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":64,"stream":{stream},
                "messages":[{{"role":"user","content":"Tell me about token buckets, please."}}]}}"#
        ),
    )
}

fn openai(url: &str) -> Request<ReplayBody> {
    post_json(
        &format!("{url}/v1/chat/completions"),
        &[("authorization", "Bearer sk-openai-test")],
        r#"{"model":"gpt-4o-mini","max_completion_tokens":64,"stream":true,
                "stream_options":{"include_usage":true},
                "messages":[{"role":"user","content":"Tell me about token buckets, please."}]}"#,
    )
}

#[derive(Debug, Clone, Copy)]
enum Client {
    Hyper,
    Reqwest,
}

const CLIENTS: [Client; 2] = [Client::Hyper, Client::Reqwest];

/// Sends through `client`, reads the body to the end, and returns the body
/// text and how the response body reported its end.
async fn send_on(client: Client, req: Request<ReplayBody>) -> (u16, String, Completion) {
    let mut res = match client {
        Client::Hyper => HyperClient::new().oneshot(req).await,
        Client::Reqwest => ReqwestClient::new().oneshot(req).await,
    }
    .expect("response");
    let ended = completion(&mut res);
    let status = res.status().as_u16();
    let body = text(res).await;
    (status, body, ended.recv().expect("completion reported"))
}

async fn send(req: Request<ReplayBody>) -> (u16, String, Completion) {
    send_on(Client::Hyper, req).await
}

fn json_usage(body: &str) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    (
        v["usage"]["input_tokens"].as_u64().expect("input"),
        v["usage"]["output_tokens"].as_u64().expect("output"),
    )
}

#[tokio::test]
async fn json_usage_is_observed_and_matches_the_body() {
    let sim = sim(Faults::none()).await;
    for client in CLIENTS {
        let (status, body, c) = send_on(client, anthropic(&sim.url(), false)).await;
        assert_eq!(status, 200, "{client:?}");
        assert_eq!(c.outcome, Outcome::Complete, "{client:?}");
        let usage = c.usage.expect("usage");
        assert_eq!((usage.input_tokens, usage.output_tokens), json_usage(&body));
        assert_eq!(c.bytes, body.len() as u64, "{client:?}");
    }
}

/// Streams through reqwest as through hyper: usage from the SSE events,
/// a complete stream complete, a cut one truncated.
#[tokio::test]
async fn reqwest_streams_are_observed_like_hyper_ones() {
    let sim = sim(Faults::none()).await;
    let (status, body, c) = send_on(Client::Reqwest, anthropic(&sim.url(), true)).await;
    assert_eq!(status, 200);
    assert!(body.contains("event: message_stop"));
    assert_eq!(c.outcome, Outcome::Complete);
    assert!(c.usage.expect("usage").output_tokens >= 5);
    let (_, body, c) = send_on(Client::Reqwest, openai(&sim.url())).await;
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert_eq!(c.outcome, Outcome::Complete);

    let cut = self::sim(Faults::none().with_truncate_stream(1.0)).await;
    let (_, body, c) = send_on(Client::Reqwest, anthropic(&cut.url(), true)).await;
    assert!(!body.contains("message_stop"));
    assert_eq!(c.outcome, Outcome::Truncated);
}

#[tokio::test]
async fn anthropic_stream_usage_and_estimate() {
    let sim = sim(Faults::none()).await;
    let req = anthropic(&sim.url(), true);
    let estimate =
        RequestMeta::parse("/v1/messages", req.headers(), req.body().as_bytes()).input_tokens();
    let (status, body, c) = send(req).await;
    assert_eq!(status, 200);
    assert_eq!(c.outcome, Outcome::Complete);
    let usage = c.usage.expect("usage");
    assert!(body.contains("event: message_stop"));
    assert!(
        usage.output_tokens >= 5 && usage.output_tokens <= 40,
        "{usage:?}"
    );
    // The estimate errs high, never low, for plain text.
    assert!(
        estimate >= usage.input_tokens,
        "estimate {estimate} < actual {}",
        usage.input_tokens
    );
}

#[tokio::test]
async fn openai_stream_usage_chunk() {
    let sim = sim(Faults::none()).await;
    let (status, body, c) = send(openai(&sim.url())).await;
    assert_eq!(status, 200);
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert_eq!(c.outcome, Outcome::Complete);
    assert!(c.usage.expect("usage").output_tokens > 0);
}

#[tokio::test]
async fn truncated_stream_is_reported_truncated() {
    let sim = sim(Faults::none().with_truncate_stream(1.0)).await;
    let (status, body, c) = send(anthropic(&sim.url(), true)).await;
    assert_eq!(status, 200);
    assert!(!body.contains("message_stop"));
    assert_eq!(c.outcome, Outcome::Truncated);
    // The input tokens of message_start were seen before the cut.
    assert!(c.usage.expect("usage").input_tokens > 0);

    let (_, body, c) = send(openai(&sim.url())).await;
    assert!(!body.contains("[DONE]"));
    assert_eq!(c.outcome, Outcome::Truncated);
}

#[tokio::test]
async fn mid_stream_overload_is_an_error_event() {
    let sim = sim(Faults::none().with_mid_stream_error(1.0)).await;
    let (status, _, c) = send(anthropic(&sim.url(), true)).await;
    assert_eq!(status, 200);
    assert_eq!(c.outcome, Outcome::ErrorEvent);
    assert_eq!(c.error.map(|e| e.kind), Some(ErrorKind::Overloaded));
    assert!(
        c.content_started,
        "the fault comes after at least one delta"
    );
}

/// reqwest names the URL in its errors; a `key=` in the query (Gemini's
/// credential) must not reach the caller's error, or its logs.
#[tokio::test]
async fn reqwest_errors_never_carry_the_url_or_its_key() {
    // A port nothing listens on: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let req = Request::post(format!(
        "http://127.0.0.1:{port}/v1beta/models/m:generateContent?key=AIzaSECRETSECRET"
    ))
    .body(ReplayBody::from("{}"))
    .expect("request");
    let err = ReqwestClient::new()
        .oneshot(req)
        .await
        .expect_err("refused");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
}
