use super::*;
use crate::request::RequestMeta;
use crate::request::meta::{fields_serde, looks_like_json_object};
use http::HeaderMap;
use proptest::prelude::*;

/// The fast path's answer (`None`: falls back), as `parse` runs it.
fn fast(body: &[u8]) -> Option<Fields<'_>> {
    if looks_like_json_object(body) {
        scan(body)
    } else {
        None
    }
}

/// `Debug` shows every field, floats exactly (`-0.0` too).
fn show(f: &Option<Fields<'_>>) -> String {
    format!("{f:?}")
}

/// The invariant: whenever the scanner answers, serde answers the same;
/// and `parse` equals the serde-only parse. Returns whether the fast
/// path answered.
fn check(body: &[u8]) -> bool {
    let f = fast(body);
    let answered = f.is_some();
    if answered {
        assert_eq!(
            show(&f),
            show(&fields_serde(body)),
            "body: {:?}",
            String::from_utf8_lossy(body)
        );
    }
    let h = HeaderMap::new();
    assert_eq!(
        RequestMeta::parse("/v1/messages", &h, body),
        RequestMeta::parse_serde("/v1/messages", &h, body),
        "body: {:?}",
        String::from_utf8_lossy(body)
    );
    answered
}

/// The fast path must answer this body, and as serde does.
#[track_caller]
fn fast_ok(body: &str) -> Fields<'_> {
    assert!(check(body.as_bytes()), "fell back: {body}");
    assert!(fields_serde(body.as_bytes()).is_some(), "{body}");
    fast(body.as_bytes()).expect("answered")
}

/// The fast path must leave this body to serde.
#[track_caller]
fn falls_back(body: &[u8]) {
    assert!(
        !check(body),
        "accepted: {:?}",
        String::from_utf8_lossy(body)
    );
}

fn parsed(body: &[u8]) -> bool {
    RequestMeta::parse("/v1/messages", &HeaderMap::new(), body).is_parsed()
}

#[test]
fn everyday_bodies_take_the_fast_path() {
    let f = fast_ok(
        r#"{"model":"claude-sonnet-4-5","max_tokens":512,"stream":true,"temperature":0.0,
                "system":"You are terse.","metadata":{"user_id":"u1"},
                "messages":[{"role":"user","content":"Hello there"},
                            {"role":"assistant","content":[{"type":"text","text":"Hi!","cache_control":{"type":"ephemeral"}}]}]}"#,
    );
    assert_eq!(f.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!((f.text, f.messages), (28, Some(2)));
    fast_ok(
        r#"{"model":"gpt-4o-mini","max_completion_tokens":64,"stream":true,
                "stream_options":{"include_usage":true},"top_p":0.9,"n":1,"stop":null,
                "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
    );
    let f = fast_ok(
        r#"{"model":"gpt-4.1","max_output_tokens":100,"instructions":"Be nice.",
                "input":[{"role":"user","content":[{"type":"input_text","text":"hey"}]}]}"#,
    );
    assert_eq!(f.max_output_tokens, Some(100));
    assert_eq!(f.text, 8 + 3);
    assert_eq!(f.messages, None);
}

