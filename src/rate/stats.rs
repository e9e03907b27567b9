//! What a rate limiter can tell about its groups.

use std::sync::Arc;
use std::time::Duration;

use super::gcra::{DIMENSIONS, Dimension, Limit};
use crate::request::KeyId;

/// A snapshot of one limit group (one API key and model).
///
/// Arrays are indexed by [`Dimension::index`]: requests, input tokens,
/// output tokens, combined tokens.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GroupStats {
    /// The API key's identity (never the key).
    pub key: Option<KeyId>,
    /// The model.
    pub model: Option<Arc<str>>,
    /// Limits from the configuration.
    pub configured: [Option<Limit>; DIMENSIONS],
    /// Limits the provider announced.
    pub learned: [Option<Limit>; DIMENSIONS],
    /// Limits in force.
    pub effective: [Option<Limit>; DIMENSIONS],
    /// Units that could be reserved now, locally.
    pub available: [Option<u64>; DIMENSIONS],
    /// What the provider last said remains.
    pub server_remaining: [Option<u64>; DIMENSIONS],
    /// The fraction of each bucket in use now (0 = full bucket).
    pub utilization: [Option<f64>; DIMENSIONS],
    /// Requests waiting in the queue.
    pub queued: usize,
    /// Requests sent whose response has not ended.
    pub in_flight: u32,
    /// Time left in a 429 cooldown.
    pub cooldown: Option<Duration>,
}

impl GroupStats {
    /// The effective limit of one dimension.
    pub fn limit(&self, dimension: Dimension) -> Option<Limit> {
        self.effective[dimension.index()]
    }
}

/// Passed to a threshold callback when a group's use of a dimension crosses
/// the threshold upward.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ThresholdEvent {
    /// Which configured threshold (in the order they were added).
    pub threshold: usize,
    /// Its fraction.
    pub fraction: f64,
    /// The dimension that crossed it.
    pub dimension: Dimension,
    /// The fraction in use now.
    pub utilization: f64,
    /// The group's API key identity.
    pub key: Option<KeyId>,
    /// The group's model.
    pub model: Option<Arc<str>>,
}
