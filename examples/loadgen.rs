//! An open-loop HTTP load generator for the gateway benchmark
//! (`scripts/bench.sh gateway`): it sends at a fixed offered rate whatever
//! the server does, so a slow server cannot slow the load down and hide
//! its own latency (the coordinated-omission trap of closed-loop tools).
//!
//! Run with:
//!
//! ```sh
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080/v1/chat/completions \
//!     --rates 100,500,1000,max --duration 10 --label gateway
//! ```
//!
//! Each request is a fresh POST whose body is `--body` with `{n}` replaced
//! by the request's number (so no cache anywhere can answer it); it
//! succeeds when the status is 2xx and the whole body arrives within
//! `--timeout`. Latency is measured per request from the moment it is
//! handed to the connection pool to the end of its body. For each rate it
//! prints a row (offered and achieved rate, successes, errors by kind,
//! p50/p90/p99/p99.9/max) and, with `--json FILE`, appends one JSON object
//! per rate to FILE.
//!
//! `max` searches for the highest rate with errors under 1 % and an
//! achieved rate within 5 % of the offered one: it doubles the rate from
//! the highest fixed rate that passed (or halves it from the lowest that
//! failed) and then bisects, `--max-probes` runs of `--probe-duration`
//! seconds in all.
//!
//! Why a Rust example rather than `wrk`/`oha`: neither is on the machine
//! nor installable offline, `wrk` is closed-loop, and the generator must
//! share the box with the servers it measures, so it must cost little:
//! one hyper-util pooled client, a task per request, no per-request
//! allocation beyond the body and the response.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const HELP: &str = "\
loadgen: an open-loop HTTP POST load generator

USAGE: loadgen --url URL [OPTIONS]

OPTIONS:
  --url URL              where to POST
  --rates LIST           comma-separated offered rates in req/s, `max` to search (default 100,500,1000,max)
  --duration SECS        seconds per fixed rate (default 10)
  --warmup SECS          seconds at the first rate before measuring (default 2)
  --probe-duration SECS  seconds per `max` probe (default 5)
  --max-probes N         probes of the `max` search (default 8)
  --pause SECS           idle time after each run (default 1); then, before the next run,
                         single requests until one succeeds, so a server still working off
                         requests abandoned at the timeout has drained (at most --drain SECS)
  --drain SECS           the longest wait for that (default 300)
  --keep-going           run the fixed rates above one that was not sustained (default: skip them)
  --timeout MS           a request not done by then is an error (default 2000)
  --body JSON            request body; `{n}` becomes the request number
                         (default: an OpenAI chat completion, max_tokens 16)
  --header NAME:VALUE    extra request header (repeatable)
  --max-inflight N       requests in flight at most; beyond, counted as `shed` (default 20000)
  --label NAME           name of this target in the output (default the URL)
  --json FILE            append one JSON object per rate to FILE
  -h, --help             this help
";

const DEFAULT_BODY: &str = r#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"request {n}: say hello"}]}"#;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    Fixed(f64),
    Max,
}

struct Options {
    url: http::Uri,
    rates: Vec<Rate>,
    duration: Duration,
    warmup: Duration,
    probe: Duration,
    max_probes: usize,
    pause: Duration,
    drain: Duration,
    keep_going: bool,
    timeout: Duration,
    body: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    max_inflight: usize,
    label: String,
    json: Option<String>,
}

fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
}

