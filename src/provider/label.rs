//! [`Label`]: a short, inline, printable-ASCII string.

use std::fmt;

/// A short string copied from a response: an error type or code, a rate-limit
/// policy name.
///
/// Bounded and allocation-free: at most [`Label::CAPACITY`] bytes are kept
/// (longer input is truncated), and only printable ASCII survives (any other
/// byte becomes `?`), so a label is safe to log and can never hold a body.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label {
    buf: [u8; Label::CAPACITY],
    len: u8,
}

impl Label {
    /// The most bytes a label keeps.
    pub const CAPACITY: usize = 48;

    /// A label from `s`, truncated to [`Label::CAPACITY`] bytes, with bytes
    /// outside printable ASCII replaced by `?`.
    ///
    /// ```
    /// use tower_llm_resilience::provider::Label;
    ///
    /// assert_eq!(Label::new("rate_limit_error").as_str(), "rate_limit_error");
    /// assert_eq!(Label::new(&"x".repeat(100)).as_str().len(), Label::CAPACITY);
    /// assert_eq!(Label::new("a\nb").as_str(), "a?b");
    /// ```
    pub fn new(s: &str) -> Self {
        let mut buf = [0u8; Self::CAPACITY];
        let mut len = 0;
        for (slot, b) in buf.iter_mut().zip(s.bytes()) {
            *slot = if b.is_ascii_graphic() || b == b' ' {
                b
            } else {
                b'?'
            };
            len += 1;
        }
        Self {
            buf,
            len: u8::try_from(len).unwrap_or(u8::MAX),
        }
    }

    /// The label's text.
    pub fn as_str(&self) -> &str {
        let bytes = self.buf.get(..usize::from(self.len)).unwrap_or_default();
        // Only printable ASCII is ever stored, so this cannot fail.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Label {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Label {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl AsRef<str> for Label {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_printable() {
        assert_eq!(Label::new(""), "");
        assert_eq!(Label::new("tokens"), "tokens");
        assert_eq!(Label::new("\u{e9}t\u{e9}").as_str(), "??t??");
        let long = Label::new(&"ab".repeat(40));
        assert_eq!(long.as_str().len(), Label::CAPACITY);
        assert_eq!(format!("{:?}", Label::new("x\"y")), "\"x\\\"y\"");
    }
}
