use super::*;

#[test]
fn arrivals_and_completions_are_counted_per_key() {
    let t = Ledger::new(8);
    let (a, b) = (fingerprint("a"), fingerprint("b"));
    t.arrived(a);
    t.arrived(a);
    t.completed(a);
    t.arrived(b);
    assert_eq!(
        t.get("a"),
        Some(KeyCount {
            arrivals: 2,
            completions: 1
        })
    );
    let s = t.snapshot();
    assert_eq!((s.keys, s.arrivals, s.completions), (2, 3, 1));
    assert_eq!(s.by_arrivals, BTreeMap::from([(1, 1), (2, 1)]));
    assert_eq!(s.by_completions, BTreeMap::from([(0, 1), (1, 1)]));
    assert_eq!((s.max_arrivals, s.duplicated), (2, 0));
    t.completed(a);
    assert_eq!(t.snapshot().duplicated, 1);
}

#[test]
fn a_full_map_stops_counting_new_keys_but_keeps_the_old_exact() {
    let t = Ledger::new(2);
    let [a, b, c] = ["a", "b", "c"].map(fingerprint);
    t.arrived(a);
    t.arrived(b);
    t.arrived(c);
    t.arrived(c);
    t.completed(c);
    t.arrived(a);
    let s = t.snapshot();
    assert_eq!((s.keys, s.arrivals), (2, 3));
    assert_eq!((s.untracked_arrivals, s.untracked_completions), (2, 1));
    assert_eq!(t.get("a").map(|c| c.arrivals), Some(2));
    assert_eq!(t.get("c"), None);
}

#[test]
fn a_million_keys_stay_within_the_bound() {
    let t = Ledger::new(1000);
    for i in 0..1_000_000u64 {
        t.arrived(i);
    }
    let s = t.snapshot();
    assert_eq!((s.keys, s.untracked_arrivals), (1000, 999_000));
    assert!(
        t.lock().keys.capacity() < 4096,
        "the map never grew past its bound"
    );
}

#[test]
fn the_key_is_read_from_the_header() {
    let mut h = HeaderMap::new();
    assert_eq!(Ledger::key_of(&h), None);
    h.insert(HEADER, http::HeaderValue::from_static("k-1"));
    assert_eq!(Ledger::key_of(&h), Some(fingerprint("k-1")));
}
