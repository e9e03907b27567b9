use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use tower_layer::Layer;

use super::RetryInfo;
use super::backoff::Backoff;
use super::budget::RetryBudget;
use super::policy::{DefaultPolicy, RetryPolicy};
use super::service::Retry;
use crate::error::InvalidConfig;
use crate::request::ReplayBody;

/// What to do when the server advises a longer wait than
/// [`max_server_delay`](RetryBuilder::max_server_delay).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverCap {
    /// The default: stop and return the response now, so a fallback layer
    /// above can degrade (another model) instead of waiting.
    #[default]
    GiveUp,
    /// Ignore the advice and wait the computed backoff instead.
    Backoff,
}

/// How long a look-ahead waits for a body when the deadline is further
/// away or there is none: long enough for a slow error body, short enough
/// that a stalled one cannot hold a caller (and a permit below) for good.
const DEFAULT_PEEK_TIMEOUT: Duration = Duration::from_secs(30);

type DeadLetter = dyn Fn(Request<ReplayBody>, &RetryInfo) + Send + Sync;

/// The shared configuration and state of one retry layer.
pub(crate) struct Config {
    pub(crate) policy: Box<dyn RetryPolicy>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) server_jitter_ratio: f64,
    pub(crate) server_jitter_max: Duration,
    pub(crate) max_server_delay: Duration,
    pub(crate) over_cap: OverCap,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) peek_timeout: Duration,
    pub(crate) peek_limit: usize,
    pub(crate) dead_letter: Option<Box<DeadLetter>>,
    pub(crate) seed: crate::util::SharedRng,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryConfig")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_server_delay", &self.max_server_delay)
            .field("over_cap", &self.over_cap)
            .field("budget", &self.budget)
            .field("timeout", &self.timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("peek_timeout", &self.peek_timeout)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A uniform number in `[0, 1)` (SplitMix64 over a shared counter).
    pub(crate) fn unit(&self) -> f64 {
        self.seed.unit()
    }
}

/// Retries failures worth retrying — see the [module docs](super).
///
/// Every service made from one layer value, and every clone, shares one
/// configuration and one retry budget.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    config: Arc<Config>,
}

impl RetryLayer {
    /// The defaults: [`DefaultPolicy`], 3 attempts in all, [`Backoff`]'s
    /// default schedule, server advice honoured up to 60 s plus up to 10 %
    /// (at most 1 s) of positive jitter, a budget of 20 % of requests plus
    /// 10 retries per second over 10 s, no total or per-attempt timeout, a
    /// 30 s look-ahead timeout.
    pub fn new() -> Self {
        RetryBuilder::default().finish()
    }

    /// A builder for every setting.
    pub fn builder() -> RetryBuilder {
        RetryBuilder::default()
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry::from_config(inner, Arc::clone(&self.config))
    }
}

/// Builds a [`RetryLayer`].
#[must_use]
pub struct RetryBuilder {
    policy: Box<dyn RetryPolicy>,
    max_attempts: u32,
    backoff: Backoff,
    server_jitter_ratio: f64,
    server_jitter_max: Duration,
    max_server_delay: Duration,
    over_cap: OverCap,
    budget: Option<(Duration, u32, f64)>,
    timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
    peek_timeout: Duration,
    peek_limit: usize,
    dead_letter: Option<Box<DeadLetter>>,
}

impl fmt::Debug for RetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Default for RetryBuilder {
    fn default() -> Self {
        RetryBuilder {
            policy: Box::new(DefaultPolicy),
            max_attempts: 3,
            backoff: Backoff::default(),
            server_jitter_ratio: 0.1,
            server_jitter_max: Duration::from_secs(1),
            max_server_delay: Duration::from_secs(60),
            over_cap: OverCap::GiveUp,
            budget: Some((Duration::from_secs(10), 10, 0.2)),
            timeout: None,
            attempt_timeout: None,
            peek_timeout: DEFAULT_PEEK_TIMEOUT,
            peek_limit: 64 * 1024,
            dead_letter: None,
        }
    }
}

impl RetryBuilder {
    /// Which failures are retried (default [`DefaultPolicy`]); any
    /// `Fn(&Attempted<'_>) -> bool` closure works.
    pub fn policy(mut self, policy: impl RetryPolicy) -> Self {
        self.policy = Box::new(policy);
        self
    }

    /// Attempts in all, the first included (default 3; 1 disables retries).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The computed backoff for failures without server advice.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Positive-only jitter added to server advice: uniform in
    /// `[0, min(advice · ratio, max)]` (default 10 %, at most 1 s), so
    /// callers told the same `retry-after` do not return together. Zero
    /// ratio: exactly the advice.
    pub fn server_jitter(mut self, ratio: f64, max: Duration) -> Self {
        self.server_jitter_ratio = ratio;
        self.server_jitter_max = max;
        self
    }

    /// The longest server advice honoured (default 60 s), and what to do
    /// beyond it (default: give up and return the response). Advice of any
    /// length counts: a `retry-after` too large to represent, or past a day
    /// ([`MAX_RETRY_AFTER`](crate::provider::MAX_RETRY_AFTER)), is over
    /// the cap, never read as no advice.
    pub fn max_server_delay(mut self, max: Duration, over_cap: OverCap) -> Self {
        self.max_server_delay = max;
        self.over_cap = over_cap;
        self
    }

