//! [`ReqwestClient`]: a `reqwest::Client` as a tower `Service` (the
//! `reqwest` feature).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::error::BoxError;
use crate::request::ReplayBody;
use crate::response::ResponseBody;

/// A `reqwest::Client` as a cloneable `Service`: `Request<ReplayBody>` in,
/// `Response<ResponseBody>` out, the response body streamed as reqwest
/// reads it (SSE included). Clones share the client's connection pool.
///
/// The request body is handed to reqwest whole (it is already buffered),
/// so reqwest sends a `content-length`. reqwest's own settings apply —
/// its timeouts end a request with a reqwest error, which the stack's
/// layers treat as a transport failure.
#[derive(Clone, Default)]
pub struct ReqwestClient {
    inner: reqwest::Client,
}

impl fmt::Debug for ReqwestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestClient").finish_non_exhaustive()
    }
}

impl ReqwestClient {
    /// A default `reqwest::Client` (rustls with webpki roots, HTTP/1 and
    /// HTTP/2).
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps a client configured elsewhere.
    pub fn from_client(inner: reqwest::Client) -> Self {
        ReqwestClient { inner }
    }

    /// The reqwest client.
    pub fn get_ref(&self) -> &reqwest::Client {
        &self.inner
    }
}

impl From<reqwest::Client> for ReqwestClient {
    fn from(inner: reqwest::Client) -> Self {
        Self::from_client(inner)
    }
}

/// The response future of [`ReqwestClient`] (boxed: reqwest's own future
/// type is not nameable).
pub type ReqwestFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send + 'static>>;

impl Service<Request<ReplayBody>> for ReqwestClient {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ReqwestFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> ReqwestFuture {
        let req = req.map(|body| reqwest::Body::from(body.as_bytes().clone()));
        let client = self.inner.clone();
        Box::pin(async move {
            // reqwest's errors name the URL, whose query may hold a key
            // (Gemini's `key=`): dropped, as every error of the crate
            // keeps secrets out.
            let req = reqwest::Request::try_from(req).map_err(reqwest::Error::without_url)?;
            let res = client
                .execute(req)
                .await
                .map_err(reqwest::Error::without_url)?;
            let res = Response::from(res).map(|body| {
                use http_body_util::BodyExt;
                body.map_err(reqwest::Error::without_url)
            });
            Ok(ResponseBody::from_response(res))
        })
    }
}
