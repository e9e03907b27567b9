//! The cache key's canonical JSON hash: equal for equal values, never a panic.
//! The property is `tower_llm_resilience_fuzz::check_canonical` (shared with
//! `tests/fuzz_equivalents.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_llm_resilience_fuzz::check_canonical(data));
