//! The workload benchmark: how close each client comes to the physical
//! limit of a quota, side by side, on the embedded simulator.
//!
//! ```sh
//! cargo run --release --example workload -- --clients naive,tower,governor,ours \
//!     --requests 400 --json target/workload.json --plot target/workload.svg
//! cargo run --release --example workload -- --faults --requests 300
//! cargo run --release --example workload -- --instances 4 --backend local,redis \
//!     --requests 400 --oversubscription 8
//! ```
//!
//! Each client runs the same seeded mix (prompts of a few hundred to twenty
//! thousand tokens, varied `max_tokens`, a quarter streaming, some repeated
//! prompts) against a fresh simulator with the same time-scaled quota (a
//! provider minute lasts one second by default). The theoretical minimum is
//! `max over requests, input and output tokens of (total used − burst) ÷
//! rate`, from what the simulator admitted.
//!
//! `--instances N --backend local|redis` (or both, comma-separated) runs
//! our full stack in N separate OS processes — this binary re-executed
//! with `--child` — sharing one simulator quota, each taking every N-th
//! request (with `--concurrency` callers of its own, or its share of the
//! paced offer). The rows are `ours-local` (each process its own limiter
//! at the full limit: together they overshoot) and `ours-redis` (one
//! limiter state in Redis: `REDIS_URL`, or a private `redis-server`
//! started for the run). See `support/instances.rs`.

#[path = "support/instances.rs"]
mod instances;
#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_resilience::BoxError;
use tower_llm_resilience::client::HyperClient;
use tower_llm_resilience::concurrency::ConcurrencyLimitLayer;
use tower_llm_resilience::rate::{Limit, Limits, RateLimitLayer};
use tower_llm_resilience::request::{ReplayBody, RequestMeta};
use tower_llm_resilience::response::ResponseBody;
use tower_llm_resilience::retry::RetryLayer;
use tower_llm_resilience::sim::{self, Faults, SimConfig, SimHandle, Simulator};
use tower_llm_resilience::stack::Stack;

struct Args {
    clients: Vec<String>,
    requests: usize,
    concurrency: usize,
    oversubscription: Option<f64>,
    json: Option<PathBuf>,
    plot: Option<PathBuf>,
    faults: bool,
    seed: u64,
    scale: f64,
    instances: Option<usize>,
    backends: Vec<instances::Backend>,
    child: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        clients: ["naive", "tower", "governor", "ours", "ours-nocache"]
            .map(String::from)
            .to_vec(),
        requests: 400,
        concurrency: 64,
        oversubscription: None,
        json: None,
        plot: None,
        faults: false,
        seed: 1,
        scale: 60.0,
        instances: None,
        backends: vec![instances::Backend::Local],
        child: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => a.clients = value()?.split(',').map(str::to_owned).collect(),
            "--requests" => {
                a.requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?
            }
            "--concurrency" => {
                a.concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--oversubscription" => {
                let x: f64 = value()?
                    .parse()
                    .map_err(|e| format!("--oversubscription: {e}"))?;
                if x.is_nan() || x < 1.0 {
                    return Err("--oversubscription must be at least 1".into());
                }
                a.oversubscription = Some(x);
            }
            "--json" => a.json = Some(value()?.into()),
            "--plot" => a.plot = Some(value()?.into()),
            "--faults" => a.faults = true,
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--time-scale" => {
                a.scale = value()?.parse().map_err(|e| format!("--time-scale: {e}"))?
            }
            "--instances" => {
                let n: usize = value()?.parse().map_err(|e| format!("--instances: {e}"))?;
                if !(1..=256).contains(&n) {
                    return Err("--instances must be 1 to 256".into());
                }
                a.instances = Some(n);
            }
            "--backend" => {
                a.backends = value()?
                    .split(',')
                    .map(instances::Backend::parse)
                    .collect::<Result<_, _>>()?
            }
            // The child side of `--instances` (its plan comes on stdin).
            "--child" => a.child = true,
            "--help" | "-h" => {
                println!(
                    "workload [--clients naive,tower,governor,ours,ours-nocache] [--requests N] \
                     [--concurrency C] [--oversubscription X] [--json PATH] [--plot PATH] [--faults] [--seed S] [--time-scale X] \
                     [--instances N --backend local,redis]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.requests == 0 || a.concurrency == 0 || a.scale.is_nan() || a.scale < 1.0 {
        return Err(
            "--requests and --concurrency must be positive, --time-scale at least 1".into(),
        );
    }
    Ok(a)
}

