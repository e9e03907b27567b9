use super::*;

fn round_trip(req: &Request<ReplayBody>) -> Request<ReplayBody> {
    Template::new(req)
        .expect("packs")
        .request()
        .expect("rebuilds")
}

fn assert_same(a: &Request<ReplayBody>, b: &Request<ReplayBody>) {
    assert_eq!(a.method(), b.method());
    assert_eq!(a.uri(), b.uri());
    assert_eq!(a.uri().to_string(), b.uri().to_string());
    assert_eq!(a.uri().scheme(), b.uri().scheme());
    assert_eq!(a.uri().authority(), b.uri().authority());
    assert_eq!(a.uri().path_and_query(), b.uri().path_and_query());
    assert_eq!(a.version(), b.version());
    // The same values in the same order, with the same sensitivity.
    let list = |r: &Request<ReplayBody>| {
        r.headers()
            .iter()
            .map(|(n, v)| (n.clone(), v.clone(), v.is_sensitive()))
            .collect::<Vec<_>>()
    };
    assert_eq!(list(a), list(b));
    assert_eq!(a.body().as_bytes(), b.body().as_bytes());
}

#[derive(Clone, Debug, PartialEq)]
struct Marker(u32);

/// Guards the packed copy: every part of a request comes back as it
/// was — URIs of every form, repeated and sensitive headers, custom
/// methods and header names, non-ASCII (obs-text) values, extensions,
/// the body.
#[test]
fn rebuilds_the_same_request() {
    let uris = [
        "https://api.anthropic.com/v1/messages",
        "http://127.0.0.1:8080/v1/chat/completions?api-version=2024-10-21&x=%20",
        "http://example.com",
        "http://user@[::1]:9/p?",
        "/v1/messages?beta=true",
        "/",
        "*",
        "example.com:443",
        "custom+scheme://host/path",
    ];
    for uri in uris {
        let mut req = Request::builder()
            .method(Method::from_bytes(b"PROPFIND").expect("method"))
            .uri(uri)
            .version(Version::HTTP_2)
            .header("x-api-key", "sk-ant-1")
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .header("x-empty", "")
            .header("accept", "text/event-stream")
            .header("anthropic-beta", "a")
            .header("anthropic-beta", "b")
            .header(
                "x-obs",
                HeaderValue::from_bytes(b"caf\xe9\tx").expect("value"),
            )
            .body(ReplayBody::from(r#"{"model":"m"}"#))
            .expect("request");
        let mut secret = HeaderValue::from_static("Bearer sk");
        secret.set_sensitive(true);
        req.headers_mut().append("authorization", secret);
        req.headers_mut()
            .append("anthropic-beta", "c".parse().expect("value"));
        req.extensions_mut().insert(Marker(7));
        let copy = round_trip(&req);
        assert_same(&req, &copy);
        assert_eq!(copy.extensions().get::<Marker>(), Some(&Marker(7)));
        assert!(copy.headers()["authorization"].is_sensitive());
        let betas: Vec<_> = copy.headers().get_all("anthropic-beta").iter().collect();
        assert_eq!(betas, ["a", "b", "c"]);
        // A copy of the copy, too.
        assert_same(&req, &round_trip(&copy));
    }
}

#[test]
fn empty_request() {
    let req = Request::new(ReplayBody::empty());
    assert_same(&req, &round_trip(&req));
}
