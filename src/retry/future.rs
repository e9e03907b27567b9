//! The response future of [`Retry`](super::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep, sleep_until};
use tower_service::Service;

use super::RetryInfo;
use super::layer::{Config, OverCap};
use super::policy::{Attempted, RetryReason, StopReason};
use super::service::as_request;
use super::template::Template;
use crate::error::{AttemptTimeout, BoxError, DeadlineElapsed};
use crate::provider::{
    ErrorClass, GrpcCode, GrpcStatus, Pushback, QuotaSnapshot, classify_error, is_grpc, retry_after,
};
use crate::response::{ResponseBody, StreamStart, look_until};

pin_project! {
    /// Sends the request, and again after each retryable failure, until it
    /// succeeds or the layer stops; resolves to the last response (or
    /// error) with [`RetryInfo`] in its extensions.
    pub struct ResponseFuture<S: Service<Request<B>>, B> {
        config: Arc<Config>,
        inner: S,
        // Whether the request's body is a `ReplayBody`.
        replayable: bool,
        template: Option<Template>,
        deadline: Option<Instant>,
        info: RetryInfo,
        prev_delay: Duration,
        // The timer of a wait for the inner service (its readiness, an
        // attempt's head), armed only when such a wait has a bound: boxed,
        // so a request that never waits carries one pointer.
        bound: Option<Box<Bound>>,
        #[pin]
        state: State<S::Future, B>,
    }
}

/// What bounds a wait for the inner service: the request's deadline (in
/// the future), and the attempt's own end under `attempt_timeout`.
struct Bound {
    attempt_until: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

/// Which bound a wait reached.
enum Reached {
    Deadline,
    Attempt(Duration),
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // Requests, responses and the timer are boxed in the states that
        // hold them: those states are the slow paths (a wait for the inner
        // service, a body to peek at, a sleep), and inline they would make
        // the whole future — moved by every layer above — several hundred
        // bytes larger than the inner future.
        Ready { req: Option<Box<Request<B>>> },
        Call { #[pin] fut: F },
        // A look ahead at the body that has to wait for it: the response
        // and the deadline's timer in one box.
        Look { fut: Pin<Box<dyn Future<Output = Looked> + Send>> },
        // The next attempt's request waits with the sleep.
        Sleep { sleep: Pin<Box<Sleep>>, next: Option<Box<Request<B>>> },
        Done,
    }
}

impl<S: Service<Request<B>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("info", &self.info)
            .field("replayable", &self.replayable)
            .finish_non_exhaustive()
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(crate) fn new(
        config: Arc<Config>,
        inner: S,
        req: Request<B>,
        replayable: bool,
        template: Option<Template>,
        deadline: Option<Instant>,
        started: Option<Instant>,
    ) -> Self {
        let bound = Bound::starting(&config, started);
        ResponseFuture {
            config,
            inner,
            replayable,
            template,
            deadline,
            info: RetryInfo::default(),
            prev_delay: Duration::ZERO,
            bound,
            state: State::Ready {
                req: Some(Box::new(req)),
            },
        }
    }

    /// The first attempt already sent (on a service that was ready).
    pub(crate) fn sent(
        config: Arc<Config>,
        inner: S,
        fut: S::Future,
        replayable: bool,
        template: Option<Template>,
        deadline: Option<Instant>,
        started: Option<Instant>,
    ) -> Self {
        let bound = Bound::starting(&config, started);
        ResponseFuture {
            config,
            inner,
            replayable,
            template,
            deadline,
            info: RetryInfo {
                attempts: 1,
                ..RetryInfo::default()
            },
            prev_delay: Duration::ZERO,
            bound,
            state: State::Call { fut },
        }
    }
}

/// A finished attempt's response, once its body was looked at.
struct Inspected {
    res: Response<ResponseBody>,
    /// The error its body shows: a 429's error body, or an `error` event
    /// at the start of a 2xx stream.
    error: Option<ErrorClass>,
    /// Whether `error` is a stream's `error` event (after a 2xx).
    stream_error: bool,
    /// A gRPC call's failure before any message (trailers-only headers, or
    /// trailers read ahead).
    grpc: Option<GrpcStatus>,
}

/// What a look ahead at a body decided.
enum Looked {
    /// A failure to judge (retry or stop).
    Judge(Inspected),
    /// A stream that started well (or ran out of time to tell): the
    /// caller's.
    Deliver(Response<ResponseBody>),
}

