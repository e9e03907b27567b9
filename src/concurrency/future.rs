//! The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::state::{Permit, Shared};
use crate::admitted::{Admitted, Held, give_up_at, poll_sleep_until, send};
use crate::error::{BoxError, QueueTimeout};
use crate::provider::ErrorKind;
use crate::queue::Priority;
use crate::request::Deadline;
use crate::response::{BodyObserver, Completion, Outcome, ResponseBody};
use crate::sync::Arc;
use tracing::Instrument;

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
        kind: Admitted<S::Future, Permit>,
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(crate) fn called(fut: S::Future, permit: Permit) -> Self {
        ResponseFuture {
            kind: Admitted::sent(fut, permit),
        }
    }

    /// Waits for a permit in the shared queue, then drives `inner` (a clone
    /// of the service, asked for its readiness only once a permit is held).
    pub(crate) fn waiting<RB>(shared: Arc<Shared>, req: Request<B>, inner: S) -> Self
    where
        S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Send + 'static,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        ResponseFuture {
            kind: Admitted::waiting(async move {
                let epoch = match shared.try_acquire(true) {
                    // A permit was freed since the call, and nobody waits
                    // (a newcomer never jumps the queue).
                    Some(epoch) => epoch,
                    None => {
                        let now = Instant::now();
                        let priority = Priority::of(&req, shared.priority_header.as_ref());
                        let deadline = req.extensions().get::<Deadline>().map(|d| d.0);
                        let give_up_at = give_up_at(deadline, shared.max_wait, now);
                        let span = tracing::debug_span!("llm_resilience.concurrency.wait");
                        span.in_scope(|| {
                            tracing::debug!(
                                llm_resilience.concurrency.cap = shared.stats().cap,
                                llm_resilience.queue.position = shared.stats().queued + 1,
                                "concurrency: waiting for a permit"
                            )
                        });
                        let epoch = queue_for_permit(&shared, priority, now, give_up_at)
                            .instrument(span.clone())
                            .await
                            .inspect_err(|_| {
                                span.in_scope(|| {
                                    tracing::debug!(
                                        llm_resilience.queue.wait_ms =
                                            now.elapsed().as_millis() as u64,
                                        error.type = "queue_timeout",
                                        "concurrency: gave up waiting for a permit"
                                    )
                                });
                            })?;
                        let waited = now.elapsed();
                        crate::telemetry::record::queue_wait("concurrency", waited);
                        span.in_scope(|| {
                            tracing::debug!(
                                llm_resilience.queue.wait_ms = waited.as_millis() as u64,
                                "concurrency: permit after waiting"
                            )
                        });
                        epoch
                    }
                };
                // `shared` moves into the permit (saves a reference count).
                send(inner, req, Permit { shared, epoch }).await
            }),
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
    const POLLED_AFTER_COMPLETION: &'static str =
        "concurrency limit future polled after completion";

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
        res.body_mut().observe(Box::new(Release {
            permit,
            signalled,
            success,
        }));
        Ok(res)
    }
}

/// Waits in the queue, from `now`, for the request's turn and a free
/// permit, until `give_up_at`. Dropped at any await, it gives its place
/// back (and the next in line is woken) as the `Queued` place drops.
async fn queue_for_permit(
    shared: &Arc<Shared>,
    priority: Priority,
    now: Instant,
    give_up_at: Option<Instant>,
) -> Result<u64, BoxError> {
    let mut place = Shared::enqueue(shared, priority, now)?;
    let mut sleep = pin!(None::<Sleep>);
    let epoch = poll_fn(|cx| {
        // Register first, then try: a release in between wakes us.
        if place.poll_turn(cx).is_ready()
            && let Some(epoch) = shared.try_acquire(false)
        {
            return Poll::Ready(Some(epoch));
        }
        let Some(at) = give_up_at else {
            return Poll::Pending;
        };
        poll_sleep_until(sleep.as_mut(), at, cx).map(|()| None)
    })
    .await;
    // Leaving the queue wakes the next in line.
    drop(place);
    epoch.ok_or_else(|| {
        QueueTimeout {
            waited: Instant::now().saturating_duration_since(now),
        }
        .into()
    })
}

/// The statuses that say the provider is overloaded or limiting: 429, 503
/// and Anthropic's 529.
fn is_overload_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503 | 529)
}

/// A permit held by a response body, released when the body ends (or is
/// dropped), with what adaptive mode needs to learn from how it ended.
struct Release {
    permit: Permit,
    signalled: bool,
    success: bool,
}

impl BodyObserver for Release {
    /// Gives the permit back (and, in adaptive mode, tells how it went).
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
