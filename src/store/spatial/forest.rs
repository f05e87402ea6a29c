//! One space's index state and its upkeep. Writes never wait for queries and queries never
//! wait for writes or rebuilds: a query copies a `View` (a few `Arc`s)
//! under the space's lock and searches it with no lock held.
//!
//! - `trees`: bulk-loaded R-trees, immutable once built (shared with running queries).
//! - `batches`: batches of new entries not yet built into a tree, scanned entry by entry.
//! - `tail`: the newest single inserts (at most `tail_max`), scanned entry by entry; when full
//!   it becomes a batch.
//! - `dead`: entries of `trees` and `batches` that were removed (tombstones). A token has at
//!   most one entry per space, so each dead key stands for exactly one stored copy; inserting
//!   an entry that is dead revives that copy instead of storing a second one.
//!
//! Upkeep (`compact`) builds the batches into a tree that absorbs the small trees (the
//! logarithmic method), or rebuilds every tree, dropping the dead entries. It builds from a
//! `View` with no lock held and swaps the result in under a short write lock, reconciling
//! what writes did meanwhile: an entry it dropped as dead but that was revived since goes back
//! into the tail; one removed since is marked dead in the new tree.

use std::sync::Arc;

use parking_lot::RwLock;

use super::tombstones::{self, Tombstones};
use super::{Entry, SpaceTree};

/// An entry's exact bits, the identity of a tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryKey {
    id: u32,
    point: [u32; 3],
    radius_q: u8,
    strength_q: u8,
}

impl EntryKey {
    /// The key of `e`.
    pub fn of(e: &Entry) -> EntryKey {
        EntryKey {
            id: e.data.id,
            point: e.geom().map(f32::to_bits),
            radius_q: e.data.field_radius_q,
            strength_q: e.data.field_strength_q,
        }
    }
}

/// Removals up to which `remove_all` scans the tail for each (a single delete measured
/// ~3 µs over 8 spaces this way, ~24 µs building sets); above, one pass with a set.
const FEW_REMOVALS: usize = 32;

/// How a space buffers writes and when it rebuilds. The defaults are measured (README,
/// "Spatial index"); tests lower them so that every few writes cross a buffer, a build and a
/// tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Entries from which a batch of new tokens is kept as a batch of its own (to be built
    /// into a tree) rather than inserted one by one into the tail.
    pub bulk_min: usize,
    /// Single inserts the tail holds before it becomes a batch.
    pub tail_max: usize,
    /// A build absorbs each smaller tree (smallest first) whose size is at most this many
    /// times the entries gathered so far.
    pub merge_ratio: usize,
    /// Trees beyond which upkeep rebuilds the space into one.
    pub max_trees: usize,
    /// Unbuilt entries (batches) beyond which the writer builds them itself instead of
    /// leaving it to background upkeep: bounds what queries scan entry by entry.
    pub max_unbuilt: usize,
    /// Tombstones beyond four times which, once they are also three quarters of the stored
    /// entries, the writer rebuilds the space itself; upkeep rebuilds it in the background
    /// once they are half the stored entries.
    pub max_dead: usize,
    /// Whether upkeep runs on a background thread of its own once due (else only when the
    /// writer's bounds force it, or `compact` is called).
    pub background: bool,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            bulk_min: 256,
            tail_max: 256,
            merge_ratio: 1,
            max_trees: 8,
            max_unbuilt: 65_536,
            max_dead: 65_536,
            background: true,
        }
    }
}

/// One space's entries.
#[derive(Default)]
pub struct Forest {
    trees: Vec<Arc<SpaceTree>>,
    batches: Vec<Arc<Vec<Entry>>>,
    /// Shared with running queries: a write copies it only while one holds it.
    tail: Arc<Vec<Entry>>,
    dead: Tombstones,
    /// Bumped by every replacement of the whole space (clear, recovery), so that a rebuild
    /// begun before it is not swapped in after it.
    generation: u64,
    /// Tombstones removed by revival so far: a build that saw the same count at its start
    /// knows every entry it dropped is still dead when it swaps in.
    revivals: u64,
}

