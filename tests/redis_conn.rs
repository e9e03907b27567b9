//! The Redis handle: its `Debug`, its making outside a runtime, its
//! prefix. A dead server is `redis_faults`'s.

mod support;

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
