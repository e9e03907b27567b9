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
    chunks: Vec<Bytes>,
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
            self.chunks = Vec::new();
        } else {
            self.chunks.push(data.clone());
        }
    }

    pub(super) fn usage(&self) -> Option<Usage> {
        if self.overflow {
            return None;
        }
        // Most JSON bodies arrive in one chunk: read it in place.
        if let [one] = self.chunks.as_slice() {
            return crate::provider::usage_from_json(one);
        }
        crate::provider::usage_from_json(&self.chunks.concat())
    }
}

#[derive(Deserialize)]
pub(super) struct WithUsage {
    pub(super) usage: Option<UsageWire>,
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
