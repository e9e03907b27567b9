//! gRPC status and retry pushback, read from response headers or trailers.
//!
//! A gRPC call is answered with HTTP 200 whatever its outcome; the outcome is
//! the `grpc-status` field (and `grpc-message`), sent in the trailers after
//! the response messages — or, when the call failed before any message, in
//! the headers of a *trailers-only* response (headers that end the stream,
//! which is how tonic, grpc-go and grpc-java answer an immediate error such
//! as `RESOURCE_EXHAUSTED`). The server may add `grpc-retry-pushback-ms`
//! (gRPC's retry design, A6): a wait in milliseconds before the next attempt,
//! or, when negative or not an integer, a request not to retry at all.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, header};

use super::super::retry::MAX_RETRY_AFTER;

/// A gRPC status code, as `grpc-status` carries it (the codes of
/// `google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcCode {
    /// 0: not an error.
    Ok,
    /// 1: cancelled, typically by the caller.
    Cancelled,
    /// 2: unknown error; also any code this enum does not name, as gRPC's
    /// own clients read an unknown code.
    Unknown,
    /// 3: the client sent an invalid argument.
    InvalidArgument,
    /// 4: the deadline expired before the operation completed.
    DeadlineExceeded,
    /// 5: an entity was not found.
    NotFound,
    /// 6: the entity the client tried to create exists.
    AlreadyExists,
    /// 7: the caller may not do this.
    PermissionDenied,
    /// 8: a quota or rate limit was hit, or the server is out of a
    /// resource: retryable (with the server's pushback, when it sent one).
    ResourceExhausted,
    /// 9: the system is not in a state the operation needs.
    FailedPrecondition,
    /// 10: aborted, typically by a concurrency conflict.
    Aborted,
    /// 11: out of the valid range.
    OutOfRange,
    /// 12: not implemented by the server.
    Unimplemented,
    /// 13: an internal invariant broke.
    Internal,
    /// 14: the service is unavailable, most likely transiently: retryable.
    Unavailable,
    /// 15: unrecoverable data loss.
    DataLoss,
    /// 16: no valid credentials.
    Unauthenticated,
}

impl GrpcCode {
    /// The code for a number; numbers outside 0–16 are
    /// [`Unknown`](Self::Unknown), as gRPC's clients read them.
    pub fn from_u32(code: u32) -> Self {
        match code {
            0 => Self::Ok,
            1 => Self::Cancelled,
            3 => Self::InvalidArgument,
            4 => Self::DeadlineExceeded,
            5 => Self::NotFound,
            6 => Self::AlreadyExists,
            7 => Self::PermissionDenied,
            8 => Self::ResourceExhausted,
            9 => Self::FailedPrecondition,
            10 => Self::Aborted,
            11 => Self::OutOfRange,
            12 => Self::Unimplemented,
            13 => Self::Internal,
            14 => Self::Unavailable,
            15 => Self::DataLoss,
            16 => Self::Unauthenticated,
            _ => Self::Unknown,
        }
    }

    /// The number `grpc-status` carries.
    pub fn as_u32(self) -> u32 {
        match self {
            Self::Ok => 0,
            Self::Cancelled => 1,
            Self::Unknown => 2,
            Self::InvalidArgument => 3,
            Self::DeadlineExceeded => 4,
            Self::NotFound => 5,
            Self::AlreadyExists => 6,
            Self::PermissionDenied => 7,
            Self::ResourceExhausted => 8,
            Self::FailedPrecondition => 9,
            Self::Aborted => 10,
            Self::OutOfRange => 11,
            Self::Unimplemented => 12,
            Self::Internal => 13,
            Self::Unavailable => 14,
            Self::DataLoss => 15,
            Self::Unauthenticated => 16,
        }
    }

