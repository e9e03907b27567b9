//! The Redis cache store against a real Redis: an entry written by one
//! cache layer is a hit in another (two "processes" sharing one server),
//! TTL expiry by Redis, the entry size limit, tenant isolation (also when
//! the stored values are swapped under the keys), a dead server as misses
//! within the timeout and hits again once it is back, and no key material
//! in any Redis key or value. Every test skips with one line without a
//! Redis (see `support::redis`).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tower::{ServiceExt, service_fn};
use tower_layer::Layer;
use tower_llm_resilience::BoxError;
use tower_llm_resilience::cache::{CacheLayer, CacheStatus, Status};
use tower_llm_resilience::redis::{Redis, RedisStore};
use tower_llm_resilience::request::ReplayBody;
use tower_llm_resilience::response::ResponseBody;

use support::redis::RedisServer;

const KEY_A: &str = "sk-ant-api03-SECRET-AAAA";
const KEY_B: &str = "sk-ant-api03-SECRET-BBBB";
const PROMPT: &str = r#"{"model":"claude-haiku-4-5","max_tokens":16,"temperature":0,"messages":[{"role":"user","content":"2+2?"}]}"#;
const ANSWER: &str = r#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"4"}],"usage":{"input_tokens":5,"output_tokens":1}}"#;

fn ask(key: &str) -> Request<ReplayBody> {
    support::http::anthropic(
        "https://api.anthropic.com/v1/messages",
        key,
        PROMPT.to_owned(),
    )
}

/// An upstream answering `body` as JSON, counting its calls.
fn upstream(calls: Arc<AtomicUsize>, body: String) -> impl support::ReplayService {
    service_fn(move |_req: Request<ReplayBody>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let body = body.clone();
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("content-type", "application/json")
                    .header("request-id", "req_1")
                    .body(ResponseBody::full(body))
                    .expect("response"),
            )
        }
    })
}

/// Sends `req` through `svc`, reads the whole body (the commit happens at
/// its end): the cache status and the body.
async fn send<S: support::ReplayService>(
    svc: &mut S,
    req: Request<ReplayBody>,
) -> (Status, String) {
    let res = svc
        .ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("call");
    let status = res
        .extensions()
        .get::<CacheStatus>()
        .expect("cache status")
        .status;
    (status, support::http::text(res).await)
}

/// Waits until `store` has written `n` entries (writes are spawned after
/// the body ends).
async fn written(store: &RedisStore, n: u64) {
    let give_up = Instant::now() + Duration::from_secs(5);
    while store.stats().writes < n {
        assert!(Instant::now() < give_up, "not written: {:?}", store.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

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
async fn a_dead_redis_is_a_bounded_miss_and_hits_resume_when_it_is_back() {
    let Some(_probe) = RedisServer::get("redis_cache") else {
        return;
    };
    let mut server = RedisServer::start().expect("redis-server");
    let port = server.port.expect("port");
    let timeout = Duration::from_millis(100);
    let store = RedisStore::new(server.handle().with_timeout(timeout));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CacheLayer::builder()
        .store(store.clone())
        .build()
        .expect("cache")
        .layer(upstream(calls.clone(), ANSWER.into()));
    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Miss);
    written(&store, 1).await;
    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Hit);

    server.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = send(&mut svc, ask(KEY_A)).await;
        // A miss answered by upstream, not an error and not a hang: the
        // read gives up within its timeout (the bound here only catches a
        // hang; the write after it is spawned, not waited for).
        assert_eq!((status, body.as_str()), (Status::Miss, ANSWER));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let stats = store.stats();
    assert!(stats.failures >= 3, "{stats:?}");
    assert!(store.redis().errors() >= 3);

    // Back (empty: the server keeps nothing): the next miss is stored
    // again and then hit.
    let _back = RedisServer::start_on(port).expect("restart");
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        if send(&mut svc, ask(KEY_A)).await.0 == Status::Hit {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "no hit after Redis came back: {:?}",
            store.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
async fn a_slow_redis_is_a_miss_within_the_timeout() {
    let Some(_probe) = RedisServer::get("redis_cache") else {
        return;
    };
    let server = RedisServer::start().expect("redis-server");
    let timeout = Duration::from_millis(100);
    let store = RedisStore::new(server.handle().with_timeout(timeout));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CacheLayer::builder()
        .store(store.clone())
        .build()
        .expect("cache")
        .layer(upstream(calls.clone(), ANSWER.into()));
    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Miss);
    written(&store, 1).await;
    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Hit);

    // A script that keeps the server busy for 2 s.
    let server = Arc::new(server);
    let busy = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            let script = "local s = tonumber(redis.call('TIME')[1]) \
                          while tonumber(redis.call('TIME')[1]) - s < 2 do end return 1";
            server.command(&["EVAL", script, "0"])
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, body) = send(&mut svc, ask(KEY_A)).await;
    let waited = started.elapsed();
    assert_eq!((status, body.as_str()), (Status::Miss, ANSWER));
    // It gave up on Redis at its timeout, long before the server was free.
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    assert!(store.stats().failures >= 1, "{:?}", store.stats());
    assert_eq!(busy.join().expect("busy"), ":1");
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

#[tokio::test]
async fn reads_recover_after_script_flush() {
    let Some(_probe) = RedisServer::get("redis_cache") else {
        return;
    };
    let server = RedisServer::start().expect("redis-server");
    let store = RedisStore::new(server.handle());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CacheLayer::builder()
        .store(store.clone())
        .build()
        .expect("cache")
        .layer(upstream(calls.clone(), ANSWER.into()));
    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Miss);
    written(&store, 1).await;
    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Hit);
    assert_eq!(server.command(&["SCRIPT", "FLUSH"]), "+OK");
    // The read script is gone from the server: loaded again, still a hit.
    assert_eq!(send(&mut svc, ask(KEY_A)).await.0, Status::Hit);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.stats().failures, 0, "{:?}", store.stats());
}
