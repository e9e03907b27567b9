//! The Redis handle: a command reaches the server, a dead server is a
//! typed error within the timeout (counted), and the handle works again
//! once the server is back.

mod support;

use std::time::{Duration, Instant};

use support::redis::RedisServer;
use tower_llm_resilience::error::BackendError;

#[tokio::test]
async fn a_dead_server_is_a_bounded_counted_error_and_its_return_is_used() {
    let Some(_probe) = RedisServer::get("redis_conn") else {
        return;
    };
    // A server of this test's own, to kill.
    let mut server = RedisServer::start().expect("redis-server");
    let port = server.port.expect("port");
    let redis = server.handle().with_timeout(Duration::from_millis(100));
    redis.ping().await.expect("ping");
    assert_eq!(redis.errors(), 0);

    server.kill();
    let started = Instant::now();
    let err: BackendError = redis.ping().await.expect_err("down");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(redis.errors() >= 1, "{err}");

    let _back = RedisServer::start_on(port).expect("restart");
    let mut ok = false;
    for _ in 0..50 {
        if redis.ping().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the handle never used the server again");
}

#[tokio::test]
async fn debug_never_shows_the_password() {
    let redis = tower_llm_resilience::redis::Redis::new("redis://:hunter2-secret@127.0.0.1:6399/0")
        .expect("url");
    let shown = format!("{redis:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn made_outside_a_runtime_is_a_typed_error_not_a_panic() {
    let err =
        tower_llm_resilience::redis::Redis::new("redis://127.0.0.1:6399").expect_err("no runtime");
    assert_eq!(err.field, "redis");
}

/// A brace in the prefix would become every key's Cluster hash tag (one
/// slot for all): braces are dropped.
#[tokio::test]
async fn braces_never_reach_the_key_prefix() {
    let redis = tower_llm_resilience::redis::Redis::new("redis://127.0.0.1:6399")
        .expect("url")
        .with_prefix("app{1}:");
    assert_eq!(redis.prefix(), "app1:");
}
