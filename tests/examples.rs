//! Every example runs here and what it prints is checked, so none rots
//! (`tonic_client`'s test is in `tests/grpc.rs`).
//!
//! Two ways, the lightest that is robust for each:
//!
//! - `quickstart`, `anthropic`, `openai` and `reqwest_client` are included
//!   as modules (`#[path]`) and the function their `main` calls is run
//!   with small options, writing to a buffer: no process, no build step.
//!   `anthropic` and `openai` are run without a key (the simulator), so
//!   the suite never calls a provider, whatever the environment holds.
//! - `sim_server` and `workload` are command-line programs whose contract
//!   is their output (a server's first line; a multi-process harness), so
//!   their built binaries run: `cargo test` builds every example before it
//!   runs a test, into `target/<profile>/examples/`. (Run alone with
//!   `cargo test --test examples`, cargo does not build them; the test
//!   then builds the one it needs with `cargo build --example`.)
//!
//! Plus the proof that streaming works through `ReqwestClient`: a local
//! server sends the first SSE event, then waits until the caller has read
//! it through the whole stack before sending the rest.

#[allow(dead_code)]
#[path = "../examples/quickstart.rs"]
mod quickstart;
#[allow(dead_code)]
#[path = "../examples/reqwest_client.rs"]
mod reqwest_client;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tower::ServiceExt;
use tower_llm_resilience::client::ReqwestClient;
use tower_llm_resilience::stack::Stack;

use reqwest_client::chat;

// ------------------------------------------------------------ in-process

#[tokio::test]
async fn quickstart_shows_progress_and_ends_with_the_table() {
    let opts = quickstart::Options {
        requests: 150,
        concurrency: 16,
        scale: 300.0,
    };
    let mut out = Vec::new();
    let rows = quickstart::run_all(opts, quickstart::Progress::Lines, &mut out)
        .await
        .expect("quickstart");
    let out = String::from_utf8(out).expect("utf-8");
    println!("{out}");
    assert!(out.starts_with("Simulated provider: 50 RPM"), "{out}");
    // Progress for each client, ending with all finished.
    assert!(out.contains("\nnaive: 150/150 finished, "), "{out}");
    assert!(out.contains("\nours: 150/150 finished, "), "{out}");
    // The table comes last, after the progress.
    let header = out
        .find("client  requests  succeeded")
        .expect("table header");
    assert!(
        out.rfind(" finished, ").expect("progress") < header,
        "{out}"
    );
    let row = |name: &str| -> Vec<String> {
        out[header..]
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // The printed figures are the measured ones.
    for (name, r) in ["naive ", "ours "].into_iter().zip(&rows) {
        let fields = row(name);
        assert_eq!(fields[1], "150");
        assert_eq!(fields[2], r.ok.to_string(), "{out}");
        assert_eq!(fields[4], r.attempts.to_string(), "{out}");
        assert_eq!(fields[5], r.status_429.to_string(), "{out}");
    }
    // The point of the example: ours gets every request through.
    assert_eq!(rows[1].ok, 150, "{out}");
    assert!(out.contains("\nours:  150 of 150 succeeded with "), "{out}");
}

#[tokio::test]
async fn quickstart_draws_a_bar_on_a_terminal() {
    let opts = quickstart::Options {
        requests: 20,
        concurrency: 4,
        scale: 600.0,
    };
    let mut out = Vec::new();
    quickstart::run_all(opts, quickstart::Progress::Bar, &mut out)
        .await
        .expect("quickstart");
    let out = String::from_utf8(out).expect("utf-8");
    assert!(
        out.contains(&format!("\rnaive  [{}]    20/20", "#".repeat(30))),
        "{out:?}"
    );
    assert!(out.contains("client  requests  succeeded"), "{out:?}");
}

fn check_chat_output(out: &str, env: &str) {
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "{env} is not set: calling the embedded simulator at http://127.0.0.1:"
        )),
        "{out}"
    );
    assert!(
        lines[1].starts_with("create: ") && lines[1].len() > "create: ".len(),
        "{out}"
    );
    assert!(
        lines[2].starts_with("stream: ") && lines[2].len() > "stream: ".len(),
        "{out}"
    );
    assert!(
        lines[3].starts_with("streamed ") && lines[3].ends_with(" frames"),
        "{out}"
    );
}

