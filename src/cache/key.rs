//! Cache keys: who asks (the tenant, compared exactly), what they ask
//! (method, path, API version headers, stream or not) and a 128-bit hash of
//! the canonical JSON body.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, Request};
use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use crate::request::{KeyId, ReplayBody};

/// A caller-chosen tenant, as a request extension: requests with different
/// tenants never share cache entries.
///
/// Without it the tenant is the identity of the request's credentials
/// ([`KeyId`]: a keyed 128-bit hash of every credential header and `key=`
/// query parameter), so two API keys never see each other's answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant(pub Arc<str>);

impl Tenant {
    /// A tenant named `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Tenant(name.into())
    }
}

/// Whose entry a key names. Compared exactly (never through a hash), so
/// isolation between tenants never rests on collision resistance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TenantId {
    /// The credentials' identity: the whole keyed 128-bit [`KeyId`]
    /// (compared whole; its `Debug` shows only its short label, which
    /// names no entry). The key itself is never held.
    Key(KeyId),
    /// A tenant named by the caller ([`Tenant`] extension or a closure).
    Named(Arc<str>),
    /// No API key and no tenant: requests without credentials share one
    /// namespace.
    Anonymous,
}

/// The identity of one cached response.
///
/// Every component takes part in `Eq`: the tenant, method, path (with
/// query), the `anthropic-version` and `anthropic-beta` header values,
/// whether the request streams, whether it is deterministic, and the
/// 128-bit xxh3 hash of the canonical body. Its `Debug` output shows the
/// tenant as a [`KeyId`] label, never an API key; the default policy keeps
/// the path without the values of `key=` query parameters (the tenant
/// covers them).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    tenant: TenantId,
    method: Method,
    path: Arc<str>,
    anthropic_version: Option<HeaderValue>,
    anthropic_beta: Option<HeaderValue>,
    stream: bool,
    deterministic: bool,
    body: u128,
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheKey")
            .field("tenant", &self.tenant)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("anthropic_version", &self.anthropic_version)
            .field("anthropic_beta", &self.anthropic_beta)
            .field("stream", &self.stream)
            .field("deterministic", &self.deterministic)
            .field("body", &format_args!("{:032x}", self.body))
            .finish()
    }
}

impl CacheKey {
    /// A key from its components: what a custom [`KeyPolicy`] builds.
    /// `body` is a hash of the body (see [`canonical_hash`]); `stream` and
    /// `deterministic` are what the layer decides cacheability by.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tenant: TenantId,
        method: Method,
        path: impl Into<Arc<str>>,
        anthropic_version: Option<HeaderValue>,
        anthropic_beta: Option<HeaderValue>,
        stream: bool,
        deterministic: bool,
        body: u128,
    ) -> Self {
        CacheKey {
            tenant,
            method,
            path: path.into(),
            anthropic_version,
            anthropic_beta,
            stream,
            deterministic,
            body,
        }
    }
    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }
    /// The request path and query.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// Whether the request asks for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }
    /// Whether the request is deterministic (a temperature of 0).
    pub fn is_deterministic(&self) -> bool {
        self.deterministic
    }
    /// The body hash.
    pub fn body_hash(&self) -> u128 {
        self.body
    }
    /// The `anthropic-version` and `anthropic-beta` values (a shared
    /// store encodes every component).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn version_headers(&self) -> (Option<&HeaderValue>, Option<&HeaderValue>) {
        (
            self.anthropic_version.as_ref(),
            self.anthropic_beta.as_ref(),
        )
    }

    /// Bytes the key owns on the heap (path, header values, a named
    /// tenant), with `per_alloc` for each allocation: part of its weight.
    pub(crate) fn heap_bytes(&self, per_alloc: usize) -> usize {
        let tenant = match &self.tenant {
            TenantId::Named(n) => n.len() + 16 + per_alloc,
            _ => 0,
        };
        let header = |h: &Option<HeaderValue>| h.as_ref().map_or(0, |v| v.len() + per_alloc);
        tenant
            + self.path.len()
            + 16
            + per_alloc
            + header(&self.anthropic_version)
            + header(&self.anthropic_beta)
    }
}

