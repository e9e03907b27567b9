//! The main job: what a burst of LLM calls does to a rate-limited key, with
//! and without this crate.
//!
//! Starts the embedded simulator with Anthropic's Tier 1 limits (50 RPM,
//! 20k ITPM, 8k OTPM) on a time scale where a provider minute lasts one
//! second, and sends the same 300 requests, 32 at a time, twice:
//!
//! - `naive`: the way the official SDKs do — no admission control, 2
//!   retries with backoff, `retry-after` honoured;
//! - `ours`: through `RetryLayer` + `RateLimitLayer` configured with the
//!   quota.
//!
//! Run with:
//!
//! ```sh
//! cargo run --example quickstart
//! cargo run --example quickstart -- --requests 100 --concurrency 16 --time-scale 120
//! ```
//!
//! While it runs it shows progress — a bar when stdout is a terminal,
//! a plain line every half second otherwise — and it ends with the
//! comparison table.

#[path = "support/mod.rs"]
mod support;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_resilience::client::HyperClient;
use tower_llm_resilience::rate::{Limit, Limits, RateLimitLayer};
use tower_llm_resilience::retry::RetryLayer;
use tower_llm_resilience::sim::{self, SimConfig, Simulator};

const QUOTA: sim::Limits = sim::Limits::TIER_1;

/// The example's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Requests each client sends.
    pub(crate) requests: usize,
    /// Requests in flight at once.
    pub(crate) concurrency: usize,
    /// How many times faster than real time the provider's clock runs.
    pub(crate) scale: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            requests: 300,
            concurrency: 32,
            scale: 60.0,
        }
    }
}

/// How progress is shown while a client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// A bar redrawn in place (stdout is a terminal).
    Bar,
    /// A line every half second (a pipe, a file, CI logs).
    Lines,
}

impl Progress {
    fn show(
        self,
        out: &mut impl Write,
        client: &str,
        done: usize,
        total: usize,
        elapsed: Duration,
    ) -> std::io::Result<()> {
        let secs = elapsed.as_secs_f64();
        match self {
            Progress::Bar => {
                const WIDTH: usize = 30;
                let filled = done * WIDTH / total.max(1);
                write!(
                    out,
                    "\r{client:<6} [{}{}] {done:>5}/{total} {secs:>6.1} s",
                    "#".repeat(filled),
                    "-".repeat(WIDTH - filled)
                )?;
            }
            Progress::Lines => {
                writeln!(out, "{client}: {done}/{total} finished, {secs:.1} s")?;
            }
        }
        out.flush()
    }

    fn finish(
        self,
        out: &mut impl Write,
        client: &str,
        total: usize,
        elapsed: Duration,
    ) -> std::io::Result<()> {
        self.show(out, client, total, total, elapsed)?;
        if self == Progress::Bar {
            writeln!(out)?;
        }
        Ok(())
    }
}

/// What one client did.
#[derive(Debug)]
pub(crate) struct Row {
    /// Requests that succeeded.
    pub(crate) ok: usize,
    /// Requests the simulator received (retries included).
    pub(crate) attempts: u64,
    /// HTTP 429s the simulator sent.
    pub(crate) status_429: u64,
    pub(crate) elapsed: Duration,
    /// The theoretical minimum time of the quota, in seconds.
    pub(crate) bound: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

async fn run(
    client: &str,
    jobs: &[support::Job],
    opts: Options,
    progress: Progress,
    out: &mut impl Write,
) -> Result<Row, Box<dyn std::error::Error>> {
    let scale = opts.scale;
    let sim = Simulator::start(
        SimConfig::new()
            .with_limits(QUOTA)
            .with_time_scale(scale)
            .with_output_tokens(20, 200)
            .with_seed(7),
    )
    .await?;
    let url = sim.url();
    let per_second = |per_minute: u64| {
        Limit::new(
            per_minute,
            Duration::from_secs_f64(60.0 / scale),
            per_minute,
        )
        .expect("valid")
    };
    let ours = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(RateLimitLayer::new(
            Limits::unlimited()
                .requests(per_second(QUOTA.requests_per_minute))
                .input_tokens(per_second(QUOTA.input_tokens_per_minute))
                .output_tokens(per_second(QUOTA.output_tokens_per_minute)),
        ))
        .service(HyperClient::new());
    let naive = client == "naive";
    let gate = Arc::new(Semaphore::new(opts.concurrency));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, job) in jobs.iter().cloned().enumerate() {
        let (url, gate, ours) = (url.clone(), Arc::clone(&gate), ours.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("open");
            if naive {
                let mut rng = support::Rng::new(i as u64);
                support::naive(HyperClient::new(), &url, "sk-quickstart", &job, &mut rng).await
            } else {
                let t = Instant::now();
                let res = ours
                    .oneshot(support::request(&url, "sk-quickstart", &job))
                    .await;
                let ok = match res {
                    Ok(res) => res.status().is_success() && res.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                support::Outcome {
                    ok,
                    latency: t.elapsed(),
                    ..Default::default()
                }
            }
        });
    }
    let mut outcomes = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.tick().await;
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(outcome) => outcomes.push(outcome?),
                None => break,
            },
            _ = tick.tick() => {
                progress.show(out, client, outcomes.len(), jobs.len(), start.elapsed())?;
            }
        }
    }
    let elapsed = start.elapsed();
    progress.finish(out, client, jobs.len(), elapsed)?;
    let c = sim.counters();
    let bodies: Vec<_> = jobs.iter().map(|j| j.body.clone()).collect();
    let bound = support::lower_bound(QUOTA, scale, &bodies, c.admitted_totals());
    let mut lat: Vec<_> = outcomes.iter().map(|o| o.latency).collect();
    lat.sort_unstable();
    sim.shutdown().await;
    Ok(Row {
        ok: outcomes.iter().filter(|o| o.ok).count(),
        attempts: c.received,
        status_429: c.rate_limited(),
        elapsed,
        bound,
        p50: support::percentile(&lat, 0.5),
        p99: support::percentile(&lat, 0.99),
    })
}

