//! The request flow both simulated APIs share: auth, body, validation,
//! faults, admission, generation, response.
//!
//! This file has the flow and the types it shares with the per-API modules
//! (`Parsed`, `SimError`, `Generation`, `Chunk`); `respond.rs` renders
//! responses: common headers, errors in each API's shape, the streamed body.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::bucket::{Buckets, Cost, Decision, Dimension, RateSnapshot, fingerprint};
use super::config::{Limits, SimConfig};
use super::counters::{Counters, InFlight};
use super::idempotency::{Done, Ledger};
use super::wire::{SplitMix64, word};
use super::{anthropic, openai};

mod respond;

use respond::{ChannelBody, Piece, WholeBody, base_headers, build, rate_headers};
pub(crate) use respond::{error_response, put, round_thousand};

/// Marker extension: the connection must be closed without a response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

/// Which API an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Anthropic,
    OpenAi,
}

/// State shared by every request of one simulator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) counters: Arc<Counters>,
    pub(crate) idempotency: Arc<Ledger>,
    buckets: Mutex<Buckets>,
    rng: Mutex<SplitMix64>,
}

impl Shared {
    pub(crate) fn new(config: SimConfig) -> Self {
        let counters = Arc::new(Counters::new(config.window(), config.max_windows));
        let buckets = Mutex::new(Buckets::new(config.max_keys, config.time_scale));
        let rng = Mutex::new(SplitMix64::new(config.seed));
        let idempotency = Arc::new(Ledger::new(config.max_idempotency_keys));
        Self {
            config,
            counters,
            idempotency,
            buckets,
            rng,
        }
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, Buckets> {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A per-request PRNG, seeded from the shared one in arrival order.
    fn request_rng(&self) -> SplitMix64 {
        let seed = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next_u64();
        SplitMix64::new(seed)
    }
}

/// What a validated request asks for.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub(crate) model: String,
    /// Output cap (`max_tokens`, or the configured default for OpenAI).
    pub(crate) max_tokens: u64,
    pub(crate) stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    pub(crate) input_tokens: u64,
}

/// An error a dialect renders in its own shape.
#[derive(Debug, Clone)]
pub(crate) enum SimError {
    MissingKey,
    InvalidKey,
    Invalid {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    BodyTooLarge {
        limit: usize,
    },
    RateLimited {
        model: String,
        dimension: Dimension,
        limit: u64,
        used: u64,
        requested: u64,
        wait: Duration,
    },
    TooLargeForLimit {
        model: String,
        dimension: Dimension,
        limit: u64,
        requested: u64,
    },
    Overloaded,
    Internal,
    Unavailable,
    NotFound,
    MethodNotAllowed,
}

impl SimError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            param: None,
            code: None,
        }
    }
}

/// The generated answer to one admitted request.
#[derive(Debug, Clone)]
pub(crate) struct Generation {
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) created: u64,
    pub(crate) input_tokens: u64,
    pub(crate) words: Vec<&'static str>,
    /// Output stopped at `max_tokens`.
    pub(crate) capped: bool,
    pub(crate) include_usage: bool,
}

impl Generation {
    pub(crate) fn output_tokens(&self) -> u64 {
        self.words.len() as u64
    }

    pub(crate) fn text(&self) -> String {
        self.words.join(" ")
    }

    /// The text of delta `i` (leading space after the first word).
    pub(crate) fn delta(&self, i: usize) -> String {
        match (i, self.words.get(i)) {
            (0, Some(w)) => (*w).to_owned(),
            (_, Some(w)) => format!(" {w}"),
            (_, None) => String::new(),
        }
    }
}

/// How an admitted stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    Complete,
    /// Error event after this many deltas.
    ErrorAfter(usize),
    /// Stream stops after this many deltas.
    TruncateAfter(usize),
}

/// One pre-rendered stream chunk.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub(crate) bytes: Bytes,
    /// Output tokens delivered once this chunk is sent (cumulative).
    pub(crate) tokens: u64,
    /// Whether the per-token latency is waited before this chunk.
    pub(crate) paced: bool,
}