#[tokio::test]
async fn anthropic_without_a_key_says_so_and_uses_the_simulator() {
    let mut out = Vec::new();
    let streamed = chat::run(chat::Api::Anthropic, None, None, &mut out)
        .await
        .expect("anthropic");
    let out = String::from_utf8(out).expect("utf-8");
    check_chat_output(&out, "ANTHROPIC_API_KEY");
    // What was printed after "stream: " is the text the deltas carried.
    assert_eq!(
        out.lines().nth(2),
        Some(format!("stream: {}", streamed.text).as_str())
    );
    assert!(streamed.deltas > 1 && streamed.frames > 1, "{streamed:?}");
    assert!(!out.contains("sim-key"), "the key is never printed");
}

#[tokio::test]
async fn openai_without_a_key_says_so_and_uses_the_simulator() {
    let mut out = Vec::new();
    let streamed = chat::run(chat::Api::OpenAi, None, None, &mut out)
        .await
        .expect("openai");
    let out = String::from_utf8(out).expect("utf-8");
    check_chat_output(&out, "OPENAI_API_KEY");
    assert_eq!(
        out.lines().nth(2),
        Some(format!("stream: {}", streamed.text).as_str())
    );
    assert!(streamed.deltas > 1 && streamed.frames > 1, "{streamed:?}");
    assert!(!out.contains("sim-key"), "the key is never printed");
}

#[tokio::test]
async fn reqwest_client_creates_and_streams() {
    let mut out = Vec::new();
    let streamed = reqwest_client::run(None, &mut out)
        .await
        .expect("reqwest_client");
    let out = String::from_utf8(out).expect("utf-8");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("transport: reqwest; calling http://127.0.0.1:"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("create: ") && lines[1].len() > 8,
        "{out}"
    );
    assert_eq!(lines[2], format!("stream: {}", streamed.text), "{out}");
    assert_eq!(
        lines[3],
        format!(
            "streamed {} text deltas in {} frames",
            streamed.deltas, streamed.frames
        )
    );
    assert!(streamed.frames > 1, "{out}");
}

// ------------------------------------------------ streaming through reqwest

const FIRST: &str = "event: message_start\n\
    data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
    event: content_block_start\n\
    data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
    event: content_block_delta\n\
    data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n";
const REST: &str = "event: content_block_delta\n\
    data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\", world\"}}\n\n\
    event: content_block_stop\n\
    data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
    event: message_delta\n\
    data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n\
    event: message_stop\n\
    data: {\"type\":\"message_stop\"}\n\n";

/// The first event, then nothing until `go` fires, then the rest.
struct Gated {
    first: Option<Bytes>,
    go: Option<oneshot::Receiver<()>>,
    sent_rest: Arc<Mutex<bool>>,
}

impl http_body::Body for Gated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Some(go) = self.go.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(go).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                self.go = None;
                *self.sent_rest.lock().expect("lock") = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(REST.as_bytes())))))
            }
        }
    }
}

use std::future::Future as _;

