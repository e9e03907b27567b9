//! Configuration of the rate limiter: limits per dimension and per model,
//! learning mode, waiting policy, bounds.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::gcra::{DIMENSIONS, Dimension, Limit};
use super::stats::ThresholdEvent;
use http::HeaderMap;

use crate::error::{InvalidConfig, UnreadableRequest};
use crate::queue::QueueConfig;
use crate::request::RequestMeta;

/// The limits of one group: requests, input tokens, output tokens and
/// combined tokens (OpenAI's TPM), each optional (an absent dimension is
/// not limited).
///
/// ```
/// use tower_llm_resilience::rate::Limits;
/// // Anthropic Tier 1: 50 RPM, 20k ITPM, 8k OTPM.
/// let tier1 = Limits::per_minute(50, 20_000, 8_000)?;
/// # Ok::<(), tower_llm_resilience::error::InvalidConfig>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    dims: [Option<Limit>; DIMENSIONS],
}

impl Limits {
    /// No limit on any dimension.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Requests, input tokens and output tokens per minute, each bucket
    /// holding one minute's worth (as the providers' do).
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] naming the dimension (`requests`, `input_tokens`,
    /// `output_tokens`) if any is zero or absurdly large.
    pub fn per_minute(
        requests: u64,
        input_tokens: u64,
        output_tokens: u64,
    ) -> Result<Self, InvalidConfig> {
        let limit = |field, amount| {
            Limit::per_minute(amount).map_err(|e| InvalidConfig::new(field, e.reason))
        };
        Ok(Limits {
            dims: [
                Some(limit("requests", requests)?),
                Some(limit("input_tokens", input_tokens)?),
                Some(limit("output_tokens", output_tokens)?),
                None,
            ],
        })
    }

    /// Sets one dimension's limit.
    #[must_use]
    pub fn with(mut self, dimension: Dimension, limit: Limit) -> Self {
        self.dims[dimension.index()] = Some(limit);
        self
    }

    /// Sets the requests limit.
    #[must_use]
    pub fn requests(self, limit: Limit) -> Self {
        self.with(Dimension::Requests, limit)
    }

    /// Sets the input-tokens limit.
    #[must_use]
    pub fn input_tokens(self, limit: Limit) -> Self {
        self.with(Dimension::InputTokens, limit)
    }

    /// Sets the output-tokens limit.
    #[must_use]
    pub fn output_tokens(self, limit: Limit) -> Self {
        self.with(Dimension::OutputTokens, limit)
    }

    /// Sets the combined tokens limit: input + output tokens against one
    /// limit, as OpenAI's tokens per minute (`x-ratelimit-limit-tokens`).
    ///
    /// ```
    /// use tower_llm_resilience::rate::{Limit, Limits};
    /// // OpenAI: 500 RPM, 30,000 TPM.
    /// let limits = Limits::unlimited()
    ///     .requests(Limit::per_minute(500)?)
    ///     .tokens(Limit::per_minute(30_000)?);
    /// # Ok::<(), tower_llm_resilience::error::InvalidConfig>(())
    /// ```
    #[must_use]
    pub fn tokens(self, limit: Limit) -> Self {
        self.with(Dimension::Tokens, limit)
    }

    /// Requests and combined tokens per minute, each bucket holding one
    /// minute's worth: the shape of OpenAI's published limits.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] naming the dimension (`requests`, `tokens`) if
    /// either is zero or absurdly large.
    pub fn openai_per_minute(requests: u64, tokens: u64) -> Result<Self, InvalidConfig> {
        let limit = |field, amount| {
            Limit::per_minute(amount).map_err(|e| InvalidConfig::new(field, e.reason))
        };
        Ok(Limits::unlimited()
            .requests(limit("requests", requests)?)
            .tokens(limit("tokens", tokens)?))
    }

    /// One dimension's limit.
    pub fn get(&self, dimension: Dimension) -> Option<Limit> {
        self.dims[dimension.index()]
    }

    pub(crate) fn as_array(&self) -> [Option<Limit>; DIMENSIONS] {
        self.dims
    }
}

