//! The response future of [`Retry`](super::Retry).

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
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

/// A finished attempt's response, once its body was looked at.
struct Inspected {
    res: Response<ResponseBody>,
    /// The error its body shows: a 429's error body, or an `error` event
    /// at the start of a 2xx stream.
    error: Option<ErrorClass>,
    /// Whether `error` is a stream's `error` event (after a 2xx).
    stream_error: bool,
}

/// What a look ahead at a body decided.
enum Looked {
    /// A failure to judge (retry or stop).
    Judge(Inspected),
    /// A stream that started well (or ran out of time to tell): the
    /// caller's.
    Deliver(Response<ResponseBody>),
}

/// Reads a 429's body to its end (bounded), to tell a rate limit from an
/// exhausted quota. At the deadline the error is judged on what was read
/// (the decision then stops: no time is left).
async fn read_error(
    mut res: Response<ResponseBody>,
    limit: usize,
    deadline: Option<Instant>,
) -> Looked {
    look_ahead(&mut res, deadline, |body, cx| {
        body.poll_peek_to_end(cx, limit)
    })
    .await;
    let error = Some(classify_error(res.status(), &res.body().peeked()));
    Looked::Judge(Inspected {
        res,
        error,
        stream_error: false,
    })
}

/// Reads a 2xx stream to its first content or error event. At the
/// deadline the stream is handed over as it is: nothing wrong was seen,
/// and no time is left to try again.
async fn stream_start(
    mut res: Response<ResponseBody>,
    limit: usize,
    deadline: Option<Instant>,
) -> Looked {
    let start = look_ahead(&mut res, deadline, |body, cx| {
        body.poll_stream_start(cx, limit)
    })
    .await;
    match start {
        Some(StreamStart::Error(class)) => Looked::Judge(Inspected {
            res,
            error: Some(class),
            stream_error: true,
        }),
        _ => Looked::Deliver(res),
    }
}

/// Polls `look` on the body until it is ready — or, first, the deadline
/// passes (`None`).
async fn look_ahead<T>(
    res: &mut Response<ResponseBody>,
    deadline: Option<Instant>,
    mut look: impl FnMut(&mut ResponseBody, &mut Context<'_>) -> Poll<T>,
) -> Option<T> {
    let mut until = pin!(deadline.map(sleep_until));
    poll_fn(|cx| {
        if let Poll::Ready(t) = look(res.body_mut(), cx) {
            return Poll::Ready(Some(t));
        }
        match until.as_mut().as_pin_mut().map(|until| until.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
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
            let judged: Result<Inspected, BoxError> = match this.state.as_mut().project() {
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
                                Poll::Ready(StreamStart::Error(class)) => Ok(Inspected {
                                    res,
                                    error: Some(class),
                                    stream_error: true,
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
                                    this.state.set(State::Look {
                                        fut: Box::pin(stream_start(res, limit, *this.deadline)),
                                    });
                                    continue;
                                }
                            }
                        } else if status == StatusCode::TOO_MANY_REQUESTS {
                            // A 429 means "wait" or "quota gone for the
                            // month": only the body tells.
                            if res.body_mut().poll_peek_to_end(cx, limit).is_pending() {
                                this.state.set(State::Look {
                                    fut: Box::pin(read_error(res, limit, *this.deadline)),
                                });
                                continue;
                            }
                            let class = classify_error(status, &res.body().peeked());
                            Ok(Inspected {
                                res,
                                error: Some(class),
                                stream_error: false,
                            })
                        } else {
                            Ok(Inspected {
                                res,
                                error: None,
                                stream_error: false,
                            })
                        }
                    }
                    Err(e) => Err(e.into()),
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
                }) => {
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
                        judged.map(|inspected| finish(inspected.res, *this.info, template)),
                    );
                }
            }
        }
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
