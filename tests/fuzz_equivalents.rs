//! The fuzz targets' properties, as short property tests that run in
//! `cargo test`: each `fuzz/fuzz_targets/*.rs` target has its equivalent
//! here, calling the same `check_*` function (`fuzz/src/lib.rs`, included
//! below) with proptest's generated inputs — structured ones, close to what
//! providers send, and raw bytes — and with every checked-in seed of its
//! corpus (`fuzz/corpus/<target>/`). The long runs are `cargo fuzz run`
//! (see `fuzz/README.md`).
#![cfg(feature = "cache")]

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code, unreachable_pub)]
mod checks;

use std::fmt::Write as _;
use std::path::Path;

use proptest::prelude::*;

/// Every seed file of a target's corpus (name, bytes); there must be some.
fn named_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = name.filter(|n| n.starts_with("seed-")) {
            out.push((name, std::fs::read(&path).expect("a seed file")));
        }
    }
    assert!(out.len() >= 4, "{target}: too few seeds ({})", out.len());
    out
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    named_seeds(target).into_iter().map(|(_, s)| s).collect()
}

#[test]
fn seeds_pass_every_check() {
    for s in seeds("headers") {
        checks::check_headers(&s);
    }
    for s in seeds("sse") {
        checks::check_sse(&s);
    }
    for s in seeds("request_meta") {
        checks::check_meta(&s);
    }
    for s in seeds("cache_key") {
        checks::check_canonical(&s);
    }
}

#[test]
fn seeds_are_what_they_say() {
    // The seeds exercise the parsers rather than being skipped as junk:
    // each header seed yields advice or a quota, each request seed parses
    // (or, named `unparsed`, is one the fallback policy charges).
    use tower_llm_resilience::provider::{QuotaSnapshot, retry_after};
    for s in seeds("headers") {
        let (h, now) = checks::headers_from_bytes(&s);
        assert!(
            retry_after(&h, now).is_some() || !QuotaSnapshot::from_headers(&h, now).is_empty(),
            "{}",
            String::from_utf8_lossy(&s)
        );
    }
    for (name, s) in named_seeds("request_meta") {
        let m = tower_llm_resilience::RequestMeta::parse("/v1/messages", &Default::default(), &s);
        assert_eq!(m.is_parsed(), !name.contains("unparsed"), "{name}");
    }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

const HEADER_NAMES: &[&str] = &[
    "retry-after",
    "Retry-After",
    "retry-after-ms",
    "x-ms-retry-after-ms",
    "x-should-retry",
    "date",
    "now",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-limit",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "ratelimit-policy",
    "ratelimit",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,22}(\\.[0-9]{0,12})?",
        "-?[0-9]{0,4}(\\.[0-9]{0,3})?",
        "([0-9]{0,5}(\\.[0-9]{0,3})?(h|m|s|ms|us|µs|ns)){1,4}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,10})?(Z|[+-][0-9]{2}:[0-9]{2})",
        "(Mon|Thu|Sun), [0-9]{2} (Jan|Aug|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        "(\"[a-z]{1,4}\"|[a-z]{1,4})(;[a-z]{1,2}=(-?[0-9]{1,17}|\"[a-z]*\"|:[a-zA-Z0-9+/=]*:|\\?[01]))*(, ?)?",
        "(true|false|TRUE| true |1|0)",
        "[ -~]{0,24}",
    ]
}

fn header_text() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (
            prop::sample::select(HEADER_NAMES),
            header_value(),
            any::<bool>(),
        ),
        0..10,
    )
    .prop_map(|lines| {
        let mut out = String::new();
        for (name, value, crlf) in lines {
            let _ = write!(out, "{name}: {value}{}", if crlf { "\r\n" } else { "\n" });
        }
        out.into_bytes()
    })
}

const EVENTS: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":3}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
    "data: [DONE]\n\n",
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":36,\"output_tokens\":87}}}\n\n",
    ": keep-alive\n\n",
    "data: {\"type\":\"message_delta\",\ndata: \"usage\":{\"output_tokens\":4}}\n\n",
    "\n",
    "\r\n",
    "event:message_stop\r\ndata:{}\r\n\r\n",
];

/// A stream of realistic events, some cut short, some with CRLF line
/// ends, some with a few bytes of noise; the first byte seeds chunkings.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        prop::collection::vec(
            (
                prop::sample::select(EVENTS),
                any::<bool>(),
                prop::option::weighted(0.2, any::<usize>()),
                prop::collection::vec(any::<u8>(), 0..3),
            ),
            0..10,
        ),
    )
        .prop_map(|(seed, events)| {
            let mut out = vec![seed];
            for (event, crlf, cut, noise) in events {
                let mut e = if crlf {
                    event.replace('\n', "\r\n").into_bytes()
                } else {
                    event.as_bytes().to_vec()
                };
                if let Some(cut) = cut {
                    e.truncate(cut % (e.len() + 1));
                }
                out.extend_from_slice(&e);
                out.extend_from_slice(&noise);
            }
            out
        })
}

/// A JSON text as it may be written: entries in any order and repeated,
/// any whitespace, strings plain or escaped.
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Uint(u64),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

const KEYS: &[&str] = &[
    "model",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "stream",
    "stream_options",
    "include_usage",
    "temperature",
    "system",
    "messages",
    "tools",
    "input",
    "instructions",
    "content",
    "text",
    "type",
    "role",
    "cache_control",
    "name",
    "x",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-zé😀\"\\\\ ]{0,4}",
    ]
}

