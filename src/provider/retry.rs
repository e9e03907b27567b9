//! Server retry advice: `retry-after-ms`, `retry-after`, `x-should-retry`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::parse::{self, NANOS_PER_MILLI, NANOS_PER_SEC};

/// The longest server-advised wait [`retry_after`] reports as itself: one
/// day. Longer advice is reported as [`Duration::MAX`], "too long".
///
/// Such advice may be nonsense (a misconfigured proxy, a timestamp sent
/// where seconds were expected, a hostile server), but it is never read as
/// "no advice": a caller that fell back to its own, shorter, backoff would
/// retry sooner the longer the server asked it to wait. Reported as
/// `Duration::MAX`, it is over every cap a caller applies (the retry
/// layer's `max_server_delay`, the rate limiter's and the fallback's
/// longest cooldown are all at most a day), so the caller gives up or waits
/// its maximum. One day still covers every real provider window (per-minute
/// and per-day limits).
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
/// **Too long is not "none".** A usable value longer than
/// [`MAX_RETRY_AFTER`] — however long: `86401`, `99999999999999999999`
/// (more than a `Duration` holds), a date in the year 9999 — gives
/// `Some(Duration::MAX)`, so longer advice is never reported shorter. Cap
/// the result before adding it to an instant (`d.min(cap)`, or
/// `Instant::checked_add`).
///
/// A value is *unusable* (`None`, or the next source) when it is zero,
/// negative, not a plain decimal (`1e3`, `inf`, `NaN`, `+5`), a date at or
/// before the reference time, not UTF-8, or repeated (the field is a
/// singleton). Values with leading or trailing whitespace (`" 120"`) are
/// unusable, not trimmed: conforming HTTP/1 parsers strip that whitespace
/// before the value reaches a `HeaderMap` and HTTP/2 forbids it, so a value
/// that still has it is not trusted. Never panics; all arithmetic is
/// checked or saturating.
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
///
/// // Longer than a day: too long, not "no advice".
/// headers.insert("retry-after", "100000".parse().unwrap());
/// assert_eq!(retry_after(&headers, SystemTime::now()), Some(Duration::MAX));
/// ```
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        let advice = one_value(headers, name)
            .and_then(|v| delay(v, NANOS_PER_MILLI))
            .and_then(usable);
        if advice.is_some() {
            return advice;
        }
    }
    let value = one_value(headers, "retry-after")?;
    if let Some(nanos) = delay(value, NANOS_PER_SEC) {
        return usable(nanos);
    }
    // Dates are short: the shared bound on a value's length applies.
    let value = parse::single(headers, "retry-after")?;
    let target = parse::http_date(value)?;
    let reference = parse::date_header(headers).unwrap_or_else(|| parse::unix_nanos(now));
    let wait = parse::until(target, reference)?;
    usable(wait.as_nanos())
}

/// The one value of a singleton field, as `parse::single` reads it but
/// of any length: a long run of digits is still a (too long) delay, and
/// checking its grammar is linear.
fn one_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
    let ws = |b: &u8| b.is_ascii_whitespace();
    if bytes.is_empty() || bytes.first().is_some_and(ws) || bytes.last().is_some_and(ws) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// `1*DIGIT ["." 1*DIGIT]` as nanoseconds of `unit`, saturating at
/// `u128::MAX` (a grammatical delay too large to compute is too long, not
/// unusable); `None` for anything else.
fn delay(s: &str, unit: u128) -> Option<u128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (frac.is_empty() && s.ends_with('.')) {
        return None;
    }
    Some(parse::decimal(s, unit).unwrap_or(u128::MAX))
}

/// A positive wait; `Duration::MAX` ("too long") above [`MAX_RETRY_AFTER`].
fn usable(nanos: u128) -> Option<Duration> {
    if nanos == 0 {
        return None;
    }
    if nanos > MAX_RETRY_AFTER.as_nanos() {
        return Some(Duration::MAX);
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