/// Reads a 429's body to its end (bounded in size), to tell a rate limit
/// from an exhausted quota. At `until` (the deadline, or the look-ahead
/// timeout first) the error is judged on what was read and the stalled
/// body is given up: its bytes are kept, the upstream body — and what it
/// holds below — is dropped now, whether the response is retried or
/// returned.
async fn read_error(mut res: Response<ResponseBody>, limit: usize, until: Instant) -> Looked {
    let started = Instant::now();
    let read = look_until(res.body_mut(), Some(until), |body, cx| {
        body.poll_peek_to_end(cx, limit)
    })
    .await;
    let error = Some(classify_error(res.status(), &res.body().peeked()));
    if read.is_none() {
        res.body_mut().give_up_stalled(started.elapsed());
    }
    Looked::Judge(Inspected {
        res,
        error,
        stream_error: false,
        grpc: None,
    })
}

/// Reads a 2xx stream to its first content or error event. At `until`
/// the stream is handed over as it is: nothing wrong was seen, and a
/// stream slow to start is the caller's to wait for.
async fn stream_start(mut res: Response<ResponseBody>, limit: usize, until: Instant) -> Looked {
    let start = look_until(res.body_mut(), Some(until), |body, cx| {
        body.poll_stream_start(cx, limit)
    })
    .await;
    match start {
        Some(StreamStart::Error(class)) => Looked::Judge(Inspected {
            res,
            error: Some(class),
            stream_error: true,
            grpc: None,
        }),
        _ => Looked::Deliver(res),
    }
}

/// How a gRPC response without a status in its headers starts: reads
/// ahead until the first message (`None`: the call is the caller's — its
/// messages must reach it) or until trailers arrive first (their status:
/// the call failed before sending anything, so a retry loses nothing).
/// Reads at most one data frame, so a server stream is never buffered.
fn poll_grpc_start(body: &mut ResponseBody, cx: &mut Context<'_>) -> Poll<Option<GrpcStatus>> {
    loop {
        if body.peeked_len() > 0 {
            return Poll::Ready(None);
        }
        if let Some(trailers) = body.peeked_trailers() {
            return Poll::Ready(GrpcStatus::from_headers(trailers));
        }
        if !ready!(body.poll_peek(cx)) {
            return Poll::Ready(None);
        }
    }
}

/// A gRPC failure to judge, or `None` when the call succeeded or has
/// started sending messages.
fn grpc_failure(status: Option<GrpcStatus>) -> Option<GrpcStatus> {
    status.filter(|s| s.code != GrpcCode::Ok)
}

/// [`poll_grpc_start`] with a bound: at `until` the response is handed
/// over as it is (nothing wrong was seen yet).
async fn grpc_start(mut res: Response<ResponseBody>, until: Instant) -> Looked {
    let status = look_until(res.body_mut(), Some(until), poll_grpc_start).await;
    match grpc_failure(status.flatten()) {
        Some(grpc) => Looked::Judge(Inspected {
            res,
            error: None,
            stream_error: false,
            grpc: Some(grpc),
        }),
        None => Looked::Deliver(res),
    }
}

/// When a look-ahead starting now gives up: at the deadline, or after the
/// layer's look-ahead timeout, whichever is first.
fn look_until_time(config: &Config, deadline: Option<Instant>) -> Instant {
    let own = Instant::now() + config.peek_timeout;
    deadline.map_or(own, |d| d.min(own))
}

impl Bound {
    /// The bound of the first attempt: boxed at once only when the attempt
    /// has a timeout of its own (a deadline alone is armed at the first
    /// wait).
    fn starting(config: &Config, started: Option<Instant>) -> Option<Box<Bound>> {
        let t = config.attempt_timeout?;
        let started = started.unwrap_or_else(Instant::now);
        Some(Box::new(Bound {
            attempt_until: Some(started + t),
            timer: None,
        }))
    }

    /// A new attempt starts now.
    fn restart(bound: &mut Option<Box<Bound>>, config: &Config) {
        if let Some(t) = config.attempt_timeout {
            bound
                .get_or_insert_with(|| {
                    Box::new(Bound {
                        attempt_until: None,
                        timer: None,
                    })
                })
                .attempt_until = Some(Instant::now() + t);
        }
    }

