//! IETF httpapi RateLimit header fields (draft-ietf-httpapi-ratelimit-headers).
//!
//! Current drafts: `RateLimit-Policy: "burst";q=100;w=60, "daily";q=1000;w=86400`
//! and `RateLimit: "burst";r=50;t=30`, both Structured Field lists (RFC 8941).
//! Older drafts: `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`
//! (integers, the limit possibly followed by `, 10;w=1` policy items), and the
//! dictionary form `RateLimit: limit=10, remaining=5, reset=30`.
//!
//! The Structured Field parser here covers what these fields use: members
//! that are a string or token, optionally `=` a bare item, followed by
//! parameters whose values are integers, decimals, strings, tokens, byte
//! sequences or booleans. Inner lists fail the parse. As RFC 8941 requires, a
//! field that fails to parse is ignored as a whole — except that parsing
//! stops after [`QuotaSnapshot::MAX_POLICIES`] members, and what follows is
//! not examined. Spaces around members and the field are allowed, as RFC
//! 8941 specifies (unlike the scalar fields elsewhere in this module).

use std::time::Duration;

use http::HeaderMap;

use super::label::Label;
use super::parse;
use super::quota::{Quota, QuotaSnapshot, QuotaUnit, RateLimitPolicy, bounded_reset};

/// The longest IETF field (all lines joined) that is parsed, in bytes;
/// longer fields are ignored. Structured fields are longer than scalars, but
/// [`QuotaSnapshot::MAX_POLICIES`] policies fit with room to spare.
const MAX_FIELD_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bare<'a> {
    Int(i64),
    Decimal,
    /// String contents (escapes left in place) or a token.
    Text(&'a str),
    Bytes(&'a str),
    Bool(bool),
}

impl Bare<'_> {
    fn non_negative(self) -> Option<u64> {
        match self {
            Bare::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Member<'a> {
    /// The item (list form) or the key (dictionary form).
    head: &'a str,
    /// The dictionary member value, if `key=value`.
    value: Option<Bare<'a>>,
    params: Vec<(&'a str, Bare<'a>)>,
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        // Only ASCII bytes are ever matched, so these are char boundaries.
        self.s.get(start..self.i).unwrap_or_default()
    }

    fn key(&mut self) -> Option<&'a str> {
        if !matches!(self.peek(), Some(b'a'..=b'z' | b'*')) {
            return None;
        }
        Some(
            self.take_while(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')),
        )
    }

    fn token(&mut self) -> Option<&'a str> {
        if !self
            .peek()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
        {
            return None;
        }
        Some(self.take_while(|b| b.is_ascii_alphanumeric() || b":/!#$%&'*+-.^_`|~".contains(&b)))
    }

    fn string(&mut self) -> Option<&'a str> {
        self.i += 1; // opening quote
        let start = self.i;
        loop {
            match self.peek()? {
                b'"' => {
                    let text = self.s.get(start..self.i)?;
                    self.i += 1;
                    return Some(text);
                }
                b'\\' => {
                    self.i += 1;
                    if !matches!(self.peek()?, b'"' | b'\\') {
                        return None;
                    }
                    self.i += 1;
                }
                0x20..=0x7e => self.i += 1,
                _ => return None,
            }
        }
    }

    fn number(&mut self) -> Option<Bare<'a>> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let int = self.take_while(|b| b.is_ascii_digit());
        if int.is_empty() {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let frac = self.take_while(|b| b.is_ascii_digit());
            if int.len() > 12 || frac.is_empty() || frac.len() > 3 {
                return None;
            }
            return Some(Bare::Decimal);
        }
        if int.len() > 15 {
            return None;
        }
        let n: i64 = int.parse().ok()?;
        Some(Bare::Int(if negative { -n } else { n }))
    }

    fn bare_item(&mut self) -> Option<Bare<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Bare::Text),
            b'-' | b'0'..=b'9' => self.number(),
            b':' => {
                self.i += 1;
                let b64 = self.take_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                (self.peek() == Some(b':')).then(|| {
                    self.i += 1;
                    Bare::Bytes(b64)
                })
            }
            b'?' => {
                self.i += 1;
                let v = match self.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return None,
                };
                self.i += 1;
                Some(Bare::Bool(v))
            }
            _ => self.token().map(Bare::Text),
        }
    }

    fn params(&mut self) -> Option<Vec<(&'a str, Bare<'a>)>> {
        let mut params = Vec::new();
        while self.peek() == Some(b';') {
            self.i += 1;
            self.skip_sp();
            let key = self.key()?;
            let value = if self.peek() == Some(b'=') {
                self.i += 1;
                self.bare_item()?
            } else {
                Bare::Bool(true)
            };
            // Bound the work per member; real policies have a handful.
            if params.len() < 16 {
                params.push((key, value));
            }
        }
        Some(params)
    }

    fn member(&mut self) -> Option<Member<'a>> {
        let (head, value) = if self.peek() == Some(b'"') {
            (self.string()?, None)
        } else {
            let head = self.token()?;
            if self.peek() == Some(b'=') {
                self.i += 1;
                (head, Some(self.bare_item()?))
            } else {
                (head, None)
            }
        };
        Some(Member {
            head,
            value,
            params: self.params()?,
        })
    }

    /// A list or dictionary of at most `max` members; `None` on any syntax
    /// error in what was read.
    fn members(s: &'a str, max: usize) -> Option<Vec<Member<'a>>> {
        if s.len() > MAX_FIELD_LEN {
            return None;
        }
        let mut p = Parser { s, i: 0 };
        let mut out = Vec::new();
        p.skip_sp();
        if p.peek().is_none() {
            return Some(out);
        }
        loop {
            out.push(p.member()?);
            if out.len() >= max {
                return Some(out);
            }
            p.skip_ows();
            match p.peek() {
                None => return Some(out),
                Some(b',') => {
                    p.i += 1;
                    p.skip_ows();
                    p.peek()?; // trailing comma
                }
                Some(_) => return None,
            }
        }
    }
}

