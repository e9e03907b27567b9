//! The SSE (and JSON) usage observer: any chunking of the same bytes gives the same completion.
//! The property is `tower_llm_resilience_fuzz::check_sse` (shared with
//! `tests/fuzz_equivalents.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_llm_resilience_fuzz::check_sse(data));
