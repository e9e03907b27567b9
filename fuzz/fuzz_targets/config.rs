//! The configuration parser: TOML and JSON text into a `Config`.
//! The property is `tower_llm_resilience_fuzz::check_config` (shared with
//! `tests/fuzz_equivalents.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_llm_resilience_fuzz::check_config(data));
