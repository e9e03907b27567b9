//! A [`KeyIdentity`] installed by the user: a shared secret (so processes
//! agree on ids and labels) and a credential header of its own. Its own
//! test binary: the identity is process-wide and installed once, before
//! the first id is computed.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;
use tower_llm_resilience::cache::CacheLayer;
use tower_llm_resilience::request::{BufferBodyLayer, KeyId, KeyIdentity, ReplayBody};

const PROMPT: &str = r#"{"model":"m","max_tokens":8,"temperature":0,"messages":[]}"#;
const ANSWER: &str = r#"{"id":"msg_1","type":"message","content":[]}"#;
const GATEWAY: HeaderName = HeaderName::from_static("x-gateway-key");

/// Installs the test identity once, whichever test runs first.
fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        KeyIdentity::with_secret([42; 32])
            .header(GATEWAY)
            .install()
            .expect("first install");
    });
}

fn request(gateway_key: &str) -> Request<ReplayBody> {
    Request::post("https://gateway.example/v1/messages")
        .header(GATEWAY, gateway_key)
        .body(ReplayBody::from(PROMPT))
        .expect("request")
}

#[test]
fn a_second_install_is_refused() {
    install();
    let err = KeyIdentity::new().install().expect_err("already installed");
    assert_eq!(err.field, "key_identity");
    assert!(err.to_string().contains("already in use"), "{err}");
}

#[test]
fn the_shared_secret_gives_the_same_ids_in_every_process() {
    install();
    // What another process with the same secret computes: the same label
    // (the ids themselves are never shown).
    let id = KeyId::of(&request("gw-1")).expect("a credential");
    assert_eq!(id, KeyId::of(&request("gw-1")).expect("id"));
    assert_eq!(format!("{id}"), format!("{:08x}", id.label()));
    assert_ne!(Some(id), KeyId::of(&request("gw-2")));
}

#[tokio::test(start_paused = true)]
async fn an_added_credential_header_separates_tenants_and_is_sensitive() {
    install();
    let calls = Arc::new(AtomicUsize::new(0));
    let sensitive = Arc::new(Mutex::new(Vec::new()));
    let (counted, seen) = (Arc::clone(&calls), Arc::clone(&sensitive));
    let upstream = service_fn(move |req: Request<ReplayBody>| {
        counted.fetch_add(1, Ordering::SeqCst);
        seen.lock()
            .expect("lock")
            .push(req.headers()[&GATEWAY].is_sensitive());
        async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                ANSWER.as_bytes(),
            ))))
        }
    });
    let mut svc = BufferBodyLayer::new(1 << 20).layer(CacheLayer::new().layer(upstream));
    for key in ["gw-a", "gw-b", "gw-a"] {
        let res = ServiceExt::<Request<ReplayBody>>::ready(&mut svc)
            .await
            .expect("ready")
            .call(request(key))
            .await
            .expect("response");
        res.into_body().collect().await.expect("body");
    }
    // gw-a, then gw-b (another tenant), then gw-a again from the cache.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(*sensitive.lock().expect("lock"), [true, true]);
}
