//! The gateway's graceful shutdown under load, on real sockets and real
//! time: requests in flight (streams included) finish to their last byte
//! after the shutdown starts; requests arriving after it are refused 503
//! `overloaded_error` with `retry-after` and `connection: close`, and
//! `/health` turns 503 so a load balancer drains; then the server exits.

#![cfg(not(loom))]

#[path = "support/gateway.rs"]
mod client;
#[path = "../examples/gateway/mod.rs"]
mod gateway;

use std::time::{Duration, Instant};

use client::{anthropic_body, openai_body, post, valid_answer};
use gateway::{Gateway, Options};
use tower_llm_resilience::sim;

/// A quota nothing here reaches, on a fast clock.
fn fast() -> Options {
    Options {
        port: 0,
        quota: sim::Limits::new(1_000_000, 100_000_000, 100_000_000),
        time_scale: 60.0,
        seed: 5,
        timeout: Duration::from_secs(60),
        ..Options::default()
    }
}

/// What a client of the 100 got: its status and whether its answer (a
/// whole JSON body, or a stream to its terminal event) was complete.
async fn one_of_the_hundred(url: String, i: usize) -> (u16, bool) {
    let client = reqwest::Client::new(); // a connection of its own
    let anthropic = i.is_multiple_of(2);
    let stream = i % 4 < 2;
    let (path, body) = if anthropic {
        (
            "/v1/messages",
            anthropic_body("claude-haiku-4-5", 64, stream),
        )
    } else {
        (
            "/v1/chat/completions",
            openai_body("gpt-4o-mini", 64, stream),
        )
    };
    let res = post(&client, format!("{url}{path}"), body)
        .await
        .expect("the gateway answers");
    let status = res.status().as_u16();
    let Ok(body) = res.bytes().await else {
        return (status, false); // cut short
    };
    let complete = if !stream {
        valid_answer(anthropic, &body)
    } else {
        // The last event is the stream's terminal one.
        let text = String::from_utf8_lossy(&body);
        let (prefix, end) = if anthropic {
            ("event: ", "event: message_stop")
        } else {
            ("data: ", "data: [DONE]")
        };
        text.lines().rfind(|l| l.starts_with(prefix)) == Some(end)
    };
    (status, complete)
}

/// 100 requests in flight (half of them streams, half on each API) when
/// the shutdown starts: all 100 complete; /health and 20 requests sent
/// after are refused 503 in the provider's shape; the server then exits,
/// and only the 100 reached the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_under_load_finishes_the_hundred_in_flight_and_refuses_the_rest() {
    let o = Options {
        // Every answer takes about a second: headers after 600 ms, then
        // 30 tokens 15 ms apart (streams arrive token by token).
        latency: Duration::from_millis(600),
        token_latency: Duration::from_millis(15),
        output_tokens: (30, 30),
        ..fast()
    };
    let mut gw = Gateway::start(&o).await.expect("gateway starts");
    let url = gw.url();
    let hundred: Vec<_> = (0..100)
        .map(|i| tokio::spawn(one_of_the_hundred(url.clone(), i)))
        .collect();
    let give_up = Instant::now() + Duration::from_secs(10);
    while gw.drain().in_flight() < 100 {
        assert!(
            Instant::now() < give_up,
            "only {} in flight",
            gw.drain().in_flight()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    gw.begin_shutdown();
    let started = Instant::now();
    while !gw.drain().draining() {
        assert!(started.elapsed() < Duration::from_secs(2), "never draining");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(gw.drain().in_flight() > 0, "the hundred finished too soon");
    let health = reqwest::get(format!("{url}/health"))
        .await
        .expect("still accepting while draining");
    assert_eq!(health.status(), 503);
    for i in 0..20_u32 {
        let anthropic = i.is_multiple_of(2);
        let (path, body) = if anthropic {
            (
                "/v1/messages",
                anthropic_body("claude-haiku-4-5", 64, i.is_multiple_of(4)),
            )
        } else {
            (
                "/v1/chat/completions",
                openai_body("gpt-4o-mini", 64, false),
            )
        };
        let res = post(&reqwest::Client::new(), format!("{url}{path}"), body)
            .await
            .expect("refused, not cut");
        assert_eq!(res.status(), 503, "{path}");
        let h = res.headers();
        assert_eq!(h["retry-after"], "1", "{path}");
        assert_eq!(h["connection"], "close", "{path}");
        let v: serde_json::Value =
            serde_json::from_slice(&res.bytes().await.expect("body")).expect("a JSON error");
        if anthropic {
            assert_eq!(v["type"], "error", "{v}");
            assert_eq!(v["error"]["type"], "overloaded_error", "{v}");
        } else {
            assert_eq!(v["error"]["type"], "overloaded_error", "{v}");
        }
    }
    assert!(
        gw.drain().in_flight() > 0,
        "refusals were sent after the drain"
    );

    let mut complete = 0;
    for t in hundred {
        let (status, whole) = t.await.expect("client task");
        assert_eq!(status, 200);
        complete += usize::from(whole);
    }
    assert_eq!(complete, 100, "every one of the hundred finished whole");
    let c = gw.sim().expect("embedded").counters();
    assert_eq!(c.ok(), 100, "only the hundred reached the upstream");
    let exited = tokio::time::timeout(Duration::from_secs(5), gw.wait()).await;
    exited
        .expect("the server exits once drained")
        .expect("cleanly");
    assert!(
        reqwest::get(format!("{url}/health")).await.is_err(),
        "no longer accepting"
    );
}

/// Shutdown stops accepting but lets a stream in flight finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_a_stream_finish() {
    let o = Options {
        token_latency: Duration::from_millis(20),
        output_tokens: (30, 30),
        ..fast()
    };
    let gw = Gateway::start(&o).await.expect("gateway starts");
    let url = gw.url();
    let client = reqwest::Client::new();
    let mut res = post(
        &client,
        format!("{url}/v1/messages"),
        anthropic_body("claude-haiku-4-5", 64, true),
    )
    .await
    .expect("answers");
    let first = res.chunk().await.expect("reads").expect("a first chunk");
    assert!(
        std::str::from_utf8(&first)
            .expect("utf-8")
            .contains("message_start")
    );
    let stopping = tokio::spawn(gw.shutdown());
    let mut rest = String::new();
    while let Some(chunk) = res.chunk().await.expect("the stream is not cut") {
        rest.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    assert!(rest.contains("event: message_stop"), "{rest}");
    stopping.await.expect("task").expect("shuts down");
    let after = reqwest::Client::new()
        .get(format!("{url}/health"))
        .send()
        .await;
    assert!(after.is_err(), "no longer accepting");
}
