//! Simulator configuration: limits, time scale, faults, latency.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::error::InvalidConfig;

/// Per-minute limits for one (API key, model) pair.
///
/// Each is a continuously replenished token bucket whose capacity is the
/// per-minute limit (a full minute of burst, as Anthropic does) and which
/// refills at `limit / 60` per (scaled) second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute (RPM).
    pub requests_per_minute: u64,
    /// Input tokens per minute (ITPM).
    pub input_tokens_per_minute: u64,
    /// Output tokens per minute (OTPM).
    pub output_tokens_per_minute: u64,
}

impl Limits {
    /// Anthropic's published Tier 1: 50 RPM, 20,000 ITPM, 8,000 OTPM.
    pub const TIER_1: Self = Self::new(50, 20_000, 8_000);
    /// Anthropic's published Tier 2: 200 RPM, 80,000 ITPM, 16,000 OTPM.
    pub const TIER_2: Self = Self::new(200, 80_000, 16_000);
    /// Anthropic's published Tier 3: 1,000 RPM, 200,000 ITPM, 40,000 OTPM.
    pub const TIER_3: Self = Self::new(1_000, 200_000, 40_000);
    /// Anthropic's published Tier 4: 4,000 RPM, 400,000 ITPM, 80,000 OTPM.
    pub const TIER_4: Self = Self::new(4_000, 400_000, 80_000);

    /// Limits from requests, input tokens and output tokens per minute.
    #[must_use]
    pub const fn new(rpm: u64, itpm: u64, otpm: u64) -> Self {
        Self {
            requests_per_minute: rpm,
            input_tokens_per_minute: itpm,
            output_tokens_per_minute: otpm,
        }
    }

