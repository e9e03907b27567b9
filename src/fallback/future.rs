//! The response future of [`Fallback`](super::Fallback).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::chain::{Failure, Route, Trigger, call, rewrite_model};
use super::layer::Config;
use super::{FallbackInfo, Hop};
use crate::error::{BoxError, DeadlineElapsed};
use crate::provider::{ErrorKind, classify_error, retry_after};
use crate::request::{Deadline, ReplayBody, RequestMeta, replay_request};
use crate::response::{Format, ResponseBody, StreamStart, look_until};
use crate::util::SlowPath;

/// Header naming the model that answered.
pub const MODEL_USED: &str = "x-llm-model-used";
/// Header naming the model the request asked for (only when they differ).
pub const ORIGINAL_MODEL: &str = "x-llm-original-model";
/// Header with the number of fallback hops taken.
pub const HOPS: &str = "x-llm-fallback-hops";

const AFTER_COMPLETION: &str = "fallback future polled after completion";

/// How long the layer reads ahead in a body (an error body to classify, a
/// stream's start) by default, when the request's deadline is further away
/// or there is none: long enough for a slow error body, short enough that
/// a stalled one cannot hold the chain — and what the body holds below —
/// for good.
pub(crate) const DEFAULT_PEEK_TIMEOUT: Duration = Duration::from_secs(30);

pin_project! {
    /// Tries the request's own model, then each target of the chain, until
    /// one answers without a trigger; with no chain and no degraded
    /// response (nothing to fall back to), only the inner future.
    pub struct ResponseFuture<S: Service<Request<ReplayBody>>> {
        #[pin]
        kind: Kind<S::Future>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Passthrough { #[pin] fut: F },
        // Boxed: a chain's future holds the original request and the last
        // failure; inline it would make every layer above move them.
        Chain { fut: SlowPath },
    }
}

impl<S: Service<Request<ReplayBody>>> ResponseFuture<S> {
    pub(crate) fn passthrough(fut: S::Future) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { fut },
        }
    }

    pub(crate) fn chain<RB>(
        config: Arc<Config>,
        inner: S,
        mut original: Request<ReplayBody>,
    ) -> Self
    where
        S: Service<Request<ReplayBody>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        let meta = RequestMeta::for_request(&mut original);
        let deadline = original.extensions().get::<Deadline>().map(|d| d.0);
        ResponseFuture {
            kind: Kind::Chain {
                fut: SlowPath::new(run_chain(config, inner, original, meta, deadline)),
            },
        }
    }
}

impl<S: Service<Request<ReplayBody>>> fmt::Debug for ResponseFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ResponseFuture");
        if let Kind::Chain { fut } = &self.kind {
            d.field("chain", &fut.is_pending());
        }
        d.finish_non_exhaustive()
    }
}

impl<S, RB> Future for ResponseFuture<S>
where
    S: Service<Request<ReplayBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { fut } => {
                let res = ready!(fut.poll(cx)).map_err(Into::into)?;
                Poll::Ready(Ok(ResponseBody::from_response(res)))
            }
            KindProj::Chain { fut } => fut.poll(cx, AFTER_COMPLETION),
        }
    }
}