/// The main entry: one request to one simulated endpoint.
pub(crate) async fn handle(shared: Arc<Shared>, api: Api, req: Request<Body>) -> Response<Body> {
    let guard = shared.counters.begin();
    let done = Ledger::key_of(req.headers()).map(|key| {
        shared.idempotency.arrived(key);
        Done {
            ledger: Arc::clone(&shared.idempotency),
            key,
        }
    });
    let mut rng = shared.request_rng();
    let request_id = match api {
        Api::Anthropic => format!("req_{}", rng.base62(24)),
        Api::OpenAi => format!("req_{}", rng.base62(32)),
    };
    let response = process(&shared, api, req, &mut rng, &request_id, guard, done).await;
    if response.extensions().get::<DropConnection>().is_some() {
        shared.counters.dropped();
    } else {
        shared.counters.status(response.status().as_u16());
    }
    response
}

fn api_key(api: Api, headers: &HeaderMap) -> Option<String> {
    let x_api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let key = match api {
        Api::Anthropic => x_api_key.or(bearer),
        Api::OpenAi => bearer.or(x_api_key),
    };
    key.map(str::to_owned)
}

async fn read_body(config: &SimConfig, req: Request<Body>) -> Result<Bytes, SimError> {
    let limit = config.max_body_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(SimError::BodyTooLarge { limit });
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(SimError::BodyTooLarge { limit }),
        Err(_) => Err(SimError::invalid("could not read the request body")),
    }
}

