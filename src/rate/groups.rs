//! The bounded map of limit groups.
//!
//! **Bound.** At most `max_groups` groups exist at any time. The map is split
//! into shards (up to [`MAX_SHARDS`], each of at least [`MIN_PER_SHARD`]
//! groups unless `max_groups` is smaller) by the group's precomputed hash,
//! each shard with its own lock and a fixed share of `max_groups` — so no
//! lock is global, and a shard can begin evicting before the whole map holds
//! `max_groups`.
//!
//! **Eviction: CLOCK, O(1) amortised.** Each shard keeps its groups in a ring
//! with a "referenced" bit, set when a request finds its group. A new group
//! in a full shard takes the slot of the first group under the hand that is
//! not busy (no request holds it: a busy group is never split in two) and
//! either unreferenced or idle for `idle_timeout`; the hand clears the bits
//! it passes. Every bit it clears was set by a lookup, so the work per
//! insertion is amortised O(1) while groups are free; no sort, no scan of
//! the map. A shard whose every group is busy is passed over once (twice its
//! size at most) and the newcomer refused with
//! [`TooManyGroups`](crate::error::TooManyGroups).
//!
//! **Tombstones: no second burst.** A group evicted while its bucket still
//! refills (or its 429 gate is closed) leaves a tombstone: its 64-bit hash,
//! each bucket's TAT and the gate, 56 bytes. A new group of the same hash
//! starts from them instead of full. Each shard keeps as many tombstones as
//! groups, first in first out, so a key evicted with a drained bucket gets a
//! fresh one early only once as many other drained groups were evicted from
//! its shard after it — with more active keys than twice `max_groups` within
//! one refill time, which means `max_groups` is set too low for the
//! traffic. (A hash collision restores someone else's state: only ever
//! stricter, never a free burst.) Learned limits and the server's last
//! `remaining` are not kept: the next response teaches them again.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::limit::DIMENSIONS;
use super::state::{Group, GroupKey, PreHashed};
use crate::error::TooManyGroups;
use crate::sync::{Arc, Mutex, lock};

/// The most shards of one map.
pub(crate) const MAX_SHARDS: usize = 32;
/// The fewest groups per shard (unless `max_groups` itself is smaller).
pub(crate) const MIN_PER_SHARD: usize = 64;

/// What an evicted, still-refilling group leaves behind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tomb {
    pub(crate) hash: u64,
    /// Each bucket's TAT (0 for a dimension without one).
    pub(crate) tat: [u64; DIMENSIONS],
    pub(crate) cooldown_until: u64,
    /// When every bucket is full again and the gate open: after that the
    /// tombstone says nothing.
    pub(crate) until: u64,
}

/// How eviction sees a group.
pub(crate) enum Judged {
    /// A request holds it (waiting, holding a reservation, or in flight).
    Busy,
    /// Free: `idle` past the idle timeout; its tombstone if one is needed.
    Free { idle: bool, tomb: Option<Tomb> },
}

struct Slot {
    group: Arc<Group>,
    referenced: bool,
}

type Index<K> = HashMap<K, u32, BuildHasherDefault<PreHashed>>;

struct Shard {
    index: Index<GroupKey>,
    ring: Vec<Slot>,
    hand: usize,
    tombs: Vec<Option<Tomb>>,
    tomb_next: usize,
    tomb_index: HashMap<u64, u32, BuildHasherDefault<PreHashed>>,
}

/// One shard per cache line pair, so two threads on two shards do not
/// share a line.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

pub(crate) struct Groups {
    shards: Box<[Padded]>,
    per_shard: usize,
}