/// What a query searches: the space as it was when the view was taken.
pub struct View {
    /// Built trees.
    pub trees: Vec<Arc<SpaceTree>>,
    /// Unbuilt batches, scanned entry by entry.
    batches: Vec<Arc<Vec<Entry>>>,
    /// The tail, scanned entry by entry. It never holds a dead entry (a removal takes an
    /// entry out of the tail, and an insert of a dead key revives it instead of landing
    /// here), so its scan skips the tombstone lookups.
    tail: Arc<Vec<Entry>>,
    dead: Tombstones,
}

impl View {
    /// Whether `e`, found in a tree or a batch, was removed.
    #[inline]
    pub fn is_dead(&self, e: &Entry) -> bool {
        !self.dead.is_empty() && self.dead.contains(&EntryKey::of(e))
    }

    /// Every live entry of the batches and the tail.
    pub fn loose_entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.loose_entries_where(|_| true)
    }

    /// Every live entry of the batches and the tail that `wanted` accepts; `wanted` is asked
    /// first, since a tombstone lookup costs a hash.
    pub fn loose_entries_where<'a>(
        &'a self,
        wanted: impl Fn(&Entry) -> bool + Copy + 'a,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.batches
            .iter()
            .flat_map(|batch| batch.iter())
            .filter(move |e| wanted(e) && !self.is_dead(e))
            .chain(self.tail.iter().filter(move |e| wanted(e)))
    }
}

/// What upkeep should do to a space, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upkeep {
    /// Build the batches into a tree that absorbs the small trees.
    Build,
    /// Rebuild every tree and batch into one tree, dropping the dead entries.
    Rebuild,
}

impl Forest {
    /// A space holding `tree` alone.
    pub fn of(tree: SpaceTree, generation: u64) -> Forest {
        Forest {
            trees: if tree.size() == 0 {
                Vec::new()
            } else {
                vec![Arc::new(tree)]
            },
            generation,
            ..Forest::default()
        }
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        let stored: usize =
            self.trees.iter().map(|t| t.size()).sum::<usize>() + self.unbuilt() + self.tail.len();
        // Each dead key stands for one stored copy; saturating all the same, so that a
        // broken invariant shows as a wrong count, never as a panic or a wrapped one.
        stored.saturating_sub(self.dead.len())
    }

    /// True when no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in batches not yet built.
    pub fn unbuilt(&self) -> usize {
        self.batches.iter().map(|b| b.len()).sum()
    }

    /// Built trees.
    pub fn tree_count(&self) -> usize {
        self.trees.len()
    }

    /// The generation a replacement of this space gets.
    pub fn next_generation(&self) -> u64 {
        self.generation + 1
    }

    /// The space as it is now, for a query.
    pub fn view(&self) -> View {
        View {
            trees: self.trees.clone(),
            batches: self.batches.clone(),
            tail: Arc::clone(&self.tail),
            dead: self.dead.clone(),
        }
    }

    /// Adds one entry: revives its dead copy if there is one, else into the tail (which
    /// becomes a batch once full).
    pub fn insert(&mut self, e: Entry, policy: &BatchPolicy) {
        if self.dead.remove(&EntryKey::of(&e)) {
            self.revivals += 1;
            return;
        }
        Arc::make_mut(&mut self.tail).push(e);
        self.roll_over_full_tail(policy);
    }

    /// Makes a full tail a batch of its own (for upkeep to build) and starts an empty one.
    fn roll_over_full_tail(&mut self, policy: &BatchPolicy) {
        if self.tail.len() >= policy.tail_max {
            let full = std::mem::take(&mut self.tail);
            self.batches.push(full);
        }
    }

    /// Adds a batch of new entries (none of them stored yet): kept whole for upkeep to build
    /// when it is big enough, else inserted one by one.
    pub fn insert_batch(&mut self, batch: Vec<Entry>, policy: &BatchPolicy) {
        if batch.len() < policy.bulk_min {
            for e in batch {
                self.insert(e, policy);
            }
        } else {
            // A batch entry may be the dead copy of a token created again: revive instead.
            let (revived, fresh): (Vec<Entry>, Vec<Entry>) = batch
                .into_iter()
                .partition(|e| self.dead.contains(&EntryKey::of(e)));
            for e in revived {
                self.dead.remove(&EntryKey::of(&e));
                self.revivals += 1;
            }
            if !fresh.is_empty() {
                self.batches.push(Arc::new(fresh));
            }
        }
    }