    /// Polls the bound of a wait for the inner service: `Pending` while
    /// neither the deadline nor the attempt's timeout has passed (or when
    /// there is neither).
    fn poll(
        bound: &mut Option<Box<Bound>>,
        deadline: Option<Instant>,
        config: &Config,
        cx: &mut Context<'_>,
    ) -> Poll<Reached> {
        let attempt_until = bound.as_ref().and_then(|b| b.attempt_until);
        let at = match (deadline, attempt_until) {
            (Some(d), Some(a)) => d.min(a),
            (Some(d), None) => d,
            (None, Some(a)) => a,
            (None, None) => return Poll::Pending,
        };
        let b = bound.get_or_insert_with(|| {
            Box::new(Bound {
                attempt_until,
                timer: None,
            })
        });
        let timer = match &mut b.timer {
            Some(timer) => {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                timer
            }
            slot @ None => slot.insert(Box::pin(sleep_until(at))),
        };
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(match (deadline, config.attempt_timeout) {
            (Some(d), _) if d <= at => Reached::Deadline,
            (_, Some(t)) => Reached::Attempt(t),
            _ => Reached::Deadline,
        })
    }
}

/// The failure of an attempt that reached a bound while it waited.
fn timed_out(reached: Reached) -> BoxError {
    match reached {
        Reached::Deadline => DeadlineElapsed::new().into(),
        Reached::Attempt(t) => AttemptTimeout::new(t).into(),
    }
}

enum Decision {
    Retry(Duration, RetryReason),
    Stop(StopReason),
}

