//! The fast path of [`RequestMeta::parse`](super::RequestMeta::parse): one
//! pass over the body bytes, no serde, no allocation.
//!
//! The scanner reads exactly what the serde path (`WireRequest` with its
//! `TextBytes` / `Messages` visitors) reads, and gives the same answer for
//! every body it accepts. It is deliberately stricter than serde_json: on
//! anything unusual it answers `None`, "don't know", and the caller runs the
//! serde path, which then decides (including whether the body is malformed
//! at all). So the scanner never has to produce an error result itself, and
//! correctness rests on one rule: **it must never accept a body that serde
//! rejects, and never compute a different value for one it accepts**.
//!
//! It falls back on:
//! - malformed JSON of any kind, and anything after the top-level object
//!   but JSON whitespace (serde_json's four: space, tab, LF, CR);
//! - a backslash escape inside any object key (serde would unescape it and
//!   might then match `model` or `text`), and inside `model`'s value;
//! - a read field of an unexpected type, a duplicate read field at the top
//!   level or in `stream_options`, and `stream_options` given as an array;
//! - `max_tokens` / `max_completion_tokens` / `max_output_tokens` that are
//!   not plain non-negative integers fitting `u64`;
//! - `temperature` with an exponent, a significand over 2^53 or more than
//!   22 fraction digits (within those bounds both of serde_json's float
//!   algorithms give the correctly rounded `significand / 10^k`, which is
//!   what is computed here);
//! - any other number longer than 100 bytes, with an exponent of more than
//!   three digits, or whose magnitude could reach 10^300 (serde_json
//!   refuses numbers that overflow `f64` where it visits them);
//! - lone or reversed UTF-16 surrogates in `\u` escapes;
//! - invalid UTF-8 anywhere, and control characters in strings;
//! - nesting deeper than [`MAX_DEPTH`] (serde_json's limit is 127 levels).

use std::borrow::Cow;

/// The deepest nesting of arrays and objects (the top-level object counts
/// as one) the scanner follows before leaving the body to serde_json, whose
/// recursion limit refuses 128 levels.
pub(super) const MAX_DEPTH: u32 = 100;

/// The longest number (in bytes) accepted where its value is not read.
const MAX_NUMBER_LEN: usize = 100;

/// The largest significand of `temperature` read: every integer up to it
/// is an exact `f64`.
const MAX_EXACT: u64 = 1 << 53;

/// Exactly representable powers of ten, for `temperature`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The fields of a body the stack reads: what the scanner and the serde
/// path both produce.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Fields<'a> {
    pub(super) model: Option<Cow<'a, str>>,
    pub(super) max_tokens: Option<u64>,
    pub(super) max_completion_tokens: Option<u64>,
    pub(super) max_output_tokens: Option<u64>,
    pub(super) stream: Option<bool>,
    pub(super) include_usage: Option<bool>,
    pub(super) temperature: Option<f64>,
    /// Text bytes of `system`, `tools`, `input`, `instructions` and
    /// `messages` together.
    pub(super) text: u64,
    /// `None` when `messages` was absent or null.
    pub(super) messages: Option<u32>,
}

/// Scans a body whose first non-whitespace byte is `{`. `None`: unusual or
/// malformed, ask serde.
pub(super) fn scan(body: &[u8]) -> Option<Fields<'_>> {
    let mut s = Scanner {
        b: body,
        i: 0,
        // Until the first non-ASCII byte is seen, strings stop at any byte
        // >= 0x80; then the rest of the body is validated once and strings
        // stop only at quotes, backslashes and control characters.
        lim: ASCII_LIMIT,
    };
    let out = s.top()?;
    match s.ws() {
        None => Some(out),
        Some(_) => None,
    }
}

/// `c.wrapping_sub(0x20) >= lim` flags control characters and, with this
/// limit, every non-ASCII byte.
const ASCII_LIMIT: u8 = 0x60;
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

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    lim: u8,
}

/// What a key of an object walked for text means (`TextBytesVisitor`).
enum KeyKind {
    /// `type`, `role`, `cache_control`: the value is skipped.
    Structure,
    /// `text`, `content`: the value counts, the key does not.
    Carrier,
    /// Anything else: key and value count.
    Other(u64),
}