/// How the limiter uses the provider's rate-limit headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Learning {
    /// Ignore them (only `retry-after` cooldowns still apply).
    Off,
    /// The default: the server's `remaining` only ever lowers local
    /// availability, and an announced limit replaces a configured one only
    /// when it is lower (or when none is configured). Never loosens.
    #[default]
    Tighten,
    /// Learn the limits from the `…-limit` headers, up or down; until the
    /// first response of a group has taught them, send one request at a
    /// time. Configured limits are only the starting point.
    Auto,
}

/// What the limiter charges for a request whose body it cannot read.
///
/// A body is unreadable when it is not a JSON object, is truncated or
/// malformed, nests deeper than the parser follows, gives a read field a
/// value of the wrong type (a `model` that is not a string), or was not
/// buffered (no [`BufferBodyLayer`](crate::request::BufferBodyLayer)
/// above, so the limiter never sees it). Its real cost is unknown, but the
/// provider's parser may still read it and spend tokens: charging nothing
/// would let such bodies through for free. An empty body (or
/// `content-length: 0`) asks for nothing and costs one request, no tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unparsed {
    /// The default: charge a conservative estimate — input tokens the
    /// body's length ÷ 3.5, rounded up (every byte as if it were text, at
    /// the same rate as parsed text: an over-count), and output tokens
    /// [`default_output_tokens`](RateLimitBuilder::default_output_tokens).
    /// A body that was not buffered is measured by its `content-length`
    /// (none: no input tokens, the output budget still). As with any
    /// reservation, a response reporting its usage corrects it, and a
    /// refusal (a 400 for a body the provider cannot read either) refunds
    /// the tokens.
    #[default]
    Estimate,
    /// Refuse the request with
    /// [`UnreadableRequest`](crate::error::UnreadableRequest), without
    /// sending it.
    Refuse,
}

pub(crate) struct Threshold {
    pub(crate) fraction: f64,
    pub(crate) callback: Arc<dyn Fn(&ThresholdEvent) + Send + Sync>,
}

/// The validated configuration, shared by every service of one layer.
pub(crate) struct Config {
    pub(crate) limits: Limits,
    pub(crate) models: Vec<(Box<str>, Limits)>,
    pub(crate) learning: Learning,
    pub(crate) learn_period: Duration,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) fail_fast: bool,
    pub(crate) cooldown_jitter: Duration,
    pub(crate) default_cooldown: Duration,
    pub(crate) max_cooldown: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_groups: usize,
    pub(crate) thresholds: Vec<Threshold>,
    pub(crate) priority_header: Option<http::HeaderName>,
    pub(crate) default_output_tokens: u64,
    pub(crate) unparsed: Unparsed,
    /// The Redis store admissions go through, if any.
    #[cfg(feature = "redis")]
    pub(crate) remote: Option<super::remote::Remote>,
    /// The keys requests without credentials of their own are sent with.
    pub(crate) pool: Option<super::pool::KeyPool>,
    /// The share of each pool key's calendar quota this limiter admits up
    /// to, as 1 ÷ this (1; a `Local` fallback's: its `instances`).
    pub(crate) calendar_share: u32,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("limits", &self.limits)
            .field("models", &self.models.len())
            .field("learning", &self.learning)
            .field("max_wait", &self.max_wait)
            .field("fail_fast", &self.fail_fast)
            .field("max_groups", &self.max_groups)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// What a request costs: one request, its estimated input tokens, its
    /// `max_tokens` (else the default output budget), and the two together
    /// for the combined dimension — or, for a body
    /// that cannot be read, the [`Unparsed`] policy's estimate or refusal.
    pub(crate) fn cost(
        &self,
        meta: Option<&RequestMeta>,
        headers: &HeaderMap,
    ) -> Result<[u64; DIMENSIONS], UnreadableRequest> {
        let body_len = match meta {
            Some(m) if m.is_parsed() => {
                let input = m.input_tokens();
                let output = m.max_tokens().unwrap_or(self.default_output_tokens);
                return Ok([1, input, output, input.saturating_add(output)]);
            }
            Some(m) => Some(m.body_len()),
            // Not buffered: only its announced length is known.
            None => content_length(headers),
        };
        if body_len == Some(0) {
            return Ok([1, 0, 0, 0]);
        }
        match self.unparsed {
            Unparsed::Refuse => Err(UnreadableRequest::new(meta.map(RequestMeta::body_len))),
            Unparsed::Estimate => {
                let input = body_len.map_or(0, unparsed_input_tokens);
                let output = self.default_output_tokens;
                Ok([1, input, output, input.saturating_add(output)])
            }
        }
    }

    /// The limits of a new group for `model`: the most specific model
    /// entry whose name is a prefix of the model (so `claude-haiku` covers
    /// `claude-haiku-4-5`), else the defaults.
    pub(crate) fn limits_for(&self, model: Option<&str>) -> [Option<Limit>; DIMENSIONS] {
        let Some(model) = model else {
            return self.limits.as_array();
        };
        self.models
            .iter()
            .filter(|(name, _)| model.starts_with(&**name))
            .max_by_key(|(name, _)| name.len())
            .map_or(self.limits, |(_, l)| *l)
            .as_array()
    }
}

