//! Small, strict parsers for header values: decimals, Go durations, RFC 3339
//! instants, HTTP-dates and the single-value header rule shared by every
//! provider module.
//!
//! All arithmetic is checked; every parser returns `None` rather than
//! panicking or wrapping. Instants are handled as signed nanoseconds since
//! the Unix epoch (`i128`), which holds every `SystemTime` and every RFC 3339
//! instant without overflow.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// The longest header value any scalar parser looks at, in bytes.
///
/// Real values are at most a few dozen bytes; anything longer is not a value
/// these parsers would accept, so it is rejected before any work is done.
pub(crate) const MAX_VALUE_LEN: usize = 128;

pub(crate) const NANOS_PER_SEC: u128 = 1_000_000_000;
pub(crate) const NANOS_PER_MILLI: u128 = 1_000_000;

/// The one value of a singleton header field, as text.
///
/// `None` when the field is absent, repeated (RFC 9110 makes a repeated
/// singleton field invalid), empty, longer than [`MAX_VALUE_LEN`], not UTF-8,
/// or has leading or trailing whitespace.
///
/// Why whitespace is rejected rather than trimmed: conforming HTTP/1 parsers
/// (httparse, used by hyper) already strip optional whitespace around field
/// values, and HTTP/2 and HTTP/3 forbid it outright (RFC 9113 §8.2.1). A value
/// that still carries it was assembled by hand or passed through a
/// non-conforming hop; advice from it is not trusted, and callers fall back to
/// their own defaults.
pub(crate) fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_VALUE_LEN {
        return None;
    }
    let ws = |b: &u8| b.is_ascii_whitespace();
    if bytes.first().is_some_and(ws) || bytes.last().is_some_and(ws) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// Parses `1*DIGIT` as a `u64` (no sign, no whitespace, no exponent).
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `int "." frac` (either part possibly empty, both already split) as a count
/// of `unit` nanoseconds, in nanoseconds. Fraction digits past the 18th are
/// ignored (they are below a nanosecond for every unit used here).
fn decimal_parts(int: &str, frac: &str, unit: u128) -> Option<u128> {
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut whole: u128 = 0;
    for b in int.bytes() {
        whole = whole.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
    }
    let mut total = whole.checked_mul(unit)?;
    let mut num: u128 = 0;
    let mut den: u128 = 1;
    for b in frac.bytes().take(18) {
        num = num * 10 + u128::from(b - b'0');
        den *= 10;
    }
    // num < 10^18 and unit <= 3.6 * 10^12, so the product fits easily.
    total = total.checked_add(num.checked_mul(unit)? / den)?;
    Some(total)
}

/// Parses `1*DIGIT [ "." 1*DIGIT ]` as a count of `unit` nanoseconds.
///
/// Deliberately narrower than `f64::from_str`: no sign, no exponent, no
/// `inf`/`NaN`, no leading or trailing dot. So `1e999`, `-1`, `NaN` and `inf`
/// are rejected by grammar, and huge values by checked arithmetic.
pub(crate) fn decimal(s: &str, unit: u128) -> Option<u128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || (frac.is_empty() && s.ends_with('.')) {
        return None;
    }
    decimal_parts(int, frac, unit)
}

/// Nanoseconds as a `Duration`, `None` if beyond `Duration::MAX`.
pub(crate) fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    let sub = u32::try_from(nanos % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, sub))
}

/// Parses a Go `time.Duration` string as OpenAI sends it in
/// `x-ratelimit-reset-*`: `6m0s`, `1s`, `12ms`, `1m30.5s`, `1h2m3s`, `1.574s`,
/// units `h`, `m`, `s`, `ms`, `us`/`µs`/`μs`, `ns`; a lone `0` is zero.
///
/// Signs are rejected (a negative reset makes no sense; Azure's `-1` means
/// "unknown").
pub(crate) fn go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => NANOS_PER_MILLI,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            _ => return None,
        };
        total = total.checked_add(decimal_parts(int, frac, unit_nanos)?)?;
        rest = next;
    }
    nanos_to_duration(total)
}

/// `SystemTime` as signed nanoseconds since the Unix epoch.
pub(crate) fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => i128::try_from(e.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    }
}

/// How long from `reference` until `target` (both Unix nanoseconds);
/// zero if `target` is at or before `reference`.
pub(crate) fn until(target: i128, reference: i128) -> Option<Duration> {
    let diff = target.checked_sub(reference)?;
    if diff <= 0 {
        return Some(Duration::ZERO);
    }
    nanos_to_duration(u128::try_from(diff).ok()?)
}

/// An HTTP-date in any of the three RFC 9110 forms (IMF-fixdate, RFC 850
/// with a two-digit year, asctime), as Unix nanoseconds.
///
/// httpdate reads two-digit years as 1970–2069 rather than applying RFC
/// 9110's "more than 50 years in the future" rule; the two readings differ
/// only for dates decades away from now, which every caller rejects anyway.
pub(crate) fn http_date(s: &str) -> Option<i128> {
    httpdate::parse_http_date(s).ok().map(unix_nanos)
}

/// The response's `Date` header as Unix nanoseconds, if present and valid.
pub(crate) fn date_header(headers: &HeaderMap) -> Option<i128> {
    single(headers, "date").and_then(http_date)
}

fn digits(b: &[u8], range: std::ops::Range<usize>) -> Option<i64> {
    let part = b.get(range)?;
    let mut n: i64 = 0;
    for &d in part {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(n)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        _ => 28,
    }
}

/// An RFC 3339 `date-time` as Unix nanoseconds.
///
/// Accepts `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `t`/`z` in lower case and
/// a space instead of `T` (RFC 3339 §5.6 note). Fractions longer than 9
/// digits are truncated to nanoseconds. A leap second (`:60`) is accepted and
/// counted as the first second of the next minute, which is what a Unix clock
/// shows. Invalid calendar dates (`02-30`, `02-29` in a common year) and
/// out-of-range fields are rejected.
pub(crate) fn rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let year = digits(b, 0..4)?;
    let month = digits(b, 5..7)?;
    let day = digits(b, 8..10)?;
    let hour = digits(b, 11..13)?;
    let min = digits(b, 14..16)?;
    let sec = digits(b, 17..19)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = b.get(start..i)?;
        for k in 0..9 {
            nanos = nanos * 10 + frac.get(k).map_or(0, |d| i64::from(d - b'0'));
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let oh = digits(b, i + 1..i + 3)?;
            let om = digits(b, i + 4..i + 6)?;
            if b.get(i + 3) != Some(&b':') || oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let off = oh * 3_600 + om * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    if i != b.len()
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    // In range: month and day were checked above.
    let days = crate::calendar::days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3_600 + min * 60 + sec - offset;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

#[cfg(test)]
mod tests;