    /// Removes one stored entry: from the tail directly, else as a tombstone.
    pub fn remove(&mut self, e: &Entry) {
        self.remove_all(std::slice::from_ref(e));
    }

    /// Removes stored entries: from the tail directly, else as tombstones. One call per
    /// commit, because the tombstone set is copied when a query or a build still shares it.
    pub fn remove_all(&mut self, entries: &[Entry]) {
        if self.tail.is_empty() {
            self.dead.extend(entries.iter().map(EntryKey::of));
            return;
        }
        if entries.len() <= FEW_REMOVALS {
            // A scan of the tail per entry: cheaper than building sets for a few.
            let mut dead = Vec::new();
            for e in entries {
                match self.tail.iter().position(|t| t == e) {
                    Some(at) => _ = Arc::make_mut(&mut self.tail).swap_remove(at),
                    None => dead.push(EntryKey::of(e)),
                }
            }
            self.dead.extend(dead);
            return;
        }
        // Which of `entries` the tail holds: a set of the tail's keys (at most `tail_max`, so
        // it stays in cache) asked once per entry; a mass delete of thousands would otherwise
        // scan the tail for each, and a set of the entries themselves cost an extra hash
        // insert per removal (the writer's largest cost in a mass expiry).
        let tail_keys = tombstones::key_set(self.tail.iter().map(EntryKey::of));
        let mut from_tail = tombstones::key_set([]);
        let mut dead = Vec::with_capacity(entries.len());
        for key in entries.iter().map(EntryKey::of) {
            if tail_keys.contains(&key) {
                from_tail.insert(key);
            } else {
                dead.push(key);
            }
        }
        if !from_tail.is_empty() {
            Arc::make_mut(&mut self.tail).retain(|t| !from_tail.contains(&EntryKey::of(t)));
        }
        self.dead.extend(dead);
    }

    /// The upkeep due, if any: `forced` past a hard bound, when it must not wait for the
    /// lower-priority background thread.
    pub fn upkeep_due(&self, policy: &BatchPolicy) -> Option<(Upkeep, bool)> {
        let dead = self.dead.len();
        let stored = self.len() + dead;
        // A rebuild costs every live entry, so it waits until the tombstones are half the
        // space: a mass delete (expiry of a million tokens) then rebuilds about its own size
        // in all (at a quarter it was three times, at 1/16 sixteen; profiles of the expiry
        // showed the rebuilds' sorting, copying and allocation as most of its CPU). Queries
        // skip tombstones meanwhile, at worst doubling what they visit.
        if dead > 4 * policy.max_dead && dead * 4 > stored * 3 {
            return Some((Upkeep::Rebuild, true));
        }
        let unbuilt = self.unbuilt();
        if unbuilt > policy.max_unbuilt {
            return Some((Upkeep::Build, true));
        }
        if dead * 2 > stored || self.trees.len() > policy.max_trees {
            return Some((Upkeep::Rebuild, false));
        }
        if !self.batches.is_empty() {
            return Some((Upkeep::Build, false));
        }
        None
    }
}

/// What a build takes from a space: read under the lock, built without it.
pub struct Plan {
    /// What it builds.
    upkeep: Upkeep,
    generation: u64,
    /// The space's revival count when planned.
    revivals: u64,
    /// The trees it absorbs (identified by pointer).
    trees: Vec<Arc<SpaceTree>>,
    /// The batches it builds (identified by pointer).
    batches: Vec<Arc<Vec<Entry>>>,
    dead: Tombstones,
}

/// A built tree and what it dropped as dead, ready to be swapped in.
pub struct Built {
    plan: Plan,
    tree: SpaceTree,
    dropped: Vec<Entry>,
    /// The keys of `dropped`.
    gone: Gone,
    /// Their removal from the plan's tombstones, worked out before the swap's lock.
    prepared: tombstones::PreparedRemoval,
}

