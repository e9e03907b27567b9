//! The properties the fuzz targets check, one function per target.
//!
//! Each `check_*` function takes the raw fuzz input, panics when a property
//! fails, and is shared: the `cargo fuzz` targets in `fuzz_targets/` call
//! it with libFuzzer's inputs, and `tests/fuzz_equivalents.rs` (in the main
//! crate's `cargo test`) includes this file and calls it with proptest's
//! generated inputs and with every seed in `fuzz/corpus/`. So the short
//! property test and the long fuzz run test the same property.
//!
//! Only the crate's public API is used (`RequestMeta::parse_serde`, the
//! serde reference path, is public but `#[doc(hidden)]`), so the crate
//! needs no fuzzing-only module.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Body as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use tower_llm_resilience::RequestMeta;
use tower_llm_resilience::cache::canonical_hash;
use tower_llm_resilience::provider::{
    MAX_RESET, MAX_RETRY_AFTER, QuotaSnapshot, retry_after, should_retry,
};
use tower_llm_resilience::response::{Completion, Format, ResponseBody};

// ---------------------------------------------------------------------------
// Header parsers
// ---------------------------------------------------------------------------

/// The local clock used when an input names none: 2025-08-21T12:40:00Z.
const DEFAULT_NOW: u64 = 1_755_780_000;

/// Reads a fuzz input as response headers: one `name: value` per line
/// (names as HTTP/1 sends them, case-insensitive; the value trimmed of
/// surrounding blanks, as hyper does). A line `now: <seconds>` sets the
/// local clock instead of adding a header. Lines that are not a valid
/// header are skipped, as an HTTP client would have refused them.
pub fn headers_from_bytes(data: &[u8]) -> (HeaderMap, SystemTime) {
    let mut map = HeaderMap::new();
    let mut now = UNIX_EPOCH + Duration::from_secs(DEFAULT_NOW);
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"now") {
            if let Some(secs) = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                // Anything a `SystemTime` can hold on every platform.
                now = UNIX_EPOCH + Duration::from_secs(secs.min(253_402_300_799));
            }
            continue;
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        map.append(name, value);
    }
    (map, now)
}

/// Retry advice and quota snapshots never panic and stay within their
/// documented bounds, whatever the headers say.
pub fn check_headers(data: &[u8]) {
    let (headers, now) = headers_from_bytes(data);
    check_header_map(&headers, now);
}

/// [`check_headers`] on an already built map.
pub fn check_header_map(headers: &HeaderMap, now: SystemTime) {
    if let Some(d) = retry_after(headers, now) {
        assert!(d > Duration::ZERO, "retry_after gave zero advice");
        // Exact up to the bound, else "too long" — never a clamped value.
        assert!(
            d <= MAX_RETRY_AFTER || d == Duration::MAX,
            "retry_after {d:?} over the bound but not Duration::MAX"
        );
    }
    // Reading the advice twice gives the same answer (no hidden state).
    assert_eq!(retry_after(headers, now), retry_after(headers, now));
    let _ = should_retry(headers);

    let s = QuotaSnapshot::from_headers(headers, now);
    assert!(s.policies.len() <= QuotaSnapshot::MAX_POLICIES);
    for q in [
        s.requests,
        s.tokens,
        s.input_tokens,
        s.output_tokens,
        s.combined_tokens,
        s.ietf_legacy,
    ]
    .into_iter()
    .flatten()
    {
        assert!(!q.is_empty(), "an empty quota is reported as known: {s:?}");
        assert!(
            q.reset.is_none_or(|r| r <= MAX_RESET),
            "reset over MAX_RESET: {s:?}"
        );
    }
    for p in &s.policies {
        assert!(
            p.reset.is_none_or(|r| r <= MAX_RESET),
            "policy reset: {p:?}"
        );
    }
    // A snapshot with values names a family, and one without names none.
    let known = s.requests.is_some()
        || s.tokens.is_some()
        || s.input_tokens.is_some()
        || s.output_tokens.is_some()
        || s.combined_tokens.is_some()
        || !s.policies.is_empty()
        || s.ietf_legacy.is_some();
    assert_eq!(
        known,
        s.families.any(),
        "families disagree with values: {s:?}"
    );
    assert_eq!(s, QuotaSnapshot::from_headers(headers, now));
}

// ---------------------------------------------------------------------------
// SSE (and JSON) usage observation
// ---------------------------------------------------------------------------

