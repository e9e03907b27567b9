//! tower-llm-resilience (crate docs are written in the README section below).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
pub mod provider;
pub mod queue;
pub mod rate;
mod sync;

pub use error::BoxError;
