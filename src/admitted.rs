//! The response future both limiters share: admitted and sent at the call
//! (the inner future, and what the request holds until its response
//! arrives), or waiting for admission in a boxed `async` block of the
//! limiter's own. Only a request that waits pays for the box — beside a
//! wait, nothing.
//!
//! Also what the two waits share: when they give up ([`give_up_at`]),
//! their timer ([`poll_sleep_until`]) and how they end ([`send`]).

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::error::BoxError;
use crate::response::ResponseBody;
use crate::util::SlowPath;

/// What an admitted request holds until its response arrives (a permit, a
/// reservation), and how the response takes it over.
pub(crate) trait Held: Sized + Send {
    /// The error of a waiting future polled after it completed.
    const POLLED_AFTER_COMPLETION: &'static str;

    /// The inner service's answer, with what the request held (`None` once
    /// taken) moved into it — or given back with an error.
    fn respond<RB, E>(
        result: Result<Response<RB>, E>,
        held: Option<Self>,
    ) -> Result<Response<ResponseBody>, BoxError>
    where
        E: Into<BoxError>,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>;

    /// A request admitted after a wait has just been sent (one admitted at
    /// the call is held as sent from the start).
    fn sent(&mut self) {}

    /// The inner future of a request sent at the call is being polled. A
    /// tower service sends when its future is polled, not when it is
    /// made: until this is called, a dropped future sent nothing, and
    /// what it holds is given back in full.
    fn polled(&mut self) {}
}

pin_project! {
    #[project = AdmittedProj]
    pub(crate) enum Admitted<F, T> {
        // The common case, kept small: no request, no inner service, no
        // queue state.
        Sent { #[pin] fut: F, held: Option<T> },
        Waiting { fut: SlowPath },
    }
}

impl<F, T> Admitted<F, T> {
    pub(crate) fn sent(fut: F, held: T) -> Self {
        Admitted::Sent {
            fut,
            held: Some(held),
        }
    }

    pub(crate) fn waiting(
        fut: impl Future<Output = Result<Response<ResponseBody>, BoxError>> + Send + 'static,
    ) -> Self {
        Admitted::Waiting {
            fut: SlowPath::new(fut),
        }
    }
}

impl<F, T> fmt::Debug for Admitted<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ResponseFuture");
        match self {
            Admitted::Sent { held, .. } => d.field("admitted", &held.is_some()),
            Admitted::Waiting { fut } => d.field("waiting", &fut.is_pending()),
        };
        d.finish_non_exhaustive()
    }
}

impl<F, T, RB, E> Future for Admitted<F, T>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
    T: Held,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmittedProj::Sent { fut, held } => {
                if let Some(held) = held.as_mut() {
                    held.polled();
                }
                let result = ready!(fut.poll(cx));
                Poll::Ready(T::respond(result, held.take()))
            }
            AdmittedProj::Waiting { fut } => fut.poll(cx, T::POLLED_AFTER_COMPLETION),
        }
    }
}

/// The end of a wait: the service the request waited with is driven
/// (`poll_ready` → `call`), and the response takes over what the request
/// holds.
pub(crate) async fn send<S, B, RB, T>(
    mut inner: S,
    req: Request<B>,
    mut held: T,
) -> Result<Response<ResponseBody>, BoxError>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
    T: Held,
{
    if let Err(e) = poll_fn(|cx| inner.poll_ready(cx)).await {
        // Not sent: everything back now.
        drop(held);
        return Err(e.into());
    }
    let fut = inner.call(req);
    held.sent();
    // Dropped while the call is in flight: the inner future goes first,
    // then what the request holds (as on the path sent at the call).
    T::respond(fut.await, Some(held))
}

/// When a waiting request gives up: at its deadline, or `max_wait` after
/// `start`, whichever comes first.
#[cfg_attr(not(any(feature = "rate", feature = "concurrency")), allow(dead_code))]
pub(crate) fn give_up_at(
    deadline: Option<Instant>,
    max_wait: Option<Duration>,
    start: Instant,
) -> Option<Instant> {
    earliest(deadline, max_wait.map(|w| start + w))
}

/// The earlier of two optional times (`None` is never).
#[cfg_attr(not(any(feature = "rate", feature = "concurrency")), allow(dead_code))]
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Polls a waiting request's one timer, first set (or moved) to `at`: a
/// wait's wake-up time moves as the bucket and the turn change, and
/// resetting the timer keeps its registration instead of making another.
#[cfg_attr(not(any(feature = "rate", feature = "concurrency")), allow(dead_code))]
pub(crate) fn poll_sleep_until(
    mut sleep: Pin<&mut Option<Sleep>>,
    at: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    match sleep.as_mut().as_pin_mut() {
        Some(sleep) => {
            if sleep.deadline() != at {
                sleep.reset(at);
            }
        }
        None => sleep.set(Some(sleep_until(at))),
    }
    match sleep.as_pin_mut() {
        Some(sleep) => sleep.poll(cx),
        None => Poll::Ready(()),
    }
}
