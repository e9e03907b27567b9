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
//! Both read a body the way the providers do: a key given twice at the top
//! level or in `stream_options` is not an error, and **the last value
//! wins** (a body serde refused for it used to be charged no tokens while
//! the provider spent them).
//!
//! It falls back on:
//! - malformed JSON of any kind, and anything after the top-level object
//!   but JSON whitespace (serde_json's four: space, tab, LF, CR);
//! - a backslash escape inside any object key (serde would unescape it and
//!   might then match `model` or `text`), and inside `model`'s value;
//! - a read field of an unexpected type, and `stream_options` given as an
//!   array;
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
//!
//! The scanner is one [`Scanner`] over the body: this file has its driver
//! (the top-level object, values, objects, arrays, `stream_options`);
//! `string.rs` the strings, keys and escapes (with the word-at-a-time and
//! `memchr2` searches); `number.rs` the numbers (validated, `u64` fields,
//! `temperature`).

use std::borrow::Cow;

mod number;
mod string;
#[cfg(test)]
mod tests;

use string::ASCII_LIMIT;

/// The deepest nesting of arrays and objects (the top-level object counts
/// as one) the scanner follows before leaving the body to serde_json, whose
/// recursion limit refuses 128 levels.
pub(super) const MAX_DEPTH: u32 = 100;

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
        if self.ws()? == b'}' {
            self.i += 1;
            return Some(None);
        }
        loop {
            self.eat(b'"')?;
            if self.key()? == b"include_usage" {
                self.eat(b':')?;
                // Given twice, the last wins.
                include = if self.null()? {
                    None
                } else {
                    Some(self.bool()?)
                };
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

    /// The top-level object. A key given twice is read as the providers
    /// read it (JSON parsers in Python, JavaScript, Go): the last value
    /// wins, for every field read and for each text field's bytes.
    fn top(&mut self) -> Option<Fields<'a>> {
        // Text fields, each counted by its last value.
        const SYSTEM: usize = 0;
        const MESSAGES: usize = 1;
        const TOOLS: usize = 2;
        const INPUT: usize = 3;
        const INSTRUCTIONS: usize = 4;

        let mut out = Fields::default();
        let mut text = [0u64; 5];
        self.eat(b'{')?;
        if self.ws()? == b'}' {
            self.i += 1;
            return Some(out);
        }
        loop {
            self.eat(b'"')?;
            let key = self.key()?;
            self.eat(b':')?;
            match key {
                b"model" => {
                    out.model = None;
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
                b"max_tokens" => out.max_tokens = self.opt_uint()?,
                b"max_completion_tokens" => out.max_completion_tokens = self.opt_uint()?,
                b"max_output_tokens" => out.max_output_tokens = self.opt_uint()?,
                b"stream" => {
                    out.stream = if self.null()? {
                        None
                    } else {
                        Some(self.bool()?)
                    };
                }
                b"stream_options" => {
                    out.include_usage = if self.null()? {
                        None
                    } else {
                        self.stream_options()?
                    };
                }
                b"temperature" => {
                    out.temperature = if self.null()? {
                        None
                    } else {
                        Some(self.simple_f64()?)
                    };
                }
                b"messages" => {
                    if self.null()? {
                        text[MESSAGES] = 0;
                        out.messages = None;
                    } else {
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
                        text[MESSAGES] = bytes;
                        out.messages = Some(count);
                    }
                }
                // system, tools, input, instructions: text of any value
                // (null counts 0, as `None` does).
                b"system" => text[SYSTEM] = self.value(2)?,
                b"tools" => text[TOOLS] = self.value(2)?,
                b"input" => text[INPUT] = self.value(2)?,
                b"instructions" => text[INSTRUCTIONS] = self.value(2)?,
                _ => {
                    self.value(2)?;
                }
            }
            match self.ws()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    out.text = text.iter().copied().fold(0, u64::saturating_add);
                    return Some(out);
                }
                _ => return None,
            }
        }
    }

    /// `null` or a `u64` field.
    #[inline]
    fn opt_uint(&mut self) -> Option<Option<u64>> {
        if self.null()? {
            Some(None)
        } else {
            Some(Some(self.uint()?))
        }
    }
}
