//! The gateway of `examples/axum_gateway.rs`, as a module its test
//! (`tests/gateway.rs`) and the benchmark start in-process.
//!
//! What a request goes through, outermost first:
//!
//! ```text
//! SetSensitiveRequestHeaders (authorization, x-api-key, api-key: never logged)
//! → SetRequestId (x-gateway-request-id, unless the client sent one)
//! → Trace → PropagateRequestId (echoed on the response)
//! → RequestBodyLimit (413 above --body-limit)
//! → Timeout (504 once the answer's head takes a second past the deadline)
//! → GlobalConcurrencyLimit (--max-inflight inbound requests; others wait for a slot)
//! → forward: strip the client's credentials and hop-by-hop headers, set the
//!   gateway's upstream key, add the request's Deadline
//! → Stack (BufferBody → Cache → Fallback → Retry → RateLimit → ConcurrencyLimit)
//! → HyperClient → upstream
//! ```
//!
//! Responses, SSE streams included, are passed through frame by frame as
//! the upstream sends them; nothing buffers them. The stack's own refusals
//! become the provider's error shape for the API the client called.
//!
//! Shutdown (ctrl-c, SIGTERM, [`Gateway::shutdown`]) drains first: the
//! gateway keeps accepting, answers every new LLM request 503
//! `overloaded_error` with `retry-after: 1` and `connection: close`, and
//! `/health` 503 (a load balancer stops sending), while the requests in
//! flight — their response bodies, streams included, to the end — finish.
//! Once none is left (or after `--timeout` and a second more), it stops
//! accepting and closes its idle connections (axum's graceful shutdown),
//! then exits.

#![allow(dead_code)] // each includer (example, tests) uses a part

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower::ServiceExt;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::{ResponseBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;
use tower_llm_resilience::cache::CacheLayer;
use tower_llm_resilience::client::HyperClient;
use tower_llm_resilience::error::{
    BodyTooLarge, DeadlineElapsed, NoKeyAvailable, QueueFull, QueueTimeout, RateLimited,
    RequestTooLarge,
};
use tower_llm_resilience::rate::{Dimension, Limit, Limits, RateLimitLayer};
use tower_llm_resilience::sim::{self, Faults, SimConfig, SimHandle, Simulator};
use tower_llm_resilience::{BoxError, Deadline, Stack, StackService};

/// The header the gateway's request id travels in (the upstream's own
/// `request-id` / `x-request-id` pass through untouched).
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-gateway-request-id");

/// The key the gateway sends to its embedded simulator.
pub(crate) const SIM_KEY: &str = "sk-gateway-sim";

/// The gateway's help text.
pub(crate) const HELP: &str = "\
axum_gateway: an Anthropic + OpenAI shaped LLM gateway over the tower-llm-resilience stack

USAGE: axum_gateway [OPTIONS]

OPTIONS:
  --port N                 port on 127.0.0.1 (default 8080; 0 = any free one)
  --upstream URL           forward to this base URL instead of an embedded simulator
                           (upstream keys: ANTHROPIC_API_KEY, OPENAI_API_KEY)
  --openai-upstream URL    base URL for /v1/chat/completions (default: --upstream)
  --max-inflight N         inbound requests handled at once (default 1024)
  --upstream-concurrency N requests in flight upstream (default 256)
  --timeout SECS           per-request deadline (default 120)
  --body-limit BYTES       largest request body (default 8388608)
  --no-limits              do not configure the limiter with the quota flags
                           (it still learns from the upstream's headers)
  -v, --verbose            log every request (tower-http TraceLayer) on stderr
  -h, --help               this help

QUOTA (the embedded simulator's, and the gateway limiter's; as sim_server):
  --rpm N                  requests per minute (default 50)
  --itpm N                 input tokens per minute (default 20000)
  --otpm N                 output tokens per minute (default 8000)
  --time-scale F           60 = a provider minute lasts one real second (default 1)
  --seed N                 simulator PRNG seed (default 0)
  --output-tokens MIN:MAX  simulated output length (default 20:200)
  --latency-ms N           simulated latency before response headers
  --token-latency-ms N     simulated latency per output token
  --fault-429 P            injected 429 rate
  --fault-529 P            injected overloaded rate
";

/// An API key: its `Debug` shows no part of it.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The gateway's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Port on 127.0.0.1 (0: any free one).
    pub(crate) port: u16,
    /// Upstream base URL for the Anthropic API; `None`: an embedded simulator.
    pub(crate) upstream: Option<String>,
    /// Upstream base URL for the OpenAI API (default: `upstream`).
    pub(crate) openai_upstream: Option<String>,
    /// Inbound requests handled at once.
    pub(crate) max_inflight: usize,
    /// Requests in flight upstream.
    pub(crate) upstream_concurrency: usize,
    /// Per-request deadline.
    pub(crate) timeout: Duration,
    /// Largest request body.
    pub(crate) body_limit: usize,
    /// Whether the limiter is configured with the quota below.
    pub(crate) configure_limits: bool,
    /// The quota (per provider minute).
    pub(crate) quota: sim::Limits,
    /// Provider minutes per real minute.
    pub(crate) time_scale: f64,
    /// Simulator seed.
    pub(crate) seed: u64,
    /// Simulated output length range.
    pub(crate) output_tokens: (u64, u64),
    /// Simulated latency before headers.
    pub(crate) latency: Duration,
    /// Simulated latency per output token.
    pub(crate) token_latency: Duration,
    /// Simulated faults.
    pub(crate) faults: Faults,
    /// Log every request on stderr.
    pub(crate) verbose: bool,
    /// The upstream's Anthropic key (with `upstream`; from `ANTHROPIC_API_KEY`).
    pub(crate) anthropic_key: Option<Secret>,
    /// The upstream's OpenAI key (with `upstream`; from `OPENAI_API_KEY`).
    pub(crate) openai_key: Option<Secret>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 8080,
            upstream: None,
            openai_upstream: None,
            max_inflight: 1024,
            upstream_concurrency: 256,
            timeout: Duration::from_secs(120),
            body_limit: 8 << 20,
            configure_limits: true,
            quota: sim::Limits::TIER_1,
            time_scale: 1.0,
            seed: 0,
            output_tokens: (20, 200),
            latency: Duration::ZERO,
            token_latency: Duration::ZERO,
            faults: Faults::none(),
            verbose: false,
            anthropic_key: None,
            openai_key: None,
        }
    }
}

fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
}

impl Options {
    /// Parses command-line arguments (without the program name); `Ok(None)`
    /// for `--help`.
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Self>, String> {
        let mut o = Options {
            anthropic_key: env_key("ANTHROPIC_API_KEY"),
            openai_key: env_key("OPENAI_API_KEY"),
            ..Options::default()
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "-v" | "--verbose" => o.verbose = true,
                "--port" => o.port = value(&flag, args.next())?,
                "--upstream" => o.upstream = Some(value(&flag, args.next())?),
                "--openai-upstream" => o.openai_upstream = Some(value(&flag, args.next())?),
                "--max-inflight" => o.max_inflight = value(&flag, args.next())?,
                "--upstream-concurrency" => o.upstream_concurrency = value(&flag, args.next())?,
                "--timeout" => o.timeout = Duration::from_secs_f64(value(&flag, args.next())?),
                "--body-limit" => o.body_limit = value(&flag, args.next())?,
                "--no-limits" => o.configure_limits = false,
                "--rpm" => o.quota.requests_per_minute = value(&flag, args.next())?,
                "--itpm" => o.quota.input_tokens_per_minute = value(&flag, args.next())?,
                "--otpm" => o.quota.output_tokens_per_minute = value(&flag, args.next())?,
                "--time-scale" => o.time_scale = value(&flag, args.next())?,
                "--seed" => o.seed = value(&flag, args.next())?,
                "--latency-ms" => o.latency = Duration::from_millis(value(&flag, args.next())?),
                "--token-latency-ms" => {
                    o.token_latency = Duration::from_millis(value(&flag, args.next())?);
                }
                "--fault-429" => o.faults.rate_limited = value(&flag, args.next())?,
                "--fault-529" => o.faults.overloaded = value(&flag, args.next())?,
                "--output-tokens" => {
                    let v: String = value(&flag, args.next())?;
                    o.output_tokens = v
                        .split_once(':')
                        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                        .ok_or_else(|| format!("--output-tokens: expected MIN:MAX, got {v:?}"))?;
                }
                other => return Err(format!("unknown argument {other:?} (try --help)")),
            }
        }
        if o.max_inflight == 0 || o.upstream_concurrency == 0 {
            return Err("--max-inflight and --upstream-concurrency must be at least 1".into());
        }
        if !(o.time_scale.is_finite() && o.time_scale > 0.0) {
            return Err(format!(
                "--time-scale: must be positive, got {}",
                o.time_scale
            ));
        }
        if o.timeout.is_zero() {
            return Err("--timeout: must be positive".into());
        }
        Ok(Some(o))
    }

    /// The limiter's limits: the quota, a provider minute lasting
    /// `60 / time_scale` real seconds, each with a full minute of burst
    /// (as the simulator and the providers count them).
    fn limits(&self) -> Result<Limits, BoxError> {
        let period = Duration::from_secs_f64(60.0 / self.time_scale);
        let per = |n: u64| Limit::new(n, period, n);
        Ok(Limits::unlimited()
            .requests(per(self.quota.requests_per_minute)?)
            .input_tokens(per(self.quota.input_tokens_per_minute)?)
            .output_tokens(per(self.quota.output_tokens_per_minute)?))
    }
}

