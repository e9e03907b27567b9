//! tower-llm-resilience (crate docs are written in the README section below).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
pub mod provider;
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod sim;

pub use error::BoxError;
