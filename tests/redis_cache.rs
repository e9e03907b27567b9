//! The Redis cache store against a real Redis: an entry written by one
//! cache layer is a hit in another (two "processes" sharing one server),
//! TTL expiry by Redis, the entry size limit, tenant isolation (also when
//! the stored values are swapped under the keys), and no key material in
//! any Redis key or value (its faults — a dead or slow server, `SCRIPT
//! FLUSH` — are in `redis_faults`). Every test skips with one line without a
//! Redis (see `support::redis`).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tower::service_fn;
use tower_layer::Layer;
use tower_llm_resilience::BoxError;
use tower_llm_resilience::cache::{CacheLayer, Status};
use tower_llm_resilience::redis::{Redis, RedisStore};
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::response::ResponseBody;

use support::cache::{ANSWER, PROMPT, ask, send, upstream, written};
use support::redis::RedisServer;

const KEY_A: &str = "sk-ant-api03-SECRET-AAAA";
const KEY_B: &str = "sk-ant-api03-SECRET-BBBB";

/// A second handle on the same server and prefix as `redis`: another
/// process's view.
fn same_place(server: &RedisServer, redis: &Redis) -> Redis {
    Redis::new(&server.url)
        .expect("url")
        .with_prefix(redis.prefix().to_owned())
}