/// Which API a request speaks, from its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /v1/chat/completions`.
    OpenAi,
}

impl Api {
    fn label(self) -> &'static str {
        match self {
            Api::Anthropic => "anthropic",
            Api::OpenAi => "openai",
        }
    }
}

/// Where one API is forwarded to, and with which key.
#[derive(Clone)]
struct Upstream {
    base: String,
    /// The credential header and its (sensitive) value; `None`: the gateway
    /// holds no key for this API.
    auth: Option<(HeaderName, HeaderValue)>,
}

#[derive(Clone)]
struct AppState {
    stack: StackService<HyperClient>,
    rate: RateLimitLayer,
    cache: CacheLayer,
    anthropic: Upstream,
    openai: Upstream,
    timeout: Duration,
    metrics: PrometheusHandle,
    counters: &'static Counters,
    drain: Arc<Drain>,
}

/// The gateway's requests in flight, and whether it is draining (shutting
/// down): what a shutdown waits for before it stops accepting.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Drain {
    /// LLM requests admitted and not yet answered to the end of their body.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Whether new requests are refused.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Refuses new requests, then waits until none is in flight, for at
    /// most `grace`.
    async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(grace, async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
    }
}

/// One request in flight: counted from admission until its response body
/// ends or is dropped.
struct InFlight(Arc<Drain>);

impl InFlight {
    fn new(drain: &Arc<Drain>) -> Self {
        drain.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(drain))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Counts an LLM request in flight until its body ends; while draining,
/// refuses it instead. Counted before the check, so a shutdown either sees
/// the request or the request sees the shutdown.
async fn drain_gate(State(drain): State<Arc<Drain>>, req: Request, next: Next) -> Response {
    let guard = InFlight::new(&drain);
    if drain.draining() {
        drop(guard);
        let api = if req.uri().path() == "/v1/chat/completions" {
            Api::OpenAi
        } else {
            Api::Anthropic
        };
        let mut res = error(
            api,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
            "the gateway is shutting down; retry on another instance",
            Some(Duration::from_secs(1)),
        );
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    let res = next.run(req).await;
    // The guard lives in the body: dropped when it ends or is dropped.
    res.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _ = &guard;
            frame
        }))
    })
}

/// `/health`: 200 `ok`, or 503 `draining` once a shutdown started.
async fn health(State(s): State<AppState>) -> Response {
    if s.drain.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        "ok".into_response()
    }
}

/// The gateway's own request counters (also exported on `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Requests answered (any status).
    pub(crate) answered: AtomicU64,
    /// Answers with status 429.
    pub(crate) status_429: AtomicU64,
    /// Answers with a 5xx status.
    pub(crate) status_5xx: AtomicU64,
}

/// The process-wide Prometheus recorder (the `metrics` facade has one
/// global recorder; a second gateway in the same process shares it).
fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Gauges not set for a minute are dropped: the limiter's are
            // set at each scrape for the groups that exist then, so a
            // group the limiter evicted (a million distinct model names,
            // say) leaves no series behind, and the set stays within the
            // limiter's own bound.
            let recorder = PrometheusBuilder::new()
                .idle_timeout(
                    metrics_util::MetricKindMask::GAUGE,
                    Some(Duration::from_secs(60)),
                )
                .build_recorder();
            let handle = recorder.handle();
            // Already set (by the application): our metrics go there, and
            // `/metrics` shows only what this handle's recorder holds.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// A running gateway.
pub(crate) struct Gateway {
    addr: SocketAddr,
    sim: Option<SimHandle>,
    counters: &'static Counters,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    drain: Arc<Drain>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn auth(api: Api, key: &str) -> Result<(HeaderName, HeaderValue), BoxError> {
    let (name, value) = match api {
        Api::Anthropic => (
            HeaderName::from_static("x-api-key"),
            HeaderValue::try_from(key)?,
        ),
        Api::OpenAi => (
            header::AUTHORIZATION,
            HeaderValue::try_from(format!("Bearer {key}"))?,
        ),
    };
    let mut value = value;
    value.set_sensitive(true);
    Ok((name, value))
}

