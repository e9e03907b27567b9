use super::body::Kind;
use super::*;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Body, Frame};

use crate::error::BoxError;

/// An upstream body yielding the given chunks, then optionally an error.
struct Chunks(VecDeque<Result<Bytes, std::io::Error>>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|r| r.map(Frame::data)))
    }
}

fn upstream(chunks: &[&[u8]]) -> ResponseBody {
    ResponseBody::new(Chunks(
        chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect(),
    ))
}

#[derive(Default, Clone)]
struct Seen(Arc<Mutex<(Vec<u8>, Vec<Completion>)>>);

impl BodyObserver for Seen {
    fn on_data(&mut self, data: &Bytes) {
        self.0.lock().expect("lock").0.extend_from_slice(data);
    }
    fn on_complete(self: Box<Self>, c: &Completion) {
        self.0.lock().expect("lock").1.push(c.clone());
    }
}

impl Seen {
    fn attach(body: &mut ResponseBody) -> Seen {
        let s = Seen::default();
        body.observe(Box::new(s.clone()));
        s
    }
    fn completions(&self) -> Vec<Completion> {
        self.0.lock().expect("lock").1.clone()
    }
    fn one(&self) -> Completion {
        let all = self.completions();
        assert_eq!(all.len(), 1, "exactly one completion: {all:?}");
        all[0].clone()
    }
    fn data(&self) -> Vec<u8> {
        self.0.lock().expect("lock").0.clone()
    }
}

fn drain(mut body: ResponseBody) -> Result<Vec<u8>, BoxError> {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut out = Vec::new();
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(f))) => out.extend_from_slice(f.data_ref().expect("data")),
            Poll::Ready(Some(Err(e))) => return Err(e),
            Poll::Ready(None) => return Ok(out),
            Poll::Pending => unreachable!("test bodies are always ready"),
        }
    }
}

const ANTHROPIC: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":40}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello \\\"usage\\\"\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

const OPENAI: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n\
data: [DONE]\n\n";

fn sse(chunks: &[&[u8]]) -> (ResponseBody, Seen) {
    let mut body = upstream(chunks).with_format(Format::Sse);
    let seen = Seen::attach(&mut body);
    (body, seen)
}

#[test]
fn anthropic_stream_complete_at_every_split() {
    let all = ANTHROPIC.as_bytes();
    for cut in 0..=all.len() {
        let (body, seen) = sse(&[&all[..cut], &all[cut..]]);
        assert_eq!(drain(body).expect("ok"), all);
        let c = seen.one();
        assert_eq!(c.outcome, Outcome::Complete, "cut at {cut}");
        let u = c.usage.expect("usage");
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cache_read_input_tokens),
            (25, 15, 40),
            "cut at {cut}"
        );
        assert!(c.content_started);
        assert_eq!(c.bytes, all.len() as u64);
        assert_eq!(seen.data(), all);
    }
}

#[test]
fn crlf_line_endings() {
    let crlf = ANTHROPIC.replace('\n', "\r\n");
    let (body, seen) = sse(&[crlf.as_bytes()]);
    drain(body).expect("ok");
    let c = seen.one();
    assert_eq!(c.outcome, Outcome::Complete);
    assert_eq!(c.usage.map(|u| u.output_tokens), Some(15));
}

#[test]
fn anthropic_truncated_stream() {
    let cut = ANTHROPIC.find("event: message_delta").expect("delta");
    let (body, seen) = sse(&[&ANTHROPIC.as_bytes()[..cut]]);
    drain(body).expect("ok");
    let c = seen.one();
    assert_eq!(c.outcome, Outcome::Truncated);
    // The input tokens of message_start were seen before the cut.
    assert_eq!(
        c.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((25, 1))
    );
    // Cut inside the final event (no blank line after message_stop).
    let (body, seen) = sse(&[ANTHROPIC.trim_end().as_bytes()]);
    drain(body).expect("ok");
    assert_eq!(seen.one().outcome, Outcome::Truncated);
}

#[test]
fn anthropic_mid_stream_overloaded_error() {
    let cut = ANTHROPIC.find("event: content_block_stop").expect("stop");
    let stream = format!(
        "{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n",
        &ANTHROPIC[..cut]
    );
    let (body, seen) = sse(&[stream.as_bytes()]);
    drain(body).expect("ok");
    let c = seen.one();
    assert_eq!(c.outcome, Outcome::ErrorEvent);
    let e = c.error.expect("classified");
    assert_eq!(e.kind, crate::provider::ErrorKind::Overloaded);
    assert_eq!(
        e.error_type.map(|t| t.as_str().to_owned()).as_deref(),
        Some("overloaded_error")
    );
    assert!(c.content_started);
    // An error before any content: content_started stays false.
    let early = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let (body, seen) = sse(&[early.as_bytes()]);
    drain(body).expect("ok");
    let c = seen.one();
    assert_eq!((c.outcome, c.content_started), (Outcome::ErrorEvent, false));
}