/// Decides the cache key of a request, or that it has none (and passes
/// through uncached).
///
/// Implemented by [`DefaultKeyPolicy`] and by any
/// `Fn(&Request<ReplayBody>) -> Option<CacheKey> + Send + Sync + 'static`
/// closure.
pub trait KeyPolicy: Send + Sync + 'static {
    /// The key of this request; `None` bypasses the cache.
    fn key(&self, req: &Request<ReplayBody>) -> Option<CacheKey>;
}

impl<F> KeyPolicy for F
where
    F: Fn(&Request<ReplayBody>) -> Option<CacheKey> + Send + Sync + 'static,
{
    fn key(&self, req: &Request<ReplayBody>) -> Option<CacheKey> {
        self(req)
    }
}

// Looked up as names, not strings: a string is parsed on every lookup.
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

type TenantFn = dyn Fn(&Request<ReplayBody>) -> Option<Arc<str>> + Send + Sync;

/// The alias index entry: the raw body's hash with every other component.
#[derive(Clone, PartialEq, Eq, Hash)]
struct AliasKey {
    tenant: TenantId,
    method: Method,
    path: Arc<str>,
    anthropic_version: Option<HeaderValue>,
    anthropic_beta: Option<HeaderValue>,
    raw: u128,
}

/// The borrowed form of [`AliasKey`], so a lookup allocates nothing.
struct AliasRef<'a> {
    tenant: &'a TenantId,
    method: &'a Method,
    path: &'a str,
    anthropic_version: Option<&'a HeaderValue>,
    anthropic_beta: Option<&'a HeaderValue>,
    raw: u128,
}

impl Hash for AliasRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must match the derived `Hash` of `AliasKey` field by field.
        self.tenant.hash(state);
        self.method.hash(state);
        self.path.hash(state);
        self.anthropic_version.hash(state);
        self.anthropic_beta.hash(state);
        self.raw.hash(state);
    }
}

impl quick_cache::Equivalent<AliasKey> for AliasRef<'_> {
    fn equivalent(&self, key: &AliasKey) -> bool {
        *self.tenant == key.tenant
            && *self.method == key.method
            && *self.path == *key.path
            && self.anthropic_version == key.anthropic_version.as_ref()
            && self.anthropic_beta == key.anthropic_beta.as_ref()
            && self.raw == key.raw
    }
}

/// The default key: the tenant ([`Tenant`] extension, else the configured
/// closure, else the API key identity), method, path, `anthropic-version`,
/// `anthropic-beta`, stream flag, and the canonical body hash.
///
/// Canonicalizing a body costs more than a cache hit should, so a bounded
/// alias index maps the xxh3 of the *raw* body bytes (with every other
/// component) to the canonical key once seen: byte-identical repeats — the
/// common case — skip canonicalization. Bodies that are not JSON objects,
/// or larger than the body limit, have no key.
pub struct DefaultKeyPolicy {
    tenant: Option<Box<TenantFn>>,
    max_body: usize,
    aliases: quick_cache::sync::Cache<AliasKey, CacheKey>,
}

impl fmt::Debug for DefaultKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultKeyPolicy")
            .field("tenant_fn", &self.tenant.is_some())
            .field("max_body", &self.max_body)
            .field("aliases", &self.aliases.len())
            .finish()
    }
}

impl Default for DefaultKeyPolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// The default largest body keyed: 2 MiB.
pub const DEFAULT_MAX_KEY_BODY: usize = 2 * 1024 * 1024;
/// The longest components (path and query, version headers, a named
/// tenant; bytes) of a request whose alias is remembered: an alias then
/// costs at most about this plus 300 bytes.
pub(crate) const MAX_ALIAS_BYTES: usize = 1024;
/// The default number of raw-body aliases remembered.
pub const DEFAULT_ALIASES: usize = 16 * 1024;

impl DefaultKeyPolicy {
    /// Keys bodies up to [`DEFAULT_MAX_KEY_BODY`], with
    /// [`DEFAULT_ALIASES`] raw-body aliases.
    pub fn new() -> Self {
        DefaultKeyPolicy {
            tenant: None,
            max_body: DEFAULT_MAX_KEY_BODY,
            aliases: quick_cache::sync::Cache::new(DEFAULT_ALIASES),
        }
    }