fn env_key(var: &str) -> Option<Secret> {
    std::env::var(var)
        .ok()
        .filter(|k| !k.is_empty())
        .map(Secret)
}

impl Gateway {
    /// Starts the gateway (and, without `upstream`, its simulator); it
    /// serves until [`shutdown`](Self::shutdown), ctrl-c or SIGTERM.
    pub(crate) async fn start(o: &Options) -> Result<Gateway, BoxError> {
        let (sim, anthropic, openai) = match &o.upstream {
            None => {
                let sim = Simulator::start(
                    SimConfig::new()
                        .with_limits(o.quota)
                        .with_time_scale(o.time_scale)
                        .with_seed(o.seed)
                        .with_output_tokens(o.output_tokens.0, o.output_tokens.1)
                        .with_request_latency(o.latency)
                        .with_token_latency(o.token_latency)
                        .with_faults(o.faults),
                )
                .await?;
                let url = sim.url();
                let anthropic = Upstream {
                    base: url.clone(),
                    auth: Some(auth(Api::Anthropic, SIM_KEY)?),
                };
                let openai = Upstream {
                    base: url,
                    auth: Some(auth(Api::OpenAi, SIM_KEY)?),
                };
                (Some(sim), anthropic, openai)
            }
            Some(url) => {
                let (a, b) = (o.anthropic_key.as_ref(), o.openai_key.as_ref());
                if a.is_none() && b.is_none() {
                    return Err("--upstream: set ANTHROPIC_API_KEY and/or OPENAI_API_KEY".into());
                }
                let anthropic = Upstream {
                    base: base(url)?,
                    auth: a.map(|k| auth(Api::Anthropic, &k.0)).transpose()?,
                };
                let openai = Upstream {
                    base: base(o.openai_upstream.as_deref().unwrap_or(url))?,
                    auth: b.map(|k| auth(Api::OpenAi, &k.0)).transpose()?,
                };
                (None, anthropic, openai)
            }
        };

        // Fail fast: a request that cannot be admitted before its deadline
        // is answered 429 with `retry-after` at once, not held to a 504.
        let mut rate = RateLimitLayer::builder().fail_fast(true);
        if o.configure_limits {
            rate = rate.limits(o.limits()?);
        }
        let rate = rate.build()?;
        let cache = CacheLayer::new();
        let stack = Stack::builder()
            .body_limit(o.body_limit)
            .cache(cache.clone())
            .rate_limit(rate.clone())
            .concurrency(o.upstream_concurrency)
            .service(HyperClient::new());

        let counters: &'static Counters = Box::leak(Box::default());
        let drain = Arc::new(Drain::default());
        let state = AppState {
            stack,
            rate,
            cache,
            anthropic,
            openai,
            timeout: o.timeout,
            metrics: recorder(),
            counters,
            drain: Arc::clone(&drain),
        };
        let app = router(state, o);

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", o.port)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (draining, grace) = (Arc::clone(&drain), o.timeout + Duration::from_secs(1));
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    shutdown_signal(rx).await;
                    draining.drain(grace).await;
                })
                .await
        });
        Ok(Gateway {
            addr,
            sim,
            counters,
            shutdown: Some(tx),
            server,
            drain,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The embedded simulator, if any.
    pub(crate) fn sim(&self) -> Option<&SimHandle> {
        self.sim.as_ref()
    }

    /// The gateway's own counters.
    pub(crate) fn counters(&self) -> &Counters {
        self.counters
    }

    /// Its requests in flight and whether it is draining.
    pub(crate) fn drain(&self) -> &Drain {
        &self.drain
    }

    /// Starts the shutdown [`shutdown`](Self::shutdown) waits for: new
    /// requests are refused from now on, those in flight finish.
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits until the server stops (ctrl-c, SIGTERM, or `shutdown`), then
    /// lets in-flight requests finish.
    pub(crate) async fn wait(&mut self) -> Result<(), BoxError> {
        (&mut self.server).await??;
        Ok(())
    }

    /// Drains (new requests refused, those in flight finished), stops
    /// accepting (axum's graceful shutdown), then stops the simulator.
    pub(crate) async fn shutdown(mut self) -> Result<(), BoxError> {
        self.begin_shutdown();
        self.wait().await?;
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
        Ok(())
    }
}

/// An upstream base URL, checked, without a trailing `/`.
fn base(url: &str) -> Result<String, BoxError> {
    let uri: Uri = url.parse()?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(format!("--upstream: expected an http(s) URL, got {url:?}").into());
    }
    Ok(url.trim_end_matches('/').to_owned())
}

