//! The request side: metadata parsed once, a replayable body, and the
//! bounded buffering layer that produces both.
//!
//! Every layer of the stack needs a few facts about a request — which API it
//! speaks, the model, `max_tokens`, whether it streams, roughly how many input
//! tokens it carries — and retry, fallback and cache need its body more than
//! once. [`BufferBodyLayer`] reads any [`http_body::Body`] into a
//! [`ReplayBody`] (refusing bodies over a limit with [`BodyTooLarge`] before
//! buffering past it), parses the JSON once into a [`RequestMeta`], and
//! keeps it as an `Arc<RequestMeta>` with the body's bytes, where every
//! layer below reads it with [`RequestMeta::of`].
//!
//! Bodies that are not JSON, or not a known API's JSON, pass through
//! untouched: their metadata says so ([`RequestMeta::is_parsed`]), and layers
//! that need token counts then count the request alone.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_llm_resilience::request::{BufferBodyLayer, ReplayBody, RequestMeta};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_llm_resilience::BoxError> {
//! let svc = ServiceBuilder::new()
//!     .layer(BufferBodyLayer::new(1 << 20))
//!     .service(service_fn(|req: Request<ReplayBody>| async move {
//!         let meta = RequestMeta::of(&req).expect("inserted by the layer");
//!         assert_eq!(meta.model(), Some("claude-sonnet-4-5"));
//!         assert_eq!(meta.max_tokens(), Some(1024));
//!         Ok::<_, Infallible>(Response::new(()))
//!     }));
//!
//! let req = Request::post("https://api.anthropic.com/v1/messages")
//!     .header("content-type", "application/json")
//!     .body(String::from(
//!         r#"{"model":"claude-sonnet-4-5","max_tokens":1024,
//!             "messages":[{"role":"user","content":"Hello"}]}"#,
//!     ))?;
//! svc.oneshot(req).await?;
//! # Ok(()) }
//! ```

use std::any::Any;
use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{BodyTooLarge, BoxError};
use crate::provider::Api;
use crate::util::Inner;
use scan::Fields;

mod scan;

/// The default buffering limit of [`BufferBodyLayer`]: 32 MiB, Anthropic's
/// largest accepted Messages request.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

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
#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    system: Option<TextBytes>,
    #[serde(default)]
    messages: Option<Messages>,
    #[serde(default)]
    tools: Option<TextBytes>,
    #[serde(default)]
    input: Option<TextBytes>,
    #[serde(default)]
    instructions: Option<TextBytes>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
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
fn fields_serde(body: &[u8]) -> Option<Fields<'_>> {
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

fn looks_like_json_object(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// The instant by which a request must have its answer: a request
/// extension.
///
/// Admission never waits past it (with fail-fast it refuses at once when the
/// wait would), and retries never sleep past it. Set it per request, or give
/// a layer a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub tokio::time::Instant);

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: std::time::Duration) -> Self {
        Deadline(tokio::time::Instant::now() + timeout)
    }

    /// The time left from `now` (zero once passed).
    pub fn remaining(&self, now: tokio::time::Instant) -> std::time::Duration {
        self.0.saturating_duration_since(now)
    }
}

/// A non-reversible identity of the API key a request carries, for keying
/// limiter state and cache entries without holding the secret.
///
/// A 64-bit XXH3 hash of the `x-api-key` header value, or else of the
/// `Authorization` header value (seeded apart). Sixty-four bits cannot be
/// turned back into a key (keys carry far more entropy), and the value shows
/// nothing of the key in logs or `Debug` output.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(u64);

/// `x-api-key`, parsed once.
const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({:016x})", self.0)
    }
}

impl KeyId {
    /// The identity of the key in these headers, if any.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let (domain, value) = if let Some(v) = headers.get(X_API_KEY) {
            (0u64, v)
        } else {
            (1u64, headers.get(http::header::AUTHORIZATION)?)
        };
        Some(KeyId(xxhash_rust::xxh3::xxh3_64_with_seed(
            value.as_bytes(),
            domain,
        )))
    }

    /// The identity as a number (stable within one build of the crate).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// A cheap, replayable request body backed by [`Bytes`].
