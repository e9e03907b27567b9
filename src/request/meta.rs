//! [`RequestMeta`]: the facts about a request the layers read, parsed once
//! from its path, headers and JSON body (by the scanner of `scan`, or by
//! serde when the scanner does not know), with the input-token estimate and
//! the API detection.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::provider::Api;

use super::ReplayBody;
use super::scan::{self, Fields};

#[cfg(test)]
mod tests;

/// Bytes of text per estimated token.
///
/// Real tokenizers average about four bytes of English per token; 3.5 errs
/// on the side of reserving slightly more than will be charged, because an
/// under-estimate can earn a 429 while an over-estimate is refunded when the
/// response reports its real usage.
const BYTES_PER_TOKEN_X2: u64 = 7;
/// Tokens of framing the providers add per message (role markers).
const TOKENS_PER_MESSAGE: u64 = 4;

const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// Facts about one request, parsed once from its JSON body and headers.
///
/// Kept as an `Arc<RequestMeta>` in the request's [`ReplayBody`] by
/// [`BufferBodyLayer`] (or [`RequestMeta::for_request`]); layers read it
/// with [`RequestMeta::of`]. An `Arc<RequestMeta>` in the request's
/// extensions takes precedence: a layer that rewrites the request (fallback
/// to another model) puts the new metadata there, and so may a caller.
///
/// [`BufferBodyLayer`]: super::BufferBodyLayer
#[derive(Clone, PartialEq)]
pub struct RequestMeta {
    api: Option<Api>,
    parsed: bool,
    model: Option<Arc<str>>,
    max_tokens: Option<u64>,
    stream: bool,
    include_usage: bool,
    temperature: Option<f64>,
    input_tokens: u64,
    messages: u32,
    body_len: usize,
    anthropic_version: Option<HeaderValue>,
    anthropic_beta: Option<HeaderValue>,
}

impl fmt::Debug for RequestMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately field by field: the metadata never holds credentials,
        // and this keeps it that way if fields are added.
        f.debug_struct("RequestMeta")
            .field("api", &self.api)
            .field("parsed", &self.parsed)
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("stream", &self.stream)
            .field("input_tokens", &self.input_tokens)
            .field("body_len", &self.body_len)
            .finish_non_exhaustive()
    }
}

/// The fields of a Messages / Chat Completions body the stack reads; every
/// other field is skipped without allocating.
///
/// Deserialized by hand, not derived: a derived struct refuses a key given
/// twice ("duplicate field"), while the providers' JSON parsers take the
/// last value — a body refused here but read there was charged no tokens.
/// So each key seen overwrites what an earlier one set.
#[derive(Default)]
struct WireRequest<'a> {
    model: Option<Cow<'a, str>>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    temperature: Option<f64>,
    system: Option<TextBytes>,
    messages: Option<Messages>,
    tools: Option<TextBytes>,
    input: Option<TextBytes>,
    instructions: Option<TextBytes>,
}

