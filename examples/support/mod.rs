//! Shared by the examples: a seeded workload and the "naive" client that
//! behaves like the official SDKs (no admission control, 2 retries,
//! `min(0.5 s · 2ⁿ, 8 s) · (1 − 0.25·U)` backoff, server advice honoured up
//! to 60 s).

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::{Service, ServiceExt};
use tower_llm_resilience::BoxError;
use tower_llm_resilience::provider::retry_after;
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::response::ResponseBody;

/// One request of a workload.
#[derive(Debug, Clone)]
pub struct Job {
    pub body: Bytes,
    pub max_tokens: u64,
}

/// A small deterministic PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// `n` Anthropic Messages requests with prompts of `words` words and
/// `max_tokens` in the given range.
pub fn jobs(n: usize, seed: u64, words: (u64, u64), max_tokens: (u64, u64)) -> Vec<Job> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let w = rng.range(words.0, words.1);
            let prompt: String = (0..w).map(|k| if k % 7 == 0 { "tokens " } else { "word " }).collect();
            let max = rng.range(max_tokens.0, max_tokens.1);
            let body = format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":{max},"messages":[{{"role":"user","content":"request {i}: {prompt}"}}]}}"#
            );
            Job {
                body: Bytes::from(body),
                max_tokens: max,
            }
        })
        .collect()
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub ok: bool,
    pub attempts: u32,
    pub status_429: u32,
    pub latency: Duration,
}

pub fn request(url: &str, key: &str, job: &Job) -> Request<ReplayBody> {
    Request::post(format!("{url}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(ReplayBody::new(job.body.clone()))
        .expect("valid request")
}

/// Sends `job` like the official SDKs do.
pub async fn naive<S>(client: S, url: &str, key: &str, job: &Job, rng: &mut Rng) -> Outcome
where
    S: Service<Request<ReplayBody>, Response = http::Response<ResponseBody>, Error = BoxError>
        + Clone,
{
    let start = Instant::now();
    let mut out = Outcome::default();
    let max_retries = 2;
    for attempt in 0..=max_retries {
        out.attempts += 1;
        let res = client.clone().oneshot(request(url, key, job)).await;
        let advice = match res {
            Ok(res) => {
                let status = res.status();
                let advice = retry_after(res.headers(), std::time::SystemTime::now());
                // Read the body to the end, as an application would.
                let body_ok = res.into_body().collect().await.is_ok();
                if status.is_success() && body_ok {
                    out.ok = true;
                    break;
                }
                if status == StatusCode::TOO_MANY_REQUESTS {
                    out.status_429 += 1;
                }
                let retryable = status.as_u16() == 408
                    || status.as_u16() == 409
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status.is_server_error()
                    || !body_ok;
                if !retryable {
                    break;
                }
                advice
            }
            Err(_) => None,
        };
        if attempt == max_retries {
            break;
        }
        let backoff = (0.5 * 2f64.powi(attempt)).min(8.0) * (1.0 - 0.25 * rng.unit());
        let wait = match advice {
            Some(d) if d <= Duration::from_secs(60) => d,
            _ => Duration::from_secs_f64(backoff),
        };
        tokio::time::sleep(wait).await;
    }
    out.latency = start.elapsed();
    out
}

/// Percentile of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The physical limit of a quota for a workload: no client can finish
/// sooner than the slowest dimension takes to admit the whole workload
/// beyond the initial burst. Requests and input tokens are known in advance
/// (the simulator's counting rule); output tokens are what the simulator
/// generated, scaled to every request when a client finished fewer.
pub fn lower_bound(
    quota: tower_llm_resilience::sim::Limits,
    scale: f64,
    bodies: &[Bytes],
    admitted: (u64, u64, u64),
) -> f64 {
    let n = bodies.len() as f64;
    let input: u64 = bodies
        .iter()
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .map(|v| tower_llm_resilience::sim::count_input_tokens(&v))
        .sum();
    let output = if admitted.0 == 0 {
        0.0
    } else {
        admitted.2 as f64 * n / admitted.0 as f64
    };
    let rate = |per_minute: u64| per_minute as f64 * scale / 60.0;
    [
        (n - quota.requests_per_minute as f64) / rate(quota.requests_per_minute),
        (input as f64 - quota.input_tokens_per_minute as f64) / rate(quota.input_tokens_per_minute),
        (output - quota.output_tokens_per_minute as f64) / rate(quota.output_tokens_per_minute),
    ]
    .into_iter()
    .fold(0.0f64, f64::max)
}
