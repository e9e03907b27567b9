//! Key pools against Redis: the keys, the pool and the recording upstream
//! the Redis pool suites (`redis_pool`, `redis_faults`) share.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{Service, ServiceExt, service_fn};
use tower_llm_resilience::BoxError;
use tower_llm_resilience::rate::{
    AuthStyle, CalendarQuota, KeyPool, Money, PoolKey, Price, PriceTable,
};
use tower_llm_resilience::request::ReplayBody;

/// The pool's two keys.
pub(crate) const KEY_A: &str = "sk-ant-api03-REDIS-POOL-AAAA";
pub(crate) const KEY_B: &str = "sk-ant-api03-REDIS-POOL-BBBB";
/// A small Messages body.
pub(crate) const BODY: &str =
    r#"{"model":"claude-test","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}"#;

/// A request with no credentials of its own (the pool gives it one).
pub(crate) fn pooled() -> Request<ReplayBody> {
    super::http::post_json(
        "http://upstream/v1/messages",
        &[("anthropic-version", super::http::ANTHROPIC_VERSION)],
        BODY,
    )
}

/// Which key each request reached the upstream with.
#[derive(Clone, Default)]
pub(crate) struct Seen(pub(crate) Arc<Mutex<Vec<&'static str>>>);

impl Seen {
    pub(crate) fn keys(&self) -> Vec<&'static str> {
        self.0.lock().expect("lock").clone()
    }
    pub(crate) fn count(&self, key: &str) -> usize {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|k| **k == key)
            .count()
    }
}

/// An upstream recording the key, answering `status(key, n)` (n: the
/// key's count so far, this one included).
pub(crate) fn upstream(
    seen: Seen,
    status: impl Fn(&str, usize) -> StatusCode + Clone + Send + Sync + 'static,
) -> impl Service<Request<ReplayBody>, Response = Response<String>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |req: Request<ReplayBody>| {
        let seen = seen.clone();
        let status = status.clone();
        async move {
            let key = match req
                .headers()
                .get("x-api-key")
                .map(|v| v.to_str().expect("ascii"))
            {
                Some(KEY_A) => "a",
                Some(KEY_B) => "b",
                _ => "none",
            };
            let n = {
                let mut s = seen.0.lock().expect("lock");
                s.push(key);
                s.iter().filter(|k| **k == key).count()
            };
            let code = status(key, n);
            let mut res = Response::builder()
                .status(code)
                .header("content-type", "application/json");
            let body = if code.is_success() {
                r#"{"type":"message","usage":{"input_tokens":3,"output_tokens":2}}"#
            } else {
                res = res.header("retry-after", "20");
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
            };
            Ok::<_, Infallible>(res.body(body.to_owned()).expect("response"))
        }
    })
}

/// Every request answered 200.
pub(crate) fn ok(_: &str, _: usize) -> StatusCode {
    StatusCode::OK
}

/// A pool of keys a and b, each with `quota` if given: built anew per
/// instance, as each process builds its own.
pub(crate) fn pool(quota: Option<CalendarQuota>) -> KeyPool {
    priced_pool(quota, PriceTable::empty())
}

/// The same, with `prices` for quotas in money.
pub(crate) fn priced_pool(quota: Option<CalendarQuota>, prices: PriceTable) -> KeyPool {
    let key = |label, secret| {
        let k = PoolKey::new(label, secret);
        match quota {
            Some(q) => k.quota(q),
            None => k,
        }
    };
    KeyPool::builder(AuthStyle::Anthropic)
        .add_key(key("a", KEY_A))
        .add_key(key("b", KEY_B))
        .prices(prices)
        .build()
        .expect("pool")
}

/// `claude-test` at 1 unit an output token, input free: a [`pooled`]
/// request (`max_tokens` 16) is reserved at 16 and, answered by
/// [`upstream`] (2 output tokens), settled at 2.
pub(crate) fn unit_per_output_token() -> PriceTable {
    PriceTable::empty().insert(
        "claude-test",
        Price::per_mtok(
            Money::ZERO,
            Money::from_units(1_000_000),
            Money::ZERO,
            Money::ZERO,
        ),
    )
}

/// One pooled request through `svc`, its body read: the status.
pub(crate) async fn send<S>(svc: &S) -> Result<StatusCode, BoxError>
where
    S: Service<
            Request<ReplayBody>,
            Response = Response<tower_llm_resilience::ResponseBody>,
            Error = BoxError,
        > + Clone,
{
    let res = svc.clone().oneshot(pooled()).await?;
    let status = res.status();
    res.into_body().collect().await?;
    Ok(status)
}