    fn validate(&self, model: Option<&str>) -> Result<(), InvalidConfig> {
        if self.requests_per_minute == 0
            || self.input_tokens_per_minute == 0
            || self.output_tokens_per_minute == 0
        {
            let reason: std::borrow::Cow<'static, str> = match model {
                None => "default limits must all be > 0".into(),
                Some(m) => format!("limits for model {m} must all be > 0").into(),
            };
            return Err(InvalidConfig::new(
                if model.is_some() {
                    "model_limits"
                } else {
                    "limits"
                },
                reason,
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    /// [`Limits::TIER_1`].
    fn default() -> Self {
        Self::TIER_1
    }
}

/// Fault injection rates, each a probability in `[0, 1]` drawn per request
/// from the seeded PRNG (so a given seed and request order always injects the
/// same faults).
///
/// Request-level faults (`rate_limited`, `overloaded`, `server_error`,
/// `service_unavailable`, `drop_connection`) are mutually exclusive and must sum to at most 1; they
/// are decided after authentication and validation and before the rate
/// limiter, and consume no quota. Body faults (`mid_stream_error`,
/// `truncate_stream`, `stalled_body`) are mutually exclusive and must also
/// sum to at most 1; the first two apply to admitted streaming requests,
/// `stalled_body` to every admitted request. `latency_spike` is drawn on
/// its own, before the request-level faults, and combines with any of them;
/// at 0 it draws nothing, so the seeded sequence of the others is as it
/// was without it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// A 429 `rate_limit_error` with `retry-after` of one provider second
    /// (scaled), as if another client had used the quota; consumes none.
    pub rate_limited: f64,
    /// Anthropic: 529 `overloaded_error`; OpenAI: 503 "The server is overloaded".
    pub overloaded: f64,
    /// 500 `api_error` / OpenAI `server_error`.
    pub server_error: f64,
    /// 503 (Anthropic `api_error`, OpenAI `server_error`).
    pub service_unavailable: f64,
    /// Close the connection without sending any response.
    ///
    /// Only effective when served by [`Simulator::listen`](super::Simulator::listen)
    /// / [`Simulator::start`](super::Simulator::start); a [`router`](super::Simulator::router)
    /// embedded in another server sends an empty 500 instead.
    pub drop_connection: f64,
    /// After HTTP 200 and some deltas, send an `overloaded_error` error event
    /// (OpenAI: a `data: {"error":…}` line) and end the stream.
    pub mid_stream_error: f64,
    /// End the stream after some deltas without `message_stop` / `[DONE]`.
    pub truncate_stream: f64,
    /// Send the 200 head and part of the body (the first events of a
    /// stream, or the first half of a JSON answer), then nothing for
    /// [`SimConfig::with_stall_duration`] (default 10 minutes), after which
    /// the connection is closed without the rest. The stall ends early only
    /// when the client goes away: the client's own timeouts must end it.
    pub stalled_body: f64,
    /// Delay the response head by [`SimConfig::with_latency_spike`]
    /// (default 5 s) on top of any other latency. Applies to every request
    /// that passed validation, however it is then answered (a dropped
    /// connection is dropped after the delay).
    pub latency_spike: f64,
}

impl Faults {
    /// No faults (the default).
    #[must_use]
    pub const fn none() -> Self {
        Self {
            rate_limited: 0.0,
            overloaded: 0.0,
            server_error: 0.0,
            service_unavailable: 0.0,
            drop_connection: 0.0,
            mid_stream_error: 0.0,
            truncate_stream: 0.0,
            stalled_body: 0.0,
            latency_spike: 0.0,
        }
    }

    /// Sets the injected 429 rate.
    #[must_use]
    pub const fn with_rate_limited(mut self, rate: f64) -> Self {
        self.rate_limited = rate;
        self
    }

    /// Sets the overloaded (529 / OpenAI 503) rate.
    #[must_use]
    pub const fn with_overloaded(mut self, rate: f64) -> Self {
        self.overloaded = rate;
        self
    }

    /// Sets the 500 rate.
    #[must_use]
    pub const fn with_server_error(mut self, rate: f64) -> Self {
        self.server_error = rate;
        self
    }

    /// Sets the 503 rate.
    #[must_use]
    pub const fn with_service_unavailable(mut self, rate: f64) -> Self {
        self.service_unavailable = rate;
        self
    }

    /// Sets the dropped-connection rate.
    #[must_use]
    pub const fn with_drop_connection(mut self, rate: f64) -> Self {
        self.drop_connection = rate;
        self
    }

    /// Sets the mid-stream error rate.
    #[must_use]
    pub const fn with_mid_stream_error(mut self, rate: f64) -> Self {
        self.mid_stream_error = rate;
        self
    }

    /// Sets the truncated-stream rate.
    #[must_use]
    pub const fn with_truncate_stream(mut self, rate: f64) -> Self {
        self.truncate_stream = rate;
        self
    }

    /// Sets the stalled-body rate.
    #[must_use]
    pub const fn with_stalled_body(mut self, rate: f64) -> Self {
        self.stalled_body = rate;
        self
    }

    /// Sets the latency-spike rate.
    #[must_use]
    pub const fn with_latency_spike(mut self, rate: f64) -> Self {
        self.latency_spike = rate;
        self
    }

    fn validate(&self) -> Result<(), InvalidConfig> {
        let all = [
            ("faults.rate_limited", self.rate_limited),
            ("faults.overloaded", self.overloaded),
            ("faults.server_error", self.server_error),
            ("faults.service_unavailable", self.service_unavailable),
            ("faults.drop_connection", self.drop_connection),
            ("faults.mid_stream_error", self.mid_stream_error),
            ("faults.truncate_stream", self.truncate_stream),
            ("faults.stalled_body", self.stalled_body),
            ("faults.latency_spike", self.latency_spike),
        ];
        for (name, value) in all {
            if !(0.0..=1.0).contains(&value) {
                let reason = format!("a fault rate must be within [0, 1], got {value}");
                return Err(InvalidConfig::new(name, reason));
            }
        }
        let request = self.rate_limited
            + self.overloaded
            + self.server_error
            + self.service_unavailable
            + self.drop_connection;
        if request > 1.0 + 1e-9 {
            let reason = format!("the request faults must sum to at most 1, got {request}");
            return Err(InvalidConfig::new("faults", reason));
        }
        let stream = self.mid_stream_error + self.truncate_stream + self.stalled_body;
        if stream > 1.0 + 1e-9 {
            let reason = format!("the body faults must sum to at most 1, got {stream}");
            return Err(InvalidConfig::new("faults", reason));
        }
        Ok(())
    }
}

/// Configuration of a [`Simulator`](super::Simulator).
///
/// Built with consuming `with_*` methods; checked when the simulator is
/// created ([`Simulator::new`](super::Simulator::new) returns a
/// [`InvalidConfig`]). API keys given to [`with_api_keys`](Self::with_api_keys)
/// never appear in `Debug` output.
#[derive(Clone)]
pub struct SimConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) limits: Limits,
    pub(crate) model_limits: BTreeMap<String, Limits>,
    pub(crate) time_scale: f64,
    pub(crate) seed: u64,
    pub(crate) faults: Faults,
    pub(crate) request_latency: Duration,
    pub(crate) token_latency: Duration,
    pub(crate) stall_duration: Duration,
    pub(crate) latency_spike: Duration,
    pub(crate) max_idempotency_keys: usize,
    pub(crate) output_tokens: (u64, u64),
    pub(crate) default_max_tokens: u64,
    pub(crate) round_remaining_tokens: bool,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_keys: usize,
    pub(crate) window: Option<Duration>,
    pub(crate) max_windows: usize,
    pub(crate) api_keys: Option<Vec<String>>,
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("addr", &self.addr)
            .field("limits", &self.limits)
            .field("model_limits", &self.model_limits)
            .field("time_scale", &self.time_scale)
            .field("seed", &self.seed)
            .field("faults", &self.faults)
            .field("request_latency", &self.request_latency)
            .field("token_latency", &self.token_latency)
            .field("stall_duration", &self.stall_duration)
            .field("latency_spike", &self.latency_spike)
            .field("max_idempotency_keys", &self.max_idempotency_keys)
            .field("output_tokens", &self.output_tokens)
            .field("default_max_tokens", &self.default_max_tokens)
            .field("round_remaining_tokens", &self.round_remaining_tokens)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_keys", &self.max_keys)
            .field("window", &self.window)
            .field("max_windows", &self.max_windows)
            .field(
                "api_keys",
                &self
                    .api_keys
                    .as_ref()
                    .map(|k| format!("<{} redacted>", k.len())),
            )
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SimConfig {
    /// Defaults: `127.0.0.1:0`, [`Limits::TIER_1`] for every model, time
    /// scale 1, seed 0, no faults, no latency, 20–200 output tokens per
    /// response, OpenAI default `max_tokens` 4096, token `remaining` rounded
    /// to the nearest thousand, 32 MiB body limit, 10,000 tracked
    /// (key, model) pairs, counter window one provider minute, 1,024 windows
    /// kept, any non-empty API key accepted; stalls of 10 minutes, latency
    /// spikes of 5 s, 65,536 idempotency keys counted.
    #[must_use]
    pub fn new() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            limits: Limits::TIER_1,
            model_limits: BTreeMap::new(),
            time_scale: 1.0,
            seed: 0,
            faults: Faults::none(),
            request_latency: Duration::ZERO,
            token_latency: Duration::ZERO,
            stall_duration: Duration::from_secs(600),
            latency_spike: Duration::from_secs(5),
            max_idempotency_keys: 65_536,
            output_tokens: (20, 200),
            default_max_tokens: 4096,
            round_remaining_tokens: true,
            max_body_bytes: 32 * 1024 * 1024,
            max_keys: 10_000,
            window: None,
            max_windows: 1024,
            api_keys: None,
        }
    }

    /// The address to bind (default `127.0.0.1:0`, an ephemeral port).
    #[must_use]
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Binds `127.0.0.1:port` (0 = ephemeral).
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        self
    }

    /// Default limits for every model without an override.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Limits for one model (exact match on the request's `model`).
    #[must_use]
    pub fn with_model_limits(mut self, model: impl Into<String>, limits: Limits) -> Self {
        self.model_limits.insert(model.into(), limits);
        self
    }

    /// Time scale: 60.0 makes a provider minute last one real second.
    ///
    /// Buckets refill `time_scale` times faster; everything on the wire
    /// (`retry-after`, resets, latency) stays in real time, so clients need
    /// not know the scale. When the scale is not 1, `retry-after-ms` is sent
    /// next to `retry-after` and Anthropic resets carry milliseconds.
    #[must_use]
    pub fn with_time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    /// The PRNG seed behind output lengths, text, ids and faults.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Fault injection rates.
    #[must_use]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Real-time latency before response headers (success and 5xx faults;
    /// 4xx and 429 answer at once).
    #[must_use]
    pub fn with_request_latency(mut self, latency: Duration) -> Self {
        self.request_latency = latency;
        self
    }

    /// Real-time latency per output token: paces stream deltas and delays a
    /// non-streaming response by `tokens × latency`.
    #[must_use]
    pub fn with_token_latency(mut self, latency: Duration) -> Self {
        self.token_latency = latency;
        self
    }

    /// How long a [stalled body](Faults::stalled_body) stays silent (real
    /// time) before the simulator closes its connection.
    #[must_use]
    pub fn with_stall_duration(mut self, stall: Duration) -> Self {
        self.stall_duration = stall;
        self
    }

    /// How long a [latency spike](Faults::latency_spike) delays the
    /// response head (real time).
    #[must_use]
    pub fn with_latency_spike(mut self, delay: Duration) -> Self {
        self.latency_spike = delay;
        self
    }

    /// How many distinct `idempotency-key` request headers are counted
    /// (default 65,536; see [`Simulator::idempotency`](super::Simulator::idempotency)).
    /// Once that many are held, a request with a new key is only counted in
    /// [`IdempotencySnapshot::untracked_arrivals`](super::IdempotencySnapshot::untracked_arrivals)
    /// and none is evicted, so the table never grows past the bound; 0
    /// counts none.
    #[must_use]
    pub fn with_max_idempotency_keys(mut self, max: usize) -> Self {
        self.max_idempotency_keys = max;
        self
    }

    /// The range output lengths are drawn from (then capped by `max_tokens`,
    /// which yields stop reason `max_tokens` / finish reason `length`).
    #[must_use]
    pub fn with_output_tokens(mut self, min: u64, max: u64) -> Self {
        self.output_tokens = (min, max);
        self
    }

    /// Output cap for OpenAI requests without `max_tokens` /
    /// `max_completion_tokens` (also what is reserved against OTPM).
    #[must_use]
    pub fn with_default_max_tokens(mut self, max_tokens: u64) -> Self {
        self.default_max_tokens = max_tokens;
        self
    }

    /// Whether token `remaining` headers are rounded to the nearest thousand
    /// (Anthropic does; default on). Request counts are never rounded.
    #[must_use]
    pub fn with_round_remaining_tokens(mut self, round: bool) -> Self {
        self.round_remaining_tokens = round;
        self
    }

    /// Largest accepted request body (default 32 MiB); larger → 413.
    #[must_use]
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// How many (key, model) bucket sets are tracked; beyond it, idle (full)
    /// ones and then the least recently used are evicted.
    #[must_use]
    pub fn with_max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }

    /// Length of a counter window in real time (default: one provider
    /// minute, i.e. `60 s / time_scale`).
    #[must_use]
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = Some(window);
        self
    }

    /// How many counter windows are kept (oldest dropped first).
    #[must_use]
    pub fn with_max_windows(mut self, max: usize) -> Self {
        self.max_windows = max;
        self
    }

    /// Only accept these API keys (others get 401). Default: any non-empty key.
    #[must_use]
    pub fn with_api_keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.api_keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// The configured time scale.
    #[must_use]
    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }

    /// The limits that apply to `model`.
    #[must_use]
    pub fn limits_for(&self, model: &str) -> Limits {
        self.model_limits.get(model).copied().unwrap_or(self.limits)
    }

    /// The counter window length in real time.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
            .unwrap_or_else(|| Duration::from_secs_f64(60.0 / self.time_scale))
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// An [`InvalidConfig`] naming the first invalid setting.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            let reason = format!("must be finite and > 0, got {}", self.time_scale);
            return Err(InvalidConfig::new("time_scale", reason));
        }
        self.limits.validate(None)?;
        for (model, limits) in &self.model_limits {
            limits.validate(Some(model))?;
        }
        self.faults.validate()?;
        let (min, max) = self.output_tokens;
        if min == 0 || min > max {
            let reason = format!("{min}..={max} must be non-empty and start at >= 1");
            return Err(InvalidConfig::new("output_tokens", reason));
        }
        let zeros = [
            ("default_max_tokens", self.default_max_tokens == 0),
            ("max_body_bytes", self.max_body_bytes == 0),
            ("max_keys", self.max_keys == 0),
            ("max_windows", self.max_windows == 0),
            ("window", self.window.is_some_and(|w| w.is_zero())),
        ];
        if let Some((name, _)) = zeros.iter().find(|(_, bad)| *bad) {
            return Err(InvalidConfig::new(name, "must be > 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
