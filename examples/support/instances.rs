//! Many processes, one quota: the parent's side (start N separate OS
//! processes, hand each its share of the work, gather their results) and
//! the child's side (run the full stack against the simulator's URL, its
//! rate limiter local or shared through Redis, and report).
//!
//! Shared by `examples/workload.rs` (`--instances N --backend local|redis`)
//! and `tests/instances.rs`, which include this file by path. Each
//! re-executes its own binary as the child (`std::env::current_exe()`), so
//! the children are the same code as the parent, started the way a
//! deployment starts replicas.
//!
//! Protocol: the parent passes the [`Plan`] (JSON) on the command line or
//! in the environment, as the caller's `command` closure decides, and
//! writes to the child's stdin the 32-byte `KeyIdentity` secret (so every
//! instance derives the same identity for one API key, as replicas sharing
//! a quota must; never on a command line) followed by its requests'
//! bodies, each a `u32` little-endian length and the bytes. The child
//! prints one line `INSTANCE-RESULT {json}` on stdout (anything else on
//! stdout, a test harness's chatter, is ignored).
//!
//! Timing: the parent picks a start instant (wall clock, one machine)
//! far enough ahead for every child to start; each child waits for it,
//! and reports when its last request ended, so process start-up is not
//! counted in the elapsed time.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_llm_resilience::BoxError;
use tower_llm_resilience::client::HyperClient;
use tower_llm_resilience::rate::{Limit, Limits, RateLimitLayer};
use tower_llm_resilience::redis::{FailurePolicy, Redis};
use tower_llm_resilience::request::{KeyIdentity, ReplayBody};
use tower_llm_resilience::response::ResponseBody;
use tower_llm_resilience::stack::Stack;

/// The marker of the child's result line.
pub const RESULT: &str = "INSTANCE-RESULT ";

/// Where each instance's rate-limit state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// Each process its own limiter at the full limit: together they
    /// overshoot the quota N times.
    Local,
    /// One limiter state shared through Redis.
    Redis,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Backend::Local),
            "redis" => Ok(Backend::Redis),
            other => Err(format!("unknown backend {other} (local or redis)")),
        }
    }
    /// The JSON row's name.
    pub fn client(self) -> &'static str {
        match self {
            Backend::Local => "ours-local",
            Backend::Redis => "ours-redis",
        }
    }
}

/// The rate limiter of one instance: the quota's limits, kept locally or
/// shared through `redis` — where, should Redis fail, each of the
/// `instances` processes falls back to its share of the limit.
pub fn rate_layer(
    backend: Backend,
    limits: Limits,
    redis: Option<&Redis>,
    instances: usize,
) -> Result<RateLimitLayer, BoxError> {
    let builder = RateLimitLayer::builder().limits(limits);
    match backend {
        Backend::Local => Ok(builder.build()?),
        Backend::Redis => {
            let redis = redis.ok_or("the redis backend needs a Redis URL")?;
            let instances = u32::try_from(instances.max(1)).unwrap_or(u32::MAX);
            Ok(builder
                .redis(redis.clone())
                .redis_failure(FailurePolicy::Local { instances })
                .build()?)
        }
    }
}

/// A limit of `per_minute` per provider minute (`60 / scale` seconds), a
/// full minute of burst, as the simulator's buckets are.
pub fn per_minute(per_minute: u64, scale: f64) -> Limit {
    Limit::new(
        per_minute,
        Duration::from_secs_f64(60.0 / scale),
        per_minute,
    )
    .expect("valid limit")
}

/// The limits of a quota of (requests, input, output) per provider minute.
pub fn limits(quota: (u64, u64, u64), scale: f64) -> Limits {
    Limits::unlimited()
        .requests(per_minute(quota.0, scale))
        .input_tokens(per_minute(quota.1, scale))
        .output_tokens(per_minute(quota.2, scale))
}

/// What one child does.
/// It travels on the child's stdin, never its command line or
/// environment (which `ps` and `/proc` show): it holds the API key and the
/// Redis URL, which may hold a password. Its `Debug` shows neither.
#[derive(Clone, Serialize, Deserialize)]
pub struct Plan {
    /// This instance, `0..count`.
    pub index: usize,
    pub count: usize,
    /// The simulator's base URL.
    pub url: String,
    pub backend: Backend,
    /// The Redis the shared backend uses, and the key prefix of this run.
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    /// The quota per provider minute (requests, input, output tokens) and
    /// how many real seconds a provider minute is (`60 / scale`).
    pub quota: (u64, u64, u64),
    pub scale: f64,
    /// Callers at once in this instance (its concurrency limit too).
    pub concurrency: usize,
    /// Paced offer instead: the whole workload (`total` requests, of
    /// which this instance has every `count`-th from `index`) spread
    /// evenly over this many seconds, no producer limit.
    pub window_s: Option<f64>,
    pub total: usize,
    /// When every instance starts (milliseconds since the Unix epoch), so
    /// the processes' start-up does not count.
    pub start_at_ms: u64,
    /// A request unanswered after this long counts as lost.
    pub give_up_s: f64,
    /// The API key the requests carry.
    pub api_key: String,
}

