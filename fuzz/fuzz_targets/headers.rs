//! Response headers: retry advice and quota snapshots of every family.
//! The property is `tower_llm_resilience_fuzz::check_headers` (shared with
//! `tests/fuzz_equivalents.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_llm_resilience_fuzz::check_headers(data));
