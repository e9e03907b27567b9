//! A service clone's own cache of the limit groups it used recently.
//!
//! **Why.** Finding a group in the shared map (`groups.rs`) locks one of its
//! shards. The lock is never contended for long, but it is written by every
//! request, so two threads admitting over many groups pass the shard's
//! cache line back and forth on almost every request — the one write per
//! request that two threads share (the groups themselves are per key). A
//! `RateLimit` that serves many requests (one clone per worker, as a
//! `ServiceBuilder` stack is usually held) finds its groups here instead,
//! touching nothing another thread writes.
//!
//! **Correctness: a group is never split in two.** The map may evict a group
//! that only caches hold (they count themselves in `Group::cached`), and then
//! make a new one for the same key. A hit here takes its reference, then
//! reads `Group::evicted` after a fence; the map marks a victim, then counts
//! its references after a fence (`groups.rs`, `claim`). Either the hit sees
//! the mark, forgets the group and asks the map, or the map sees the hit's
//! reference and keeps the group.
//!
//! **Bounds.** At most [`RECENT`] groups per clone, all forgotten at once when
//! full (O(1) amortised); a clone starts empty and allocates only at its
//! second miss, so a clone made for one request (tower's usual
//! clone-per-call, a retry's spare) costs nothing. An evicted group a cache
//! still holds stays allocated until that clone forgets or drops it: at
//! most `RECENT` per live clone.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::atomic::Ordering;

use super::state::{Group, GroupKey, PreHashed};
use crate::sync::{Arc, fence};

/// The most groups one clone keeps.
pub(crate) const RECENT: usize = 1024;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Recent {
    groups: HashMap<GroupKey, Arc<Group>, BuildHasherDefault<PreHashed>>,
    /// Misses so far, up to 2: the map is filled from the second on.
    misses: u8,
}

impl Recent {
    /// `key`'s group, if this clone holds it and the map has not evicted it.
    pub(crate) fn get(&mut self, key: &GroupKey) -> Option<Arc<Group>> {
        let group = Arc::clone(self.groups.get(key)?);
        fence(Ordering::SeqCst);
        if !group.evicted.load(Ordering::SeqCst) {
            return Some(group);
        }
        if let Some(stale) = self.groups.remove(key) {
            stale.cached.fetch_sub(1, Ordering::SeqCst);
        }
        None
    }

    /// Keeps `group`, just found in the map.
    pub(crate) fn put(&mut self, group: &Arc<Group>) {
        if self.misses < 2 {
            self.misses += 1;
            if self.misses < 2 {
                return;
            }
        }
        if self.groups.len() >= RECENT {
            self.forget();
        }
        let kept = Arc::clone(group);
        // Counted after the reference is taken (see `groups.rs`, `unheld`).
        group.cached.fetch_add(1, Ordering::SeqCst);
        if let Some(old) = self.groups.insert(group.key.clone(), kept) {
            old.cached.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn forget(&mut self) {
        for (_, group) in self.groups.drain() {
            // Uncounted before the reference goes.
            group.cached.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Clone for Recent {
    /// Empty: a clone finds its own groups.
    fn clone(&self) -> Self {
        Recent::default()
    }
}

impl Drop for Recent {
    fn drop(&mut self) {
        self.forget();
    }
}

impl fmt::Debug for Recent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recent")
            .field("groups", &self.groups.len())
            .finish()
    }
}