impl Groups {
    pub(crate) fn new(max_groups: usize) -> Self {
        let max_groups = max_groups.max(1);
        let n = (max_groups / MIN_PER_SHARD).clamp(1, MAX_SHARDS);
        let per_shard = max_groups / n;
        let shards = (0..n)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    index: Index::default(),
                    ring: Vec::new(),
                    hand: 0,
                    tombs: Vec::new(),
                    tomb_next: 0,
                    tomb_index: HashMap::default(),
                }))
            })
            .collect();
        Groups { shards, per_shard }
    }

    /// The most groups this map holds (≤ `max_groups`).
    pub(crate) fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // Bits 32..64 through a multiply: independent of the low bits the
        // shard's table indexes by and of its top-7-bit tags, mostly.
        let i = ((hash >> 32) * self.shards.len() as u64) >> 32;
        &self.shards[i as usize].0
    }

    /// The group of `key`, or a new one from `make` (given the key's
    /// tombstone, if any), evicting one judged free by `judge` when the
    /// shard is full.
    pub(crate) fn get_or_insert(
        &self,
        key: GroupKey,
        now: u64,
        judge: impl Fn(&Group) -> Judged,
        make: impl FnOnce(GroupKey, Option<Tomb>) -> Arc<Group>,
    ) -> Result<Arc<Group>, TooManyGroups> {
        let mut shard = lock(self.shard(key.hash()));
        if let Some(&i) = shard.index.get(&key) {
            let slot = &mut shard.ring[i as usize];
            if !slot.referenced {
                slot.referenced = true;
            }
            return Ok(Arc::clone(&slot.group));
        }
        // Its own tombstone first: burying the victim's may push it out.
        let tomb = shard.exhume(key.hash(), now);
        let at = if shard.ring.len() < self.per_shard {
            None
        } else {
            let Some((i, victim)) = shard.sweep(&judge) else {
                if let Some(t) = tomb {
                    // Refused: the key's state waits for it again.
                    shard.bury(t, self.per_shard);
                }
                return Err(TooManyGroups::new(self.capacity()));
            };
            if let Some(t) = victim {
                shard.bury(t, self.per_shard);
            }
            Some(i)
        };
        let group = make(key.clone(), tomb);
        let slot = Slot {
            group: Arc::clone(&group),
            referenced: false,
        };
        let i = match at {
            Some(i) => {
                let old = std::mem::replace(&mut shard.ring[i], slot);
                shard.index.remove(&old.group.key);
                i
            }
            None => {
                shard.ring.push(slot);
                shard.ring.len() - 1
            }
        };
        shard.index.insert(key, i as u32);
        Ok(group)
    }

    /// Groups held now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).ring.len()).sum()
    }

    /// Every group (one shard locked at a time).
    pub(crate) fn all(&self) -> Vec<Arc<Group>> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            out.extend(lock(&s.0).ring.iter().map(|slot| Arc::clone(&slot.group)));
        }
        out
    }

    /// Tombstones held now (for tests).
    #[cfg(test)]
    pub(crate) fn tombs(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(&s.0).tomb_index.len())
            .sum()
    }
}

impl Shard {
    /// The CLOCK hand: the slot to reuse and the victim's tombstone, or
    /// `None` when every group is busy. At most two turns: the first clears
    /// every bit it passes.
    fn sweep(&mut self, judge: &impl Fn(&Group) -> Judged) -> Option<(usize, Option<Tomb>)> {
        let len = self.ring.len();
        for _ in 0..2 * len {
            let i = self.hand;
            self.hand = (i + 1) % len;
            let slot = &mut self.ring[i];
            // Only the map holds it: no future uses it. (Nothing else can
            // clone it while this shard is locked.)
            if Arc::strong_count(&slot.group) > 1 {
                continue;
            }
            match judge(&slot.group) {
                Judged::Busy => {}
                Judged::Free { idle, tomb } => {
                    if slot.referenced && !idle {
                        slot.referenced = false;
                    } else {
                        return Some((i, tomb));
                    }
                }
            }
        }
        None
    }

    /// Keeps `tomb` (first in, first out, `cap` at most).
    fn bury(&mut self, tomb: Tomb, cap: usize) {
        let i = if self.tombs.len() < cap {
            self.tombs.push(None);
            self.tombs.len() - 1
        } else {
            let i = self.tomb_next;
            self.tomb_next = (i + 1) % cap;
            i
        };
        if let Some(old) = self.tombs[i].take()
            && self.tomb_index.get(&old.hash) == Some(&(i as u32))
        {
            self.tomb_index.remove(&old.hash);
        }
        self.tombs[i] = Some(tomb);
        self.tomb_index.insert(tomb.hash, i as u32);
    }

