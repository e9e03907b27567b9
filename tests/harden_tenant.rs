//! Step 7, tenant isolation: who a request is (every credential header and
//! every value of it, under a keyed hash), that what logs and stats show
//! cannot be turned into a cache hit, that credential headers are marked
//! sensitive, and that only complete provider answers are stored.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;
use tower_llm_resilience::cache::{CacheLayer, CacheStatus, Status};
use tower_llm_resilience::rate::{Limits, RateLimitLayer};
use tower_llm_resilience::request::{BufferBodyLayer, KeyId, ReplayBody};
use tower_llm_resilience::response::ResponseBody;

const PROMPT: &str = r#"{"model":"claude-haiku-4-5","max_tokens":16,"temperature":0,"messages":[{"role":"user","content":"2+2?"}]}"#;
const ANSWER: &str = r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"4"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":1}}"#;

/// A request to `uri` carrying `headers` (repeats allowed, in order).
fn request(uri: &str, headers: &[(&str, &str)]) -> Request<ReplayBody> {
    let mut b = Request::post(uri)
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01");
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(ReplayBody::from(PROMPT)).expect("request")
}

/// A cache in front of an upstream that counts its calls and answers
/// `body` with status 200 (`content-type: application/json`).
fn cached(
    body: &'static str,
) -> (
    impl Service<
        Request<ReplayBody>,
        Response = Response<ResponseBody>,
        Error = tower_llm_resilience::BoxError,
    > + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let upstream = service_fn(move |_req: Request<ReplayBody>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .expect("response"),
            )
        }
    });
    (CacheLayer::new().layer(upstream), calls)
}

/// Sends `req`, reads the whole body, and says how the cache answered.
async fn send<S>(svc: &mut S, req: Request<ReplayBody>) -> Status
where
    S: Service<
            Request<ReplayBody>,
            Response = Response<ResponseBody>,
            Error = tower_llm_resilience::BoxError,
        >,
{
    let res = svc
        .ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("response");
    let status = res
        .extensions()
        .get::<CacheStatus>()
        .expect("status")
        .status;
    res.into_body().collect().await.expect("body");
    status
}

/// Two requests that differ only in their credentials: how many reached
/// upstream.
async fn upstream_calls_for(a: Request<ReplayBody>, b: Request<ReplayBody>) -> usize {
    let (mut svc, calls) = cached(ANSWER);
    send(&mut svc, a).await;
    send(&mut svc, b).await;
    calls.load(Ordering::SeqCst)
}

const MESSAGES: &str = "https://api.anthropic.com/v1/messages";

#[tokio::test(start_paused = true)]
async fn azure_api_key_and_gemini_x_goog_api_key_are_not_anonymous() {
    for name in ["api-key", "x-goog-api-key"] {
        let a = request(MESSAGES, &[(name, "secret-tenant-a")]);
        let b = request(MESSAGES, &[(name, "secret-tenant-b")]);
        assert!(
            KeyId::from_headers(a.headers()).is_some(),
            "{name} is a credential"
        );
        assert_ne!(
            KeyId::from_headers(a.headers()),
            KeyId::from_headers(b.headers()),
            "{name}"
        );
        assert_eq!(upstream_calls_for(a, b).await, 2, "{name}: shared an entry");
    }
}

#[tokio::test(start_paused = true)]
async fn gemini_key_query_parameter_names_the_rate_limit_group() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let upstream = service_fn(move |_req: Request<ReplayBody>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                ANSWER.as_bytes(),
            ))))
        }
    });
    let layer = RateLimitLayer::new(Limits::unlimited());
    let mut svc = layer.layer(upstream);
    for key in ["gemini-secret-a", "gemini-secret-b"] {
        let uri = format!(
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent?key={key}"
        );
        let res = svc
            .ready()
            .await
            .expect("ready")
            .call(request(&uri, &[]))
            .await
            .expect("response");
        res.into_body().collect().await.expect("body");
    }
    let stats = layer.stats();
    assert_eq!(stats.len(), 2, "one group per key: {stats:?}");
    assert!(stats.iter().all(|g| g.key.is_some()), "{stats:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn repeated_x_api_key_header_counts_every_value() {
    let a = request(
        MESSAGES,
        &[("x-api-key", "sk-first"), ("x-api-key", "sk-second-a")],
    );
    let b = request(
        MESSAGES,
        &[("x-api-key", "sk-first"), ("x-api-key", "sk-second-b")],
    );
    assert_ne!(
        KeyId::from_headers(a.headers()),
        KeyId::from_headers(b.headers())
    );
    assert_eq!(upstream_calls_for(a, b).await, 2, "shared an entry");
}

