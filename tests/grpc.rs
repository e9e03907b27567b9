//! gRPC through this crate's layers, on real sockets: a tonic server on
//! loopback with a quota (`examples/support/grpc.rs`), a tonic `Channel`
//! under BufferBody + Retry (+ RateLimit + ConcurrencyLimit), and the
//! `tonic_client` example run as its `main` runs it, checking what it
//! prints.

#[allow(dead_code)]
#[path = "../examples/tonic_client.rs"]
mod tonic_client;

use std::time::Duration;

use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;
use tower_llm_resilience::provider::GrpcCode;
use tower_llm_resilience::request::{BufferBodyLayer, ReplayBody};
use tower_llm_resilience::retry::{RetryInfo, RetryLayer, RetryReason};

use tonic_client::grpc::{self, CompleteRequest, CompleterClient, Quota};

async fn connect(server: &grpc::Running) -> Channel {
    Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// Calls `calls` times at once through `client`; the results in order.
async fn call_all<T>(
    client: CompleterClient<T>,
    calls: usize,
) -> Vec<Result<tonic::Response<grpc::CompleteReply>, tonic::Status>>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Error: Into<tower_llm_resilience::BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tower_llm_resilience::BoxError> + Send,
    T::Future: Send,
{
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut req = tonic::Request::new(CompleteRequest {
                    prompt: format!("call {i}"),
                });
                req.metadata_mut()
                    .insert("x-call-id", i.to_string().parse().expect("digits"));
                client.complete(req).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

/// Over the quota, the server answers a trailers-only `RESOURCE_EXHAUSTED`
/// with `grpc-retry-pushback-ms`; the retry layer waits that long (never
/// less: the server checks each call's next attempt against the pushback
/// it sent) and every call succeeds.
#[tokio::test]
async fn over_quota_calls_are_retried_after_the_pushback_and_succeed() {
    let server = grpc::serve(Quota::new(2, Duration::from_millis(200)))
        .await
        .expect("serve");
    let channel = connect(&server).await;
    let retry = RetryLayer::builder()
        .max_attempts(30)
        .no_budget()
        .build()
        .expect("retry config");
    let svc = ServiceBuilder::new()
        .layer(BufferBodyLayer::new(1 << 20))
        .layer(retry)
        .map_request(|req: http::Request<ReplayBody>| req.map(tonic::body::Body::new))
        .service(channel);
    let results = call_all(CompleterClient::new(svc), 6).await;

    let mut retried = 0;
    for (i, result) in results.into_iter().enumerate() {
        let res = result.unwrap_or_else(|s| panic!("call {i} failed: {s:?}"));
        assert_eq!(res.get_ref().text, format!("echo: call {i}"));
        let info = res.extensions().get::<RetryInfo>().expect("RetryInfo");
        if info.attempts > 1 {
            retried += 1;
            assert_eq!(
                info.last_reason,
                Some(RetryReason::Grpc(GrpcCode::ResourceExhausted))
            );
            assert!(info.total_wait > Duration::ZERO);
        }
    }
    let quota = &server.quota;
    assert_eq!(quota.served(), 6);
    // Six at once against a burst of two: at least four were refused first.
    assert!(retried >= 4, "{retried} calls retried");
    assert!(quota.refused() >= 4, "{} refused", quota.refused());
    assert_eq!(
        quota.retried(),
        quota.refused(),
        "every refusal was retried"
    );
    assert_eq!(quota.early(), 0, "a retry came back before its pushback");
}

/// Without the retry layer the same refusals reach the caller: the test
/// above measures the layer, not a lenient server.
#[tokio::test]
async fn the_bare_channel_sees_the_refusals() {
    let server = grpc::serve(Quota::new(2, Duration::from_secs(10)))
        .await
        .expect("serve");
    let results = call_all(CompleterClient::new(connect(&server).await), 5).await;
    let exhausted = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .is_err_and(|s| s.code() == Code::ResourceExhausted)
        })
        .count();
    assert_eq!(exhausted, 3);
    assert_eq!(server.quota.retried(), 0);
    let status = results
        .into_iter()
        .find_map(Result::err)
        .expect("a refusal");
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_some());
}

/// The example, as `cargo run --example tonic_client -- --calls 12
/// --concurrency 6 --burst 3 --window-ms 300` runs it.
#[tokio::test]
async fn the_tonic_client_example_prints_its_rows() {
    let opts = tonic_client::Options {
        calls: 12,
        concurrency: 6,
        burst: 3,
        window: Duration::from_millis(300),
    };
    let mut out = Vec::new();
    let rows = tonic_client::run(opts, &mut out).await.expect("run");
    let out = String::from_utf8(out).expect("utf-8");
    println!("{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("server quota: 3 calls"), "{out}");
    assert!(lines[1].starts_with("client"), "{out}");
    assert!(lines[2].starts_with("channel alone "), "{out}");
    assert!(lines[3].starts_with("+ retry "), "{out}");
    assert!(
        lines[4].starts_with("+ rate + concurrency + retry "),
        "{out}"
    );
    assert!(
        lines[5].starts_with("retries the server saw: ")
            && lines[5].ends_with("before its pushback: 0"),
        "{out}"
    );
    assert_eq!(
        lines.get(6),
        Some(&"all calls answered through the stack"),
        "{out}"
    );
    // The printed figures are the measured ones.
    let ok: Vec<usize> = lines[2..5]
        .iter()
        .map(|l| {
            // ok, ok retried, exhausted, refused, attempts, elapsed, "s".
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields[fields.len() - 7].parse().expect("a number")
        })
        .collect();
    assert_eq!(ok, rows.iter().map(|r| r.ok).collect::<Vec<_>>(), "{out}");
    // Alone, the channel gets refusals through to the caller; the stack
    // gets every call answered, and no retry came back early.
    assert!(rows[0].exhausted > 0);
    assert_eq!(rows[0].ok + rows[0].exhausted, 12);
    assert_eq!(rows[2].ok, 12);
    assert!(rows.iter().all(|r| r.early == 0));
}