/// Runs both clients and prints the comparison table; the rows.
pub(crate) async fn run_all(
    opts: Options,
    progress: Progress,
    out: &mut impl Write,
) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let requests = opts.requests;
    let jobs = support::jobs(requests, 42, (100, 600), (100, 300));
    writeln!(
        out,
        "Simulated provider: {} RPM, {} ITPM, {} OTPM (Anthropic Tier 1); one provider minute = {:.1} s.",
        QUOTA.requests_per_minute,
        QUOTA.input_tokens_per_minute,
        QUOTA.output_tokens_per_minute,
        60.0 / opts.scale
    )?;
    writeln!(
        out,
        "Sending the same {requests} requests, {} at a time, with each client…\n",
        opts.concurrency
    )?;
    let mut rows = Vec::new();
    for client in ["naive", "ours"] {
        rows.push(run(client, &jobs, opts, progress, out).await?);
    }
    writeln!(out)?;
    writeln!(
        out,
        "client  requests  succeeded  failed  upstream  429s  elapsed  minimum  ratio     p50     p99"
    )?;
    for (client, r) in ["naive", "ours"].into_iter().zip(&rows) {
        writeln!(
            out,
            "{client:<7} {:>8}  {:>9}  {:>6}  {:>8}  {:>4}  {:>6.1}s  {:>6.1}s  {:>5.2}  {:>5.0}ms {:>5.0}ms",
            requests,
            r.ok,
            requests - r.ok,
            r.attempts,
            r.status_429,
            r.elapsed.as_secs_f64(),
            r.bound,
            r.elapsed.as_secs_f64() / r.bound,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
        )?;
    }
    let (naive, ours) = (&rows[0], &rows[1]);
    writeln!(out)?;
    writeln!(
        out,
        "naive: {} of {requests} requests failed after {} HTTP 429s.",
        requests - naive.ok,
        naive.status_429
    )?;
    writeln!(
        out,
        "ours:  {} of {requests} succeeded with {} 429s, in {:.2}× the theoretical minimum of the quota.",
        ours.ok,
        ours.status_429,
        ours.elapsed.as_secs_f64() / ours.bound
    )?;
    Ok(rows)
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--requests" => opts.requests = value.parse().map_err(|e| bad(&e))?,
            "--concurrency" => opts.concurrency = value.parse().map_err(|e| bad(&e))?,
            "--time-scale" => opts.scale = value.parse().map_err(|e| bad(&e))?,
            other => {
                return Err(format!(
                    "unknown option {other} (--requests N, --concurrency N, --time-scale F)"
                ));
            }
        }
    }
    if opts.requests == 0 || opts.concurrency == 0 || !(opts.scale.is_finite() && opts.scale > 0.0)
    {
        return Err("--requests, --concurrency and --time-scale must be positive".into());
    }
    Ok(opts)
}

#[allow(dead_code)] // tests/examples.rs includes this file and calls `run_all`.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let progress = if std::io::stdout().is_terminal() {
        Progress::Bar
    } else {
        Progress::Lines
    };
    run_all(opts, progress, &mut std::io::stdout()).await?;
    Ok(())
}