/// What the server advises, in the order of precedence after
/// `x-should-retry`: `retry-after-ms`, `retry-after` (seconds or an
/// HTTP-date measured from the response's `Date`), then the reset of the
/// dimension the rate-limit headers say is exhausted.
fn server_advice(headers: &HeaderMap) -> Option<Duration> {
    let now = SystemTime::now();
    retry_after(headers, now).or_else(|| {
        let q = QuotaSnapshot::from_headers(headers, now);
        [q.requests, q.tokens, q.input_tokens, q.output_tokens]
            .into_iter()
            .flatten()
            .filter(|d| d.remaining == Some(0))
            .filter_map(|d| d.reset)
            .filter(|r| !r.is_zero())
            .max()
    })
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    fn decide(
        config: &Config,
        info: &RetryInfo,
        replayable: bool,
        deadline: Option<Instant>,
        prev_delay: Duration,
        attempted: &Attempted<'_>,
        reason: RetryReason,
    ) -> Decision {
        if !config.policy.should_retry(attempted) {
            return Decision::Stop(StopReason::NotRetryable);
        }
        if !replayable {
            return Decision::Stop(StopReason::NotReplayable);
        }
        if info.attempts >= config.max_attempts {
            return Decision::Stop(StopReason::Exhausted);
        }
        let advice = match attempted {
            // gRPC's pushback replaces the backoff (A6); a "do not retry"
            // pushback that a custom policy overrode leaves the backoff.
            Attempted::Response {
                grpc: Some(grpc), ..
            } if grpc.pushback != Pushback::Absent => match grpc.pushback {
                Pushback::Wait(wait) => Some(wait),
                _ => None,
            },
            Attempted::Response { headers, .. } => server_advice(headers),
            Attempted::Error(_) => None,
        };
        let computed = || {
            config
                .backoff
                .delay(info.attempts.saturating_sub(1), prev_delay, config.unit())
        };
        let delay = match advice {
            Some(advice) if advice <= config.max_server_delay => {
                // Honoured exactly, never earlier; positive-only jitter.
                let max_jitter = advice
                    .mul_f64(config.server_jitter_ratio)
                    .min(config.server_jitter_max);
                advice + max_jitter.mul_f64(config.unit())
            }
            Some(_) => match config.over_cap {
                OverCap::GiveUp => return Decision::Stop(StopReason::AdviceTooLong),
                OverCap::Backoff => computed(),
            },
            None => computed(),
        };
        if let Some(deadline) = deadline
            && Instant::now() + delay >= deadline
        {
            return Decision::Stop(StopReason::Deadline);
        }
        if let Some(budget) = &config.budget
            && !budget.withdraw()
        {
            return Decision::Stop(StopReason::Budget);
        }
        Decision::Retry(delay, reason)
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // What a finished attempt is, once inspected: a response to
            // judge (with its classified error), or an error.
            let judged: Result<Inspected, BoxError> = match this.state.as_mut().project() {
                StateProj::Ready { req } => match this.inner.poll_ready(cx) {
                    Poll::Ready(Err(e)) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    Poll::Pending => {
                        let reached =
                            ready!(Bound::poll(this.bound, *this.deadline, this.config, cx));
                        // Not sent: the request is dropped with the state.
                        Err(timed_out(reached))
                    }
                    Poll::Ready(Ok(())) => {
                        let Some(req) = req.take() else {
                            this.state.set(State::Done);
                            return Poll::Ready(Err("retry future polled after completion".into()));
                        };
                        this.info.attempts += 1;
                        let fut = this.inner.call(*req);
                        this.state.set(State::Call { fut });
                        continue;
                    }
                },
                StateProj::Call { fut } => match fut.poll(cx) {
                    Poll::Pending => {
                        let reached =
                            ready!(Bound::poll(this.bound, *this.deadline, this.config, cx));
                        // The attempt is dropped (releasing what it holds
                        // below) when the state moves on.
                        Err(timed_out(reached))
                    }
                    Poll::Ready(Ok(res)) => {
                        let mut res = ResponseBody::from_response(res);
                        let status = res.status();
                        let limit = this.config.peek_limit;
                        // The look at the body happens here, and the
                        // response moves into a state only when it has
                        // to wait for the body.
                        if status.is_success() && is_grpc(res.headers()) {
                            // gRPC answers 200 whatever happened: the
                            // status is in the headers of a trailers-only
                            // response, or in trailers that may come
                            // before any message.
                            let grpc = match GrpcStatus::from_headers(res.headers()) {
                                Some(status) => Poll::Ready(Some(status)),
                                None => poll_grpc_start(res.body_mut(), cx),
                            };
                            match grpc {
                                Poll::Ready(status) => match grpc_failure(status) {
                                    Some(grpc) => Ok(Inspected {
                                        res,
                                        error: None,
                                        stream_error: false,
                                        grpc: Some(grpc),
                                    }),
                                    None => {
                                        this.state.set(State::Done);
                                        return Poll::Ready(Ok(finish(
                                            res,
                                            *this.info,
                                            this.template.take(),
                                        )));
                                    }
                                },
                                Poll::Pending => {
                                    let until = look_until_time(this.config, *this.deadline);
                                    this.state.set(State::Look {
                                        fut: Box::pin(grpc_start(res, until)),
                                    });
                                    continue;
                                }
                            }
                        } else if status.is_success() {
                            match res.body_mut().poll_stream_start(cx, limit) {
                                Poll::Ready(StreamStart::Error(class)) => Ok(Inspected {
                                    res,
                                    error: Some(class),
                                    stream_error: true,
                                    grpc: None,
                                }),
                                Poll::Ready(_) => {
                                    this.state.set(State::Done);
                                    return Poll::Ready(Ok(finish(
                                        res,
                                        *this.info,
                                        this.template.take(),
                                    )));
                                }
                                Poll::Pending => {
                                    // Polled again there, with the
                                    // deadline's timer armed.
                                    let until = look_until_time(this.config, *this.deadline);
                                    this.state.set(State::Look {
                                        fut: Box::pin(stream_start(res, limit, until)),
                                    });
                                    continue;
                                }
                            }
                        } else if status == StatusCode::TOO_MANY_REQUESTS {
                            // A 429 means "wait" or "quota gone for the
                            // month": only the body tells.
                            if res.body_mut().poll_peek_to_end(cx, limit).is_pending() {
                                let until = look_until_time(this.config, *this.deadline);
                                this.state.set(State::Look {
                                    fut: Box::pin(read_error(res, limit, until)),
                                });
                                continue;
                            }
                            let class = classify_error(status, &res.body().peeked());
                            Ok(Inspected {
                                res,
                                error: Some(class),
                                stream_error: false,
                                grpc: None,
                            })
                        } else {
                            Ok(Inspected {
                                res,
                                error: None,
                                stream_error: false,
                                grpc: None,
                            })
                        }
                    }
                    Poll::Ready(Err(e)) => Err(e.into()),
                },
                StateProj::Look { fut } => match ready!(fut.as_mut().poll(cx)) {
                    Looked::Judge(inspected) => Ok(inspected),
                    Looked::Deliver(res) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(finish(res, *this.info, this.template.take())));
                    }
                },
                StateProj::Sleep { sleep, next } => {
                    ready!(sleep.as_mut().poll(cx));
                    let req = next.take();
                    Bound::restart(this.bound, this.config);
                    this.state.set(State::Ready { req });
                    continue;
                }
                StateProj::Done => {
                    return Poll::Ready(Err("retry future polled after completion".into()));
                }
            };

            let decision = match &judged {
                Ok(Inspected {
                    res,
                    error,
                    stream_error,
                    grpc,
                }) => {
                    let reason = match (error, grpc) {
                        (_, Some(g)) => RetryReason::Grpc(g.code),
                        (Some(e), _) if *stream_error => RetryReason::StreamError(e.kind),
                        _ => RetryReason::Status(res.status()),
                    };
                    let attempted = Attempted::Response {
                        status: res.status(),
                        headers: res.headers(),
                        error: *error,
                        stream_error: *stream_error,
                        grpc: *grpc,
                    };
                    Self::decide(
                        this.config,
                        this.info,
                        *this.replayable,
                        *this.deadline,
                        *this.prev_delay,
                        &attempted,
                        reason,
                    )
                }
                Err(e) => Self::decide(
                    this.config,
                    this.info,
                    *this.replayable,
                    *this.deadline,
                    *this.prev_delay,
                    &Attempted::Error(e),
                    RetryReason::Transport,
                ),
            };
            // The next attempt's request, rebuilt before the failed
            // response is let go: one that cannot be rebuilt (a header
            // value made unchecked) ends the retries with that response.
            let (decision, next) = match decision {
                Decision::Retry(..) => match this
                    .template
                    .as_ref()
                    .and_then(Template::request)
                    .and_then(as_request::<B>)
                {
                    Some(next) => (decision, Some(next)),
                    None => (Decision::Stop(StopReason::NotReplayable), None),
                },
                stop => (stop, None),
            };
            match decision {
                Decision::Retry(delay, reason) => {
                    // The failed attempt's body is dropped now, releasing
                    // what it holds below (permits, reservations).
                    drop(judged);
                    this.info.last_reason = Some(reason);
                    this.info.total_wait += delay;
                    *this.prev_delay = delay;
                    crate::telemetry::record::retry(reason_label(reason));
                    tracing::debug!(
                        llm_resilience.retry.attempt = this.info.attempts,
                        llm_resilience.retry.reason = reason_label(reason),
                        llm_resilience.retry.delay_ms = delay.as_millis() as u64,
                        error.type = error_type(reason),
                        "retry: retrying"
                    );
                    this.state.set(State::Sleep {
                        sleep: Box::pin(sleep(delay)),
                        next: next.map(Box::new),
                    });
                }
                Decision::Stop(stop) => {
                    if stop != StopReason::NotRetryable {
                        tracing::debug!(
                            llm_resilience.retry.attempt = this.info.attempts,
                            llm_resilience.retry.stopped = %stop,
                            "retry: stopped"
                        );
                    }
                    this.state.set(State::Done);
                    this.info.stopped = Some(stop);
                    if stop != StopReason::NotRetryable
                        && stop != StopReason::NotReplayable
                        && let Some(hook) = &this.config.dead_letter
                        && let Some(req) = this.template.take().as_ref().and_then(Template::request)
                    {
                        hook(req, this.info);
                    }
                    let template = this.template.take();
                    return Poll::Ready(
                        judged.map(|inspected| finish(inspected.res, *this.info, template)),
                    );
                }
            }
        }
    }
}