/// The field's text: all lines joined (as a list field may be split across
/// repeated header lines), `None` if absent, not ASCII, or too long.
fn field(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut out = String::new();
    for value in headers.get_all(name) {
        let text = value.to_str().ok()?;
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(text);
        if out.len() > MAX_FIELD_LEN {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

fn seconds(v: Bare<'_>) -> Option<Duration> {
    v.non_negative().map(Duration::from_secs)
}

fn policy_for<'p>(
    policies: &'p mut Vec<RateLimitPolicy>,
    name: &str,
) -> Option<&'p mut RateLimitPolicy> {
    let label = Label::new(name);
    let idx = match policies.iter().position(|p| p.name == label) {
        Some(idx) => idx,
        None if policies.len() < QuotaSnapshot::MAX_POLICIES => {
            policies.push(RateLimitPolicy::named(label));
            policies.len() - 1
        }
        None => return None,
    };
    policies.get_mut(idx)
}

/// Reads every IETF field into `snapshot`.
pub(crate) fn read(headers: &HeaderMap, snapshot: &mut QuotaSnapshot) {
    let max = QuotaSnapshot::MAX_POLICIES;
    let mut legacy = Quota::default();

    let policy_field = field(headers, "ratelimit-policy");
    for m in policy_field
        .as_deref()
        .and_then(|f| Parser::members(f, max))
        .unwrap_or_default()
    {
        if m.value.is_some() {
            continue;
        }
        let Some(p) = policy_for(&mut snapshot.policies, m.head) else {
            break;
        };
        for (key, value) in m.params {
            match (key, value) {
                ("q", v) => p.quota = v.non_negative(),
                ("w", v) => p.window = seconds(v),
                ("qu", Bare::Text(unit)) => {
                    p.unit = Some(match unit {
                        "requests" => QuotaUnit::Requests,
                        "content-bytes" => QuotaUnit::ContentBytes,
                        "concurrent-requests" => QuotaUnit::ConcurrentRequests,
                        _ => QuotaUnit::Other,
                    });
                }
                ("pk", Bare::Bytes(b64)) => p.partition_key = Some(Label::new(b64)),
                _ => {}
            }
        }
    }

    let limit_field = field(headers, "ratelimit");
    for m in limit_field
        .as_deref()
        .and_then(|f| Parser::members(f, max))
        .unwrap_or_default()
    {
        match m.value {
            // Dictionary form (older drafts): limit=, remaining=, reset=.
            Some(value) => match m.head {
                "limit" => legacy.limit = value.non_negative(),
                "remaining" => legacy.remaining = value.non_negative(),
                "reset" => legacy.reset = seconds(value).map(bounded_reset),
                _ => {}
            },
            None => {
                let Some(p) = policy_for(&mut snapshot.policies, m.head) else {
                    break;
                };
                for (key, value) in m.params {
                    match (key, value) {
                        ("r", v) => p.remaining = v.non_negative(),
                        ("t", v) => p.reset = seconds(v).map(bounded_reset),
                        ("pk", Bare::Bytes(b64)) if p.partition_key.is_none() => {
                            p.partition_key = Some(Label::new(b64));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    // Oldest drafts: three separate fields. The limit may be followed by
    // policy items (`100, 100;w=60`): only the leading integer is read.
    if legacy.limit.is_none() {
        legacy.limit = field(headers, "ratelimit-limit")
            .as_deref()
            .and_then(leading_number);
    }
    if legacy.remaining.is_none() {
        legacy.remaining = parse::single(headers, "ratelimit-remaining").and_then(parse::parse_u64);
    }
    if legacy.reset.is_none() {
        legacy.reset = parse::single(headers, "ratelimit-reset")
            .and_then(parse::parse_u64)
            .map(Duration::from_secs)
            .map(bounded_reset);
    }

    // A bare name says nothing about quota.
    snapshot.policies.retain(|p| {
        p.quota.is_some() || p.window.is_some() || p.remaining.is_some() || p.reset.is_some()
    });
    snapshot.families.ietf = !snapshot.policies.is_empty();
    snapshot.ietf_legacy = legacy.non_empty();
    snapshot.families.ietf_legacy = snapshot.ietf_legacy.is_some();
}

/// The integer before the first `,` or `;` of an old-draft `RateLimit-Limit`.
fn leading_number(field: &str) -> Option<u64> {
    let end = field.find([',', ';']).unwrap_or(field.len());
    parse::parse_u64(field.get(..end)?)
}

#[cfg(test)]
mod tests;