impl<'de: 'a, 'a> Deserialize<'de> for WireRequest<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = WireRequest<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a request object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // Each field's last value is kept raw and read only at the
                // end: an earlier value of another type is overwritten, as
                // the providers' parsers overwrite it, not an error.
                let mut raw: [Option<&'de RawValue>; FIELDS.len()] = [None; FIELDS.len()];
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match FIELDS.iter().position(|f| *f == &*key) {
                        Some(i) => raw[i] = Some(map.next_value()?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let [
                    model,
                    max_tokens,
                    max_completion_tokens,
                    max_output_tokens,
                    stream,
                    stream_options,
                    temperature,
                    system,
                    messages,
                    tools,
                    input,
                    instructions,
                ] = raw;
                Ok(WireRequest {
                    model: last::<Option<BorrowedStr<'de>>, A::Error>(model)?
                        .flatten()
                        .map(|s| s.0),
                    max_tokens: last(max_tokens)?.flatten(),
                    max_completion_tokens: last(max_completion_tokens)?.flatten(),
                    max_output_tokens: last(max_output_tokens)?.flatten(),
                    stream: last(stream)?.flatten(),
                    stream_options: last(stream_options)?.flatten(),
                    temperature: last(temperature)?.flatten(),
                    system: last(system)?.flatten(),
                    messages: last(messages)?.flatten(),
                    tools: last(tools)?.flatten(),
                    input: last(input)?.flatten(),
                    instructions: last(instructions)?.flatten(),
                })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The top-level keys read, in the order `WireRequest`'s visitor keeps them.
pub(crate) const FIELDS: [&str; 12] = [
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
];

/// Reads a field's last raw value (kept by a visitor) as `T`; the serde
/// path only ever sees bodies from `serde_json::from_slice`, whose raw
/// values borrow from the body.
fn last<'de, T: Deserialize<'de>, E: de::Error>(
    raw: Option<&'de RawValue>,
) -> Result<Option<T>, E> {
    raw.map(|r| serde_json::from_str(r.get()).map_err(E::custom))
        .transpose()
}

/// A string borrowed from the body when it has no escapes, else unescaped
/// into an owned copy (what `#[serde(borrow)]` does for a `Cow<str>`).
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = BorrowedStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// `stream_options`: `include_usage`, the last one given.
struct StreamOptions {
    include_usage: Option<bool>,
}

impl<'de> Deserialize<'de> for StreamOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StreamOptions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StreamOptions, A::Error> {
                let mut include_usage = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "include_usage" {
                        include_usage = Some(map.next_value::<&'de RawValue>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(StreamOptions {
                    include_usage: last::<Option<bool>, A::Error>(include_usage)?.flatten(),
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// The number of text bytes in any JSON value: the lengths of its strings
/// and of object keys (tool schemas are charged as text), less structural
/// fields (`type`, `role`, `cache_control`), walked without building the
/// value.
#[derive(Default)]
struct TextBytes(u64);

impl<'de> Deserialize<'de> for TextBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextBytesVisitor).map(TextBytes)
    }
}

struct TextBytesVisitor;

impl<'de> Visitor<'de> for TextBytesVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        Ok(v.len() as u64)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Ok(1)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Ok(1)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<u64, E> {
        Ok(1)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Ok(1)
    }
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0u64;
        while let Some(TextBytes(b)) = seq.next_element()? {
            n = n.saturating_add(b);
        }
        Ok(n)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut n = 0u64;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                // Structure, not text the model reads.
                "type" | "role" | "cache_control" => {
                    map.next_value::<IgnoredAny>()?;
                }
                // Carriers of text: the value counts, the key does not.
                "text" | "content" => n = n.saturating_add(map.next_value::<TextBytes>()?.0),
                // Anything else (tool schemas, names): key and value are text.
                _ => {
                    let v = map.next_value::<TextBytes>()?.0;
                    n = n.saturating_add(v).saturating_add(key.len() as u64);
                }
            }
        }
        Ok(n)
    }
}