/// The chain: the request's own model, then each target in turn, until one
/// answers without a trigger; then the degraded response, or the last
/// failure.
///
/// Every wait here is bounded: each call (readiness and response head) by
/// the request's deadline, each read ahead in a body by the deadline or
/// the layer's `peek_timeout`, whichever is first. At the deadline the chain stops
/// with what it has: the last failure, or [`DeadlineElapsed`] when none
/// came. An error body that stalls is given up (its bytes so far kept,
/// the upstream body dropped at once) and judged on what was read.
async fn run_chain<S, RB>(
    config: Arc<Config>,
    mut inner: S,
    mut original: Request<ReplayBody>,
    meta: Option<Arc<RequestMeta>>,
    deadline: Option<Instant>,
) -> Result<Response<ResponseBody>, BoxError>
where
    S: Service<Request<ReplayBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    // Bounded: the name is kept (cooling) and echoed (headers).
    let model = meta
        .as_ref()
        .and_then(|m| m.model_arc().map(crate::request::bounded_model));
    let mut info = FallbackInfo {
        original_model: model.clone(),
        model_used: model,
        hops: Vec::new(),
        degraded: false,
    };
    let mut last = None;
    // The chain's entry that gave `last` (what marks it).
    let mut last_from = 0;
    // Whether the chain stopped at the deadline.
    let mut late = false;
    let targets = &config.targets;
    // 0 = the request as sent; i = the chain's target i − 1.
    for i in 0..=targets.len() {
        if i > 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            late = true;
            break;
        }
        // A target known to be exhausted is skipped without sending —
        // unless it is the last hope.
        let name = name_of(&config, &info, i);
        let others_left = i < targets.len();
        if let Some(name) = name
            && others_left
            && config.is_cooling(&name)
        {
            info.hops.push(Hop {
                target: name,
                trigger: Trigger::CoolingDown,
            });
            continue;
        }
        let answer = if i == 0 {
            // With no targets nothing else will be sent: the original goes
            // as it is, not copied (a copy clones the headers and the
            // extensions).
            let req = if targets.is_empty() {
                std::mem::replace(&mut original, Request::new(ReplayBody::empty()))
            } else {
                replay_request(&original)
            };
            within(deadline, call(&mut inner, req)).await
        } else {
            match &targets[i - 1].route {
                Route::Model {
                    model,
                    max_tokens,
                    overrides,
                } => {
                    match rewrite_model(replay_request(&original), model, *max_tokens, overrides) {
                        Ok(req) => within(deadline, call(&mut inner, req)).await,
                        Err(_) => continue,
                    }
                }
                Route::Service {
                    svc, map_request, ..
                } => match map_request(replay_request(&original)) {
                    Ok(req) => within(deadline, svc.call(req)).await,
                    Err(_) => continue,
                },
            }
        };
        // The deadline passed before this target answered: it is dropped
        // (releasing what it holds below), and the chain stops.
        let Some(answer) = answer else {
            late = true;
            break;
        };
        // An answer from the current target: a response or an error may
        // still move on.
        let res = match answer {
            Ok(mut res) => {
                let limit = config.peek_limit;
                let until = look_until_time(config.peek_timeout, deadline);
                let mut stalled = false;
                let error = if res.status().is_success() {
                    // A stream not started by then is handed over as it is.
                    let start = look_until(res.body_mut(), Some(until), |body, cx| {
                        body.poll_stream_start(cx, limit)
                    })
                    .await;
                    match start {
                        Some(StreamStart::Error(class)) => Some(class),
                        _ => None,
                    }
                } else {
                    // Error bodies are small: read them to classify (and to
                    // keep the last failure without holding what its body
                    // holds below).
                    let started = Instant::now();
                    let read = look_until(res.body_mut(), Some(until), |body, cx| {
                        body.poll_peek_to_end(cx, limit)
                    })
                    .await;
                    let class = classify_error(res.status(), &res.body().peeked());
                    if read.is_none() {
                        res.body_mut().give_up_stalled(started.elapsed());
                        stalled = true;
                    }
                    Some(class)
                };
                let failure = Failure::Response {
                    status: res.status(),
                    error,
                };
                match config.policy.trigger(&failure) {
                    None => res,
                    Some(trigger) => {
                        hop(&config, &mut info, i, trigger, Some(&res));
                        // A body given up is detached already (and keeps
                        // its bytes, then the stall).
                        last = Some(Ok(if stalled { res } else { detach(res) }));
                        last_from = i;
                        continue;
                    }
                }
            }
            Err(e) => match config.policy.trigger(&Failure::Error(&e)) {
                Some(trigger) => {
                    hop(&config, &mut info, i, trigger, None);
                    last = Some(Err(e));
                    last_from = i;
                    continue;
                }
                None => return Err(e),
            },
        };
        info.model_used = name_of(&config, &info, i);
        if i > 0
            && let Route::Service {
                map_response: Some(map),
                ..
            } = &targets[i - 1].route
            && let Some(meta) = meta.clone()
        {
            return match within(deadline, map(res, meta)).await {
                Some(mapped) => mapped.map(|r| mark(r, &info)),
                None => Err(DeadlineElapsed::new().into()),
            };
        }
        return Ok(mark(res, &info));
    }
    // The last failure is marked with the entry that answered it.
    if last.is_some() {
        info.model_used = name_of(&config, &info, last_from);
    } else if late && config.degraded.is_none() {
        return Err(DeadlineElapsed::new().into());
    }
    give_up(&config, &mut info, last, meta.as_deref())
}

/// `fut`'s output, or `None` when `deadline` passes first (`fut` is then
/// dropped).
async fn within<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// When a look ahead at a body starting now gives up: at the deadline, or
/// after `peek_timeout`, whichever is first.
fn look_until_time(peek_timeout: Duration, deadline: Option<Instant>) -> Instant {
    let own = Instant::now() + peek_timeout;
    deadline.map_or(own, |d| d.min(own))
}