    /// Names the tenant of requests without a [`Tenant`] extension (e.g.
    /// from an authenticated user header); `None` falls back to the API
    /// key identity.
    #[must_use]
    pub fn with_tenant(
        mut self,
        f: impl Fn(&Request<ReplayBody>) -> Option<Arc<str>> + Send + Sync + 'static,
    ) -> Self {
        self.tenant = Some(Box::new(f));
        self
    }

    /// The largest body that is keyed (larger ones pass through uncached).
    #[must_use]
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// How many raw-body aliases are remembered (at least 1).
    #[must_use]
    pub fn with_aliases(mut self, entries: usize) -> Self {
        self.aliases = quick_cache::sync::Cache::new(entries.max(1));
        self
    }

    fn tenant_of(&self, req: &Request<ReplayBody>) -> TenantId {
        if let Some(t) = req.extensions().get::<Tenant>() {
            return TenantId::Named(Arc::clone(&t.0));
        }
        if let Some(name) = self.tenant.as_ref().and_then(|f| f(req)) {
            return TenantId::Named(name);
        }
        KeyId::of(req).map_or(TenantId::Anonymous, TenantId::Key)
    }
}

impl KeyPolicy for DefaultKeyPolicy {
    fn key(&self, req: &Request<ReplayBody>) -> Option<CacheKey> {
        let body = req.body().as_bytes();
        if body.len() > self.max_body {
            return None;
        }
        let tenant = self.tenant_of(req);
        // A Gemini key in the query is in the tenant; kept in the path it
        // would be shown wherever the key is.
        let path = crate::request::without_query_keys(
            req.uri()
                .path_and_query()
                .map_or_else(|| req.uri().path(), |p| p.as_str()),
        );
        let path = path.as_ref();
        let headers = req.headers();
        let alias = AliasRef {
            tenant: &tenant,
            method: req.method(),
            path,
            anthropic_version: headers.get(&ANTHROPIC_VERSION),
            anthropic_beta: headers.get(&ANTHROPIC_BETA),
            raw: xxh3_128(body),
        };
        if let Some(key) = self.aliases.get(&alias) {
            return Some(key);
        }
        let canon = canonical(body)?;
        let key = CacheKey {
            tenant: tenant.clone(),
            method: req.method().clone(),
            path: Arc::from(path),
            anthropic_version: alias.anthropic_version.cloned(),
            anthropic_beta: alias.anthropic_beta.cloned(),
            stream: canon.stream,
            deterministic: canon.temperature.is_some_and(|t| t <= 0.0),
            body: canon.hash,
        };
        // Aliases are bounded in number; their size too: a request whose
        // other components are long is canonicalized each time instead.
        if key.heap_bytes(0) > MAX_ALIAS_BYTES {
            return Some(key);
        }
        let raw = alias.raw;
        self.aliases.insert(
            AliasKey {
                tenant,
                method: key.method.clone(),
                path: Arc::clone(&key.path),
                anthropic_version: key.anthropic_version.clone(),
                anthropic_beta: key.anthropic_beta.clone(),
                raw,
            },
            key.clone(),
        );
        Some(key)
    }
}

/// What the canonical walk learns about a body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Canonical {
    pub(crate) hash: u128,
    pub(crate) stream: bool,
    pub(crate) temperature: Option<f64>,
}

/// The 128-bit hash of a JSON object body in canonical form: object key
/// order and insignificant whitespace do not matter, string escapes are
/// resolved, arrays keep their order, numbers count as parsed (`1` and
/// `1.0` differ). `None` when the body is not a JSON object.
///
/// Computed in one streaming pass without building a value: object
/// entries are hashed separately and combined commutatively.
pub fn canonical_hash(body: &[u8]) -> Option<u128> {
    canonical(body).map(|c| c.hash)
}

pub(crate) fn canonical(body: &[u8]) -> Option<Canonical> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = (&mut de).deserialize_map(TopVisitor).ok()?;
    de.end().ok()?;
    Some(top)
}

/// A hashed value, and what a top-level field needs to know of it.
struct Hashed {
    hash: u128,
    scalar: Scalar,
}

#[derive(Clone, Copy)]
enum Scalar {
    Bool(bool),
    Num(f64),
    Other,
}

