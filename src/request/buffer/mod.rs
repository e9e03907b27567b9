//! The buffering middleware: [`BufferBodyLayer`] reads a request body of any
//! type into a [`ReplayBody`] (refusing one over its limit), and attaches
//! the [`RequestMeta`] parsed from it. It also marks every value of every
//! credential header ([`KeyIdentity::headers`]) sensitive, so that `http`'s
//! `Debug` of the request — in a log line, a panic message, an error —
//! prints `Sensitive` instead of the key.
//!
//! - `layer.rs`: [`BufferBodyLayer`];
//! - `service.rs`: [`BufferBody`];
//! - `future.rs`: its response future ([`future::ResponseFuture`]), which
//!   reads the body, then waits for the inner service and calls it.
//!
//! # Readiness
//!
//! Always ready, and `poll_ready` asks nothing below: the body is read
//! first, and the inner service is waited for only once it has been read
//! (the response future then drives it, `poll_ready` → `call`), so a slow
//! upload holds nothing the inner service reserves when asked. A body
//! already buffered (a `ReplayBody` within the limit) asks the inner
//! service at the call, without waiting, and is sent there when it is
//! ready, with no clone of the services below.
//!
//! [`ReplayBody`]: crate::request::ReplayBody
//! [`RequestMeta`]: crate::request::RequestMeta
//! [`KeyIdentity::headers`]: crate::request::KeyIdentity::headers

pub mod future;
mod layer;
mod service;
#[cfg(test)]
mod tests;

pub use layer::BufferBodyLayer;
pub use service::BufferBody;

/// The default buffering limit of [`BufferBodyLayer`]: 32 MiB, Anthropic's
/// largest accepted Messages request.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;
