//! Token-bucket rate limiting for LLM APIs: requests, input tokens and output
//! tokens per (key, model).
//!
//! For now this holds the pure algorithm, [`gcra`]; the store, the layer, the
//! service and its future build on it (DESIGN §4).

pub mod gcra;