/// How long a target is skipped after a trigger.
fn cooldown_for(
    config: &Config,
    trigger: Trigger,
    res: Option<&Response<ResponseBody>>,
) -> Option<Duration> {
    let advice = res.and_then(|r| retry_after(r.headers(), SystemTime::now()));
    let d = match trigger {
        Trigger::Error(ErrorKind::ContextLength) => return None,
        Trigger::Error(ErrorKind::QuotaExhausted) => config.max_cooldown,
        Trigger::RateLimited(d) => d,
        Trigger::CoolingDown => return None,
        _ => advice.unwrap_or(config.cooldown),
    };
    Some(d.min(config.max_cooldown))
}

/// The name of the chain's entry `i`: the request's own model (0), or
/// target `i − 1`.
fn name_of(config: &Config, info: &FallbackInfo, i: usize) -> Option<Arc<str>> {
    if i == 0 {
        info.original_model.clone()
    } else {
        Some(Arc::clone(&config.targets[i - 1].name))
    }
}

/// The `llm_resilience.fallback.trigger` of a hop.
fn trigger_label(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Status(_) => "status",
        Trigger::Error(_) => "error",
        Trigger::RateLimited(_) => "rate_limited",
        Trigger::Timeout => "timeout",
        Trigger::CoolingDown => "cooling_down",
    }
}

/// The `error.type` of a hop's trigger.
fn error_type(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Status(s) => crate::telemetry::record::error_type(s),
        Trigger::Error(_) => "provider_error",
        Trigger::RateLimited(_) => "rate_limited",
        Trigger::Timeout => "timeout",
        Trigger::CoolingDown => "cooling_down",
    }
}

/// Records a hop from the current target and cools it down.
fn hop(
    config: &Config,
    info: &mut FallbackInfo,
    current: usize,
    trigger: Trigger,
    res: Option<&Response<ResponseBody>>,
) {
    let Some(name) = name_of(config, info, current) else {
        return;
    };
    if let Some(d) = cooldown_for(config, trigger, res) {
        config.cool(&name, d);
    }
    let to = config.targets.get(current).map(|t| &t.name);
    let trigger_label = trigger_label(trigger);
    if let Some(to) = to {
        crate::telemetry::record::fallback(to, trigger_label);
    }
    tracing::debug!(
        llm_resilience.fallback.from = &*name,
        llm_resilience.fallback.to = to.map(|t| &**t),
        llm_resilience.fallback.trigger = trigger_label,
        error.type = error_type(trigger),
        "fallback: hop"
    );
    info.hops.push(Hop {
        target: name,
        trigger,
    });
}

/// Keeps a failed response without what its body holds below: its status,
/// headers and the bytes read (error bodies are read whole, bounded).
fn detach(res: Response<ResponseBody>) -> Response<ResponseBody> {
    let (parts, body) = res.into_parts();
    let format = Format::from_headers(&parts.headers);
    let bytes = body.peeked();
    drop(body);
    Response::from_parts(parts, ResponseBody::full(bytes).with_format(format))
}

/// Every target failed: the degraded response, if configured, else the
/// last failure as it is.
fn give_up(
    config: &Config,
    info: &mut FallbackInfo,
    last: Option<Result<Response<ResponseBody>, BoxError>>,
    meta: Option<&RequestMeta>,
) -> Result<Response<ResponseBody>, BoxError> {
    if let Some(degraded) = &config.degraded {
        info.degraded = true;
        info.model_used = None;
        return Ok(mark(degraded(meta, info), info));
    }
    match last {
        Some(Ok(res)) => Ok(mark(res, info)),
        Some(Err(e)) => Err(e),
        None => Err("every fallback target was skipped".into()),
    }
}

// The names as `HeaderName`s, built at compile time: inserting by `&str`
// parses and validates the name on every response.
const MODEL_USED_NAME: HeaderName = HeaderName::from_static(MODEL_USED);
const ORIGINAL_MODEL_NAME: HeaderName = HeaderName::from_static(ORIGINAL_MODEL);
const HOPS_NAME: HeaderName = HeaderName::from_static(HOPS);
const DEGRADED_NAME: HeaderName = HeaderName::from_static("x-llm-degraded");

fn mark(mut res: Response<ResponseBody>, info: &FallbackInfo) -> Response<ResponseBody> {
    let h = res.headers_mut();
    if let Some(used) = info
        .model_used
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
    {
        h.insert(MODEL_USED_NAME, used);
    }
    if info.model_used != info.original_model
        && let Some(orig) = info
            .original_model
            .as_deref()
            .and_then(|m| HeaderValue::from_str(m).ok())
    {
        h.insert(ORIGINAL_MODEL_NAME, orig);
    }
    h.insert(HOPS_NAME, HeaderValue::from(info.hops.len()));
    if info.degraded {
        h.insert(DEGRADED_NAME, HeaderValue::from_static("true"));
    }
    res.extensions_mut().insert(info.clone());
    res
}