#[test]
fn openai_stream_with_usage_complete_and_truncated() {
    let (body, seen) = sse(&[OPENAI.as_bytes()]);
    drain(body).expect("ok");
    let c = seen.one();
    assert_eq!(c.outcome, Outcome::Complete);
    assert_eq!(
        c.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((9, 2))
    );

    let without_done = OPENAI.replace("data: [DONE]\n\n", "");
    let (body, seen) = sse(&[without_done.as_bytes()]);
    drain(body).expect("ok");
    assert_eq!(seen.one().outcome, Outcome::Truncated);

    // No include_usage: complete, usage unknown.
    let no_usage: String = OPENAI
        .split("\n\n")
        .filter(|e| !e.contains("prompt_tokens"))
        .map(|e| format!("{e}\n\n"))
        .collect();
    let (body, seen) = sse(&[no_usage.trim_end_matches('\n').as_bytes(), b"\n\n"]);
    drain(body).expect("ok");
    let c = seen.one();
    assert_eq!((c.outcome, c.usage), (Outcome::Complete, None));
}

#[test]
fn openai_mid_stream_error() {
    let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n\
                  data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
    let (body, seen) = sse(&[stream.as_bytes()]);
    drain(body).expect("ok");
    let c = seen.one();
    assert_eq!(c.outcome, Outcome::ErrorEvent);
    let e = c.error.expect("classified");
    assert_eq!(
        e.error_type.map(|t| t.as_str().to_owned()).as_deref(),
        Some("server_error")
    );
}

#[test]
fn openai_responses_completed_event() {
    let stream = "event: response.output_text.delta\ndata: {\"delta\":\"hi\"}\n\n\
                  event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":3}}}\n\n";
    let (body, seen) = sse(&[stream.as_bytes()]);
    drain(body).expect("ok");
    let c = seen.one();
    assert_eq!(c.outcome, Outcome::Complete);
    assert_eq!(
        c.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((7, 3))
    );
}

#[test]
fn json_body_usage_across_chunks() {
    let json = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":3,"output_tokens":4}}"#;
    let mut body = upstream(&[&json[..10], &json[10..50], &json[50..]]).with_format(Format::Json);
    let seen = Seen::attach(&mut body);
    drain(body).expect("ok");
    let c = seen.one();
    assert_eq!(c.outcome, Outcome::Complete);
    assert_eq!(
        c.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((3, 4))
    );
}

#[test]
fn from_response_picks_format_from_content_type() {
    let res = Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(Chunks(VecDeque::from([Ok(Bytes::from_static(
            b"data: [DONE]\n\n",
        ))])))
        .expect("response");
    let mut res = ResponseBody::from_response(res);
    let seen = Seen::attach(res.body_mut());
    drain(res.into_body()).expect("ok");
    assert_eq!(seen.one().outcome, Outcome::Complete);
    // The same bytes as opaque JSON are complete too, but with no usage.
    let mut h = HeaderMap::new();
    h.insert("content-type", "Application/JSON".parse().expect("hv"));
    assert_eq!(Format::from_headers(&h), Format::Json);
    h.insert(
        "content-type",
        "application/problem+json".parse().expect("hv"),
    );
    assert_eq!(Format::from_headers(&h), Format::Json);
    h.insert("content-type", "text/plain".parse().expect("hv"));
    assert_eq!(Format::from_headers(&h), Format::Opaque);
    h.insert(
        "content-type",
        " Text/Event-Stream ; charset=utf-8".parse().expect("hv"),
    );
    assert_eq!(Format::from_headers(&h), Format::Sse);
    h.insert("content-type", "application/jsonx".parse().expect("hv"));
    assert_eq!(Format::from_headers(&h), Format::Opaque);
    h.insert(
        "content-type",
        http::HeaderValue::from_bytes(b"application/json\xff").expect("hv"),
    );
    assert_eq!(Format::from_headers(&h), Format::Opaque);
}

#[test]
fn dropped_before_end_reports_dropped_once() {
    let (mut body, seen) = sse(&[ANTHROPIC.as_bytes(), b"more"]);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let first = Pin::new(&mut body).poll_frame(&mut cx);
    assert!(matches!(first, Poll::Ready(Some(Ok(_)))));
    assert!(seen.completions().is_empty());
    drop(body);
    let c = seen.one();
    assert_eq!(c.outcome, Outcome::Dropped);
    assert_eq!(c.usage.map(|u| u.output_tokens), Some(15));
}

