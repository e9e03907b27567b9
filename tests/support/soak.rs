//! What the soak suites share: the request mix, how each caller's request
//! ended, and the process's resident memory sampled while they run.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One logical request of a soak: which API, streamed or not, and whether
/// its body is one of a few deterministic ones the cache may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Anthropic Messages (else OpenAI Chat Completions).
    pub(crate) anthropic: bool,
    /// An SSE stream (else one JSON body).
    pub(crate) stream: bool,
    /// One of [`CACHEABLE`] repeated bodies at temperature 0 (else a body
    /// of its own, which the cache never answers).
    pub(crate) cacheable: Option<u64>,
}

/// How many distinct cacheable bodies the mix repeats.
pub(crate) const CACHEABLE: u64 = 8;

impl Shape {
    /// The `i`-th request of the mix: half per API, half streamed, one in
    /// ten cacheable (so the cache serves hits and coalesces, while most
    /// requests reach the provider).
    pub(crate) fn of(i: u64) -> Shape {
        Shape {
            anthropic: i.is_multiple_of(2),
            stream: (i / 2).is_multiple_of(2),
            cacheable: (i % 10 == 3).then_some(i / 10 % CACHEABLE),
        }
    }

    /// The path on the provider (or the gateway).
    pub(crate) fn path(self) -> &'static str {
        if self.anthropic {
            "/v1/messages"
        } else {
            "/v1/chat/completions"
        }
    }

    /// The JSON body of request `i`.
    pub(crate) fn body(self, i: u64) -> String {
        let model = if self.anthropic {
            "claude-haiku-4-5"
        } else {
            "gpt-4o-mini"
        };
        let mut v = match self.cacheable {
            Some(n) => serde_json::json!({
                "model": model, "max_tokens": 64, "temperature": 0,
                "messages": [{"role": "user", "content": format!("cacheable question {n}")}],
            }),
            None => serde_json::json!({
                "model": model, "max_tokens": 64,
                "messages": [{"role": "user", "content": format!("soak request {i}")}],
            }),
        };
        if self.stream {
            v["stream"] = serde_json::json!(true);
            if !self.anthropic {
                v["stream_options"] = serde_json::json!({"include_usage": true});
            }
        }
        v.to_string()
    }

    /// Whether `body`, read to its end, is a complete answer of this
    /// shape: a stream up to its terminal event, or a whole JSON message.
    pub(crate) fn complete(self, body: &[u8]) -> bool {
        if self.stream {
            let text = String::from_utf8_lossy(body);
            let end = if self.anthropic {
                "event: message_stop"
            } else {
                "data: [DONE]"
            };
            return text.lines().any(|l| l == end) && !text.contains("\"error\"");
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        if self.anthropic {
            v["type"] == "message" && v["usage"]["output_tokens"].as_u64().is_some()
        } else {
            v["object"] == "chat.completion" && v["choices"][0]["message"]["content"].is_string()
        }
    }
}

/// How one caller's request ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    /// 200, and the whole body (or stream) arrived.
    Ok,
    /// A response with this error status, its body read.
    Status(u16),
    /// No response: the error's kind.
    Error(String),
    /// 200, then the body failed while being read: the error's kind.
    BodyError(String),
    /// 200, a body that ended cleanly but incomplete (a truncated stream,
    /// or an error event in it).
    Incomplete,
    /// The caller's own deadline ended it.
    Deadline,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Status(s) => write!(f, "status {s}"),
            Outcome::Error(e) => write!(f, "error {e}"),
            Outcome::BodyError(e) => write!(f, "body error {e}"),
            Outcome::Incomplete => f.write_str("incomplete"),
            Outcome::Deadline => f.write_str("deadline"),
        }
    }
}

/// Outcomes counted by kind.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally(pub(crate) BTreeMap<Outcome, u64>);

impl Tally {
    pub(crate) fn add(&mut self, outcome: Outcome) {
        *self.0.entry(outcome).or_insert(0) += 1;
    }

    /// Every outcome counted.
    pub(crate) fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub(crate) fn count(&self, pred: impl Fn(&Outcome) -> bool) -> u64 {
        self.0.iter().filter(|(o, _)| pred(o)).map(|(_, n)| n).sum()
    }

    pub(crate) fn ok(&self) -> u64 {
        self.count(|o| *o == Outcome::Ok)
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(o, n)| format!("{o}: {n}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// What an error's innermost cause says (the first 60 characters, digits
/// as `#` so that "waited 0.023s" and "waited 0.031s" count as one kind),
/// for the tally: the message of the failure itself, not of its wrappers.
pub(crate) fn error_kind(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner
        .to_string()
        .chars()
        .take(60)
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

/// The process's resident set size in bytes (`/proc/self/statm`, resident
/// pages × the kernel page size), `None` where there is no procfs.
pub(crate) fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// The kernel page size, read once from `/proc/self/smaps` (4 KiB if it
/// cannot be read).
fn page_size() -> u64 {
    static SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        std::fs::read_to_string("/proc/self/smaps")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("KernelPageSize:"))?;
                let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kb * 1024)
            })
            .unwrap_or(4096)
    })
}

/// RSS sampled every `every` on a thread of its own, each sample tagged
/// with how many requests had finished then.
#[derive(Debug)]
pub(crate) struct RssSampler {
    samples: Arc<Mutex<Vec<(u64, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the samples say, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RssReport {
    /// The first sample.
    pub(crate) start: u64,
    /// The last sample taken during warm-up (the baseline).
    pub(crate) warm: u64,
    /// The highest sample after warm-up.
    pub(crate) peak: u64,
    /// The last sample.
    pub(crate) end: u64,
    /// `peak - warm` (0 if lower).
    pub(crate) growth: u64,
    /// How many samples were taken.
    pub(crate) samples: usize,
}

impl fmt::Display for RssReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "RSS start {:.1} MiB, after warm-up {:.1} MiB, peak after {:.1} MiB, end {:.1} MiB, \
             growth {:.2} MiB ({} samples)",
            mib(self.start),
            mib(self.warm),
            mib(self.peak),
            mib(self.end),
            mib(self.growth),
            self.samples
        )
    }
}

impl RssSampler {
    /// Starts sampling; `done` is the count of finished requests.
    pub(crate) fn start(done: Arc<AtomicU64>, every: Duration) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_bytes() {
                        let n = done.load(Ordering::Relaxed);
                        samples.lock().expect("lock").push((n, rss));
                    }
                    std::thread::sleep(every);
                }
            })
        };
        RssSampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling (one last sample is taken) and reports, warm-up
    /// being the samples taken before `warmup` requests had finished.
    /// `None` without procfs.
    pub(crate) fn finish(mut self, warmup: u64) -> Option<RssReport> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sampler thread");
        }
        let mut samples = self.samples.lock().expect("lock").clone();
        if let Some(rss) = rss_bytes() {
            samples.push((u64::MAX, rss));
        }
        let start = samples.first()?.1;
        let end = samples.last()?.1;
        let warm = samples
            .iter()
            .take_while(|(n, _)| *n < warmup)
            .last()
            .map_or(start, |s| s.1);
        let peak = samples
            .iter()
            .filter(|(n, _)| *n >= warmup)
            .map(|s| s.1)
            .max()
            .unwrap_or(end);
        Some(RssReport {
            start,
            warm,
            peak,
            end,
            growth: peak.saturating_sub(warm),
            samples: samples.len(),
        })
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `SOAK_REQUESTS` if set (and a number), else `default`.
pub(crate) fn requests(default: u64) -> u64 {
    std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}
