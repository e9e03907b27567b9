//! Amounts of money as decimals (`"12.50"`, `3`, `0.25`), exact to the
//! nano-unit the budget counts in.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A non-negative amount of money in nano-units (10⁻⁹ of the currency),
/// parsed from a decimal string or number without rounding through
/// binary floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal(pub(crate) u64);

impl Decimal {
    /// The amount in nano-units.
    #[must_use]
    pub fn nanos(self) -> u64 {
        self.0
    }
}

pub(crate) fn parse_decimal(s: &str) -> Result<u64, &'static str> {
    const WHAT: &str = "a non-negative decimal amount such as \"12.50\"";
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
        return Err(WHAT);
    }
    if frac.len() > 9 {
        return Err("at most 9 decimal places (nano-units)");
    }
    let units: u64 = int.parse().map_err(|_| "the amount is too large")?;
    let frac_nanos: u64 = if frac.is_empty() {
        0
    } else {
        let scale = 10u64.pow(9 - frac.len() as u32);
        frac.parse::<u64>().map_err(|_| WHAT)? * scale
    };
    units
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_nanos))
        .ok_or("the amount is too large")
}

struct DecimalVisitor;

impl Visitor<'_> for DecimalVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative decimal amount such as \"12.50\" or 3")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse_decimal(v).map(Decimal).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
        v.checked_mul(1_000_000_000)
            .map(Decimal)
            .ok_or_else(|| E::custom("the amount is too large"))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
        u64::try_from(v)
            .map_err(|_| E::custom("an amount must not be negative"))
            .and_then(|v| self.visit_u64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
        if !v.is_finite() || v < 0.0 {
            return Err(E::custom("an amount must be a finite number, not negative"));
        }
        // `Display` of an f64 is the shortest text that reads back as it:
        // 0.1 is "0.1", not 0.1000000000000000055…
        self.visit_str(&format!("{v}"))
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        d.deserialize_any(DecimalVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_decimal;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(parse_decimal("12.50"), Ok(12_500_000_000));
        assert_eq!(parse_decimal("0.000000001"), Ok(1));
        assert_eq!(parse_decimal("3"), Ok(3_000_000_000));
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "1e3",
            "0.0000000001",
            "99999999999999999999",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad}");
        }
    }
}
