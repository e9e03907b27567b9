//! Targets of a fallback chain, and the triggers that move a request along.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use serde_json::{Map, Value};
use tower_service::Service;

use crate::error::{BoxError, QueueTimeout, RateLimited};
use crate::provider::{ErrorClass, ErrorKind};
use crate::request::{ReplayBody, RequestMeta};
use crate::response::ResponseBody;

/// A boxed future of a target on another service.
pub(crate) type BoxFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send>>;

/// A service of another provider or endpoint, boxed so that targets of
/// different types fit in one chain.
pub(crate) trait DynService: Send + Sync {
    fn call(&self, req: Request<ReplayBody>) -> BoxFuture;
}

struct ServiceTarget<S> {
    svc: S,
}

impl<S, RB> DynService for ServiceTarget<S>
where
    S: Service<Request<ReplayBody>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    fn call(&self, req: Request<ReplayBody>) -> BoxFuture {
        let mut svc = self.svc.clone();
        Box::pin(async move { call(&mut svc, req).await })
    }
}

/// Rewrites a request for a target; `Err` skips the target.
pub type RequestMapper =
    Arc<dyn Fn(Request<ReplayBody>) -> Result<Request<ReplayBody>, BoxError> + Send + Sync>;

/// Rewrites a target's response back into the caller's API, given the
/// original request's metadata.
pub type ResponseMapper =
    Arc<dyn Fn(Response<ResponseBody>, Arc<RequestMeta>) -> BoxFuture + Send + Sync>;

pub(crate) enum Route {
    /// The same inner service, the body rewritten for another model.
    Model {
        model: Arc<str>,
        max_tokens: Option<u64>,
        overrides: Map<String, Value>,
    },
    /// Another service, with mappers.
    Service {
        svc: Arc<dyn DynService>,
        map_request: RequestMapper,
        map_response: Option<ResponseMapper>,
    },
}

/// One step of a fallback chain.
pub struct Target {
    pub(crate) name: Arc<str>,
    pub(crate) route: Route,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.route {
            Route::Model { .. } => "model",
            Route::Service { .. } => "service",
        };
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("kind", &kind)
            .finish()
    }
}

impl Target {
    /// Another model on the same service: the request body's `model` is
    /// replaced (and its metadata re-read).
    pub fn model(model: impl Into<Arc<str>>) -> Self {
        let model = model.into();
        Target {
            name: Arc::clone(&model),
            route: Route::Model {
                model,
                max_tokens: None,
                overrides: Map::new(),
            },
        }
    }

    /// Caps `max_tokens` (and `max_completion_tokens`) for a model target —
    /// smaller models often allow fewer output tokens.
    #[must_use]
    pub fn max_tokens(mut self, cap: u64) -> Self {
        if let Route::Model { max_tokens, .. } = &mut self.route {
            *max_tokens = Some(cap);
        }
        self
    }

    /// Sets a top-level body field for a model target (e.g. a lower
    /// `temperature`, another `system`).
    #[must_use]
    pub fn with_field(mut self, name: impl Into<String>, value: Value) -> Self {
        if let Route::Model { overrides, .. } = &mut self.route {
            overrides.insert(name.into(), value);
        }
        self
    }

    /// Another service (another provider or endpoint): `map_request`
    /// rewrites the request for it (`Err` skips this target);
    /// `map_response`, when given, rewrites its response back.
    pub fn service<S, RB>(
        name: impl Into<Arc<str>>,
        svc: S,
        map_request: impl Fn(Request<ReplayBody>) -> Result<Request<ReplayBody>, BoxError>
        + Send
        + Sync
        + 'static,
        map_response: Option<ResponseMapper>,
    ) -> Self
    where
        S: Service<Request<ReplayBody>, Response = Response<RB>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        RB: http_body::Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        Target {
            name: name.into(),
            route: Route::Service {
                svc: Arc::new(ServiceTarget { svc }),
                map_request: Arc::new(map_request),
                map_response,
            },
        }
    }

    /// An OpenAI Chat Completions model on `svc` (any client service), for
    /// Anthropic Messages requests: the request is mapped (text, system,
    /// no tools; others skip this target) and the response mapped back,
    /// see [`openai`](super::openai). `endpoint` is the full URL of
    /// `/v1/chat/completions`; `api_key` is sent as a sensitive bearer
    /// token.
    pub fn openai<S, RB>(
        model: impl Into<Arc<str>>,
        svc: S,
        endpoint: http::Uri,
        api_key: HeaderValue,
    ) -> Self
    where
        S: Service<Request<ReplayBody>, Response = Response<RB>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        RB: http_body::Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        let model: Arc<str> = model.into();
        let name = Arc::clone(&model);
        Target::service(
            name,
            svc,
            move |req| super::openai::map_request(req, &model, &endpoint, &api_key),
            Some(super::openai::response_mapper()),
        )
    }

    /// The target's name (the model, or the name given to a service).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Replaces the body's model (and caps, fields) and re-reads the metadata.