/// The provider quota (per provider minute).
const QUOTA: sim::Limits = sim::Limits::new(60, 200_000, 20_000);

#[derive(Clone)]
struct Job {
    body: Bytes,
}

/// The seeded mix.
fn jobs(n: usize, seed: u64) -> Vec<Job> {
    let mut rng = support::Rng::new(seed);
    let mut out: Vec<Job> = Vec::with_capacity(n);
    for i in 0..n {
        // 15 % repeat an earlier prompt exactly (cacheable).
        if i > 10 && rng.unit() < 0.15 {
            let k = rng.range(0, i as u64 - 1) as usize;
            out.push(out[k].clone());
            continue;
        }
        // Log-uniform 300..20,000 tokens (4 bytes a token in the simulator).
        let tokens = (300f64 * (20_000f64 / 300.0).powf(rng.unit())) as usize;
        let prompt = "word ".repeat(tokens * 4 / 5);
        let max = rng.range(50, 1000);
        let stream = rng.unit() < 0.25;
        let body = format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":{max},"temperature":0,"stream":{stream},"messages":[{{"role":"user","content":"job {i}: {prompt}"}}]}}"#
        );
        out.push(Job {
            body: Bytes::from(body),
        });
    }
    out
}

fn request(url: &str, job: &Job) -> Request<ReplayBody> {
    Request::post(format!("{url}/v1/messages"))
        .header("x-api-key", "sk-ant-workload")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(ReplayBody::new(job.body.clone()))
        .expect("valid request")
}

#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    ok: bool,
    latency: Duration,
}

/// Reads a response to its end; success only for a 2xx whose body ended
/// cleanly (a truncated or errored stream is a failure).
async fn finish(res: Response<ResponseBody>) -> bool {
    let mut res = res;
    let (tx, rx) = tokio::sync::oneshot::channel();
    res.body_mut().on_complete(move |c| {
        let _ = tx.send(c.outcome.is_complete());
    });
    let ok = res.status().is_success();
    let read = res.into_body().collect().await.is_ok();
    ok && read && rx.await.unwrap_or(false)
}

/// tower's retry for the peer clients: 3 attempts, exponential backoff
/// (0.5 s doubling, ±25 % jitter), on 429, 5xx and transport errors.
#[derive(Clone)]
struct PeerRetry {
    left: u32,
    n: u32,
}

impl tower::retry::Policy<Request<ReplayBody>, Response<ResponseBody>, BoxError> for PeerRetry {
    type Future = tokio::time::Sleep;
    fn retry(
        &mut self,
        _req: &mut Request<ReplayBody>,
        result: &mut Result<Response<ResponseBody>, BoxError>,
    ) -> Option<Self::Future> {
        let retryable = match result {
            Ok(r) => r.status().as_u16() == 429 || r.status().is_server_error(),
            Err(_) => true,
        };
        if !retryable || self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.n += 1;
        let jitter = 0.75 + 0.5 * ((self.n as f64 * 0.618_033_988_75).fract());
        Some(tokio::time::sleep(Duration::from_secs_f64(
            (0.5 * 2f64.powi(self.n as i32 - 1)).min(8.0) * jitter,
        )))
    }
    fn clone_request(&mut self, req: &Request<ReplayBody>) -> Option<Request<ReplayBody>> {
        let mut c = Request::new(req.body().replay());
        *c.method_mut() = req.method().clone();
        *c.uri_mut() = req.uri().clone();
        *c.headers_mut() = req.headers().clone();
        Some(c)
    }
}

