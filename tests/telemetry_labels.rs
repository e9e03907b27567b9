//! Model names from requests are bounded as metric labels: at most
//! `MAX_MODEL_LABELS` distinct names, the rest `_OTHER`. Its own test
//! binary: the table of names is process-wide, and another test's models
//! would share it.
#![cfg(feature = "metrics")]

mod support;

use std::convert::Infallible;

use http::{Request, Response};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use support::http::{anthropic, text};
use tower::{ServiceExt, service_fn};
use tower_llm_resilience::Stack;
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::telemetry::{MAX_MODEL_LABELS, names};

#[test]
fn model_labels_are_bounded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let models = MAX_MODEL_LABELS + 20;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let svc = Stack::builder().service(service_fn(|_req: Request<ReplayBody>| async {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(String::from(
                            r#"{"usage":{"input_tokens":1,"output_tokens":1}}"#,
                        ))
                        .expect("response"),
                )
            }));
            for i in 0..models {
                let body =
                    format!(r#"{{"model":"client-model-{i}","max_tokens":16,"messages":[]}}"#);
                let res = svc
                    .clone()
                    .oneshot(anthropic("http://upstream/v1/messages", "sk-ant-x", body))
                    .await
                    .expect("response");
                text(res).await;
            }
        })
    });
    let mut labels = Vec::new();
    let mut measured = 0;
    for (ck, _, _, value) in snapshotter.snapshot().into_vec() {
        if ck.key().name() != names::OPERATION_DURATION {
            continue;
        }
        if let DebugValue::Histogram(h) = value {
            measured += h.len();
        }
        for l in ck.key().labels() {
            if l.key() == names::GEN_AI_REQUEST_MODEL {
                labels.push(l.value().to_owned());
            }
        }
    }
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), MAX_MODEL_LABELS + 1, "{labels:?}");
    assert!(labels.iter().any(|l| l == "_OTHER"), "{labels:?}");
    assert!(
        labels.iter().any(|l| l == "client-model-0"),
        "the first are kept"
    );
    assert!(
        !labels
            .iter()
            .any(|l| l == &format!("client-model-{}", models - 1))
    );
    assert_eq!(measured, models, "every request measured, under some label");
}
