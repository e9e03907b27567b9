//! What the `anthropic`, `openai` and `reqwest_client` examples share:
//! building a create-message request of either API, reading the text of
//! its answer, and reading a stream's text deltas as they arrive.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use tower::{Service, ServiceExt};
use tower_llm_resilience::BoxError;
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::response::ResponseBody;

/// Which wire API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI Chat Completions.
    OpenAi,
}

/// Where requests go and with which key.
#[derive(Clone)]
pub struct Target {
    pub api: Api,
    /// `https://api.anthropic.com`, `https://api.openai.com`, or the
    /// simulator's URL.
    pub base: String,
    pub model: String,
    /// Never printed: `Debug` says only whether there is one.
    pub key: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("api", &self.api)
            .field("base", &self.base)
            .field("model", &self.model)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Target {
    /// The request for `prompt`, streamed or not.
    pub fn request(&self, prompt: &str, stream: bool) -> Request<ReplayBody> {
        let prompt = serde_json::Value::from(prompt);
        let (path, body) = match self.api {
            Api::Anthropic => (
                "/v1/messages",
                serde_json::json!({
                    "model": self.model,
                    "max_tokens": 200,
                    "stream": stream,
                    "messages": [{"role": "user", "content": prompt}],
                }),
            ),
            Api::OpenAi => (
                "/v1/chat/completions",
                serde_json::json!({
                    "model": self.model,
                    "max_completion_tokens": 200,
                    "stream": stream,
                    "messages": [{"role": "user", "content": prompt}],
                }),
            ),
        };
        let mut req = Request::post(format!("{}{path}", self.base.trim_end_matches('/')))
            .header("content-type", "application/json")
            .body(ReplayBody::from(body.to_string()))
            .expect("valid request");
        let headers = req.headers_mut();
        let mut key = match self.api {
            Api::Anthropic => {
                headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
                HeaderValue::try_from(self.key.as_str())
            }
            Api::OpenAi => HeaderValue::try_from(format!("Bearer {}", self.key)),
        }
        .expect("a key fit for a header");
        key.set_sensitive(true);
        let name = match self.api {
            Api::Anthropic => "x-api-key",
            Api::OpenAi => "authorization",
        };
        headers.insert(name, key);
        req
    }
}

/// A failed call: the status and the provider's error body (which names no
/// key), or the stack's error.
fn failure(status: http::StatusCode, body: &[u8]) -> BoxError {
    format!("HTTP {status}: {}", String::from_utf8_lossy(body)).into()
}

/// Sends a create-message request and returns the answer's text.
pub async fn create<S>(svc: S, target: &Target, prompt: &str) -> Result<String, BoxError>
where
    S: Service<Request<ReplayBody>, Response = Response<ResponseBody>, Error = BoxError>,
{
    let res = svc.oneshot(target.request(prompt, false)).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(failure(status, &body));
    }
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    let text = match target.api {
        Api::Anthropic => json["content"]
            .as_array()
            .map(|blocks| {
                blocks
                    .iter()
                    .filter_map(|b| b["text"].as_str())
                    .collect::<String>()
            })
            .unwrap_or_default(),
        Api::OpenAi => json["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    Ok(text)
}

/// The text delta an SSE event carries, if any.
pub fn delta_text(api: Api, event: &[u8]) -> Option<String> {
    let event = std::str::from_utf8(event).ok()?;
    let data = event
        .lines()
        .find_map(|l| l.strip_prefix("data:"))?
        .trim_start();
    if data == "[DONE]" {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(data).ok()?;
    let text = match api {
        Api::Anthropic => json["delta"]["text"].as_str(),
        Api::OpenAi => json["choices"][0]["delta"]["content"].as_str(),
    }?;
    Some(text.to_owned())
}

/// What a streamed call delivered.
#[derive(Debug, Default, Clone)]
pub struct Streamed {
    /// The text, put together.
    pub text: String,
    /// Text deltas seen.
    pub deltas: usize,
    /// Body frames read (more than one: the answer came as it was made).
    pub frames: usize,
}

/// Sends a streamed request and writes each text delta to `out` as it
/// arrives (flushed), frame by frame.
pub async fn stream<S>(
    svc: S,
    target: &Target,
    prompt: &str,
    out: &mut impl Write,
) -> Result<Streamed, BoxError>
where
    S: Service<Request<ReplayBody>, Response = Response<ResponseBody>, Error = BoxError>,
{
    let res = svc.oneshot(target.request(prompt, true)).await?;
    let status = res.status();
    let mut body = res.into_body();
    if !status.is_success() {
        let bytes = body.collect().await?.to_bytes();
        return Err(failure(status, &bytes));
    }
    let mut streamed = Streamed::default();
    let mut pending = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        streamed.frames += 1;
        pending.extend_from_slice(&data);
        while let Some(end) = find_event_end(&pending) {
            let event: Bytes = pending.split_to(end).freeze();
            if let Some(text) = delta_text(target.api, &event) {
                streamed.deltas += 1;
                streamed.text.push_str(&text);
                write!(out, "{text}")?;
                out.flush()?;
            }
        }
    }
    writeln!(out)?;
    Ok(streamed)
}

/// The end of the first whole SSE event (after its blank line).
fn find_event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// The `anthropic` / `openai` examples: a create-message call and a
/// streamed one through the stack, to the provider when `key` is given,
/// else to the embedded simulator. Prints what it does; never the key.
pub async fn run(
    api: Api,
    key: Option<String>,
    model: Option<String>,
    out: &mut impl Write,
) -> Result<Streamed, BoxError> {
    use std::time::Duration;
    use tower_llm_resilience::client::HyperClient;
    use tower_llm_resilience::rate::{Limit, Limits};
    use tower_llm_resilience::sim::{SimConfig, Simulator};
    use tower_llm_resilience::stack::Stack;

    let (env, base, default_model) = match api {
        Api::Anthropic => (
            "ANTHROPIC_API_KEY",
            "https://api.anthropic.com",
            "claude-sonnet-4-5",
        ),
        Api::OpenAi => ("OPENAI_API_KEY", "https://api.openai.com", "gpt-4o-mini"),
    };
    let model = model.unwrap_or_else(|| default_model.to_owned());
    // Held for the run: dropping the handle stops the simulator.
    let mut _sim = None;
    let target = match key.filter(|k| !k.is_empty()) {
        Some(key) => {
            writeln!(out, "{env} is set: calling {base} with model {model}")?;
            Target {
                api,
                base: base.to_owned(),
                model,
                key,
            }
        }
        None => {
            let sim = Simulator::start(
                SimConfig::new()
                    .with_seed(1)
                    .with_output_tokens(12, 24)
                    .with_token_latency(Duration::from_millis(5)),
            )
            .await?;
            writeln!(
                out,
                "{env} is not set: calling the embedded simulator at {} with model {model}",
                sim.url()
            )?;
            let target = Target {
                api,
                base: sim.url(),
                model,
                key: "sim-key".to_owned(),
            };
            _sim = Some(sim);
            target
        }
    };
    // The stack: BufferBody → Cache → Fallback → Retry → RateLimit →
    // ConcurrencyLimit → hyper. 50 requests a minute (Anthropic's Tier 1
    // and OpenAI's free tier are about that), 4 in flight.
    let per_minute = Limit::new(50, Duration::from_secs(60), 50)?;
    let svc = Stack::builder()
        .limits(Limits::unlimited().requests(per_minute))
        .concurrency(4)
        .service(HyperClient::new());

    let text = create(svc.clone(), &target, "Say hello in five words.").await?;
    writeln!(out, "create: {}", text.trim())?;
    write!(out, "stream: ")?;
    let streamed = stream(svc, &target, "Count from one to ten.", out).await?;
    writeln!(
        out,
        "streamed {} text deltas in {} frames",
        streamed.deltas, streamed.frames
    )?;
    Ok(streamed)
}

/// The `anthropic` / `openai` examples' `main`: the key from `env`, the
/// model from `--model`.
pub async fn main(api: Api) -> Result<(), BoxError> {
    let env = match api {
        Api::Anthropic => "ANTHROPIC_API_KEY",
        Api::OpenAi => "OPENAI_API_KEY",
    };
    let mut model = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => model = Some(args.next().ok_or("--model needs a value")?),
            other => return Err(format!("unknown option {other} (only --model NAME)").into()),
        }
    }
    run(api, std::env::var(env).ok(), model, &mut std::io::stdout()).await?;
    Ok(())
}