fn per_second(per_minute: u64, scale: f64) -> Limit {
    Limit::new(
        per_minute,
        Duration::from_secs_f64(60.0 / scale),
        per_minute,
    )
    .expect("valid limit")
}

/// How requests are offered: `concurrency` at a time, or all of them
/// spread evenly over `window` (the workload's minimum time ÷ the
/// oversubscription factor) with no producer limit.
#[derive(Clone, Copy)]
enum Offer {
    Concurrency(usize),
    Paced { window: Duration },
}

/// Runs every job through `send` as `offer` says.
async fn drive<F, Fut>(
    jobs: &[Job],
    offer: Offer,
    progress: Arc<AtomicUsize>,
    send: F,
) -> Vec<Outcome>
where
    F: Fn(usize, Job) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let (limit, gap) = match offer {
        Offer::Concurrency(c) => (c, Duration::ZERO),
        Offer::Paced { window } => (jobs.len().max(1), window / jobs.len().max(1) as u32),
    };
    let gate = Arc::new(Semaphore::new(limit));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        if !gap.is_zero() {
            tokio::time::sleep_until(start + gap * i as u32).await;
        }
        let permit = Arc::clone(&gate).acquire_owned().await.expect("open");
        let fut = send(i, job.clone());
        let progress = Arc::clone(&progress);
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            // A request still unanswered after 5 minutes counts as lost.
            let ok = tokio::time::timeout(Duration::from_secs(300), fut).await;
            drop(permit);
            progress.fetch_add(1, Ordering::Relaxed);
            ok.map(|ok| Outcome {
                ok,
                latency: start.elapsed(),
            })
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(Ok(o)) = t.await {
            out.push(o);
        }
    }
    out
}

/// Drives the workload through a tower service (the peers' stacks and ours).
async fn through<S>(
    svc: S,
    jobs: &[Job],
    offer: Offer,
    progress: &Arc<AtomicUsize>,
    url: &str,
) -> Vec<Outcome>
where
    S: tower::Service<Request<ReplayBody>, Response = Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Error: Send,
    S::Future: Send,
{
    let url = url.to_owned();
    drive(jobs, offer, Arc::clone(progress), move |_, job| {
        let svc = svc.clone();
        let req = request(&url, &job);
        async move {
            match svc.oneshot(req).await {
                Ok(res) => finish(res).await,
                Err(_) => false,
            }
        }
    })
    .await
}

struct Report {
    client: String,
    requests: usize,
    succeeded: usize,
    failed: usize,
    lost: usize,
    upstream_attempts: u64,
    status_429: u64,
    duplicates: u64,
    elapsed: Duration,
    lower_bound: f64,
    p50: Duration,
    p99: Duration,
    utilization: [f64; 3],
    windows: Vec<sim::WindowSample>,
}

fn sim_config(a: &Args) -> SimConfig {
    let mut config = SimConfig::new()
        .with_limits(QUOTA)
        .with_time_scale(a.scale)
        .with_output_tokens(20, 800)
        .with_seed(a.seed);
    if a.faults {
        config = config.with_faults(
            Faults::none()
                .with_rate_limited(0.30)
                .with_overloaded(0.025)
                .with_service_unavailable(0.025)
                .with_drop_connection(0.02)
                .with_truncate_stream(0.02),
        );
    }
    config
}

/// How the workload is offered: paced over its minimum ÷ X, or at the
/// configured concurrency.
fn offer(a: &Args, bodies: &[Bytes]) -> Offer {
    match a.oversubscription {
        // Requests and input tokens are known before sending: the window
        // the whole workload is offered in is their minimum ÷ X.
        Some(x) => Offer::Paced {
            window: Duration::from_secs_f64(
                support::lower_bound(QUOTA, a.scale, bodies, (0, 0, 0)) / x,
            ),
        },
        None => Offer::Concurrency(a.concurrency),
    }
}