impl<'a> Scanner<'a> {
    /// Skips JSON whitespace; the next byte, if any.
    #[inline(always)]
    fn ws(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b' ' | b'\n' | b'\t' | b'\r' => self.i += 1,
                _ => return Some(c),
            }
        }
        None
    }

    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        if self.ws()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    #[inline(always)]
    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + lit.len())? == lit {
            self.i += lit.len();
            Some(())
        } else {
            None
        }
    }

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
    fn string(&mut self) -> Option<(u64, bool)> {
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
    fn key(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        let (len, escaped) = self.string()?;
        if escaped {
            return None;
        }
        self.b.get(start..start + len as usize)
    }

    /// Any number, validated; its value is not read. Stricter than JSON
    /// where serde_json could refuse it as out of `f64` range.
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        match self.b.get(self.i).copied()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let int_digits = self.i - int_start;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            let at = self.i;
            self.digits();
            if self.i == at {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            let negative = match self.b.get(self.i) {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let at = self.i;
            self.digits();
            let exp = self.b.get(at..self.i)?;
            if exp.is_empty() || exp.len() > 3 {
                return None;
            }
            let exp = exp.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
            let exp = if negative { -exp } else { exp };
            if int_digits as i64 + exp > 300 {
                return None;
            }
        }
        if self.i - start > MAX_NUMBER_LEN {
            return None;
        }
        // serde_json refuses a digit after a leading zero.
        match self.b.get(self.i) {
            Some(b'0'..=b'9') => None,
            _ => Some(()),
        }
    }

    #[inline]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// A `u64` field: a plain non-negative integer, as serde_json's
    /// `deserialize_u64` accepts it.
    fn uint(&mut self) -> Option<u64> {
        let n: u64 = match self.b.get(self.i).copied()? {
            b'0' => {
                self.i += 1;
                0
            }
            c @ b'1'..=b'9' => {
                self.i += 1;
                let mut n = u64::from(c - b'0');
                while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
                    n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                    self.i += 1;
                }
                n
            }
            _ => return None,
        };
        match self.b.get(self.i) {
            Some(b'0'..=b'9' | b'.' | b'e' | b'E') => None,
            _ => Some(n),
        }
    }

    /// `temperature`: `-`? digits (`.` digits)?, no exponent, a significand
    /// (all digits, the point dropped) of at most 2^53 and at most 22
    /// fraction digits. Computed as serde_json does (`significand as f64 /
    /// 10^k`, both exact, so one correctly rounded division), which is also
    /// what its `float_roundtrip` feature gives: the correctly rounded value.
    fn simple_f64(&mut self) -> Option<f64> {
        let negative = self.b.get(self.i) == Some(&b'-');
        if negative {
            self.i += 1;
        }
        let start = self.i;
        match self.b.get(self.i).copied()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut frac = 0usize;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            let at = self.i;
            self.digits();
            frac = self.i - at;
            if frac == 0 {
                return None;
            }
        }
        if let Some(b'0'..=b'9' | b'e' | b'E') = self.b.get(self.i) {
            return None;
        }
        if frac > 22 {
            return None;
        }
        let mut sig = 0u64;
        for &d in self.b.get(start..self.i)? {
            if d != b'.' {
                sig = sig.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            }
        }
        if sig > MAX_EXACT {
            return None;
        }
        let f = sig as f64 / *POW10.get(frac)?;
        Some(if negative { -f } else { f })
    }

    /// Any value, counted as `TextBytesVisitor` counts it: string lengths,
    /// 1 per boolean or number, 0 for null, and objects by their keys.
    /// `depth` is the nesting level the value would open.
    fn value(&mut self, depth: u32) -> Option<u64> {
        match self.ws()? {
            b'"' => {
                self.i += 1;
                Some(self.string()?.0)
            }
            b'{' => {
                self.i += 1;
                self.object(depth)
            }
            b'[' => {
                self.i += 1;
                self.array(depth).map(|(bytes, _)| bytes)
            }
            b't' => self.literal(b"true").map(|()| 1),
            b'f' => self.literal(b"false").map(|()| 1),
            b'n' => self.literal(b"null").map(|()| 0),
            b'-' | b'0'..=b'9' => self.number().map(|()| 1),
            _ => None,
        }
    }

    /// An object whose `{` was consumed, walked for text.
    fn object(&mut self, depth: u32) -> Option<u64> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut n = 0u64;
        if self.ws()? == b'}' {
            self.i += 1;
            return Some(0);
        }
        loop {
            self.eat(b'"')?;
            let kind = match self.key()? {
                b"type" | b"role" | b"cache_control" => KeyKind::Structure,
                b"text" | b"content" => KeyKind::Carrier,
                k => KeyKind::Other(k.len() as u64),
            };
            self.eat(b':')?;
            let v = self.value(depth + 1)?;
            match kind {
                KeyKind::Structure => {}
                KeyKind::Carrier => n = n.saturating_add(v),
                KeyKind::Other(k) => n = n.saturating_add(v).saturating_add(k),
            }
            match self.ws()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(n);
                }
                _ => return None,
            }
        }
    }

    /// An array whose `[` was consumed: text bytes and element count.
    fn array(&mut self, depth: u32) -> Option<(u64, u32)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (mut n, mut count) = (0u64, 0u32);
        if self.ws()? == b']' {
            self.i += 1;
            return Some((0, 0));
        }
        loop {
            n = n.saturating_add(self.value(depth + 1)?);
            count = count.saturating_add(1);
            match self.ws()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some((n, count));
                }
                _ => return None,
            }
        }
    }

    /// `null` (consumed): true. Otherwise false, nothing consumed.
    #[inline]
    fn null(&mut self) -> Option<bool> {
        if self.ws()? == b'n' {
            self.literal(b"null")?;
            Some(true)
        } else {
            Some(false)
        }
    }

    fn bool(&mut self) -> Option<bool> {
        match self.ws()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    /// `stream_options` (after `null` was ruled out): an object whose
    /// `include_usage` is read; other keys are skipped.
    fn stream_options(&mut self) -> Option<Option<bool>> {
        self.eat(b'{')?;
        let mut include = None;
        let mut seen = false;
        if self.ws()? == b'}' {
            self.i += 1;
            return Some(None);
        }
        loop {
            self.eat(b'"')?;
            if self.key()? == b"include_usage" {
                self.eat(b':')?;
                if seen {
                    return None;
                }
                seen = true;
                if !self.null()? {
                    include = Some(self.bool()?);
                }
            } else {
                self.eat(b':')?;
                self.value(3)?;
            }
            match self.ws()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(include);
                }
                _ => return None,
            }
        }
    }

    /// The top-level object.
    fn top(&mut self) -> Option<Fields<'a>> {
        const MODEL: u16 = 1;
        const MAX_TOKENS: u16 = 1 << 1;
        const MAX_COMPLETION: u16 = 1 << 2;
        const MAX_OUTPUT: u16 = 1 << 3;
        const STREAM: u16 = 1 << 4;
        const STREAM_OPTIONS: u16 = 1 << 5;
        const TEMPERATURE: u16 = 1 << 6;
        const SYSTEM: u16 = 1 << 7;
        const MESSAGES: u16 = 1 << 8;
        const TOOLS: u16 = 1 << 9;
        const INPUT: u16 = 1 << 10;
        const INSTRUCTIONS: u16 = 1 << 11;

        let mut out = Fields::default();
        let mut seen = 0u16;
        self.eat(b'{')?;
        if self.ws()? == b'}' {
            self.i += 1;
            return Some(out);
        }
        loop {
            self.eat(b'"')?;
            let key = self.key()?;
            self.eat(b':')?;
            let field = match key {
                b"model" => MODEL,
                b"max_tokens" => MAX_TOKENS,
                b"max_completion_tokens" => MAX_COMPLETION,
                b"max_output_tokens" => MAX_OUTPUT,
                b"stream" => STREAM,
                b"stream_options" => STREAM_OPTIONS,
                b"temperature" => TEMPERATURE,
                b"system" => SYSTEM,
                b"messages" => MESSAGES,
                b"tools" => TOOLS,
                b"input" => INPUT,
                b"instructions" => INSTRUCTIONS,
                _ => 0,
            };
            if field & seen != 0 {
                return None; // serde: "duplicate field"
            }
            seen |= field;
            match field {
                0 => {
                    self.value(2)?;
                }
                MODEL => {
                    if !self.null()? {
                        self.eat(b'"')?;
                        let start = self.i;
                        let (len, escaped) = self.string()?;
                        if escaped {
                            return None;
                        }
                        let raw = self.b.get(start..start + len as usize)?;
                        out.model = Some(Cow::Borrowed(std::str::from_utf8(raw).ok()?));
                    }
                }
                MAX_TOKENS | MAX_COMPLETION | MAX_OUTPUT => {
                    if !self.null()? {
                        let n = Some(self.uint()?);
                        match field {
                            MAX_TOKENS => out.max_tokens = n,
                            MAX_COMPLETION => out.max_completion_tokens = n,
                            _ => out.max_output_tokens = n,
                        }
                    }
                }
                STREAM => {
                    if !self.null()? {
                        out.stream = Some(self.bool()?);
                    }
                }
                STREAM_OPTIONS => {
                    if !self.null()? {
                        out.include_usage = self.stream_options()?;
                    }
                }
                TEMPERATURE => {
                    if !self.null()? {
                        out.temperature = Some(self.simple_f64()?);
                    }
                }
                MESSAGES => {
                    if !self.null()? {
                        let (bytes, count) = match self.ws()? {
                            b'[' => {
                                self.i += 1;
                                self.array(2)?
                            }
                            b'{' => {
                                self.i += 1;
                                (self.object(2)?, 1)
                            }
                            b'"' => {
                                self.i += 1;
                                (self.string()?.0, 1)
                            }
                            _ => return None,
                        };
                        out.text = out.text.saturating_add(bytes);
                        out.messages = Some(count);
                    }
                }
                // system, tools, input, instructions: text of any value
                // (null counts 0, as `None` does).
                _ => {
                    let v = self.value(2)?;
                    out.text = out.text.saturating_add(v);
                }
            }
            match self.ws()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(out);
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestMeta;
    use crate::request::meta::{fields_serde, looks_like_json_object};
    use http::HeaderMap;
    use proptest::prelude::*;

    /// The fast path's answer (`None`: falls back), as `parse` runs it.
    fn fast(body: &[u8]) -> Option<Fields<'_>> {
        if looks_like_json_object(body) {
            scan(body)
        } else {
            None
        }
    }

    /// `Debug` shows every field, floats exactly (`-0.0` too).
    fn show(f: &Option<Fields<'_>>) -> String {
        format!("{f:?}")
    }

    /// The invariant: whenever the scanner answers, serde answers the same;
    /// and `parse` equals the serde-only parse. Returns whether the fast
    /// path answered.
    fn check(body: &[u8]) -> bool {
        let f = fast(body);
        let answered = f.is_some();
        if answered {
            assert_eq!(
                show(&f),
                show(&fields_serde(body)),
                "body: {:?}",
                String::from_utf8_lossy(body)
            );
        }
        let h = HeaderMap::new();
        assert_eq!(
            RequestMeta::parse("/v1/messages", &h, body),
            RequestMeta::parse_serde("/v1/messages", &h, body),
            "body: {:?}",
            String::from_utf8_lossy(body)
        );
        answered
    }

    /// The fast path must answer this body, and as serde does.
    #[track_caller]
    fn fast_ok(body: &str) -> Fields<'_> {
        assert!(check(body.as_bytes()), "fell back: {body}");
        assert!(fields_serde(body.as_bytes()).is_some(), "{body}");
        fast(body.as_bytes()).expect("answered")
    }

    /// The fast path must leave this body to serde.
    #[track_caller]
    fn falls_back(body: &[u8]) {
        assert!(
            !check(body),
            "accepted: {:?}",
            String::from_utf8_lossy(body)
        );
    }

    fn parsed(body: &[u8]) -> bool {
        RequestMeta::parse("/v1/messages", &HeaderMap::new(), body).is_parsed()
    }

    #[test]
    fn everyday_bodies_take_the_fast_path() {
        let f = fast_ok(
            r#"{"model":"claude-sonnet-4-5","max_tokens":512,"stream":true,"temperature":0.0,
                "system":"You are terse.","metadata":{"user_id":"u1"},
                "messages":[{"role":"user","content":"Hello there"},
                            {"role":"assistant","content":[{"type":"text","text":"Hi!","cache_control":{"type":"ephemeral"}}]}]}"#,
        );
        assert_eq!(f.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!((f.text, f.messages), (28, Some(2)));
        fast_ok(
            r#"{"model":"gpt-4o-mini","max_completion_tokens":64,"stream":true,
                "stream_options":{"include_usage":true},"top_p":0.9,"n":1,"stop":null,
                "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
        );
        let f = fast_ok(
            r#"{"model":"gpt-4.1","max_output_tokens":100,"instructions":"Be nice.",
                "input":[{"role":"user","content":[{"type":"input_text","text":"hey"}]}]}"#,
        );
        assert_eq!(f.max_output_tokens, Some(100));
        assert_eq!(f.text, 8 + 3);
        assert_eq!(f.messages, None);
    }

    #[test]
    fn escapes_count_unescaped_bytes() {
        for (s, len) in [
            (r#"a\nb"#, 3),
            (r#"\"quoted\""#, 8),
            (r#"back\\slash\/"#, 11),
            (r#"\b\f\n\r\t"#, 5),
            (r#"\u0041"#, 1),
            (r#"\u0000"#, 1),
            (r#"\u00e9"#, 2),
            (r#"\u00E9\u07FF"#, 4),
            (r#"\u4e2d\uFFFF"#, 6),
            (r#"\ud83d\ude00"#, 4),
            (r#"\uD83D\uDE00x\uDBFF\uDFFF"#, 9),
            ("h\u{e9}llo \u{4e2d}\u{6587} \u{1f600}", 18),
            ("\u{7f}", 1),
        ] {
            let body = format!(r#"{{"system":"{s}"}}"#);
            assert_eq!(fast_ok(&body).text, len, "{s}");
            // At every offset from a 16-byte chunk boundary.
            for pad in 0..40 {
                let body = format!(
                    r#"{{"system":"{}{s}{}"}}"#,
                    "x".repeat(pad),
                    "y".repeat(pad)
                );
                assert_eq!(fast_ok(&body).text, len + 2 * pad as u64, "{s} {pad}");
            }
        }
    }

    #[test]
    fn nested_tool_schemas_count_keys() {
        let f = fast_ok(
            r#"{"model":"m","max_tokens":1,"messages":[],
                "tools":[{"name":"get_weather","description":"Weather.","input_schema":{"type":"object",
                  "properties":{"location":{"type":"string","enum":["a","b"],"minimum":-1.5e-3,"x":1E+5}},
                  "required":["location"],"additionalProperties":false}}]}"#,
        );
        // name(4)+11, description(11)+8, input_schema(12), properties(10),
        // location(8), enum(4)+1+1, minimum(7)+1, x(1)+1, required(8)+8,
        // additionalProperties(20)+1.
        assert_eq!(f.text, 15 + 19 + 12 + 10 + 8 + 6 + 8 + 2 + 16 + 21);
        assert_eq!(f.messages, Some(0));
    }

    #[test]
    fn stream_options_and_max_token_aliases() {
        for (so, want) in [
            (r#"{"include_usage":true}"#, Some(true)),
            (r#"{"include_usage":false}"#, Some(false)),
            (r#"{"include_usage":null}"#, None),
            (r#"{}"#, None),
            (r#"{"other":[1,{"a":2}],"include_usage":true}"#, Some(true)),
            ("null", None),
        ] {
            let body = format!(r#"{{"stream":true,"stream_options":{so}}}"#);
            assert_eq!(fast_ok(&body).include_usage, want, "{so}");
        }
        for key in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            for v in ["0", "1", "4096", "18446744073709551615", "null"] {
                let body = format!(r#"{{"{key}" : {v} }}"#);
                fast_ok(&body);
            }
        }
        let f = fast_ok(r#"{"max_tokens":null,"max_completion_tokens":5,"max_output_tokens":7}"#);
        assert_eq!((f.max_tokens, f.max_completion_tokens), (None, Some(5)));
        let m = RequestMeta::parse(
            "/v1/chat/completions",
            &HeaderMap::new(),
            br#"{"max_tokens":null,"max_completion_tokens":5,"max_output_tokens":7}"#,
        );
        assert_eq!(m.max_tokens(), Some(5));
    }

    #[test]
    fn temperatures_match_serde_bit_for_bit() {
        for t in [
            "0",
            "1",
            "2",
            "-0",
            "-0.0",
            "0.0",
            "0.7",
            "1.50",
            "0.1",
            "0.3",
            "0.12345678901234",
            "123456789012345",
            "0.1234567890123456",
            "9007199254740992",
            "0.9007199254740992",
            "999999999999999",
            "0.0000000000000000000001",
            "-1.25",
            "null",
        ] {
            let body = format!(r#"{{"temperature":{t}}}"#);
            fast_ok(&body);
        }
        for t in [
            "1e-3",
            "9007199254740993",
            "0.9007199254740993",
            "0.00000000000000000000001",
            "1E2",
            "01",
            "1.",
            ".5",
            "-",
            "+1",
            "1.5e",
        ] {
            falls_back(format!(r#"{{"temperature":{t}}}"#).as_bytes());
        }
    }

    #[test]
    fn messages_of_every_shape() {
        assert_eq!(fast_ok(r#"{"messages":"hi"}"#).messages, Some(1));
        let f = fast_ok(r#"{"messages":{"role":"user","content":"hi"}}"#);
        assert_eq!((f.text, f.messages), (2, Some(1)));
        assert_eq!(fast_ok(r#"{"messages":null}"#).messages, None);
        assert_eq!(fast_ok(r#"{"messages":[]}"#).messages, Some(0));
        let f = fast_ok(r#"{"messages":[1,true,null,"ab",[],{}]}"#);
        assert_eq!((f.text, f.messages), (4, Some(6)));
        for v in ["1", "true", "false", "-2"] {
            falls_back(format!(r#"{{"messages":{v}}}"#).as_bytes());
        }
    }

    #[test]
    fn whitespace_anywhere_and_empty_objects() {
        fast_ok("{}");
        fast_ok(" \t\r\n{ } \n");
        fast_ok(
            "\n{ \"model\" :\t\"m\" ,\r\n \"messages\" : [ { \"role\" : \"user\" , \"content\" : [ ] } ] } \n",
        );
    }

    #[test]
    fn unusual_bodies_fall_back_to_serde() {
        let cases: &[&[u8]] = &[
            // escapes in keys (serde unescapes `mod\u0065l` to `model`)
            br#"{"mod\u0065l":"x"}"#,
            br#"{"messages":[{"te\u0078t":"abc"}]}"#,
            // escape in the model's value
            br#"{"model":"a\nb"}"#,
            // wrong types for read fields
            br#"{"model":5}"#,
            br#"{"max_tokens":1.5}"#,
            br#"{"max_tokens":-1}"#,
            br#"{"max_tokens":-0}"#,
            br#"{"max_tokens":1e3}"#,
            br#"{"max_tokens":01}"#,
            br#"{"max_tokens":"5"}"#,
            br#"{"max_tokens":18446744073709551616}"#,
            br#"{"stream":"yes"}"#,
            br#"{"stream":1}"#,
            br#"{"stream_options":[true]}"#,
            br#"{"stream_options":{"include_usage":1}}"#,
            br#"{"temperature":"hot"}"#,
            // duplicates
            br#"{"model":"a","model":"b"}"#,
            br#"{"model":null,"model":"b"}"#,
            br#"{"messages":[],"messages":[]}"#,
            br#"{"stream_options":{"include_usage":true,"include_usage":true}}"#,
            // malformed
            b"{",
            b"{\"model\":",
            b"{\"model\":\"m\"",
            b"{\"model\":\"m\",}",
            b"{\"messages\":[1,]}",
            b"{\"messages\":[1 2]}",
            b"{\"a\" 1}",
            b"{1:2}",
            b"{\"a\":tru}",
            b"{\"a\":nul}",
            b"{\"a\":\"\\x\"}",
            b"{\"a\":\"\\u12\"}",
            b"{\"a\":\"\\u12G4\"}",
            b"{\"a\":-}",
            b"{\"a\":1.}",
            b"{\"a\":1e}",
            b"{\"a\":.5}",
            b"{\"a\":+5}",
            // trailing garbage, BOM, a form feed (not JSON whitespace)
            b"{} x",
            b"{}{}",
            b"{}\0",
            b"\xef\xbb\xbf{}",
            b"\x0c{}",
            b"{}\x0c",
            // not an object
            b"",
            b"   ",
            b"[]",
            b"\"s\"",
            b"null",
            // control characters, bad UTF-8, lone surrogates
            b"{\"system\":\"a\x01b\"}",
            b"{\"system\":\"a\nb\"}",
            b"{\"metadata\":\"\xff\"}",
            b"{\"system\":\"\xc3\"}",
            b"{\"system\":\"\xed\xa0\x80\"}",
            b"{\"system\":\"\xe9\"}",
            br#"{"system":"\ud83d"}"#,
            br#"{"system":"\ud83dx"}"#,
            br#"{"system":"\ud83d\u0041"}"#,
            br#"{"system":"\ude00"}"#,
            br#"{"metadata":"\ude00"}"#,
            // numbers serde_json may refuse as out of f64 range
            br#"{"messages":[1e400]}"#,
            br#"{"metadata":1e400}"#,
            br#"{"tools":[1e299, 10e299, 1e1000]}"#,
        ];
        for body in cases {
            falls_back(body);
        }
        // What serde then decides, for a few of them.
        assert!(!parsed(br#"{"max_tokens":1.5}"#));
        assert!(!parsed(br#"{"model":"a","model":"b"}"#));
        assert!(!parsed(b"{} x"));
        assert!(!parsed(br#"{"messages":[1e400]}"#));
        assert!(!parsed(br#"{"system":"\ud83d"}"#));
        assert!(
            parsed(br#"{"metadata":1e400}"#),
            "ignored: not range-checked"
        );
        assert!(
            parsed(b"{\"metadata\":\"\xff\"}"),
            "ignored: not UTF-8-checked"
        );
        assert!(parsed(br#"{"mod\u0065l":"x"}"#));
        assert!(parsed(br#"{"model":"a\nb"}"#));
        assert_eq!(
            RequestMeta::parse("/v1/messages", &HeaderMap::new(), br#"{"model":"a\nb"}"#).model(),
            Some("a\nb")
        );
    }

    #[test]
    fn numbers_where_only_their_presence_counts() {
        for n in [
            "0",
            "-0",
            "1",
            "-1",
            "0.5",
            "-0.5e-5",
            "1e299",
            "1E+299",
            "99e298",
            "1e-999",
            "0e299",
            "123456789012345678901234567890",
        ] {
            let body = format!(r#"{{"tools":[{n}],"metadata":{{"x":{n}}}}}"#);
            assert_eq!(fast_ok(&body).text, 1, "{n}");
        }
        // Longer than the scanner's bound: serde decides.
        falls_back(format!(r#"{{"tools":[{}]}}"#, "1".repeat(101)).as_bytes());
        falls_back(br#"{"tools":[1e1234]}"#);
    }

    fn nested(depth: usize, field: &str) -> String {
        // The top-level object is one level; `depth - 1` more arrays.
        format!(
            r#"{{"{field}":{}{}}}"#,
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    }

    #[test]
    fn depth_limit_is_below_serdes() {
        for field in ["messages", "tools", "metadata"] {
            assert!(
                check(nested(MAX_DEPTH as usize, field).as_bytes()),
                "{field}"
            );
            for depth in [MAX_DEPTH as usize + 1, 126, 127, 128, 129, 10_000] {
                falls_back(nested(depth, field).as_bytes());
            }
        }
        // serde_json's own limit, for the record: 127 levels parse where
        // values are visited, 128 do not; ignored values have no limit.
        assert!(parsed(nested(127, "messages").as_bytes()));
        assert!(!parsed(nested(128, "messages").as_bytes()));
        assert!(parsed(nested(10_000, "metadata").as_bytes()));
        // Objects nest too.
        let objects = format!(
            r#"{{"tools":{}1{}}}"#,
            r#"{"a":"#.repeat(MAX_DEPTH as usize),
            "}".repeat(MAX_DEPTH as usize)
        );
        falls_back(objects.as_bytes());
    }

    #[test]
    fn first_non_ascii_validates_the_rest() {
        // Non-ASCII first in a key, then invalid UTF-8 later in a skipped
        // string: the scanner must not accept the later byte unchecked.
        let mut body = "{\"cl\u{e9}\":1,\"metadata\":\"x\"}".as_bytes().to_vec();
        let x = body.iter().rposition(|&c| c == b'x').expect("x");
        body[x] = 0xff;
        falls_back(&body);
        body[x] = b'y';
        assert!(check(&body));
    }

    // ------------------------------------------------------------ proptests

    /// A string's content, and its JSON encoding with randomly chosen
    /// escapes (short, `\u` in either case, surrogate pairs).
    fn json_string() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            6 => prop::char::range('a', 'z'),
            1 => prop::sample::select(vec![
                ' ', '"', '\\', '/', '\n', '\t', '\r', '\u{8}', '\u{c}', '\u{1}', '\u{1f}', '\u{7f}',
                '\u{e9}', '\u{7ff}', '\u{800}', '\u{4e2d}', '\u{ffff}', '\u{10000}', '\u{1f600}',
                '\u{10ffff}',
            ]),
            1 => any::<char>(),
        ];
        (prop::collection::vec((ch, 0u8..8), 0..40), prop::bool::ANY).prop_map(|(chars, upper)| {
            let mut s = String::from("\"");
            for (c, how) in chars {
                encode_char(&mut s, c, how, upper);
            }
            s.push('"');
            s
        })
    }

    fn encode_char(s: &mut String, c: char, how: u8, upper: bool) {
        use std::fmt::Write;
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\t' => Some("\\t"),
            '\r' => Some("\\r"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '/' if how == 1 => Some("\\/"),
            _ => None,
        };
        let must_escape = c == '"' || c == '\\' || (c as u32) < 0x20;
        if how < 5 && !must_escape {
            s.push(c);
        } else if let (Some(e), true) = (short, how < 7) {
            s.push_str(e);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = if upper {
                    write!(s, "\\u{:04X}", u)
                } else {
                    write!(s, "\\u{:04x}", u)
                };
            }
        }
    }

    /// Whitespace between tokens: mostly none.
    fn ws() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", "", "", " ", "\n", "\t", "\r\n  "])
    }

    /// Keys without escapes (escaped keys always fall back).
    fn plain_key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "type",
                "role",
                "text",
                "content",
                "cache_control",
                "name",
                "properties",
                "",
                "t\u{e9}xt",
                "description",
            ])
            .prop_map(String::from),
            prop::collection::vec(prop::char::range('a', 'z'), 1..8)
                .prop_map(|v| v.into_iter().collect()),
        ]
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|f| f.to_string()),
            (0u32..1000, -60i32..60, prop::bool::ANY)
                .prop_map(|(m, e, big)| format!("{m}{}{e}", if big { "E" } else { "e" })),
            (0u32..100, 0u32..1000, 0i32..99).prop_map(|(i, f, e)| format!("-{i}.{f}e+{e}")),
        ]
    }

    /// Any JSON value, a few levels deep, as text with random whitespace.
    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            number(),
            json_string(),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec((inner.clone(), ws()), 0..6).prop_map(|v| {
                    let items: Vec<String> =
                        v.into_iter().map(|(x, w)| format!("{w}{x}{w}")).collect();
                    format!("[{}]", items.join(","))
                }),
                prop::collection::vec((plain_key(), inner, ws()), 0..6).prop_map(|v| {
                    let items: Vec<String> = v
                        .into_iter()
                        .map(|(k, x, w)| format!("{w}\"{k}\"{w}:{w}{x}{w}"))
                        .collect();
                    format!("{{{}}}", items.join(","))
                }),
            ]
        })
    }

    fn content() -> impl Strategy<Value = String> {
        prop_oneof![
            json_string(),
            prop::collection::vec(
                (json_string(), prop::bool::ANY),
                0..4
            )
            .prop_map(|blocks| {
                let items: Vec<String> = blocks
                    .into_iter()
                    .map(|(t, cached)| {
                        if cached {
                            format!(r#"{{"type":"text","text":{t},"cache_control":{{"type":"ephemeral"}}}}"#)
                        } else {
                            format!(r#"{{"type":"text","text":{t}}}"#)
                        }
                    })
                    .collect();
                format!("[{}]", items.join(","))
            }),
        ]
    }

    fn messages() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::collection::vec(
                (prop::sample::select(vec!["user", "assistant", "system"]), content(), ws()),
                0..6
            )
            .prop_map(|v| {
                let items: Vec<String> = v
                    .into_iter()
                    .map(|(r, c, w)| format!(r#"{w}{{"role":{w}"{r}","content":{c}}}{w}"#))
                    .collect();
                format!("[{}]", items.join(","))
            }),
            1 => json_string(),
            1 => Just("null".to_string()),
            1 => value().prop_filter("object messages", |v| v.starts_with('{')),
        ]
    }

    fn simple_float() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..1000).prop_map(|n| n.to_string()),
            // At most 2 + 5 + 8 digits: a significand under 2^53.
            (0u64..100, 0u64..100_000_000, 0usize..5, prop::bool::ANY).prop_map(
                |(i, f, zeros, neg)| format!(
                    "{}{i}.{}{f}",
                    if neg { "-" } else { "" },
                    "0".repeat(zeros)
                )
            ),
            Just("null".to_string()),
        ]
    }

    /// A request body: a random subset of known and unknown fields in a
    /// random order, within the scanner's rules.
    fn body() -> impl Strategy<Value = String> {
        let model = prop::collection::vec(
            prop::sample::select(vec!['a', 'z', '-', '.', '4', '\u{e9}']),
            0..20,
        )
        .prop_map(|v| format!("\"{}\"", v.into_iter().collect::<String>()));
        let uint = prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            Just("null".to_string())
        ];
        let boolean = prop::sample::select(vec!["true", "false", "null"]).prop_map(String::from);
        let stream_options = (
            prop::sample::select(vec!["true", "false", "null"]),
            value(),
            prop::bool::ANY,
        )
            .prop_map(|(b, extra, first)| {
                if first {
                    format!(r#"{{"include_usage":{b},"extra":{extra}}}"#)
                } else {
                    format!(r#"{{"extra":{extra},"include_usage":{b}}}"#)
                }
            });
        let fields = (
            prop::option::of(model),
            prop::option::of(uint.clone()),
            prop::option::of(uint.clone()),
            prop::option::of(uint),
            prop::option::of(boolean),
            prop::option::of(stream_options),
            prop::option::of(simple_float()),
            prop::option::of(prop_oneof![json_string(), content(), value()]),
            prop::option::of(messages()),
            prop::option::of(value()),
            (prop::option::of(value()), prop::option::of(json_string())),
            prop::collection::vec((plain_key(), value()), 0..3),
        );
        (
            fields,
            any::<prop::sample::Index>().prop_map(|i| i.index(1 << 20)),
            ws(),
            ws(),
        )
            .prop_map(|(f, seed, w1, w2)| {
                let (
                    model,
                    mt,
                    mct,
                    mot,
                    stream,
                    so,
                    temp,
                    system,
                    msgs,
                    tools,
                    (input, instr),
                    extra,
                ) = f;
                let mut parts: Vec<(String, String)> = Vec::new();
                let named = [
                    ("model", model),
                    ("max_tokens", mt),
                    ("max_completion_tokens", mct),
                    ("max_output_tokens", mot),
                    ("stream", stream),
                    ("stream_options", so),
                    ("temperature", temp),
                    ("system", system),
                    ("messages", msgs),
                    ("tools", tools),
                    ("input", input),
                    ("instructions", instr),
                ];
                for (k, v) in named {
                    if let Some(v) = v {
                        parts.push((k.to_string(), v));
                    }
                }
                let known: Vec<&str> = named_keys();
                for (k, v) in extra {
                    if !known.contains(&k.as_str()) {
                        parts.push((k, v));
                    }
                }
                // A deterministic shuffle from the seed.
                let mut state = seed as u64 | 1;
                for i in (1..parts.len()).rev() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    parts.swap(i, (state % (i as u64 + 1)) as usize);
                }
                let items: Vec<String> = parts
                    .into_iter()
                    .map(|(k, v)| format!("{w1}\"{k}\"{w2}:{w1}{v}{w2}"))
                    .collect();
                format!("{w1}{{{}}}{w2}", items.join(","))
            })
    }

    fn named_keys() -> Vec<&'static str> {
        vec![
            "model",
            "max_tokens",
            "max_completion_tokens",
            "max_output_tokens",
            "stream",
            "stream_options",
            "temperature",
            "system",
            "messages",
            "tools",
            "input",
            "instructions",
        ]
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(prop::sample::Index, u8),
        Truncate(prop::sample::Index),
        Insert(prop::sample::Index, u8),
        Delete(prop::sample::Index),
        Duplicate(prop::sample::Index, usize),
        /// A field put first in the top-level object (duplicating one the
        /// body may already have).
        Prepend(&'static str, &'static str),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let interesting = prop_oneof![
            prop::sample::select(
                b"\"\\{}[],:-+.eE0159 \n\tntfu\x00\x01\x7f\x80\xbf\xc3\xe4\xed\xf0\xff".to_vec()
            ),
            any::<u8>(),
        ];
        prop_oneof![
            (any::<prop::sample::Index>(), interesting.clone())
                .prop_map(|(i, b)| Mutation::Flip(i, b)),
            any::<prop::sample::Index>().prop_map(Mutation::Truncate),
            (any::<prop::sample::Index>(), interesting).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<prop::sample::Index>().prop_map(Mutation::Delete),
            (any::<prop::sample::Index>(), 1usize..12).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
            (
                prop::sample::select(named_keys()),
                prop::sample::select(vec!["null", "1", "true", "\"m\"", "[]", "{}"]),
            )
                .prop_map(|(k, v)| Mutation::Prepend(k, v)),
        ]
    }

    fn mutate(body: &mut Vec<u8>, m: &Mutation) {
        if body.is_empty() {
            return;
        }
        match *m {
            Mutation::Flip(ref i, b) => {
                let i = i.index(body.len());
                body[i] = b;
            }
            Mutation::Truncate(ref i) => body.truncate(i.index(body.len())),
            Mutation::Insert(ref i, b) => body.insert(i.index(body.len() + 1), b),
            Mutation::Delete(ref i) => {
                body.remove(i.index(body.len()));
            }
            Mutation::Duplicate(ref i, n) => {
                let at = i.index(body.len());
                let end = (at + n).min(body.len());
                let copy = body[at..end].to_vec();
                body.splice(at..at, copy);
            }
            Mutation::Prepend(k, v) => {
                if let Some(at) = body.iter().position(|&c| c == b'{') {
                    let field = format!("\"{k}\":{v},");
                    body.splice(at + 1..at + 1, field.bytes());
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Structured bodies within the scanner's rules: it answers every
        /// one, and exactly as serde does, field by field.
        #[test]
        fn fast_path_equals_serde(body in body()) {
            prop_assert!(fields_serde(body.as_bytes()).is_some(), "serde refused: {}", body);
            prop_assert!(check(body.as_bytes()), "fell back: {}", body);
        }

        /// Mutated bodies: whenever the scanner answers, serde accepted the
        /// body and gives the same fields; `parse` always equals serde.
        #[test]
        fn scanner_never_accepts_what_serde_rejects(
            body in body(),
            muts in prop::collection::vec(mutation(), 1..4),
        ) {
            let mut bytes = body.into_bytes();
            for m in &muts {
                mutate(&mut bytes, m);
            }
            check(&bytes);
        }

        /// Arbitrary values under every field name, read or walked.
        #[test]
        fn any_value_under_any_field(
            k in prop::sample::select(named_keys()),
            v in value(),
            muts in prop::collection::vec(mutation(), 0..2),
        ) {
            let mut bytes = format!("{{\"{k}\":{v}}}").into_bytes();
            for m in &muts {
                mutate(&mut bytes, m);
            }
            check(&bytes);
        }
    }
}
