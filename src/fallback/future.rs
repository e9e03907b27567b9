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

use super::chain::{BoxFuture, Failure, Route, Trigger, rewrite_model};
use super::layer::Config;
use super::{FallbackInfo, Hop};
use crate::error::BoxError;
use crate::provider::{ErrorKind, classify_error, retry_after};
use crate::request::{Deadline, ReplayBody, RequestMeta, replay_request};
use crate::response::{Format, ResponseBody, StreamStart};

/// Header naming the model that answered.
pub const MODEL_USED: &str = "x-llm-model-used";
/// Header naming the model the request asked for (only when they differ).
pub const ORIGINAL_MODEL: &str = "x-llm-original-model";
/// Header with the number of fallback hops taken.
pub const HOPS: &str = "x-llm-fallback-hops";

pin_project! {
    /// Tries the request's own model, then each target of the chain, until
    /// one answers without a trigger; with no chain and no degraded
    /// response (nothing to fall back to), only the inner future.
    pub struct ResponseFuture<S: Service<Request<ReplayBody>>> {
        #[pin]
        kind: Kind<S::Future, Chain<S>>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Passthrough { #[pin] fut: F },
        // Boxed: a chain's future holds the original request and the last
        // failure; inline it would make every layer above move them.
        Chain { fut: Pin<Box<C>> },
    }
}

impl<S: Service<Request<ReplayBody>>> ResponseFuture<S> {
    pub(crate) fn passthrough(fut: S::Future) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { fut },
        }
    }

    pub(crate) fn chain(config: Arc<Config>, inner: S, original: Request<ReplayBody>) -> Self {
        ResponseFuture {
            kind: Kind::Chain {
                fut: Box::pin(Chain::new(config, inner, original)),
            },
        }
    }
}

impl<S: Service<Request<ReplayBody>>> fmt::Debug for ResponseFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Passthrough { .. } => f.debug_struct("ResponseFuture").finish_non_exhaustive(),
            Kind::Chain { fut } => fmt::Debug::fmt(&**fut, f),
        }
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
            KindProj::Chain { fut } => fut.as_mut().poll(cx),
        }
    }
}