async fn run(client: &str, a: &Args, jobs: &[Job]) -> Result<Report, BoxError> {
    let sim: SimHandle = Simulator::start(sim_config(a)).await?;
    let url = sim.url();
    let progress = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let progress = Arc::clone(&progress);
        let (name, total) = (client.to_owned(), jobs.len());
        tokio::spawn(async move {
            loop {
                let done = progress.load(Ordering::Relaxed);
                let filled = done * 30 / total.max(1);
                eprint!(
                    "\r{name:>12} [{}{}] {done}/{total}",
                    "#".repeat(filled),
                    " ".repeat(30 - filled)
                );
                let _ = std::io::stderr().flush();
                if done >= total {
                    eprintln!();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let scale = a.scale;
    let limits = Limits::unlimited()
        .requests(per_second(QUOTA.requests_per_minute, scale))
        .input_tokens(per_second(QUOTA.input_tokens_per_minute, scale))
        .output_tokens(per_second(QUOTA.output_tokens_per_minute, scale));
    let bodies: Vec<Bytes> = jobs.iter().map(|j| j.body.clone()).collect();
    let offer = offer(a, &bodies);
    let start = Instant::now();
    let outcomes = match client {
        "naive" => {
            let http = HyperClient::new();
            let url = url.clone();
            drive(jobs, offer, Arc::clone(&progress), move |i, job| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let mut rng = support::Rng::new(i as u64);
                    let job = support::Job {
                        body: job.body,
                        max_tokens: 0,
                    };
                    support::naive(http, &url, "sk-ant-workload", &job, &mut rng)
                        .await
                        .ok
                }
            })
            .await
        }
        "tower" => {
            let rate = tower::limit::RateLimitLayer::new(
                QUOTA.requests_per_minute,
                Duration::from_secs_f64(60.0 / scale),
            );
            let svc = ServiceBuilder::new()
                .retry(PeerRetry { left: 2, n: 0 })
                .buffer(4096)
                .layer(rate)
                .concurrency_limit(a.concurrency)
                .service(HyperClient::new());
            through(svc, jobs, offer, &progress, &url).await
        }
        "governor" => {
            use governor::{Quota, RateLimiter};
            let q = |per_minute: u64| {
                let n = NonZeroU32::new(per_minute as u32).expect("positive");
                Quota::with_period(Duration::from_secs_f64(60.0 / scale / per_minute as f64))
                    .expect("period")
                    .allow_burst(n)
            };
            let limiters = Arc::new((
                RateLimiter::direct(q(QUOTA.requests_per_minute)),
                RateLimiter::direct(q(QUOTA.input_tokens_per_minute)),
                RateLimiter::direct(q(QUOTA.output_tokens_per_minute)),
            ));
            let svc = ServiceBuilder::new()
                .retry(PeerRetry { left: 2, n: 0 })
                .service(HyperClient::new());
            let url = url.clone();
            drive(jobs, offer, Arc::clone(&progress), move |_, job| {
                let (svc, limiters) = (svc.clone(), Arc::clone(&limiters));
                let req = request(&url, &job);
                async move {
                    let meta =
                        RequestMeta::parse("/v1/messages", req.headers(), req.body().as_bytes());
                    let n = |v: u64| {
                        NonZeroU32::new(v.clamp(1, u32::MAX as u64) as u32).expect("positive")
                    };
                    limiters.0.until_ready().await;
                    if limiters
                        .1
                        .until_n_ready(n(meta.input_tokens()))
                        .await
                        .is_err()
                        || limiters
                            .2
                            .until_n_ready(n(meta.max_tokens().unwrap_or(1)))
                            .await
                            .is_err()
                    {
                        return false;
                    }
                    match svc.oneshot(req).await {
                        Ok(res) => finish(res).await,
                        Err(_) => false,
                    }
                }
            })
            .await
        }
        "ours" => {
            let svc = Stack::builder()
                .rate_limit(RateLimitLayer::builder().limits(limits).build()?)
                .concurrency(a.concurrency)
                .service(HyperClient::new());
            through(svc, jobs, offer, &progress, &url).await
        }
        "ours-nocache" => {
            let svc = ServiceBuilder::new()
                .layer(RetryLayer::new())
                .layer(RateLimitLayer::builder().limits(limits).build()?)
                .layer(ConcurrencyLimitLayer::new(a.concurrency))
                .service(HyperClient::new());
            through(svc, jobs, offer, &progress, &url).await
        }
        other => return Err(format!("unknown client {other}").into()),
    };
    let elapsed = start.elapsed();
    let _ = ticker.await;
    let report = report(client, a, &bodies, &outcomes, elapsed, &sim.counters());
    sim.shutdown().await;
    Ok(report)
}

/// The row of `client` from its outcomes and the simulator's counters.
fn report(
    client: &str,
    a: &Args,
    bodies: &[Bytes],
    outcomes: &[Outcome],
    elapsed: Duration,
    c: &sim::CountersSnapshot,
) -> Report {
    let scale = a.scale;
    let (requests, input, output) = c.admitted_totals();
    let lower_bound = support::lower_bound(QUOTA, scale, bodies, (requests, input, output));
    let rate = |per_minute: u64| per_minute as f64 * scale / 60.0;
    let secs = elapsed.as_secs_f64();
    let util =
        |used: u64, per_minute: u64| used as f64 / (rate(per_minute) * secs + per_minute as f64);
    let mut lat: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    lat.sort_unstable();
    let succeeded = outcomes.iter().filter(|o| o.ok).count();
    Report {
        client: client.to_owned(),
        requests: bodies.len(),
        succeeded,
        failed: outcomes.len() - succeeded,
        lost: bodies.len() - outcomes.len(),
        upstream_attempts: c.received,
        status_429: c.rate_limited(),
        // Requests the provider answered 200 more than once: its 200s,
        // less one per success, less the streams it cut or errored itself
        // (answered once, then failed by the fault — not a second send).
        duplicates: c
            .ok()
            .saturating_sub(succeeded as u64)
            .saturating_sub(c.truncated_streams + c.mid_stream_errors),
        elapsed,
        lower_bound,
        p50: support::percentile(&lat, 0.5),
        p99: support::percentile(&lat, 0.99),
        utilization: [
            util(requests, QUOTA.requests_per_minute),
            util(input, QUOTA.input_tokens_per_minute),
            util(output, QUOTA.output_tokens_per_minute),
        ],
        windows: c.windows.clone(),
    }
}

/// `--instances N`: one simulator, N processes of our full stack sharing
/// its quota, the rate limiter of each as `backend` says.
async fn run_instances(
    backend: instances::Backend,
    n: usize,
    a: &Args,
    jobs: &[Job],
) -> Result<Report, BoxError> {
    let redis = match backend {
        instances::Backend::Redis => Some(instances::RunRedis::get()?),
        instances::Backend::Local => None,
    };
    // The children would each fail the same way: say it once.
    if let Some(r) = &redis {
        let handle = tower_llm_resilience::redis::Redis::new(&r.url)?;
        let quota = (
            QUOTA.requests_per_minute,
            QUOTA.input_tokens_per_minute,
            QUOTA.output_tokens_per_minute,
        );
        instances::rate_layer(backend, instances::limits(quota, a.scale), Some(&handle), n)?;
    }
    let sim: SimHandle = Simulator::start(sim_config(a)).await?;
    let bodies: Vec<Bytes> = jobs.iter().map(|j| j.body.clone()).collect();
    let window_s = match offer(a, &bodies) {
        Offer::Paced { window } => Some(window.as_secs_f64()),
        Offer::Concurrency(_) => None,
    };
    // Far enough ahead for every process to start and build its stack.
    let start_at_ms = instances::unix_ms() + 500 + 50 * n as u64;
    let plans: Vec<instances::Plan> = (0..n)
        .map(|index| instances::Plan {
            index,
            count: n,
            url: sim.url(),
            backend,
            redis_url: redis.as_ref().map(|r| r.url.clone()),
            redis_prefix: format!("llm:workload:{}:{}:", std::process::id(), start_at_ms),
            quota: (
                QUOTA.requests_per_minute,
                QUOTA.input_tokens_per_minute,
                QUOTA.output_tokens_per_minute,
            ),
            scale: a.scale,
            concurrency: a.concurrency,
            window_s,
            total: bodies.len(),
            start_at_ms,
            give_up_s: 300.0,
            api_key: "sk-ant-workload".into(),
        })
        .collect();
    eprintln!("{:>12} {n} processes…", backend.client());
    let exe = std::env::current_exe()?;
    let children = {
        let bodies = bodies.clone();
        tokio::task::spawn_blocking(move || {
            instances::run_children(&plans, &bodies, instances::secret(), |_plan| {
                let mut cmd = std::process::Command::new(&exe);
                cmd.arg("--child");
                cmd
            })
        })
        .await??
    };
    let finished = children
        .iter()
        .map(|c| c.finished_at_ms)
        .max()
        .unwrap_or(start_at_ms);
    let elapsed = Duration::from_millis(finished.saturating_sub(start_at_ms));
    let outcomes: Vec<Outcome> = children
        .iter()
        .flat_map(|c| &c.outcomes)
        .map(|&(ok, ms)| Outcome {
            ok,
            latency: Duration::from_secs_f64(ms / 1e3),
        })
        .collect();
    let redis_errors: u64 = children.iter().map(|c| c.redis_errors).sum();
    if redis_errors > 0 {
        eprintln!(
            "{:>12} {redis_errors} Redis commands failed",
            backend.client()
        );
    }
    let report = report(
        backend.client(),
        a,
        &bodies,
        &outcomes,
        elapsed,
        &sim.counters(),
    );
    sim.shutdown().await;
    Ok(report)
}

/// The child side of `--instances`: the plan from the command line, the
/// secret and requests from stdin, the result line on stdout.
async fn child() -> Result<(), BoxError> {
    let (secret, plan, bodies) =
        tokio::task::spawn_blocking(|| instances::read_input(std::io::stdin().lock())).await??;
    let report = instances::child(plan, secret, bodies).await?;
    instances::print_report(&report);
    Ok(())
}

fn json(reports: &[Report]) -> String {
    let rows: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "client": r.client,
                "requests": r.requests,
                "succeeded": r.succeeded,
                "failed": r.failed,
                "lost": r.lost,
                "upstream_attempts": r.upstream_attempts,
                "status_429": r.status_429,
                "duplicates": r.duplicates,
                "elapsed_s": r.elapsed.as_secs_f64(),
                "lower_bound_s": r.lower_bound,
                "elapsed_over_bound": r.elapsed.as_secs_f64() / r.lower_bound,
                "p50_ms": r.p50.as_secs_f64() * 1e3,
                "p99_ms": r.p99.as_secs_f64() * 1e3,
                "utilization_requests": r.utilization[0],
                "utilization_input_tokens": r.utilization[1],
                "utilization_output_tokens": r.utilization[2],
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}

/// Admitted input tokens per second over time, one line per client,
/// against the quota.
fn svg(reports: &[Report], scale: f64) -> String {
    let (w, h, pad) = (800.0, 400.0, 50.0);
    let quota = QUOTA.input_tokens_per_minute as f64 * scale / 60.0;
    let t_max = reports
        .iter()
        .map(|r| r.elapsed.as_secs_f64())
        .fold(1.0, f64::max);
    let series: Vec<Vec<(f64, f64)>> = reports
        .iter()
        .map(|r| {
            r.windows
                .iter()
                .map(|s| {
                    let len = 60.0 / scale;
                    (
                        s.start.as_secs_f64() + len / 2.0,
                        s.input_tokens as f64 / len,
                    )
                })
                .collect()
        })
        .collect();
    let y_max = series
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(quota * 1.2, f64::max);
    let x = |t: f64| pad + (w - 2.0 * pad) * t / t_max;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v / y_max;
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20">admitted input tokens per second vs the quota ({quota:.0}/s)</text>
<line x1="{pad}" y1="{yq}" x2="{x2}" y2="{yq}" stroke="black" stroke-dasharray="6,4"/>
<text x="{x2}" y="{yq2}" text-anchor="end">quota</text>
<line x1="{pad}" y1="{y0}" x2="{x2}" y2="{y0}" stroke="#888"/>
<text x="{x2}" y="{yl}" text-anchor="end">{t_max:.0} s</text>
"##,
        yq = y(quota),
        yq2 = y(quota) - 4.0,
        x2 = w - pad,
        y0 = y(0.0),
        yl = y(0.0) + 16.0,
    );
    for (i, (r, pts)) in reports.iter().zip(&series).enumerate() {
        let color = colors[i % colors.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        out.push_str(&format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>
<text x="{}" y="{}" fill="{color}">{}</text>
"#,
            path.join(" "),
            pad + 10.0 + 130.0 * i as f64,
            h - 15.0,
            r.client
        ));
    }
    out.push_str("</svg>\n");
    out
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let a = args()?;
    if a.child {
        return child().await;
    }
    let jobs = jobs(a.requests, a.seed);
    eprintln!(
        "quota {} RPM / {} ITPM / {} OTPM per provider minute; one provider minute = {:.2} s; {} requests, {} at a time{}",
        QUOTA.requests_per_minute,
        QUOTA.input_tokens_per_minute,
        QUOTA.output_tokens_per_minute,
        60.0 / a.scale,
        a.requests,
        a.concurrency,
        if a.faults { "; faults on" } else { "" }
    );
    if let Some(x) = a.oversubscription {
        eprintln!(
            "offered at {x}× the quota (evenly over the minimum time ÷ {x}, no producer limit)"
        );
    }
    let mut reports = Vec::new();
    match a.instances {
        Some(n) => {
            eprintln!(
                "{n} processes share the quota, each with {} callers or its share of the offer",
                a.concurrency
            );
            for &backend in &a.backends {
                reports.push(run_instances(backend, n, &a, &jobs).await?);
            }
        }
        None => {
            for client in &a.clients {
                reports.push(run(client, &a, &jobs).await?);
            }
        }
    }
    println!(
        "{:<13} {:>8} {:>9} {:>6} {:>5} {:>9} {:>6} {:>5} {:>9} {:>9} {:>7} {:>8} {:>8}  util req/in/out",
        "client",
        "requests",
        "succeeded",
        "failed",
        "lost",
        "upstream",
        "429s",
        "dups",
        "elapsed",
        "minimum",
        "ratio",
        "p50",
        "p99"
    );
    for r in &reports {
        println!(
            "{:<13} {:>8} {:>9} {:>6} {:>5} {:>9} {:>6} {:>5} {:>8.2}s {:>8.2}s {:>7.3} {:>6.0}ms {:>6.0}ms  {:.2}/{:.2}/{:.2}",
            r.client,
            r.requests,
            r.succeeded,
            r.failed,
            r.lost,
            r.upstream_attempts,
            r.status_429,
            r.duplicates,
            r.elapsed.as_secs_f64(),
            r.lower_bound,
            r.elapsed.as_secs_f64() / r.lower_bound,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.utilization[0],
            r.utilization[1],
            r.utilization[2],
        );
    }
    if let Some(path) = &a.json {
        std::fs::write(path, json(&reports))?;
    }
    if let Some(path) = &a.plot {
        std::fs::write(path, svg(&reports, a.scale))?;
    }
    Ok(())
}