    /// The retry budget: over `ttl`, retries may be `ratio` of requests
    /// plus `min_per_sec` per second (default 10 s, 10/s, 20 %).
    pub fn budget(mut self, ttl: Duration, min_per_sec: u32, ratio: f64) -> Self {
        self.budget = Some((ttl, min_per_sec, ratio));
        self
    }

    /// No budget: retry every retryable failure up to `max_attempts`.
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// The total timeout (default none): from when the request enters the
    /// layer, every attempt, look-ahead and delay included. It acts as the
    /// request's deadline, or shortens the
    /// [`Deadline`](crate::request::Deadline) extension when it ends
    /// first: no retry starts that cannot finish its delay by it, and a
    /// request still waiting then is answered — with the failure in hand,
    /// or [`DeadlineElapsed`](crate::error::DeadlineElapsed) when an
    /// attempt is still waiting for its response.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The per-attempt timeout (default none): from when an attempt starts
    /// waiting for the inner service (its readiness, then its response
    /// head). An attempt past it is dropped — releasing what it holds
    /// below — and fails with
    /// [`AttemptTimeout`](crate::error::AttemptTimeout), which the policy
    /// may retry (the default does, as a transport failure). The body is
    /// not covered: reading it is the caller's wait, but for the layer's
    /// own look-ahead ([`peek_timeout`](Self::peek_timeout)).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// How long the layer reads ahead in a body — a 429's error body, a
    /// 2xx stream up to its first event — when the deadline is further
    /// away, or there is none (default 30 s). A 429 body that stalls past
    /// it is given up (its bytes so far are kept, then
    /// [`BodyStalled`](crate::error::BodyStalled) ends it; the upstream
    /// body, and what it holds below, is dropped) and judged on what was
    /// read; a stream that has not started by then is handed over as it
    /// is.
    pub fn peek_timeout(mut self, timeout: Duration) -> Self {
        self.peek_timeout = timeout;
        self
    }

    /// How much of an error body or a stream's start is read to classify
    /// it (default 64 KiB).
    pub fn peek_limit(mut self, bytes: usize) -> Self {
        self.peek_limit = bytes;
        self
    }

    /// Receives every request whose failure was retryable but that ran out
    /// of attempts, budget or deadline (with what happened), for callers
    /// that queue such work for later. Only requests with a
    /// [`ReplayBody`] can be handed over.
    pub fn dead_letter(
        mut self,
        hook: impl Fn(Request<ReplayBody>, &RetryInfo) + Send + Sync + 'static,
    ) -> Self {
        self.dead_letter = Some(Box::new(hook));
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] for zero attempts, a jitter ratio outside [0, 1],
    /// durations over a day, a zero timeout, or an invalid budget.
    pub fn build(self) -> Result<RetryLayer, InvalidConfig> {
        let invalid = |field, reason| Err(InvalidConfig::new(field, reason));
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1");
        }
        if !(self.server_jitter_ratio.is_finite()
            && (0.0..=1.0).contains(&self.server_jitter_ratio))
        {
            return invalid("server_jitter", "the ratio must be in [0, 1]");
        }
        let day = Duration::from_secs(86_400);
        let durations = [
            ("server_jitter", Some(self.server_jitter_max)),
            ("max_server_delay", Some(self.max_server_delay)),
            ("timeout", self.timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("peek_timeout", Some(self.peek_timeout)),
        ];
        if let Some((field, _)) = durations.iter().find(|(_, d)| d.is_some_and(|d| d > day)) {
            return invalid(field, "must be under a day");
        }
        let zero = [
            ("timeout", self.timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("peek_timeout", Some(self.peek_timeout)),
        ];
        if let Some((field, _)) = zero.iter().find(|(_, d)| d.is_some_and(|d| d.is_zero())) {
            return invalid(field, "must be above zero");
        }
        if let Some((ttl, min, ratio)) = self.budget {
            RetryBudget::new(ttl, min, ratio)?;
        }
        Ok(self.finish())
    }

    pub(crate) fn finish(self) -> RetryLayer {
        let budget = self
            .budget
            .and_then(|(ttl, min, ratio)| RetryBudget::new(ttl, min, ratio).ok());
        RetryLayer {
            config: Arc::new(Config {
                policy: self.policy,
                max_attempts: self.max_attempts.max(1),
                backoff: self.backoff,
                server_jitter_ratio: self.server_jitter_ratio,
                server_jitter_max: self.server_jitter_max,
                max_server_delay: self.max_server_delay,
                over_cap: self.over_cap,
                budget,
                timeout: self.timeout,
                attempt_timeout: self.attempt_timeout,
                peek_timeout: self.peek_timeout,
                peek_limit: self.peek_limit,
                dead_letter: self.dead_letter,
                seed: crate::util::SharedRng::new(0x2545_F491_4F6C_DD1D),
            }),
        }
    }
}
