//! Server retry advice: `retry-after-ms`, `retry-after`, `x-should-retry`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::parse::{self, NANOS_PER_MILLI, NANOS_PER_SEC};

/// The longest server-advised wait [`retry_after`] reports: one day.
///
/// Longer values are treated as nonsense (a misconfigured proxy, a
/// timestamp sent where seconds were expected, a hostile server) and give
/// `None`, so the caller falls back to its own backoff. One day still covers
/// every real provider window (per-minute and per-day limits). This is a
/// sanity bound, not a retry policy: a retry layer applies its own, much
/// shorter, cap on what it is willing to wait.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the server asks the client to wait before retrying.
///
/// Sources, in order; the first one that yields a usable value wins, an
/// unusable one falls through to the next:
///
/// 1. `retry-after-ms`, then Azure's `x-ms-retry-after-ms`: milliseconds,
///    `1*DIGIT ["." 1*DIGIT]` (`"1500"`, `"20.5"`).
/// 2. `retry-after` as delay-seconds, fractions accepted (`"120"`, `"1.5"`).
/// 3. `retry-after` as an HTTP-date in any RFC 9110 form — IMF-fixdate
///    (`Sun, 06 Nov 1994 08:49:37 GMT`), obsolete RFC 850 with a two-digit
///    year (`Sunday, 06-Nov-94 08:49:37 GMT`) or asctime
///    (`Sun Nov  6 08:49:37 1994`). The wait is measured from the response's
///    `Date` header when it is present and valid (both instants then come
///    from the server's clock, so local clock skew cancels out), else from
///    `now`.
///
/// A value gives `None` when it is zero, negative, not a plain decimal
/// (`1e3`, `inf`, `NaN`, `+5`), a date at or before the reference time,
/// longer than [`MAX_RETRY_AFTER`], not UTF-8, or repeated (the field is a
/// singleton). Values with leading or trailing whitespace (`" 120"`) are
/// rejected, not trimmed: conforming HTTP/1 parsers strip that whitespace
/// before the value reaches a `HeaderMap` and HTTP/2 forbids it, so a value
/// that still has it is not trusted. Never panics; all arithmetic is checked.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use tower_llm_resilience::provider::retry_after;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "30".parse().unwrap());
/// assert_eq!(retry_after(&headers, SystemTime::now()), Some(Duration::from_secs(30)));
///
/// // retry-after-ms is more precise and wins.
/// headers.insert("retry-after-ms", "1500".parse().unwrap());
/// assert_eq!(retry_after(&headers, SystemTime::now()), Some(Duration::from_millis(1500)));
///
/// headers.clear();
/// headers.insert("retry-after", "-1".parse().unwrap());
/// assert_eq!(retry_after(&headers, SystemTime::now()), None);
/// ```
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        let advice = parse::single(headers, name)
            .and_then(|v| parse::decimal(v, NANOS_PER_MILLI))
            .and_then(usable);
        if advice.is_some() {
            return advice;
        }
    }
    let value = parse::single(headers, "retry-after")?;
    if let Some(nanos) = parse::decimal(value, NANOS_PER_SEC) {
        return usable(nanos);
    }
    let target = parse::http_date(value)?;
    let reference = parse::date_header(headers).unwrap_or_else(|| parse::unix_nanos(now));
    let wait = parse::until(target, reference)?;
    usable(wait.as_nanos())
}

/// A positive wait no longer than [`MAX_RETRY_AFTER`].
fn usable(nanos: u128) -> Option<Duration> {
    if nanos == 0 || nanos > MAX_RETRY_AFTER.as_nanos() {
        return None;
    }
    parse::nanos_to_duration(nanos)
}

/// The server's explicit retry verdict from `x-should-retry`.
///
/// `Some(true)` for exactly `true`, `Some(false)` for exactly `false`
/// (case-sensitive, as the official SDKs compare), `None` for anything else,
/// including absence, other casing, whitespace and repeated fields. When
/// present it overrides status-based retry decisions.
///
/// # Examples
///
/// ```
/// use http::HeaderMap;
/// use tower_llm_resilience::provider::should_retry;
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(should_retry(&headers), None);
/// headers.insert("x-should-retry", "false".parse().unwrap());
/// assert_eq!(should_retry(&headers), Some(false));
/// ```
pub fn should_retry(headers: &HeaderMap) -> Option<bool> {
    match parse::single(headers, "x-should-retry")? {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