/// The input tokens charged for an unreadable body of `len` bytes: the
/// length ÷ 3.5, rounded up, as for parsed text.
pub(crate) fn unparsed_input_tokens(len: usize) -> u64 {
    let tokens = (u128::from(len as u64) * 2).div_ceil(7);
    u64::try_from(tokens).unwrap_or(u64::MAX)
}

/// A single, well-formed `content-length`.
fn content_length(headers: &HeaderMap) -> Option<usize> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let s = v.to_str().ok()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Builds a [`RateLimitLayer`](super::RateLimitLayer).
#[must_use]
pub struct RateLimitBuilder {
    limits: Limits,
    models: Vec<(Box<str>, Limits)>,
    learning: Learning,
    learn_period: Duration,
    queue: QueueConfig,
    shared_queue: Option<crate::queue::WaitQueue>,
    max_wait: Option<Duration>,
    fail_fast: bool,
    cooldown_jitter: Duration,
    default_cooldown: Duration,
    max_cooldown: Duration,
    idle_timeout: Duration,
    max_groups: usize,
    thresholds: Vec<Threshold>,
    priority_header: Option<http::HeaderName>,
    default_output_tokens: u64,
    unparsed: Unparsed,
    #[cfg(feature = "redis")]
    redis: Option<crate::redis::Redis>,
    #[cfg(feature = "redis")]
    redis_failure: crate::redis::FailurePolicy,
    #[cfg(feature = "redis")]
    redis_lease: u32,
    pool: Option<super::pool::KeyPool>,
}

impl fmt::Debug for RateLimitBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("limits", &self.limits)
            .field("learning", &self.learning)
            .finish_non_exhaustive()
    }
}

impl Default for RateLimitBuilder {
    fn default() -> Self {
        RateLimitBuilder {
            limits: Limits::unlimited(),
            models: Vec::new(),
            learning: Learning::Tighten,
            learn_period: Duration::from_secs(60),
            queue: QueueConfig::default(),
            shared_queue: None,
            max_wait: None,
            fail_fast: false,
            cooldown_jitter: Duration::from_millis(250),
            default_cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            max_groups: 10_000,
            thresholds: Vec::new(),
            priority_header: Some(http::HeaderName::from_static("x-llm-priority")),
            default_output_tokens: 4096,
            unparsed: Unparsed::Estimate,
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            redis_failure: crate::redis::FailurePolicy::default(),
            #[cfg(feature = "redis")]
            redis_lease: 0,
            pool: None,
        }
    }
}

impl RateLimitBuilder {
    /// The limits of every group without a model-specific entry.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Limits for models whose name starts with `model` (the longest
    /// matching prefix wins).
    pub fn model_limits(mut self, model: impl Into<Box<str>>, limits: Limits) -> Self {
        self.models.push((model.into(), limits));
        self
    }

