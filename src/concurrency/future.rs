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
use crate::error::{BoxError, QueueTimeout};
use crate::provider::ErrorKind;
use crate::queue::Priority;
use crate::request::Deadline;
use crate::response::{BodyObserver, Completion, Outcome, ResponseBody};
use crate::sync::Arc;

pin_project! {
    /// Waits for a permit, then calls the inner service; the permit moves
    /// into the response body and is released when the body ends or is
    /// dropped.
    ///
    /// Dropping the future gives back its place in the queue, or its permit,
    /// at once.
    pub struct ResponseFuture<S: Service<Request<B>>, B> {
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

impl<S: Service<Request<B>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("queued", &self.waiter.is_some())
            .field("admitted", &self.permit.is_some())
            .field("give_up_at", &self.give_up_at)
            .finish_non_exhaustive()
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(crate) fn new(shared: Arc<Shared>, req: Request<B>, inner: S) -> Self {
        ResponseFuture {
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

/// The request's priority: its [`Priority`] extension, else the priority
/// header, else the default.
fn priority_of<B>(shared: &Shared, req: &Request<B>) -> Priority {
    req.extensions()
        .get::<Priority>()
        .copied()
        .or_else(|| {
            let name = shared.priority_header.as_ref()?;
            let value = req.headers().get(name)?.to_str().ok()?;
            value.trim().parse::<u8>().ok().map(Priority)
        })
        .unwrap_or_default()
}

fn after_completion() -> BoxError {
    "concurrency limit future polled after completion".into()
}

impl<S, B, RB> Future for ResponseFuture<S, B>
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
                        let priority = priority_of(shared, req);
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
                    let permit = this.permit.take();
                    let res = match result {
                        Ok(res) => res,
                        // The permit is released here, at once.
                        Err(e) => return Poll::Ready(Err(e.into())),
                    };
                    let Some(permit) = permit else {
                        return Poll::Ready(Ok(ResponseBody::from_response(res)));
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
                    res.body_mut().observe(Box::new(Release {
                        permit,
                        signalled,
                        success,
                    }));
                    return Poll::Ready(Ok(res));
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
struct Release {
    permit: Permit,
    /// The status already counted as an overload signal.
    signalled: bool,
    /// A 2xx status (adaptive mode only).
    success: bool,
}

impl BodyObserver for Release {
    fn on_complete(self: Box<Self>, completion: &Completion) {
        let Release {
            permit,
            signalled,
            success,
        } = *self;
        if signalled || !permit.shared.is_adaptive() {
            return;
        }
        let shared = Arc::clone(&permit.shared);
        let epoch = permit.epoch;
        // Released first: the cap may change below, and the next waiter
        // must see this permit free either way.
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