    /// Whether a retry of the same call may succeed: `UNAVAILABLE` and
    /// `RESOURCE_EXHAUSTED` only.
    ///
    /// Others are left alone on purpose: `DEADLINE_EXCEEDED` has used the
    /// caller's time, `ABORTED` and `INTERNAL` may have had effects (a
    /// retry is not known to be safe), and the rest are the caller's
    /// errors. A policy of your own can retry more
    /// ([`RetryPolicy`](crate::retry::RetryPolicy)).
    pub fn is_retryable_by_default(self) -> bool {
        matches!(self, Self::Unavailable | Self::ResourceExhausted)
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "OK",
            Self::Cancelled => "CANCELLED",
            Self::Unknown => "UNKNOWN",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::DataLoss => "DATA_LOSS",
            Self::Unauthenticated => "UNAUTHENTICATED",
        })
    }
}

/// The server's `grpc-retry-pushback-ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pushback {
    /// No pushback was sent: the client's own backoff decides.
    #[default]
    Absent,
    /// Retry after this wait, instead of the computed backoff. Zero means
    /// at once. Longer than [`MAX_RETRY_AFTER`], however long, it is
    /// `Duration::MAX` ("too long", as [`retry_after`](super::super::retry_after)
    /// reports it), which the retry layer's `max_server_delay` refuses.
    Wait(Duration),
    /// The value was negative or not an integer: the server asks the
    /// client not to retry (A6).
    Stop,
}

/// The outcome of a gRPC call, as far as a header map tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrpcStatus {
    /// `grpc-status`.
    pub code: GrpcCode,
    /// `grpc-retry-pushback-ms`.
    pub pushback: Pushback,
}

impl GrpcStatus {
    /// Reads `grpc-status` and `grpc-retry-pushback-ms` from a header map
    /// (a trailers-only response's headers, or a response's trailers).
    ///
    /// `None` when there is no usable `grpc-status`: absent, repeated, or
    /// not a plain decimal number (`"14"`; not `" 14"`, `"+14"`, `"0x0e"`).
    /// A number outside 0–16 is [`GrpcCode::Unknown`]. The message
    /// (`grpc-message`) is not read: it is free text from the server.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::HeaderMap;
    /// use tower_llm_resilience::provider::{GrpcCode, GrpcStatus, Pushback};
    ///
    /// let mut trailers = HeaderMap::new();
    /// trailers.insert("grpc-status", "8".parse().unwrap());
    /// trailers.insert("grpc-retry-pushback-ms", "250".parse().unwrap());
    /// let status = GrpcStatus::from_headers(&trailers).unwrap();
    /// assert_eq!(status.code, GrpcCode::ResourceExhausted);
    /// assert_eq!(status.pushback, Pushback::Wait(Duration::from_millis(250)));
    ///
    /// trailers.insert("grpc-retry-pushback-ms", "-1".parse().unwrap());
    /// assert_eq!(GrpcStatus::from_headers(&trailers).unwrap().pushback, Pushback::Stop);
    /// ```
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let code = singleton(headers, "grpc-status")?;
        let code = decimal(code)?;
        let code = u32::try_from(code).map_or(GrpcCode::Unknown, GrpcCode::from_u32);
        Some(GrpcStatus {
            code,
            pushback: pushback(headers),
        })
    }
}

/// Reads `grpc-retry-pushback-ms`: absent gives
/// [`Absent`](Pushback::Absent); a non-negative decimal integer a
/// [`Wait`](Pushback::Wait); anything else — negative, a fraction, white
/// space, not UTF-8, repeated — [`Stop`](Pushback::Stop), as A6 reads a
/// value it cannot parse.
pub fn grpc_pushback(headers: &HeaderMap) -> Pushback {
    pushback(headers)
}

fn pushback(headers: &HeaderMap) -> Pushback {
    let mut values = headers.get_all("grpc-retry-pushback-ms").iter();
    let Some(value) = values.next() else {
        return Pushback::Absent;
    };
    if values.next().is_some() {
        return Pushback::Stop;
    }
    match decimal(value.as_bytes()) {
        Some(ms) => {
            let wait = Duration::from_millis(ms);
            if wait > MAX_RETRY_AFTER {
                Pushback::Wait(Duration::MAX)
            } else {
                Pushback::Wait(wait)
            }
        }
        // All digits but past u64: a wait, too long.
        None if !value.is_empty() && value.as_bytes().iter().all(u8::is_ascii_digit) => {
            Pushback::Wait(Duration::MAX)
        }
        None => Pushback::Stop,
    }
}

