//! One admission through the Redis store, beside the same script called
//! directly with the redis crate.
//! `cargo bench --bench redis --features full` (starts its own
//! `redis-server` on a free port; skipped, with a line saying so, without
//! one).
//!
//! - `redis/admit_roundtrip`: a request through a `RateLimitLayer` built
//!   with `.redis(…)` in front of a service that answers at once: the
//!   admission script's round trip on loopback, and everything of ours
//!   around it (the group, the queue's bookkeeping, the hold, the body
//!   observer; the empty answer settles with nothing to correct, so no
//!   second script runs).
//! - `redis/raw_evalsha`: the same script (the crate's Lua files), with
//!   the same keys and arguments, by `EVALSHA` on a redis-rs
//!   `ConnectionManager`: the floor.
//!
//! Both are driven by `block_on` of one current-thread runtime, so the
//! runtime's cost is in both. `REDIS_BENCH_AB=1` runs them interleaved
//! instead (31 rounds of 2,000 each) and prints both medians and the
//! median ratio: on a shared machine, the fairer comparison.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use http::Request;
use tower::{Layer, ServiceExt};
use tower_llm_resilience::rate::{Limits, RateLimitBuilder};
use tower_llm_resilience::redis::{FailurePolicy, Redis};
use tower_llm_resilience::request::ReplayBody;

const BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Summarise the token bucket algorithm in one line."}]}"#;

/// A private `redis-server`, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Option<Server> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server { child, port };
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The server, the runtime, and one admission of each kind.
struct Fixture {
    _server: Server,
    rt: tokio::runtime::Runtime,
    layer: tower_llm_resilience::rate::RateLimitLayer,
    svc: tower_llm_resilience::rate::RateLimit<support::Noop>,
    script: redis::Script,
    limit: tower_llm_resilience::rate::Limit,
    conn: redis::aio::ConnectionManager,
}

fn request() -> Request<ReplayBody> {
    Request::post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", "sk-bench")
        .body(ReplayBody::from(BODY))
        .expect("request")
}

impl Fixture {
    fn new() -> Option<Fixture> {
        let Some(server) = start() else {
            eprintln!("redis bench: skipped: cannot start redis-server");
            return None;
        };
        let url = format!("redis://127.0.0.1:{}", server.port);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let layer = rt.block_on(async {
            let redis = Redis::new(&url)
                .expect("url")
                .with_prefix("bench:")
                .with_timeout(Duration::from_secs(1));
            RateLimitBuilder::default()
                .limits(Limits::unlimited().requests(support::huge(1_000_000_000)))
                .redis(redis)
                .redis_failure(FailurePolicy::FailClosed)
                .build()
                .expect("config")
        });
        let svc = layer.layer(support::Noop);
        let script = redis::Script::new(concat!(
            include_str!("../src/redis/scripts/prelude.lua"),
            include_str!("../src/redis/scripts/admit.lua")
        ));
        let conn = rt.block_on(async {
            redis::Client::open(url.as_str())
                .expect("url")
                .get_connection_manager()
                .await
                .expect("connection")
        });
        let mut f = Fixture {
            _server: server,
            rt,
            layer,
            svc,
            script,
            limit: support::huge(1_000_000_000),
            conn,
        };
        f.ours();
        f.raw();
        Some(f)
    }

    /// One admission through the layer.
    fn ours(&self) {
        self.rt
            .block_on(self.svc.clone().oneshot(request()))
            .expect("admitted");
    }

    /// The same script, keys and arguments, straight through redis-rs.
    fn raw(&mut self) {
        let (script, limit, conn) = (&self.script, self.limit, &mut self.conn);
        self.rt.block_on(async {
            let reply: Vec<i64> = script
                .key("bench:{rl:raw}")
                .arg(3)
                .arg(limit.interval_nanos())
                .arg(limit.burst())
                .arg(1)
                .arg(0)
                .arg(0)
                .arg(0)
                .arg(0)
                .arg(0)
                .arg(0)
                .invoke_async(conn)
                .await
                .expect("script");
            assert_eq!(reply[0], 0);
        });
    }
}

/// `REDIS_BENCH_AB=1`: interleaved rounds of each, the medians and the
/// median of the per-round ratios (ours ÷ raw).
fn ab() {
    let Some(mut f) = Fixture::new() else { return };
    const ROUNDS: usize = 31;
    const N: u32 = 2_000;
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    for round in 0..ROUNDS {
        let mut pair = [0.0; 2];
        for k in 0..2 {
            let i = (round + k) % 2;
            pair[i] = if i == 0 {
                support::time(N, || f.ours())
            } else {
                support::time(N, || f.raw())
            };
        }
        ours.push(pair[0]);
        raw.push(pair[1]);
    }
    let mut ratios: Vec<f64> = ours.iter().zip(&raw).map(|(o, r)| o / r).collect();
    println!(
        "redis/admit_roundtrip {:.1} µs, redis/raw_evalsha {:.1} µs, ratio (median of {ROUNDS} interleaved rounds) {:.3}",
        support::median(&mut ours) / 1e3,
        support::median(&mut raw) / 1e3,
        support::median(&mut ratios)
    );
    let stats = f.layer.remote_stats().expect("redis");
    assert_eq!(stats.failed_decisions, 0, "{stats:?}");
}

fn bench(c: &mut Criterion) {
    let Some(mut f) = Fixture::new() else { return };
    let mut g = c.benchmark_group("redis");

    g.bench_function("admit_roundtrip", |b| b.iter(|| f.ours()));
    g.bench_function("raw_evalsha", |b| b.iter(|| f.raw()));
    g.finish();
    let stats = f.layer.remote_stats().expect("redis");
    assert_eq!(stats.failed_decisions, 0, "{stats:?}");
}

criterion_group!(benches, bench);

fn main() {
    support::main("REDIS_BENCH_AB", ab, benches);
}