pub(crate) fn rewrite_model(
    mut req: Request<ReplayBody>,
    model: &str,
    max_tokens: Option<u64>,
    overrides: &Map<String, Value>,
) -> Result<Request<ReplayBody>, BoxError> {
    let mut body: Map<String, Value> = serde_json::from_slice(req.body().as_bytes())?;
    body.insert("model".into(), Value::from(model));
    if let Some(cap) = max_tokens {
        for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            if let Some(v) = body.get_mut(field)
                && v.as_u64().is_none_or(|n| n > cap)
            {
                *v = Value::from(cap);
            }
        }
    }
    for (k, v) in overrides {
        body.insert(k.clone(), v.clone());
    }
    let bytes = Bytes::from(serde_json::to_vec(&body)?);
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    *req.body_mut() = ReplayBody::new(bytes);
    reparse(&mut req);
    Ok(req)
}

/// Stores fresh metadata for a rewritten request.
pub(crate) fn reparse(req: &mut Request<ReplayBody>) {
    let meta = RequestMeta::parse(req.uri().path(), req.headers(), req.body().as_bytes());
    req.extensions_mut().insert(Arc::new(meta));
}

/// What moved a request to the next target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// A final response with this status (after the layers below gave up).
    Status(StatusCode),
    /// A classified provider error (from an error body or a stream's first
    /// event), e.g. an exhausted quota or a context-length error.
    Error(ErrorKind),
    /// The limiter's fail-fast answer: waiting would pass the deadline.
    RateLimited(Duration),
    /// A timeout (the admission queue's, or the transport's).
    Timeout,
    /// The target was skipped: it is cooling down after an earlier trigger.
    CoolingDown,
}

/// A finished attempt, as a [`FallbackPolicy`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure<'a> {
    /// A response.
    Response {
        /// Its status.
        status: StatusCode,
        /// Its classified error body or stream error, if read.
        error: Option<ErrorClass>,
    },
    /// An error from below.
    Error(&'a BoxError),
}

/// Decides which failures move a request to the next target.
pub trait FallbackPolicy: Send + Sync + 'static {
    /// The trigger, or `None` to return this result as it is.
    fn trigger(&self, failure: &Failure<'_>) -> Option<Trigger>;
}

impl<F> FallbackPolicy for F
where
    F: Fn(&Failure<'_>) -> Option<Trigger> + Send + Sync + 'static,
{
    fn trigger(&self, failure: &Failure<'_>) -> Option<Trigger> {
        self(failure)
    }
}

/// The default triggers: a final 429, 529 or 503 (and 500/502/504) from
/// below, an exhausted quota, an overloaded stream, the limiter's
/// [`RateLimited`], timeouts, and context-length errors (to a target with
/// a larger context). Other 4xx — caused by the request itself — never
/// trigger: another model would refuse them too.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultTriggers;

impl FallbackPolicy for DefaultTriggers {
    fn trigger(&self, failure: &Failure<'_>) -> Option<Trigger> {
        match failure {
            Failure::Response { status, error } => {
                if let Some(e) = error {
                    match e.kind {
                        ErrorKind::RateLimited
                        | ErrorKind::Overloaded
                        | ErrorKind::QuotaExhausted
                        | ErrorKind::ContextLength => return Some(Trigger::Error(e.kind)),
                        ErrorKind::Server if !status.is_success() => {
                            return Some(Trigger::Error(e.kind));
                        }
                        _ if status.is_success() => return None,
                        _ => {}
                    }
                }
                match status.as_u16() {
                    429 | 500 | 502 | 503 | 504 | 529 => Some(Trigger::Status(*status)),
                    _ => None,
                }
            }
            Failure::Error(e) => {
                if let Some(r) = e.downcast_ref::<RateLimited>() {
                    Some(Trigger::RateLimited(r.retry_after))
                } else if e.is::<QueueTimeout>() || is_timeout(e.as_ref()) {
                    Some(Trigger::Timeout)
                } else {
                    None
                }
            }
        }
    }
}

/// Whether an error (or one of its sources) is a timeout.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<tokio::time::error::Elapsed>()
            || err.is::<crate::error::AttemptTimeout>()
            || err.is::<crate::error::DeadlineElapsed>()
            || err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Sends a request on a service once it is ready: how the chain calls its
/// own model's service and every service target.
pub(super) async fn call<S, RB>(
    svc: &mut S,
    req: Request<ReplayBody>,
) -> Result<Response<ResponseBody>, BoxError>
where
    S: Service<Request<ReplayBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx))
        .await
        .map_err(Into::into)?;
    let res = svc.call(req).await.map_err(Into::into)?;
    Ok(ResponseBody::from_response(res))
}
