//! The response future of [`RateLimit`](super::RateLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use super::gcra::{DIMENSIONS, Denied};
use super::state::{Attempt, Group, Settle, Shared, Ticket};
use crate::admitted::{Admitted, Held};
use crate::error::{BoxError, QueueTimeout, RateLimited, RequestTooLarge};
use crate::queue::{Priority, Waiter};
use crate::request::Deadline;
use crate::response::{BodyObserver, Completion, ResponseBody};
use crate::sync::Arc;

pin_project! {
    /// The inner service's response future, with the reservation that the
    /// response's body settles when it ends; or, when the request could not
    /// be admitted at the call, a boxed future that waits for admission
    /// first.
    pub struct ResponseFuture<S: Service<Request<B>>, B> {
        // The reservation is boxed once, as the body observer it becomes.
        #[pin]
        kind: Admitted<S::Future, Box<Reconcile>, Waiting<S, B>>,
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(crate) fn called(fut: S::Future, hold: Hold) -> Self {
        ResponseFuture {
            kind: Admitted::sent(fut, Reconcile::boxed(hold)),
        }
    }

    pub(crate) fn waiting(
        shared: Arc<Shared>,
        group: Arc<Group>,
        cost: [u64; DIMENSIONS],
        priority: Priority,
        deadline: Option<Deadline>,
        req: Request<B>,
        inner: S,
    ) -> Self {
        ResponseFuture {
            kind: Admitted::waiting(Waiting::new(
                shared, group, cost, priority, deadline, req, inner,
            )),
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

/// The inner response: learned from, its body settling the reservation.
impl Held for Box<Reconcile> {
    fn respond<RB, E>(
        result: Result<Response<RB>, E>,
        hold: Option<Self>,
    ) -> Result<Response<ResponseBody>, BoxError>
    where
        E: Into<BoxError>,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        // An error drops the hold: settled as unknown (sent) or cancelled.
        let res = result.map_err(Into::into)?;
        let Some(mut reconcile) = hold else {
            return Ok(ResponseBody::from_response(res));
        };
        let hold = &reconcile.hold;
        hold.shared
            .learn(&hold.group, &hold.ticket, res.status(), res.headers());
        reconcile.success = res.status().is_success();
        let mut res = ResponseBody::from_response(res);
        res.body_mut().observe(reconcile);
        Ok(res)
    }
}

/// A place in the queue, counted in its group while it lasts.
struct Queued {
    waiter: Waiter,
    group: Arc<Group>,
}

impl Queued {
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.waiter.poll_turn(cx)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.group.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

pin_project! {
    /// Waits for admission in the queue, then calls the inner service.
    pub(crate) struct Waiting<S: Service<Request<B>>, B> {
        shared: Arc<Shared>,
        group: Arc<Group>,
        cost: [u64; DIMENSIONS],
        priority: Priority,
        started: Instant,
        give_up_at: Option<Instant>,
        jitter: Option<Duration>,
        gate: Option<Instant>,
        waiter: Option<Queued>,
        hold: Option<Hold>,
        req: Option<Request<B>>,
        inner: S,
        #[pin]
        sleep: Option<Sleep>,
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
            .field("cost", &self.cost)
            .field("priority", &self.priority)
            .field("queued", &self.waiter.is_some())
            .field("admitted", &self.hold.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: Service<Request<B>>, B> Waiting<S, B> {
    fn new(
        shared: Arc<Shared>,
        group: Arc<Group>,
        cost: [u64; DIMENSIONS],
        priority: Priority,
        deadline: Option<Deadline>,
        req: Request<B>,
        inner: S,
    ) -> Self {
        let started = Instant::now();
        let by_max_wait = shared.config.max_wait.map(|w| started + w);
        let give_up_at = match (deadline.map(|d| d.0), by_max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Waiting {
            shared,
            group,
            cost,
            priority,
            started,
            give_up_at,
            jitter: None,
            gate: None,
            waiter: None,
            hold: None,
            req: Some(req),
            inner,
            sleep: None,
            state: State::Admit,
        }
    }
}

/// The error for a request that cannot wait until `at`.
fn give_up(fail_fast: bool, started: Instant, at: Instant) -> BoxError {
    let now = Instant::now();
    if fail_fast {
        RateLimited {
            retry_after: at.saturating_duration_since(now),
        }
        .into()
    } else {
        QueueTimeout {
            waited: now.saturating_duration_since(started),
        }
        .into()
    }
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
                    if let Some(waiter) = this.waiter.as_mut()
                        && waiter.poll_turn(cx).is_pending()
                    {
                        // Not our turn: only the give-up time can end the wait.
                        let Some(at) = *this.give_up_at else {
                            return Poll::Pending;
                        };
                        // The timer may still be set for the bucket time of
                        // a turn this waiter lost to a newcomer: wait for the
                        // give-up time, not for that.
                        match this.sleep.as_mut().as_pin_mut() {
                            Some(sleep) => {
                                if sleep.deadline() != at {
                                    sleep.reset(at);
                                }
                            }
                            None => this.sleep.set(Some(sleep_until(at))),
                        }
                        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                            ready!(sleep.poll(cx));
                        }
                        this.state.set(State::Done);
                        *this.waiter = None;
                        let fail_fast = this.shared.config.fail_fast;
                        let retry_at = this.shared.instant(this.shared.earliest(
                            this.group,
                            *this.cost,
                            this.shared.now(),
                        ));
                        return Poll::Ready(Err(give_up(fail_fast, *this.started, retry_at)));
                    }
                    let now = this.shared.now();
                    // A newcomer does not overtake the group's waiters.
                    let behind_others =
                        this.waiter.is_none() && this.group.queued.load(Ordering::SeqCst) > 0;
                    let gate = this.gate.filter(|g| *g > Instant::now());
                    let attempt = match gate {
                        // Paused by a cooldown: not before its own gate.
                        Some(gate) => Attempt::Gated(gate),
                        None => {
                            this.shared
                                .attempt(this.group, *this.cost, now, behind_others, false)
                        }
                    };
                    let wake_at = match attempt {
                        Attempt::Admitted(ticket) => {
                            // Leaving the queue wakes the next in line.
                            *this.waiter = None;
                            *this.hold = Some(Hold {
                                shared: Arc::clone(this.shared),
                                group: Arc::clone(this.group),
                                ticket,
                                sent: false,
                                done: false,
                            });
                            this.state.set(State::Ready);
                            continue;
                        }
                        Attempt::Never(Denied::CostExceedsBurst(e)) => {
                            this.state.set(State::Done);
                            *this.waiter = None;
                            return Poll::Ready(Err(RequestTooLarge {
                                dimension: e.dimension.name(),
                                cost: e.cost,
                                burst: e.burst,
                            }
                            .into()));
                        }
                        Attempt::Never(e) => {
                            this.state.set(State::Done);
                            *this.waiter = None;
                            return Poll::Ready(Err(e.into()));
                        }
                        Attempt::At { at, cooldown } => {
                            let mut at = this.shared.instant(at);
                            if cooldown {
                                // Positive-only jitter, drawn once per request,
                                // so a paused herd does not return in lockstep:
                                // the request's own gate, which it keeps even
                                // once the group's cooldown is over.
                                let max = this.shared.config.cooldown_jitter;
                                at += *this.jitter.get_or_insert_with(|| this.shared.jitter(max));
                                *this.gate = Some(at);
                            }
                            Some(at)
                        }
                        Attempt::Gated(gate) => Some(gate),
                        Attempt::Parked => None,
                    };
                    if this.waiter.is_none() {
                        if let (Some(at), Some(limit)) = (wake_at, *this.give_up_at)
                            && at > limit
                            && this.shared.config.fail_fast
                        {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(give_up(true, *this.started, at)));
                        }
                        // A request paused by a cooldown takes its place as of
                        // its gate: the herd is served in the order of the
                        // gates, so each one's jitter holds (a FIFO place
                        // would let the first gate release everyone).
                        let now = Instant::now();
                        let place_at = this.gate.filter(|g| *g > now).unwrap_or(now);
                        // Counted in before the place is taken, so a newcomer
                        // never sees an empty queue that is not.
                        this.group.queued.fetch_add(1, Ordering::SeqCst);
                        match this
                            .shared
                            .queue
                            .try_enqueue(this.group.id, *this.priority, place_at)
                        {
                            Ok(waiter) => {
                                *this.waiter = Some(Queued {
                                    waiter,
                                    group: Arc::clone(this.group),
                                });
                            }
                            Err(full) => {
                                this.group.queued.fetch_sub(1, Ordering::SeqCst);
                                this.state.set(State::Done);
                                return Poll::Ready(Err(full.into()));
                            }
                        }
                        // Poll the turn (registers the waker); if we are the
                        // head already, the next attempt decides.
                        continue;
                    }
                    // The head of the group waits for the bucket or the gate.
                    if let (Some(at), Some(limit)) = (wake_at, *this.give_up_at)
                        && at > limit
                        && this.shared.config.fail_fast
                    {
                        this.state.set(State::Done);
                        *this.waiter = None;
                        return Poll::Ready(Err(give_up(true, *this.started, at)));
                    }
                    let target = match (wake_at, *this.give_up_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    let Some(target) = target else {
                        // Parked until a response wakes the head.
                        return Poll::Pending;
                    };
                    match this.sleep.as_mut().as_pin_mut() {
                        Some(sleep) => {
                            if sleep.deadline() != target {
                                sleep.reset(target);
                            }
                        }
                        None => this.sleep.set(Some(sleep_until(target))),
                    }
                    if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                        ready!(sleep.poll(cx));
                    }
                    if let Some(limit) = *this.give_up_at
                        && Instant::now() >= limit
                        && wake_at.is_none_or(|at| at > limit)
                    {
                        this.state.set(State::Done);
                        *this.waiter = None;
                        let retry_at = wake_at.unwrap_or(limit);
                        return Poll::Ready(Err(give_up(
                            this.shared.config.fail_fast,
                            *this.started,
                            retry_at,
                        )));
                    }
                }
                StateProj::Ready => {
                    if let Err(e) = ready!(this.inner.poll_ready(cx)) {
                        this.state.set(State::Done);
                        // Not sent: everything back now.
                        drop(this.hold.take());
                        return Poll::Ready(Err(e.into()));
                    }
                    let Some(req) = this.req.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(
                            Err("rate limit future polled after completion".into()),
                        );
                    };
                    let fut = this.inner.call(req);
                    if let Some(hold) = this.hold.as_mut() {
                        hold.sent = true;
                        this.shared.sent(this.group);
                    }
                    this.state.set(State::Call { fut });
                }
                StateProj::Call { fut } => {
                    let result = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(Box::<Reconcile>::respond(
                        result,
                        this.hold.take().map(Reconcile::boxed),
                    ));
                }
                StateProj::Done => {
                    return Poll::Ready(Err("rate limit future polled after completion".into()));
                }
            }
        }
    }
}

/// A reservation held by a request: refunded in full if the request is
/// dropped before it is sent; settled when its response ends.
/// A reservation held by a request: settled from its response's usage, or
/// given back (cancelled) when the request is dropped before it was sent.
pub(crate) struct Hold {
    pub(crate) shared: Arc<Shared>,
    pub(crate) group: Arc<Group>,
    pub(crate) ticket: Ticket,
    pub(crate) sent: bool,
    pub(crate) done: bool,
}

impl Hold {
    fn settle(mut self, outcome: Settle) {
        self.done = true;
        self.shared.settle(&self.group, &self.ticket, outcome);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.sent {
            // Dropped after sending: the estimate stands.
            self.shared
                .settle(&self.group, &self.ticket, Settle::Unknown);
        } else {
            self.shared.cancel(&self.group, &self.ticket);
        }
    }
}

/// Settles a reservation from the response body's completion.
/// The reservation as the response body's observer: settled from the
/// usage the body reports.
pub(crate) struct Reconcile {
    hold: Hold,
    success: bool,
}

impl Reconcile {
    fn boxed(hold: Hold) -> Box<Self> {
        Box::new(Reconcile {
            hold,
            success: false,
        })
    }
}

impl BodyObserver for Reconcile {
    fn on_complete(self: Box<Self>, c: &Completion) {
        let outcome = if !self.success {
            Settle::Refused
        } else {
            match c.usage {
                Some(usage) => Settle::Usage {
                    usage,
                    complete: c.outcome.is_complete(),
                },
                None => Settle::Unknown,
            }
        };
        self.hold.settle(outcome);
    }
}
