//! [`KeyId`]: which API key a request carries, without the secret.

use std::fmt;

use http::HeaderMap;

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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
}