#[test]
fn escapes_count_unescaped_bytes() {
    for (s, len) in [
        (r#"a\nb"#, 3),
        (r#"\"quoted\""#, 8),
        (r#"back\\slash\/"#, 11),
        (r#"\b\f\n\r\t"#, 5),
        (r#"\u0041"#, 1),
        (r#"\u0000"#, 1),
        (r#"\u00e9"#, 2),
        (r#"\u00E9\u07FF"#, 4),
        (r#"\u4e2d\uFFFF"#, 6),
        (r#"\ud83d\ude00"#, 4),
        (r#"\uD83D\uDE00x\uDBFF\uDFFF"#, 9),
        ("h\u{e9}llo \u{4e2d}\u{6587} \u{1f600}", 18),
        ("\u{7f}", 1),
    ] {
        let body = format!(r#"{{"system":"{s}"}}"#);
        assert_eq!(fast_ok(&body).text, len, "{s}");
        // At every offset from a 16-byte chunk boundary.
        for pad in 0..40 {
            let body = format!(
                r#"{{"system":"{}{s}{}"}}"#,
                "x".repeat(pad),
                "y".repeat(pad)
            );
            assert_eq!(fast_ok(&body).text, len + 2 * pad as u64, "{s} {pad}");
        }
    }
}

#[test]
fn nested_tool_schemas_count_keys() {
    let f = fast_ok(
        r#"{"model":"m","max_tokens":1,"messages":[],
                "tools":[{"name":"get_weather","description":"Weather.","input_schema":{"type":"object",
                  "properties":{"location":{"type":"string","enum":["a","b"],"minimum":-1.5e-3,"x":1E+5}},
                  "required":["location"],"additionalProperties":false}}]}"#,
    );
    // name(4)+11, description(11)+8, input_schema(12), properties(10),
    // location(8), enum(4)+1+1, minimum(7)+1, x(1)+1, required(8)+8,
    // additionalProperties(20)+1.
    assert_eq!(f.text, 15 + 19 + 12 + 10 + 8 + 6 + 8 + 2 + 16 + 21);
    assert_eq!(f.messages, Some(0));
}

#[test]
fn stream_options_and_max_token_aliases() {
    for (so, want) in [
        (r#"{"include_usage":true}"#, Some(true)),
        (r#"{"include_usage":false}"#, Some(false)),
        (r#"{"include_usage":null}"#, None),
        (r#"{}"#, None),
        (r#"{"other":[1,{"a":2}],"include_usage":true}"#, Some(true)),
        ("null", None),
    ] {
        let body = format!(r#"{{"stream":true,"stream_options":{so}}}"#);
        assert_eq!(fast_ok(&body).include_usage, want, "{so}");
    }
    for key in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
        for v in ["0", "1", "4096", "18446744073709551615", "null"] {
            let body = format!(r#"{{"{key}" : {v} }}"#);
            fast_ok(&body);
        }
    }
    let f = fast_ok(r#"{"max_tokens":null,"max_completion_tokens":5,"max_output_tokens":7}"#);
    assert_eq!((f.max_tokens, f.max_completion_tokens), (None, Some(5)));
    let m = RequestMeta::parse(
        "/v1/chat/completions",
        &HeaderMap::new(),
        br#"{"max_tokens":null,"max_completion_tokens":5,"max_output_tokens":7}"#,
    );
    assert_eq!(m.max_tokens(), Some(5));
}

#[test]
fn temperatures_match_serde_bit_for_bit() {
    for t in [
        "0",
        "1",
        "2",
        "-0",
        "-0.0",
        "0.0",
        "0.7",
        "1.50",
        "0.1",
        "0.3",
        "0.12345678901234",
        "123456789012345",
        "0.1234567890123456",
        "9007199254740992",
        "0.9007199254740992",
        "999999999999999",
        "0.0000000000000000000001",
        "-1.25",
        "null",
    ] {
        let body = format!(r#"{{"temperature":{t}}}"#);
        fast_ok(&body);
    }
    for t in [
        "1e-3",
        "9007199254740993",
        "0.9007199254740993",
        "0.00000000000000000000001",
        "1E2",
        "01",
        "1.",
        ".5",
        "-",
        "+1",
        "1.5e",
    ] {
        falls_back(format!(r#"{{"temperature":{t}}}"#).as_bytes());
    }
}

#[test]
fn messages_of_every_shape() {
    assert_eq!(fast_ok(r#"{"messages":"hi"}"#).messages, Some(1));
    let f = fast_ok(r#"{"messages":{"role":"user","content":"hi"}}"#);
    assert_eq!((f.text, f.messages), (2, Some(1)));
    assert_eq!(fast_ok(r#"{"messages":null}"#).messages, None);
    assert_eq!(fast_ok(r#"{"messages":[]}"#).messages, Some(0));
    let f = fast_ok(r#"{"messages":[1,true,null,"ab",[],{}]}"#);
    assert_eq!((f.text, f.messages), (4, Some(6)));
    for v in ["1", "true", "false", "-2"] {
        falls_back(format!(r#"{{"messages":{v}}}"#).as_bytes());
    }
}

#[test]
fn whitespace_anywhere_and_empty_objects() {
    fast_ok("{}");
    fast_ok(" \t\r\n{ } \n");
    fast_ok(
        "\n{ \"model\" :\t\"m\" ,\r\n \"messages\" : [ { \"role\" : \"user\" , \"content\" : [ ] } ] } \n",
    );
}

#[test]
fn unusual_bodies_fall_back_to_serde() {
    let cases: &[&[u8]] = &[
        // escapes in keys (serde unescapes `mod\u0065l` to `model`)
        br#"{"mod\u0065l":"x"}"#,
        br#"{"messages":[{"te\u0078t":"abc"}]}"#,
        // escape in the model's value
        br#"{"model":"a\nb"}"#,
        // wrong types for read fields
        br#"{"model":5}"#,
        br#"{"max_tokens":1.5}"#,
        br#"{"max_tokens":-1}"#,
        br#"{"max_tokens":-0}"#,
        br#"{"max_tokens":1e3}"#,
        br#"{"max_tokens":01}"#,
        br#"{"max_tokens":"5"}"#,
        br#"{"max_tokens":18446744073709551616}"#,
        br#"{"stream":"yes"}"#,
        br#"{"stream":1}"#,
        br#"{"stream_options":[true]}"#,
        br#"{"stream_options":{"include_usage":1}}"#,
        br#"{"temperature":"hot"}"#,
        // a duplicate whose value the scanner leaves to serde
        br#"{"model":"a","model":"b\n"}"#,
        br#"{"model":"a","model":5}"#,
        // malformed
        b"{",
        b"{\"model\":",
        b"{\"model\":\"m\"",
        b"{\"model\":\"m\",}",
        b"{\"messages\":[1,]}",
        b"{\"messages\":[1 2]}",
        b"{\"a\" 1}",
        b"{1:2}",
        b"{\"a\":tru}",
        b"{\"a\":nul}",
        b"{\"a\":\"\\x\"}",
        b"{\"a\":\"\\u12\"}",
        b"{\"a\":\"\\u12G4\"}",
        b"{\"a\":-}",
        b"{\"a\":1.}",
        b"{\"a\":1e}",
        b"{\"a\":.5}",
        b"{\"a\":+5}",
        // trailing garbage, BOM, a form feed (not JSON whitespace)
        b"{} x",
        b"{}{}",
        b"{}\0",
        b"\xef\xbb\xbf{}",
        b"\x0c{}",
        b"{}\x0c",
        // not an object
        b"",
        b"   ",
        b"[]",
        b"\"s\"",
        b"null",
        // control characters, bad UTF-8, lone surrogates
        b"{\"system\":\"a\x01b\"}",
        b"{\"system\":\"a\nb\"}",
        b"{\"metadata\":\"\xff\"}",
        b"{\"system\":\"\xc3\"}",
        b"{\"system\":\"\xed\xa0\x80\"}",
        b"{\"system\":\"\xe9\"}",
        br#"{"system":"\ud83d"}"#,
        br#"{"system":"\ud83dx"}"#,
        br#"{"system":"\ud83d\u0041"}"#,
        br#"{"system":"\ude00"}"#,
        br#"{"metadata":"\ude00"}"#,
        // numbers serde_json may refuse as out of f64 range
        br#"{"messages":[1e400]}"#,
        br#"{"metadata":1e400}"#,
        br#"{"tools":[1e299, 10e299, 1e1000]}"#,
    ];
    for body in cases {
        falls_back(body);
    }
    // What serde then decides, for a few of them.
    assert!(!parsed(br#"{"max_tokens":1.5}"#));
    assert_eq!(
        RequestMeta::parse(
            "/v1/messages",
            &HeaderMap::new(),
            br#"{"model":"a","model":"b\n"}"#
        )
        .model(),
        Some("b\n"),
        "serde: the last wins"
    );
    assert!(!parsed(br#"{"model":"a","model":5}"#));
    assert!(!parsed(b"{} x"));
    assert!(!parsed(br#"{"messages":[1e400]}"#));
    assert!(!parsed(br#"{"system":"\ud83d"}"#));
    assert!(
        parsed(br#"{"metadata":1e400}"#),
        "ignored: not range-checked"
    );
    assert!(
        parsed(b"{\"metadata\":\"\xff\"}"),
        "ignored: not UTF-8-checked"
    );
    assert!(parsed(br#"{"mod\u0065l":"x"}"#));
    assert!(parsed(br#"{"model":"a\nb"}"#));
    assert_eq!(
        RequestMeta::parse("/v1/messages", &HeaderMap::new(), br#"{"model":"a\nb"}"#).model(),
        Some("a\nb")
    );
}

/// Defect 3: a body with a key given twice was refused by serde (so
/// charged no tokens) while the providers read the last value. Both paths
/// now read it so, and the scanner answers it itself.
#[test]
fn duplicate_keys_are_read_last_wins() {
    let f = fast_ok(r#"{"model":"a","max_tokens":4000,"model":"claude-sonnet-4-5"}"#);
    assert_eq!(f.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(f.max_tokens, Some(4000));
    assert_eq!(fast_ok(r#"{"model":"b","model":null}"#).model, None);
    assert_eq!(
        fast_ok(r#"{"model":null,"model":"b"}"#).model.as_deref(),
        Some("b")
    );
    let f = fast_ok(
        r#"{"max_tokens":1,"max_tokens":4000,"max_output_tokens":9,"max_output_tokens":null}"#,
    );
    assert_eq!((f.max_tokens, f.max_output_tokens), (Some(4000), None));
    let f = fast_ok(r#"{"stream":true,"stream":false,"temperature":0.5,"temperature":1}"#);
    assert_eq!((f.stream, f.temperature), (Some(false), Some(1.0)));
    // Text fields: the last value's text only, and the last messages' count.
    let f = fast_ok(
        r#"{"system":"aaaa","messages":[{"role":"user","content":"xy"}],"system":"b",
            "messages":[{"role":"user","content":"abc"},{"role":"user","content":"d"}]}"#,
    );
    assert_eq!((f.text, f.messages), (1 + 4, Some(2)));
    let f = fast_ok(r#"{"messages":[{"content":"abc"}],"messages":null,"tools":[1],"tools":null}"#);
    assert_eq!((f.text, f.messages), (0, None));
    // stream_options: the last object, and in it the last include_usage.
    let f = fast_ok(r#"{"stream_options":{"include_usage":true,"include_usage":false}}"#);
    assert_eq!(f.include_usage, Some(false));
    let f = fast_ok(r#"{"stream_options":{"include_usage":true},"stream_options":{}}"#);
    assert_eq!(f.include_usage, None);
    let f = fast_ok(r#"{"stream_options":null,"stream_options":{"include_usage":true}}"#);
    assert_eq!(f.include_usage, Some(true));
}

#[test]
fn numbers_where_only_their_presence_counts() {
    for n in [
        "0",
        "-0",
        "1",
        "-1",
        "0.5",
        "-0.5e-5",
        "1e299",
        "1E+299",
        "99e298",
        "1e-999",
        "0e299",
        "123456789012345678901234567890",
    ] {
        let body = format!(r#"{{"tools":[{n}],"metadata":{{"x":{n}}}}}"#);
        assert_eq!(fast_ok(&body).text, 1, "{n}");
    }
    // Longer than the scanner's bound: serde decides.
    falls_back(format!(r#"{{"tools":[{}]}}"#, "1".repeat(101)).as_bytes());
    falls_back(br#"{"tools":[1e1234]}"#);
}

fn nested(depth: usize, field: &str) -> String {
    // The top-level object is one level; `depth - 1` more arrays.
    format!(
        r#"{{"{field}":{}{}}}"#,
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

#[test]
fn depth_limit_is_below_serdes() {
    for field in ["messages", "tools", "metadata"] {
        assert!(
            check(nested(MAX_DEPTH as usize, field).as_bytes()),
            "{field}"
        );
        for depth in [MAX_DEPTH as usize + 1, 126, 127, 128, 129, 10_000] {
            falls_back(nested(depth, field).as_bytes());
        }
    }
    // serde_json's own limit, for the record: the serde path reads each
    // top-level field's last value in a parse of its own (so that an
    // overwritten value of another type is no error), whose budget of 127
    // levels starts at that value; ignored values have no limit.
    assert!(parsed(nested(128, "messages").as_bytes()));
    assert!(!parsed(nested(10_000, "messages").as_bytes()));
    assert!(parsed(nested(10_000, "metadata").as_bytes()));
    // Objects nest too.
    let objects = format!(
        r#"{{"tools":{}1{}}}"#,
        r#"{"a":"#.repeat(MAX_DEPTH as usize),
        "}".repeat(MAX_DEPTH as usize)
    );
    falls_back(objects.as_bytes());
}

#[test]
fn first_non_ascii_validates_the_rest() {
    // Non-ASCII first in a key, then invalid UTF-8 later in a skipped
    // string: the scanner must not accept the later byte unchecked.
    let mut body = "{\"cl\u{e9}\":1,\"metadata\":\"x\"}".as_bytes().to_vec();
    let x = body.iter().rposition(|&c| c == b'x').expect("x");
    body[x] = 0xff;
    falls_back(&body);
    body[x] = b'y';
    assert!(check(&body));
}

// ------------------------------------------------------------ proptests

/// A string's content, and its JSON encoding with randomly chosen
/// escapes (short, `\u` in either case, surrogate pairs).
fn json_string() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        6 => prop::char::range('a', 'z'),
        1 => prop::sample::select(vec![
            ' ', '"', '\\', '/', '\n', '\t', '\r', '\u{8}', '\u{c}', '\u{1}', '\u{1f}', '\u{7f}',
            '\u{e9}', '\u{7ff}', '\u{800}', '\u{4e2d}', '\u{ffff}', '\u{10000}', '\u{1f600}',
            '\u{10ffff}',
        ]),
        1 => any::<char>(),
    ];
    (prop::collection::vec((ch, 0u8..8), 0..40), prop::bool::ANY).prop_map(|(chars, upper)| {
        let mut s = String::from("\"");
        for (c, how) in chars {
            encode_char(&mut s, c, how, upper);
        }
        s.push('"');
        s
    })
}

fn encode_char(s: &mut String, c: char, how: u8, upper: bool) {
    use std::fmt::Write;
    let short = match c {
        '"' => Some("\\\""),
        '\\' => Some("\\\\"),
        '\n' => Some("\\n"),
        '\t' => Some("\\t"),
        '\r' => Some("\\r"),
        '\u{8}' => Some("\\b"),
        '\u{c}' => Some("\\f"),
        '/' if how == 1 => Some("\\/"),
        _ => None,
    };
    let must_escape = c == '"' || c == '\\' || (c as u32) < 0x20;
    if how < 5 && !must_escape {
        s.push(c);
    } else if let (Some(e), true) = (short, how < 7) {
        s.push_str(e);
    } else {
        let mut units = [0u16; 2];
        for u in c.encode_utf16(&mut units) {
            let _ = if upper {
                write!(s, "\\u{:04X}", u)
            } else {
                write!(s, "\\u{:04x}", u)
            };
        }
    }
}

/// Whitespace between tokens: mostly none.
fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", "", " ", "\n", "\t", "\r\n  "])
}

/// Keys without escapes (escaped keys always fall back).
fn plain_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "type",
            "role",
            "text",
            "content",
            "cache_control",
            "name",
            "properties",
            "",
            "t\u{e9}xt",
            "description",
        ])
        .prop_map(String::from),
        prop::collection::vec(prop::char::range('a', 'z'), 1..8)
            .prop_map(|v| v.into_iter().collect()),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (-1e6f64..1e6).prop_map(|f| f.to_string()),
        (0u32..1000, -60i32..60, prop::bool::ANY)
            .prop_map(|(m, e, big)| format!("{m}{}{e}", if big { "E" } else { "e" })),
        (0u32..100, 0u32..1000, 0i32..99).prop_map(|(i, f, e)| format!("-{i}.{f}e+{e}")),
    ]
}

/// Any JSON value, a few levels deep, as text with random whitespace.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        number(),
        json_string(),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec((inner.clone(), ws()), 0..6).prop_map(|v| {
                let items: Vec<String> = v.into_iter().map(|(x, w)| format!("{w}{x}{w}")).collect();
                format!("[{}]", items.join(","))
            }),
            prop::collection::vec((plain_key(), inner, ws()), 0..6).prop_map(|v| {
                let items: Vec<String> = v
                    .into_iter()
                    .map(|(k, x, w)| format!("{w}\"{k}\"{w}:{w}{x}{w}"))
                    .collect();
                format!("{{{}}}", items.join(","))
            }),
        ]
    })
}

fn content() -> impl Strategy<Value = String> {
    prop_oneof![
        json_string(),
        prop::collection::vec((json_string(), prop::bool::ANY), 0..4).prop_map(|blocks| {
            let items: Vec<String> = blocks
                .into_iter()
                .map(|(t, cached)| {
                    if cached {
                        format!(
                            r#"{{"type":"text","text":{t},"cache_control":{{"type":"ephemeral"}}}}"#
                        )
                    } else {
                        format!(r#"{{"type":"text","text":{t}}}"#)
                    }
                })
                .collect();
            format!("[{}]", items.join(","))
        }),
    ]
}

fn messages() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(
            (prop::sample::select(vec!["user", "assistant", "system"]), content(), ws()),
            0..6
        )
        .prop_map(|v| {
            let items: Vec<String> = v
                .into_iter()
                .map(|(r, c, w)| format!(r#"{w}{{"role":{w}"{r}","content":{c}}}{w}"#))
                .collect();
            format!("[{}]", items.join(","))
        }),
        1 => json_string(),
        1 => Just("null".to_string()),
        1 => value().prop_filter("object messages", |v| v.starts_with('{')),
    ]
}

fn simple_float() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..1000).prop_map(|n| n.to_string()),
        // At most 2 + 5 + 8 digits: a significand under 2^53.
        (0u64..100, 0u64..100_000_000, 0usize..5, prop::bool::ANY).prop_map(
            |(i, f, zeros, neg)| format!(
                "{}{i}.{}{f}",
                if neg { "-" } else { "" },
                "0".repeat(zeros)
            )
        ),
        Just("null".to_string()),
    ]
}

/// A request body: a random subset of known and unknown fields in a
/// random order, within the scanner's rules.
fn body() -> impl Strategy<Value = String> {
    let model = prop::collection::vec(
        prop::sample::select(vec!['a', 'z', '-', '.', '4', '\u{e9}']),
        0..20,
    )
    .prop_map(|v| format!("\"{}\"", v.into_iter().collect::<String>()));
    let uint = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        Just("null".to_string())
    ];
    let boolean = prop::sample::select(vec!["true", "false", "null"]).prop_map(String::from);
    let stream_options = (
        prop::sample::select(vec!["true", "false", "null"]),
        value(),
        prop::bool::ANY,
    )
        .prop_map(|(b, extra, first)| {
            if first {
                format!(r#"{{"include_usage":{b},"extra":{extra}}}"#)
            } else {
                format!(r#"{{"extra":{extra},"include_usage":{b}}}"#)
            }
        });
    let fields = (
        prop::option::of(model),
        prop::option::of(uint.clone()),
        prop::option::of(uint.clone()),
        prop::option::of(uint),
        prop::option::of(boolean),
        prop::option::of(stream_options),
        prop::option::of(simple_float()),
        prop::option::of(prop_oneof![json_string(), content(), value()]),
        prop::option::of(messages()),
        prop::option::of(value()),
        (prop::option::of(value()), prop::option::of(json_string())),
        prop::collection::vec((plain_key(), value()), 0..3),
    );
    (
        fields,
        any::<prop::sample::Index>().prop_map(|i| i.index(1 << 20)),
        ws(),
        ws(),
    )
        .prop_map(|(f, seed, w1, w2)| {
            let (
                model,
                mt,
                mct,
                mot,
                stream,
                so,
                temp,
                system,
                msgs,
                tools,
                (input, instr),
                extra,
            ) = f;
            let mut parts: Vec<(String, String)> = Vec::new();
            let named = [
                ("model", model),
                ("max_tokens", mt),
                ("max_completion_tokens", mct),
                ("max_output_tokens", mot),
                ("stream", stream),
                ("stream_options", so),
                ("temperature", temp),
                ("system", system),
                ("messages", msgs),
                ("tools", tools),
                ("input", input),
                ("instructions", instr),
            ];
            for (k, v) in named {
                if let Some(v) = v {
                    parts.push((k.to_string(), v));
                }
            }
            let known: Vec<&str> = named_keys();
            for (k, v) in extra {
                if !known.contains(&k.as_str()) {
                    parts.push((k, v));
                }
            }
            // A deterministic shuffle from the seed.
            let mut state = seed as u64 | 1;
            for i in (1..parts.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                parts.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let items: Vec<String> = parts
                .into_iter()
                .map(|(k, v)| format!("{w1}\"{k}\"{w2}:{w1}{v}{w2}"))
                .collect();
            format!("{w1}{{{}}}{w2}", items.join(","))
        })
}

/// A body of [`body`]'s kind in which some read fields are given twice
/// or three times, the copies spread through the object.
fn body_with_duplicates() -> impl Strategy<Value = String> {
    (
        body(),
        body(),
        body(),
        prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    )
        .prop_map(|(a, b, c, picks)| {
            // The members of each body, split at top-level commas.
            let members = |s: &str| -> Vec<String> { top_members(s.trim()) };
            let mut parts = members(&a);
            for extra in [members(&b), members(&c)] {
                for m in extra {
                    // Only read fields: unknown ones say nothing new.
                    let known = named_keys()
                        .iter()
                        .any(|k| m.trim_start().starts_with(&format!("\"{k}\"")));
                    if known {
                        parts.push(m);
                    }
                }
            }
            // Move some members to other places (order decides the winner).
            for (n, p) in picks.iter().enumerate() {
                if parts.len() > 1 {
                    let from = p.index(parts.len());
                    let m = parts.remove(from);
                    let to = (from + n * 7 + 1) % (parts.len() + 1);
                    parts.insert(to, m);
                }
            }
            format!("{{{}}}", parts.join(","))
        })
}

/// The members of a JSON object's text (`{…}`), split at its top-level
/// commas (strings and nesting respected).
fn top_members(obj: &str) -> Vec<String> {
    let inner = &obj[1..obj.len() - 1];
    let (mut out, mut cur) = (Vec::new(), String::new());
    let (mut depth, mut in_str, mut esc) = (0i32, false, false);
    for c in inner.chars() {
        if in_str {
            cur.push(c);
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn named_keys() -> Vec<&'static str> {
    crate::request::meta::FIELDS.to_vec()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Duplicate(prop::sample::Index, usize),
    /// A field put first in the top-level object (duplicating one the
    /// body may already have).
    Prepend(&'static str, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        prop::sample::select(
            b"\"\\{}[],:-+.eE0159 \n\tntfu\x00\x01\x7f\x80\xbf\xc3\xe4\xed\xf0\xff".to_vec()
        ),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), interesting.clone()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), interesting).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        (any::<prop::sample::Index>(), 1usize..12).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        (
            prop::sample::select(named_keys()),
            prop::sample::select(vec!["null", "1", "true", "\"m\"", "[]", "{}"]),
        )
            .prop_map(|(k, v)| Mutation::Prepend(k, v)),
    ]
}

fn mutate(body: &mut Vec<u8>, m: &Mutation) {
    if body.is_empty() {
        return;
    }
    match *m {
        Mutation::Flip(ref i, b) => {
            let i = i.index(body.len());
            body[i] = b;
        }
        Mutation::Truncate(ref i) => body.truncate(i.index(body.len())),
        Mutation::Insert(ref i, b) => body.insert(i.index(body.len() + 1), b),
        Mutation::Delete(ref i) => {
            body.remove(i.index(body.len()));
        }
        Mutation::Duplicate(ref i, n) => {
            let at = i.index(body.len());
            let end = (at + n).min(body.len());
            let copy = body[at..end].to_vec();
            body.splice(at..at, copy);
        }
        Mutation::Prepend(k, v) => {
            if let Some(at) = body.iter().position(|&c| c == b'{') {
                let field = format!("\"{k}\":{v},");
                body.splice(at + 1..at + 1, field.bytes());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Structured bodies within the scanner's rules: it answers every
    /// one, and exactly as serde does, field by field.
    #[test]
    fn fast_path_equals_serde(body in body()) {
        prop_assert!(fields_serde(body.as_bytes()).is_some(), "serde refused: {}", body);
        prop_assert!(check(body.as_bytes()), "fell back: {}", body);
    }

    /// Bodies with read fields given more than once: the scanner answers
    /// every one, as serde does (the last value wins on both paths), and
    /// as a last-wins reading of the body (serde_json's `Value`) has it.
    #[test]
    fn duplicates_last_wins_on_both_paths(body in body_with_duplicates()) {
        prop_assert!(fields_serde(body.as_bytes()).is_some(), "serde refused: {}", body);
        prop_assert!(check(body.as_bytes()), "fell back: {}", body);
        let f = fast(body.as_bytes()).expect("answered");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let last = |k: &str| v.get(k).filter(|x| !x.is_null());
        prop_assert_eq!(f.model.as_deref(), last("model").and_then(|m| m.as_str()));
        prop_assert_eq!(f.max_tokens, last("max_tokens").and_then(|m| m.as_u64()));
        prop_assert_eq!(f.max_completion_tokens, last("max_completion_tokens").and_then(|m| m.as_u64()));
        prop_assert_eq!(f.max_output_tokens, last("max_output_tokens").and_then(|m| m.as_u64()));
        prop_assert_eq!(f.stream, last("stream").and_then(|m| m.as_bool()));
        prop_assert_eq!(
            f.include_usage,
            last("stream_options").and_then(|o| o.get("include_usage")).and_then(|b| b.as_bool())
        );
        prop_assert_eq!(f.temperature, last("temperature").and_then(|t| t.as_f64()));
        let messages = last("messages").map(|m| m.as_array().map_or(1, |a| a.len() as u32));
        prop_assert_eq!(f.messages, messages);
    }

    /// Mutated bodies: whenever the scanner answers, serde accepted the
    /// body and gives the same fields; `parse` always equals serde.
    #[test]
    fn scanner_never_accepts_what_serde_rejects(
        body in body(),
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = body.into_bytes();
        for m in &muts {
            mutate(&mut bytes, m);
        }
        check(&bytes);
    }

    /// Arbitrary values under every field name, read or walked.
    #[test]
    fn any_value_under_any_field(
        k in prop::sample::select(named_keys()),
        v in value(),
        muts in prop::collection::vec(mutation(), 0..2),
    ) {
        let mut bytes = format!("{{\"{k}\":{v}}}").into_bytes();
        for m in &muts {
            mutate(&mut bytes, m);
        }
        check(&bytes);
    }
}