impl Forest {
    /// What `upkeep` would build now, if there is anything worth building.
    pub fn plan(&self, upkeep: Upkeep, policy: &BatchPolicy) -> Option<Plan> {
        let batches = self.batches.clone();
        let trees = match upkeep {
            Upkeep::Rebuild => self.trees.clone(),
            Upkeep::Build => {
                // Absorb the smallest trees while each is no bigger than what is gathered.
                let mut gathered: usize = batches.iter().map(|b| b.len()).sum();
                let mut keep = self.trees.len();
                while keep > 0
                    && self.trees[keep - 1].size() <= policy.merge_ratio.max(1) * gathered
                {
                    keep -= 1;
                    gathered += self.trees[keep].size();
                }
                self.trees[keep..].to_vec()
            }
        };
        // A lone tree is rebuilt only to drop dead entries.
        let lone_clean = trees.len() == 1 && batches.is_empty() && self.dead.is_empty();
        if trees.len() + batches.len() == 0 || lone_clean {
            return None;
        }
        Some(Plan {
            upkeep,
            generation: self.generation,
            revivals: self.revivals,
            trees,
            batches,
            dead: self.dead.clone(),
        })
    }

    /// Swaps `built` in for what it was built from, unless the space was replaced meanwhile.
    /// A dropped entry still dead loses its tombstone with its copy; one revived meanwhile
    /// goes back into the tail (its copy is gone from the new tree). Returns what it took
    /// out, for the caller to free after the lock.
    #[must_use = "drop what was retired after releasing the lock"]
    pub fn swap(&mut self, built: Built, policy: &BatchPolicy) -> Retired {
        let Built {
            plan,
            tree,
            dropped,
            gone,
            prepared,
        } = built;
        let Plan {
            upkeep: _,
            generation,
            revivals,
            trees,
            batches,
            dead,
        } = plan;
        // The plan's references would make the tombstone layers below be copied.
        drop(dead);
        if self.generation != generation {
            return Retired {
                _trees: trees,
                _batches: batches,
                _stale: Some(tree),
            };
        }
        self.trees
            .retain(|t| !trees.iter().any(|p| Arc::ptr_eq(p, t)));
        self.batches
            .retain(|b| !batches.iter().any(|p| Arc::ptr_eq(p, b)));
        if tree.size() > 0 {
            let at = self
                .trees
                .iter()
                .position(|t| t.size() < tree.size())
                .unwrap_or(self.trees.len());
            self.trees.insert(at, Arc::new(tree));
        }
        // A dropped entry still dead loses its tombstone (all at once: a rebuild drops most
        // of them); one revived meanwhile goes back into the tail.
        if self.revivals == revivals {
            // None was revived: every dropped entry is still dead, and the layers the build
            // saw lose their keys by a pointer swap (the work was done before this lock; a
            // mass expiry's rebuild drops up to a million keys per space, which held writers
            // up for hundreds of milliseconds under the lock).
            self.dead
                .remove_prepared(prepared, |key| gone.contains(key));
        } else {
            drop(prepared);
            // Nearly all are still dead, so the tombstones' filter would only add a probe.
            let (gone, revived): (Vec<Entry>, Vec<Entry>) = dropped
                .into_iter()
                .partition(|e| self.dead.contains_unfiltered(&EntryKey::of(e)));
            self.dead
                .remove_all(&tombstones::key_set(gone.iter().map(EntryKey::of)));
            if !revived.is_empty() {
                Arc::make_mut(&mut self.tail).extend(revived);
            }
        }
        self.roll_over_full_tail(policy);
        Retired {
            _trees: trees,
            _batches: batches,
            _stale: None,
        }
    }
}

/// The keys of the entries a build dropped as dead.
enum Gone {
    /// These keys (a build that absorbed only some trees).
    Keys(tombstones::KeySet),
    /// Every key of these tombstones (a rebuild of the whole space, which drops them all).
    EveryTombstoneOf(Tombstones),
}

impl Gone {
    /// Whether the build dropped the entry of `key`.
    fn contains(&self, key: &EntryKey) -> bool {
        match self {
            Gone::Keys(keys) => keys.contains(key),
            Gone::EveryTombstoneOf(dead) => dead.contains_unfiltered(key),
        }
    }
}

