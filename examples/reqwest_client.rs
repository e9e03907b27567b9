//! The stack over `reqwest`: `client::ReqwestClient` (feature `reqwest`)
//! as the transport under the prebuilt `Stack`, a message created and one
//! streamed, read chunk by chunk as reqwest receives it.
//!
//! Run with:
//!
//! ```sh
//! cargo run --example reqwest_client
//! cargo run --example reqwest_client -- --url http://127.0.0.1:8080   # a running sim_server
//! ```
//!
//! Without `--url` it starts the embedded simulator (which speaks
//! Anthropic's Messages API) and calls it. It prints where the calls go,
//! `create: …`, the streamed text as it arrives after `stream: `, and
//! `streamed N text deltas in M frames` — more than one frame: the body
//! reached the caller as it was sent, not buffered. (`tests/examples.rs`
//! proves it with a server that holds the rest of the stream until the
//! caller has seen the first event.)

#[path = "support/chat.rs"]
pub(crate) mod chat;

use std::io::Write;
use std::time::Duration;

use tower_llm_resilience::BoxError;
use tower_llm_resilience::client::ReqwestClient;
use tower_llm_resilience::rate::{Limit, Limits};
use tower_llm_resilience::sim::{SimConfig, Simulator};
use tower_llm_resilience::stack::Stack;

use chat::{Api, Streamed, Target};

/// Runs the example against `url`, or the embedded simulator.
pub(crate) async fn run(url: Option<String>, out: &mut impl Write) -> Result<Streamed, BoxError> {
    let mut _sim = None;
    let base = match url {
        Some(url) => url,
        None => {
            let sim = Simulator::start(
                SimConfig::new()
                    .with_seed(2)
                    .with_output_tokens(12, 24)
                    .with_token_latency(Duration::from_millis(5)),
            )
            .await?;
            let url = sim.url();
            _sim = Some(sim);
            url
        }
    };
    writeln!(out, "transport: reqwest; calling {base}")?;
    let target = Target {
        api: Api::Anthropic,
        base,
        model: "claude-sonnet-4-5".to_owned(),
        key: "sim-key".to_owned(),
    };
    let svc = Stack::builder()
        .limits(Limits::unlimited().requests(Limit::new(50, Duration::from_secs(60), 50)?))
        .concurrency(4)
        .service(ReqwestClient::new());
    let text = chat::create(svc.clone(), &target, "Say hello in five words.").await?;
    writeln!(out, "create: {}", text.trim())?;
    write!(out, "stream: ")?;
    let streamed = chat::stream(svc, &target, "Count from one to ten.", out).await?;
    writeln!(
        out,
        "streamed {} text deltas in {} frames",
        streamed.deltas, streamed.frames
    )?;
    Ok(streamed)
}

#[allow(dead_code)] // tests/examples.rs includes this file and calls `run`.
#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut url = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => url = Some(args.next().ok_or("--url needs a value")?),
            other => return Err(format!("unknown option {other} (only --url URL)").into()),
        }
    }
    run(url, &mut std::io::stdout()).await?;
    Ok(())
}
