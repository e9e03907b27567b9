use super::*;

#[test]
fn order_and_whitespace_do_not_matter() {
    let a = canonical_hash(br#"{"a":1,"b":[1,2,{"x":"y","z":null}],"c":"s"}"#);
    let b =
        canonical_hash(b"{ \"c\" : \"s\",\n \"b\": [1, 2, {\"z\":null, \"x\":\"y\"}],\t\"a\":1 }");
    assert!(a.is_some());
    assert_eq!(a, b);
    // Escapes resolve to the same string.
    assert_eq!(
        canonical_hash(br#"{"k":"a"}"#),
        canonical_hash(br#"{"\u006b":"\u0061"}"#)
    );
}

#[test]
fn content_changes_the_hash() {
    let base = canonical_hash(br#"{"a":[1,2]}"#);
    for other in [
        &br#"{"a":[2,1]}"#[..],
        br#"{"a":[1,2],"b":null}"#,
        br#"{"a":[1.0,2]}"#,
        br#"{"a":["1",2]}"#,
        br#"{"b":[1,2]}"#,
        br#"{"a":[[1,2]]}"#,
        br#"{"a":{"1":2}}"#,
    ] {
        assert_ne!(
            base,
            canonical_hash(other),
            "{}",
            String::from_utf8_lossy(other)
        );
    }
    // Duplicate entries do not cancel out.
    assert_ne!(
        canonical_hash(br#"{"a":1,"a":1}"#),
        canonical_hash(br#"{}"#)
    );
}

#[test]
fn facts_and_rejects() {
    let c = canonical(br#"{"stream":true,"temperature":0,"x":{"stream":false}}"#).expect("object");
    assert!(c.stream);
    assert_eq!(c.temperature, Some(0.0));
    for bad in [&b""[..], b"[]", b"{", b"{\"a\":1} x", b"\xff", b"null"] {
        assert!(canonical(bad).is_none());
    }
}

proptest::proptest! {
    /// Any order of an object's entries, nested or not, and any
    /// insignificant whitespace give the same hash.
    #[test]
    fn entry_order_and_whitespace_never_matter(
        entries in proptest::collection::btree_map("[a-z]{1,6}", 0u32..1000, 0..8),
        rotate in 0usize..8,
        spaces in proptest::collection::vec(0usize..3, 32),
    ) {
        let pairs: Vec<(String, u32)> = entries.into_iter().collect();
        let mut rotated = pairs.clone();
        if !rotated.is_empty() {
            let n = rotate % rotated.len();
            rotated.rotate_left(n);
        }
        let ws = |i: usize| " ".repeat(spaces[i % spaces.len()]);
        let render = |pairs: &[(String, u32)], pad: bool| {
            let inner: Vec<String> = pairs
                .iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    let (a, b) = if pad { (ws(i), ws(i + 1)) } else { (String::new(), String::new()) };
                    format!("{a}\"{k}\"{b}:{a}{{\"v\":{v},\"w\":[{v},\"{k}\"]}}{b}")
                })
                .collect();
            format!("{{\"o\":{{{}}},\"x\":1}}", inner.join(","))
        };
        let plain = canonical_hash(render(&pairs, false).as_bytes());
        proptest::prop_assert!(plain.is_some());
        proptest::prop_assert_eq!(plain, canonical_hash(render(&rotated, true).as_bytes()));
    }
}

#[test]
fn alias_ref_hashes_like_alias_key() {
    use std::hash::BuildHasher;
    let key = AliasKey {
        tenant: TenantId::Named("t".into()),
        method: Method::POST,
        path: "/v1/messages".into(),
        anthropic_version: Some(HeaderValue::from_static("2023-06-01")),
        anthropic_beta: None,
        raw: 42,
    };
    let r = AliasRef {
        tenant: &key.tenant,
        method: &key.method,
        path: &key.path,
        anthropic_version: key.anthropic_version.as_ref(),
        anthropic_beta: None,
        raw: 42,
    };
    let s = std::hash::RandomState::new();
    assert_eq!(s.hash_one(&key), s.hash_one(&r));
    assert!(quick_cache::Equivalent::equivalent(&r, &key));
}

/// The tenant is the whole keyed [`KeyId`] of the request's credentials
/// (headers and `key=` parameters); a Gemini key in the query is kept out
/// of the path and out of `Debug`.
#[test]
fn tenant_is_the_keyed_id_and_query_keys_stay_out_of_the_key() {
    let policy = DefaultKeyPolicy::new();
    let body = r#"{"contents":[],"generationConfig":{"temperature":0}}"#;
    let req = |uri: &str| {
        Request::post(uri)
            .body(ReplayBody::from(body))
            .expect("request")
    };
    let a = req("/v1beta/models/g:generateContent?key=GEMINI-SECRET-A&alt=json");
    let b = req("/v1beta/models/g:generateContent?key=GEMINI-SECRET-B&alt=json");
    let (ka, kb) = (policy.key(&a).expect("key"), policy.key(&b).expect("key"));
    assert_eq!(ka.tenant(), &TenantId::Key(KeyId::of(&a).expect("id")));
    assert_ne!(ka, kb);
    assert_eq!(ka.path(), "/v1beta/models/g:generateContent?key=&alt=json");
    assert_eq!(ka.path(), kb.path());
    let shown = format!("{ka:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
    // What `Debug` shows of the tenant is its label, nothing more.
    let id = KeyId::of(&a).expect("id");
    assert!(shown.contains(&format!("Key(KeyId({id}))")), "{shown}");
    // And the repeat is found through the alias index.
    assert_eq!(policy.key(&a), Some(ka));
}