/// `messages`: the text bytes of all messages and how many there are.
struct Messages {
    bytes: u64,
    count: u32,
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Messages;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let mut m = Messages { bytes: 0, count: 0 };
                while let Some(TextBytes(b)) = seq.next_element()? {
                    m.bytes = m.bytes.saturating_add(b);
                    m.count = m.count.saturating_add(1);
                }
                Ok(m)
            }
            // Tolerate a non-array: count its text, as one message.
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Messages, E> {
                Ok(Messages {
                    bytes: v.len() as u64,
                    count: 1,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Messages, A::Error> {
                let bytes = TextBytesVisitor.visit_map(map)?;
                Ok(Messages { bytes, count: 1 })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Messages, E> {
                Ok(Messages { bytes: 0, count: 0 })
            }
        }
        d.deserialize_any(V)
    }
}

impl RequestMeta {
    /// Parses the metadata of a request from its path, headers and body.
    ///
    /// Never fails: a body that is not JSON (or not an object) gives
    /// metadata with [`is_parsed`](Self::is_parsed) `false`, no model and
    /// no token estimate, and the request passes through untouched.
    pub fn parse(path: &str, headers: &HeaderMap, body: &[u8]) -> Self {
        // The scanner answers almost every real body; anything unusual (or
        // malformed) it leaves to serde, which decides.
        let fields = if looks_like_json_object(body) {
            scan::scan(body).or_else(|| fields_serde(body))
        } else {
            None
        };
        Self::build(path, headers, body, fields)
    }

    /// [`parse`](Self::parse) by serde alone, without the fast scanner: the
    /// reference the scanner is tested against, kept for benchmarks.
    #[doc(hidden)]
    pub fn parse_serde(path: &str, headers: &HeaderMap, body: &[u8]) -> Self {
        let fields = if looks_like_json_object(body) {
            fields_serde(body)
        } else {
            None
        };
        Self::build(path, headers, body, fields)
    }

    /// Built in one place, so that the (large) value is written once.
    #[inline(always)]
    fn build(path: &str, headers: &HeaderMap, body: &[u8], fields: Option<Fields<'_>>) -> Self {
        // Looked up by a prepared name (no parsing of a `&str` per call),
        // and not at all in an empty map.
        let header = |name: &HeaderName| {
            if headers.is_empty() {
                None
            } else {
                headers.get(name).cloned()
            }
        };
        let anthropic_version = header(&ANTHROPIC_VERSION);
        let api = detect_api(path, anthropic_version.is_some());
        let Some(f) = fields else {
            return RequestMeta {
                api,
                parsed: false,
                model: None,
                max_tokens: None,
                stream: false,
                include_usage: false,
                temperature: None,
                input_tokens: 0,
                messages: 0,
                body_len: body.len(),
                anthropic_version,
                anthropic_beta: header(&ANTHROPIC_BETA),
            };
        };
        let messages = f.messages.unwrap_or(0);
        RequestMeta {
            api,
            parsed: true,
            model: f.model.map(|m| Arc::from(&*m)),
            max_tokens: f
                .max_tokens
                .or(f.max_completion_tokens)
                .or(f.max_output_tokens),
            stream: f.stream.unwrap_or(false),
            include_usage: f.include_usage.unwrap_or(false),
            temperature: f.temperature.filter(|t| t.is_finite()),
            input_tokens: estimate_tokens(f.text, messages),
            messages,
            body_len: body.len(),
            anthropic_version,
            anthropic_beta: header(&ANTHROPIC_BETA),
        }
    }

    /// The metadata of a request, if it was parsed: an `Arc<RequestMeta>`
    /// in its extensions (a layer that rewrites a request puts the new
    /// metadata there), else the metadata its [`ReplayBody`] carries
    /// (where [`for_request`](Self::for_request) and [`BufferBodyLayer`]
    /// keep it: the bytes it was parsed from travel with it, and no
    /// extension map is allocated for it).
    ///
    /// [`BufferBodyLayer`]: super::BufferBodyLayer
    pub fn of<B: 'static>(req: &Request<B>) -> Option<&Arc<RequestMeta>> {
        req.extensions().get::<Arc<RequestMeta>>().or_else(|| {
            (req.body() as &dyn Any)
                .downcast_ref::<ReplayBody>()?
                .meta
                .as_ref()
        })
    }

    /// The metadata of a request with any body type: stored metadata if a
    /// layer above attached it, else — when the body is a [`ReplayBody`] —
    /// parsed now and stored. `None` for other bodies without metadata;
    /// layers then count the request alone.
    pub fn for_request<B: 'static>(req: &mut Request<B>) -> Option<Arc<RequestMeta>> {
        if let Some(meta) = Self::of(req) {
            return Some(Arc::clone(meta));
        }
        let body = (req.body() as &dyn Any).downcast_ref::<ReplayBody>()?;
        let meta = Arc::new(Self::parse(
            req.uri().path(),
            req.headers(),
            body.as_bytes(),
        ));
        let body = (req.body_mut() as &mut dyn Any).downcast_mut::<ReplayBody>()?;
        body.meta = Some(Arc::clone(&meta));
        Some(meta)
    }

    /// The API the request speaks, from its path (`…/v1/messages`,
    /// `…/chat/completions`, `…/responses`) or, failing that, the
    /// `anthropic-version` header.
    pub fn api(&self) -> Option<Api> {
        self.api
    }
    /// Whether the body was a JSON object whose fields could be read.
    pub fn is_parsed(&self) -> bool {
        self.parsed
    }
    /// The requested model.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    /// The requested model, shared (cloning it is a reference count).
    pub fn model_arc(&self) -> Option<&Arc<str>> {
        self.model.as_ref()
    }
    /// `max_tokens` (Anthropic, older OpenAI), `max_completion_tokens`
    /// (OpenAI) or `max_output_tokens` (OpenAI Responses): the most output
    /// tokens the request may produce.
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_tokens
    }
    /// Whether the request asks for a streamed (SSE) response.
    pub fn is_stream(&self) -> bool {
        self.stream
    }
    /// Whether an OpenAI streaming request asked for a final usage chunk
    /// (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.include_usage
    }
    /// The sampling temperature, when given (and finite).
    pub fn temperature(&self) -> Option<f64> {
        self.temperature
    }
    /// A conservative estimate of the input tokens the provider will count:
    /// the text bytes of `system`, `messages` and `tools` at 3.5 bytes per
    /// token, plus four tokens per message.
    pub fn input_tokens(&self) -> u64 {
        self.input_tokens
    }
    /// The number of messages in the request.
    pub fn message_count(&self) -> u32 {
        self.messages
    }
    /// The body's length in bytes.
    pub fn body_len(&self) -> usize {
        self.body_len
    }
    /// The `anthropic-version` request header.
    pub fn anthropic_version(&self) -> Option<&HeaderValue> {
        self.anthropic_version.as_ref()
    }
    /// The `anthropic-beta` request header.
    pub fn anthropic_beta(&self) -> Option<&HeaderValue> {
        self.anthropic_beta.as_ref()
    }
}