fn json() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        prop_oneof![0u64..5000, any::<u64>()].prop_map(J::Uint),
        any::<i64>().prop_map(J::Int),
        prop_oneof![
            0.0f64..2.0,
            any::<f64>().prop_filter("finite", |f| f.is_finite())
        ]
        .prop_map(J::Float),
        "[a-z0-9é😀\"\\\\\n\t /]{0,12}".prop_map(J::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
            prop::collection::vec((key(), inner), 0..6).prop_map(J::Obj),
        ]
    })
}

/// A request-shaped body: a top-level object of mostly known fields.
fn body() -> impl Strategy<Value = J> {
    let field = prop_oneof![
        (
            Just("model".to_owned()),
            "[a-z0-9.-]{0,20}".prop_map(J::Str)
        ),
        (
            prop::sample::select(&["max_tokens", "max_completion_tokens", "max_output_tokens"][..])
                .prop_map(str::to_owned),
            prop_oneof![(0u64..100_000).prop_map(J::Uint), Just(J::Null)],
        ),
        (Just("stream".to_owned()), any::<bool>().prop_map(J::Bool)),
        (
            Just("temperature".to_owned()),
            prop_oneof![
                (0.0f64..2.0).prop_map(J::Float),
                (0u64..3).prop_map(J::Uint)
            ]
        ),
        (
            Just("messages".to_owned()),
            prop::collection::vec(json(), 0..4).prop_map(J::Arr)
        ),
        (key(), json()),
    ];
    prop::collection::vec(field, 0..8).prop_map(J::Obj)
}

fn render(j: &J, seed: &mut u64, out: &mut String) {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let ws = next() % 4;
    for _ in 0..ws % 3 {
        out.push([' ', '\n', '\t', '\r'][(next() % 4) as usize]);
    }
    let escape = next() % 3 == 0;
    let string = |s: &str, out: &mut String| {
        if escape {
            out.push('"');
            for u in s.encode_utf16() {
                let _ = write!(out, "\\u{u:04X}");
            }
            out.push('"');
        } else {
            out.push_str(&serde_json::to_string(s).expect("a string serializes"));
        }
    };
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Uint(n) => {
            let _ = write!(out, "{n}");
        }
        J::Int(n) => {
            let _ = write!(out, "{n}");
        }
        J::Float(f) => out.push_str(&serde_json::to_string(f).expect("a finite float")),
        J::Str(s) => string(s, out),
        J::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(item, seed, out);
            }
            out.push(']');
        }
        J::Obj(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(k, out);
                out.push(':');
                render(v, seed, out);
            }
            out.push('}');
        }
    }
}

fn text(j: &J, seed: u64) -> Vec<u8> {
    let mut out = String::new();
    let mut seed = seed | 1;
    render(j, &mut seed, &mut out);
    out.into_bytes()
}

/// A rendered body, sometimes with one byte changed, cut or inserted.
fn mutated(j: impl Strategy<Value = J>) -> impl Strategy<Value = Vec<u8>> {
    (
        j,
        any::<u64>(),
        prop::option::weighted(0.3, (any::<usize>(), any::<u8>(), 0u8..3)),
    )
        .prop_map(|(j, seed, edit)| {
            let mut t = text(&j, seed);
            if let Some((at, byte, how)) = edit {
                let at = at % (t.len() + 1);
                match how {
                    0 if at < t.len() => t[at] = byte,
                    1 => t.truncate(at),
                    _ => t.insert(at, byte),
                }
            }
            t
        })
}

// ---------------------------------------------------------------------------
// The equivalents (256 cases each, proptest's default)
// ---------------------------------------------------------------------------

proptest! {
    /// Fuzz target `headers`.
    #[test]
    fn headers(text in header_text()) {
        checks::check_headers(&text);
    }

    /// Fuzz target `headers`, raw bytes.
    #[test]
    fn headers_raw(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        checks::check_headers(&bytes);
    }

    /// Fuzz target `sse`.
    #[test]
    fn sse(stream in sse_stream()) {
        checks::check_sse(&stream);
    }

    /// Fuzz target `sse`, raw bytes.
    #[test]
    fn sse_raw(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        checks::check_sse(&bytes);
    }

    /// Fuzz target `request_meta`.
    #[test]
    fn request_meta(body in mutated(body())) {
        checks::check_meta(&body);
    }

    /// Fuzz target `cache_key`.
    #[test]
    fn cache_key(body in mutated(prop_oneof![body(), json()])) {
        checks::check_canonical(&body);
    }
}

/// Fuzz target `config`: every seed, then seeds with one byte changed, cut
/// or inserted, and with a line of random text spliced in.
#[cfg(feature = "config")]
mod config {
    use super::*;

    #[test]
    fn seeds_pass() {
        for s in seeds("config") {
            checks::check_config(&s);
        }
    }

    proptest! {
        #[test]
        fn config(
            pick in any::<prop::sample::Index>(),
            at in any::<usize>(),
            edit in 0u8..4,
            byte in any::<u8>(),
            line in "[ -~]{0,24}",
        ) {
            let all = seeds("config");
            let mut t = all[pick.index(all.len())].clone();
            let at = at % (t.len() + 1);
            match edit {
                0 if at < t.len() => t[at] = byte,
                1 => t.truncate(at),
                2 => t.insert(at, byte),
                _ => {
                    let mut spliced = line.into_bytes();
                    spliced.push(b'\n');
                    t.splice(at..at, spliced);
                }
            }
            checks::check_config(&t);
        }
    }
}
