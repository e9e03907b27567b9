//! The budget layer against Redis: the request, the upstream and the
//! readings the Redis budget suites (`redis_budget`, `redis_faults`) share.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::Service;
use tower_llm_resilience::budget::BudgetLayer;
use tower_llm_resilience::redis::Redis;
use tower_llm_resilience::{BoxError, ReplayBody, RequestMeta, ResponseBody};

use super::http::anthropic;
use super::redis::RedisServer;

/// Where the budget suites send.
pub(crate) const URI: &str = "http://upstream.test/v1/messages";
/// The key the budget suites send with.
pub(crate) const KEY: &str = "sk-ant-api03-SECRET-redis-budget";

/// A request body of 100 `max_tokens`.
pub(crate) fn body() -> String {
    r#"{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"Hello, shared budget."}]}"#.to_owned()
}

/// What the budget reserves for one [`body`].
pub(crate) fn estimate() -> u64 {
    let b = body();
    let req = anthropic(URI, KEY, b.clone());
    RequestMeta::parse(req.uri().path(), req.headers(), b.as_bytes()).input_tokens() + 100
}

/// An upstream that answers after `delay` with this usage, counting
/// requests in flight at once.
#[derive(Clone, Default)]
pub(crate) struct Upstream {
    pub(crate) input: u64,
    pub(crate) output: u64,
    pub(crate) delay: Duration,
    pub(crate) in_flight: Arc<AtomicUsize>,
    pub(crate) max_in_flight: Arc<AtomicUsize>,
}

impl Upstream {
    pub(crate) fn service(
        &self,
    ) -> impl Service<
        Request<ReplayBody>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + use<> {
        let s = self.clone();
        tower::service_fn(move |_req: Request<ReplayBody>| {
            let s = s.clone();
            async move {
                let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                s.max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(s.delay).await;
                s.in_flight.fetch_sub(1, Ordering::SeqCst);
                let json = format!(
                    r#"{{"type":"message","usage":{{"input_tokens":{},"output_tokens":{}}}}}"#,
                    s.input, s.output
                );
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(json)))
                        .expect("response"),
                )
            }
        })
    }
}

/// A second connection to the same server and prefix: another process.
pub(crate) fn another_process(first: &Redis, server: &RedisServer) -> Redis {
    Redis::new(&server.url)
        .expect("redis")
        .with_prefix(first.prefix().to_owned())
        .with_timeout(Duration::from_secs(2))
}

/// `up` behind `layer`.
pub(crate) fn svc(
    layer: &BudgetLayer,
    up: &Upstream,
) -> impl Service<Request<ReplayBody>, Response = Response<ResponseBody>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ use<> {
    tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(up.service())
}

/// Waits until no reservation is left (settlements run on spawned tasks).
pub(crate) async fn settled(layer: &BudgetLayer) -> (u64, u64) {
    let started = Instant::now();
    loop {
        let mut req = anthropic(URI, KEY, body());
        let counters = layer.counters(&mut req).expect("counters");
        let b = layer.balance(&counters[0]).await.expect("read");
        if b.reserved == 0 || started.elapsed() > Duration::from_secs(5) {
            return (b.spent, b.reserved);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