/// The old `KeyId`: `xxh3_64` (seed 0) of the `x-api-key` value, which
/// `GroupStats`, `ThresholdEvent` and TRACE logs showed in hex.
fn old_fingerprint(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// For an 8-byte input XXH3-64 is a bijection (`input ^ constant`, then
/// the invertible `rrmxmx` mix): the 8 bytes that hash to `id`.
fn invert_old_fingerprint(id: u64) -> [u8; 8] {
    const C: u64 = 0x9FB2_1C65_1E98_DF25;
    // The inverse of an odd multiplier modulo 2^64 (Newton's iteration).
    let mut inv = C;
    for _ in 0..5 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(C.wrapping_mul(inv)));
    }
    let unshift = |mut h: u64, s: u32| {
        let mut x = h;
        for _ in 0..64 / s {
            x = h ^ (x >> s);
        }
        h = x;
        h
    };
    let mix = |h: u64| h ^ h.rotate_left(49) ^ h.rotate_left(24);
    let unmix = |h: u64| (0..63).fold(h, |x, _| mix(x)); // the map has order 64
    let undo = |mut h: u64| {
        h = unshift(h, 28).wrapping_mul(inv);
        // h ^= (h >> 35) + 8: the top 30 bits are untouched, which gives h >> 35.
        h ^= (h >> 35) + 8;
        unmix(h.wrapping_mul(inv))
    };
    // input64 = lo32(last 4 bytes) + (first 4 bytes << 32), xor a constant
    // of the default secret — learnt from one known input.
    let input64 = |b: &[u8; 8]| {
        u64::from(u32::from_le_bytes(b[4..].try_into().expect("4 bytes")))
            | (u64::from(u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))) << 32)
    };
    let probe = *b"probe-01";
    let flip = undo(old_fingerprint(&probe)) ^ input64(&probe);
    let v = undo(id) ^ flip;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&((v >> 32) as u32).to_le_bytes());
    out[4..].copy_from_slice(&(v as u32).to_le_bytes());
    out
}

/// Bytes that hyper's HTTP/1 parser accepts in a header value (visible
/// ASCII and inner spaces).
fn passes_http1(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| (0x21..0x7f).contains(b))
}

