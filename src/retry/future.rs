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
use crate::error::BoxError;
use crate::provider::{ErrorClass, QuotaSnapshot, classify_error, retry_after};
use crate::response::{ResponseBody, StreamStart};

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
        #[pin]
        state: State<S::Future, B>,
    }
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
        // A look ahead at the body never waits past the deadline.
        ReadError { res: Option<Box<Response<ResponseBody>>>, until: Option<Pin<Box<Sleep>>> },
        StreamStart { res: Option<Box<Response<ResponseBody>>>, until: Option<Pin<Box<Sleep>>> },
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
    ) -> Self {
        ResponseFuture {
            config,
            inner,
            replayable,
            template,
            deadline,
            info: RetryInfo::default(),
            prev_delay: Duration::ZERO,
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
    ) -> Self {
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
            state: State::Call { fut },
        }
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
            let judged: Result<(Response<ResponseBody>, Option<ErrorClass>, bool), BoxError> =
                match this.state.as_mut().project() {
                    StateProj::Ready { req } => {
                        if let Err(e) = ready!(this.inner.poll_ready(cx)) {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                        let Some(req) = req.take() else {
                            this.state.set(State::Done);
                            return Poll::Ready(Err("retry future polled after completion".into()));
                        };
                        this.info.attempts += 1;
                        let fut = this.inner.call(*req);
                        this.state.set(State::Call { fut });
                        continue;
                    }
                    StateProj::Call { fut } => match ready!(fut.poll(cx)) {
                        Ok(res) => {
                            let mut res = ResponseBody::from_response(res);
                            let status = res.status();
                            let limit = this.config.peek_limit;
                            // The look at the body happens here, and the
                            // response moves into a state only when it has
                            // to wait for the body.
                            if status.is_success() {
                                match res.body_mut().poll_stream_start(cx, limit) {
                                    Poll::Ready(StreamStart::Error(class)) => {
                                        Ok((res, Some(class), true))
                                    }
                                    Poll::Ready(_) => {
                                        this.state.set(State::Done);
                                        return Poll::Ready(Ok(finish(
                                            res,
                                            *this.info,
                                            this.template.take(),
                                        )));
                                    }
                                    Poll::Pending => {
                                        this.state.set(State::StreamStart {
                                            res: Some(Box::new(res)),
                                            until: this.deadline.map(|d| Box::pin(sleep_until(d))),
                                        });
                                        // Polled again there, with the
                                        // deadline's timer armed.
                                        continue;
                                    }
                                }
                            } else if status == StatusCode::TOO_MANY_REQUESTS {
                                // A 429 means "wait" or "quota gone for the
                                // month": only the body tells.
                                if res.body_mut().poll_peek_to_end(cx, limit).is_pending() {
                                    this.state.set(State::ReadError {
                                        res: Some(Box::new(res)),
                                        until: this.deadline.map(|d| Box::pin(sleep_until(d))),
                                    });
                                    continue;
                                }
                                let class = classify_error(status, &res.body().peeked());
                                Ok((res, Some(class), false))
                            } else {
                                Ok((res, None, false))
                            }
                        }
                        Err(e) => Err(e.into()),
                    },
                    StateProj::ReadError { res, until } => {
                        let Some(r) = res.as_mut() else {
                            this.state.set(State::Done);
                            return Poll::Ready(Err("retry future polled after completion".into()));
                        };
                        // At the deadline the error is judged on what was
                        // read (the decision then stops: no time is left).
                        if r.body_mut()
                            .poll_peek_to_end(cx, this.config.peek_limit)
                            .is_pending()
                            && until
                                .as_mut()
                                .is_none_or(|u| u.as_mut().poll(cx).is_pending())
                        {
                            return Poll::Pending;
                        }
                        let class = classify_error(r.status(), &r.body().peeked());
                        match res.take() {
                            Some(r) => Ok((*r, Some(class), false)),
                            None => continue,
                        }
                    }
                    StateProj::StreamStart { res, until } => {
                        let Some(r) = res.as_mut() else {
                            this.state.set(State::Done);
                            return Poll::Ready(Err("retry future polled after completion".into()));
                        };
                        // At the deadline the stream is handed over as it
                        // is: nothing wrong was seen, and no time is left to
                        // try again.
                        let start = match r.body_mut().poll_stream_start(cx, this.config.peek_limit)
                        {
                            Poll::Ready(start) => start,
                            Poll::Pending => {
                                if until
                                    .as_mut()
                                    .is_none_or(|u| u.as_mut().poll(cx).is_pending())
                                {
                                    return Poll::Pending;
                                }
                                StreamStart::Undecided
                            }
                        };
                        let Some(r) = res.take() else { continue };
                        let r = *r;
                        match start {
                            StreamStart::Error(class) => Ok((r, Some(class), true)),
                            _ => {
                                this.state.set(State::Done);
                                return Poll::Ready(Ok(finish(
                                    r,
                                    *this.info,
                                    this.template.take(),
                                )));
                            }
                        }
                    }
                    StateProj::Sleep { sleep, next } => {
                        ready!(sleep.as_mut().poll(cx));
                        let req = next.take();
                        this.state.set(State::Ready { req });
                        continue;
                    }
                    StateProj::Done => {
                        return Poll::Ready(Err("retry future polled after completion".into()));
                    }
                };

            let decision = match &judged {
                Ok((res, error, stream_error)) => {
                    let reason = match error {
                        Some(e) if *stream_error => RetryReason::StreamError(e.kind),
                        _ => RetryReason::Status(res.status()),
                    };
                    let attempted = Attempted::Response {
                        status: res.status(),
                        headers: res.headers(),
                        error: *error,
                        stream_error: *stream_error,
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
                    tracing::debug!(attempt = this.info.attempts, ?reason, ?delay, "retrying");
                    this.state.set(State::Sleep {
                        sleep: Box::pin(sleep(delay)),
                        next: next.map(Box::new),
                    });
                }
                Decision::Stop(stop) => {
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
                        judged.map(|(res, _, _)| finish(res, *this.info, template)),
                    );
                }
            }
        }
    }
}

/// Puts `info` in the response's extensions. When the response has none
/// and the template's copy of the request's extensions holds a map, that
/// map (emptied) carries it: the template is done with, and its allocation
/// saves the two a new map would make.
fn finish(
    mut res: Response<ResponseBody>,
    info: RetryInfo,
    template: Option<Template>,
) -> Response<ResponseBody> {
    match template.map(Template::into_extensions) {
        Some(mut ext) if !ext.is_empty() && res.extensions().is_empty() => {
            ext.clear();
            ext.insert(info);
            *res.extensions_mut() = ext;
        }
        _ => {
            res.extensions_mut().insert(info);
        }
    }
    res
}
