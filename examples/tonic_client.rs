//! This crate's rate (request count), concurrency and retry layers on a
//! tonic `Channel`, calling a local gRPC service that has a quota.
//!
//! Run with:
//!
//! ```sh
//! cargo run --example tonic_client
//! cargo run --example tonic_client -- --calls 60 --burst 10 --window-ms 1000 --concurrency 16
//! ```
//!
//! The service (`support/grpc.rs`, its proto written as prost messages:
//! no `protoc` needed) allows `--burst` calls, refilled at `--burst` per
//! `--window-ms`, and answers a call over it with `RESOURCE_EXHAUSTED` and
//! `grpc-retry-pushback-ms`. The same `--calls` are sent three ways, each
//! against a fresh server: on the bare channel, through the retry layer
//! alone (it waits the pushback the server names), and through
//! rate + concurrency + retry (the limiter spaces the calls so the server
//! refuses none). It prints one row per way, the retries the server saw
//! (and how many came back before its pushback: none), and a last line,
//! `all calls answered through the stack`, when the stack got every call
//! through.
//!
//! # Which layers apply to gRPC
//!
//! - **Retry**: reads the gRPC status of a trailers-only response's
//!   headers, or of trailers that come before any message (`UNAVAILABLE`
//!   and `RESOURCE_EXHAUSTED` are retried), and waits
//!   `grpc-retry-pushback-ms` (negative or invalid: no retry, as gRPC's
//!   A6 says). A call that has sent a message is never retried. The
//!   request body must be replayable: `BufferBodyLayer` above it reads a
//!   unary call's one message into a `ReplayBody`; client-streaming calls
//!   cannot be retried (and should not go through the buffer).
//! - **Rate limit, request count only**: a gRPC body is not JSON, so it
//!   has no model and no token counts; limit `requests` per credential.
//! - **Concurrency limit**: the permit is held until the response body —
//!   the reply and its trailers — ends.
//! - HTTP+JSON only: the token dimensions of the rate limit, learning from
//!   rate-limit headers, the cache, fallback, spend budgets and the
//!   prebuilt `Stack`.
//!
//! Between the layers and the channel one `map_request` turns the
//! `ReplayBody` back into tonic's body type.

#[path = "support/grpc.rs"]
pub(crate) mod grpc;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;
use tower_llm_resilience::BoxError;
use tower_llm_resilience::concurrency::ConcurrencyLimitLayer;
use tower_llm_resilience::rate::{Limit, Limits, RateLimitLayer};
use tower_llm_resilience::request::{BufferBodyLayer, ReplayBody};
use tower_llm_resilience::response::ResponseBody;
use tower_llm_resilience::retry::{RetryInfo, RetryLayer};

use grpc::{CompleteRequest, CompleterClient, Quota};

/// The example's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Calls sent each way.
    pub(crate) calls: usize,
    /// Calls in flight at once.
    pub(crate) concurrency: usize,
    /// The server's quota: calls at once, refilled at this many per window.
    pub(crate) burst: u32,
    /// The quota's window.
    pub(crate) window: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            calls: 40,
            concurrency: 16,
            burst: 10,
            window: Duration::from_secs(1),
        }
    }
}

/// The largest request message buffered for replay.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// The bare channel's service, as the layers see it.
fn channel_service(
    channel: Channel,
) -> impl tower::Service<
    http::Request<ReplayBody>,
    Response = http::Response<tonic::body::Body>,
    Error = tonic::transport::Error,
    Future: Send,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .map_request(|req: http::Request<ReplayBody>| req.map(tonic::body::Body::new))
        .service(channel)
}

/// The channel under retry alone (what the server's pushback does).
pub(crate) fn retry_only(
    channel: Channel,
) -> impl tower::Service<
    http::Request<tonic::body::Body>,
    Response = http::Response<ResponseBody>,
    Error = BoxError,
    Future: Send,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(BufferBodyLayer::new(MAX_MESSAGE))
        .layer(RetryLayer::new())
        .service(channel_service(channel))
}

/// The channel under this crate's layers: the request count limited to the
/// server's quota, at most `concurrency` calls in flight, retries after
/// `UNAVAILABLE` / `RESOURCE_EXHAUSTED` as the pushback says.
pub(crate) fn layered(
    channel: Channel,
    quota: Limit,
    concurrency: usize,
) -> impl tower::Service<
    http::Request<tonic::body::Body>,
    Response = http::Response<ResponseBody>,
    Error = BoxError,
    Future: Send,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        // A unary call's one message, read into a replayable body.
        .layer(BufferBodyLayer::new(MAX_MESSAGE))
        .layer(RetryLayer::new())
        .layer(RateLimitLayer::new(Limits::unlimited().requests(quota)))
        .layer(ConcurrencyLimitLayer::new(concurrency))
        .service(channel_service(channel))
}