///
/// Cloning it clones a reference count, so retry, fallback and cache can send
/// the same body again without copying. It yields its bytes as one data
/// frame and never fails.
#[derive(Clone, Default)]
pub struct ReplayBody {
    data: Bytes,
    sent: bool,
    /// The metadata parsed from these bytes, carried with them (see
    /// [`RequestMeta::of`]): no extension map to allocate per request.
    meta: Option<Arc<RequestMeta>>,
}

/// Equal bytes (and progress): the metadata is derived from the bytes.
impl PartialEq for ReplayBody {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data && self.sent == other.sent
    }
}

impl Eq for ReplayBody {}

impl fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("len", &self.data.len())
            .finish()
    }
}

impl ReplayBody {
    /// A body of these bytes.
    pub fn new(data: impl Into<Bytes>) -> Self {
        ReplayBody {
            data: data.into(),
            sent: false,
            meta: None,
        }
    }
    /// An empty body.
    pub fn empty() -> Self {
        Self::default()
    }
    /// The whole body, whether or not it has been polled.
    pub fn as_bytes(&self) -> &Bytes {
        &self.data
    }
    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// A fresh copy that will yield the whole body again, even if this one
    /// was already polled.
    #[must_use]
    pub fn replay(&self) -> Self {
        ReplayBody {
            data: self.data.clone(),
            sent: false,
            meta: self.meta.clone(),
        }
    }
}

/// A copy of a request to send again: the same method, URI, version,
/// headers and extensions, and a fresh [`ReplayBody`] of the same bytes (a
/// reference count, not a copy). What retry, fallback and cache send when
/// they re-issue a request.
pub fn replay_request(req: &Request<ReplayBody>) -> Request<ReplayBody> {
    let mut copy = Request::new(req.body().replay());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    copy
}

macro_rules! replay_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ReplayBody {
            fn from(v: $t) -> Self {
                Self::new(v)
            }
        }
    )*};
}
replay_from!(Bytes, Vec<u8>, String, &'static str, &'static [u8]);

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent || self.data.is_empty() {
            self.sent = true;
            return Poll::Ready(None);
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(self.data.clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent || self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(if self.sent { 0 } else { self.data.len() as u64 })
    }
}

/// Buffers request bodies into a [`ReplayBody`] up to a limit and attaches
/// the parsed [`RequestMeta`].
///
/// A body larger than the limit fails with [`BodyTooLarge`]: at once when
/// its size hint already says so, otherwise as soon as the bytes read pass
/// the limit — never buffering past it. Trailers are dropped (no LLM API
/// uses request trailers). Requests whose body is already a `ReplayBody`
/// are not copied again.
#[derive(Debug, Clone, Copy)]
pub struct BufferBodyLayer {
    limit: usize,
}

impl BufferBodyLayer {
    /// A layer buffering bodies of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        BufferBodyLayer { limit }
    }
}

impl Default for BufferBodyLayer {
    fn default() -> Self {
        Self::new(DEFAULT_BODY_LIMIT)
    }
}

impl<S> Layer<S> for BufferBodyLayer {
    type Service = BufferBody<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BufferBody::new(inner, self.limit)
    }
}

/// The service made by [`BufferBodyLayer`].
#[derive(Debug, Clone)]
pub struct BufferBody<S> {
    inner: Inner<S>,
    limit: usize,
}

impl<S> BufferBody<S> {
    /// Wraps `inner`, buffering bodies of at most `limit` bytes.
    pub fn new(inner: S, limit: usize) -> Self {
        BufferBody {
            inner: Inner::new(inner),
            limit,
        }
    }
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }
    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }
    /// Consumes this service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, B> Service<Request<B>> for BufferBody<S>
