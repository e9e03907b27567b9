//! The cache layer: keys and tenant isolation, what is and is not cached,
//! stream capture and replay, coalescing, expiry, stale-if-error, bad
//! input — against counting mock upstreams (paused time) and, for streams,
//! the simulator over real sockets.

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::{Service, ServiceExt};
use tower_layer::Layer;
use tower_llm_resilience::BoxError;
use tower_llm_resilience::cache::{
    CacheKey, CacheLayer, CacheStatus, CacheStore, CacheTtl, CachedResponse, DefaultKeyPolicy,
    MemoryStore, Status, Tenant,
};
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::response::ResponseBody;

const KEY_A: &str = "sk-ant-api03-SECRET-AAAA";
const KEY_B: &str = "sk-ant-api03-SECRET-BBBB";
const PROMPT: &str = r#"{"model":"claude-haiku-4-5","max_tokens":16,"temperature":0,"messages":[{"role":"user","content":"2+2?"}]}"#;
const JSON_ANSWER: &str = r#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"4"}],"usage":{"input_tokens":5,"output_tokens":1}}"#;
const SSE: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"4\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

fn req_with(key: &str, body: &str) -> Request<ReplayBody> {
    support::http::anthropic(
        "https://api.anthropic.com/v1/messages",
        key,
        body.to_owned(),
    )
}

fn req(body: &str) -> Request<ReplayBody> {
    req_with(KEY_A, body)
}

fn json(status: u16, body: &str) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("request-id", "req_1")
        .body(ResponseBody::full(body.to_owned()))
        .expect("response")
}

fn sse_chunks(chunks: Vec<Bytes>) -> Response<ResponseBody> {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, Infallible>(Frame::data(c)))
        .collect::<Vec<_>>();
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("request-id", "req_s")
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5")
        .body(ResponseBody::new(StreamBody::new(Iter(frames.into_iter()))))
        .expect("response")
}

struct Iter<I>(I);
impl<I: Iterator + Unpin> futures_core::Stream for Iter<I> {
    type Item = I::Item;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
        Poll::Ready(self.0.next())
    }
}

/// A body fed through a channel: the test decides when each frame comes.
struct Channel(mpsc::UnboundedReceiver<Result<Frame<Bytes>, std::io::Error>>);
impl futures_core::Stream for Channel {
    type Item = Result<Frame<Bytes>, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

type Handler = Arc<
    dyn Fn(usize, Request<ReplayBody>) -> Result<Response<ResponseBody>, BoxError> + Send + Sync,
>;

/// A counting upstream that answers after `delay` with whatever `f` says.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    delay: Duration,
    first_delay: Option<Duration>,
    f: Handler,
}

