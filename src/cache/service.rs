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
use crate::request::{ReplayBody, RequestMeta};
use crate::response::ResponseBody;
use crate::util::Inner;

/// Caches complete responses of `S` — made by
/// [`CacheLayer`](super::CacheLayer).
pub struct Cache<S, St = MemoryStore> {
    inner: Inner<S>,
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

impl<S> Cache<S, MemoryStore> {
    /// `inner` behind a cache of its own with the default settings
    /// ([`CacheLayer::new`](super::CacheLayer::new)).
    pub fn new(inner: S) -> Self {
        tower_layer::Layer::layer(&super::CacheLayer::new(), inner)
    }
    /// The default cache layer: the same as
    /// [`CacheLayer::new`](super::CacheLayer::new).
    pub fn layer() -> super::CacheLayer {
        super::CacheLayer::new()
    }
}

impl<S, St> Cache<S, St> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<St>>) -> Self {
        Cache {
            inner: Inner::new(inner),
            shared,
        }
    }
    crate::util::inner_service_accessors!(Inner);
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
        // A request the default policy would key as non-deterministic is
        // not cached (unless asked): its parsed metadata says so at once,
        // without hashing the body and looking up the alias index. Only
        // with a successful parse — the same top-level, finite
        // `temperature` the canonical walk reads; anything else takes the
        // full path.
        if self.shared.default_policy
            && !self.shared.nondeterministic
            && let Some(meta) = RequestMeta::of(req)
            && meta.is_parsed()
            && !meta.temperature().is_some_and(|t| t <= 0.0)
        {
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
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    St: CacheStore,
    B: Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, St>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // A hit never touches the inner service, so this is always ready.
        // The inner service is asked at the call, and only for a request
        // that passes: a hit must not hold what it reserves when asked.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let plan = self.plan(&req);
        if plan.key.is_none() && self.inner.ready_now::<Request<B>>() {
            return ResponseFuture::pass(self.inner.call_ready(req));
        }
        // The inner service is handed off only when it will be called (not
        // for a hit).
        let inner = &mut self.inner;
        ResponseFuture::new(Arc::clone(&self.shared), || inner.hand_off(), req, plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tower_layer::Layer;

    fn req(body: &'static str, meta: bool) -> Request<ReplayBody> {
        let mut r = Request::post("/v1/messages")
            .header("x-api-key", "sk-test")
            .body(ReplayBody::from(body))
            .expect("request");
        if meta {
            RequestMeta::for_request(&mut r);
        }
        r
    }

    /// Guards the metadata shortcut of `plan`: the same plan as the full
    /// key path for the default policy, and never used for another policy.
    #[test]
    fn plan_shortcut_matches_the_default_policy() {
        let cache = super::super::CacheLayer::new().layer(());
        for meta in [false, true] {
            let hot = req(r#"{"model":"m","max_tokens":8,"temperature":0.7}"#, meta);
            assert!(cache.plan(&hot).key.is_none());
            let none = req(r#"{"model":"m","max_tokens":8}"#, meta);
            assert!(cache.plan(&none).key.is_none());
            let cold = req(r#"{"model":"m","max_tokens":8,"temperature":0}"#, meta);
            assert!(cache.plan(&cold).key.is_some());
        }
        // A policy of its own decides determinism itself.
        let always = super::super::CacheLayer::builder()
            .key_policy(|r: &Request<ReplayBody>| {
                Some(super::super::CacheKey::new(
                    super::super::TenantId::Anonymous,
                    r.method().clone(),
                    "/v1/messages",
                    None,
                    None,
                    false,
                    true,
                    1,
                ))
            })
            .build()
            .expect("config")
            .layer(());
        assert!(
            always
                .plan(&req(r#"{"model":"m","max_tokens":8}"#, true))
                .key
                .is_some()
        );
    }

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
