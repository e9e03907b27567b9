//! Usage observation of a JSON body: kept (up to [`JSON_USAGE_LIMIT`]) and
//! its `usage` read at the end. Also what the SSE reader uses of JSON: the
//! `{"usage": …}` shape of its events and a byte search.

use bytes::Bytes;
use serde::Deserialize;

use crate::provider::Usage;
use crate::provider::usage::UsageWire;

use super::JSON_USAGE_LIMIT;

#[derive(Default)]
pub(super) struct JsonTracker {
    /// The first chunk, kept apart: most JSON bodies arrive in one.
    first: Option<Bytes>,
    rest: Vec<Bytes>,
    len: usize,
    overflow: bool,
}

impl JsonTracker {
    pub(super) fn feed(&mut self, data: &Bytes) {
        if self.overflow {
            return;
        }
        self.len = self.len.saturating_add(data.len());
        if self.len > JSON_USAGE_LIMIT {
            self.overflow = true;
            self.first = None;
            self.rest = Vec::new();
        } else if self.first.is_none() {
            self.first = Some(data.clone());
        } else {
            self.rest.push(data.clone());
        }
    }

    pub(super) fn usage(&self) -> Option<Usage> {
        if self.overflow {
            return None;
        }
        let first = self.first.as_deref().unwrap_or_default();
        if self.rest.is_empty() {
            return crate::provider::usage_from_json(first);
        }
        let mut all = Vec::with_capacity(self.len);
        all.extend_from_slice(first);
        for chunk in &self.rest {
            all.extend_from_slice(chunk);
        }
        crate::provider::usage_from_json(&all)
    }
}

#[derive(Deserialize)]
pub(super) struct WithUsage {
    pub(super) usage: Option<UsageWire>,
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
