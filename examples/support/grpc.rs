//! A small gRPC service with a quota, written by hand (the machine has no
//! `protoc`): the proto below as prost messages, a tonic server and a
//! client in the shape tonic's code generator gives them. Used by the
//! `tonic_client` example and `tests/grpc.rs`.
//!
//! ```proto
//! syntax = "proto3";
//! package llm;
//! service Completer { rpc Complete(CompleteRequest) returns (CompleteReply); }
//! message CompleteRequest { string prompt = 1; }
//! message CompleteReply { string text = 1; uint64 served = 2; }
//! ```
//!
//! The server's quota is a token bucket (`burst` calls, refilled at
//! `burst` per `window`). A call over it is answered `RESOURCE_EXHAUSTED`
//! with `grpc-retry-pushback-ms`: the time until the bucket holds a call
//! again, rounded up.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body::Body;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower_llm_resilience::BoxError as StdError;

/// `llm.CompleteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CompleteRequest {
    /// The prompt.
    #[prost(string, tag = "1")]
    pub(crate) prompt: String,
}

/// `llm.CompleteReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CompleteReply {
    /// The answer.
    #[prost(string, tag = "1")]
    pub(crate) text: String,
    /// How many calls the server had answered with `OK`, this one included.
    #[prost(uint64, tag = "2")]
    pub(crate) served: u64,
}

const SERVICE: &str = "llm.Completer";
const COMPLETE: &str = "/llm.Completer/Complete";

/// The server's quota and what it did.
#[derive(Debug)]
pub(crate) struct Quota {
    burst: f64,
    per_sec: f64,
    bucket: Mutex<(f64, Instant)>,
    served: AtomicU64,
    refused: AtomicU64,
    /// Per `x-call-id`: when its last refusal was sent and the pushback it
    /// named (the ids are the caller's call numbers: bounded by them).
    pushed: Mutex<HashMap<String, (Instant, Duration)>>,
    early: AtomicU64,
    retried: AtomicU64,
}

impl Quota {
    /// `burst` calls, refilled at `burst` per `window`.
    pub(crate) fn new(burst: u32, window: Duration) -> Arc<Self> {
        Arc::new(Quota {
            burst: f64::from(burst),
            per_sec: f64::from(burst) / window.as_secs_f64(),
            bucket: Mutex::new((f64::from(burst), Instant::now())),
            served: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            pushed: Mutex::new(HashMap::new()),
            early: AtomicU64::new(0),
            retried: AtomicU64::new(0),
        })
    }

    /// Calls answered `OK`.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Calls refused with `RESOURCE_EXHAUSTED`.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Attempts that came back after a refusal of the same `x-call-id`.
    pub(crate) fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Of those, attempts that came back before the pushback had passed.
    pub(crate) fn early(&self) -> u64 {
        self.early.load(Ordering::Relaxed)
    }

    /// Notes an attempt of `call` arriving now, and whether it honoured
    /// the pushback of its last refusal.
    fn arrived(&self, call: Option<&str>) {
        let Some(call) = call else { return };
        let pushed = self.pushed.lock().expect("pushed lock");
        if let Some((at, wait)) = pushed.get(call) {
            self.retried.fetch_add(1, Ordering::Relaxed);
            if at.elapsed() < *wait {
                self.early.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn refused_with(&self, call: Option<&str>, wait: Duration) {
        if let Some(call) = call {
            let mut pushed = self.pushed.lock().expect("pushed lock");
            pushed.insert(call.to_owned(), (Instant::now(), wait));
        }
    }

    /// Takes one call from the bucket, or tells how long until one fits.
    fn take(&self) -> Result<u64, Duration> {
        let mut bucket = self.bucket.lock().expect("quota lock");
        let now = Instant::now();
        let (tokens, at) = *bucket;
        let tokens = (tokens + (now - at).as_secs_f64() * self.per_sec).min(self.burst);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            Ok(self.served.fetch_add(1, Ordering::Relaxed) + 1)
        } else {
            *bucket = (tokens, now);
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
        }
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// The `llm.Completer` server, as tonic's generated `CompleterServer`.
#[derive(Debug, Clone)]
pub(crate) struct CompleterServer {
    quota: Arc<Quota>,
}

impl CompleterServer {
    /// A server answering within `quota`.
    pub(crate) fn new(quota: Arc<Quota>) -> Self {
        CompleterServer { quota }
    }
}

impl NamedService for CompleterServer {
    const NAME: &'static str = SERVICE;
}

/// The `Complete` method.
struct CompleteSvc(Arc<Quota>);

impl UnaryService<CompleteRequest> for CompleteSvc {
    type Response = CompleteReply;
    type Future = BoxFuture<tonic::Response<CompleteReply>, Status>;

    fn call(&mut self, request: tonic::Request<CompleteRequest>) -> Self::Future {
        let quota = Arc::clone(&self.0);
        let call = request
            .metadata()
            .get("x-call-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        quota.arrived(call.as_deref());
        Box::pin(async move {
            match quota.take() {
                Ok(served) => Ok(tonic::Response::new(CompleteReply {
                    text: format!("echo: {}", request.into_inner().prompt),
                    served,
                })),
                Err(wait) => {
                    let ms = wait.as_nanos().div_ceil(1_000_000);
                    let sent = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
                    quota.refused_with(call.as_deref(), sent);
                    let mut metadata = MetadataMap::new();
                    metadata.insert(
                        "grpc-retry-pushback-ms",
                        ms.to_string().parse().expect("digits"),
                    );
                    Err(Status::with_metadata(
                        Code::ResourceExhausted,
                        "quota exceeded",
                        metadata,
                    ))
                }
            }
        })
    }
}

impl<B> tower::Service<http::Request<B>> for CompleterServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == COMPLETE {
            let method = CompleteSvc(Arc::clone(&self.quota));
            return Box::pin(async move {
                let codec = ProstCodec::<CompleteReply, CompleteRequest>::default();
                let mut grpc = tonic::server::Grpc::new(codec);
                Ok(grpc.unary(method, req).await)
            });
        }
        Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) })
    }
}

/// A running server; dropping it stops the server.
#[derive(Debug)]
pub(crate) struct Running {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its quota, with what it served and refused.
    pub(crate) quota: Arc<Quota>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts the server on an ephemeral loopback port.
pub(crate) async fn serve(quota: Arc<Quota>) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = CompleterServer::new(Arc::clone(&quota));
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(server, incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Running {
        addr,
        quota,
        _stop: stop,
    })
}

/// The `llm.Completer` client, as tonic's generated `CompleterClient`:
/// generic over the service it sends on (a `Channel`, or a `Channel`
/// under this crate's layers).
#[derive(Debug, Clone)]
pub(crate) struct CompleterClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> CompleterClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    /// A client sending on `inner` (the origin is the channel's).
    pub(crate) fn new(inner: T) -> Self {
        CompleterClient {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    /// `Complete`.
    pub(crate) async fn complete(
        &mut self,
        request: impl tonic::IntoRequest<CompleteRequest>,
    ) -> Result<tonic::Response<CompleteReply>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("service was not ready: {}", e.into())))?;
        let codec = ProstCodec::<CompleteRequest, CompleteReply>::default();
        let mut request = request.into_request();
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new(SERVICE, "Complete"));
        self.inner
            .unary(request, PathAndQuery::from_static(COMPLETE), codec)
            .await
    }
}
