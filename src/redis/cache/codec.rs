//! The binary form of a cache key and of a stored entry.
//!
//! Key (the exact identity an entry was stored under, compared whole on
//! every read, so isolation never rests on the Redis key's hash):
//!
//! ```text
//! u8 version (1)
//! tenant   u8 tag: 0 anonymous | 1 credentials + u128 LE (the keyed KeyId)
//!                | 2 named + u32 len + bytes
//! method   u16 len + bytes
//! path     u32 len + bytes
//! anthropic-version, anthropic-beta   u8 present (0|1) [+ u32 len + bytes]
//! flags    u8: bit 0 stream, bit 1 deterministic
//! body     u128 LE (the canonical body hash)
//! ```
//!
//! Entry (integers little-endian):
//!
//! ```text
//! b"TLRC" u8 version (1)
//! u32 key len + key                the key above
//! u64 ttl ms, u64 retain ms         fresh for ttl; Redis keeps it retain
//! u16 status
//! u32 header count, each: u16 name len + name, u32 value len + value
//! u32 chunk count, each: u32 len + bytes
//! ```
//!
//! Decoding checks every length against what is left, so a corrupt or
//! hostile value is refused (`None`) without allocating more than its own
//! size.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::cache::{CacheKey, CachedResponse, TenantId};

const KEY_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"TLRC";
const ENTRY_VERSION: u8 = 1;

/// The encoded identity of `key`.
pub(super) fn key(key: &CacheKey) -> Vec<u8> {
    let (version, beta) = key.version_headers();
    let mut out = Vec::with_capacity(64 + key.path().len());
    out.push(KEY_VERSION);
    match key.tenant() {
        TenantId::Anonymous => out.push(0),
        TenantId::Key(id) => {
            out.push(1);
            out.extend_from_slice(&id.bits().to_le_bytes());
        }
        TenantId::Named(name) => {
            out.push(2);
            put_u32_bytes(&mut out, name.as_bytes());
        }
    }
    let method = key.method().as_str().as_bytes();
    // A method is a token far shorter than 64 KiB (http limits it).
    out.extend_from_slice(&(method.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&method[..method.len().min(u16::MAX as usize)]);
    put_u32_bytes(&mut out, key.path().as_bytes());
    for h in [version, beta] {
        match h {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                put_u32_bytes(&mut out, v.as_bytes());
            }
        }
    }
    out.push(u8::from(key.is_stream()) | (u8::from(key.is_deterministic()) << 1));
    out.extend_from_slice(&key.body_hash().to_le_bytes());
    out
}

/// Lengths are written as `u32`: anything longer is cut (a path or tenant
/// of 4 GiB cannot reach here: request heads are bounded far below).
fn put_u32_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len().min(u32::MAX as usize);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&bytes[..n]);
}

/// The headers an entry keeps in Redis: all but those marked sensitive,
/// whose values never leave the process.
fn stored_headers(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    headers.iter().filter(|(_, v)| !v.is_sensitive())
}

/// The encoded size of `entry` under the encoded key `key`, computed
/// without encoding (so an oversized entry is refused before any copy).
pub(super) fn entry_len(key: &[u8], entry: &CachedResponse) -> usize {
    let headers = stored_headers(entry.headers())
        .map(|(n, v)| 2 + n.as_str().len() + 4 + v.len())
        .sum::<usize>();
    let chunks = entry.chunks().iter().map(|c| 4 + c.len()).sum::<usize>();
    MAGIC.len() + 1 + 4 + key.len() + 8 + 8 + 2 + 4 + headers + 4 + chunks
}

/// `entry` in its stored form.
pub(super) fn encode(key: &[u8], entry: &CachedResponse, retain_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry_len(key, entry));
    out.extend_from_slice(MAGIC);
    out.push(ENTRY_VERSION);
    put_u32_bytes(&mut out, key);
    out.extend_from_slice(&millis(entry.ttl()).to_le_bytes());
    out.extend_from_slice(&retain_ms.to_le_bytes());
    out.extend_from_slice(&entry.status().as_u16().to_le_bytes());
    let headers: Vec<_> = stored_headers(entry.headers()).collect();
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        let name = name.as_str().as_bytes();
        // Header names are short tokens (hyper refuses heads over 64 KiB).
        out.extend_from_slice(&(name.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(&name[..name.len().min(u16::MAX as usize)]);
        put_u32_bytes(&mut out, value.as_bytes());
    }
    out.extend_from_slice(&(entry.chunks().len() as u32).to_le_bytes());
    for chunk in entry.chunks().iter() {
        put_u32_bytes(&mut out, chunk);
    }
    out
}

/// A duration in whole milliseconds, rounded up (never 0 for a positive
/// duration: `PX 0` is an error in Redis).
pub(super) fn millis(d: std::time::Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// What a stored value holds.
pub(super) struct Decoded {
    pub(super) ttl_ms: u64,
    pub(super) retain_ms: u64,
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) chunks: Vec<Bytes>,
}

/// Why a value was not used.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Not a value of this format (corrupt, truncated, another version).
    Malformed,
    /// Stored under another key that shares its Redis key (a hash
    /// collision, or a value written by something else).
    OtherKey,
}

