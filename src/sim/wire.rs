//! Wire formatters the simulator needs: RFC 3339 instants (Anthropic reset
//! headers), Go-style durations (OpenAI reset headers and messages), ids, and
//! the small deterministic PRNG behind seeded behaviour.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats a wall-clock instant as an RFC 3339 UTC timestamp.
///
/// With `millis` false the instant is rounded *up* to the next whole second
/// (`2025-08-21T12:40:59Z`, the form Anthropic sends); with `millis` true it
/// is rounded up to the next millisecond and printed with three fractional
/// digits (`2025-08-21T12:40:59.125Z`), which a time-scaled simulator needs.
/// Rounding up means "full again at" is never reported too early. Instants
/// before the Unix epoch are clamped to it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tower_llm_resilience::sim::format_rfc3339;
/// let t = UNIX_EPOCH + Duration::from_secs(1_755_780_059);
/// assert_eq!(format_rfc3339(t, false), "2025-08-21T12:40:59Z");
/// ```
#[must_use]
pub fn format_rfc3339(t: SystemTime, millis: bool) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let nanos = u64::from(since.subsec_nanos());
    let (secs, ms) = if millis {
        let total_ms = since.as_secs() * 1000 + nanos.div_ceil(1_000_000);
        (total_ms / 1000, Some(total_ms % 1000))
    } else {
        (since.as_secs() + u64::from(nanos > 0), None)
    };
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    match ms {
        Some(ms) => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z"),
        None => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
    }
}

/// Days since 1970-01-01 to a (year, month, day) civil date (H. Hinnant's
/// algorithm, restricted to non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Formats a duration the way Go's `time.Duration.String()` does, at
/// millisecond precision (rounded up): `0s`, `12ms`, `1s`, `1.574s`, `6m0s`,
/// `1h2m3s`. This is what OpenAI sends in `x-ratelimit-reset-*` headers and
/// in "Please try again in …" messages.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_resilience::sim::format_go_duration;
/// assert_eq!(format_go_duration(Duration::from_millis(1574)), "1.574s");
/// assert_eq!(format_go_duration(Duration::from_secs(360)), "6m0s");
/// ```
#[must_use]
pub fn format_go_duration(d: Duration) -> String {
    let total_ms = ceil_millis(d);
    if total_ms == 0 {
        return "0s".to_owned();
    }
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let h = total_ms / 3_600_000;
    let m = (total_ms / 60_000) % 60;
    let s = (total_ms / 1000) % 60;
    let frac = total_ms % 1000;
    let mut secs = s.to_string();
    if frac != 0 {
        let f = format!("{frac:03}");
        secs.push('.');
        secs.push_str(f.trim_end_matches('0'));
    }
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// Whole milliseconds in `d`, rounded up.
pub(crate) fn ceil_millis(d: Duration) -> u64 {
    let ms = d.as_millis();
    let extra = u128::from(!d.as_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms + extra).unwrap_or(u64::MAX)
}

/// Whole seconds in `d`, rounded up (the integer `retry-after` value).
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// SplitMix64: tiny, fast, good enough for simulated behaviour, and fully
/// determined by its seed.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(crate::util::GOLDEN_GAMMA);
        crate::util::splitmix64(self.state)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        // 53 random bits → exactly representable fractions.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        let span = hi.saturating_sub(lo).saturating_add(1);
        if span == 0 {
            return self.next_u64();
        }
        lo + self.next_u64() % span
    }

    /// `len` characters of base62, for ids.
    pub(crate) fn base62(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 62] =
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..len)
            .map(|_| char::from(ALPHABET[(self.next_u64() % 62) as usize]))
            .collect()
    }
}

/// Words the simulated model "generates", one per output token.
const WORDS: &[&str] = &[
    "the",
    "model",
    "simulated",
    "token",
    "bucket",
    "limit",
    "request",
    "response",
    "stream",
    "quota",
    "minute",
    "retry",
    "after",
    "header",
    "provider",
    "latency",
    "window",
    "burst",
    "refill",
    "admit",
    "output",
    "input",
    "tower",
    "layer",
    "service",
    "future",
    "ready",
    "simply",
    "returns",
    "text",
    "while",
    "waiting",
    "for",
    "capacity",
    "and",
    "then",
];

/// One simulated word.
pub(crate) fn word(rng: &mut SplitMix64) -> &'static str {
    WORDS[(rng.next_u64() % WORDS.len() as u64) as usize]
}

#[cfg(test)]
mod tests;
