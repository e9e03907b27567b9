//! Per-request costs of the foundation: metadata parsing and response
//! observation. `cargo bench --bench parse`.

mod support;

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderMap;
use http_body::Body;
use tower_llm_resilience::request::RequestMeta;
use tower_llm_resilience::response::ResponseBody;

/// A Messages body of about 4 KiB: a system prompt and a few turns.
fn messages_body_4k() -> Vec<u8> {
    support::messages_body_4k(true).to_vec()
}

fn sse_stream(deltas: usize) -> Bytes {
    let mut s = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
         event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    );
    for _ in 0..deltas {
        s.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"word \"}}\n\n");
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
         event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":100}}\n\n\
         event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    Bytes::from(s)
}

fn drain(mut body: ResponseBody) -> u64 {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut n = 0u64;
    while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
        n += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    n
}

fn bench(c: &mut Criterion) {
    let body = messages_body_4k();
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("request_meta_4k", |b| {
        b.iter(|| RequestMeta::parse(black_box("/v1/messages"), &headers, black_box(&body)))
    });
    // The same parse forced through the serde path alone (the fallback of
    // the scanner above, and what `parse` was before it).
    g.bench_function("request_meta_4k_serde", |b| {
        b.iter(|| RequestMeta::parse_serde(black_box("/v1/messages"), &headers, black_box(&body)))
    });
    g.finish();

    let stream = sse_stream(100);
    let chunks: Vec<Bytes> = stream.chunks(64).map(Bytes::copy_from_slice).collect();
    let chunks: std::sync::Arc<[Bytes]> = chunks.into();
    let mut g = c.benchmark_group("observe");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("sse_100_deltas_64b_chunks", |b| {
        b.iter(|| {
            let mut body = ResponseBody::replay(chunks.clone())
                .with_format(tower_llm_resilience::response::Format::Sse);
            body.on_complete(|c| {
                black_box(c.usage);
            });
            drain(body)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
