//! [`HyperClient`]: hyper-util's pooled client (the `hyper-client` feature).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture as HyperFuture};
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use crate::error::BoxError;
use crate::request::ReplayBody;
use crate::response::ResponseBody;

/// hyper-util's pooled client over rustls, as [`HyperClient`] uses it.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, ReplayBody>;

/// A cloneable HTTP client service: `Request<ReplayBody>` in,
/// `Response<ResponseBody>` out. Clones share one connection pool.
#[derive(Clone)]
pub struct HyperClient {
    inner: HttpsClient,
}

impl fmt::Debug for HyperClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperClient").finish_non_exhaustive()
    }
}

impl Default for HyperClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HyperClient {
    /// A client speaking HTTP/1.1 and HTTP/2 (negotiated by ALPN), to
    /// `https` with the webpki root certificates and to plain `http`
    /// (the simulator, local gateways).
    ///
    /// # Panics
    ///
    /// Never in practice: rustls is built with exactly one crypto
    /// provider (ring), which the builder selects.
    pub fn new() -> Self {
        let https = HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        Self::from_client(Client::builder(TokioExecutor::new()).build(https))
    }

    /// Wraps a client configured elsewhere (pool sizes, timeouts, proxies).
    pub fn from_client(inner: HttpsClient) -> Self {
        HyperClient { inner }
    }

    /// The hyper-util client.
    pub fn get_ref(&self) -> &HttpsClient {
        &self.inner
    }
}

impl Service<Request<ReplayBody>> for HyperClient {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> ResponseFuture {
        ResponseFuture {
            inner: self.inner.request(req),
        }
    }
}

/// The response future of [`HyperClient`].
pub struct ResponseFuture {
    inner: HyperFuture,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(Pin::new(&mut self.inner).poll(cx))?;
        Poll::Ready(Ok(ResponseBody::from_response(res)))
    }
}
