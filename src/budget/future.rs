//! The response future of [`Budget`](super::Budget), and the
//! reservation as the response body's observer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::state::{Decision, Facts, Hold, Outcome, Shared};
use super::store::Charge;
use crate::admitted::{Admitted, Held, send};
use crate::error::{BackendError, BoxError, DeadlineElapsed};
use crate::request::Deadline;
use crate::response::{BodyObserver, Completion, ResponseBody};
use std::sync::Arc;

pin_project! {
    /// The inner service's response future with the request's
    /// reservation, which its response body settles when it ends; or, for
    /// a store that answers later, a boxed future that reserves first.
    pub struct ResponseFuture<S: Service<Request<B>>, B> {
        #[pin]
        kind: Admitted<S::Future, Box<Reconcile>>,
    }
}

impl<S: Service<Request<B>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(crate) fn called(fut: S::Future, mut hold: Hold) -> Self {
        hold.sent = true;
        ResponseFuture {
            kind: Admitted::sent(fut, Reconcile::boxed(hold)),
        }
    }

    pub(crate) fn refused(error: BoxError) -> Self {
        ResponseFuture {
            kind: Admitted::waiting(async move { Err(error) }),
        }
    }

    /// Reserves with the store's answer to come (`first`), then drives
    /// `inner` (a clone, asked for readiness only once reserved).
    pub(crate) fn reserving<RB>(
        shared: Arc<Shared>,
        facts: Facts,
        charges: Vec<Charge>,
        first: super::store::Answer<super::store::Reserve>,
        req: Request<B>,
        inner: S,
    ) -> Self
    where
        S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Send + 'static,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        // The store's answer ends by the request's deadline too, not only
        // by the store's own timeout.
        let deadline = req.extensions().get::<Deadline>().map(|d| d.0);
        ResponseFuture {
            kind: Admitted::waiting(async move {
                let reserving = reserve(shared, facts, charges, first);
                let hold = match deadline {
                    Some(at) => tokio::time::timeout_at(at, reserving)
                        .await
                        .map_err(|_| DeadlineElapsed::new())??,
                    None => reserving.await?,
                };
                send(inner, req, Reconcile::boxed(hold)).await
            }),
        }
    }
}

/// Waits for the store; once more with the store's periods when its clock
/// disagrees with ours.
pub(crate) async fn reserve(
    shared: Arc<Shared>,
    facts: Facts,
    charges: Vec<Charge>,
    first: super::store::Answer<super::store::Reserve>,
) -> Result<Hold, BoxError> {
    let answer = first.get().await;
    match shared.decide(answer, charges, facts) {
        Decision::Admit(hold) => Ok(hold),
        Decision::Refuse(e) => Err(e),
        Decision::Clock(now, facts) => {
            shared.learn_clock(now);
            let charges = shared.charges(&facts, now);
            let answer = shared.store.reserve(now, charges.clone()).get().await;
            match shared.decide(answer, charges, facts) {
                Decision::Admit(hold) => Ok(hold),
                Decision::Refuse(e) => Err(e),
                Decision::Clock(..) => {
                    Err(BackendError::new("the store's clock moved between two calls").into())
                }
            }
        }
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

/// The reservation as the response body's observer.
pub(crate) struct Reconcile {
    hold: Hold,
    success: bool,
    /// Whether the inner future was polled (a tower service sends only
    /// then): a future dropped before is refunded in full.
    polled: bool,
}

impl Reconcile {
    fn boxed(hold: Hold) -> Box<Self> {
        Box::new(Reconcile {
            hold,
            success: false,
            polled: false,
        })
    }
}

impl Drop for Reconcile {
    fn drop(&mut self) {
        if !self.polled {
            self.hold.sent = false;
        }
    }
}

impl Held for Box<Reconcile> {
    const POLLED_AFTER_COMPLETION: &'static str = "budget future polled after completion";

    fn respond<RB, E>(
        result: Result<Response<RB>, E>,
        hold: Option<Self>,
    ) -> Result<Response<ResponseBody>, BoxError>
    where
        E: Into<BoxError>,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        // An error drops the hold: the estimate stands once sent.
        let res = result.map_err(Into::into)?;
        let mut res = ResponseBody::from_response(res);
        if let Some(mut reconcile) = hold {
            if reconcile.hold.charges().is_empty() {
                return Ok(res);
            }
            reconcile.success = res.status().is_success();
            res.body_mut().observe(reconcile);
        }
        Ok(res)
    }

    fn sent(&mut self) {
        self.hold.sent = true;
        self.polled = true;
    }

    fn polled(&mut self) {
        self.polled = true;
    }
}

impl BodyObserver for Reconcile {
    fn on_complete(mut self: Box<Self>, c: &Completion) {
        let outcome = match (self.success, c.usage) {
            (false, _) => Outcome::Refund,
            (true, Some(usage)) => Outcome::Usage {
                usage,
                complete: c.outcome.is_complete(),
            },
            (true, None) => Outcome::Estimate,
        };
        self.hold.settle(outcome);
    }
}
