//! [`KeyId`]: whose credentials a request carries, without the secret, and
//! [`KeyIdentity`], the process-wide secret and credential names it is
//! computed with.
//!
//! The rate limiter keys its groups and the cache its tenants by
//! [`KeyId`], so two API keys must never share one, and nobody may build
//! a request with someone else's. Hence a *keyed* 128-bit hash
//! (SipHash-2-4-128, a pseudo-random function) under a secret of this
//! process, over every credential a request carries: without the secret,
//! neither a `KeyId` nor what is shown of it helps to make another request
//! with the same id. What logs and stats show is a 32-bit *label* derived
//! from the id under a second key: one-way, and far too short to name a
//! cache entry.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, Request};

use super::sip::Sip128;
use crate::error::InvalidConfig;

/// The identity of the credentials a request carries, for keying limiter
/// state and cache tenants without holding the secret.
///
/// A keyed 128-bit hash (SipHash-2-4-128 under the [`KeyIdentity`]'s
/// secret) of every credential header — `x-api-key` (Anthropic),
/// `authorization` (OpenAI's `Bearer`, Azure's Entra token), `api-key`
/// (Azure OpenAI), `x-goog-api-key` (Gemini) and those added with
/// [`KeyIdentity::header`] — and every value of each, in order, then of
/// every `key=` query parameter (Gemini) when the request is given
/// ([`KeyId::of`]). Each value is hashed with its source and length, so
/// no two credential sets share an input.
///
/// `Debug` and `Display` show only the [`label`](KeyId::label): 8 hex
/// digits, derived under another key. Equal ids have equal labels; the
/// converse does not hold, and a label does not lead back to the id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(u128);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({:08x})", self.label())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.label())
    }
}

impl KeyId {
    /// The identity of the credentials in these headers, if any (the
    /// `key=` query parameter is not seen: see [`KeyId::of`]).
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        installed().key_id(headers, None)
    }

    /// The identity of the credentials of this request: its credential
    /// headers, then its `key=` query parameters.
    pub fn of<B>(req: &Request<B>) -> Option<Self> {
        installed().key_id(req.headers(), req.uri().query())
    }

    /// What logs and stats show of the identity: 32 bits of a second keyed
    /// hash of it.
    pub fn label(self) -> u32 {
        installed().label(self)
    }

    /// 64 bits of the identity, for tables that hash it again (the rate
    /// limiter's groups); never shown.
    #[cfg_attr(not(feature = "rate"), allow(dead_code))]
    pub(crate) fn word(self) -> u64 {
        (self.0 as u64) ^ ((self.0 >> 64) as u64)
    }
}

/// The credential headers every [`KeyIdentity`] reads, in this order.
pub static CREDENTIAL_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("x-api-key"),
    AUTHORIZATION,
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-goog-api-key"),
];

/// Hashed before a `key=` query parameter's value (header values carry
/// their header's index).
const QUERY_SOURCE: u64 = u64::MAX;

/// Credential values a request may carry before [`KeyIdentity::key_id`]
/// stops collecting them on the stack and looks them up instead.
const FOUND: usize = 8;

/// The secret and the credential header names [`KeyId`]s are computed
/// with: one per process, [installed](KeyIdentity::install) before the
/// first request, or else drawn at random on first use.
///
/// The default secret comes from the operating system (through std's
/// `RandomState`, 128 bits of entropy), so ids differ from one process to
/// the next. Processes that must agree (several replicas sharing one
/// cache store, or comparing labels across logs) install one secret given
/// to all of them with [`KeyIdentity::with_secret`].
///
/// ```
/// use tower_llm_resilience::request::KeyIdentity;
/// # fn secret_from_the_vault() -> [u8; 32] { [7; 32] }
/// KeyIdentity::with_secret(secret_from_the_vault())
///     .header(http::HeaderName::from_static("x-gateway-key"))
///     .install()
///     .expect("installed before the first request");
/// ```
#[derive(Clone)]
pub struct KeyIdentity {
    /// The id's SipHash key, then the label's.
    id_key: [u64; 2],
    label_key: [u64; 2],
    extra: Vec<HeaderName>,
}

