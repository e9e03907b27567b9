//! Many processes, one quota, with separate OS processes: this test binary
//! starts one simulator and re-executes itself 8 times (the
//! `instance_child` entry point), each child running the full stack with
//! 50 concurrent callers against the simulator's URL.
//!
//! - Local limiters, each at the full limit: together they overshoot, and
//!   the simulator answers 429s.
//! - Limiters sharing their state through Redis: total admitted ≤ quota +
//!   burst, and zero 429s. Skipped (one line) without Redis, and while the
//!   Redis rate-limit backend is not wired into `rate_layer`
//!   (`examples/support/instances.rs`).
//!
//! The simulator's clock is scaled (a provider minute is half a second),
//! so a run takes a few seconds.

#[path = "../examples/support/instances.rs"]
mod instances;
mod support;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use instances::{Backend, ChildReport, Plan};
use tower_llm_resilience::sim::{self, SimConfig, SimHandle, Simulator};

use support::redis::RedisServer;

/// The environment variable that makes this binary an instance.
/// Marks a child instance (its plan comes on stdin).
const CHILD_ENV: &str = "TLR_INSTANCE_CHILD";

const INSTANCES: usize = 8;
const CALLERS: usize = 50;
/// Requests of the whole workload: one per caller.
const REQUESTS: usize = INSTANCES * CALLERS;
/// 100 requests per provider minute — a tenth of what the callers offer
/// at once — and tokens to spare (requests are the binding dimension).
const QUOTA: sim::Limits = sim::Limits::new(100, 10_000_000, 1_000_000);
/// A provider minute lasts 0.5 s.
const SCALE: f64 = 120.0;

/// Not a test: the entry point of a child instance. It does nothing
/// unless the parent started this binary with a plan.
#[test]
fn instance_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let (secret, plan, bodies) = instances::read_input(std::io::stdin().lock()).expect("stdin");
    let share = bodies.len();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime
        .block_on(instances::child(plan, secret, bodies))
        .expect("instance");
    assert_eq!(report.outcomes.len() + report.lost, share);
    instances::print_report(&report);
}

fn bodies() -> Vec<Bytes> {
    (0..REQUESTS)
        .map(|i| {
            Bytes::from(format!(
                r#"{{"model":"claude-haiku-4-5","max_tokens":20,"messages":[{{"role":"user","content":"caller {i}: a short question"}}]}}"#
            ))
        })
        .collect()
}

struct Run {
    children: Vec<ChildReport>,
    counters: sim::CountersSnapshot,
    elapsed: Duration,
}

/// One simulator, `INSTANCES` processes of this binary.
async fn run(backend: Backend, redis_url: Option<String>) -> Run {
    let sim: SimHandle = Simulator::start(
        SimConfig::new()
            .with_limits(QUOTA)
            .with_time_scale(SCALE)
            .with_output_tokens(5, 20)
            .with_seed(7),
    )
    .await
    .expect("simulator");
    let start_at_ms = instances::unix_ms() + 1_500;
    let plans: Vec<Plan> = (0..INSTANCES)
        .map(|index| Plan {
            index,
            count: INSTANCES,
            url: sim.url(),
            backend,
            redis_url: redis_url.clone(),
            redis_prefix: format!("test:instances:{}:{start_at_ms}:", std::process::id()),
            quota: (
                QUOTA.requests_per_minute,
                QUOTA.input_tokens_per_minute,
                QUOTA.output_tokens_per_minute,
            ),
            scale: SCALE,
            concurrency: CALLERS,
            window_s: None,
            total: REQUESTS,
            start_at_ms,
            give_up_s: 60.0,
            api_key: "sk-ant-instances".into(),
        })
        .collect();
    let exe = std::env::current_exe().expect("exe");
    let bodies = bodies();
    let children = tokio::task::spawn_blocking(move || {
        instances::run_children(&plans, &bodies, instances::secret(), |plan| {
            let mut cmd = Command::new(&exe);
            cmd.args(["instance_child", "--exact", "--nocapture", "-q"])
                .args(["--test-threads", "1"])
                .env(CHILD_ENV, plan.index.to_string());
            cmd
        })
    })
    .await
    .expect("join")
    .expect("instances");
    let finished = children
        .iter()
        .map(|c| c.finished_at_ms)
        .max()
        .expect("reports");
    let counters = sim.counters();
    sim.shutdown().await;
    Run {
        children,
        counters,
        elapsed: Duration::from_millis(finished.saturating_sub(start_at_ms)),
    }
}

fn answered(run: &Run) -> (usize, usize) {
    let all = run.children.iter().flat_map(|c| &c.outcomes);
    let ok = all.clone().filter(|o| o.0).count();
    (ok, all.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_limiters_in_eight_processes_overshoot_one_quota() {
    let run = run(Backend::Local, None).await;
    assert_eq!(run.children.len(), INSTANCES);
    let (_, answered) = answered(&run);
    let lost: usize = run.children.iter().map(|c| c.lost).sum();
    assert_eq!(answered + lost, REQUESTS, "every request is accounted for");
    // Each process admits a full quota's burst on its own: 8 × 100 offered
    // at once against one bucket of 100.
    let c = &run.counters;
    eprintln!(
        "ours-local: {answered} answered, {} sent upstream, {} admitted, {} 429s, in {:?}",
        c.received,
        c.admitted_totals().0,
        c.rate_limited(),
        run.elapsed
    );
    assert!(
        c.rate_limited() > 0,
        "no 429s from 8 local limiters at the full limit: {c:?}"
    );
    assert!(c.received > c.admitted_totals().0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiters_sharing_redis_in_eight_processes_keep_to_one_quota() {
    let Some(server) = RedisServer::get("instances") else {
        return;
    };
    let run = run(Backend::Redis, Some(server.url.clone())).await;
    let c = &run.counters;
    let (ok, answered) = answered(&run);
    assert_eq!((ok, answered), (REQUESTS, REQUESTS), "{c:?}");
    assert_eq!(c.rate_limited(), 0, "429s with one shared limiter: {c:?}");
    // Everything sent upstream fits one bucket: its burst plus what it
    // refilled while the run lasted (a little slack for the processes'
    // clocks against the simulator's).
    let minutes = run.elapsed.as_secs_f64() * SCALE / 60.0 + 0.1;
    let bound = QUOTA.requests_per_minute as f64 * (1.0 + minutes);
    assert!(
        (c.received as f64) <= bound,
        "sent {} > burst + refill {bound:.0} in {:?}",
        c.received,
        run.elapsed
    );
    let errors: u64 = run.children.iter().map(|c| c.redis_errors).sum();
    assert_eq!(errors, 0, "Redis commands failed");
}