/// What one child reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildReport {
    pub index: usize,
    /// One per request answered in time: success, and latency in ms.
    pub outcomes: Vec<(bool, f64)>,
    /// Requests not answered within `give_up_s`.
    pub lost: usize,
    /// When its last request ended (ms since the Unix epoch).
    pub finished_at_ms: u64,
    /// Failed Redis commands, for the shared backend.
    pub redis_errors: u64,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every `count`-th of `bodies` from `index`: one instance's share.
pub fn share(bodies: &[Bytes], index: usize, count: usize) -> Vec<Bytes> {
    bodies.iter().skip(index).step_by(count).cloned().collect()
}

/// A random 32-byte secret for one run (std's SipHash keys, from the OS).
pub fn secret() -> [u8; 32] {
    use std::hash::BuildHasher;
    let mut out = [0u8; 32];
    let state = std::collections::hash_map::RandomState::new();
    for (i, part) in out.chunks_mut(8).enumerate() {
        part.copy_from_slice(&state.hash_one(i).to_le_bytes());
    }
    out
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("index", &self.index)
            .field("count", &self.count)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Starts one child as `command` says (its program and arguments), feeds
/// it `secret`, `plan` and `bodies` on stdin.
fn spawn(
    mut command: Command,
    secret: [u8; 32],
    plan: &Plan,
    bodies: Vec<Bytes>,
) -> Result<Child, String> {
    let plan = serde_json::to_vec(plan).map_err(|e| format!("plan: {e}"))?;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start an instance: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    // Written from a thread: a child reads its stdin while the others
    // start.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&secret);
        let _ = stdin.write_all(&(plan.len() as u32).to_le_bytes());
        let _ = stdin.write_all(&plan);
        for b in &bodies {
            let _ = stdin.write_all(&(b.len() as u32).to_le_bytes());
            let _ = stdin.write_all(b);
        }
    });
    Ok(child)
}

/// Runs one child per plan (`command` makes each one's command line) and
/// gathers their reports, in order. Blocking: call it from a blocking
/// thread.
pub fn run_children(
    plans: &[Plan],
    bodies: &[Bytes],
    secret: [u8; 32],
    command: impl Fn(&Plan) -> Command,
) -> Result<Vec<ChildReport>, String> {
    let mut children = Vec::with_capacity(plans.len());
    for plan in plans {
        let cmd = command(plan);
        children.push(spawn(
            cmd,
            secret,
            plan,
            share(bodies, plan.index, plan.count),
        )?);
    }
    let mut reports = Vec::with_capacity(children.len());
    let mut failure = None;
    for (i, mut child) in children.into_iter().enumerate() {
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        let status = child.wait().map_err(|e| format!("instance {i}: {e}"))?;
        let report = out
            .lines()
            // A test harness may print its own text before it on the line.
            .find_map(|l| l.find(RESULT).map(|at| &l[at + RESULT.len()..]))
            .and_then(|json| serde_json::from_str::<ChildReport>(json).ok());
        match report {
            Some(r) if status.success() => reports.push(r),
            _ => {
                failure.get_or_insert(format!("instance {i} failed ({status})"));
            }
        }
    }
    match failure {
        Some(why) => Err(why),
        None => Ok(reports),
    }
}

/// The child's side: reads the secret, its plan and its requests from
/// stdin.
pub fn read_input(mut input: impl Read) -> std::io::Result<([u8; 32], Plan, Vec<Bytes>)> {
    let mut secret = [0u8; 32];
    input.read_exact(&mut secret)?;
    let mut input = BufReader::new(input);
    let mut n = [0u8; 4];
    input.read_exact(&mut n)?;
    let mut plan = vec![0u8; u32::from_le_bytes(n) as usize];
    input.read_exact(&mut plan)?;
    let plan: Plan = serde_json::from_slice(&plan)?;
    let mut bodies = Vec::new();
    loop {
        if input.fill_buf()?.is_empty() {
            break;
        }
        let mut n = [0u8; 4];
        input.read_exact(&mut n)?;
        let mut body = vec![0u8; u32::from_le_bytes(n) as usize];
        input.read_exact(&mut body)?;
        bodies.push(Bytes::from(body));
    }
    Ok((secret, plan, bodies))
}