/// Reads a stored value, which must have been stored under `key`.
pub(super) fn decode(value: &[u8], key: &[u8]) -> Result<Decoded, Refused> {
    let mut r = Reader(value);
    if r.take(MAGIC.len())? != MAGIC || r.u8()? != ENTRY_VERSION {
        return Err(Refused::Malformed);
    }
    let stored_key = r.bytes_u32()?;
    if stored_key != key {
        return Err(Refused::OtherKey);
    }
    let ttl_ms = r.u64()?;
    let retain_ms = r.u64()?;
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| Refused::Malformed)?;
    let count = r.u32()? as usize;
    // Each header takes at least 6 bytes: no count can reserve more than
    // the value's own size.
    let mut headers = HeaderMap::with_capacity(count.min(r.0.len() / 6));
    for _ in 0..count {
        let n = r.u16()? as usize;
        let name = HeaderName::from_bytes(r.take(n)?).map_err(|_| Refused::Malformed)?;
        let value = HeaderValue::from_bytes(r.bytes_u32()?).map_err(|_| Refused::Malformed)?;
        headers.append(name, value);
    }
    let count = r.u32()? as usize;
    let mut chunks = Vec::with_capacity(count.min(r.0.len() / 4));
    for _ in 0..count {
        chunks.push(Bytes::copy_from_slice(r.bytes_u32()?));
    }
    if !r.0.is_empty() {
        return Err(Refused::Malformed);
    }
    Ok(Decoded {
        ttl_ms,
        retain_ms,
        status,
        headers,
        chunks,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refused> {
        if n > self.0.len() {
            return Err(Refused::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Refused> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, Refused> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Refused> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, Refused> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, Refused> {
        self.array().map(u64::from_le_bytes)
    }
    fn bytes_u32(&mut self) -> Result<&'a [u8], Refused> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use http::Method;
    use tokio::time::Instant;

    use super::*;

    fn sample_key(tenant: TenantId, stream: bool) -> CacheKey {
        CacheKey::new(
            tenant,
            Method::POST,
            "/v1/messages",
            Some(HeaderValue::from_static("2023-06-01")),
            None,
            stream,
            true,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        )
    }

    fn sample_entry() -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-many", HeaderValue::from_static("a"));
        headers.append("x-many", HeaderValue::from_static("b"));
        let mut secret = HeaderValue::from_static("s3cret-cookie");
        secret.set_sensitive(true);
        headers.insert("set-cookie", secret);
        CachedResponse::new(
            StatusCode::OK,
            headers,
            Arc::from(vec![
                Bytes::from_static(b"{\"a\":"),
                Bytes::from_static(b"1}"),
            ]),
            Instant::now(),
            Duration::from_millis(1500),
        )
    }

    #[test]
    fn an_entry_reads_back_as_it_was_stored_less_sensitive_headers() {
        let key = key(&sample_key(TenantId::Named(Arc::from("acme")), false));
        let entry = sample_entry();
        let value = encode(&key, &entry, 2500);
        assert_eq!(value.len(), entry_len(&key, &entry));
        let d = decode(&value, &key).expect("decodes");
        assert_eq!(
            (d.ttl_ms, d.retain_ms, d.status),
            (1500, 2500, StatusCode::OK)
        );
        let many: Vec<_> = d.headers.get_all("x-many").iter().collect();
        assert_eq!(many, ["a", "b"]);
        assert_eq!(d.headers["content-type"], "application/json");
        assert!(d.headers.get("set-cookie").is_none());
        assert!(!value.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(d.chunks, [&b"{\"a\":"[..], &b"1}"[..]]);
    }

    #[test]
    fn keys_differ_in_every_component_and_a_value_answers_only_its_own() {
        let named = |n: &str| TenantId::Named(Arc::from(n));
        let keys = [
            key(&sample_key(named("a"), false)),
            key(&sample_key(named("b"), false)),
            key(&sample_key(named("a"), true)),
            key(&sample_key(TenantId::Anonymous, false)),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        let value = encode(&keys[0], &sample_entry(), 10);
        assert!(decode(&value, &keys[0]).is_ok());
        for other in &keys[1..] {
            assert_eq!(decode(&value, other).err(), Some(Refused::OtherKey));
        }
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused_not_a_panic() {
        let key = key(&sample_key(TenantId::Anonymous, false));
        let value = encode(&key, &sample_entry(), 10);
        for n in 0..value.len() {
            assert!(decode(&value[..n], &key).is_err(), "prefix {n}");
        }
        let mut longer = value.clone();
        longer.push(0);
        assert_eq!(decode(&longer, &key).err(), Some(Refused::Malformed));
        // A huge declared count with nothing behind it allocates nothing
        // big and is refused.
        let mut lying = value[..MAGIC.len() + 1 + 4 + key.len() + 18].to_vec();
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&lying, &key).err(), Some(Refused::Malformed));
    }

    #[test]
    fn millis_round_up() {
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(7)), 7);
        assert_eq!(millis(Duration::ZERO), 0);
    }
}
