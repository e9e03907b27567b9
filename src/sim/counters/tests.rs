use super::*;

#[test]
fn in_flight_and_peak() {
    let c = Arc::new(Counters::new(Duration::from_secs(1), 4));
    let a = c.begin();
    let b = c.begin();
    drop(a);
    let s = c.snapshot();
    assert_eq!((s.received, s.in_flight, s.peak_in_flight), (2, 1, 2));
    drop(b);
    assert_eq!(c.snapshot().in_flight, 0);
}

#[test]
fn windows_accumulate_and_are_bounded() {
    let c = Counters::new(Duration::from_secs(3600), 2);
    let w = c.admitted(10, 100);
    c.admitted(5, 50);
    c.generated(w, 42);
    let s = c.snapshot();
    assert_eq!(s.windows.len(), 1);
    assert_eq!(s.windows[0].requests, 2);
    assert_eq!(s.windows[0].input_tokens, 15);
    assert_eq!(s.windows[0].output_tokens_reserved, 150);
    assert_eq!(s.windows[0].output_tokens, 42);
    let mut ws = lock(&c.windows);
    for i in 1..5 {
        ws.get_or_insert(i);
    }
    assert_eq!(ws.ring.len(), 2);
    assert_eq!(ws.ring.front().map(|w| w.index), Some(3));
}

#[test]
fn status_helpers() {
    let c = Counters::new(Duration::from_secs(1), 1);
    for s in [200, 200, 429, 529, 500, 400, 401] {
        c.status(s);
    }
    let s = c.snapshot();
    assert_eq!((s.ok(), s.rate_limited(), s.overloaded()), (2, 1, 1));
    assert_eq!((s.client_errors(), s.server_errors()), (2, 2));
}
