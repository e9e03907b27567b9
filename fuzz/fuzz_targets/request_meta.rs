//! The request-metadata scanner against the serde path and serde_json's value (differential).
//! The property is `tower_llm_resilience_fuzz::check_meta` (shared with
//! `tests/fuzz_equivalents.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_llm_resilience_fuzz::check_meta(data));
