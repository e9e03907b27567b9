use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Shared;
use super::store::{CacheStore, MemoryStore};
use crate::error::BoxError;
use crate::request::ReplayBody;
use crate::response::ResponseBody;

/// Caches complete responses of `S` — made by
/// [`CacheLayer`](super::CacheLayer).
pub struct Cache<S, St = MemoryStore> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S: Clone, St> Clone for Cache<S, St> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug> fmt::Debug for Cache<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("config", &self.shared)
            .finish()
    }
}

impl<S, St> Cache<S, St> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<St>>) -> Self {
        Cache { inner, shared }
    }
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
    /// Consumes this service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The request's `cache-control` directives the layer honours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    /// `no-store`: neither read nor write.
    pub(crate) no_store: bool,
    /// `no-cache`: do not answer from the cache (a fresh answer may be
    /// stored).
    pub(crate) no_cache: bool,
}

impl Directives {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut d = Directives::default();
        for value in headers.get_all(http::header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let name = directive.split('=').next().unwrap_or("").trim();
                if name.eq_ignore_ascii_case("no-store") {
                    d.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    d.no_cache = true;
                }
            }
        }
        d
    }
}

/// What the layer does with one request.
pub(crate) struct Plan {
    pub(crate) key: Option<super::CacheKey>,
    /// Whether a stored answer may be served (fresh, coalesced or stale).
    pub(crate) read: bool,
    /// How long the answer, once stored, is fresh.
    pub(crate) ttl: std::time::Duration,
}

impl<S, St> Cache<S, St>
where
    St: CacheStore,
{
    fn plan<B: 'static>(&self, req: &Request<B>) -> Plan {
        let pass = Plan {
            key: None,
            read: false,
            ttl: self.shared.ttl,
        };
        let Some(req) = (req as &dyn Any).downcast_ref::<Request<ReplayBody>>() else {
            return pass;
        };
        let directives = if req.headers().contains_key(http::header::CACHE_CONTROL) {
            Directives::of(req.headers())
        } else {
            Directives::default()
        };
        if directives.no_store {
            return pass;
        }
        let Some(key) = self.shared.policy.key(req) else {
            return pass;
        };
        if !key.is_deterministic() && !self.shared.nondeterministic {
            return pass;
        }
        let ttl = match req.extensions().get::<super::CacheTtl>() {
            Some(t) if !t.0.is_zero() => t.0.min(super::layer::MAX_DURATION),
            _ => self.shared.ttl,
        };
        Plan {
            key: Some(key),
            read: !directives.no_cache,
            ttl,
        }
    }
}

impl<S, St, B, RB> Service<Request<B>> for Cache<S, St>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    St: CacheStore,
    B: 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, St>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // A hit never touches the inner service; a miss waits for its
        // readiness in the response future.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let plan = self.plan(&req);
        // The inner service is cloned only when it will be called (not for
        // a hit), and the clone stays here: the ready one goes with the
        // request.
        let this = &mut self.inner;
        ResponseFuture::new(
            Arc::clone(&self.shared),
            || {
                let clone = this.clone();
                std::mem::replace(this, clone)
            },
            req,
            plan,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_directives() {
        let mut h = HeaderMap::new();
        assert_eq!(Directives::of(&h), Directives::default());
        h.append("cache-control", "max-age=0, No-Cache".parse().expect("hv"));
        assert_eq!(
            Directives::of(&h),
            Directives {
                no_store: false,
                no_cache: true
            }
        );
        h.append("cache-control", "no-store".parse().expect("hv"));
        assert!(Directives::of(&h).no_store);
        let mut h = HeaderMap::new();
        h.insert(
            "cache-control",
            "no-cache=\"set-cookie\"".parse().expect("hv"),
        );
        assert!(Directives::of(&h).no_cache);
        h.insert("cache-control", "no-storex, private".parse().expect("hv"));
        assert_eq!(Directives::of(&h), Directives::default());
    }
}