async fn process(
    shared: &Arc<Shared>,
    api: Api,
    req: Request<Body>,
    rng: &mut SplitMix64,
    request_id: &str,
    guard: InFlight,
    done: Option<Done>,
) -> Response<Body> {
    let config = &shared.config;
    let plain = |err: SimError| error_response(api, config, request_id, &err, None);

    // 1. auth
    let Some(key) = api_key(api, req.headers()) else {
        return plain(SimError::MissingKey);
    };
    if let Some(keys) = &config.api_keys
        && !keys.contains(&key)
    {
        return plain(SimError::InvalidKey);
    }
    let key = fingerprint(&key);

    // 2. body and validation
    let bytes = match read_body(config, req).await {
        Ok(b) => b,
        Err(e) => return plain(e),
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let err = match api {
                Api::Anthropic => SimError::invalid(format!("Invalid JSON in request body: {e}")),
                Api::OpenAi => SimError::invalid(
                    "We could not parse the JSON body of your request. (HINT: This likely means \
                     you aren't using your HTTP library correctly. The OpenAI API expects a JSON \
                     payload, but what was sent was not valid JSON. If you have trouble figuring \
                     out how to fix this, please contact us through our help center at \
                     help.openai.com.)",
                ),
            };
            return plain(err);
        }
    };
    let parsed = match api {
        Api::Anthropic => anthropic::parse(&value),
        Api::OpenAi => openai::parse(&value, config.default_max_tokens),
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => return plain(e),
    };
    let limits = config.limits_for(&parsed.model);
    let now = Instant::now();

    // 3. request-level faults (no quota consumed); a latency spike first,
    // drawn only when configured, so other seeded sequences stay as they were
    let f = config.faults;
    if f.latency_spike > 0.0 && rng.next_f64() < f.latency_spike {
        shared.counters.latency_spike();
        sleep(config.latency_spike).await;
    }
    let u = rng.next_f64();
    let table = [
        (f.overloaded, Some(SimError::Overloaded)),
        (f.server_error, Some(SimError::Internal)),
        (f.service_unavailable, Some(SimError::Unavailable)),
        (f.drop_connection, None),
    ];
    if u < f.rate_limited {
        sleep(config.request_latency).await;
        let snap = shared
            .buckets()
            .snapshot(key, &parsed.model, limits, Instant::now());
        let cost = Cost {
            input: parsed.input_tokens,
            output: parsed.max_tokens.min(limits.output_tokens_per_minute),
        };
        let wait = Duration::from_secs_f64(1.0 / config.time_scale());
        let err = limited_error(
            api,
            &parsed,
            limits,
            &snap,
            cost,
            Dimension::Requests,
            Some(wait),
        );
        shared.counters.injected_rate_limit();
        return error_response(api, config, request_id, &err, Some(&snap));
    }
    let mut edge = f.rate_limited;
    let mut fault = None;
    for (rate, err) in table {
        edge += rate;
        if u < edge {
            match err {
                Some(e) => fault = Some(e),
                None => {
                    let mut r = Response::new(Body::empty());
                    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    r.extensions_mut().insert(DropConnection);
                    return r;
                }
            }
            break;
        }
    }
    if let Some(err) = fault {
        sleep(config.request_latency).await;
        let snap = shared
            .buckets()
            .snapshot(key, &parsed.model, limits, Instant::now());
        return error_response(api, config, request_id, &err, Some(&snap));
    }

    // 4. admission
    let reserved = parsed.max_tokens.min(limits.output_tokens_per_minute);
    let cost = Cost {
        input: parsed.input_tokens,
        output: reserved,
    };
    let decision = shared
        .buckets()
        .admit(key, &parsed.model, limits, cost, now);
    let snapshot = match decision {
        Decision::Admitted(s) => s,
        Decision::Limited {
            snapshot,
            wait,
            dimension,
        } => {
            let err = limited_error(api, &parsed, limits, &snapshot, cost, dimension, Some(wait));
            return error_response(api, config, request_id, &err, Some(&snapshot));
        }
        Decision::TooLarge {
            snapshot,
            dimension,
        } => {
            let err = limited_error(api, &parsed, limits, &snapshot, cost, dimension, None);
            return error_response(api, config, request_id, &err, Some(&snapshot));
        }
    };
    let window = shared.counters.admitted(cost.input, cost.output);
    // Corrects the output reservation however the response ends (a client
    // that disconnects mid-way counts as having received what it got).
    let mut settlement = Settlement {
        shared: Arc::clone(shared),
        key,
        model: parsed.model.clone(),
        reserved,
        window,
        delivered: 0,
    };

    // 5. generation
    let (lo, hi) = config.output_tokens;
    let drawn = rng.range(lo, hi);
    let capped = drawn >= parsed.max_tokens;
    let n = drawn.min(parsed.max_tokens);
    let words = (0..n).map(|_| word(rng)).collect::<Vec<_>>();
    let id = match api {
        Api::Anthropic => format!("msg_{}", rng.base62(24)),
        Api::OpenAi => format!("chatcmpl-{}", rng.base62(29)),
    };
    let wall = SystemTime::now();
    let generation = Generation {
        id,
        model: parsed.model.clone(),
        created: wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        input_tokens: parsed.input_tokens,
        words,
        capped,
        include_usage: parsed.include_usage,
    };
    let v = rng.next_f64();
    let sf = config.faults;
    let end = if v < sf.mid_stream_error {
        StreamEnd::ErrorAfter(rng.range(n.min(1), n) as usize)
    } else if v < sf.mid_stream_error + sf.truncate_stream {
        StreamEnd::TruncateAfter(rng.range(n.min(1), n) as usize)
    } else {
        StreamEnd::Complete
    };
    // The third body fault, for every admitted request, streamed or not.
    let body_faults = sf.mid_stream_error + sf.truncate_stream;
    let stalled = v >= body_faults && v < body_faults + sf.stalled_body;
    if stalled {
        shared.counters.stalled();
    }
    // Only a whole answer completes its idempotency key (the stream ends
    // are drawn for every request but only cut streams).
    let done = done.filter(|_| (!parsed.stream || end == StreamEnd::Complete) && !stalled);

    let mut headers = base_headers(api, request_id, wall);
    rate_headers(api, config, &mut headers, &snapshot, wall);

    if !parsed.stream {
        let out = generation.output_tokens();
        sleep(config.request_latency + config.token_latency.saturating_mul(sat_u32(out))).await;
        settlement.delivered = out;
        drop(settlement);
        let body = match api {
            Api::Anthropic => anthropic::message(&generation),
            Api::OpenAi => openai::completion(&generation),
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = Bytes::from(body.to_string());
        if stalled {
            // the first half of the answer, then silence
            let (tx, rx) = mpsc::channel(1);
            let half = body.slice(..body.len() / 2);
            let stall = config.stall_duration;
            tokio::spawn(async move {
                let _guard = guard;
                if tx.send(Piece::Data(half)).await.is_ok() {
                    stall_then_cut(&tx, stall).await;
                }
            });
            return build(
                StatusCode::OK,
                headers,
                Body::new(ChannelBody::new(rx, None)),
            );
        }
        drop(guard);
        return build(
            StatusCode::OK,
            headers,
            Body::new(WholeBody::new(body, done)),
        );
    }

    // 6. streaming
    let chunks = match api {
        Api::Anthropic => anthropic::stream(&generation, end),
        Api::OpenAi => openai::stream(&generation, end),
    };
    match end {
        StreamEnd::ErrorAfter(_) => shared.counters.mid_stream_error(),
        StreamEnd::TruncateAfter(_) => shared.counters.truncated(),
        StreamEnd::Complete => {}
    }
    sleep(config.request_latency).await;
    let (tx, rx) = mpsc::channel::<Piece>(16);
    let token_latency = config.token_latency;
    // A stalled stream sends its first events (at least one, never the
    // last), then stalls.
    let last = chunks.len().saturating_sub(1) as u64;
    let stall_at = stalled.then(|| rng.range(1, last.max(1)) as usize);
    let stall = config.stall_duration;
    tokio::spawn(async move {
        let _guard = guard;
        for (i, chunk) in chunks.into_iter().enumerate() {
            if stall_at == Some(i) {
                stall_then_cut(&tx, stall).await;
                break;
            }
            if chunk.paced {
                sleep(token_latency).await;
            }
            if tx.send(Piece::Data(chunk.bytes)).await.is_err() {
                break; // client went away
            }
            settlement.delivered = chunk.tokens;
        }
        drop(settlement);
    });
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    build(
        StatusCode::OK,
        headers,
        Body::new(ChannelBody::new(rx, done)),
    )
}