async fn shutdown_signal(rx: tokio::sync::oneshot::Receiver<()>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
        _ = rx => {}
    }
}

fn router(state: AppState, o: &Options) -> Router {
    let sensitive: [HeaderName; 3] = [
        header::AUTHORIZATION,
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("api-key"),
    ];
    let llm = Router::new()
        .route("/v1/messages", post(anthropic))
        .route("/v1/chat/completions", post(openai))
        .route_layer(GlobalConcurrencyLimitLayer::new(o.max_inflight))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.drain),
            drain_gate,
        ));
    // The outermost layer is listed first (tower's ServiceBuilder order).
    let middleware = tower::ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
        // A response body (a stream) that stays silent this long is ended:
        // an upstream stalled mid-body must not hold the client, the
        // inbound slot and the stack's concurrency permit for ever.
        .layer(ResponseBodyTimeoutLayer::new(o.timeout))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(RequestBodyLimitLayer::new(o.body_limit))
        // A second after the stack's own deadline, so the stack answers
        // first with what it knows (429 with retry-after, or 504).
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            o.timeout + Duration::from_secs(1),
        ));
    llm.route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .layer(middleware)
        .with_state(state)
}

async fn anthropic(State(s): State<AppState>, req: Request) -> Response {
    forward(s, Api::Anthropic, req).await
}

async fn openai(State(s): State<AppState>, req: Request) -> Response {
    forward(s, Api::OpenAi, req).await
}

/// Request headers never forwarded: the client's credentials (the gateway
/// sends its own), hop-by-hop headers, `host` and `content-length` (hyper
/// sets both for the upstream), and `accept-encoding` (the stack reads
/// usage from the response body, so it must come uncompressed).
const DROP_REQUEST: [&str; 14] = [
    "authorization",
    "x-api-key",
    "api-key",
    "proxy-authorization",
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "accept-encoding",
];

/// Response headers not passed back: hop-by-hop ones.
const DROP_RESPONSE: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "trailer",
    "upgrade",
];

async fn forward(s: AppState, api: Api, req: Request) -> Response {
    let started = Instant::now();
    let upstream = match api {
        Api::Anthropic => &s.anthropic,
        Api::OpenAi => &s.openai,
    };
    let res = match &upstream.auth {
        None => error(
            api,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "the gateway holds no upstream key for this API",
            None,
        ),
        Some((name, value)) => {
            let (parts, body) = req.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            match format!("{}{path}", upstream.base).parse::<Uri>() {
                Err(_) => error(
                    api,
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "bad path",
                    None,
                ),
                Ok(uri) => {
                    let mut out = http::Request::new(body);
                    *out.method_mut() = Method::POST;
                    *out.uri_mut() = uri;
                    *out.headers_mut() = forwarded_headers(parts.headers, api);
                    out.headers_mut().insert(name.clone(), value.clone());
                    out.extensions_mut().insert(Deadline::after(s.timeout));
                    match s.stack.clone().oneshot(out).await {
                        Ok(res) => {
                            let (mut parts, body) = res.into_parts();
                            for h in DROP_RESPONSE {
                                parts.headers.remove(h);
                            }
                            Response::from_parts(parts, Body::new(body))
                        }
                        Err(e) => refusal(api, &e),
                    }
                }
            }
        }
    };
    let status = res.status();
    s.counters.answered.fetch_add(1, Ordering::Relaxed);
    if status == StatusCode::TOO_MANY_REQUESTS {
        s.counters.status_429.fetch_add(1, Ordering::Relaxed);
    } else if status.is_server_error() {
        s.counters.status_5xx.fetch_add(1, Ordering::Relaxed);
    }
    metrics::counter!("gateway_requests_total", "api" => api.label(), "status" => status.as_str().to_owned())
        .increment(1);
    metrics::histogram!("gateway_response_head_seconds", "api" => api.label())
        .record(started.elapsed().as_secs_f64());
    res
}

