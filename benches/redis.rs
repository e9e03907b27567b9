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
//! runtime's cost is in both.

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

fn bench(c: &mut Criterion) {
    let Some(server) = start() else {
        eprintln!("redis bench: skipped: cannot start redis-server");
        return;
    };
    let url = format!("redis://127.0.0.1:{}", server.port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("redis");

    // Ours: through the layer.
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
    let request = || {
        Request::post("https://api.anthropic.com/v1/messages")
            .header("x-api-key", "sk-bench")
            .body(ReplayBody::from(BODY))
            .expect("request")
    };
    rt.block_on(svc.clone().oneshot(request())).expect("warm");
    g.bench_function("admit_roundtrip", |b| {
        b.iter(|| {
            rt.block_on(svc.clone().oneshot(request()))
                .expect("admitted")
        });
    });
    let stats = layer.remote_stats().expect("redis");
    assert_eq!(stats.failed_decisions, 0, "{stats:?}");

    // Raw: the same script, keys and arguments, straight through redis-rs.
    let script = redis::Script::new(concat!(
        include_str!("../src/redis/scripts/prelude.lua"),
        include_str!("../src/redis/scripts/admit.lua")
    ));
    let limit = support::huge(1_000_000_000);
    let mut conn = rt.block_on(async {
        redis::Client::open(url.as_str())
            .expect("url")
            .get_connection_manager()
            .await
            .expect("connection")
    });
    g.bench_function("raw_evalsha", |b| {
        b.iter(|| {
            rt.block_on(async {
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
                    .invoke_async(&mut conn)
                    .await
                    .expect("script");
                assert_eq!(reply[0], 0);
            });
        });
    });
    g.finish();
    drop(server);
}

criterion_group!(benches, bench);

fn main() {
    support::main("REDIS_BENCH_AB", || {}, benches);
}
