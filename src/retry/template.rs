//! The copy of a request the retry layer keeps to send it again.
//!
//! Most requests are never retried, so the copy is made for the common
//! case: the URI's parts and every header name and value are packed into
//! one buffer (one allocation, a `memcpy` each), and a request is rebuilt
//! from it only when a retry is actually sent. Cloning the request instead
//! (`HeaderMap::clone`, `Uri::clone`) costs an allocation per header plus
//! the promotion of every header value's and URI part's `Bytes` to shared
//! storage — an allocation and atomic operations each, paid again when the
//! original and the copy are dropped.

use std::fmt;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Parts, PathAndQuery, Scheme};
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

use crate::request::ReplayBody;

/// Marks an absent URI part.
const NONE: u32 = u32::MAX;

/// What a retry needs to send the request again: method, URI, version,
/// headers (in order, with their sensitivity), extensions and body.
pub(crate) struct Template {
    method: Method,
    version: Version,
    extensions: Extensions,
    body: ReplayBody,
    /// Lengths of the scheme, authority and path-and-query at the start of
    /// `packed` (`NONE` when absent).
    uri: [u32; 3],
    /// How many header values follow the URI in `packed`.
    headers: usize,
    /// The URI's parts, then per header value: a sensitivity byte, the
    /// name's and the value's length (`u32`, little-endian), the name and
    /// the value.
    packed: Vec<u8>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("method", &self.method)
            .field("headers", &self.headers)
            .field("packed", &self.packed.len())
            .finish_non_exhaustive()
    }
}

fn len32(bytes: &[u8]) -> Option<u32> {
    u32::try_from(bytes.len()).ok().filter(|&n| n != NONE)
}

impl Template {
    /// Packs a copy of `req`. `None` only for a part longer than 4 GiB.
    pub(crate) fn new(req: &Request<ReplayBody>) -> Option<Self> {
        let uri = req.uri();
        let parts = [
            uri.scheme_str(),
            uri.authority().map(Authority::as_str),
            uri.path_and_query().map(PathAndQuery::as_str),
        ];
        let headers = req.headers();
        let size = parts.iter().flatten().map(|p| p.len()).sum::<usize>()
            + headers
                .iter()
                .map(|(n, v)| 9 + n.as_str().len() + v.len())
                .sum::<usize>();
        let mut packed = Vec::with_capacity(size);
        let mut lens = [NONE; 3];
        for (len, part) in lens.iter_mut().zip(parts) {
            if let Some(part) = part {
                *len = len32(part.as_bytes())?;
                packed.extend_from_slice(part.as_bytes());
            }
        }
        for (name, value) in headers {
            packed.push(u8::from(value.is_sensitive()));
            let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
            packed.extend_from_slice(&len32(name)?.to_le_bytes());
            packed.extend_from_slice(&len32(value)?.to_le_bytes());
            packed.extend_from_slice(name);
            packed.extend_from_slice(value);
        }
        Some(Template {
            method: req.method().clone(),
            version: req.version(),
            extensions: req.extensions().clone(),
            body: req.body().replay(),
            uri: lens,
            headers: headers.len(),
            packed,
        })
    }

    /// A fresh request equal to the one packed. `None` only when a header
    /// value fails validation — possible only for values made with
    /// `unsafe` unchecked constructors.
    pub(crate) fn request(&self) -> Option<Request<ReplayBody>> {
        let mut rest = self.packed.as_slice();
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        let mut uri = Parts::default();
        let [scheme, authority, path] = self.uri;
        if scheme != NONE {
            uri.scheme = Some(Scheme::try_from(take(scheme as usize)?).ok()?);
        }
        if authority != NONE {
            uri.authority = Some(Authority::try_from(take(authority as usize)?).ok()?);
        }
        if path != NONE {
            uri.path_and_query = Some(PathAndQuery::try_from(take(path as usize)?).ok()?);
        }
        let uri = Uri::from_parts(uri).ok()?;
        let mut headers = HeaderMap::with_capacity(self.headers);
        for _ in 0..self.headers {
            let sensitive = take(1)?[0] == 1;
            let name_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let value_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let name = HeaderName::from_bytes(take(name_len)?).ok()?;
            let mut value = HeaderValue::from_bytes(take(value_len)?).ok()?;
            value.set_sensitive(sensitive);
            headers.append(name, value);
        }
        let mut req = Request::new(self.body.replay());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = headers;
        *req.extensions_mut() = self.extensions.clone();
        Some(req)
    }
}

#[cfg(test)]
mod tests;
