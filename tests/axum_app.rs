//! Runs `examples/axum_app.rs`'s demo (the example's `main` without
//! `--serve`) and checks what it prints: every request answered through
//! the stack held in the app's state, and the quota really made them wait.

#![cfg(not(loom))]

#[path = "../examples/axum_app.rs"]
mod axum_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_answers_every_request_through_the_stack() {
    let mut out = Vec::new();
    axum_app::demo(24, &mut out).await.expect("demo runs");
    let out = String::from_utf8(out).expect("utf-8");
    eprintln!("{out}");
    let mut lines = out.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("listening on http://127.0.0.1:")),
        "{out}"
    );
    let answers: Vec<&str> = out.lines().filter(|l| l.starts_with("request ")).collect();
    assert_eq!(answers.len(), 24, "{out}");
    let mut latest = 0.0f64;
    for l in &answers {
        assert!(l.contains(": 200 after "), "{l}");
        let secs: f64 = l
            .split("after ")
            .nth(1)
            .and_then(|r| r.split(" s,").next())
            .and_then(|n| n.trim().parse().ok())
            .expect("a time");
        latest = latest.max(secs);
    }
    // 24 at once against 12 per provider second: the last waited for the
    // quota (at least ~1 s of refill), so the limiter did queue them.
    assert!(latest >= 0.5, "latest answer after {latest} s:\n{out}");
    let last = out.lines().last().expect("a summary");
    assert!(last.starts_with("24 of 24 answered"), "{last}");
}