    /// How the provider's rate-limit headers are used (default
    /// [`Learning::Tighten`]).
    pub fn learning(mut self, learning: Learning) -> Self {
        self.learning = learning;
        self
    }

    /// The period the provider's announced limits are per (default one
    /// minute). Set it to one second against a simulator whose minute lasts
    /// a second.
    pub fn learn_period(mut self, period: Duration) -> Self {
        self.learn_period = period;
        self
    }

    /// The wait queue's bound and aging (default 1,024 waiters, one
    /// priority level gained per 250 ms of waiting).
    pub fn queue(mut self, config: QueueConfig) -> Self {
        self.queue = config;
        self
    }

    /// Waits in this queue, shared with other limiters (for example the
    /// concurrency limit), instead of a queue of its own.
    pub fn shared_queue(mut self, queue: crate::queue::WaitQueue) -> Self {
        self.shared_queue = Some(queue);
        self
    }

    /// The longest a request waits for admission; past it,
    /// [`QueueTimeout`](crate::error::QueueTimeout) (or, in fail-fast mode,
    /// [`RateLimited`](crate::error::RateLimited)). Default: no limit but
    /// the request's [`Deadline`](crate::request::Deadline).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Fail fast: when the wait for admission would pass the request's
    /// deadline or the maximum wait, answer
    /// [`RateLimited`](crate::error::RateLimited) at once instead of waiting.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// The largest positive jitter added to a 429 cooldown, so the callers
    /// it paused do not return in lockstep (default 250 ms).
    pub fn cooldown_jitter(mut self, jitter: Duration) -> Self {
        self.cooldown_jitter = jitter;
        self
    }

    /// The cooldown after a 429 that gives no advice (default 1 s), and the
    /// longest cooldown honoured (default 60 s): advice longer than it —
    /// however long, even past what a `Duration` holds — closes the gate for
    /// this maximum.
    pub fn cooldown(mut self, default: Duration, max: Duration) -> Self {
        self.default_cooldown = default;
        self.max_cooldown = max;
        self
    }

    /// Idle groups (bucket refilled, nothing in flight or queued) are
    /// dropped after this long (default 10 min) …
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// … and at most this many groups exist (default 10,000; a hard
    /// bound). The map is sharded; a new group in a full shard takes the
    /// place of one no request holds, chosen by CLOCK (recently used ones
    /// are passed over once), in O(1) amortised time. A group evicted while
    /// its bucket refills leaves a 56-byte tombstone of its state (as many
    /// as groups), so its key gets no second burst unless the tombstones
    /// themselves overflow — more than twice this many keys active within
    /// one refill time. When every group of the shard is held by a request,
    /// the new one is refused with
    /// [`TooManyGroups`](crate::error::TooManyGroups). See `rate/groups.rs`.
    pub fn max_groups(mut self, max: usize) -> Self {
        self.max_groups = max;
        self
    }

    /// Calls `callback` when a group's use of a dimension crosses
    /// `fraction` (0 < fraction ≤ 1) upward — for example a warning at 80 %
    /// of a quota. Called once per crossing, outside any lock.
    pub fn on_threshold(
        mut self,
        fraction: f64,
        callback: impl Fn(&ThresholdEvent) + Send + Sync + 'static,
    ) -> Self {
        self.thresholds.push(Threshold {
            fraction,
            callback: Arc::new(callback),
        });
        self
    }

    /// The request header a gateway sets to give a priority (0–255, higher
    /// first) when no [`Priority`](crate::queue::Priority) extension is
    /// present; default `x-llm-priority`, `None` to ignore headers.
    pub fn priority_header(mut self, name: Option<http::HeaderName>) -> Self {
        self.priority_header = name;
        self
    }

    /// The output tokens reserved for a request that names no `max_tokens`
    /// (OpenAI makes it optional), or whose body cannot be read
    /// ([`Unparsed::Estimate`]); default 4,096. An unreadable body may ask
    /// for more than this: set it to the largest `max_tokens` your callers
    /// send, or refuse such bodies.
    pub fn default_output_tokens(mut self, tokens: u64) -> Self {
        self.default_output_tokens = tokens;
        self
    }