/// The child's side: installs the run's key identity, builds the full
/// stack, waits for the common start and sends its share as the plan says.
pub async fn child(
    plan: Plan,
    secret: [u8; 32],
    bodies: Vec<Bytes>,
) -> Result<ChildReport, BoxError> {
    KeyIdentity::with_secret(secret).install()?;
    let redis = match &plan.redis_url {
        // A timeout for a loaded machine (eight processes on two cores),
        // and the connection made before the start, as a service's health
        // check makes it: a decision that fails falls back to limit ÷ n
        // locally, and the shared bucket, still full when Redis answers
        // again, then admits its burst on top.
        Some(url) => {
            let redis = Redis::new(url)?
                .with_prefix(plan.redis_prefix.clone())
                .with_timeout(Duration::from_millis(500));
            redis.ping().await?;
            Some(redis)
        }
        None => None,
    };
    let rate = rate_layer(
        plan.backend,
        limits(plan.quota, plan.scale),
        redis.as_ref(),
        plan.count,
    )?;
    let client = HyperClient::new();
    let svc = Stack::builder()
        .rate_limit(rate)
        .concurrency(plan.concurrency)
        .service(client.clone());
    warm_up(&client, &plan.url, plan.concurrency).await;

    let wait = plan.start_at_ms.saturating_sub(unix_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let start = tokio::time::Instant::now();
    let (limit, gap) = match plan.window_s {
        Some(w) => (
            bodies.len().max(1),
            Duration::from_secs_f64(w / plan.total.max(1) as f64),
        ),
        None => (plan.concurrency, Duration::ZERO),
    };
    let gate = Arc::new(Semaphore::new(limit));
    let give_up = Duration::from_secs_f64(plan.give_up_s);
    let mut tasks = Vec::with_capacity(bodies.len());
    for (k, body) in bodies.into_iter().enumerate() {
        if !gap.is_zero() {
            // Its place in the whole workload's even spread.
            let global = k * plan.count + plan.index;
            tokio::time::sleep_until(start + gap * global as u32).await;
        }
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let req = request(&plan.url, &plan.api_key, body);
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let ok = tokio::time::timeout(give_up, async move {
                match svc.oneshot(req).await {
                    Ok(res) => finish(res).await,
                    Err(_) => false,
                }
            })
            .await;
            drop(permit);
            ok.ok().map(|ok| (ok, began.elapsed().as_secs_f64() * 1e3))
        }));
    }
    let mut report = ChildReport {
        index: plan.index,
        ..ChildReport::default()
    };
    for t in tasks {
        match t.await {
            Ok(Some(o)) => report.outcomes.push(o),
            _ => report.lost += 1,
        }
    }
    report.finished_at_ms = unix_ms();
    report.redis_errors = redis.map_or(0, |r| r.errors());
    Ok(report)
}

/// Prints the child's result line.
pub fn print_report(report: &ChildReport) {
    let json = serde_json::to_string(report).unwrap_or_default();
    println!("\n{RESULT}{json}");
}

fn request(url: &str, key: &str, body: Bytes) -> Request<ReplayBody> {
    Request::post(format!("{url}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(ReplayBody::new(body))
        .expect("valid request")
}

/// Reads a response to its end; success only for a 2xx whose body ended
/// cleanly.
async fn finish(mut res: Response<ResponseBody>) -> bool {
    let (tx, rx) = tokio::sync::oneshot::channel();
    res.body_mut().on_complete(move |c| {
        let _ = tx.send(c.outcome.is_complete());
    });
    let ok = res.status().is_success();
    let read = res.into_body().collect().await.is_ok();
    ok && read && rx.await.unwrap_or(false)
}

/// A Redis for a run: `REDIS_URL`, or a private `redis-server` on a free
/// port (killed when dropped).
#[derive(Debug)]
pub struct RunRedis {
    pub url: String,
    child: Option<Child>,
}

impl RunRedis {
    pub fn get() -> Result<RunRedis, String> {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Ok(RunRedis { url, child: None });
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e} (set REDIS_URL or install it)"))?;
        let run = RunRedis {
            url: format!("redis://127.0.0.1:{port}"),
            child: Some(child),
        };
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return Ok(run);
                }
            }
            if Instant::now() > give_up {
                return Err("redis-server did not answer within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RunRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Opens the process's connections before the common start, as a service
/// keeps a warm pool: `n` requests at once to a path the simulator does
/// not count (its 404). Otherwise eight processes opening fifty
/// connections each at the start would reach the provider tens of
/// milliseconds apart from their admissions — arrivals that no admission
/// rule sees, and 429s at a limit set exactly at the quota.
async fn warm_up(client: &HyperClient, url: &str, n: usize) {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let client = client.clone();
        let uri = format!("{url}/warm-up");
        calls.spawn(async move {
            let req = Request::get(uri).body(ReplayBody::empty()).ok()?;
            let res = client.oneshot(req).await.ok()?;
            res.into_body().collect().await.ok()
        });
    }
    while calls.join_next().await.is_some() {}
}
