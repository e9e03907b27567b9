//! Strings, keys and escapes: a string is skipped word by word when short,
//! else by `memchr2` for `"` and `\` and one vectorised check of the run;
//! escapes are decoded for their unescaped length only.

use super::Scanner;

/// `c.wrapping_sub(0x20) >= lim` flags control characters and, with this
/// limit, every non-ASCII byte.
pub(super) const ASCII_LIMIT: u8 = 0x60;
/// With this limit, control characters only.
const UTF8_LIMIT: u8 = 0xE0;

#[inline(always)]
fn special(c: u8, lim: u8) -> bool {
    (c == b'"') | (c == b'\\') | (c.wrapping_sub(0x20) >= lim)
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The bytes of a little-endian word that end plain string content, as
/// their high bits: `"`, `\`, control characters, and (when `hi` is
/// [`HI`]) non-ASCII bytes. Bytes above the first flagged one may be
/// flagged falsely (borrows), so only the lowest flag is meaningful.
#[inline(always)]
fn special_word(w: u64, hi: u64) -> u64 {
    let q = w ^ (LO * u64::from(b'"'));
    let bs = w ^ (LO * u64::from(b'\\'));
    let quote = q.wrapping_sub(LO) & !q;
    let backslash = bs.wrapping_sub(LO) & !bs;
    let control = w.wrapping_sub(LO * 0x20) & !w;
    (quote | backslash | control | (w & hi)) & HI
}

/// The index of the first byte at or after `i` that ends a run of plain
/// string content: `"`, `\`, a control character, or (with
/// [`ASCII_LIMIT`]) a non-ASCII byte. `None` if the body ends first.
#[inline]
fn find_special(b: &[u8], i: usize, lim: u8) -> Option<usize> {
    find_special_long(b, i, lim)
}

/// [`find_special`]: the next quote or backslash by `memchr2` (SIMD),
/// then the run before it checked in one vectorised pass.
#[inline(always)]
fn find_special_long(b: &[u8], i: usize, lim: u8) -> Option<usize> {
    let rest = b.get(i..)?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    let run = rest.get(..end)?;
    // A max reduction (no early exit) compiles to two vector operations per
    // 16 bytes.
    let worst = run.iter().fold(0u8, |m, &c| m.max(c.wrapping_sub(0x20)));
    if worst >= lim {
        run.iter().position(|&c| special(c, lim)).map(|p| i + p)
    } else {
        Some(i + end)
    }
}

fn hex4(b: &[u8]) -> Option<u32> {
    let mut n = 0u32;
    for &c in b.get(..4)? {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        n = (n << 4) | u32::from(d);
    }
    Some(n)
}

fn utf8_len(cp: u32) -> u64 {
    match cp {
        0..0x80 => 1,
        0x80..0x800 => 2,
        _ => 3,
    }
}

impl<'a> Scanner<'a> {
    /// Validates the rest of the body as UTF-8 at its first non-ASCII byte
    /// `at` (everything before it is ASCII, so `at` is a char boundary).
    #[cold]
    fn validate_utf8_from(&mut self, at: usize) -> Option<()> {
        std::str::from_utf8(self.b.get(at..)?).ok()?;
        self.lim = UTF8_LIMIT;
        Some(())
    }

    /// A string whose opening quote was consumed: its unescaped UTF-8
    /// length, and whether it held escapes. Leaves `i` after the closing
    /// quote.
    #[inline(always)]
    pub(super) fn string(&mut self) -> Option<(u64, bool)> {
        // Short strings (keys, roles, names) end in the first two words:
        // a few ALU operations each, no call.
        let start = self.i;
        let hi = if self.lim == ASCII_LIMIT { HI } else { 0 };
        if let Some(bytes) = self.b.get(start..start + 16) {
            let (a, b) = bytes.split_at(8);
            let a = u64::from_le_bytes(a.try_into().ok()?);
            let b = u64::from_le_bytes(b.try_into().ok()?);
            let ma = special_word(a, hi);
            let (m, base) = if ma != 0 {
                (ma, 0)
            } else {
                (special_word(b, hi), 8)
            };
            if m != 0 {
                let p = base + (m.trailing_zeros() / 8) as usize;
                if self.b.get(start + p) == Some(&b'"') {
                    self.i = start + p + 1;
                    return Some((p as u64, false));
                }
            }
        }
        self.string_slow(start)
    }

    /// [`string`](Self::string) in general: long runs, escapes, non-ASCII.
    #[inline(never)]
    fn string_slow(&mut self, start: usize) -> Option<(u64, bool)> {
        let mut shrink = 0usize;
        let mut i = start;
        loop {
            let j = find_special(self.b, i, self.lim)?;
            match self.b.get(j).copied()? {
                b'"' => {
                    self.i = j + 1;
                    let raw = j - start;
                    return Some(((raw - shrink) as u64, shrink != 0));
                }
                b'\\' => {
                    let (raw, out) = self.escape(j + 1)?;
                    shrink += raw - out;
                    i = j + raw;
                }
                c if c >= 0x80 && self.lim == ASCII_LIMIT => {
                    self.validate_utf8_from(j)?;
                    i = j;
                }
                _ => return None, // a control character
            }
        }
    }

    /// An escape whose backslash is at `at - 1`: (raw bytes including the
    /// backslash, unescaped UTF-8 bytes).
    #[cold]
    fn escape(&self, at: usize) -> Option<(usize, usize)> {
        match self.b.get(at).copied()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some((2, 1)),
            b'u' => {
                let n = hex4(self.b.get(at + 1..)?)?;
                match n {
                    0xD800..=0xDBFF => {
                        // A leading surrogate: serde_json requires the
                        // trailing one right after it.
                        if self.b.get(at + 5..at + 7)? != b"\\u" {
                            return None;
                        }
                        let n2 = hex4(self.b.get(at + 7..)?)?;
                        if (0xDC00..=0xDFFF).contains(&n2) {
                            Some((12, 4))
                        } else {
                            None
                        }
                    }
                    0xDC00..=0xDFFF => None,
                    _ => Some((6, utf8_len(n) as usize)),
                }
            }
            _ => None,
        }
    }

    /// An object key whose opening quote was consumed, without escapes.
    #[inline]
    pub(super) fn key(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        let (len, escaped) = self.string()?;
        if escaped {
            return None;
        }
        self.b.get(start..start + len as usize)
    }
}