/// Every key under `prefix`, with its value.
async fn dump(server: &RedisServer, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let client = redis::Client::open(server.url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut out = Vec::new();
    for k in keys {
        let v: Vec<u8> = redis::cmd("GET")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .expect("GET");
        out.push((k, v));
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn an_entry_one_layer_stores_is_a_hit_in_another_sharing_redis() {
    let Some(server) = RedisServer::get("redis_cache") else {
        return;
    };
    let redis = server.handle();
    let (one, two) = (
        RedisStore::new(redis.clone()),
        RedisStore::new(same_place(&server, &redis)),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let mut first = CacheLayer::builder()
        .store(one.clone())
        .build()
        .expect("cache")
        .layer(upstream(calls.clone(), ANSWER.into()));
    let mut second = CacheLayer::builder()
        .store(two.clone())
        .build()
        .expect("cache")
        .layer(upstream(calls.clone(), ANSWER.into()));

    assert_eq!(
        send(&mut first, ask(KEY_A)).await,
        (Status::Miss, ANSWER.into())
    );
    written(&one, 1).await;
    assert_eq!(
        send(&mut second, ask(KEY_A)).await,
        (Status::Hit, ANSWER.into())
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the second layer went upstream"
    );
    assert_eq!((two.stats().hits, two.stats().writes), (1, 0));
    // The first one reads it back too.
    assert_eq!(send(&mut first, ask(KEY_A)).await.0, Status::Hit);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn entries_expire_with_redis_ttl() {
    let Some(server) = RedisServer::get("redis_cache") else {
        return;
    };
    let redis = server.handle();
    let store = RedisStore::new(redis.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CacheLayer::builder()
        .store(store.clone())
        .ttl(Duration::from_millis(400))
        .stale_if_error(Duration::from_millis(200))
        .build()
        .expect("cache")
        .layer(upstream(calls.clone(), ANSWER.into()));

    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Miss);
    written(&store, 1).await;
    // Redis keeps it for the TTL plus the stale window, no longer.
    let client = redis::Client::open(server.url.as_str()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("c");
    let (key, _) = dump(&server, redis.prefix()).await.remove(0);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!((1..=600).contains(&pttl), "PTTL {pttl}");
    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Hit);

    // Past the TTL (by the age Redis reports): no longer fresh, goes
    // upstream; past the retention it is gone from Redis.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Miss);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    written(&store, 2).await;
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert!(
        dump(&server, redis.prefix()).await.is_empty(),
        "not expired"
    );
    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Miss);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_oversized_entry_is_refused_and_not_stored() {
    let Some(server) = RedisServer::get("redis_cache") else {
        return;
    };
    let redis = server.handle();
    let store = RedisStore::builder(redis.clone())
        .max_entry_size(600)
        .build()
        .expect("store");
    let calls = Arc::new(AtomicUsize::new(0));
    let big = format!(
        r#"{{"id":"msg_1","type":"message","content":[{{"type":"text","text":"{}"}}]}}"#,
        "x".repeat(1000)
    );
    let mut svc = CacheLayer::builder()
        .store(store.clone())
        .build()
        .expect("cache")
        .layer(upstream(calls.clone(), big.clone()));
    assert_eq!(
        send(&mut svc, ask(KEY_A)).await,
        (Status::Miss, big.clone())
    );
    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Miss);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let stats = store.stats();
    assert_eq!((stats.oversized, stats.writes), (2, 0), "{stats:?}");
    assert!(dump(&server, redis.prefix()).await.is_empty());

    // A small answer under the same limit is stored: the limit is what
    // refused the big one.
    let mut small = CacheLayer::builder()
        .store(store.clone())
        .build()
        .expect("cache")
        .layer(upstream(calls.clone(), ANSWER.into()));
    assert_eq!(send(&mut small, ask(KEY_B)).await.0, Status::Miss);
    written(&store, 1).await;
    assert_eq!(dump(&server, redis.prefix()).await.len(), 1);

    let err = RedisStore::builder(redis)
        .max_entry_size(0)
        .build()
        .expect_err("zero");
    assert_eq!(err.field, "max_entry_size");
}

#[tokio::test]
async fn a_tenants_entry_is_never_served_to_another_even_under_its_redis_key() {
    let Some(server) = RedisServer::get("redis_cache") else {
        return;
    };
    let redis = server.handle();
    let store = RedisStore::new(redis.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CacheLayer::builder()
        .store(store.clone())
        .build()
        .expect("cache")
        .layer(service_fn({
            let calls = calls.clone();
            move |req: Request<ReplayBody>| {
                calls.fetch_add(1, Ordering::SeqCst);
                // Each tenant gets its own answer.
                let who = if req.headers()["x-api-key"] == KEY_A { "A" } else { "B" };
                async move {
                    Ok::<_, BoxError>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(ResponseBody::full(format!(
                                r#"{{"type":"message","content":[{{"type":"text","text":"for {who}"}}]}}"#
                            )))
                            .expect("response"),
                    )
                }
            }
        }));
    let (_, a) = send(&mut svc, ask(KEY_A)).await;
    let (status, b) = send(&mut svc, ask(KEY_B)).await;
    assert_eq!(status, Status::Miss, "B was served A's entry");
    assert!(a.contains("for A") && b.contains("for B"), "{a} {b}");
    written(&store, 2).await;
    assert_eq!(send(&mut svc, ask(KEY_A)).await, (Status::Hit, a.clone()));
    assert_eq!(send(&mut svc, ask(KEY_B)).await, (Status::Hit, b.clone()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Swap the two values under their Redis keys (what a hash collision,
    // or another writer, would do): each value names the key it was
    // stored for, so neither tenant is served the other's answer.
    let entries = dump(&server, redis.prefix()).await;
    assert_eq!(entries.len(), 2);
    let client = redis::Client::open(server.url.as_str()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("c");
    for (i, (key, _)) in entries.iter().enumerate() {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(&entries[1 - i].1)
            .arg("PX")
            .arg(60_000)
            .query_async(&mut conn)
            .await
            .expect("SET");
    }
    let before = store.stats().refused;
    let (sa, a2) = send(&mut svc, ask(KEY_A)).await;
    let (sb, b2) = send(&mut svc, ask(KEY_B)).await;
    assert_eq!((sa, sb), (Status::Miss, Status::Miss));
    assert!(a2.contains("for A") && b2.contains("for B"), "{a2} {b2}");
    assert_eq!(store.stats().refused, before + 2, "{:?}", store.stats());
}

#[tokio::test]
async fn no_key_material_reaches_any_redis_key_or_value() {
    let Some(server) = RedisServer::get("redis_cache") else {
        return;
    };
    let redis = server.handle();
    let store = RedisStore::new(redis.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CacheLayer::builder()
        .store(store.clone())
        // Gemini's request carries no top-level temperature.
        .cache_nondeterministic(true)
        .build()
        .expect("cache")
        .layer(upstream(calls.clone(), ANSWER.into()));
    let gemini_key = "AIzaSyGEMINI-SECRET-KEY";
    let requests = [
        ask(KEY_A),
        support::http::post_json(
            "https://api.openai.com/v1/chat/completions",
            &[("authorization", "Bearer sk-proj-OPENAI-SECRET")],
            PROMPT.to_owned(),
        ),
        support::http::post_json(
            "https://api.example/openai/deployments/x/chat/completions",
            &[("api-key", "AZURE-SECRET-KEY")],
            PROMPT.to_owned(),
        ),
        support::http::post_json(
            &format!(
                "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent?alt=sse&key={gemini_key}"
            ),
            &[],
            r#"{"contents":[{"parts":[{"text":"2+2?"}]}]}"#.to_owned(),
        ),
    ];
    let n = requests.len() as u64;
    for req in requests {
        assert_eq!(send(&mut svc, req).await.0, Status::Miss);
    }
    written(&store, n).await;
    let entries = dump(&server, redis.prefix()).await;
    assert_eq!(entries.len() as u64, n, "one entry per tenant");
    let secrets = [
        KEY_A,
        "sk-proj-OPENAI-SECRET",
        "AZURE-SECRET-KEY",
        gemini_key,
        "SECRET",
        "Bearer",
    ];
    for (key, value) in &entries {
        let hash = key.strip_prefix(&format!("{}cache:", redis.prefix()));
        assert!(
            hash.is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit())),
            "a Redis key that is not prefix + cache: + 32 hex digits: {key}"
        );
        for s in secrets {
            assert!(!contains(key.as_bytes(), s), "{s} in key {key}");
            assert!(!contains(value, s), "{s} in the value under {key}");
        }
        // The request body is never a key, and the prompt's text is not
        // stored either (only its hash).
        assert!(!contains(value, "2+2?"), "the prompt under {key}");
        assert!(contains(value, r#""text":"4""#), "the answer is stored");
    }
}

#[tokio::test]
async fn two_prebuilt_stacks_share_one_redis_cache() {
    let Some(server) = RedisServer::get("redis_cache") else {
        return;
    };
    let redis = server.handle();
    let stores = [
        RedisStore::new(redis.clone()),
        RedisStore::new(same_place(&server, &redis)),
    ];
    let calls = Arc::new(AtomicUsize::new(0));
    let mut stacks = stores.clone().map(|store| {
        tower_llm_resilience::stack::Stack::builder()
            .cache(CacheLayer::builder().store(store).build().expect("cache"))
            .service(upstream(calls.clone(), ANSWER.into()))
    });
    assert_eq!(send(&mut stacks[0], ask(KEY_A)).await.0, Status::Miss);
    written(&stores[0], 1).await;
    assert_eq!(
        send(&mut stacks[1], ask(KEY_A)).await,
        (Status::Hit, ANSWER.into())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