#[test]
fn body_error_reported() {
    let mut body = ResponseBody::new(Chunks(VecDeque::from([
        Ok(Bytes::from_static(b"{\"usa")),
        Err(std::io::Error::other("connection reset")),
    ])))
    .with_format(Format::Json);
    let seen = Seen::attach(&mut body);
    let err = drain(body).expect_err("error");
    assert!(err.to_string().contains("connection reset"));
    let c = seen.one();
    assert_eq!((c.outcome, c.usage), (Outcome::BodyError, None));
}

#[test]
fn end_noticed_without_polling_for_none() {
    // hyper stops once `is_end_stream` is true; the completion must
    // fire then, not only at drop.
    let mut body = ResponseBody::full_sse(Bytes::from_static(ANTHROPIC.as_bytes()));
    let seen = Seen::attach(&mut body);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(matches!(
        Pin::new(&mut body).poll_frame(&mut cx),
        Poll::Ready(Some(Ok(_)))
    ));
    assert!(body.is_end_stream());
    assert_eq!(seen.one().outcome, Outcome::Complete);
    drop(body);
    assert_eq!(seen.completions().len(), 1, "not told twice");
}

#[test]
fn observer_added_after_end_is_told_at_once() {
    let mut body = ResponseBody::full_sse(Bytes::from_static(ANTHROPIC.as_bytes()));
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let _ = Pin::new(&mut body).poll_frame(&mut cx);
    let seen = Seen::attach(&mut body);
    let c = seen.one();
    assert_eq!(c.outcome, Outcome::Complete);
    assert_eq!(c.usage.map(|u| u.output_tokens), Some(15));
}

#[test]
fn oversized_event_stops_observing_with_bounded_memory() {
    let huge = vec![b'x'; SSE_EVENT_LIMIT + 10];
    let mut chunks: Vec<&[u8]> = vec![b"data: "];
    chunks.extend(huge.chunks(4096));
    chunks.push(b"\n\ndata: [DONE]\n\n");
    let (body, seen) = sse(&chunks);
    let out = drain(body).expect("ok");
    assert_eq!(out.len(), 6 + huge.len() + 16, "data still passes through");
    assert_eq!(seen.one().outcome, Outcome::Unobserved);
}

/// Defect found by the fuzz property "any chunking of the same bytes gives
/// the same completion" (`fuzz/`, target `sse`), at the line bound: a line
/// over [`SSE_EVENT_LIMIT`] that arrived in one chunk with its line end was
/// read as usual, while the same line in pieces stopped the observation.
#[test]
fn line_over_limit_in_one_chunk_is_unobserved_as_when_split() {
    let over_limit = |head: &[u8], len: usize| {
        let mut s = head.to_vec();
        s.resize(head.len() + len, b'x');
        s.extend_from_slice(b"\n\n");
        s.extend_from_slice(ANTHROPIC.as_bytes());
        s
    };
    for stream in [
        // A comment line over the bound.
        over_limit(b":", SSE_EVENT_LIMIT),
        // A data line over the line bound, its value just under the event's.
        over_limit(b"data: ", SSE_EVENT_LIMIT - 3),
    ] {
        let (body, seen) = sse(&[&stream]);
        assert_eq!(drain(body).expect("ok"), stream);
        let whole = seen.one();
        let pieces: Vec<&[u8]> = stream.chunks(64 * 1024).collect();
        let (body, seen) = sse(&pieces);
        assert_eq!(drain(body).expect("ok"), stream);
        assert_eq!(whole.outcome, Outcome::Unobserved);
        assert_eq!(whole, seen.one());
    }
}

#[test]
fn replay_is_byte_identical() {
    let chunks: Arc<[Bytes]> = ANTHROPIC
        .as_bytes()
        .chunks(17)
        .map(Bytes::copy_from_slice)
        .collect();
    let mut body = ResponseBody::replay(Arc::clone(&chunks)).with_format(Format::Sse);
    assert_eq!(body.size_hint().exact(), Some(ANTHROPIC.len() as u64));
    let seen = Seen::attach(&mut body);
    assert_eq!(drain(body).expect("ok"), ANTHROPIC.as_bytes());
    assert_eq!(seen.one().outcome, Outcome::Complete);
}

#[test]
fn wrapping_a_response_body_does_not_nest() {
    let mut inner = ResponseBody::full("abc");
    let seen = Seen::attach(&mut inner);
    let outer = ResponseBody::new(inner);
    assert!(matches!(outer.kind, Kind::Full(_)), "not boxed again");
    assert_eq!(drain(outer).expect("ok"), b"abc");
    assert_eq!(seen.one().outcome, Outcome::Complete);
}