/// What a swap took out of a space (or a build that came too late): freed after the lock.
pub struct Retired {
    _trees: Vec<Arc<SpaceTree>>,
    _batches: Vec<Arc<Vec<Entry>>>,
    _stale: Option<SpaceTree>,
}

impl Plan {
    /// Bulk-loads the planned trees and batches into one tree, without their dead entries.
    pub fn build(self) -> Built {
        let capacity = self.trees.iter().map(|t| t.size()).sum::<usize>()
            + self.batches.iter().map(|b| b.len()).sum::<usize>();
        let mut entries = Vec::with_capacity(capacity);
        let mut dropped = Vec::new();
        let sources = self
            .trees
            .iter()
            .flat_map(|t| t.iter())
            .chain(self.batches.iter().flat_map(|b| b.iter()));
        // After a mass delete most entries built are dead, and the tombstones' filter would
        // only add a probe to each lookup.
        let mostly_dead = self.dead.len() * 2 > capacity;
        let is_dead = |key: &EntryKey| {
            if mostly_dead {
                self.dead.contains_unfiltered(key)
            } else {
                self.dead.contains(key)
            }
        };
        for e in sources {
            if !self.dead.is_empty() && is_dead(&EntryKey::of(e)) {
                dropped.push(*e);
            } else {
                entries.push(*e);
            }
        }
        let (gone, prepared) = match self.upkeep {
            // Every tombstone stands for a stored copy in the trees and batches a rebuild
            // takes, so it drops them all: no set of their keys to build, no layer to scan
            // (each cost a hash per key of a mass delete's hundreds of thousands).
            Upkeep::Rebuild => (
                Gone::EveryTombstoneOf(self.dead.clone()),
                self.dead.prepare_removal_of_all(),
            ),
            Upkeep::Build => {
                let keys = tombstones::key_set(dropped.iter().map(EntryKey::of));
                let prepared = self.dead.prepare_removal(&keys);
                (Gone::Keys(keys), prepared)
            }
        };
        Built {
            tree: SpaceTree::bulk_load(entries),
            plan: self,
            dropped,
            gone,
            prepared,
        }
    }
}