/// Whether a response is gRPC: `content-type: application/grpc` or
/// `application/grpc+…` (`+proto`, `+json`). gRPC-Web is not gRPC here.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    const GRPC: &[u8] = b"application/grpc";
    let Some(head) = ct.get(..GRPC.len()) else {
        return false;
    };
    head.eq_ignore_ascii_case(GRPC) && matches!(ct.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// The one value of a field sent once.
fn singleton<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    values.next().is_none().then(|| value.as_bytes())
}

/// `1*DIGIT` as a `u64`; `None` for anything else or past `u64`.
fn decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn codes_round_trip_and_unknown_numbers_are_unknown() {
        for n in 0..=16 {
            assert_eq!(GrpcCode::from_u32(n).as_u32(), n);
        }
        assert_eq!(GrpcCode::from_u32(17), GrpcCode::Unknown);
        assert_eq!(GrpcCode::from_u32(u32::MAX), GrpcCode::Unknown);
        let far = headers(&[("grpc-status", "99999999999")]);
        assert_eq!(
            GrpcStatus::from_headers(&far).map(|s| s.code),
            Some(GrpcCode::Unknown)
        );
    }

    #[test]
    fn only_unavailable_and_resource_exhausted_are_retryable() {
        let retryable: Vec<u32> = (0..=16)
            .filter(|&n| GrpcCode::from_u32(n).is_retryable_by_default())
            .collect();
        assert_eq!(retryable, [8, 14]);
    }

    #[test]
    fn status_grammar() {
        let code =
            |v: &str| GrpcStatus::from_headers(&headers(&[("grpc-status", v)])).map(|s| s.code);
        assert_eq!(code("14"), Some(GrpcCode::Unavailable));
        assert_eq!(code("0"), Some(GrpcCode::Ok));
        assert_eq!(code("008"), Some(GrpcCode::ResourceExhausted));
        for bad in ["", " 14", "14 ", "+14", "-1", "0x0e", "14.0", "fourteen"] {
            assert_eq!(code(bad), None, "{bad:?}");
        }
        // Repeated: ambiguous, so unusable.
        let twice = headers(&[("grpc-status", "0"), ("grpc-status", "14")]);
        assert_eq!(GrpcStatus::from_headers(&twice), None);
        assert_eq!(GrpcStatus::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn pushback_follows_a6() {
        let p = |v: &str| grpc_pushback(&headers(&[("grpc-retry-pushback-ms", v)]));
        assert_eq!(grpc_pushback(&HeaderMap::new()), Pushback::Absent);
        assert_eq!(p("0"), Pushback::Wait(Duration::ZERO));
        assert_eq!(p("1500"), Pushback::Wait(Duration::from_millis(1500)));
        // Negative or unparsable: do not retry.
        for bad in ["-1", "-0", "1.5", "1e3", " 5", "5 ", "+5", "", "abc"] {
            assert_eq!(p(bad), Pushback::Stop, "{bad:?}");
        }
        // Longer than a day, even past u64: too long, never "none".
        assert_eq!(p("86400001"), Pushback::Wait(Duration::MAX));
        assert_eq!(
            p("99999999999999999999999999"),
            Pushback::Wait(Duration::MAX)
        );
        assert_eq!(p("86400000"), Pushback::Wait(MAX_RETRY_AFTER));
        let twice = headers(&[
            ("grpc-retry-pushback-ms", "10"),
            ("grpc-retry-pushback-ms", "20"),
        ]);
        assert_eq!(grpc_pushback(&twice), Pushback::Stop);
    }

    #[test]
    fn content_type_detection() {
        let ct = |v: &str| is_grpc(&headers(&[("content-type", v)]));
        assert!(ct("application/grpc"));
        assert!(ct("application/grpc+proto"));
        assert!(ct("Application/GRPC;charset=utf-8"));
        assert!(!ct("application/grpc-web"));
        assert!(!ct("application/grpcx"));
        assert!(!ct("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