#[tokio::test(start_paused = true)]
async fn forged_key_with_the_victims_displayed_fingerprint_gets_no_hit() {
    // A victim whose fingerprint inverts to bytes a header may carry.
    let (victim, forged) = (0u32..)
        .map(|i| format!("sk-ant-api03-victim-{i:08}"))
        .find_map(|victim| {
            let forged = invert_old_fingerprint(old_fingerprint(victim.as_bytes()));
            passes_http1(&forged).then_some((victim, forged))
        })
        .expect("a forgeable victim");
    assert_eq!(
        old_fingerprint(&forged),
        old_fingerprint(victim.as_bytes()),
        "the forgery reproduces the old fingerprint"
    );
    let forged = std::str::from_utf8(&forged).expect("ascii").to_owned();
    let (mut svc, calls) = cached(ANSWER);
    assert_eq!(
        send(&mut svc, request(MESSAGES, &[("x-api-key", &victim)])).await,
        Status::Miss
    );
    assert_eq!(
        send(&mut svc, request(MESSAGES, &[("x-api-key", &forged)])).await,
        Status::Miss,
        "the forged key was served the victim's entry"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // And what is shown of the victim's identity is not its old fingerprint.
    let shown = format!(
        "{:?}",
        KeyId::from_headers(request(MESSAGES, &[("x-api-key", &victim)]).headers())
    );
    let old = format!("{:016x}", old_fingerprint(victim.as_bytes()));
    assert!(!shown.contains(&old), "{shown}");
}

#[tokio::test(start_paused = true)]
async fn error_empty_or_truncated_200_is_not_cached() {
    for body in [
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        r#"{"error":{"message":"Rate limit","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        "",
        "   ",
        r#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"4"#,
        r#"{"id":"msg_1","type":"message"} trailing"#,
        "[1,2,3]",
        "null",
    ] {
        let (mut svc, calls) = cached(body);
        send(&mut svc, request(MESSAGES, &[("x-api-key", "sk-a")])).await;
        let second = send(&mut svc, request(MESSAGES, &[("x-api-key", "sk-a")])).await;
        assert_eq!(second, Status::Miss, "cached: {body:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{body:?}");
    }
    // A complete answer is.
    let (mut svc, calls) = cached(ANSWER);
    send(&mut svc, request(MESSAGES, &[("x-api-key", "sk-a")])).await;
    let second = send(&mut svc, request(MESSAGES, &[("x-api-key", "sk-a")])).await;
    assert_eq!((second, calls.load(Ordering::SeqCst)), (Status::Hit, 1));
}

#[tokio::test(start_paused = true)]
async fn every_proper_prefix_of_an_answer_is_refused_and_the_whole_is_stored() {
    for cut in 0..=ANSWER.len() {
        let body: &'static str = Box::leak(ANSWER[..cut].to_owned().into_boxed_str());
        let (mut svc, calls) = cached(body);
        send(&mut svc, request(MESSAGES, &[("x-api-key", "sk-a")])).await;
        let second = send(&mut svc, request(MESSAGES, &[("x-api-key", "sk-a")])).await;
        let stored = calls.load(Ordering::SeqCst) == 1;
        assert_eq!(stored, cut == ANSWER.len(), "prefix of {cut} bytes");
        assert_eq!(second == Status::Hit, stored);
    }
}

#[tokio::test]
async fn credential_headers_are_marked_sensitive_by_buffer_body() {
    let seen = Arc::new(Mutex::new(None));
    let keep = Arc::clone(&seen);
    let inner = service_fn(move |req: Request<ReplayBody>| {
        *keep.lock().expect("lock") = Some(format!("{req:?}"));
        let sensitive: Vec<bool> = ["authorization", "x-api-key", "api-key", "x-goog-api-key"]
            .iter()
            .flat_map(|n| {
                req.headers()
                    .get_all(*n)
                    .iter()
                    .map(HeaderValue::is_sensitive)
            })
            .collect();
        async move { Ok::<_, Infallible>(sensitive) }
    });
    let mut svc = BufferBodyLayer::new(1 << 20).layer(inner);
    let mut req = Request::post(MESSAGES)
        .header("authorization", "Bearer sk-proj-SECRET-1")
        .header("x-api-key", "sk-ant-SECRET-2")
        .header("x-api-key", "sk-ant-SECRET-3")
        .header("api-key", "azure-SECRET-4")
        .header("x-goog-api-key", "gemini-SECRET-5")
        .body(Full::new(Bytes::from_static(PROMPT.as_bytes())))
        .expect("request");
    req.headers_mut()
        .insert("x-other", HeaderValue::from_static("visible"));
    let sensitive = ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("call");
    assert_eq!(sensitive, vec![true; 5]);
    let shown = seen.lock().expect("lock").clone().expect("called");
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(shown.contains("visible"), "{shown}");
}

/// Credentials as a request carries them: which source, which value.
#[derive(Debug, Clone)]
struct Cred(usize, String);

const SOURCES: [&str; 4] = ["x-api-key", "authorization", "api-key", "x-goog-api-key"];

fn build(creds: &[Cred]) -> Request<ReplayBody> {
    let query: Vec<String> = creds
        .iter()
        .filter(|c| c.0 == SOURCES.len())
        .map(|c| format!("key={}", c.1))
        .collect();
    let uri = if query.is_empty() {
        MESSAGES.to_owned()
    } else {
        format!("{MESSAGES}?alt=sse&{}", query.join("&"))
    };
    let mut req = request(&uri, &[]);
    let headers: &mut HeaderMap = req.headers_mut();
    for c in creds.iter().filter(|c| c.0 < SOURCES.len()) {
        headers.append(SOURCES[c.0], HeaderValue::from_str(&c.1).expect("value"));
    }
    req
}

/// What identifies a set of credentials: each source's values, in order
/// (the interleaving of different headers is not kept by HTTP).
fn canonical(creds: &[Cred]) -> Vec<Vec<String>> {
    (0..=SOURCES.len())
        .map(|s| {
            creds
                .iter()
                .filter(|c| c.0 == s)
                .map(|c| c.1.clone())
                .collect()
        })
        .collect()
}

fn creds() -> impl Strategy<Value = Vec<Cred>> {
    // A small alphabet, so that equal and nearly equal sets both occur.
    prop::collection::vec(
        (0..=SOURCES.len(), "[ab]{0,3}").prop_map(|(s, v)| Cred(s, v)),
        0..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Distinct credential sets (sources, values, order, repeats) are
    /// distinct tenants; equal ones are the same tenant.
    #[test]
    fn distinct_credential_sets_are_distinct_tenants(a in creds(), b in creds()) {
        let (ra, rb) = (build(&a), build(&b));
        let (ia, ib) = (KeyId::of(&ra), KeyId::of(&rb));
        prop_assert_eq!(ia.is_none(), a.is_empty());
        prop_assert_eq!(ia == ib, canonical(&a) == canonical(&b), "{:?} {:?}", a, b);
    }
}

#[test]
fn the_displayed_key_id_is_a_short_label() {
    let id = KeyId::from_headers(request(MESSAGES, &[("x-api-key", "sk-ant-SECRET")]).headers())
        .expect("a key");
    let (debug, display) = (format!("{id:?}"), format!("{id}"));
    assert!(!debug.contains("SECRET") && !display.contains("SECRET"));
    // 32 bits shown: far fewer than the 128 the cache keys by.
    assert_eq!(display.len(), 8, "{display}");
    assert!(display.bytes().all(|b| b.is_ascii_hexdigit()), "{display}");
    assert_eq!(debug, format!("KeyId({display})"));
    let _ = StatusCode::OK;
}
