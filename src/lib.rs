//! tower-llm-resilience (crate docs are written in the README section below).
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "hyper-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper-client")))]
pub mod client;
pub mod error;
pub mod provider;
pub mod request;
pub mod response;
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod sim;

pub use error::BoxError;
