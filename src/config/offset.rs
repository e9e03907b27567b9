//! UTC offsets as written in ISO 8601: `"+09:00"`, `"-05:30"`, `"Z"`.

/// The offset in seconds east of UTC, within ±18 hours.
pub(crate) fn parse_utc_offset(s: &str) -> Result<i32, &'static str> {
    const WHAT: &str = "a UTC offset such as \"+09:00\", \"-05:30\" or \"Z\"";
    if s == "Z" || s == "z" {
        return Ok(0);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(WHAT),
    };
    let (h, m) = rest.split_once(':').ok_or(WHAT)?;
    let two = |t: &str| -> Option<i32> {
        if t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let h = two(h).ok_or(WHAT)?;
    let m = two(m).ok_or(WHAT)?;
    if m >= 60 || h * 60 + m > 18 * 60 {
        return Err("a UTC offset within ±18:00");
    }
    Ok(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::parse_utc_offset;

    #[test]
    fn offsets() {
        assert_eq!(parse_utc_offset("Z"), Ok(0));
        assert_eq!(parse_utc_offset("+09:00"), Ok(9 * 3600));
        assert_eq!(parse_utc_offset("-05:30"), Ok(-(5 * 3600 + 1800)));
        for bad in ["", "9", "+9:00", "+09", "+19:00", "+09:60", "UTC"] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
    }
}
