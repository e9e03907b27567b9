//! The response future both limiters share: admitted and sent at the call
//! (the inner future, and what the request holds until its response
//! arrives), or waiting for admission in a boxed future of the limiter's
//! own. Only a request that waits pays for the box — beside a wait, nothing.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use crate::error::BoxError;
use crate::response::ResponseBody;

/// What an admitted request holds until its response arrives (a permit, a
/// reservation), and how the response takes it over.
pub(crate) trait Held: Sized {
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
}

pin_project! {
    #[project = AdmittedProj]
    pub(crate) enum Admitted<F, T, W> {
        // The common case, kept small: no request, no inner service, no
        // queue state.
        Sent { #[pin] fut: F, held: Option<T> },
        Waiting { fut: Pin<Box<W>> },
    }
}

impl<F, T, W> Admitted<F, T, W> {
    pub(crate) fn sent(fut: F, held: T) -> Self {
        Admitted::Sent {
            fut,
            held: Some(held),
        }
    }

    pub(crate) fn waiting(fut: W) -> Self {
        Admitted::Waiting { fut: Box::pin(fut) }
    }
}

impl<F, T, W: fmt::Debug> fmt::Debug for Admitted<F, T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admitted::Sent { held, .. } => f
                .debug_struct("ResponseFuture")
                .field("admitted", &held.is_some())
                .finish_non_exhaustive(),
            Admitted::Waiting { fut } => fmt::Debug::fmt(&**fut, f),
        }
    }
}

impl<F, T, W, RB, E> Future for Admitted<F, T, W>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
    T: Held,
    W: Future<Output = Result<Response<ResponseBody>, BoxError>>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmittedProj::Sent { fut, held } => {
                let result = ready!(fut.poll(cx));
                Poll::Ready(T::respond(result, held.take()))
            }
            AdmittedProj::Waiting { fut } => fut.as_mut().poll(cx),
        }
    }
}