/// How a body ended, and how often observers were told.
fn observe(format: Format, chunks: Vec<Bytes>) -> Completion {
    let told: Arc<Mutex<Vec<Completion>>> = Arc::default();
    let mut body = ResponseBody::replay(chunks.into()).with_format(format);
    let sink = Arc::clone(&told);
    body.on_complete(move |c| sink.lock().expect("not poisoned").push(c.clone()));
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(e))) => panic!("a replayed body failed: {e}"),
            Poll::Ready(None) => break,
            Poll::Pending => panic!("a replayed body is never pending"),
        }
    }
    drop(body);
    let mut told = std::mem::take(&mut *told.lock().expect("not poisoned"));
    assert_eq!(told.len(), 1, "observers must be told exactly once");
    told.pop().expect("one completion")
}

/// A small deterministic generator for split points (xorshift64*).
struct Splits(u64);

impl Splits {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Cuts `stream` into chunks: each at most `max` bytes, lengths (zero
/// included: an empty data frame is legal) drawn from `seed`.
fn split(stream: &Bytes, seed: u64, max: usize) -> Vec<Bytes> {
    let mut rng = Splits(seed | 1);
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let n = (rng.next() % (max as u64 + 1)) as usize;
        let end = (at + n).min(stream.len());
        out.push(stream.slice(at..end));
        at = end;
    }
    out
}

/// Feeding the same bytes in different chunkings gives the same
/// completion — outcome, usage, error, byte count, content flag — and
/// never panics. The first byte of `data` seeds the chunkings; the rest is
/// the body, observed as SSE and as JSON.
pub fn check_sse(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let stream = Bytes::copy_from_slice(stream);
    for format in [Format::Sse, Format::Json] {
        let whole = observe(format, vec![stream.clone()]);
        assert_eq!(whole.bytes, stream.len() as u64);
        let bytewise = (0..stream.len()).map(|i| stream.slice(i..=i)).collect();
        let chunkings = [
            ("one byte at a time", bytewise),
            ("short chunks", split(&stream, u64::from(seed), 3)),
            (
                "longer chunks",
                split(&stream, u64::from(seed) << 8 | 0x5a, 64),
            ),
            // Cut just after every line end and every `\r`: the places an
            // incremental reader most easily gets wrong.
            ("after line ends", {
                let mut v = Vec::new();
                let mut start = 0;
                for (i, &b) in stream.iter().enumerate() {
                    if b == b'\n' || b == b'\r' {
                        v.push(stream.slice(start..=i));
                        start = i + 1;
                    }
                }
                v.push(stream.slice(start..));
                v
            }),
        ];
        for (how, chunks) in chunkings {
            let got = observe(format, chunks);
            assert_eq!(got, whole, "{format:?}: {how} differs from one chunk");
        }
    }
}

// ---------------------------------------------------------------------------
// Request metadata: the scanner against serde
// ---------------------------------------------------------------------------

const PATHS: [&str; 3] = ["/v1/messages", "/v1/chat/completions", "/v1/responses"];

/// The scanner (`RequestMeta::parse`) and the serde path
/// (`RequestMeta::parse_serde`) agree on every field of every body, and
/// where `serde_json` reads the body as an object, both agree with what
/// that value says: the model, max tokens, stream flag, temperature and
/// message count exactly, and the input-token estimate exactly when the
/// body has no duplicate key — with duplicates it never counts less
/// (nested duplicates are summed: costs are never under-counted).
pub fn check_meta(data: &[u8]) {
    let path = PATHS[data.len() % PATHS.len()];
    let headers = HeaderMap::new();
    let fast = RequestMeta::parse(path, &headers, data);
    let slow = RequestMeta::parse_serde(path, &headers, data);
    assert_eq!(fast, slow, "scanner and serde disagree");
    assert_eq!(
        fast.temperature().map(f64::to_bits),
        slow.temperature().map(f64::to_bits),
        "temperature bits"
    );
    assert_eq!(fast.body_len(), data.len());
    if !fast.is_parsed() {
        assert_eq!(fast.input_tokens(), 0);
        assert_eq!(fast.model(), None);
        return;
    }
    // Parsed, yet not an object to serde_json's `Value`: only a nesting
    // deeper than its recursion limit inside a value the meta path skips.
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // The top level: the last value of each key, as serde_json's map keeps.
    match map.get("model") {
        Some(Value::String(m)) => assert_eq!(fast.model(), Some(m.as_str())),
        None | Some(Value::Null) => assert_eq!(fast.model(), None),
        Some(other) => panic!("parsed with a model of another type: {other}"),
    }
    let uint = |key: &str| match map.get(key) {
        Some(Value::Number(n)) => Some(n.as_u64().expect("parsed with a non-u64 max tokens")),
        None | Some(Value::Null) => None,
        Some(other) => panic!("parsed with {key} = {other}"),
    };
    let max = uint("max_tokens")
        .or(uint("max_completion_tokens"))
        .or(uint("max_output_tokens"));
    assert_eq!(fast.max_tokens(), max);
    match map.get("stream") {
        Some(Value::Bool(b)) => assert_eq!(fast.is_stream(), *b),
        None | Some(Value::Null) => assert!(!fast.is_stream()),
        Some(other) => panic!("parsed with stream = {other}"),
    }
    let include_usage = match map.get("stream_options") {
        Some(Value::Object(o)) => match o.get("include_usage") {
            Some(Value::Bool(b)) => *b,
            None | Some(Value::Null) => false,
            Some(other) => panic!("parsed with include_usage = {other}"),
        },
        None | Some(Value::Null) => false,
        Some(other) => panic!("parsed with stream_options = {other}"),
    };
    assert_eq!(fast.include_usage(), include_usage);
    let temperature = match map.get("temperature") {
        Some(Value::Number(n)) => n.as_f64().filter(|t| t.is_finite()),
        None | Some(Value::Null) => None,
        Some(other) => panic!("parsed with temperature = {other}"),
    };
    assert_eq!(
        fast.temperature().map(f64::to_bits),
        temperature.map(f64::to_bits)
    );
    let (mut text, messages) = match map.get("messages") {
        Some(Value::Array(a)) => (
            a.iter().map(text_bytes).fold(0, u64::saturating_add),
            a.len(),
        ),
        Some(v @ (Value::String(_) | Value::Object(_))) => (text_bytes(v), 1),
        None | Some(Value::Null) => (0, 0),
        Some(other) => panic!("parsed with messages = {other}"),
    };
    assert_eq!(fast.message_count() as usize, messages);
    for key in ["system", "tools", "input", "instructions"] {
        if let Some(v) = map.get(key) {
            text = text.saturating_add(text_bytes(v));
        }
    }
    let want = estimate(text, messages as u64);
    if entries(data) == Some(value_entries(&Value::Object(map))) {
        assert_eq!(fast.input_tokens(), want, "input-token estimate");
    } else {
        assert!(
            fast.input_tokens() >= want,
            "duplicate keys under-counted: {} < {want}",
            fast.input_tokens()
        );
    }
}

/// The crate's documented rule, restated: text bytes ÷ 3.5 rounded up,
/// plus 4 tokens per message.
fn estimate(text: u64, messages: u64) -> u64 {
    let t = (u128::from(text) * 2).div_ceil(7);
    u64::try_from(t)
        .unwrap_or(u64::MAX)
        .saturating_add(messages.saturating_mul(4))
}

/// The documented text rule on a value: strings count their UTF-8 bytes,
/// other scalars one (null none); in objects `type`, `role` and
/// `cache_control` are structure, `text` and `content` carry their value
/// only, and any other key counts with its value.
fn text_bytes(v: &Value) -> u64 {
    match v {
        Value::Null => 0,
        Value::Bool(_) | Value::Number(_) => 1,
        Value::String(s) => s.len() as u64,
        Value::Array(a) => a.iter().map(text_bytes).fold(0, u64::saturating_add),
        Value::Object(o) => o.iter().fold(0u64, |n, (k, v)| match k.as_str() {
            "type" | "role" | "cache_control" => n,
            "text" | "content" => n.saturating_add(text_bytes(v)),
            _ => n
                .saturating_add(text_bytes(v))
                .saturating_add(k.len() as u64),
        }),
    }
}

/// How many object entries a value holds, nested ones included.
fn value_entries(v: &Value) -> u64 {
    match v {
        Value::Array(a) => a.iter().map(value_entries).sum(),
        Value::Object(o) => o.values().map(|v| 1 + value_entries(v)).sum(),
        _ => 0,
    }
}

/// How many object entries the text holds, duplicates included (`None`
/// when it is not JSON). Equal to [`value_entries`] of its value exactly
/// when no object repeats a key.
fn entries(data: &[u8]) -> Option<u64> {
    let mut de = serde_json::Deserializer::from_slice(data);
    let n = CountEntries.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(n)
}

struct CountEntries;

impl<'de> DeserializeSeed<'de> for CountEntries {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CountEntries {
    type Value = u64;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while let Some(m) = seq.next_element_seed(CountEntries)? {
            n += m;
        }
        Ok(n)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while map.next_key::<IgnoredAny>()?.is_some() {
            n += 1 + map.next_value_seed(CountEntries)?;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Cache key canonicaliser
// ---------------------------------------------------------------------------

/// The canonical hash exists exactly for JSON objects (as serde_json reads
/// them), and is the same for every semantically equal text of one: keys
/// in another order, other whitespace, strings written with `\u` escapes.
/// Without duplicate keys the input's own hash equals its value's; a
/// different value (an entry added) gives a different hash.
pub fn check_canonical(data: &[u8]) {
    let hash = canonical_hash(data);
    let value = serde_json::from_slice::<Value>(data);
    assert_eq!(
        hash.is_some(),
        matches!(value, Ok(Value::Object(_))),
        "canonical_hash accepts exactly JSON objects ({value:?})"
    );
    let Ok(value @ Value::Object(_)) = value else {
        return;
    };
    let compact = serde_json::to_vec(&value).expect("a value serializes");
    let pretty = serde_json::to_vec_pretty(&value).expect("a value serializes");
    let seed = data.len() as u64 ^ hash.unwrap_or(0) as u64;
    let mut escaped = String::new();
    write_reordered(&value, &mut escaped, &mut Splits(seed | 1));
    let canonical = canonical_hash(&compact);
    assert!(canonical.is_some());
    assert_eq!(
        canonical_hash(&pretty),
        canonical,
        "whitespace changed the hash"
    );
    assert_eq!(
        canonical_hash(escaped.as_bytes()),
        canonical,
        "key order or escapes changed the hash: {escaped}"
    );
    // The input itself is the same object as its value when no key repeats
    // and serde_json reads its own output back as the same value (its
    // default float parser may be one ulp off on a long decimal; that is
    // serde_json's reading, not ours).
    let reread = serde_json::from_slice::<Value>(&compact).expect("its own output");
    if entries(data) == Some(value_entries(&value)) && reread == value {
        assert_eq!(hash, canonical, "the input and its value differ");
    }
    // Content matters: one more entry is another hash.
    let Value::Object(mut more) = value else {
        unreachable!()
    };
    let key = (0u32..)
        .map(|i| format!("\u{1}fuzz{i}"))
        .find(|k| !more.contains_key(k))
        .expect("a free key");
    more.insert(key, Value::Null);
    let other = serde_json::to_vec(&Value::Object(more)).expect("a value serializes");
    assert_ne!(
        canonical_hash(&other),
        canonical,
        "an added entry kept the hash"
    );
}

/// Writes `v` as JSON with every object's keys in reverse order, every
/// string character as a `\u` escape and whitespace drawn from `rng`.
fn write_reordered(v: &Value, out: &mut String, rng: &mut Splits) {
    let ws = |out: &mut String, rng: &mut Splits| {
        for _ in 0..rng.next() % 3 {
            out.push([' ', '\n', '\t', '\r'][(rng.next() % 4) as usize]);
        }
    };
    let string = |out: &mut String, s: &str| {
        out.push('"');
        for unit in s.encode_utf16() {
            let _ = write!(out, "\\u{unit:04x}");
        }
        out.push('"');
    };
    ws(out, rng);
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => {
            out.push_str(&serde_json::to_string(v).expect("a scalar serializes"));
        }
        Value::String(s) => string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_reordered(item, out, rng);
            }
            ws(out, rng);
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, item)) in o.iter().rev().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(out, rng);
                string(out, k);
                ws(out, rng);
                out.push(':');
                write_reordered(item, out, rng);
            }
            ws(out, rng);
            out.push('}');
        }
    }
    ws(out, rng);
}