/// What one way of sending did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Row {
    /// Calls answered `OK`.
    pub(crate) ok: usize,
    /// Of those, calls answered `OK` after a retry.
    pub(crate) recovered: usize,
    /// Calls that failed with `RESOURCE_EXHAUSTED`.
    pub(crate) exhausted: usize,
    /// Calls that failed otherwise.
    pub(crate) other: usize,
    /// Calls the server refused (`RESOURCE_EXHAUSTED` sent).
    pub(crate) refused: u64,
    /// Attempts the server saw, retries included.
    pub(crate) attempts: u64,
    /// Attempts that came back after a refusal.
    pub(crate) retried: u64,
    /// Of those, attempts that came back before the server's pushback had
    /// passed.
    pub(crate) early: u64,
    /// Wall time of the whole run.
    pub(crate) elapsed: Duration,
}

/// Sends `opts.calls` calls through `client`, `opts.concurrency` at once.
async fn drive<T>(client: CompleterClient<T>, opts: Options, quota: &Quota) -> Row
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    T::Future: Send,
{
    let gate = Arc::new(tokio::sync::Semaphore::new(opts.concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(opts.calls);
    for i in 0..opts.calls {
        let (mut client, gate) = (client.clone(), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("open");
            let mut req = tonic::Request::new(CompleteRequest {
                prompt: format!("call {i}"),
            });
            req.metadata_mut()
                .insert("x-call-id", i.to_string().parse().expect("digits"));
            client.complete(req).await
        }));
    }
    let mut row = Row::default();
    for task in tasks {
        match task.await.expect("task") {
            Ok(res) => {
                row.ok += 1;
                if res
                    .extensions()
                    .get::<RetryInfo>()
                    .is_some_and(|i| i.attempts > 1)
                {
                    row.recovered += 1;
                }
            }
            Err(status) => {
                if status.code() == Code::ResourceExhausted {
                    row.exhausted += 1;
                } else {
                    row.other += 1;
                }
            }
        }
    }
    row.elapsed = start.elapsed();
    row.refused = quota.refused();
    row.attempts = quota.served() + quota.refused();
    row.retried = quota.retried();
    row.early = quota.early();
    row
}

/// Runs the three ways against fresh servers and prints a row for each.
pub(crate) async fn run(opts: Options, out: &mut impl Write) -> Result<Vec<Row>, BoxError> {
    writeln!(
        out,
        "server quota: {} calls, refilled at {} per {} ms; {} calls, {} at once",
        opts.burst,
        opts.burst,
        opts.window.as_millis(),
        opts.calls,
        opts.concurrency
    )?;
    writeln!(
        out,
        "{:<30} {:>5} {:>10} {:>9} {:>8} {:>9} {:>9}",
        "client", "ok", "ok retried", "exhausted", "refused", "attempts", "elapsed"
    )?;
    let mut rows = Vec::new();
    for way in ["channel alone", "+ retry", "+ rate + concurrency + retry"] {
        let server = grpc::serve(Quota::new(opts.burst, opts.window)).await?;
        let channel = Endpoint::from_shared(format!("http://{}", server.addr))?
            .connect()
            .await?;
        let row = match way {
            "channel alone" => drive(CompleterClient::new(channel), opts, &server.quota).await,
            "+ retry" => {
                drive(
                    CompleterClient::new(retry_only(channel)),
                    opts,
                    &server.quota,
                )
                .await
            }
            _ => {
                let quota = Limit::new(u64::from(opts.burst), opts.window, u64::from(opts.burst))?;
                let svc = layered(channel, quota, opts.concurrency);
                drive(CompleterClient::new(svc), opts, &server.quota).await
            }
        };
        writeln!(
            out,
            "{:<30} {:>5} {:>10} {:>9} {:>8} {:>9} {:>7.2} s",
            way,
            row.ok,
            row.recovered,
            row.exhausted,
            row.refused,
            row.attempts,
            row.elapsed.as_secs_f64()
        )?;
        out.flush()?;
        rows.push(row);
    }
    let retried: u64 = rows.iter().map(|r| r.retried).sum();
    let early: u64 = rows.iter().map(|r| r.early).sum();
    writeln!(
        out,
        "retries the server saw: {retried}, of which before its pushback: {early}"
    )?;
    if rows.last().is_some_and(|r| r.ok == opts.calls) {
        writeln!(out, "all calls answered through the stack")?;
    }
    Ok(rows)
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--calls" => {
                opts.calls = value("--calls")?
                    .parse()
                    .map_err(|e| format!("--calls: {e}"))?
            }
            "--concurrency" => {
                opts.concurrency = value("--concurrency")?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?;
            }
            "--burst" => {
                opts.burst = value("--burst")?
                    .parse()
                    .map_err(|e| format!("--burst: {e}"))?
            }
            "--window-ms" => {
                opts.window = Duration::from_millis(
                    value("--window-ms")?
                        .parse()
                        .map_err(|e| format!("--window-ms: {e}"))?,
                );
            }
            "-h" | "--help" => {
                return Err(
                    "usage: tonic_client [--calls N] [--concurrency N] [--burst N] [--window-ms N]"
                        .into(),
                );
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if opts.calls == 0 || opts.concurrency == 0 || opts.burst == 0 || opts.window.is_zero() {
        return Err("--calls, --concurrency, --burst and --window-ms must be positive".into());
    }
    Ok(opts)
}

#[allow(dead_code)] // tests/grpc.rs includes this file and calls `run`.
#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    run(opts, &mut std::io::stdout()).await?;
    Ok(())
}