fn parse() -> Result<Option<Options>, String> {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    let mut o = Options {
        url: http::Uri::from_static("http://127.0.0.1/"),
        rates: vec![
            Rate::Fixed(100.0),
            Rate::Fixed(500.0),
            Rate::Fixed(1000.0),
            Rate::Max,
        ],
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        probe: Duration::from_secs(5),
        max_probes: 8,
        pause: Duration::from_secs(1),
        drain: Duration::from_secs(300),
        keep_going: false,
        timeout: Duration::from_millis(2000),
        body: DEFAULT_BODY.to_owned(),
        headers: Vec::new(),
        max_inflight: 20_000,
        label: String::new(),
        json: None,
    };
    let secs = |f: &str, v| value::<f64>(f, v).map(Duration::from_secs_f64);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--url" => url = Some(value::<String>(&flag, args.next())?),
            "--rates" => {
                let v: String = value(&flag, args.next())?;
                o.rates = v
                    .split(',')
                    .map(|r| match r.trim() {
                        "max" => Ok(Rate::Max),
                        n => n
                            .parse::<f64>()
                            .ok()
                            .filter(|x| x.is_finite() && *x > 0.0)
                            .map(Rate::Fixed)
                            .ok_or_else(|| format!("--rates: bad rate {n:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--duration" => o.duration = secs(&flag, args.next())?,
            "--warmup" => o.warmup = secs(&flag, args.next())?,
            "--probe-duration" => o.probe = secs(&flag, args.next())?,
            "--max-probes" => o.max_probes = value(&flag, args.next())?,
            "--pause" => o.pause = secs(&flag, args.next())?,
            "--drain" => o.drain = secs(&flag, args.next())?,
            "--keep-going" => o.keep_going = true,
            "--timeout" => o.timeout = Duration::from_millis(value(&flag, args.next())?),
            "--body" => o.body = value(&flag, args.next())?,
            "--header" => {
                let v: String = value(&flag, args.next())?;
                let (n, val) = v
                    .split_once(':')
                    .ok_or_else(|| format!("--header: expected NAME:VALUE, got {v:?}"))?;
                let n = HeaderName::try_from(n.trim()).map_err(|e| format!("--header: {e}"))?;
                let mut val =
                    HeaderValue::try_from(val.trim()).map_err(|e| format!("--header: {e}"))?;
                val.set_sensitive(true);
                o.headers.push((n, val));
            }
            "--max-inflight" => o.max_inflight = value(&flag, args.next())?,
            "--label" => o.label = value(&flag, args.next())?,
            "--json" => o.json = Some(value(&flag, args.next())?),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let url = url.ok_or("--url is required")?;
    o.url = url.parse().map_err(|e| format!("--url: {e}"))?;
    if o.label.is_empty() {
        o.label = url;
    }
    if o.duration.is_zero() || o.probe.is_zero() || o.timeout.is_zero() || o.max_inflight == 0 {
        return Err("durations, --timeout and --max-inflight must be positive".into());
    }
    Ok(Some(o))
}

/// How one request ended.
enum End {
    Ok(Duration),
    Status(u16),
    Timeout,
    Failed,
}

/// What one run at one rate measured.
struct Run {
    offered: f64,
    elapsed: Duration,
    sent: usize,
    shed: usize,
    ok: Vec<Duration>,
    statuses: BTreeMap<u16, usize>,
    timeouts: usize,
    failed: usize,
}

impl Run {
    fn errors(&self) -> usize {
        self.sent + self.shed - self.ok.len()
    }

    fn error_rate(&self) -> f64 {
        self.errors() as f64 / (self.sent + self.shed).max(1) as f64
    }

    /// Successful answers per second of the run.
    fn achieved(&self) -> f64 {
        self.ok.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn sustained(&self) -> bool {
        self.error_rate() < 0.01 && self.achieved() >= 0.95 * self.offered
    }

    fn pct(&self, q: f64) -> Duration {
        if self.ok.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.ok.len() as f64 * q).ceil() as usize).clamp(1, self.ok.len()) - 1;
        self.ok[i]
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Target {
    client: HttpClient,
    url: http::Uri,
    body: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    max_inflight: usize,
}

async fn one(target: Arc<Target>, n: u64) -> End {
    let body = target.body.replace("{n}", &n.to_string());
    let mut req = Request::post(target.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid request");
    for (name, value) in &target.headers {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    let start = Instant::now();
    let work = async {
        let res = target.client.request(req).await.map_err(|_| ())?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(|_| ())?.to_bytes();
        Ok::<_, ()>((status, body.len()))
    };
    match tokio::time::timeout(target.timeout, work).await {
        Err(_) => End::Timeout,
        Ok(Err(())) => End::Failed,
        Ok(Ok((status, len))) if status.is_success() && len > 0 => End::Ok(start.elapsed()),
        Ok(Ok((status, _))) => End::Status(status.as_u16()),
    }
}

/// Sends at `rate` for `duration`: each millisecond, as many requests as
/// the schedule says are due by then, each in its own task, whatever is
/// still in flight (up to the bound).
async fn run(target: &Arc<Target>, rate: f64, duration: Duration, first: &mut u64) -> Run {
    let inflight = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut due_sent = 0u64;
    let mut shed = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while due_sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        while due_sent < due {
            due_sent += 1;
            if inflight.load(Ordering::Relaxed) >= target.max_inflight {
                shed += 1;
                continue;
            }
            inflight.fetch_add(1, Ordering::Relaxed);
            let (target, tx, inflight) = (Arc::clone(target), tx.clone(), Arc::clone(&inflight));
            let n = *first;
            *first += 1;
            tokio::spawn(async move {
                let end = one(target, n).await;
                inflight.fetch_sub(1, Ordering::Relaxed);
                let _ = tx.send(end);
            });
        }
    }
    drop(tx);
    let mut r = Run {
        offered: rate,
        elapsed: Duration::ZERO,
        sent: (due_sent as usize) - shed,
        shed,
        ok: Vec::new(),
        statuses: BTreeMap::new(),
        timeouts: 0,
        failed: 0,
    };
    let mut last = start.elapsed();
    while let Some(end) = rx.recv().await {
        match end {
            End::Ok(d) => r.ok.push(d),
            End::Status(s) => *r.statuses.entry(s).or_insert(0) += 1,
            End::Timeout => r.timeouts += 1,
            End::Failed => r.failed += 1,
        }
        last = start.elapsed();
    }
    // Achieved over the schedule's length, or longer if answers lagged.
    r.elapsed = last.max(duration);
    r.ok.sort_unstable();
    r
}

/// Waits `pause`, then sends one request at a time until one succeeds:
/// a server that keeps working on requests whose clients gave up (most
/// do) must finish them before the next run measures it.
async fn settle(o: &Options, target: &Arc<Target>, n: &mut u64) {
    tokio::time::sleep(o.pause).await;
    let start = Instant::now();
    while start.elapsed() < o.drain {
        *n += 1;
        if let End::Ok(_) = one(Arc::clone(target), *n).await {
            break;
        }
    }
    if start.elapsed() > Duration::from_secs(1) {
        eprintln!(
            "loadgen: {}: drained in {:.1} s",
            o.label,
            start.elapsed().as_secs_f64()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(o: &Options, r: &Run, kind: &str) {
    let statuses: Vec<String> = r.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    println!(
        "{:<10} {:<6} {:>8.0} {:>9.1} {:>7} {:>6} {:>6.2}% {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.1}  {}",
        o.label,
        kind,
        r.offered,
        r.achieved(),
        r.ok.len(),
        r.errors(),
        r.error_rate() * 100.0,
        ms(r.pct(0.5)),
        ms(r.pct(0.9)),
        ms(r.pct(0.99)),
        ms(r.pct(0.999)),
        ms(r.ok.last().copied().unwrap_or_default()),
        if r.errors() == 0 {
            String::new()
        } else {
            format!(
                "statuses [{}] timeouts {} failed {} shed {}",
                statuses.join(" "),
                r.timeouts,
                r.failed,
                r.shed
            )
        }
    );
    let _ = std::io::stdout().flush();
    if let Some(path) = &o.json {
        let j = serde_json::json!({
            "label": o.label, "kind": kind, "offered": r.offered, "achieved": r.achieved(),
            "sent": r.sent, "ok": r.ok.len(), "errors": r.errors(), "error_rate": r.error_rate(),
            "sustained": r.sustained(),
            "statuses": r.statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "timeouts": r.timeouts, "failed": r.failed, "shed": r.shed,
            "p50_ms": ms(r.pct(0.5)), "p90_ms": ms(r.pct(0.9)), "p99_ms": ms(r.pct(0.99)),
            "p999_ms": ms(r.pct(0.999)), "max_ms": ms(r.ok.last().copied().unwrap_or_default()),
        });
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(mut f) => {
                let _ = writeln!(f, "{j}");
            }
            Err(e) => eprintln!("loadgen: {path}: {e}"),
        }
    }
}

#[tokio::main]
async fn main() {
    let o = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return;
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(usize::MAX)
        .build_http();
    let target = Arc::new(Target {
        client,
        url: o.url.clone(),
        body: o.body.clone(),
        headers: o.headers.clone(),
        timeout: o.timeout,
        max_inflight: o.max_inflight,
    });
    println!(
        "target     kind    offered  achieved      ok errors   err%   p50 ms   p90 ms   p99 ms p99.9 ms   max ms"
    );
    let mut n = 0u64;
    if let Some(Rate::Fixed(r)) = o.rates.first() {
        let _ = run(&target, *r, o.warmup, &mut n).await;
        settle(&o, &target, &mut n).await;
    }
    let (mut pass, mut fail): (f64, f64) = (0.0, f64::INFINITY);
    let mut best: Option<Run> = None;
    for rate in &o.rates {
        match *rate {
            Rate::Fixed(r) if fail <= r && !o.keep_going => {
                println!(
                    "{:<10} fixed  {r:>8.0}  skipped: {fail:.0} req/s was not sustained",
                    o.label
                );
            }
            Rate::Fixed(r) => {
                let run = run(&target, r, o.duration, &mut n).await;
                report(&o, &run, "fixed");
                settle(&o, &target, &mut n).await;
                if !run.sustained() {
                    fail = fail.min(r);
                } else if r > pass {
                    pass = r;
                    best = Some(run);
                }
            }
            Rate::Max => {
                for _ in 0..o.max_probes {
                    let r = if fail.is_infinite() {
                        (pass * 2.0).max(100.0)
                    } else if pass == 0.0 {
                        fail / 2.0
                    } else {
                        (pass + fail) / 2.0
                    };
                    if r < 1.0 || (fail.is_finite() && fail / pass.max(1.0) < 1.1) {
                        break;
                    }
                    let run = run(&target, r, o.probe, &mut n).await;
                    report(&o, &run, "probe");
                    if run.sustained() {
                        pass = r;
                        best = Some(run);
                    } else {
                        fail = r;
                    }
                    settle(&o, &target, &mut n).await;
                }
                match &best {
                    Some(b) => report(&o, b, "max"),
                    None => println!("{:<10} max    no rate sustained", o.label),
                }
            }
        }
    }
}
