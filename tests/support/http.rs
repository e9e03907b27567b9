//! Requests and response bodies: the provider-shaped requests the suites
//! send, and reading what comes back.

use std::sync::mpsc;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::response::{Completion, ResponseBody};

/// The `anthropic-version` every Anthropic request here carries.
pub(crate) const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A JSON `POST` to `uri` with these headers besides `content-type`.
pub(crate) fn post_json(
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<ReplayBody>,
) -> Request<ReplayBody> {
    let mut b = Request::post(uri);
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.header("content-type", "application/json")
        .body(body.into())
        .expect("request")
}

/// An Anthropic Messages request to `uri`, authenticated by `x-api-key`.
pub(crate) fn anthropic(uri: &str, key: &str, body: impl Into<ReplayBody>) -> Request<ReplayBody> {
    post_json(
        uri,
        &[("x-api-key", key), ("anthropic-version", ANTHROPIC_VERSION)],
        body,
    )
}

/// The whole body of `res`.
pub(crate) async fn bytes<B>(res: Response<B>) -> Bytes
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    res.into_body().collect().await.expect("body").to_bytes()
}

/// The whole body of `res`, as text (lossy).
pub(crate) async fn text<B>(res: Response<B>) -> String
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    String::from_utf8_lossy(&bytes(res).await).into_owned()
}

/// Tells how `res`'s body ended, once it has: attach before reading it.
pub(crate) fn completion(res: &mut Response<ResponseBody>) -> mpsc::Receiver<Completion> {
    let (tx, rx) = mpsc::channel();
    res.body_mut()
        .on_complete(move |c| tx.send(c.clone()).expect("send"));
    rx
}