/// A stalled body: silence until the client goes away or `stall` passes,
/// then the cut (hyper closes the connection without the rest).
async fn stall_then_cut(tx: &mpsc::Sender<Piece>, stall: Duration) {
    tokio::select! {
        () = tx.closed() => {}
        () = tokio::time::sleep(stall) => {
            let _ = tx.send(Piece::Cut).await;
        }
    }
}

fn sat_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// An admitted request's output reservation; on drop, the unused part is
/// refunded and the delivered output recorded in its counter window.
#[derive(Debug)]
struct Settlement {
    shared: Arc<Shared>,
    key: u64,
    model: String,
    reserved: u64,
    window: u64,
    delivered: u64,
}

impl Drop for Settlement {
    fn drop(&mut self) {
        let unused = self.reserved.saturating_sub(self.delivered);
        self.shared
            .buckets()
            .refund_output(self.key, &self.model, unused, Instant::now());
        self.shared.counters.generated(self.window, self.delivered);
    }
}

fn limited_error(
    api: Api,
    parsed: &Parsed,
    limits: Limits,
    snap: &RateSnapshot,
    cost: Cost,
    dimension: Dimension,
    wait: Option<Duration>,
) -> SimError {
    let (limit, remaining, requested) = match (api, dimension) {
        (_, Dimension::Requests) => (limits.requests_per_minute, snap.requests.remaining, 1),
        // OpenAI has one token limit: report the combined view.
        (Api::OpenAi, _) => (
            limits.input_tokens_per_minute + limits.output_tokens_per_minute,
            snap.input.remaining + snap.output.remaining,
            cost.input + cost.output,
        ),
        (Api::Anthropic, Dimension::InputTokens) => (
            limits.input_tokens_per_minute,
            snap.input.remaining,
            cost.input,
        ),
        (Api::Anthropic, Dimension::OutputTokens) => (
            limits.output_tokens_per_minute,
            snap.output.remaining,
            cost.output,
        ),
    };
    let model = parsed.model.clone();
    match wait {
        Some(wait) => SimError::RateLimited {
            model,
            dimension,
            limit,
            used: limit.saturating_sub(remaining),
            requested,
            wait,
        },
        None => SimError::TooLargeForLimit {
            model,
            dimension,
            limit,
            requested,
        },
    }
}