pin_project! {
    /// The chain: the request's own model, then each target in turn.
    pub(crate) struct Chain<S: Service<Request<ReplayBody>>> {
        config: Arc<Config>,
        inner: S,
        original: Request<ReplayBody>,
        meta: Option<Arc<RequestMeta>>,
        deadline: Option<Instant>,
        // 0 = the request as sent; i = the chain's target i − 1.
        next: usize,
        current: usize,
        info: FallbackInfo,
        last: Option<Result<Response<ResponseBody>, BoxError>>,
        #[pin]
        state: State<S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Pick,
        Ready { req: Option<Request<ReplayBody>> },
        CallInner { #[pin] fut: F },
        CallBoxed { fut: BoxFuture },
        Inspect { res: Option<Response<ResponseBody>> },
        Map { fut: BoxFuture },
        Done,
    }
}

impl<S: Service<Request<ReplayBody>>> fmt::Debug for Chain<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl<S: Service<Request<ReplayBody>>> Chain<S> {
    fn new(config: Arc<Config>, inner: S, mut original: Request<ReplayBody>) -> Self {
        let meta = RequestMeta::for_request(&mut original);
        let deadline = original.extensions().get::<Deadline>().map(|d| d.0);
        let model = meta.as_ref().and_then(|m| m.model_arc().cloned());
        Chain {
            config,
            inner,
            original,
            meta,
            deadline,
            next: 0,
            current: 0,
            info: FallbackInfo {
                original_model: model.clone(),
                model_used: model,
                hops: Vec::new(),
                degraded: false,
            },
            last: None,
            state: State::Pick,
        }
    }
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

impl<S, RB> Future for Chain<S>
where
    S: Service<Request<ReplayBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let outcome: Result<Response<ResponseBody>, BoxError> =
                match this.state.as_mut().project() {
                    StateProj::Pick => {
                        let targets = &this.config.targets;
                        let deadline_passed = this.deadline.is_some_and(|d| Instant::now() >= d);
                        if *this.next > targets.len() || (deadline_passed && *this.next > 0) {
                            this.state.set(State::Done);
                            return Poll::Ready(give_up(
                                this.config,
                                this.info,
                                this.last.take(),
                                this.meta.as_deref(),
                            ));
                        }
                        let i = *this.next;
                        *this.next += 1;
                        let name = if i == 0 {
                            this.info.original_model.clone()
                        } else {
                            Some(Arc::clone(&targets[i - 1].name))
                        };
                        // A target known to be exhausted is skipped without
                        // sending — unless it is the last hope.
                        let others_left = *this.next <= targets.len();
                        if let Some(name) = &name
                            && others_left
                            && this.config.is_cooling(name)
                        {
                            this.info.hops.push(Hop {
                                target: Arc::clone(name),
                                trigger: Trigger::CoolingDown,
                            });
                            continue;
                        }
                        *this.current = i;
                        if i == 0 {
                            // With no targets nothing else will be sent: the
                            // original goes as it is, not copied (a copy clones
                            // the headers and the extensions).
                            let req = if targets.is_empty() {
                                std::mem::replace(this.original, Request::new(ReplayBody::empty()))
                            } else {
                                replay_request(this.original)
                            };
                            this.state.set(State::Ready { req: Some(req) });
                            continue;
                        }
                        match &targets[i - 1].route {
                            Route::Model {
                                model,
                                max_tokens,
                                overrides,
                            } => {
                                match rewrite_model(
                                    replay_request(this.original),
                                    model,
                                    *max_tokens,
                                    overrides,
                                ) {
                                    Ok(req) => this.state.set(State::Ready { req: Some(req) }),
                                    Err(_) => continue,
                                }
                            }
                            Route::Service {
                                svc, map_request, ..
                            } => match map_request(replay_request(this.original)) {
                                Ok(req) => this.state.set(State::CallBoxed { fut: svc.call(req) }),
                                Err(_) => continue,
                            },
                        }
                        continue;
                    }
                    StateProj::Ready { req } => {
                        if let Err(e) = ready!(this.inner.poll_ready(cx)) {
                            Err(e.into())
                        } else if let Some(req) = req.take() {
                            let fut = this.inner.call(req);
                            this.state.set(State::CallInner { fut });
                            continue;
                        } else {
                            Err("fallback future polled after completion".into())
                        }
                    }
                    StateProj::CallInner { fut } => match ready!(fut.poll(cx)) {
                        Ok(res) => {
                            this.state.set(State::Inspect {
                                res: Some(ResponseBody::from_response(res)),
                            });
                            continue;
                        }
                        Err(e) => Err(e.into()),
                    },
                    StateProj::CallBoxed { fut } => match ready!(fut.as_mut().poll(cx)) {
                        Ok(res) => {
                            this.state.set(State::Inspect { res: Some(res) });
                            continue;
                        }
                        Err(e) => Err(e),
                    },
                    StateProj::Inspect { res } => {
                        let Some(r) = res.as_mut() else {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(
                                "fallback future polled after completion".into()
                            ));
                        };
                        let limit = this.config.peek_limit;
                        let error = if r.status().is_success() {
                            match ready!(r.body_mut().poll_stream_start(cx, limit)) {
                                StreamStart::Error(class) => Some(class),
                                _ => None,
                            }
                        } else {
                            // Error bodies are small: read them to classify
                            // (and to keep the last failure without holding
                            // what its body holds below).
                            ready!(r.body_mut().poll_peek_to_end(cx, limit));
                            Some(classify_error(r.status(), &r.body().peeked()))
                        };
                        let Some(r) = res.take() else { continue };
                        let trigger = this.config.policy.trigger(&Failure::Response {
                            status: r.status(),
                            error,
                        });
                        match trigger {
                            None => Ok(r),
                            Some(trigger) => {
                                hop(this.config, this.info, *this.current, trigger, Some(&r));
                                *this.last = Some(Ok(detach(r)));
                                this.state.set(State::Pick);
                                continue;
                            }
                        }
                    }
                    StateProj::Map { fut } => {
                        let res = ready!(fut.as_mut().poll(cx));
                        this.state.set(State::Done);
                        return Poll::Ready(res.map(|r| mark(r, this.info)));
                    }
                    StateProj::Done => {
                        return Poll::Ready(Err("fallback future polled after completion".into()));
                    }
                };

            // An answer from the current target: an error may still move on.
            match outcome {
                Err(e) => match this.config.policy.trigger(&Failure::Error(&e)) {
                    Some(trigger) => {
                        hop(this.config, this.info, *this.current, trigger, None);
                        *this.last = Some(Err(e));
                        this.state.set(State::Pick);
                    }
                    None => {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e));
                    }
                },
                Ok(res) => {
                    let i = *this.current;
                    this.info.model_used = if i == 0 {
                        this.info.original_model.clone()
                    } else {
                        Some(Arc::clone(&this.config.targets[i - 1].name))
                    };
                    if i > 0
                        && let Route::Service {
                            map_response: Some(map),
                            ..
                        } = &this.config.targets[i - 1].route
                        && let Some(meta) = this.meta.clone()
                    {
                        this.state.set(State::Map {
                            fut: map(res, meta),
                        });
                        continue;
                    }
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(mark(res, this.info)));
                }
            }
        }
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
    let name = if current == 0 {
        info.original_model.clone()
    } else {
        Some(Arc::clone(&config.targets[current - 1].name))
    };
    let Some(name) = name else { return };
    if let Some(d) = cooldown_for(config, trigger, res) {
        config.cool(&name, d);
    }
    tracing::debug!(target = %name, ?trigger, "falling back");
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