/// The `llm_resilience.retry.reason` of a retry.
fn reason_label(reason: RetryReason) -> &'static str {
    match reason {
        RetryReason::Status(s) if s == http::StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        RetryReason::Status(s)
            if s.as_u16() == 529 || s == http::StatusCode::SERVICE_UNAVAILABLE =>
        {
            "overloaded"
        }
        RetryReason::Status(s) if s.is_server_error() => "server_error",
        RetryReason::Status(_) => "status",
        RetryReason::Grpc(GrpcCode::ResourceExhausted) => "rate_limited",
        RetryReason::Grpc(GrpcCode::Unavailable) => "overloaded",
        RetryReason::Grpc(_) => "grpc",
        RetryReason::StreamError(_) => "stream_error",
        RetryReason::Transport => "transport",
    }
}

/// The `error.type` of a retried failure.
fn error_type(reason: RetryReason) -> &'static str {
    match reason {
        RetryReason::Status(s) => crate::telemetry::record::error_type(s),
        RetryReason::Grpc(_) => "grpc",
        RetryReason::StreamError(_) => "stream_error",
        RetryReason::Transport => "transport",
    }
}

/// Puts `info` in the response's extensions; the template is done with.
fn finish(
    mut res: Response<ResponseBody>,
    info: RetryInfo,
    template: Option<Template>,
) -> Response<ResponseBody> {
    drop(template);
    res.extensions_mut().insert(info);
    res
}

#[cfg(test)]
mod tests;
