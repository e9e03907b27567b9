//! The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use super::state::{Permit, Queued, Shared};
use crate::admitted::{Admitted, Held};
use crate::error::{BoxError, QueueTimeout};
use crate::provider::ErrorKind;
use crate::queue::Priority;
use crate::request::Deadline;
use crate::response::{Completion, Outcome, ResponseBody};
use crate::sync::Arc;

pin_project! {
    /// The inner service's response future, with the permit that moves into
    /// the response body and is released when the body ends or is dropped;
    /// or, when no permit was free at the call, a boxed future that waits
    /// for one in the shared queue first.
    ///
    /// Dropping the future gives back its place in the queue, or its permit,
    /// at once.
    pub struct ResponseFuture<S: Service<Request<B>>, B> {
        #[pin]
        kind: Admitted<S::Future, Permit, Waiting<S, B>>,
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(crate) fn called(fut: S::Future, permit: Permit) -> Self {
        ResponseFuture {
            kind: Admitted::sent(fut, permit),
        }
    }

    pub(crate) fn waiting(shared: Arc<Shared>, req: Request<B>, inner: S) -> Self {
        ResponseFuture {
            kind: Admitted::waiting(Waiting::new(shared, req, inner)),
        }
    }
}

impl<S: Service<Request<B>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().kind.poll(cx)
    }
}

/// The inner response, its body holding the permit (when there is one).
impl Held for Permit {
    fn respond<RB, E>(
        result: Result<Response<RB>, E>,
        permit: Option<Permit>,
    ) -> Result<Response<ResponseBody>, BoxError>
    where
        E: Into<BoxError>,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        // Matched, not `?`-converted: the response is moved as few times as
        // possible (it is a few hundred bytes); `E: Into<BoxError>` is not
        // `From` either.
        #[allow(clippy::question_mark)]
        let res = match result {
            Ok(res) => res,
            Err(e) => return Err(e.into()),
        };
        let Some(permit) = permit else {
            return Ok(ResponseBody::from_response(res));
        };
        let mut signalled = false;
        let mut success = false;
        if permit.shared.is_adaptive() {
            let status = res.status();
            if is_overload_status(status) {
                permit.shared.overload(permit.epoch);
                signalled = true;
            }
            success = status.is_success();
        }
        let mut res = ResponseBody::from_response(res);
        res.body_mut().hold_permit(Release {
            permit,
            signalled,
            success,
        });
        Ok(res)
    }
}

pin_project! {
    /// Waits for a permit in the queue, then calls the inner service.
    pub(crate) struct Waiting<S: Service<Request<B>>, B> {
        // Moved into the permit once admitted (saves a reference count).
        shared: Option<Arc<Shared>>,
        req: Option<Request<B>>,
        inner: S,
        waiter: Option<Queued>,
        permit: Option<Permit>,
        started: Option<Instant>,
        give_up_at: Option<Instant>,
        // Boxed: only a request that waits with a time limit needs it, and
        // inline it would make every future (the fast path's too) larger.
        sleep: Option<Pin<Box<Sleep>>>,
        #[pin]
        state: State<S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Admit,
        Ready,
        Call { #[pin] fut: F },
        Done,
    }
}

impl<S: Service<Request<B>>, B> fmt::Debug for Waiting<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("queued", &self.waiter.is_some())
            .field("admitted", &self.permit.is_some())
            .field("give_up_at", &self.give_up_at)
            .finish_non_exhaustive()
    }
}

impl<S: Service<Request<B>>, B> Waiting<S, B> {
    fn new(shared: Arc<Shared>, req: Request<B>, inner: S) -> Self {
        Waiting {
            shared: Some(shared),
            req: Some(req),
            inner,
            waiter: None,
            permit: None,
            started: None,
            give_up_at: None,
            sleep: None,
            state: State::Admit,
        }
    }
}

fn after_completion() -> BoxError {
    "concurrency limit future polled after completion".into()
}