    /// What a request whose body cannot be read is charged: a conservative
    /// estimate from its size (default, [`Unparsed::Estimate`]), or
    /// refused with [`UnreadableRequest`] ([`Unparsed::Refuse`]). Never
    /// nothing.
    pub fn unparsed(mut self, policy: Unparsed) -> Self {
        self.unparsed = policy;
        self
    }

    /// Shares the buckets through Redis: every process (or layer value)
    /// with a handle to one server and the same key prefix admits against
    /// the same buckets, and never more than the limit between them. Each
    /// admission runs one atomic script on Redis's clock (see
    /// [`redis`](crate::redis)); this process's waiters keep their order
    /// and priority in its own queue, and each admission waits for Redis
    /// at most the handle's [timeout](crate::redis::Redis::with_timeout).
    /// Limits, learning and the 429 gate a response teaches stay this
    /// process's; the gate is also written to Redis for the others. A
    /// request is then never admitted in `call` (every admission is a
    /// round trip).
    ///
    /// Processes share a group only when their requests hash alike: they
    /// must install one [`KeyIdentity`](crate::request::KeyIdentity)
    /// secret.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, redis: crate::redis::Redis) -> Self {
        self.redis = Some(redis);
        self
    }

    /// What an admission does when Redis fails or gives no answer in time
    /// (default [`FailurePolicy::Local`] with one instance: set it to the
    /// number of processes sharing the quota).
    ///
    /// [`FailurePolicy::Local`]: crate::redis::FailurePolicy::Local
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_failure(mut self, policy: crate::redis::FailurePolicy) -> Self {
        self.redis_failure = policy;
        self
    }

    /// Leases: a process takes up to `requests` requests' worth of each
    /// dimension from Redis in one round trip (`requests` × the cost of
    /// the request that asked; fewer when a burst holds fewer), and admits
    /// locally from it, so one admission in about `requests` asks Redis.
    /// A lease takes what fits now — one request's cost at least — so a
    /// request is never kept waiting for credit it does not need. When
    /// not even that fits, the request that asks waits until the whole
    /// lease fits (and fail-fast judges that wait), so that a saturated
    /// limit still costs one round trip in about `requests`; the others
    /// are then admitted from it at once. Settlements (refunds, charges)
    /// are kept with the lease and sent with the next one; a 429's gate is
    /// still sent at once.
    /// Unused units go back with the next lease, or once a lease is a
    /// second old.
    ///
    /// The cost: units are counted in Redis when leased, not when used, so
    /// over any window the instances together may admit up to
    /// `instances × requests × cost` per dimension beyond the limit and
    /// burst (what each held, unused, as the window began). Default 0: no
    /// leases, every admission its own round trip.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_lease(mut self, requests: u32) -> Self {
        self.redis_lease = requests;
        self
    }

    /// Sends every request that carries no credentials of its own with a
    /// key of this pool, chosen at admission (see
    /// [`KeyPool`](super::KeyPool)). A request that carries credentials
    /// (an `x-api-key`, `authorization`, `api-key`… header, as
    /// [`KeyId`](crate::request::KeyId) reads them) is sent as it is, in
    /// the group of its own key.
    pub fn key_pool(mut self, pool: super::pool::KeyPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] for a zero `max_groups`, a threshold outside
    /// (0, 1], a zero learning period, or absurd durations.
    pub fn build(self) -> Result<super::RateLimitLayer, InvalidConfig> {
        let invalid = |field, reason| Err(InvalidConfig::new(field, reason));
        if self.max_groups == 0 {
            return invalid("max_groups", "must be at least 1");
        }
        if self
            .thresholds
            .iter()
            .any(|t| !(t.fraction > 0.0 && t.fraction <= 1.0))
        {
            return invalid("on_threshold", "a threshold must be in (0, 1]");
        }
        if self.learn_period.is_zero() {
            return invalid("learn_period", "must be positive");
        }
        let year = Duration::from_secs(365 * 24 * 3600);
        let durations = [
            ("cooldown_jitter", Some(self.cooldown_jitter)),
            ("cooldown", Some(self.default_cooldown)),
            ("cooldown", Some(self.max_cooldown)),
            ("idle_timeout", Some(self.idle_timeout)),
            ("max_wait", self.max_wait),
        ];
        if let Some((field, _)) = durations.iter().find(|(_, d)| d.is_some_and(|d| d > year)) {
            return invalid(field, "must be under a year");
        }
        #[cfg(feature = "redis")]
        if self.redis.is_some() {
            let max = crate::redis::limiter::MAX_CAPACITY_NANOS;
            let all = std::iter::once(&self.limits).chain(self.models.iter().map(|(_, l)| l));
            if all
                .flat_map(|l| l.as_array())
                .flatten()
                .any(|l| l.capacity_nanos() > max)
            {
                return invalid(
                    "limits",
                    "with Redis, a bucket must refill within 2^51 ns (about 26 days)",
                );
            }
            if let crate::redis::FailurePolicy::Local { instances } = self.redis_failure {
                if instances == 0 {
                    return invalid("redis_failure", "instances must be at least 1");
                }
                // The fallback's shares must be limits too (never the
                // full limit in their place).
                let all = std::iter::once(&self.limits).chain(self.models.iter().map(|(_, l)| l));
                for l in all {
                    super::remote::try_divided(*l, instances)?;
                }
            }
        }
        Ok(self.finish())
    }

    /// Builds without validation: only for settings known valid.
    pub(crate) fn finish(self) -> super::RateLimitLayer {
        let queue = self
            .shared_queue
            .unwrap_or_else(|| crate::queue::WaitQueue::new(self.queue));
        #[cfg(feature = "redis")]
        let remote = self.redis.map(|redis| {
            use crate::redis::FailurePolicy;
            // The fallback: the in-memory path at divided limits, waiting
            // in the same queue.
            let fallback = match self.redis_failure {
                FailurePolicy::Local { instances } => {
                    let divided = |l| super::remote::divided(l, instances);
                    let config = Config {
                        limits: divided(self.limits),
                        models: self
                            .models
                            .iter()
                            .map(|(m, l)| (m.clone(), divided(*l)))
                            .collect(),
                        // Never above its share by what the provider
                        // announces for everyone; tightened by `remaining`.
                        learning: match self.learning {
                            Learning::Off => Learning::Off,
                            _ => Learning::Tighten,
                        },
                        learn_period: self.learn_period,
                        max_wait: self.max_wait,
                        fail_fast: self.fail_fast,
                        cooldown_jitter: self.cooldown_jitter,
                        default_cooldown: self.default_cooldown,
                        max_cooldown: self.max_cooldown,
                        idle_timeout: self.idle_timeout,
                        max_groups: self.max_groups,
                        thresholds: Vec::new(),
                        priority_header: None,
                        default_output_tokens: self.default_output_tokens,
                        unparsed: self.unparsed,
                        remote: None,
                        // The same pool (its counters, and its place in
                        // the shared queue), at this process's share.
                        pool: self.pool.clone(),
                        calendar_share: instances,
                    };
                    Some(super::state::Limiter::new(config, queue.clone()))
                }
                _ => None,
            };
            super::remote::Remote::new(redis, self.redis_failure, fallback, self.redis_lease)
        });
        let config = Config {
            limits: self.limits,
            models: self.models,
            learning: self.learning,
            learn_period: self.learn_period,
            max_wait: self.max_wait,
            fail_fast: self.fail_fast,
            cooldown_jitter: self.cooldown_jitter,
            default_cooldown: self.default_cooldown,
            max_cooldown: self.max_cooldown,
            idle_timeout: self.idle_timeout,
            max_groups: self.max_groups,
            thresholds: self.thresholds,
            priority_header: self.priority_header,
            default_output_tokens: self.default_output_tokens,
            unparsed: self.unparsed,
            #[cfg(feature = "redis")]
            remote,
            pool: self.pool,
            calendar_share: 1,
        };
        super::RateLimitLayer::from_config(config, queue)
    }
}