fn forwarded_headers(mut headers: HeaderMap, api: Api) -> HeaderMap {
    for h in DROP_REQUEST {
        headers.remove(h);
    }
    if api == Api::Anthropic && !headers.contains_key("anthropic-version") {
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    headers
}

/// The stack's refusal as the provider would have answered it.
fn refusal(api: Api, e: &BoxError) -> Response {
    let secs = |d: Duration| Some(d);
    if let Some(r) = e.downcast_ref::<RateLimited>() {
        return error(
            api,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            &e.to_string(),
            secs(r.retry_after),
        );
    }
    if let Some(r) = e.downcast_ref::<NoKeyAvailable>() {
        return error(
            api,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            &e.to_string(),
            secs(r.retry_after),
        );
    }
    if e.is::<QueueFull>() {
        return error(
            api,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
            &e.to_string(),
            secs(Duration::from_secs(1)),
        );
    }
    if e.is::<QueueTimeout>() || e.is::<DeadlineElapsed>() {
        return error(
            api,
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            &e.to_string(),
            None,
        );
    }
    if e.is::<RequestTooLarge>() {
        return error(
            api,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &e.to_string(),
            None,
        );
    }
    if body_too_large(e) {
        return error(
            api,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            &e.to_string(),
            None,
        );
    }
    tracing::warn!(error = %e, "upstream failed");
    error(
        api,
        StatusCode::BAD_GATEWAY,
        "api_error",
        "the upstream could not be reached",
        None,
    )
}

/// Whether the request body was refused for its size: by the stack
/// ([`BodyTooLarge`]), or by the `RequestBodyLimitLayer` in front of it,
/// whose body fails with `LengthLimitError` (wrapped by axum's body) when a
/// chunked upload passes the limit mid-read — a declared length over it is
/// answered 413 before the handler runs.
fn body_too_large(e: &BoxError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = cur {
        if err.is::<BodyTooLarge>() || err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// An error in the shape of `api`, with `retry-after` (whole seconds,
/// rounded up) and `retry-after-ms` when a retry time is known.
fn error(
    api: Api,
    status: StatusCode,
    kind: &str,
    message: &str,
    retry: Option<Duration>,
) -> Response {
    let body = match api {
        Api::Anthropic => serde_json::json!({
            "type": "error",
            "error": { "type": kind, "message": message },
        }),
        Api::OpenAi => serde_json::json!({
            "error": { "message": message, "type": kind, "param": null, "code": null },
        }),
    };
    let mut res = (status, axum::Json(body)).into_response();
    if let Some(d) = retry {
        let h = res.headers_mut();
        let ms = d.as_millis().max(1);
        h.insert("retry-after-ms", HeaderValue::from(ms as u64));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(ms.div_ceil(1000) as u64),
        );
    }
    res
}

/// `/metrics`: what the `metrics` facade recorded (the gateway's request
/// counters, and the crate's own metrics when its `metrics` feature is on),
/// plus the limiters' `stats()` and the cache's requests in flight as
/// gauges, read at each scrape: what an operator (or the soak test) reads
/// to see that nothing is held once the traffic stops.
async fn metrics_text(State(s): State<AppState>) -> Response {
    let c = s.stack.concurrency_limit().stats();
    metrics::gauge!("tower_llm_concurrency_in_flight").set(c.in_flight as f64);
    metrics::gauge!("tower_llm_concurrency_queued").set(c.queued as f64);
    metrics::gauge!("tower_llm_concurrency_cap").set(c.cap as f64);
    metrics::gauge!("tower_llm_cache_in_flight").set(s.cache.in_flight() as f64);
    for g in s.rate.stats() {
        let model = g.model.as_deref().unwrap_or("").to_owned();
        let key = g.key.map(|k| k.to_string()).unwrap_or_default();
        let labels = [("model", model), ("key", key)];
        metrics::gauge!("tower_llm_rate_queued", &labels).set(g.queued as f64);
        metrics::gauge!("tower_llm_rate_in_flight", &labels).set(f64::from(g.in_flight));
        for d in Dimension::ALL {
            let i = d.index();
            let labels = [
                labels[0].clone(),
                labels[1].clone(),
                ("dimension", d.name().to_owned()),
            ];
            if let Some(a) = g.available[i] {
                metrics::gauge!("tower_llm_rate_available", &labels).set(a as f64);
            }
            if let Some(u) = g.utilization[i] {
                metrics::gauge!("tower_llm_rate_utilization", &labels).set(u);
            }
            if let Some(l) = g.effective[i] {
                metrics::gauge!("tower_llm_rate_limit", &labels).set(l.amount() as f64);
            }
        }
    }
    s.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}