#[tokio::test]
async fn reqwest_streams_the_first_event_before_the_last_is_sent() {
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let go_rx = Arc::new(Mutex::new(Some(go_rx)));
    let sent_rest = Arc::new(Mutex::new(false));
    let app = {
        let sent_rest = Arc::clone(&sent_rest);
        axum::Router::new().route(
            "/v1/messages",
            axum::routing::post(move || {
                let go = go_rx.lock().expect("lock").take();
                let sent_rest = Arc::clone(&sent_rest);
                async move {
                    http::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(axum::body::Body::new(Gated {
                            first: Some(Bytes::from_static(FIRST.as_bytes())),
                            go,
                            sent_rest,
                        }))
                        .expect("response")
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The whole stack (buffer, cache, fallback, retry with its look at how
    // the stream starts, rate limit, concurrency) over reqwest.
    let svc = Stack::builder().service(ReqwestClient::new());
    let target = chat::Target {
        api: chat::Api::Anthropic,
        base: format!("http://{addr}"),
        model: "claude-sonnet-4-5".into(),
        key: "sk-test".into(),
    };
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        svc.oneshot(target.request("hi", true)),
    )
    .await
    .expect("the head arrives while the server holds the rest")
    .expect("response");
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut seen = String::new();
    // Read until the first text delta; a transport or layer that buffered
    // the body would never get here (the server waits for us), and the
    // timeout turns that into a failure instead of a hang.
    tokio::time::timeout(Duration::from_secs(20), async {
        while !seen.contains("\"text\":\"Hello\"") {
            let frame = body.frame().await.expect("a frame").expect("ok");
            if let Some(data) = frame.data_ref() {
                seen.push_str(std::str::from_utf8(data).expect("utf-8"));
            }
        }
    })
    .await
    .expect("the first event reached the caller before the rest was sent");
    assert!(
        !*sent_rest.lock().expect("lock"),
        "the rest was not sent yet"
    );
    assert!(!seen.contains("message_stop"));

    go_tx.send(()).expect("server waiting");
    let rest = body.collect().await.expect("rest").to_bytes();
    let rest = std::str::from_utf8(&rest).expect("utf-8");
    assert!(
        rest.contains(", world") && rest.contains("message_stop"),
        "{rest}"
    );
    let text: String = format!("{seen}{rest}")
        .split("\n\n")
        .filter_map(|e| chat::delta_text(chat::Api::Anthropic, e.as_bytes()))
        .collect();
    assert_eq!(text, "Hello, world");
}

// -------------------------------------------------------------- processes

/// The built example `name`, built now if `cargo test` did not build it.
fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples");
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--all-features", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build");
        assert!(status.success(), "cargo build --example {name}");
    }
    bin
}

/// Kills the child when dropped (a failing test leaves no server behind).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sim_server_prints_its_url_and_enforces_its_quota() {
    let mut child = Child(
        Command::new(example_bin("sim_server"))
            .args([
                "--port",
                "0",
                "--rpm",
                "2",
                "--time-scale",
                "1",
                "--seed",
                "1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sim_server"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read");
        line
    })
    .await
    .expect("join");
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    // The server is what it says: it answers, and refuses over its quota.
    let target = chat::Target {
        api: chat::Api::Anthropic,
        base: url,
        model: "claude-sonnet-4-5".into(),
        key: "sk-test".into(),
    };
    let client = ReqwestClient::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let res = client
            .clone()
            .oneshot(target.request("hi", false))
            .await
            .expect("response");
        statuses.push(res.status().as_u16());
        let _ = res.into_body().collect().await;
    }
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test]
async fn axum_gateway_prints_its_url_and_answers_through_the_stack() {
    let mut child = Child(
        Command::new(example_bin("axum_gateway"))
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn axum_gateway"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        for _ in 0..20 {
            line.clear();
            if reader.read_line(&mut line).expect("read") == 0 || line.starts_with("listening on ")
            {
                break;
            }
        }
        line
    })
    .await
    .expect("join");
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("no \"listening on\" line: {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let target = chat::Target {
        api: chat::Api::Anthropic,
        base: url,
        model: "claude-sonnet-4-5".into(),
        key: "any".into(),
    };
    let res = ReqwestClient::new()
        .oneshot(target.request("hi", false))
        .await
        .expect("response");
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("\"type\":\"message\""), "{body}");
}

#[tokio::test]
async fn workload_prints_a_row_per_client() {
    let bin = example_bin("workload");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args([
                "--clients",
                "naive,ours",
                "--requests",
                "60",
                "--concurrency",
                "16",
            ])
            .args(["--time-scale", "600", "--seed", "3"])
            .stderr(Stdio::null())
            .output()
            .expect("run workload")
    })
    .await
    .expect("join");
    assert!(out.status.success(), "workload failed: {out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    println!("{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("client ") && lines[0].contains("succeeded"),
        "{stdout}"
    );
    let row = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} row in\n{stdout}"))
            .split_whitespace()
            .collect()
    };
    for name in ["naive", "ours"] {
        let r = row(name);
        assert_eq!(r[1], "60", "{stdout}");
        let succeeded: usize = r[2].parse().expect("succeeded");
        let failed: usize = r[3].parse().expect("failed");
        assert_eq!(succeeded + failed, 60, "{stdout}");
    }
    assert_eq!(
        row("ours")[2],
        "60",
        "ours gets every request through: {stdout}"
    );
}