    /// The tombstone of `hash`, taken, if it still says something at `now`.
    fn exhume(&mut self, hash: u64, now: u64) -> Option<Tomb> {
        let i = self.tomb_index.remove(&hash)?;
        self.tombs[i as usize].take().filter(|t| t.until > now)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use proptest::prelude::*;

    use super::*;
    use crate::rate::state::Shared;
    use crate::rate::{Limits, RateLimitLayer};

    fn layer(max_groups: usize) -> RateLimitLayer {
        RateLimitLayer::builder()
            .limits(Limits::unlimited())
            .max_groups(max_groups)
            .build()
            .expect("layer")
    }

    fn key(i: u64) -> GroupKey {
        GroupKey::new(None, Some(std::sync::Arc::from(format!("m{i}"))))
    }

    fn free(_: &Group) -> Judged {
        Judged::Free {
            idle: false,
            tomb: None,
        }
    }

    /// A new key past the cap examines O(1) groups, amortised: each group
    /// the hand passes over without evicting had its bit set by a lookup.
    #[test]
    fn eviction_work_is_amortised_constant() {
        let layer = layer(10_000);
        let limiter = layer.limiter();
        let (shared, groups) = (limiter.shared(), limiter.groups());
        let judged = Cell::new(0usize);
        let judge = |g: &Group| {
            judged.set(judged.get() + 1);
            free(g)
        };
        let get = |i: u64| {
            groups
                .get_or_insert(key(i), 0, judge, |k, t| Shared::new_group(shared, k, t, 0))
                .expect("group")
        };
        for i in 0..10_000 {
            get(i);
        }
        let (mut inserts, mut hits) = (0usize, 0usize);
        let mut rng = 1u64;
        for i in 10_000..110_000 {
            get(i);
            inserts += 1;
            // Some lookups of recent keys set referenced bits.
            rng = crate::util::splitmix64(rng);
            get(i - rng % 100);
            hits += 1;
        }
        assert!(groups.len() <= groups.capacity());
        assert!(
            judged.get() <= 2 * (inserts + hits),
            "{} groups judged for {inserts} inserts and {hits} lookups",
            judged.get()
        );
    }

    /// A refilling group evicted leaves a tombstone that its key gets back.
    #[test]
    fn a_tombstone_is_restored_to_its_key() {
        let layer = layer(1);
        let limiter = layer.limiter();
        let (shared, groups) = (limiter.shared(), limiter.groups());
        let tomb = |g: &Group| Judged::Free {
            idle: false,
            tomb: Some(Tomb {
                hash: g.key.hash(),
                tat: [7, 0, 0, 0],
                cooldown_until: 9,
                until: 10,
            }),
        };
        let restored = Cell::new(None);
        let make = |k, t: Option<Tomb>| {
            restored.set(t.map(|t| t.cooldown_until));
            Shared::new_group(shared, k, t, 0)
        };
        groups.get_or_insert(key(1), 0, tomb, make).expect("a");
        groups.get_or_insert(key(2), 0, tomb, make).expect("b");
        assert_eq!(groups.tombs(), 1);
        groups
            .get_or_insert(key(1), 0, tomb, make)
            .expect("a again");
        assert_eq!(restored.get(), Some(9), "key 1 came back without its state");
        // At `until` the tombstone says nothing any more.
        groups
            .get_or_insert(key(2), 10, tomb, make)
            .expect("b again");
        assert_eq!(restored.get(), None);
    }

    proptest! {
        /// Whatever the sequence of lookups, and whichever groups requests
        /// hold: the map never holds more than `max_groups`, a held group
        /// is the one its key finds (never split), and a newcomer is
        /// refused only when every group of its shard is held.
        #[test]
        fn the_map_is_bounded_and_never_splits_a_held_group(
            max_groups in 1usize..300,
            ops in proptest::collection::vec((0u64..400, any::<bool>(), any::<bool>()), 1..600),
        ) {
            let layer = layer(max_groups);
            let limiter = layer.limiter();
            let (shared, groups) = (limiter.shared(), limiter.groups());
            prop_assert!(groups.capacity() <= max_groups);
            let mut held: Vec<Arc<Group>> = Vec::new();
            for (k, hold, release) in ops {
                let got = groups.get_or_insert(key(k), 0, free, |key, t| Shared::new_group(shared, key, t, 0));
                match got {
                    Ok(g) => {
                        if let Some(h) = held.iter().find(|h| h.key == g.key) {
                            prop_assert!(Arc::ptr_eq(h, &g), "a held group was split");
                        }
                        if hold {
                            held.push(g);
                        }
                    }
                    Err(_) => {
                        let full = held.len() >= groups.per_shard;
                        prop_assert!(full, "refused with {} held", held.len());
                    }
                }
                if release && !held.is_empty() {
                    held.swap_remove(0);
                }
                prop_assert!(groups.len() <= groups.capacity());
            }
        }
    }
}