impl fmt::Debug for KeyIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyIdentity")
            .field("extra_headers", &self.extra)
            .finish_non_exhaustive()
    }
}

impl Default for KeyIdentity {
    fn default() -> Self {
        Self::new()
    }
}

static INSTALLED: OnceLock<KeyIdentity> = OnceLock::new();

fn installed() -> &'static KeyIdentity {
    INSTALLED.get_or_init(KeyIdentity::new)
}

impl KeyIdentity {
    /// A random secret, from the operating system, and the built-in
    /// credential headers.
    pub fn new() -> Self {
        use std::hash::BuildHasher;
        // One `RandomState` is a SipHash key drawn from the OS; hashing
        // four distinct words under it derives both keys from it.
        let state = std::hash::RandomState::new();
        let w: [u64; 4] = std::array::from_fn(|i| state.hash_one(i as u64));
        KeyIdentity {
            id_key: [w[0], w[1]],
            label_key: [w[2], w[3]],
            extra: Vec::new(),
        }
    }

    /// The secret given — 32 random bytes, the same in every process that
    /// must agree on ids — and the built-in credential headers. Its first
    /// half keys the ids, its second half the labels.
    pub fn with_secret(secret: [u8; 32]) -> Self {
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&secret[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        KeyIdentity {
            id_key: [word(0), word(1)],
            label_key: [word(2), word(3)],
            extra: Vec::new(),
        }
    }

    /// Reads `name` as a credential header too (after the built-in ones, in
    /// the order added); a name already read is not added twice.
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Self {
        if !CREDENTIAL_HEADERS.contains(&name) && !self.extra.contains(&name) {
            self.extra.push(name);
        }
        self
    }

    /// Makes this the identity of the process. Only once, and before the
    /// first [`KeyId`] is computed (which installs the default): ids made
    /// under two identities would not be comparable.
    pub fn install(self) -> Result<(), InvalidConfig> {
        INSTALLED.set(self).map_err(|_| {
            InvalidConfig::new(
                "key_identity",
                "already in use: install it once, before the first request",
            )
        })
    }

    /// The header names read as credentials: the built-in ones, then those
    /// added.
    pub fn headers(&self) -> impl Iterator<Item = &HeaderName> {
        CREDENTIAL_HEADERS.iter().chain(&self.extra)
    }

    pub(crate) fn key_id(&self, headers: &HeaderMap, query: Option<&str>) -> Option<KeyId> {
        let mut h = Sip128::new(self.id_key);
        let mut any = false;
        let mut write = |source: u64, bytes: &[u8]| {
            any = true;
            h.write_u64(source);
            h.write_u64(bytes.len() as u64);
            h.write(bytes);
        };
        // Every value of every credential header, by source, each header's
        // values in order. Found in one pass over the headers (comparing
        // names, not hashing them: a request carries a few headers, and
        // this runs for the cache and the limiter of every request);
        // sorted by source, stably (a header's values come together, in
        // order). More credentials than the buffer holds: looked up.
        let mut found: [(usize, &[u8]); FOUND] = [(0, &[]); FOUND];
        let mut n = 0;
        for (name, value) in headers {
            let Some(source) = self.source(name) else {
                continue;
            };
            if n == FOUND {
                n = usize::MAX;
                break;
            }
            found[n] = (source, value.as_bytes());
            n += 1;
        }
        if n == usize::MAX {
            for (source, name) in self.headers().enumerate() {
                for value in headers.get_all(name) {
                    write(source as u64, value.as_bytes());
                }
            }
        } else {
            let found = &mut found[..n];
            found.sort_by_key(|&(source, _)| source);
            for &(source, bytes) in found.iter() {
                write(source as u64, bytes);
            }
        }
        for value in query.into_iter().flat_map(query_keys) {
            write(QUERY_SOURCE, value.as_bytes());
        }
        any.then(|| KeyId(h.finish()))
    }

    /// Which credential header `name` is (its place in [`headers`](Self::headers)).
    fn source(&self, name: &HeaderName) -> Option<usize> {
        self.headers().position(|h| h == name)
    }

    fn label(&self, id: KeyId) -> u32 {
        let mut h = Sip128::new(self.label_key);
        h.write(&id.0.to_le_bytes());
        h.finish() as u32
    }

    fn mark_sensitive(&self, headers: &mut HeaderMap) {
        // One pass, every value (repeated headers too), no name hashed.
        for (name, value) in headers.iter_mut() {
            if self.source(name).is_some() {
                value.set_sensitive(true);
            }
        }
    }
}

/// Marks every value of every credential header sensitive, so that
/// `http`'s `Debug` (and HTTP/2's HPACK, which then never indexes it)
/// treats it as a secret.
pub(crate) fn mark_sensitive(headers: &mut HeaderMap) {
    installed().mark_sensitive(headers);
}

/// The values of the `key` parameters of a query (raw, as sent).
fn query_keys(query: &str) -> impl Iterator<Item = &str> {
    query
        .split('&')
        .filter_map(|pair| match pair.split_once('=') {
            Some(("key", value)) => Some(value),
            None if pair == "key" => Some(""),
            _ => None,
        })
}

/// `path_and_query` with the values of its `key` query parameters removed
/// (`key=SECRET` becomes `key=`): what may be kept and shown of a request's
/// target once [`KeyId::of`] has taken those values in.
#[cfg_attr(not(feature = "cache"), allow(dead_code))]
pub(crate) fn without_query_keys(path_and_query: &str) -> Cow<'_, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return Cow::Borrowed(path_and_query);
    };
    if query_keys(query).all(str::is_empty) {
        return Cow::Borrowed(path_and_query);
    }
    let mut out = String::with_capacity(path_and_query.len());
    out.push_str(path);
    for (i, pair) in query.split('&').enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        match pair.split_once('=') {
            Some(("key", _)) => out.push_str("key="),
            _ => out.push_str(pair),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    /// The id as the rule states it, by one lookup per credential header.
    fn by_lookup(id: &KeyIdentity, headers: &HeaderMap) -> Option<KeyId> {
        let mut h = Sip128::new(id.id_key);
        let mut any = false;
        for (source, name) in id.headers().enumerate() {
            for value in headers.get_all(name) {
                any = true;
                h.write_u64(source as u64);
                h.write_u64(value.as_bytes().len() as u64);
                h.write(value.as_bytes());
            }
        }
        any.then(|| KeyId(h.finish()))
    }

    proptest! {
        /// The one-pass id is the lookup's, whatever the headers' order,
        /// repeats and number (past the stack buffer too); and every value
        /// of every credential header is marked sensitive, nothing else.
        #[test]
        fn one_pass_id_and_marking_agree_with_lookups(
            pairs in proptest::collection::vec((0usize..7, 0u8..4), 0..14),
        ) {
            let names = ["x-api-key", "authorization", "api-key", "x-goog-api-key",
                "x-extra-key", "content-type", "anthropic-version"];
            let id = KeyIdentity::with_secret([9; 32]).header(HeaderName::from_static("x-extra-key"));
            let mut h = HeaderMap::new();
            for (name, value) in &pairs {
                h.append(names[*name], HeaderValue::from_str(&format!("v{value}")).expect("value"));
            }
            prop_assert_eq!(id.key_id(&h, None), by_lookup(&id, &h));
            id.mark_sensitive(&mut h);
            for (name, value) in &h {
                prop_assert_eq!(value.is_sensitive(), id.source(name).is_some(), "{}", name);
            }
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn key_id_is_stable_distinct_and_secret_free() {
        let a = headers(&[("x-api-key", "sk-ant-api03-SECRET-A")]);
        let b = headers(&[("x-api-key", "sk-ant-api03-SECRET-B")]);
        let bearer = headers(&[("authorization", "Bearer sk-ant-api03-SECRET-A")]);
        let ka = KeyId::from_headers(&a).expect("key");
        assert_eq!(Some(ka), KeyId::from_headers(&a.clone()));
        assert_ne!(Some(ka), KeyId::from_headers(&b));
        assert_ne!(Some(ka), KeyId::from_headers(&bearer));
        assert_eq!(KeyId::from_headers(&HeaderMap::new()), None);
        let shown = format!("{ka:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn same_secret_same_ids_and_labels_other_secret_others() {
        let h = headers(&[("x-api-key", "sk-1"), ("api-key", "az-2")]);
        let one = KeyIdentity::with_secret([1; 32]);
        let again = KeyIdentity::with_secret([1; 32]);
        let mut other = [1; 32];
        other[0] = 2;
        let other = KeyIdentity::with_secret(other);
        let id = one.key_id(&h, None).expect("id");
        assert_eq!(again.key_id(&h, None), Some(id));
        assert_eq!(again.label(id), one.label(id));
        assert_ne!(other.key_id(&h, None), Some(id));
        // Random identities differ.
        assert_ne!(
            KeyIdentity::new().key_id(&h, None),
            KeyIdentity::new().key_id(&h, None)
        );
    }

    /// The label is keyed apart from the id: a new label key changes every
    /// label and no id; and it is not a piece of the id.
    #[test]
    fn the_label_is_a_separate_keyed_hash_of_the_id() {
        let h = headers(&[("x-api-key", "sk-1")]);
        let mut secret = [9; 32];
        let a = KeyIdentity::with_secret(secret);
        secret[31] = 0;
        let b = KeyIdentity::with_secret(secret);
        let id = a.key_id(&h, None).expect("id");
        assert_eq!(b.key_id(&h, None), Some(id));
        assert_ne!(a.label(id), b.label(id));
        let words = id.0.to_le_bytes();
        assert!(
            !words
                .windows(4)
                .any(|w| w == a.label(id).to_le_bytes() || w == a.label(id).to_be_bytes())
        );
    }

    #[test]
    fn added_headers_are_credentials() {
        let name = HeaderName::from_static("x-gateway-key");
        let id = KeyIdentity::with_secret([3; 32]).header(name.clone());
        let plain = KeyIdentity::with_secret([3; 32]);
        let a = headers(&[("x-gateway-key", "g-1")]);
        let b = headers(&[("x-gateway-key", "g-2")]);
        assert_eq!(plain.key_id(&a, None), None);
        assert!(id.key_id(&a, None).is_some());
        assert_ne!(id.key_id(&a, None), id.key_id(&b, None));
        // Not added twice, nor a built-in one again.
        let twice = id.clone().header(name).header(AUTHORIZATION);
        assert_eq!(twice.headers().count(), CREDENTIAL_HEADERS.len() + 1);
        let mut marked = a.clone();
        id.mark_sensitive(&mut marked);
        assert!(marked["x-gateway-key"].is_sensitive());
    }

    #[test]
    fn query_keys_are_found_and_removed() {
        let all: Vec<&str> = query_keys("alt=sse&key=k1&keys=x&key&key=k2&xkey=y").collect();
        assert_eq!(all, ["k1", "", "k2"]);
        assert_eq!(
            without_query_keys("/v1/m:generate?alt=sse&key=SECRET&key=TWO"),
            "/v1/m:generate?alt=sse&key=&key="
        );
        assert!(matches!(
            without_query_keys("/v1/m?alt=sse&key="),
            Cow::Borrowed(_)
        ));
        assert!(matches!(without_query_keys("/v1/m"), Cow::Borrowed(_)));
    }

    #[test]
    fn installing_after_first_use_is_refused() {
        let _ = KeyId::from_headers(&headers(&[("x-api-key", "k")]));
        let err = KeyIdentity::new().install().expect_err("already in use");
        assert_eq!(err.field, "key_identity");
    }
}