/// Runs `upkeep` on the space in `slot`: plans under a read lock, builds with no lock held,
/// swaps under a short write lock. Only one upkeep may run on a space at a time (the caller
/// serialises them); writes and queries go on meanwhile.
pub fn run_upkeep(slot: &RwLock<Forest>, upkeep: Upkeep, policy: &BatchPolicy) {
    let Some(plan) = slot.read().plan(upkeep, policy) else {
        return;
    };
    let built = plan.build();
    let retired = slot.write().swap(built, policy);
    // Freeing a million-entry tree takes a while: not under the lock.
    drop(retired);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::spatial::Payload;
    use rstar::primitives::GeomWithData;

    fn e(id: u32, x: f32) -> Entry {
        GeomWithData::new(
            [x, 0.0, 0.0],
            Payload {
                id,
                field_radius_q: 0,
                field_strength_q: 0,
            },
        )
    }

    fn live_ids(forest: &Forest) -> Vec<u32> {
        let view = forest.view();
        let mut ids: Vec<u32> = view
            .trees
            .iter()
            .flat_map(|t| t.iter())
            .filter(|x| !view.is_dead(x))
            .chain(view.loose_entries())
            .map(|x| x.data.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn tiny() -> BatchPolicy {
        BatchPolicy {
            bulk_min: 3,
            tail_max: 2,
            merge_ratio: 1,
            max_trees: 3,
            max_unbuilt: 100,
            max_dead: 100,
            background: false,
        }
    }

    #[test]
    fn removes_are_tombstones_until_a_rebuild_and_inserts_revive_them() {
        let policy = tiny();
        let slot = RwLock::new(Forest::default());
        slot.write()
            .insert_batch(vec![e(1, 1.0), e(2, 2.0), e(3, 3.0)], &policy);
        run_upkeep(&slot, Upkeep::Build, &policy);
        assert_eq!(slot.read().tree_count(), 1);
        slot.write().remove(&e(2, 2.0));
        assert_eq!(live_ids(&slot.read()), [1, 3]);
        assert_eq!(slot.read().len(), 2);
        // Created again at the same place: the dead copy lives again, no second copy.
        slot.write().insert(e(2, 2.0), &policy);
        assert_eq!(live_ids(&slot.read()), [1, 2, 3]);
        slot.write().remove(&e(3, 3.0));
        run_upkeep(&slot, Upkeep::Rebuild, &policy);
        let forest = slot.read();
        assert_eq!((forest.len(), forest.dead.len()), (2, 0));
        assert_eq!(live_ids(&forest), [1, 2]);
    }

    #[test]
    fn a_build_reconciles_writes_made_while_it_ran() {
        let policy = tiny();
        let slot = RwLock::new(Forest::default());
        slot.write()
            .insert_batch(vec![e(1, 1.0), e(2, 2.0), e(3, 3.0)], &policy);
        run_upkeep(&slot, Upkeep::Build, &policy);
        slot.write().remove(&e(1, 1.0));
        let plan = slot
            .read()
            .plan(Upkeep::Rebuild, &policy)
            .expect("a dead entry");
        let built = plan.build();
        // While it was built: 1 revived (its copy was dropped), 3 removed (its copy kept).
        {
            let mut forest = slot.write();
            forest.insert(e(1, 1.0), &policy);
            forest.remove(&e(3, 3.0));
            drop(forest.swap(built, &policy));
        }
        let forest = slot.read();
        assert_eq!(live_ids(&forest), [1, 2]);
        assert_eq!(forest.len(), 2);
        assert_eq!(*forest.tail, [e(1, 1.0)]);
        assert!(forest.dead.contains(&EntryKey::of(&e(3, 3.0))));
    }

    #[test]
    fn a_rebuild_with_no_revival_meanwhile_drops_its_tombstones_and_keeps_later_ones() {
        let policy = tiny();
        let slot = RwLock::new(Forest::default());
        let entries: Vec<Entry> = (1..=50).map(|id| e(id, id as f32)).collect();
        slot.write().insert_batch(entries.clone(), &policy);
        run_upkeep(&slot, Upkeep::Build, &policy);
        slot.write().remove_all(&entries[..30]);
        let built = slot
            .read()
            .plan(Upkeep::Rebuild, &policy)
            .expect("dead entries")
            .build();
        {
            // While it was built: more removals, no revival.
            let mut forest = slot.write();
            forest.remove_all(&entries[30..40]);
            drop(forest.swap(built, &policy));
        }
        let forest = slot.read();
        assert_eq!(live_ids(&forest), (41..=50).collect::<Vec<u32>>());
        assert_eq!((forest.len(), forest.dead.len()), (10, 10));
        assert!(entries[30..40]
            .iter()
            .all(|x| forest.dead.contains(&EntryKey::of(x))));
        assert!(!entries[..30]
            .iter()
            .any(|x| forest.dead.contains(&EntryKey::of(x))));
    }

    #[test]
    fn a_build_from_before_a_clear_is_not_swapped_in() {
        let policy = tiny();
        let slot = RwLock::new(Forest::default());
        slot.write()
            .insert_batch(vec![e(1, 1.0), e(2, 2.0), e(3, 3.0)], &policy);
        let built = slot
            .read()
            .plan(Upkeep::Build, &policy)
            .expect("a batch")
            .build();
        {
            let mut forest = slot.write();
            let generation = forest.next_generation();
            *forest = Forest::of(SpaceTree::default(), generation);
            drop(forest.swap(built, &policy));
        }
        assert_eq!(slot.read().len(), 0);
    }

    #[test]
    fn the_tail_becomes_a_batch_when_full() {
        let policy = tiny();
        let mut forest = Forest::default();
        forest.insert(e(1, 1.0), &policy);
        assert_eq!((forest.tail.len(), forest.batches.len()), (1, 0));
        forest.insert(e(2, 2.0), &policy);
        assert_eq!((forest.tail.len(), forest.batches.len()), (0, 1));
        forest.remove(&e(2, 2.0));
        assert_eq!(forest.len(), 1);
        // Half the stored entries dead is not yet more than half: the batch is built.
        assert_eq!(forest.upkeep_due(&policy), Some((Upkeep::Build, false)));
        forest.remove(&e(1, 1.0));
        assert_eq!(forest.upkeep_due(&policy), Some((Upkeep::Rebuild, false)));
    }
}