const TAG_NULL: u8 = 0;
const TAG_FALSE: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_U64: u8 = 3;
const TAG_I64: u8 = 4;
const TAG_F64: u8 = 5;
const TAG_STR: u8 = 6;
const TAG_ARRAY: u8 = 7;
const TAG_OBJECT: u8 = 8;
const TAG_ENTRY: u8 = 9;

fn tagged(tag: u8, bytes: &[u8]) -> u128 {
    if bytes.len() <= 31 {
        let mut buf = [0u8; 32];
        buf[0] = tag;
        buf[1..=bytes.len()].copy_from_slice(bytes);
        // The length is implied by the hash input's length.
        xxh3_128(&buf[..=bytes.len()])
    } else {
        let mut h = Xxh3::new();
        h.update(&[tag]);
        h.update(bytes);
        h.digest128()
    }
}

fn scalar(tag: u8, bytes: &[u8], scalar: Scalar) -> Hashed {
    Hashed {
        hash: tagged(tag, bytes),
        scalar,
    }
}

struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Hashed;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Hashed, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Hashed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Hashed, E> {
        Ok(scalar(TAG_NULL, &[], Scalar::Other))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Hashed, E> {
        let tag = if v { TAG_TRUE } else { TAG_FALSE };
        Ok(scalar(tag, &[], Scalar::Bool(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Hashed, E> {
        Ok(scalar(TAG_U64, &v.to_le_bytes(), Scalar::Num(v as f64)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Hashed, E> {
        Ok(scalar(TAG_I64, &v.to_le_bytes(), Scalar::Num(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Hashed, E> {
        Ok(scalar(TAG_F64, &v.to_bits().to_le_bytes(), Scalar::Num(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Hashed, E> {
        Ok(scalar(TAG_STR, v.as_bytes(), Scalar::Other))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Hashed, A::Error> {
        let mut h = Xxh3::new();
        h.update(&[TAG_ARRAY]);
        while let Some(v) = seq.next_element_seed(ValueSeed)? {
            h.update(&v.hash.to_le_bytes());
        }
        Ok(Hashed {
            hash: h.digest128(),
            scalar: Scalar::Other,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Hashed, A::Error> {
        hash_object(map, |_, _| {})
    }
}

/// Hashes an object: each entry as `xxh3(key hash, value hash)`, the
/// entries summed (mod 2¹²⁸, so their order does not matter), then the
/// count and the sum hashed together.
fn hash_object<'de, A: MapAccess<'de>>(
    mut map: A,
    mut each: impl FnMut(&str, &Hashed),
) -> Result<Hashed, A::Error> {
    let mut sum = 0u128;
    let mut count = 0u64;
    while let Some(key) = map.next_key::<KeyStr<'de>>()? {
        let value = map.next_value_seed(ValueSeed)?;
        each(key.as_str(), &value);
        let mut entry = [0u8; 33];
        entry[0] = TAG_ENTRY;
        entry[1..17].copy_from_slice(&tagged(TAG_STR, key.as_str().as_bytes()).to_le_bytes());
        entry[17..].copy_from_slice(&value.hash.to_le_bytes());
        sum = sum.wrapping_add(xxh3_128(&entry));
        count += 1;
    }
    let mut obj = [0u8; 25];
    obj[0] = TAG_OBJECT;
    obj[1..9].copy_from_slice(&count.to_le_bytes());
    obj[9..].copy_from_slice(&sum.to_le_bytes());
    Ok(Hashed {
        hash: xxh3_128(&obj),
        scalar: Scalar::Other,
    })
}

/// An object key, borrowed when it has no escapes.
enum KeyStr<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl KeyStr<'_> {
    fn as_str(&self) -> &str {
        match self {
            KeyStr::Borrowed(s) => s,
            KeyStr::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for KeyStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Canonical;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Canonical, A::Error> {
        let mut stream = false;
        let mut temperature = None;
        let hashed = hash_object(map, |key, value| match (key, value.scalar) {
            ("stream", Scalar::Bool(b)) => stream = b,
            ("temperature", Scalar::Num(t)) if t.is_finite() => temperature = Some(t),
            _ => {}
        })?;
        Ok(Canonical {
            hash: hashed.hash,
            stream,
            temperature,
        })
    }
}

#[cfg(test)]
mod tests;