where
    S: Service<Request<ReplayBody>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness of the inner service is awaited after the body is read:
        // holding a reserved slot of it while a slow client uploads would
        // starve everyone else. It is asked here too, without waiting: a
        // body already buffered (a `ReplayBody`) is then sent at the call,
        // with no clone of the inner service.
        self.inner.ask(cx);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let body = match crate::util::downcast::<ReplayBody, B>(body) {
            Ok(replay) if self.inner.is_ready() && replay.len() <= self.limit => {
                let req = future::finish(parts, replay);
                return future::ResponseFuture::calling(self.inner.call_ready(req));
            }
            Ok(replay) => future::ToRead::Replay(replay),
            Err(body) => future::ToRead::Other(body),
        };
        future::ResponseFuture::new(parts, body, self.inner.hand_off(), self.limit)
    }
}

/// Futures of [`BufferBody`].
pub mod future {
    use super::*;

    pin_project! {
        /// The response future of [`BufferBody`]: reads the body, then waits
        /// for the inner service and calls it.
        pub struct ResponseFuture<S: Service<Request<ReplayBody>>, B> {
            #[pin]
            state: State<S, B>,
        }
    }

    impl<S: Service<Request<ReplayBody>>, B> fmt::Debug for ResponseFuture<S, B> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ResponseFuture").finish_non_exhaustive()
        }
    }

    pin_project! {
        #[project = StateProj]
        enum State<S: Service<Request<ReplayBody>>, B> {
            Reading {
                #[pin]
                body: B,
                parts: Option<http::request::Parts>,
                buf: BytesMut,
                first: Option<Bytes>,
                limit: usize,
                inner: Option<S>,
            },
            Ready {
                req: Option<Request<ReplayBody>>,
                inner: S,
            },
            Calling {
                #[pin]
                fut: S::Future,
            },
            Failed {
                err: Option<BoxError>,
            },
        }
    }

    /// A request body: already buffered, or to read.
    pub(super) enum ToRead<B> {
        Replay(ReplayBody),
        Other(B),
    }

    impl<S: Service<Request<ReplayBody>>, B: Body + 'static> ResponseFuture<S, B> {
        /// The request was sent at the call.
        pub(super) fn calling(fut: S::Future) -> Self {
            ResponseFuture {
                state: State::Calling { fut },
            }
        }

        pub(super) fn new(
            parts: http::request::Parts,
            body: ToRead<B>,
            inner: S,
            limit: usize,
        ) -> Self {
            let state = match body {
                ToRead::Replay(replay) if replay.len() > limit => State::Failed {
                    err: Some(BodyTooLarge { limit }.into()),
                },
                ToRead::Replay(replay) => State::Ready {
                    req: Some(finish(parts, replay)),
                    inner,
                },
                ToRead::Other(body) => {
                    if body.size_hint().lower() > limit as u64 {
                        State::Failed {
                            err: Some(BodyTooLarge { limit }.into()),
                        }
                    } else {
                        State::Reading {
                            body,
                            parts: Some(parts),
                            buf: BytesMut::new(),
                            first: None,
                            limit,
                            inner: Some(inner),
                        }
                    }
                }
            };
            ResponseFuture { state }
        }
    }

    pub(super) fn finish(parts: http::request::Parts, body: ReplayBody) -> Request<ReplayBody> {
        let mut req = Request::from_parts(parts, body);
        RequestMeta::for_request(&mut req);
        req
    }

    impl<S, B> Future for ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody>>,
        S::Error: Into<BoxError>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        type Output = Result<S::Response, BoxError>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut this = self.project();
            loop {
                match this.state.as_mut().project() {
                    StateProj::Reading {
                        mut body,
                        parts,
                        buf,
                        first,
                        limit,
                        inner,
                    } => {
                        let frame = match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => frame,
                            Some(Err(e)) => return Poll::Ready(Err(e.into())),
                            None => {
                                // Zero-copy when the body came in one chunk.
                                let data = match first.take() {
                                    Some(one) if buf.is_empty() => one,
                                    Some(one) => {
                                        let mut all =
                                            BytesMut::with_capacity(one.len() + buf.len());
                                        all.extend_from_slice(&one);
                                        all.extend_from_slice(buf);
                                        all.freeze()
                                    }
                                    None => std::mem::take(buf).freeze(),
                                };
                                let (Some(parts), Some(inner)) = (parts.take(), inner.take())
                                else {
                                    return Poll::Ready(Err(
                                        "buffer future polled after completion".into(),
                                    ));
                                };
                                let req = finish(parts, ReplayBody::new(data));
                                this.state.set(State::Ready {
                                    req: Some(req),
                                    inner,
                                });
                                continue;
                            }
                        };
                        let Ok(mut data) = frame.into_data() else {
                            continue; // trailers: dropped, see the type docs
                        };
                        let have = first.as_ref().map_or(0, |f| f.len()) + buf.len();
                        if data.remaining_len() > limit.saturating_sub(have) {
                            return Poll::Ready(Err(BodyTooLarge { limit: *limit }.into()));
                        }
                        if first.is_none() && buf.is_empty() {
                            *first = Some(data.copy_to_bytes_all());
                        } else {
                            buf.extend_from_slice(&data.copy_to_bytes_all());
                        }
                    }
                    StateProj::Ready { req, inner } => {
                        ready!(inner.poll_ready(cx)).map_err(Into::into)?;
                        let Some(req) = req.take() else {
                            return Poll::Ready(
                                Err("buffer future polled after completion".into()),
                            );
                        };
                        let fut = inner.call(req);
                        this.state.set(State::Calling { fut });
                    }
                    StateProj::Calling { fut } => {
                        return fut.poll(cx).map_err(Into::into);
                    }
                    StateProj::Failed { err } => {
                        return Poll::Ready(Err(err
                            .take()
                            .unwrap_or_else(|| "buffer future polled after completion".into())));
                    }
                }
            }
        }
    }

    /// Reading any `Buf` into `Bytes` (zero-copy when it already is `Bytes`).
    trait BufExt {
        fn remaining_len(&self) -> usize;
        fn copy_to_bytes_all(&mut self) -> Bytes;
    }

    impl<T: bytes::Buf> BufExt for T {
        fn remaining_len(&self) -> usize {
            self.remaining()
        }
        fn copy_to_bytes_all(&mut self) -> Bytes {
            let n = self.remaining();
            self.copy_to_bytes(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;

    fn anthropic(body: &str) -> RequestMeta {
        let mut h = HeaderMap::new();
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        RequestMeta::parse("/v1/messages", &h, body.as_bytes())
    }

    #[test]
    fn parses_anthropic_messages() {
        let m = anthropic(
            r#"{"model":"claude-sonnet-4-5","max_tokens":512,"stream":true,"temperature":0.0,
                "system":"You are terse.","metadata":{"user_id":"u1"},
                "messages":[{"role":"user","content":"Hello there"},
                            {"role":"assistant","content":[{"type":"text","text":"Hi!"}]}]}"#,
        );
        assert!(m.is_parsed());
        assert_eq!(m.api(), Some(Api::AnthropicMessages));
        assert_eq!(m.model(), Some("claude-sonnet-4-5"));
        assert_eq!(m.max_tokens(), Some(512));
        assert!(m.is_stream());
        assert_eq!(m.temperature(), Some(0.0));
        assert_eq!(m.message_count(), 2);
        // text: "You are terse." (14) + "Hello there" (11) + "Hi!" (3) = 28 bytes
        // -> ceil(28 / 3.5) = 8, plus 4 per message.
        assert_eq!(m.input_tokens(), 8 + 8);
        assert_eq!(
            m.anthropic_version().map(|v| v.as_bytes()),
            Some(&b"2023-06-01"[..])
        );
    }

    #[test]
    fn parses_openai_chat() {
        let h = HeaderMap::new();
        let m = RequestMeta::parse(
            "/v1/chat/completions",
            &h,
            br#"{"model":"gpt-4o-mini","max_completion_tokens":64,"stream":true,
                 "stream_options":{"include_usage":true},
                 "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
        );
        assert_eq!(m.api(), Some(Api::OpenAiChat));
        assert_eq!(m.model(), Some("gpt-4o-mini"));
        assert_eq!(m.max_tokens(), Some(64));
        assert!(m.is_stream() && m.include_usage());
        assert_eq!(m.input_tokens(), (10u64 * 2).div_ceil(7) + 8);
    }

    #[test]
    fn tool_schema_keys_count_as_text() {
        let without = anthropic(r#"{"model":"m","max_tokens":1,"messages":[]}"#);
        let with = anthropic(
            r#"{"model":"m","max_tokens":1,"messages":[],
                "tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"location":{"type":"string"}}}}]}"#,
        );
        assert_eq!(without.input_tokens(), 0);
        assert!(with.input_tokens() > 10, "{:?}", with);
    }

    #[test]
    fn estimate_grows_with_text_and_never_overflows() {
        let small = anthropic(&format!(
            r#"{{"model":"m","max_tokens":1,"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "a".repeat(350)
        ));
        assert_eq!(small.input_tokens(), 100 + 4);
        assert!(estimate_tokens(u64::MAX, u32::MAX) > u64::MAX / 4);
        assert_eq!(estimate_tokens(7, 0), 2);
        assert_eq!(estimate_tokens(8, 0), 3);
    }

    #[test]
    fn non_json_and_malformed_pass_through() {
        let h = HeaderMap::new();
        for body in [
            &b""[..],
            b"hello",
            b"[1,2,3]",
            b"{\"model\":",
            b"{\"model\": 5}",
            b"{\"max_tokens\": -1}",
            b"\xff\xfe{",
        ] {
            let m = RequestMeta::parse("/v1/messages", &h, body);
            assert!(!m.is_parsed(), "{body:?}");
            assert_eq!(m.model(), None);
            assert_eq!(m.input_tokens(), 0);
            assert_eq!(m.api(), Some(Api::AnthropicMessages));
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!(
            r#"{{"model":"m","messages":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let m = RequestMeta::parse("/v1/messages", &HeaderMap::new(), deep.as_bytes());
        assert!(!m.is_parsed());
    }

    #[test]
    fn api_detection() {
        let api = |path, h: &HeaderMap| RequestMeta::parse(path, h, b"{}").api();
        let h = HeaderMap::new();
        assert_eq!(api("/v1/responses", &h), Some(Api::OpenAiChat));
        assert_eq!(api("/proxy/v1/messages/", &h), Some(Api::AnthropicMessages));
        assert_eq!(api("/other", &h), None);
        let mut h2 = HeaderMap::new();
        h2.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        assert_eq!(api("/gateway", &h2), Some(Api::AnthropicMessages));
        // Other headers alone say nothing.
        let mut h3 = HeaderMap::new();
        h3.insert("anthropic-beta", HeaderValue::from_static("x"));
        assert_eq!(api("/gateway", &h3), None);
        assert_eq!(
            RequestMeta::parse("/gateway", &h3, b"{}").anthropic_beta(),
            h3.get("anthropic-beta")
        );
    }

    #[test]
    fn replay_body_yields_once_and_replays() {
        let body = ReplayBody::from("abc");
        let copy = body.clone();
        let bytes = futures_executor_block(body.collect())
            .expect("infallible")
            .to_bytes();
        assert_eq!(bytes, "abc");
        assert_eq!(copy.size_hint().exact(), Some(3));
        let again = futures_executor_block(copy.replay().collect())
            .expect("infallible")
            .to_bytes();
        assert_eq!(again, "abc");
        assert!(ReplayBody::empty().is_end_stream());
    }

    fn futures_executor_block<F: Future>(f: F) -> F::Output
    where
        F::Output: Sized,
    {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    type Echoed = (Bytes, Option<Arc<RequestMeta>>);

    fn echo() -> impl Service<
        Request<ReplayBody>,
        Response = Echoed,
        Error = Infallible,
        Future = std::future::Ready<Result<Echoed, Infallible>>,
    > + Clone {
        tower::service_fn(|req: Request<ReplayBody>| {
            let meta = RequestMeta::of(&req).cloned();
            std::future::ready(Ok((req.body().as_bytes().clone(), meta)))
        })
    }

    fn chunked(chunks: Vec<&'static [u8]>) -> impl Body<Data = Bytes, Error = Infallible> {
        StreamBody::new(futures_util_iter(chunks))
    }

    fn futures_util_iter(
        chunks: Vec<&'static [u8]>,
    ) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> {
        struct It(std::vec::IntoIter<&'static [u8]>);
        impl futures_core::Stream for It {
            type Item = Result<Frame<Bytes>, Infallible>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                Poll::Ready(
                    self.0
                        .next()
                        .map(|c| Ok(Frame::data(Bytes::from_static(c)))),
                )
            }
        }
        It(chunks.into_iter())
    }

    #[tokio::test]
    async fn layer_buffers_chunks_and_attaches_meta() {
        use tower::ServiceExt;
        let svc = BufferBodyLayer::new(1024).layer(echo());
        let req = Request::post("/v1/messages")
            .body(chunked(vec![
                br#"{"model":"claude-haiku","max_"#,
                br#"tokens":9,"messages":[]}"#,
            ]))
            .expect("request");
        let (bytes, meta) = svc.oneshot(req).await.expect("ok");
        assert_eq!(
            bytes.as_ref(),
            br#"{"model":"claude-haiku","max_tokens":9,"messages":[]}"#
        );
        let meta = meta.expect("meta attached");
        assert_eq!(
            (meta.model(), meta.max_tokens()),
            (Some("claude-haiku"), Some(9))
        );
    }

    /// Guards the buffered path's readiness: a `ReplayBody` request is sent
    /// at the call when the inner service said it was ready; otherwise (or
    /// for a body still to read) it waits in the response future.
    #[tokio::test]
    async fn buffered_requests_are_sent_at_the_call_when_ready() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tower::ServiceExt;
        #[derive(Clone)]
        struct Counted {
            checks: Arc<AtomicUsize>,
            calls: Arc<AtomicUsize>,
        }
        impl Service<Request<ReplayBody>> for Counted {
            type Response = ();
            type Error = Infallible;
            type Future = std::future::Ready<Result<(), Infallible>>;
            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                // Not ready at the first check.
                if self.checks.fetch_add(1, Ordering::SeqCst) == 0 {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: Request<ReplayBody>) -> Self::Future {
                self.calls.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Ok(()))
            }
        }
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = BufferBodyLayer::new(1024).layer(Counted {
            checks: Arc::default(),
            calls: Arc::clone(&calls),
        });
        let replay = || {
            Request::post("/v1/messages")
                .body(ReplayBody::from("{}"))
                .expect("req")
        };
        for (i, sent_at_call) in [(0, false), (1, true)] {
            let fut = ServiceExt::<Request<ReplayBody>>::ready(&mut svc)
                .await
                .expect("ready")
                .call(replay());
            assert_eq!(calls.load(Ordering::SeqCst), i + usize::from(sent_at_call));
            fut.await.expect("ok");
        }
        // A body still to read never goes at the call.
        /// Waits for readiness, then calls (the future is not polled).
        async fn ready_call<S: Service<R>, R>(svc: &mut S, req: R) -> S::Future
        where
            S::Error: fmt::Debug,
        {
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .expect("ready");
            svc.call(req)
        }
        let chunks = Request::post("/x").body(chunked(vec![b"{}"])).expect("req");
        let fut = ready_call(&mut svc, chunks).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        fut.await.expect("ok");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn over_limit_fails_without_buffering_past_it() {
        use tower::ServiceExt;
        let svc = BufferBodyLayer::new(10).layer(echo());
        // Exactly the limit is fine.
        let ok = Request::post("/x")
            .body(chunked(vec![b"12345", b"67890"]))
            .expect("req");
        assert!(svc.clone().oneshot(ok).await.is_ok());
        // One byte over, discovered while streaming.
        let req = Request::post("/x")
            .body(chunked(vec![b"12345", b"678901"]))
            .expect("req");
        let err = svc.clone().oneshot(req).await.expect_err("too large");
        assert_eq!(
            err.downcast_ref::<BodyTooLarge>(),
            Some(&BodyTooLarge { limit: 10 })
        );
        // Known from the size hint: refused before reading.
        let req = Request::post("/x")
            .body(String::from("01234567890"))
            .expect("req");
        let err = svc.clone().oneshot(req).await.expect_err("too large");
        assert!(err.is::<BodyTooLarge>());
        // A ReplayBody over the limit is refused too.
        let req = Request::post("/x")
            .body(ReplayBody::from("01234567890"))
            .expect("req");
        assert!(
            svc.oneshot(req)
                .await
                .expect_err("too large")
                .is::<BodyTooLarge>()
        );
    }

    #[tokio::test]
    async fn replay_body_is_not_copied_and_meta_not_reparsed() {
        use tower::ServiceExt;
        let svc = BufferBodyLayer::new(1024).layer(echo());
        let data = Bytes::from_static(br#"{"model":"a","max_tokens":1}"#);
        let mut req = Request::post("/v1/messages")
            .body(ReplayBody::new(data.clone()))
            .expect("req");
        // A pre-existing meta is kept as it is (parse once).
        let preset = Arc::new(RequestMeta::parse(
            "/v1/messages",
            &HeaderMap::new(),
            b"{\"model\":\"preset\"}",
        ));
        req.extensions_mut().insert(Arc::clone(&preset));
        let (bytes, meta) = svc.oneshot(req).await.expect("ok");
        assert_eq!(bytes.as_ptr(), data.as_ptr(), "same allocation");
        assert!(Arc::ptr_eq(&meta.expect("meta"), &preset));
    }

    #[test]
    fn key_id_is_stable_distinct_and_secret_free() {
        let mut a = HeaderMap::new();
        a.insert(
            "x-api-key",
            HeaderValue::from_static("sk-ant-api03-SECRET-A"),
        );
        let mut b = HeaderMap::new();
        b.insert(
            "x-api-key",
            HeaderValue::from_static("sk-ant-api03-SECRET-B"),
        );
        let mut bearer = HeaderMap::new();
        bearer.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-ant-api03-SECRET-A"),
        );
        let ka = KeyId::from_headers(&a).expect("key");
        assert_eq!(Some(ka), KeyId::from_headers(&a.clone()));
        assert_ne!(Some(ka), KeyId::from_headers(&b));
        assert_ne!(Some(ka), KeyId::from_headers(&bearer));
        assert_eq!(KeyId::from_headers(&HeaderMap::new()), None);
        let shown = format!("{ka:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn for_request_parses_replay_bodies_only() {
        let mut req = Request::post("/v1/messages")
            .body(ReplayBody::from(r#"{"model":"m","max_tokens":3}"#))
            .expect("req");
        let meta = RequestMeta::for_request(&mut req).expect("parsed");
        assert_eq!(meta.max_tokens(), Some(3));
        assert!(Arc::ptr_eq(&meta, RequestMeta::of(&req).expect("stored")));
        let mut other = Request::post("/v1/messages")
            .body(String::from(r#"{"model":"m"}"#))
            .expect("req");
        assert!(RequestMeta::for_request(&mut other).is_none());
    }

    #[tokio::test]
    async fn body_errors_surface() {
        use tower::ServiceExt;
        struct Broken;
        impl Body for Broken {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
                Poll::Ready(Some(Err(std::io::Error::other("reset by peer"))))
            }
        }
        let svc = BufferBodyLayer::new(1024).layer(echo());
        let err = svc
            .oneshot(Request::post("/x").body(Broken).expect("req"))
            .await
            .expect_err("body error");
        assert!(err.to_string().contains("reset by peer"));
    }
}