fn estimate_tokens(text_bytes: u64, messages: u32) -> u64 {
    let tokens = (u128::from(text_bytes) * 2).div_ceil(u128::from(BYTES_PER_TOKEN_X2));
    u64::try_from(tokens)
        .unwrap_or(u64::MAX)
        .saturating_add(u64::from(messages).saturating_mul(TOKENS_PER_MESSAGE))
}

fn detect_api(path: &str, has_anthropic_version: bool) -> Option<Api> {
    let path = path.trim_end_matches('/');
    if path.ends_with("/messages") {
        Some(Api::AnthropicMessages)
    } else if path.ends_with("/chat/completions") || path.ends_with("/responses") {
        Some(Api::OpenAiChat)
    } else if has_anthropic_version {
        Some(Api::AnthropicMessages)
    } else {
        None
    }
}

/// The fields by serde: `None` on any serde error.
pub(super) fn fields_serde(body: &[u8]) -> Option<Fields<'_>> {
    let wire = serde_json::from_slice::<WireRequest<'_>>(body).ok()?;
    let text: u64 = [&wire.system, &wire.tools, &wire.input, &wire.instructions]
        .iter()
        .filter_map(|t| t.as_ref().map(|t| t.0))
        .chain(wire.messages.as_ref().map(|m| m.bytes))
        .fold(0, u64::saturating_add);
    Some(Fields {
        model: wire.model,
        max_tokens: wire.max_tokens,
        max_completion_tokens: wire.max_completion_tokens,
        max_output_tokens: wire.max_output_tokens,
        stream: wire.stream,
        include_usage: wire.stream_options.and_then(|o| o.include_usage),
        temperature: wire.temperature,
        text,
        messages: wire.messages.map(|m| m.count),
    })
}

pub(super) fn looks_like_json_object(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}
