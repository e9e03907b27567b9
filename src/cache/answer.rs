//! Whether a response body is a complete provider answer, the only kind
//! the cache stores.
//!
//! A 2xx says nothing about the body: gateways and providers answer 200
//! with an error object, an empty body, or a body cut off at a clean end
//! (a JSON body has no terminal marker, so the transport cannot tell).
//! Stored, any of those would be replayed to every caller for the TTL.

use std::fmt;

use bytes::Bytes;
use http::HeaderMap;
use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::response::Format;

/// A body that completed ([`Outcome::Complete`](crate::response::Outcome))
/// is an answer when it is a stream — complete means its terminal event
/// was seen — or one whole JSON object that is not an error object
/// (`{"type":"error",…}` as Anthropic sends, or a non-null `error` as
/// OpenAI, Azure and Gemini send).
pub(super) fn is_answer(headers: &HeaderMap, chunks: &[Bytes]) -> bool {
    if Format::from_headers(headers) == Format::Sse {
        return true;
    }
    match chunks {
        [] => false,
        [one] => is_answer_object(one),
        many => is_answer_object(&many.concat()),
    }
}

fn is_answer_object(body: &[u8]) -> bool {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return false;
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    matches!((&mut de).deserialize_map(Top), Ok(false)) && de.end().is_ok()
}

/// Reads a top-level object: `true` when it is an error object.
struct Top;

impl<'de> Visitor<'de> for Top {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut error = false;
        while let Some(key) = map.next_key::<Field>()? {
            error |= match key {
                Field::Type => map.next_value_seed(IsErrorString)?,
                Field::Error => map.next_value::<Option<IgnoredAny>>()?.is_some(),
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                    false
                }
            };
        }
        Ok(error)
    }
}

/// The top-level keys that matter, read without allocating.
enum Field {
    Type,
    Error,
    Other,
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "type" => Field::Type,
                    "error" => Field::Error,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A value of any type: `true` when it is the string `"error"`.
struct IsErrorString;

impl<'de> DeserializeSeed<'de> for IsErrorString {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IsErrorString {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == "error")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> bool {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().expect("hv"));
        is_answer(&h, &[Bytes::copy_from_slice(body.as_bytes())])
    }

    #[test]
    fn answers_and_non_answers() {
        for yes in [
            r#"{"id":"msg_1","type":"message","content":[]}"#,
            r#" {"object":"response","error":null,"output":[]} "#,
            r#"{"type":"message","error_rate":1,"errors":[{"type":"error"}]}"#,
            r#"{"choices":[{"message":{"content":"{\"error\":1}"}}]}"#,
        ] {
            assert!(json(yes), "{yes}");
        }
        for no in [
            "",
            " \n",
            "null",
            "[]",
            r#""text""#,
            r#"{"type":"error","error":{"type":"api_error","message":"x"}}"#,
            r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#,
            r#"{"error":"quota"}"#,
            r#"{"type":"message","content":["#,
            r#"{"type":"message"}{"type":"message"}"#,
            r#"{"type":"message"} x"#,
        ] {
            assert!(!json(no), "{no}");
        }
    }

    #[test]
    fn chunks_are_read_as_one_body() {
        let h = HeaderMap::new();
        let parts = [
            Bytes::from_static(b"{\"type\":\"mess"),
            Bytes::from_static(b"age\"}"),
        ];
        assert!(is_answer(&h, &parts));
        assert!(!is_answer(&h, &parts[..1]));
        assert!(!is_answer(&h, &[]));
    }
}
