//! Durations as people write them: `"500ms"`, `"2s"`, `"1m30s"`, `"1h"`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Parses a duration: one or more `<digits><unit>` terms, units `ns`, `us`
/// (or `µs`), `ms`, `s`, `m`, `h`, `d`, summed (`"1m30s"`). Whitespace
/// between terms is allowed; a bare number, a fraction, a negative value
/// or a sum past `u64` seconds is not.
///
/// # Errors
///
/// A message saying what is wrong, for [`ConfigError`](super::ConfigError).
pub fn parse_duration(s: &str) -> Result<Duration, &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Err("an empty duration; write e.g. \"500ms\", \"2s\" or \"1m\"");
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("expected a number, then a unit (ns, us, ms, s, m, h, d)");
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| "the number is too large")?;
        rest = &rest[digits..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || c.is_whitespace())
            .map_or(rest.len(), |(i, _)| i);
        let term = match &rest[..unit_len] {
            "ns" => Some(Duration::from_nanos(n)),
            "us" | "µs" => Some(Duration::from_micros(n)),
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            "d" => n.checked_mul(86_400).map(Duration::from_secs),
            "" => return Err("a number needs a unit (ns, us, ms, s, m, h, d)"),
            _ => return Err("unknown unit; use ns, us, ms, s, m, h or d"),
        };
        total = term
            .and_then(|t| total.checked_add(t))
            .ok_or("the duration is too long")?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"500ms\", \"2s\" or \"1m\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

/// `#[serde(deserialize_with)]` for a `Duration`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

/// `#[serde(deserialize_with)]` for an `Option<Duration>` (with
/// `#[serde(default)]`).
pub(crate) fn deserialize_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 5m"), Ok(Duration::from_secs(3900)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "5",
            "1.5s",
            "-1s",
            "s",
            "3 weeks",
            "10x",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_duration(&format!("{}d", u64::MAX / 1000)).is_err());
    }
}