impl Upstream {
    fn new(
        f: impl Fn(usize, Request<ReplayBody>) -> Result<Response<ResponseBody>, BoxError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Upstream {
            calls: Arc::default(),
            in_flight: Arc::default(),
            peak: Arc::default(),
            delay: Duration::ZERO,
            first_delay: None,
            f: Arc::new(f),
        }
    }
    fn ok_json() -> Self {
        Self::new(|_, _| Ok(json(200, JSON_ANSWER)))
    }
    fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    /// The first call alone takes `d`.
    fn first_delayed(mut self, d: Duration) -> Self {
        self.first_delay = Some(d);
        self
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Request<ReplayBody>> for Upstream {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let delay = match self.first_delay {
            Some(d) if n == 0 => d,
            _ => self.delay,
        };
        let (f, in_flight) = (self.f.clone(), self.in_flight.clone());
        Box::pin(async move {
            struct Gauge(Arc<AtomicUsize>);
            impl Drop for Gauge {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _g = Gauge(in_flight);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            f(n, req)
        })
    }
}

/// Sends `r` once `svc` is ready: the response, its body unread.
async fn respond<S>(svc: &mut S, r: Request<ReplayBody>) -> Response<ResponseBody>
where
    S: Service<Request<ReplayBody>, Response = Response<ResponseBody>, Error = BoxError>,
{
    svc.ready()
        .await
        .expect("ready")
        .call(r)
        .await
        .expect("response")
}

type Sent = (Status, StatusCode, HeaderMap, Bytes);

async fn send<S>(svc: &mut S, r: Request<ReplayBody>) -> Sent
where
    S: Service<Request<ReplayBody>, Response = Response<ResponseBody>, Error = BoxError>,
{
    let res = respond(svc, r).await;
    let status = res
        .extensions()
        .get::<CacheStatus>()
        .expect("status")
        .status;
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (status, parts.status, parts.headers, bytes)
}

/// `n` tasks at once, each sending `req()` through its own clone of `svc`.
fn send_concurrently(
    svc: &impl support::ReplayService,
    n: usize,
    req: impl Fn() -> Request<ReplayBody>,
) -> Vec<JoinHandle<Sent>> {
    (0..n)
        .map(|_| {
            let mut svc = svc.clone();
            let r = req();
            tokio::spawn(async move { send(&mut svc, r).await })
        })
        .collect()
}

fn cached(up: &Upstream) -> impl support::ReplayService {
    CacheLayer::new().layer(up.clone())
}

/// Every test lives in `cache::`, so `cargo test --test cache --lib cache`
/// runs them all.
mod cache {
    use super::*;

    // ---- keys and tenants ----

    #[tokio::test(start_paused = true)]
    async fn tenants_are_isolated_by_api_key() {
        let up = Upstream::ok_json();
        let mut svc = cached(&up);
        assert_eq!(
            send(&mut svc, req_with(KEY_A, PROMPT)).await.0,
            Status::Miss
        );
        assert_eq!(
            send(&mut svc, req_with(KEY_B, PROMPT)).await.0,
            Status::Miss
        );
        assert_eq!(up.calls(), 2, "another key never sees A's answer");
        assert_eq!(send(&mut svc, req_with(KEY_A, PROMPT)).await.0, Status::Hit);
        assert_eq!(send(&mut svc, req_with(KEY_B, PROMPT)).await.0, Status::Hit);
        assert_eq!(up.calls(), 2, "same key twice: one call");
        // Bearer credentials are a tenant too, apart from x-api-key.
        let mut bearer = req_with(KEY_A, PROMPT);
        bearer.headers_mut().remove("x-api-key");
        bearer.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {KEY_A}")).expect("hv"),
        );
        assert_eq!(send(&mut svc, bearer).await.0, Status::Miss);
    }

    #[tokio::test(start_paused = true)]
    async fn tenant_extension_and_closure_isolate() {
        let up = Upstream::ok_json();
        let mut svc = cached(&up);
        let with_tenant = |t: &str| {
            let mut r = req(PROMPT);
            r.extensions_mut().insert(Tenant::new(t));
            r
        };
        assert_eq!(send(&mut svc, with_tenant("acme")).await.0, Status::Miss);
        assert_eq!(send(&mut svc, with_tenant("globex")).await.0, Status::Miss);
        assert_eq!(send(&mut svc, with_tenant("acme")).await.0, Status::Hit);
        assert_eq!(up.calls(), 2);

        // A closure naming the tenant from a header.
        let up = Upstream::ok_json();
        let policy = DefaultKeyPolicy::new().with_tenant(|r: &Request<ReplayBody>| {
            r.headers()
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .map(Arc::from)
        });
        let mut svc = CacheLayer::builder()
            .key_policy(policy)
            .build()
            .expect("config")
            .layer(up.clone());
        let user = |u: &'static str| {
            let mut r = req(PROMPT);
            r.headers_mut()
                .insert("x-user", HeaderValue::from_static(u));
            r
        };
        send(&mut svc, user("u1")).await;
        send(&mut svc, user("u2")).await;
        assert_eq!(send(&mut svc, user("u1")).await.0, Status::Hit);
        assert_eq!(up.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn key_policy_is_replaceable_by_a_closure() {
        use http::Method;
        use tower_llm_resilience::cache::TenantId;
        // Key on a conversation id header alone (tenant still apart).
        let policy = |r: &Request<ReplayBody>| {
            let id = r.headers().get("x-conversation")?.to_str().ok()?;
            Some(CacheKey::new(
                TenantId::Named(Arc::from("app")),
                Method::POST,
                "/conversation",
                None,
                None,
                false,
                true,
                u128::from(id.len() as u64) << 64 | u128::from(id.as_bytes()[0]),
            ))
        };
        let up = Upstream::ok_json();
        let mut svc = CacheLayer::builder()
            .key_policy(policy)
            .build()
            .expect("config")
            .layer(up.clone());
        let with = |id: &'static str, body: &str| {
            let mut r = req(body);
            r.headers_mut()
                .insert("x-conversation", HeaderValue::from_static(id));
            r
        };
        send(&mut svc, with("a1", PROMPT)).await;
        assert_eq!(
            send(&mut svc, with("a1", "not even json")).await.0,
            Status::Hit
        );
        assert_eq!(send(&mut svc, with("b22", PROMPT)).await.0, Status::Miss);
        assert_eq!(
            send(&mut svc, req(PROMPT)).await.0,
            Status::Miss,
            "no key: bypass"
        );
        assert_eq!(up.calls(), 3);
    }

    // The trace-capture test lives in tests/cache_trace.rs: it needs the
    // process-wide subscriber to itself.

    #[tokio::test(start_paused = true)]
    async fn canonical_body_reordered_keys_and_whitespace_hit() {
        let up = Upstream::ok_json();
        let mut svc = cached(&up);
        send(&mut svc, req(PROMPT)).await;
        let reordered = r#"{
            "messages": [ { "content": "2+2?", "role": "user" } ],
            "temperature": 0,   "max_tokens": 16,
            "model": "claude-haiku-4-5"
        }"#;
        let (status, _, _, body) = send(&mut svc, req(reordered)).await;
        assert_eq!((status, &body[..]), (Status::Hit, JSON_ANSWER.as_bytes()));
        // The byte-identical repeat goes through the alias index, same answer.
        assert_eq!(send(&mut svc, req(reordered)).await.0, Status::Hit);
        // Array order does matter.
        let other = r#"{"model":"claude-haiku-4-5","max_tokens":16,"temperature":0,"messages":[{"role":"user","content":"2+3?"}]}"#;
        assert_eq!(send(&mut svc, req(other)).await.0, Status::Miss);
        assert_eq!(up.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn version_headers_and_path_are_key_components() {
        let up = Upstream::ok_json();
        let mut svc = cached(&up);
        send(&mut svc, req(PROMPT)).await;
        let mut beta = req(PROMPT);
        beta.headers_mut().insert(
            "anthropic-beta",
            HeaderValue::from_static("prompt-caching-2024-07-31"),
        );
        assert_eq!(send(&mut svc, beta).await.0, Status::Miss);
        let mut version = req(PROMPT);
        version
            .headers_mut()
            .insert("anthropic-version", HeaderValue::from_static("2024-01-01"));
        assert_eq!(send(&mut svc, version).await.0, Status::Miss);
        let mut path = req(PROMPT);
        *path.uri_mut() = "https://api.anthropic.com/v1/messages/count_tokens"
            .parse()
            .expect("uri");
        assert_eq!(send(&mut svc, path).await.0, Status::Miss);
        assert_eq!(up.calls(), 4);
    }

    // ---- coalescing ----

    #[tokio::test(start_paused = true)]
    async fn five_hundred_identical_misses_make_one_call() {
        let up = Upstream::ok_json().delayed(Duration::from_millis(50));
        let layer = CacheLayer::new();
        let svc = layer.layer(up.clone());
        let tasks = send_concurrently(&svc, 500, || req(PROMPT));
        let mut statuses = std::collections::HashMap::new();
        for t in tasks {
            let (status, code, _, body) = t.await.expect("task");
            assert_eq!(code, 200);
            assert_eq!(&body[..], JSON_ANSWER.as_bytes(), "all get the same bytes");
            *statuses.entry(status).or_insert(0) += 1;
        }
        assert_eq!(up.calls(), 1, "exactly one upstream call");
        assert_eq!(statuses.get(&Status::Miss), Some(&1));
        assert_eq!(statuses.get(&Status::Hit), Some(&499));
        assert_eq!(layer.in_flight(), 0, "the flight table empties");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_leader_is_replaced_by_exactly_one_waiter() {
        // The first call hangs (until cancelled); the next answers.
        let hang = Upstream::ok_json()
            .delayed(Duration::from_millis(10))
            .first_delayed(Duration::from_secs(3600));
        let layer = CacheLayer::new();
        let svc = layer.layer(hang.clone());
        let leader = tokio::spawn({
            let mut svc = svc.clone();
            async move { send(&mut svc, req(PROMPT)).await }
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        let waiters = send_concurrently(&svc, 20, || req(PROMPT));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(hang.calls(), 1, "waiters wait");
        leader.abort();
        for w in waiters {
            let (_, code, _, body) = w.await.expect("waiter");
            assert_eq!((code, &body[..]), (StatusCode::OK, JSON_ANSWER.as_bytes()));
        }
        assert_eq!(hang.calls(), 2, "at most one replacement call");
        assert_eq!(layer.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn leader_dropping_its_body_hands_over() {
        let senders = Arc::new(Mutex::new(Vec::new()));
        let up = Upstream::new({
            let senders = senders.clone();
            move |_, _| {
                let (tx, rx) = mpsc::unbounded_channel();
                tx.send(Ok(Frame::data(Bytes::from_static(
                    b"event: ping\ndata: {}\n\n",
                ))))
                .expect("send");
                senders.lock().expect("lock").push(tx);
                Ok(Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(ResponseBody::new(StreamBody::new(Channel(rx))))
                    .expect("response"))
            }
        });
        let stream_prompt =
            PROMPT.replace("\"temperature\":0", "\"temperature\":0,\"stream\":true");
        let svc = cached(&up);
        let leader = svc
            .clone()
            .oneshot(req(&stream_prompt))
            .await
            .expect("leader");
        let waiter = tokio::spawn({
            let mut svc = svc.clone();
            let p = stream_prompt.clone();
            async move { send(&mut svc, req(&p)).await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(up.calls(), 1);
        drop(leader); // the caller hangs up mid-stream
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(up.calls(), 2, "the waiter took over");
        // Finish the second stream.
        let tx = senders.lock().expect("lock").pop().expect("second stream");
        tx.send(Ok(Frame::data(Bytes::from_static(SSE.as_bytes()))))
            .expect("send");
        drop(tx);
        let (status, _, _, body) = waiter.await.expect("waiter");
        assert_eq!(status, Status::Miss);
        assert!(body.ends_with(b"message_stop\"}\n\n"));
        // Now cached: the dropped stream was not.
        assert_eq!(
            send(&mut svc.clone(), req(&stream_prompt)).await.0,
            Status::Hit
        );
        assert_eq!(up.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_of_a_leader_whose_body_is_never_read_give_up_waiting() {
        let up = Upstream::ok_json();
        let mut svc = CacheLayer::builder()
            .coalesce_timeout(Duration::from_secs(1))
            .build()
            .expect("config")
            .layer(up.clone());
        // The leader's caller holds its body without reading it.
        let held = svc.ready().await.expect("ready").call(req(PROMPT)).await;
        let waiter = tokio::spawn({
            let mut svc = svc.clone();
            async move { send(&mut svc, req(PROMPT)).await }
        });
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(up.calls(), 1, "still waiting");
        let (status, _, _, body) = waiter.await.expect("waiter");
        assert_eq!((status, &body[..]), (Status::Miss, JSON_ANSWER.as_bytes()));
        assert_eq!(up.calls(), 2, "went alone after the timeout");
        drop(held);
        assert_eq!(
            send(&mut svc, req(PROMPT)).await.0,
            Status::Hit,
            "the lone call stored"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_leader_hands_over_one_waiter_at_a_time() {
        let up = Upstream::new(|_, _| Ok(json(400, r#"{"type":"error"}"#)))
            .delayed(Duration::from_millis(10));
        let svc = cached(&up);
        let tasks = send_concurrently(&svc, 5, || req(PROMPT));
        for t in tasks {
            let (status, code, _, _) = t.await.expect("task");
            assert_eq!((status, code), (Status::Miss, StatusCode::BAD_REQUEST));
        }
        assert_eq!(up.calls(), 5, "errors are not shared or cached");
        assert_eq!(
            up.peak.load(Ordering::SeqCst),
            1,
            "no stampede: one at a time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_not_cached() {
        let up = Upstream::new(|n, _| match n {
            0 => Err("connection reset".into()),
            1 => Ok(json(
                500,
                r#"{"type":"error","error":{"type":"api_error"}}"#,
            )),
            _ => Ok(json(200, JSON_ANSWER)),
        });
        let mut svc = cached(&up);
        assert!(
            svc.ready()
                .await
                .expect("ready")
                .call(req(PROMPT))
                .await
                .is_err()
        );
        assert_eq!(send(&mut svc, req(PROMPT)).await.1, 500);
        assert_eq!(send(&mut svc, req(PROMPT)).await.0, Status::Miss);
        assert_eq!(send(&mut svc, req(PROMPT)).await.0, Status::Hit);
        assert_eq!(up.calls(), 3);
    }

    // ---- what is cacheable ----

    #[tokio::test(start_paused = true)]
    async fn error_statuses_are_never_cached() {
        for status in [400u16, 401, 404, 429, 500, 503, 529] {
            let up = Upstream::new(move |_, _| Ok(json(status, r#"{"type":"error"}"#)));
            let mut svc = cached(&up);
            for _ in 0..2 {
                let (s, code, _, _) = send(&mut svc, req(PROMPT)).await;
                assert_eq!((s, code.as_u16()), (Status::Miss, status));
            }
            assert_eq!(up.calls(), 2, "{status} not cached");
        }
    }

    fn stream_prompt() -> String {
        PROMPT.replace("\"temperature\":0", "\"temperature\":0,\"stream\":true")
    }

    #[tokio::test(start_paused = true)]
    async fn incomplete_streams_are_never_cached() {
        let cut = SSE.find("event: message_delta").expect("cut");
        let error_event = format!(
            "{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n",
            &SSE[..cut]
        );
        for (name, body) in [
            ("truncated", SSE[..cut].to_owned()),
            ("error event", error_event),
        ] {
            let body = Bytes::from(body);
            let up = Upstream::new(move |_, _| Ok(sse_chunks(vec![body.clone()])));
            let mut svc = cached(&up);
            send(&mut svc, req(&stream_prompt())).await;
            send(&mut svc, req(&stream_prompt())).await;
            assert_eq!(up.calls(), 2, "{name} stream not cached");
        }
        // A transport error mid-stream.
        let up = Upstream::new(|_, _| {
            let (tx, rx) = mpsc::unbounded_channel();
            tx.send(Ok(Frame::data(Bytes::from_static(b"event: ping\n\n"))))
                .expect("send");
            tx.send(Err(std::io::Error::other("reset"))).expect("send");
            Ok(Response::builder()
                .header("content-type", "text/event-stream")
                .body(ResponseBody::new(StreamBody::new(Channel(rx))))
                .expect("response"))
        });
        let mut svc = cached(&up);
        for _ in 0..2 {
            let res = respond(&mut svc, req(&stream_prompt())).await;
            assert!(res.into_body().collect().await.is_err());
        }
        assert_eq!(up.calls(), 2, "errored stream not cached");
        // Dropped by the caller after the first chunk.
        let up = Upstream::new(|_, _| {
            Ok(sse_chunks(
                SSE.as_bytes()
                    .chunks(40)
                    .map(Bytes::copy_from_slice)
                    .collect(),
            ))
        });
        let mut svc = cached(&up);
        let mut res = respond(&mut svc, req(&stream_prompt())).await;
        res.body_mut().frame().await.expect("frame").expect("ok");
        drop(res);
        assert_eq!(send(&mut svc, req(&stream_prompt())).await.0, Status::Miss);
        assert_eq!(up.calls(), 2, "dropped stream not cached");
        assert_eq!(send(&mut svc, req(&stream_prompt())).await.0, Status::Hit);
    }

    #[tokio::test(start_paused = true)]
    async fn complete_stream_replays_byte_identical() {
        let chunks: Vec<Bytes> = SSE
            .as_bytes()
            .chunks(37)
            .map(Bytes::copy_from_slice)
            .collect();
        let up = Upstream::new(move |_, _| Ok(sse_chunks(chunks.clone())));
        let mut svc = cached(&up);
        let (s1, c1, h1, b1) = send(&mut svc, req(&stream_prompt())).await;
        let hit = respond(&mut svc, req(&stream_prompt())).await;
        let (parts, body) = hit.into_parts();
        let frames: Vec<Bytes> = {
            let mut body = body;
            let mut out = Vec::new();
            while let Some(f) = body.frame().await {
                out.push(f.expect("frame").into_data().expect("data"));
            }
            out
        };
        assert_eq!((s1, c1), (Status::Miss, StatusCode::OK));
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(frames.concat(), &b1[..], "byte-identical");
        assert_eq!(frames.len(), SSE.len().div_ceil(37), "chunk for chunk");
        assert_eq!(&b1[..], SSE.as_bytes());
        assert_eq!(parts.headers["x-llm-cache"], "HIT");
        assert_eq!(parts.headers["content-type"], h1["content-type"]);
        assert_eq!(parts.headers["request-id"], "req_s");
        assert!(
            parts.headers.get("connection").is_none(),
            "hop-by-hop dropped"
        );
        assert!(parts.headers.get("keep-alive").is_none());
        assert_eq!(up.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn nondeterministic_requests_are_not_cached_by_default() {
        let no_temp =
            r#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
        let warm = r#"{"model":"m","max_tokens":16,"temperature":0.7,"messages":[{"role":"user","content":"hi"}]}"#;
        let up = Upstream::ok_json();
        let mut svc = cached(&up);
        for body in [no_temp, warm] {
            send(&mut svc, req(body)).await;
            assert_eq!(send(&mut svc, req(body)).await.0, Status::Miss);
        }
        assert_eq!(up.calls(), 4);
        let up = Upstream::ok_json();
        let mut svc = CacheLayer::builder()
            .cache_nondeterministic(true)
            .build()
            .expect("config")
            .layer(up.clone());
        for body in [no_temp, warm] {
            send(&mut svc, req(body)).await;
            assert_eq!(send(&mut svc, req(body)).await.0, Status::Hit);
        }
        assert_eq!(up.calls(), 2);
    }

    /// Guards the pass path's readiness: a request that is not cached is
    /// sent at the call when the inner service said it was ready, and
    /// otherwise waits for that readiness in the response future — marked
    /// a miss and answered either way.
    #[tokio::test(start_paused = true)]
    async fn a_pass_waits_for_an_inner_service_that_is_not_ready() {
        /// Not ready on the first readiness check (waking at once).
        #[derive(Clone)]
        struct Flaky(Arc<AtomicUsize>, Upstream);
        impl Service<Request<ReplayBody>> for Flaky {
            type Response = <Upstream as Service<Request<ReplayBody>>>::Response;
            type Error = <Upstream as Service<Request<ReplayBody>>>::Error;
            type Future = <Upstream as Service<Request<ReplayBody>>>::Future;
            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self.1.poll_ready(cx)
            }
            fn call(&mut self, r: Request<ReplayBody>) -> Self::Future {
                self.1.call(r)
            }
        }
        let body = r#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
        let up = Upstream::ok_json();
        let mut svc = CacheLayer::new().layer(Flaky(Arc::new(AtomicUsize::new(0)), up.clone()));
        for (i, sent_at_call) in [(0, false), (1, true), (2, true)] {
            let fut = svc.ready().await.expect("ready").call(req(body));
            // The upstream counts a request when it is called.
            assert_eq!(up.calls(), i + usize::from(sent_at_call), "request {i}");
            let res = fut.await.expect("response");
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(
                res.extensions().get::<CacheStatus>().map(|s| s.status),
                Some(Status::Miss)
            );
        }
        assert_eq!(up.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn cache_control_no_store_and_no_cache() {
        let up = Upstream::ok_json();
        let mut svc = cached(&up);
        let with = |cc: &'static str| {
            let mut r = req(PROMPT);
            r.headers_mut()
                .insert("cache-control", HeaderValue::from_static(cc));
            r
        };
        // no-store: neither written ...
        assert_eq!(send(&mut svc, with("no-store")).await.0, Status::Miss);
        assert_eq!(send(&mut svc, req(PROMPT)).await.0, Status::Miss);
        assert_eq!(up.calls(), 2);
        // ... nor read.
        assert_eq!(send(&mut svc, with("No-Store")).await.0, Status::Miss);
        assert_eq!(up.calls(), 3);
        // no-cache: not read, but written.
        assert_eq!(
            send(&mut svc, with("max-age=0, no-cache")).await.0,
            Status::Miss
        );
        assert_eq!(up.calls(), 4);
        assert_eq!(send(&mut svc, req(PROMPT)).await.0, Status::Hit);
        let other = PROMPT.replace("2+2", "3+3");
        let mut fresh = req(&other);
        fresh
            .headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-cache"));
        send(&mut svc, fresh).await;
        assert_eq!(
            send(&mut svc, req(&other)).await.0,
            Status::Hit,
            "no-cache writes"
        );
        assert_eq!(up.calls(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn stream_and_non_stream_are_keyed_apart() {
        let up = Upstream::new(|_, r| {
            let streaming = std::str::from_utf8(r.body().as_bytes())
                .expect("utf8")
                .contains("\"stream\":true");
            Ok(if streaming {
                sse_chunks(vec![Bytes::from_static(SSE.as_bytes())])
            } else {
                json(200, JSON_ANSWER)
            })
        });
        let mut svc = cached(&up);
        send(&mut svc, req(PROMPT)).await;
        let (status, _, _, body) = send(&mut svc, req(&stream_prompt())).await;
        assert_eq!((status, &body[..]), (Status::Miss, SSE.as_bytes()));
        assert_eq!(send(&mut svc, req(PROMPT)).await.3, JSON_ANSWER.as_bytes());
        assert_eq!(
            send(&mut svc, req(&stream_prompt())).await.3,
            SSE.as_bytes()
        );
        assert_eq!(up.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn responses_over_the_entry_size_pass_through_uncached() {
        let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(2000));
        let up = Upstream::new(move |_, _| Ok(json(200, &big)));
        let mut svc = CacheLayer::builder()
            .max_entry_size(1024)
            .build()
            .expect("config")
            .layer(up.clone());
        let (_, _, _, body) = send(&mut svc, req(PROMPT)).await;
        assert_eq!(body.len(), 2011, "passes through whole");
        send(&mut svc, req(PROMPT)).await;
        assert_eq!(up.calls(), 2);
        // Found while streaming (no size hint).
        let up = Upstream::new(|_, _| {
            let mut res =
                sse_chunks(std::iter::repeat_n(Bytes::from(vec![b'x'; 300]), 5).collect());
            res.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            Ok(res)
        });
        let layer = CacheLayer::builder()
            .max_entry_size(1024)
            .cache_nondeterministic(true)
            .build()
            .expect("config");
        let mut svc = layer.clone().layer(up.clone());
        send(&mut svc, req(PROMPT)).await;
        send(&mut svc, req(PROMPT)).await;
        assert_eq!(up.calls(), 2);
        assert!(layer.store().is_empty());
    }

    // ---- expiry, capacity, stale-if-error ----

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl() {
        let up = Upstream::ok_json();
        let mut svc = CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .stale_if_error(Duration::ZERO)
            .build()
            .expect("config")
            .layer(up.clone());
        send(&mut svc, req(PROMPT)).await;
        tokio::time::advance(Duration::from_secs(59)).await;
        let res = respond(&mut svc, req(PROMPT)).await;
        let status = *res.extensions().get::<CacheStatus>().expect("status");
        assert_eq!(status.status, Status::Hit);
        assert_eq!(status.age, Duration::from_secs(59));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(send(&mut svc, req(PROMPT)).await.0, Status::Miss);
        assert_eq!(up.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_can_set_its_entry_ttl() {
        let up = Upstream::ok_json();
        let mut svc = CacheLayer::builder()
            .ttl(Duration::from_secs(600))
            .build()
            .expect("config")
            .layer(up.clone());
        let mut short = req(PROMPT);
        short
            .extensions_mut()
            .insert(CacheTtl(Duration::from_secs(5)));
        send(&mut svc, short).await;
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(send(&mut svc, req(PROMPT)).await.0, Status::Hit);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(send(&mut svc, req(PROMPT)).await.0, Status::Miss);
        // That answer has the layer's TTL.
        tokio::time::advance(Duration::from_secs(500)).await;
        assert_eq!(send(&mut svc, req(PROMPT)).await.0, Status::Hit);
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_is_bounded_by_bytes() {
        let answer = format!(r#"{{"text":"{}"}}"#, "y".repeat(3000));
        let up = Upstream::new(move |_, _| Ok(json(200, &answer)));
        let layer = CacheLayer::builder()
            .capacity(16 * 1024)
            .build()
            .expect("config");
        let mut svc = layer.clone().layer(up.clone());
        for i in 0..20 {
            send(&mut svc, req(&PROMPT.replace("2+2", &format!("{i}+{i}")))).await;
        }
        let store = layer.store();
        assert!(store.weight() <= 16 * 1024, "weight {}", store.weight());
        assert!(
            store.len() < 20 && !store.is_empty(),
            "{} entries",
            store.len()
        );
        // Evicted entries are fetched again.
        for i in 0..20 {
            send(&mut svc, req(&PROMPT.replace("2+2", &format!("{i}+{i}")))).await;
        }
        assert!(up.calls() > 20);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_if_error_within_the_window_only() {
        let up = Upstream::new(|n, _| match n {
            0 => Ok(json(200, JSON_ANSWER)),
            1 => Err("connection refused".into()),
            _ => Ok(json(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error"}}"#,
            )),
        });
        let mut svc = CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .stale_if_error(Duration::from_secs(60))
            .build()
            .expect("config")
            .layer(up.clone());
        send(&mut svc, req(PROMPT)).await;
        tokio::time::advance(Duration::from_secs(90)).await;
        // A transport error: the stale entry answers.
        let (status, code, headers, body) = send(&mut svc, req(PROMPT)).await;
        assert_eq!((status, code), (Status::Stale, StatusCode::OK));
        assert_eq!(headers["x-llm-cache"], "STALE");
        assert_eq!(&body[..], JSON_ANSWER.as_bytes());
        // A 529: the stale entry answers, with its age.
        let res = respond(&mut svc, req(PROMPT)).await;
        let cs = *res.extensions().get::<CacheStatus>().expect("status");
        assert_eq!(
            (cs.status, cs.age),
            (Status::Stale, Duration::from_secs(90))
        );
        assert_eq!(res.status(), 200);
        // Beyond the window: the 529 passes through.
        tokio::time::advance(Duration::from_secs(31)).await;
        let (status, code, _, _) = send(&mut svc, req(PROMPT)).await;
        assert_eq!((status, code.as_u16()), (Status::Miss, 529));
        assert_eq!(up.calls(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_of_a_leader_that_fell_back_to_stale_get_it_too() {
        let up = Upstream::new(|n, _| match n {
            0 => Ok(json(200, JSON_ANSWER)),
            _ => Ok(json(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error"}}"#,
            )),
        })
        .delayed(Duration::from_millis(10));
        let svc = CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .stale_if_error(Duration::from_secs(60))
            .build()
            .expect("config")
            .layer(up.clone());
        send(&mut svc.clone(), req(PROMPT)).await;
        tokio::time::advance(Duration::from_secs(90)).await;
        let tasks = send_concurrently(&svc, 10, || req(PROMPT));
        for t in tasks {
            let (status, code, _, body) = t.await.expect("task");
            assert_eq!((status, code), (Status::Stale, StatusCode::OK));
            assert_eq!(&body[..], JSON_ANSWER.as_bytes());
        }
        assert_eq!(up.calls(), 2, "one upstream attempt for all ten");
    }

    #[tokio::test(start_paused = true)]
    async fn stale_is_not_served_for_a_success_or_a_client_error() {
        let up = Upstream::new(|n, _| match n {
            0 => Ok(json(200, JSON_ANSWER)),
            1 => Ok(json(400, r#"{"type":"error"}"#)),
            _ => Ok(json(200, r#"{"new":true}"#)),
        });
        let mut svc = CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .build()
            .expect("config")
            .layer(up.clone());
        send(&mut svc, req(PROMPT)).await;
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(send(&mut svc, req(PROMPT)).await.1, 400);
        let (status, _, _, body) = send(&mut svc, req(PROMPT)).await;
        assert_eq!((status, &body[..]), (Status::Miss, &br#"{"new":true}"#[..]));
        assert_eq!(send(&mut svc, req(PROMPT)).await.3, &br#"{"new":true}"#[..]);
    }

    // ---- bad input ----

    #[tokio::test(start_paused = true)]
    async fn malformed_and_huge_bodies_pass_through_uncached() {
        let up = Upstream::ok_json();
        let mut svc = CacheLayer::builder()
            .key_policy(DefaultKeyPolicy::new().with_max_body(64 * 1024))
            .build()
            .expect("config")
            .layer(up.clone());
        let huge = format!(
            r#"{{"temperature":0,"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "z".repeat(100 * 1024)
        );
        let deep = format!(
            "{{\"temperature\":0,\"a\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let bodies = [
            "{not json",
            "",
            "[1,2,3]",
            "{\"temperature\":0} trailing",
            "\u{feff}{}",
            &huge,
            &deep,
        ];
        for body in bodies {
            for _ in 0..2 {
                let (status, code, _, _) = send(&mut svc, req(body)).await;
                assert_eq!((status, code), (Status::Miss, StatusCode::OK));
            }
        }
        assert_eq!(up.calls(), bodies.len() * 2);
        // Invalid UTF-8 too.
        let mut r = req(PROMPT);
        *r.body_mut() = ReplayBody::from(&b"{\"a\":\"\xff\"}"[..]);
        assert_eq!(send(&mut svc, r).await.0, Status::Miss);
    }

    #[tokio::test(start_paused = true)]
    async fn other_body_types_pass_through() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = CacheLayer::new().layer(tower::service_fn({
            let calls = calls.clone();
            move |_r: Request<String>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(Response::new(String::from(JSON_ANSWER))) }
            }
        }));
        for _ in 0..2 {
            let res = svc
                .clone()
                .oneshot(
                    Request::post("/v1/messages")
                        .body(PROMPT.to_owned())
                        .expect("req"),
                )
                .await
                .expect("ok");
            assert_eq!(res.headers()["x-llm-cache"], "MISS");
            res.into_body().collect().await.expect("body");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn builder_refuses_invalid_config() {
        assert!(CacheLayer::builder().ttl(Duration::ZERO).build().is_err());
        assert!(CacheLayer::builder().max_entry_size(0).build().is_err());
        assert!(
            CacheLayer::builder()
                .stale_if_error(Duration::from_secs(90 * 86_400))
                .build()
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn clones_and_services_of_one_layer_share_one_cache() {
        let up = Upstream::ok_json();
        let layer = CacheLayer::new();
        let mut a = layer.layer(up.clone());
        let mut b = layer.clone().layer(up.clone());
        send(&mut a, req(PROMPT)).await;
        assert_eq!(send(&mut b, req(PROMPT)).await.0, Status::Hit);
        assert_eq!(up.calls(), 1);
    }

    /// A store that answers only through futures that wait once, as a
    /// networked store would.
    #[derive(Clone, Debug, Default)]
    struct SlowStore(MemoryStore);

    type BoxFut<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

    impl CacheStore for SlowStore {
        type Get = BoxFut<Option<Arc<CachedResponse>>>;
        type Put = BoxFut<()>;
        fn get(&self, key: &CacheKey) -> Self::Get {
            let (store, key) = (self.0.clone(), key.clone());
            Box::pin(async move {
                tokio::task::yield_now().await;
                store.get_now(&key)
            })
        }
        fn put(&self, key: CacheKey, entry: Arc<CachedResponse>, retain: Duration) -> Self::Put {
            let store = self.0.clone();
            Box::pin(async move {
                tokio::task::yield_now().await;
                store.put(key, entry, retain).await;
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_asynchronous_store_works_the_same() {
        let up = Upstream::ok_json().delayed(Duration::from_millis(5));
        let layer = CacheLayer::builder()
            .store(SlowStore::default())
            .build()
            .expect("config");
        let svc = layer.clone().layer(up.clone());
        let tasks = send_concurrently(&svc, 10, || req(PROMPT));
        for t in tasks {
            assert_eq!(&t.await.expect("task").3[..], JSON_ANSWER.as_bytes());
        }
        assert_eq!(up.calls(), 1);
        // The write was spawned; once it ran, a later request hits.
        tokio::task::yield_now().await;
        assert_eq!(layer.store().0.len(), 1);
        assert_eq!(send(&mut svc.clone(), req(PROMPT)).await.0, Status::Hit);
        assert_eq!(up.calls(), 1);
    }

    // ---- against the simulator (real sockets, real time) ----

    mod sim {
        use super::*;
        use tower_llm_resilience::client::HyperClient;
        use tower_llm_resilience::sim::{SimConfig, Simulator};

        fn to(url: &str, body: &str) -> Request<ReplayBody> {
            support::http::anthropic(
                &format!("{url}/v1/messages"),
                "sk-sim-SECRET",
                body.to_owned(),
            )
        }

        #[tokio::test]
        async fn stream_once_replay_equals_the_original_bytes() {
            let sim = Simulator::start(SimConfig::new().with_seed(3))
                .await
                .expect("simulator");
            let mut svc = CacheLayer::new().layer(HyperClient::new());
            let body = stream_prompt();
            let (s1, c1, h1, first) = send(&mut svc, to(&sim.url(), &body)).await;
            assert_eq!((s1, c1), (Status::Miss, StatusCode::OK));
            assert!(first.ends_with(b"data: {\"type\":\"message_stop\"}\n\n"));
            let (s2, c2, h2, again) = send(&mut svc, to(&sim.url(), &body)).await;
            assert_eq!((s2, c2), (Status::Hit, StatusCode::OK));
            assert_eq!(again, first, "replay is byte-identical");
            assert_eq!(h2["request-id"], h1["request-id"]);
            assert!(
                h2["content-type"]
                    .to_str()
                    .expect("ascii")
                    .starts_with("text/event-stream")
            );
            assert!(h2.get("transfer-encoding").is_none());
            assert_eq!(sim.counters().received, 1);
            sim.shutdown().await;
        }

        #[tokio::test]
        async fn json_hit_and_coalesced_misses_reach_upstream_once() {
            let sim = Simulator::start(
                SimConfig::new()
                    .with_seed(4)
                    .with_request_latency(Duration::from_millis(50)),
            )
            .await
            .expect("simulator");
            let svc = CacheLayer::new().layer(HyperClient::new());
            let url = sim.url();
            let tasks = send_concurrently(&svc, 20, || to(&url, PROMPT));
            let mut bodies = Vec::new();
            for t in tasks {
                let (_, code, _, body) = t.await.expect("task");
                assert_eq!(code, StatusCode::OK);
                bodies.push(body);
            }
            assert!(bodies.windows(2).all(|w| w[0] == w[1]));
            assert_eq!(sim.counters().received, 1);
            sim.shutdown().await;
        }
    }
}