// ---------------------------------------------------------------------------
// Configuration parser
// ---------------------------------------------------------------------------

/// `Config::from_toml_str` and `Config::from_json_str` never panic, and
/// read the same configuration from the same document in either format:
/// when the text is TOML that `Config` accepts, the same document written
/// as JSON gives an equal `Config`; when it is JSON that `Config` accepts,
/// so does its TOML reading of the same value (compared the other way).
/// `parse_duration` never panics on any line of the text.
#[cfg(feature = "config")]
pub fn check_config(data: &[u8]) {
    use tower_llm_resilience::config::{Config, parse_duration};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let _ = parse_duration(line);
    }
    let from_toml = Config::from_toml_str(text);
    let from_json = Config::from_json_str(text);
    if let Ok(config) = &from_toml {
        // The same document as JSON (a TOML datetime has no JSON form).
        if let Ok(value) = toml::from_str::<Value>(text)
            && !has_toml_datetime(&value)
        {
            let json = serde_json::to_string(&value).expect("a value serializes");
            match Config::from_json_str(&json) {
                Ok(same) => assert_eq!(&same, config, "TOML and JSON readings differ: {json}"),
                Err(e) => panic!("accepted as TOML, refused as JSON ({e}): {json}"),
            }
        }
    }
    if let Ok(config) = &from_json {
        let value: Value = serde_json::from_str(text).expect("Config accepted it");
        assert_eq!(
            &Config::from_json_str(&serde_json::to_string(&value).expect("serializes"))
                .expect("its own value, rewritten"),
            config,
            "a JSON config rewritten reads differently"
        );
    }
}

#[cfg(feature = "config")]
fn has_toml_datetime(v: &Value) -> bool {
    match v {
        Value::Object(o) => {
            o.contains_key("$__toml_private_datetime") || o.values().any(has_toml_datetime)
        }
        Value::Array(a) => a.iter().any(has_toml_datetime),
        _ => false,
    }
}