fn cx() -> Context<'static> {
    Context::from_waker(std::task::Waker::noop())
}

#[test]
fn peek_to_end_then_deliver_everything_once() {
    let json = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    let mut body = upstream(&[&json[..20], &json[20..]]).with_format(Format::Json);
    let seen = Seen::attach(&mut body);
    assert_eq!(body.poll_peek_to_end(&mut cx(), 1 << 16), Poll::Ready(()));
    assert_eq!(body.peeked(), Bytes::from_static(json));
    assert!(seen.data().is_empty(), "peeking delivers nothing");
    assert!(!body.is_end_stream());
    assert_eq!(drain(body).expect("ok"), json);
    assert_eq!(seen.data(), json);
    assert_eq!(seen.one().outcome, Outcome::Complete);
}

#[test]
fn peek_respects_its_limit() {
    let mut body = upstream(&[b"aaaa", b"bbbb", b"cccc"]);
    assert_eq!(body.poll_peek_to_end(&mut cx(), 5), Poll::Ready(()));
    assert_eq!(
        body.peeked_len(),
        8,
        "stops at the first frame past the limit"
    );
    assert_eq!(drain(body).expect("ok"), b"aaaabbbbcccc");
}

#[test]
fn stream_start_error_before_content() {
    let early = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
                 event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let (mut body, seen) = sse(&[&early.as_bytes()[..30], &early.as_bytes()[30..]]);
    match body.poll_stream_start(&mut cx(), 1 << 16) {
        Poll::Ready(StreamStart::Error(e)) => {
            assert_eq!(e.kind, crate::provider::ErrorKind::Overloaded)
        }
        other => panic!("{other:?}"),
    }
    drop(body);
    assert_eq!(seen.one().outcome, Outcome::Dropped);
}

#[test]
fn stream_start_content_keeps_every_byte() {
    let (mut body, seen) = sse(&ANTHROPIC.as_bytes().chunks(40).collect::<Vec<_>>());
    assert_eq!(
        body.poll_stream_start(&mut cx(), 1 << 16),
        Poll::Ready(StreamStart::Content)
    );
    assert!(body.peeked_len() > 0);
    assert_eq!(drain(body).expect("ok"), ANTHROPIC.as_bytes());
    let c = seen.one();
    assert_eq!(c.outcome, Outcome::Complete);
    assert_eq!(
        c.usage.map(|u| u.output_tokens),
        Some(15),
        "usage observed once, at delivery"
    );
}

#[test]
fn stream_start_ended_and_undecided() {
    let (mut body, _) = sse(&[b"event: ping\ndata: {}\n\n"]);
    assert_eq!(
        body.poll_stream_start(&mut cx(), 1 << 16),
        Poll::Ready(StreamStart::Ended)
    );
    let (mut body, _) = sse(&[b"event: ping\ndata: {}\n\n", b"event: ping\ndata: {}\n\n"]);
    assert_eq!(
        body.poll_stream_start(&mut cx(), 10),
        Poll::Ready(StreamStart::Undecided)
    );
    let mut json = ResponseBody::full("{}").with_format(Format::Json);
    assert_eq!(
        json.poll_stream_start(&mut cx(), 10),
        Poll::Ready(StreamStart::Content)
    );
}

#[test]
fn peeked_upstream_error_is_delivered_after_the_frames() {
    let mut body = ResponseBody::new(Chunks(VecDeque::from([
        Ok(Bytes::from_static(b"abc")),
        Err(std::io::Error::other("reset")),
    ])));
    let seen = Seen::attach(&mut body);
    assert_eq!(body.poll_peek_to_end(&mut cx(), 100), Poll::Ready(()));
    let mut cx = cx();
    assert!(matches!(
        Pin::new(&mut body).poll_frame(&mut cx),
        Poll::Ready(Some(Ok(_)))
    ));
    assert!(matches!(
        Pin::new(&mut body).poll_frame(&mut cx),
        Poll::Ready(Some(Err(_)))
    ));
    assert_eq!(seen.one().outcome, Outcome::BodyError);
}

proptest::proptest! {
    #[test]
    fn any_chunking_gives_the_same_observation(cuts in proptest::collection::vec(0usize..2000, 0..12)) {
        for stream in [ANTHROPIC, OPENAI] {
            let bytes = stream.as_bytes();
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            let (body, seen) = sse(&chunks);
            proptest::prop_assert_eq!(drain(body).expect("ok"), bytes);
            let c = seen.one();
            proptest::prop_assert_eq!(c.outcome, Outcome::Complete);
            proptest::prop_assert!(c.usage.is_some());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
        let (body, seen) = sse(&[&data]);
        drain(body).expect("ok");
        proptest::prop_assert_eq!(seen.completions().len(), 1);
    }
}
