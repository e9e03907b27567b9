//! The cache layer's hit path, and the two candidate engines side by side
//! on the same keys. `cargo bench --bench cache`.

mod support;

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use support::now as poll_now;
use tower_layer::Layer;
use tower_llm_resilience::cache::{
    CacheKey, CacheLayer, CachedResponse, DefaultKeyPolicy, KeyPolicy, TenantId, canonical_hash,
};
use tower_llm_resilience::request::{KeyId, ReplayBody};
use tower_service::Service;

const KEYS: usize = 10_000;

fn keys() -> Vec<CacheKey> {
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_static("sk-bench"));
    let tenant = TenantId::Key(KeyId::from_headers(&h).expect("key"));
    (0..KEYS)
        .map(|i| {
            CacheKey::new(
                tenant.clone(),
                Method::POST,
                "/v1/messages",
                Some(HeaderValue::from_static("2023-06-01")),
                None,
                false,
                true,
                (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
            )
        })
        .collect()
}

fn entry() -> Arc<CachedResponse> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    Arc::new(CachedResponse::new(
        StatusCode::OK,
        headers,
        vec![Bytes::from_static(b"{\"content\":[]}")].into(),
        tokio::time::Instant::now(),
        Duration::from_secs(600),
    ))
}

fn engines(c: &mut Criterion) {
    let keys = keys();
    let value = entry();

    let moka: moka::sync::Cache<CacheKey, Arc<CachedResponse>> = moka::sync::Cache::builder()
        .max_capacity(64 * 1024 * 1024)
        .weigher(|_k, v: &Arc<CachedResponse>| v.size() as u32 + 128)
        .build();
    for k in &keys {
        moka.insert(k.clone(), Arc::clone(&value));
    }
    let mut i = 0usize;
    c.bench_function("cache/moka_get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(moka.get(black_box(&keys[i])))
        })
    });

    #[derive(Clone)]
    struct W;
    impl quick_cache::Weighter<CacheKey, Arc<CachedResponse>> for W {
        fn weight(&self, _k: &CacheKey, v: &Arc<CachedResponse>) -> u64 {
            v.size() as u64 + 128
        }
    }
    let qc = quick_cache::sync::Cache::with_weighter(KEYS, 64 * 1024 * 1024, W);
    for k in &keys {
        qc.insert(k.clone(), Arc::clone(&value));
    }
    let mut i = 0usize;
    c.bench_function("cache/quick_cache_get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(qc.get(black_box(&keys[i])))
        })
    });
}

fn hit(c: &mut Criterion) {
    let rt = support::runtime();
    let _guard = rt.enter();
    // Deterministic: stored, then hit.
    let body = support::messages_body_4k(true);
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static("sk-ant-api03-bench"));
    headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let request = || {
        let mut req = Request::new(ReplayBody::new(body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "https://api.anthropic.com/v1/messages"
            .parse()
            .expect("uri");
        *req.headers_mut() = headers.clone();
        req
    };
    let upstream = tower::service_fn(|_req: Request<ReplayBody>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .header("request-id", "req_1")
                .body(String::from(
                    r#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":900,"output_tokens":2}}"#,
                ))
                .expect("response"),
        )
    });
    let mut svc = CacheLayer::new().layer(upstream);
    // Fill: a miss whose body is read to the end.
    let res = poll_now(svc.call(request())).expect("miss");
    rt.block_on(http_body_util::BodyExt::collect(res.into_body()))
        .expect("body");
    let res = poll_now(svc.call(request())).expect("hit");
    assert_eq!(res.headers()["x-llm-cache"], "HIT");

    let mut group = c.benchmark_group("cache");
    group.throughput(Throughput::Bytes(body.len() as u64));
    let policy = DefaultKeyPolicy::new();
    let one = request();
    assert!(policy.key(&one).is_some());
    group.bench_function("key_alias_4k", |b| b.iter(|| policy.key(black_box(&one))));
    group.bench_function("canonical_4k", |b| {
        b.iter(|| canonical_hash(black_box(&body)))
    });
    group.bench_function("xxh3_4k", |b| {
        b.iter(|| xxhash_rust::xxh3::xxh3_128(black_box(&body)))
    });
    group.bench_function("hit_4k_body", |b| {
        b.iter_batched(
            request,
            |req| poll_now(svc.call(req)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, engines, hit);
criterion_main!(benches);