impl<S, B, RB> Future for Waiting<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Admit => {
                    let Some(shared) = this.shared.as_ref() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(after_completion()));
                    };
                    let Some(waiter) = this.waiter.as_mut() else {
                        // Fast path: a free permit and no one waiting (a
                        // newcomer never jumps the queue).
                        if let Some(epoch) = shared.try_acquire(true) {
                            // `shared` is there: it was just borrowed.
                            if let Some(shared) = this.shared.take() {
                                *this.permit = Some(Permit { shared, epoch });
                            }
                            this.state.set(State::Ready);
                            continue;
                        }
                        let Some(req) = this.req.as_ref() else {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(after_completion()));
                        };
                        let now = Instant::now();
                        let priority = Priority::of(req, shared.priority_header.as_ref());
                        let by_max_wait = shared.max_wait.map(|w| now + w);
                        let deadline = req.extensions().get::<Deadline>().map(|d| d.0);
                        *this.started = Some(now);
                        *this.give_up_at = match (deadline, by_max_wait) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        match Shared::enqueue(shared, priority, now) {
                            Ok(w) => *this.waiter = Some(w),
                            Err(full) => {
                                this.state.set(State::Done);
                                return Poll::Ready(Err(full.into()));
                            }
                        }
                        // Poll the turn (registers the waker), then try.
                        continue;
                    };
                    // Register first, then try: a release in between wakes us.
                    let turn = if waiter.poll_turn(cx).is_ready() {
                        shared.try_acquire(false)
                    } else {
                        None
                    };
                    if let Some(epoch) = turn {
                        // Leaving the queue wakes the next in line.
                        *this.waiter = None;
                        if let Some(shared) = this.shared.take() {
                            *this.permit = Some(Permit { shared, epoch });
                        }
                        this.state.set(State::Ready);
                        continue;
                    }
                    let Some(at) = *this.give_up_at else {
                        return Poll::Pending;
                    };
                    let sleep = this.sleep.get_or_insert_with(|| Box::pin(sleep_until(at)));
                    ready!(sleep.as_mut().poll(cx));
                    *this.waiter = None;
                    this.state.set(State::Done);
                    let now = Instant::now();
                    let waited = this.started.map_or(std::time::Duration::ZERO, |s| {
                        now.saturating_duration_since(s)
                    });
                    return Poll::Ready(Err(QueueTimeout { waited }.into()));
                }
                StateProj::Ready => {
                    if let Err(e) = ready!(this.inner.poll_ready(cx)) {
                        *this.permit = None;
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    let Some(req) = this.req.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(after_completion()));
                    };
                    let fut = this.inner.call(req);
                    this.state.set(State::Call { fut });
                }
                StateProj::Call { fut } => {
                    let result = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(Permit::respond(result, this.permit.take()));
                }
                StateProj::Done => return Poll::Ready(Err(after_completion())),
            }
        }
    }
}

/// The statuses that say the provider is overloaded or limiting: 429, 503
/// and Anthropic's 529.
fn is_overload_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503 | 529)
}

/// Holds the permit in the response body; releases it when the body ends
/// (and, in adaptive mode, reports how it ended).
/// A permit held by a response body, with what adaptive mode needs to
/// learn from how the body ends.
pub(crate) struct Release {
    permit: Permit,
    signalled: bool,
    success: bool,
}

impl Release {
    /// Gives the permit back (and, in adaptive mode, tells how it went).
    pub(crate) fn on_complete(self, completion: &Completion) {
        let Release {
            permit,
            signalled,
            success,
        } = self;
        if signalled || !permit.shared.is_adaptive() {
            return;
        }
        let shared = Arc::clone(&permit.shared);
        let epoch = permit.epoch;
        drop(permit);
        let overloaded = completion.outcome == Outcome::ErrorEvent
            && completion
                .error
                .is_some_and(|e| matches!(e.kind, ErrorKind::Overloaded | ErrorKind::RateLimited));
        if overloaded {
            shared.overload(epoch);
        } else if success && completion.outcome == Outcome::Complete {
            shared.success();
        }
    }
}
