//! Which failures are worth another attempt.

use std::fmt;

use http::{HeaderMap, StatusCode};

use crate::error::{
    BodyTooLarge, BoxError, InvalidConfig, QueueTimeout, RateLimited, RequestTooLarge,
    UnreadableRequest,
};
use crate::provider::{ErrorClass, ErrorKind, GrpcCode, GrpcStatus, Pushback, should_retry};
use crate::queue::QueueFull;

/// One finished attempt, as a [`RetryPolicy`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Attempted<'a> {
    /// A response arrived.
    Response {
        /// Its status.
        status: StatusCode,
        /// Its headers.
        headers: &'a HeaderMap,
        /// The classified error body, when the body was read (429s), or the
        /// classified SSE `error` event a 200 stream started with.
        error: Option<ErrorClass>,
        /// Whether `error` came from an SSE `error` event inside a 200
        /// before any content.
        stream_error: bool,
        /// A gRPC call's status (with the server's pushback), when the
        /// response is gRPC and failed before any message: from the
        /// headers of a trailers-only response, or from trailers that came
        /// before any message. `None` for HTTP+JSON responses.
        grpc: Option<GrpcStatus>,
    },
    /// The inner service failed (a connection error, a timeout, or an error
    /// a layer below created).
    Error(&'a BoxError),
}

/// Decides whether an attempt's failure is worth retrying.
///
/// Implemented by [`DefaultPolicy`] and by any
/// `Fn(&Attempted<'_>) -> bool + Send + Sync + 'static` closure (which can
/// defer to `DefaultPolicy` for the cases it does not care about).
pub trait RetryPolicy: Send + Sync + 'static {
    /// Whether to retry after this attempt.
    fn should_retry(&self, attempted: &Attempted<'_>) -> bool;
}

impl<F> RetryPolicy for F
where
    F: Fn(&Attempted<'_>) -> bool + Send + Sync + 'static,
{
    fn should_retry(&self, attempted: &Attempted<'_>) -> bool {
        self(attempted)
    }
}

/// The default classification, as the official SDKs and the providers'
/// documentation define it:
///
/// - `x-should-retry: true|false` decides when present;
/// - retried: 408, 409, 429, 500, 502, 503, 504, 529 (and other 5xx but
///   501 and 505), connection errors and timeouts, and a 200 stream whose
///   first event is an `overloaded_error` / `api_error` before any content;
/// - never: 400, 401, 403, 404, 413, 422 and other 4xx; a 429 whose body
///   says the quota or spend limit is exhausted (`insufficient_quota`,
///   `enforced_spend_limit_reached`) — waiting cannot help;
/// - never the errors this crate's own layers create on purpose
///   ([`RateLimited`], [`QueueFull`], [`QueueTimeout`],
///   [`RequestTooLarge`], [`BodyTooLarge`], [`InvalidConfig`],
///   [`UnreadableRequest`]): they are
///   decisions, not accidents, and a layer above (fallback) acts on them;
/// - gRPC (a status in [`Attempted::Response::grpc`]): `UNAVAILABLE` and
///   `RESOURCE_EXHAUSTED` are retried, other codes are not, and a
///   `grpc-retry-pushback-ms` that is negative or not an integer means
///   "do not retry", as gRPC's retry design (A6) reads it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl RetryPolicy for DefaultPolicy {
    fn should_retry(&self, attempted: &Attempted<'_>) -> bool {
        match attempted {
            Attempted::Response {
                status,
                headers,
                error,
                grpc,
                ..
            } => {
                if let Some(advice) = should_retry(headers) {
                    return advice;
                }
                if let Some(grpc) = grpc {
                    return grpc.code.is_retryable_by_default() && grpc.pushback != Pushback::Stop;
                }
                if error.is_some_and(|e| e.kind == ErrorKind::QuotaExhausted) {
                    return false;
                }
                if let Some(e) = error
                    && status.is_success()
                {
                    return e.kind.is_retryable_by_default();
                }
                retryable_status(*status)
            }
            Attempted::Error(e) => !is_deliberate(e),
        }
    }
}

/// Statuses worth retrying by default.
pub fn retryable_status(status: StatusCode) -> bool {
    match status.as_u16() {
        408 | 409 | 429 => true,
        501 | 505 => false,
        s => (500..600).contains(&s),
    }
}

/// Errors a layer of this crate returns on purpose.
pub(crate) fn is_deliberate(e: &BoxError) -> bool {
    e.is::<RateLimited>()
        || e.is::<QueueFull>()
        || e.is::<QueueTimeout>()
        || e.is::<RequestTooLarge>()
        || e.is::<BodyTooLarge>()
        || e.is::<InvalidConfig>()
        || e.is::<UnreadableRequest>()
        || e.is::<crate::error::TooManyGroups>()
        || e.is::<crate::error::BudgetExceeded>()
        || e.is::<crate::error::UnpricedModel>()
        || e.is::<crate::error::TooManyBudgets>()
}

/// Why an attempt was retried (the last one is kept in
/// [`RetryInfo`](super::RetryInfo)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryReason {
    /// A response with this status.
    Status(StatusCode),
    /// A 200 stream that started with an `error` event.
    StreamError(ErrorKind),
    /// A gRPC call that failed with this status before any message.
    Grpc(GrpcCode),
    /// The inner service failed (connection error, timeout).
    Transport,
}

/// Why the layer stopped retrying a failure and returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The policy says this failure is not worth retrying.
    NotRetryable,
    /// The attempts allowed are used up.
    Exhausted,
    /// The retry budget is empty: an outage is not amplified.
    Budget,
    /// The advised or computed wait would pass the request's deadline.
    Deadline,
    /// The server asked for a longer wait than the longest honoured.
    AdviceTooLong,
    /// The request body cannot be replayed, so it was sent once.
    NotReplayable,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::NotRetryable => "not retryable",
            StopReason::Exhausted => "attempts exhausted",
            StopReason::Budget => "retry budget exhausted",
            StopReason::Deadline => "deadline would pass",
            StopReason::AdviceTooLong => "server advice longer than honoured",
            StopReason::NotReplayable => "body not replayable",
        })
    }
}

#[cfg(test)]
mod tests;
