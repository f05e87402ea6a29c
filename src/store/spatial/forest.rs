//! One space's index state and its upkeep. Writes never wait for queries and queries never
//! wait for writes or rebuilds: a query copies a `View` (a few `Arc`s)
//! under the space's lock and searches it with no lock held.
//!
//! - `trees`: bulk-loaded R-trees, immutable once built (shared with running queries).
//! - `batches`: batches of new entries not yet built into a tree, scanned entry by entry.
//! - `tail`: the newest single inserts (at most `tail_max`), scanned entry by entry; when full
//!   it becomes a batch.
//! - `dead`: entries of `trees` and `batches` that were replaced by an update (tombstones). A
//!   token has at most one entry per space, so each dead key stands for exactly one stored
//!   copy; inserting an entry that is dead revives that copy instead of storing a second one.
//! - `gone`: ids of tokens gone outright (deleted, expired, out of a grid), one bit each, which
//!   kill every copy of theirs in `trees` and `batches` (`dead_ids`). A token created again
//!   while its id is still there waits in `reborn`, scanned like the tail, until a rebuild
//!   has dropped the old copies and cleared the bit.
//!
//! Upkeep (`compact`) builds the batches into a tree that absorbs the small trees (the
//! logarithmic method), or rebuilds every tree, dropping the dead entries. It builds from a
//! `View` with no lock held and swaps the result in under a short write lock, reconciling
//! what writes did meanwhile: an entry it dropped as dead but that was revived since goes back
//! into the tail; one removed since is marked dead in the new tree. A rebuild also clears the
//! bits of the ids it saw gone (it dropped all their copies) and lets their reborn in.

use std::sync::Arc;

use parking_lot::RwLock;

use super::dead_ids::DeadIds;
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

/// Removals up to which `take_from` scans the list for each (a single delete measured ~3 µs
/// over 8 spaces this way, ~24 µs building sets); above, one pass with a set.
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
    /// Dead copies (tombstones and gone ids' copies) beyond four times which, once they are
    /// also three quarters of the stored entries, the urgent crew rebuilds the space (the
    /// writer itself without upkeep threads); upkeep rebuilds it in the background once they
    /// are half the stored entries.
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
    /// Entries in `batches`, kept beside them: every write asks for it (`upkeep_due`), and
    /// summing up to 256 batches in each of eight spaces per entry was 7 % of a replica's
    /// catch-up.
    unbuilt: usize,
    /// Shared with running queries: a write copies it only while one holds it.
    tail: Arc<Vec<Entry>>,
    dead: Tombstones,
    /// Ids gone outright: every copy of theirs in `trees` and `batches` is dead.
    gone: DeadIds,
    /// Stored copies dead by `gone` alone (not tombstones too). A delete that sets a bit
    /// kills one; a build that drops that copy keeps the bit (a rebuild clears it).
    killed: usize,
    /// Entries of ids created again while still `gone`, kept out of the trees and batches
    /// (where the bit would kill them) and scanned like the tail until a rebuild clears it.
    reborn: Arc<Vec<Entry>>,
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
    /// Tombstones of replaced entries in `trees` and `batches`.
    dead: Tombstones,
    /// Ids whose copies in `trees` and `batches` are all dead.
    gone: DeadIds,
    /// Scanned like the tail: it never holds a dead entry either.
    reborn: Arc<Vec<Entry>>,
}

impl View {
    /// Whether `e`, found in a tree or a batch, was removed.
    #[inline]
    pub fn is_dead(&self, e: &Entry) -> bool {
        self.gone.contains(e.data.id)
            || (!self.dead.is_empty() && self.dead.contains(&EntryKey::of(e)))
    }

    /// Every live entry of the batches, the tail and the reborn.
    pub fn loose_entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.loose_entries_where(|_| true)
    }

    /// Every live entry of the batches, the tail and the reborn that `wanted` accepts;
    /// `wanted` is asked first, since a tombstone lookup costs a hash.
    pub fn loose_entries_where<'a>(
        &'a self,
        wanted: impl Fn(&Entry) -> bool + Copy + 'a,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.batches
            .iter()
            .flat_map(|batch| batch.iter())
            .filter(move |e| wanted(e) && !self.is_dead(e))
            .chain(self.tail.iter().filter(move |e| wanted(e)))
            .chain(self.reborn.iter().filter(move |e| wanted(e)))
    }
}

/// What upkeep should do to a space, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upkeep {
    /// Build the batches into a tree that absorbs the small trees.
    Build,
    /// Rebuild every tree and batch into one tree, dropping the dead entries, and clear the
    /// gone ids it saw.
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
        let stored: usize = self.trees.iter().map(|t| t.size()).sum::<usize>()
            + self.unbuilt()
            + self.tail.len()
            + self.reborn.len();
        // Each dead key and each kill stands for one stored copy; saturating all the same, so
        // that a broken invariant shows as a wrong count, never as a panic or a wrapped one.
        stored.saturating_sub(self.dead_copies())
    }

    /// Stored copies that are dead (by tombstone or by a gone id).
    fn dead_copies(&self) -> usize {
        self.dead.len() + self.killed
    }

    /// True when no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in batches not yet built.
    pub fn unbuilt(&self) -> usize {
        self.unbuilt
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
            gone: self.gone.clone(),
            reborn: Arc::clone(&self.reborn),
        }
    }

    /// Adds one entry: among the reborn if its id is gone, else revives its dead copy if
    /// there is one, else into the tail (which becomes a batch once full).
    pub fn insert(&mut self, e: Entry, policy: &BatchPolicy) {
        if !self.reborn_or_revived(e) {
            Arc::make_mut(&mut self.tail).push(e);
            self.roll_over_full_tail(policy);
        }
    }

    /// Takes a new entry among the reborn if its id is gone, or revives its dead copy if
    /// there is one (instead of storing it twice); false when it is to be stored as new.
    fn reborn_or_revived(&mut self, e: Entry) -> bool {
        if self.gone.contains(e.data.id) {
            Arc::make_mut(&mut self.reborn).push(e);
            return true;
        }
        // Asked first: the filter answers most "no" in one probe.
        let key = EntryKey::of(&e);
        if self.dead.contains(&key) && self.dead.remove(&key) {
            self.revivals += 1;
            return true;
        }
        false
    }

    /// Adds an unbuilt batch.
    fn push_batch(&mut self, batch: Arc<Vec<Entry>>) {
        self.unbuilt += batch.len();
        self.batches.push(batch);
    }

    /// Makes a full tail a batch of its own (for upkeep to build) and starts an empty one.
    fn roll_over_full_tail(&mut self, policy: &BatchPolicy) {
        if self.tail.len() >= policy.tail_max {
            let full = std::mem::take(&mut self.tail);
            self.push_batch(full);
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
            let mut fresh = Vec::with_capacity(batch.len());
            for e in batch {
                if !self.reborn_or_revived(e) {
                    fresh.push(e);
                }
            }
            if !fresh.is_empty() {
                self.push_batch(Arc::new(fresh));
            }
        }
    }

    /// Removes one stored entry replaced by a newer one of its token (or by none, when the
    /// token left this space): from the tail or the reborn directly, else as a tombstone.
    pub fn remove(&mut self, e: &Entry) {
        self.remove_all(std::slice::from_ref(e));
    }

    /// `remove` of several entries. One call per commit, because the tombstone set is copied
    /// when a query or a build still shares it.
    pub fn remove_all(&mut self, entries: &[Entry]) {
        let stored = self.take_loose(entries.to_vec());
        self.dead.extend(stored.iter().map(EntryKey::of));
    }

    /// Removes the entries of tokens gone from this space outright (deleted, expired, out of
    /// the grid): from the tail or the reborn directly, else by their ids' bits (or, for ids
    /// too scattered to get a page of bits each, as tombstones).
    pub fn delete_all(&mut self, entries: &[Entry]) {
        let mut tombstones = Vec::new();
        for e in self.take_loose(entries.to_vec()) {
            match self.gone.insert_if_room(e.data.id) {
                Some(true) => self.killed += 1,
                Some(false) => {}
                None => tombstones.push(EntryKey::of(&e)),
            }
        }
        self.dead.extend(tombstones);
    }

    /// Takes `entries` out of the tail and the reborn where they are; returns the others,
    /// which are stored in the trees and batches.
    fn take_loose(&mut self, entries: Vec<Entry>) -> Vec<Entry> {
        if self.reborn.is_empty() {
            return take_from(&mut self.tail, entries);
        }
        // An entry of a gone id is among the reborn, never in the tail.
        let (reborn, others): (Vec<Entry>, Vec<Entry>) = entries
            .into_iter()
            .partition(|e| self.gone.contains(e.data.id));
        let missing = take_from(&mut self.reborn, reborn);
        // Nothing else can hold a gone id's live copy; should that ever break, the entries
        // are not stored anywhere, so dropping them leaves the space as it should be.
        debug_assert!(missing.is_empty(), "a gone id's live copy is reborn");
        take_from(&mut self.tail, others)
    }

    /// Moves the reborn whose ids are no longer gone (a rebuild dropped their old copies and
    /// cleared the bits) to where new entries go.
    fn release_reborn(&mut self, policy: &BatchPolicy) {
        if self.reborn.is_empty() {
            return;
        }
        let (still, free): (Vec<Entry>, Vec<Entry>) = self
            .reborn
            .iter()
            .partition(|e| self.gone.contains(e.data.id));
        if free.is_empty() {
            return;
        }
        self.reborn = Arc::new(still);
        self.insert_batch(free, policy);
    }

    /// The upkeep due, if any: `forced` past a hard bound, when it must not wait for the
    /// lower-priority background thread.
    pub fn upkeep_due(&self, policy: &BatchPolicy) -> Option<(Upkeep, bool)> {
        let dead = self.dead_copies();
        let stored = self.len() + dead;
        // A rebuild costs every live entry, so it waits until the dead copies are half the
        // space: a mass delete (expiry of a million tokens) then rebuilds about its own size
        // in all (at a quarter it was three times, at 1/16 sixteen; profiles of the expiry
        // showed the rebuilds' sorting, copying and allocation as most of its CPU). Queries
        // skip dead copies meanwhile, at worst doubling what they visit.
        if dead > 4 * policy.max_dead && dead * 4 > stored * 3 {
            return Some((Upkeep::Rebuild, true));
        }
        let unbuilt = self.unbuilt();
        if unbuilt > policy.max_unbuilt {
            return Some((Upkeep::Build, true));
        }
        // The reborn are scanned by every query like a batch, and only a rebuild lets them
        // into the trees (a delete and re-import of the same explicit ids).
        if self.reborn.len() > policy.max_unbuilt {
            return Some((Upkeep::Rebuild, true));
        }
        if dead * 2 > stored
            || self.trees.len() > policy.max_trees
            || self.reborn.len() >= policy.tail_max
        {
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
    /// The tombstones when planned.
    dead: Tombstones,
    /// The gone ids when planned: a rebuild clears them.
    gone: DeadIds,
}

/// A built tree and what it dropped as dead, ready to be swapped in.
pub struct Built {
    plan: Plan,
    tree: SpaceTree,
    dropped: Vec<Entry>,
    /// Entries it dropped because their ids were gone (and were not tombstones too).
    dropped_gone: usize,
    /// The keys of `dropped`.
    dropped_keys: DroppedKeys,
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
        // A lone tree is rebuilt only to drop dead entries; a rebuild of nothing still clears
        // the gone ids (which may kill nothing left) and so lets their reborn in.
        let lone_clean = trees.len() == 1 && batches.is_empty() && self.dead_copies() == 0;
        let clears_gone = upkeep == Upkeep::Rebuild && !self.gone.is_empty();
        if (trees.len() + batches.len() == 0 || lone_clean) && !clears_gone {
            return None;
        }
        Some(Plan {
            upkeep,
            generation: self.generation,
            revivals: self.revivals,
            trees,
            batches,
            dead: self.dead.clone(),
            gone: self.gone.clone(),
        })
    }

    /// Swaps `built` in for what it was built from, unless the space was replaced meanwhile.
    /// A dropped entry still dead loses its tombstone with its copy; one revived meanwhile
    /// goes back into the tail (its copy is gone from the new tree); a rebuild clears the
    /// gone ids it saw and releases their reborn. Returns what it took out, for the caller to
    /// free after the lock.
    #[must_use = "drop what was retired after releasing the lock"]
    pub fn swap(&mut self, built: Built, policy: &BatchPolicy) -> Retired {
        let Built {
            plan,
            tree,
            dropped,
            dropped_gone,
            dropped_keys,
            prepared,
        } = built;
        let Plan {
            upkeep,
            generation,
            revivals,
            trees,
            batches,
            dead,
            gone,
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
        self.unbuilt = self.batches.iter().map(|b| b.len()).sum();
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
                .remove_prepared(prepared, |key| dropped_keys.contains(key));
        } else {
            drop(prepared);
            // Nearly all are still dead, so the tombstones' filter would only add a probe.
            let (still_dead, revived): (Vec<Entry>, Vec<Entry>) = dropped
                .into_iter()
                .partition(|e| self.dead.contains_unfiltered(&EntryKey::of(e)));
            self.dead
                .remove_all(&tombstones::key_set(still_dead.iter().map(EntryKey::of)));
            for e in revived {
                if self.gone.contains(e.data.id) {
                    // Revived, then its token gone outright: that delete killed this very copy
                    // (the id was not gone when it was revived, or it would be reborn), and
                    // the copy is dropped with the rest.
                    self.killed = self.killed.saturating_sub(1);
                } else {
                    Arc::make_mut(&mut self.tail).push(e);
                }
            }
        }
        // The copies it dropped for their ids' bits were dead by those bits alone (a gone
        // id's old copies are never revived: a new one is reborn).
        self.killed = self.killed.saturating_sub(dropped_gone);
        if upkeep == Upkeep::Rebuild {
            // Every copy of the ids it saw gone was in what it rebuilt, and is dropped: their
            // bits go, and their reborn join the other entries.
            self.gone.remove_all_of(&gone);
            drop(gone);
            self.release_reborn(policy);
        }
        self.roll_over_full_tail(policy);
        Retired {
            _trees: trees,
            _batches: batches,
            _stale: None,
        }
    }
}

/// The keys of the entries a build dropped as tombstones.
enum DroppedKeys {
    /// These keys (a build that absorbed only some trees).
    Keys(tombstones::KeySet),
    /// Every key of these tombstones (a rebuild of the whole space, which drops them all).
    EveryTombstoneOf(Tombstones),
}

impl DroppedKeys {
    /// Whether the build dropped the entry of `key`.
    fn contains(&self, key: &EntryKey) -> bool {
        match self {
            DroppedKeys::Keys(keys) => keys.contains(key),
            DroppedKeys::EveryTombstoneOf(dead) => dead.contains_unfiltered(key),
        }
    }
}

/// Takes those of `entries` that `list` holds out of it; returns the others.
fn take_from(list: &mut Arc<Vec<Entry>>, entries: Vec<Entry>) -> Vec<Entry> {
    if list.is_empty() || entries.is_empty() {
        return entries;
    }
    if entries.len() <= FEW_REMOVALS {
        // A scan of the list per entry: cheaper than building sets for a few.
        let mut rest = Vec::new();
        for e in entries {
            match list.iter().position(|t| *t == e) {
                Some(at) => _ = Arc::make_mut(list).swap_remove(at),
                None => rest.push(e),
            }
        }
        return rest;
    }
    // A set of the list's keys (the tail holds at most `tail_max`, so it stays in cache)
    // asked once per entry: a mass delete of thousands would otherwise scan the list for
    // each, and a set of the entries themselves cost a hash insert per removal.
    let held = tombstones::key_set(list.iter().map(EntryKey::of));
    let mut taken = tombstones::key_set([]);
    let mut rest = Vec::with_capacity(entries.len());
    for e in entries {
        let key = EntryKey::of(&e);
        if held.contains(&key) {
            taken.insert(key);
        } else {
            rest.push(e);
        }
    }
    if !taken.is_empty() {
        Arc::make_mut(list).retain(|t| !taken.contains(&EntryKey::of(t)));
    }
    rest
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
        let mut dropped_gone = 0;
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
            } else if self.gone.contains(e.data.id) {
                dropped_gone += 1;
            } else {
                entries.push(*e);
            }
        }
        let (dropped_keys, prepared) = match self.upkeep {
            // Every tombstone stands for a stored copy in the trees and batches a rebuild
            // takes, so it drops them all: no set of their keys to build, no layer to scan
            // (each cost a hash per key of a mass delete's hundreds of thousands).
            Upkeep::Rebuild => (
                DroppedKeys::EveryTombstoneOf(self.dead.clone()),
                self.dead.prepare_removal_of_all(),
            ),
            Upkeep::Build => {
                let keys = tombstones::key_set(dropped.iter().map(EntryKey::of));
                let prepared = self.dead.prepare_removal(&keys);
                (DroppedKeys::Keys(keys), prepared)
            }
        };
        Built {
            tree: SpaceTree::bulk_load(entries),
            plan: self,
            dropped,
            dropped_gone,
            dropped_keys,
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

    fn live_entries(forest: &Forest) -> Vec<Entry> {
        let view = forest.view();
        let mut entries: Vec<Entry> = view
            .trees
            .iter()
            .flat_map(|t| t.iter())
            .filter(|x| !view.is_dead(x))
            .chain(view.loose_entries())
            .copied()
            .collect();
        entries.sort_by_key(|x| x.data.id);
        entries
    }

    fn live_ids(forest: &Forest) -> Vec<u32> {
        live_entries(forest).iter().map(|x| x.data.id).collect()
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
        let built = rebuild_built(&slot, &policy);
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

    /// Ids 1..=50 built into one tree, and their entries.
    fn fifty_in_a_tree(policy: &BatchPolicy) -> (RwLock<Forest>, Vec<Entry>) {
        let slot = RwLock::new(Forest::default());
        let entries: Vec<Entry> = (1..=50).map(|id| e(id, id as f32)).collect();
        slot.write().insert_batch(entries.clone(), policy);
        run_upkeep(&slot, Upkeep::Build, policy);
        (slot, entries)
    }

    /// A rebuild of the space, built but not swapped in yet.
    fn rebuild_built(slot: &RwLock<Forest>, policy: &BatchPolicy) -> Built {
        slot.read()
            .plan(Upkeep::Rebuild, policy)
            .expect("something to rebuild")
            .build()
    }

    #[test]
    fn a_rebuild_with_no_revival_meanwhile_drops_its_tombstones_and_keeps_later_ones() {
        let policy = tiny();
        let (slot, entries) = fifty_in_a_tree(&policy);
        slot.write().remove_all(&entries[..30]);
        let built = rebuild_built(&slot, &policy);
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
    fn a_gone_id_created_again_waits_as_reborn_until_a_rebuild_drops_its_old_copy() {
        let policy = tiny();
        let slot = RwLock::new(Forest::default());
        slot.write()
            .insert_batch(vec![e(1, 1.0), e(2, 2.0), e(3, 3.0)], &policy);
        run_upkeep(&slot, Upkeep::Build, &policy);
        slot.write().delete_all(&[e(2, 2.0)]);
        {
            let forest = slot.read();
            assert_eq!((forest.len(), forest.killed, forest.dead.len()), (2, 1, 0));
            assert_eq!(live_ids(&forest), [1, 3]);
        }
        // Created again at the very same place: its old copy stays dead, the new one lives.
        slot.write().insert(e(2, 2.0), &policy);
        {
            let forest = slot.read();
            assert_eq!(*forest.reborn, [e(2, 2.0)]);
            assert_eq!(live_ids(&forest), [1, 2, 3]);
            assert_eq!(forest.len(), 3);
        }
        // Moved while reborn: the move stays among the reborn, no tombstone.
        {
            let mut forest = slot.write();
            forest.remove(&e(2, 2.0));
            forest.insert(e(2, 5.0), &policy);
            assert_eq!(
                (forest.reborn.as_slice(), forest.dead.len()),
                (&[e(2, 5.0)][..], 0)
            );
        }
        run_upkeep(&slot, Upkeep::Rebuild, &policy);
        let forest = slot.read();
        assert!(forest.gone.is_empty() && forest.reborn.is_empty());
        assert_eq!((forest.len(), forest.killed), (3, 0));
        assert_eq!(live_entries(&forest), [e(1, 1.0), e(2, 5.0), e(3, 3.0)]);
    }

    #[test]
    fn a_rebuild_keeps_the_ids_gone_while_it_ran_and_their_reborn() {
        let policy = tiny();
        let (slot, entries) = fifty_in_a_tree(&policy);
        slot.write().delete_all(&entries[..40]);
        let built = rebuild_built(&slot, &policy);
        {
            // While it was built: 41..=45 gone (their copies are in the new tree), 45 and 3
            // created again.
            let mut forest = slot.write();
            forest.delete_all(&entries[40..45]);
            forest.insert(e(45, 0.5), &policy);
            forest.insert(e(3, 0.5), &policy);
            drop(forest.swap(built, &policy));
        }
        let forest = slot.read();
        let mut expected: Vec<Entry> = entries[45..].to_vec();
        expected.extend([e(3, 0.5), e(45, 0.5)]);
        expected.sort_by_key(|x| x.data.id);
        assert_eq!(live_entries(&forest), expected);
        assert_eq!((forest.len(), forest.killed), (7, 5));
        assert_eq!(
            *forest.reborn,
            [e(45, 0.5)],
            "45 is still gone, 3 no longer"
        );
        assert_eq!(*forest.tail, [e(3, 0.5)]);
    }

    #[test]
    fn a_copy_revived_and_then_deleted_while_a_build_ran_stays_dead() {
        let policy = tiny();
        let slot = RwLock::new(Forest::default());
        slot.write()
            .insert_batch(vec![e(1, 1.0), e(2, 2.0), e(3, 3.0)], &policy);
        run_upkeep(&slot, Upkeep::Build, &policy);
        {
            let mut forest = slot.write();
            forest.remove(&e(1, 1.0));
            forest.insert(e(1, 5.0), &policy);
        }
        let built = rebuild_built(&slot, &policy);
        {
            // While it was built: moved back (its old copy revived), then deleted outright.
            let mut forest = slot.write();
            forest.remove(&e(1, 5.0));
            forest.insert(e(1, 1.0), &policy);
            forest.delete_all(&[e(1, 1.0)]);
            drop(forest.swap(built, &policy));
        }
        {
            let forest = slot.read();
            assert_eq!(live_ids(&forest), [2, 3]);
            assert_eq!((forest.len(), forest.killed), (2, 0));
        }
        slot.write().delete_all(&[e(2, 2.0), e(3, 3.0)]);
        run_upkeep(&slot, Upkeep::Rebuild, &policy);
        let forest = slot.read();
        assert_eq!((forest.len(), forest.killed, forest.dead.len()), (0, 0, 0));
        assert_eq!(forest.upkeep_due(&policy), None, "nothing left to do");
    }

    /// A tiny random number generator for the model test.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_writes_and_builds_swapped_in_late_keep_exactly_the_live_entries() {
        random_writes_against_a_model(1);
    }

    #[test]
    fn the_same_with_ids_too_scattered_for_a_page_of_bits_each() {
        // Ids a few pages apart: past the free pages, deletes fall back to tombstones.
        random_writes_against_a_model(3 << 15);
    }

    /// Random writes, builds planned and swapped in with writes between, and due upkeep, on
    /// ids 1..=80 times `scatter`, each step checked against a model of the live entries.
    fn random_writes_against_a_model(scatter: u32) {
        let policy = tiny();
        for seed in 1..=300u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let slot = RwLock::new(Forest::default());
            let mut live: std::collections::BTreeMap<u32, Entry> = Default::default();
            let mut pending: Option<Built> = None;
            for step in 0..400 {
                let i = (next(&mut rng) % 80) as u32 + 1;
                let id = i * scatter;
                let at = (next(&mut rng) % 3) as f32;
                match next(&mut rng) % 12 {
                    0..=2 if !live.contains_key(&id) => {
                        slot.write().insert(e(id, at), &policy);
                        live.insert(id, e(id, at));
                    }
                    3 => {
                        let batch: Vec<Entry> = (i..i + (next(&mut rng) % 40) as u32)
                            .map(|i| i * scatter)
                            .filter(|id| !live.contains_key(id))
                            .map(|id| e(id, at))
                            .collect();
                        live.extend(batch.iter().map(|x| (x.data.id, *x)));
                        slot.write().insert_batch(batch, &policy);
                    }
                    4 | 5 => {
                        if let Some(old) = live.get(&id).copied() {
                            let new = e(id, at);
                            if old != new {
                                let mut forest = slot.write();
                                forest.remove(&old);
                                forest.insert(new, &policy);
                                live.insert(id, new);
                            }
                        }
                    }
                    6 | 7 => {
                        // Deletes the live ids from `id` on, up to a random count.
                        let count = (next(&mut rng) % 50) as usize;
                        let gone: Vec<Entry> =
                            live.range(id..).take(count).map(|(_, x)| *x).collect();
                        for x in &gone {
                            live.remove(&x.data.id);
                        }
                        slot.write().delete_all(&gone);
                    }
                    8 | 9 => match pending.take() {
                        None => {
                            let upkeep = if next(&mut rng).is_multiple_of(2) {
                                Upkeep::Build
                            } else {
                                Upkeep::Rebuild
                            };
                            pending = slot.read().plan(upkeep, &policy).map(Plan::build);
                        }
                        Some(built) => drop(slot.write().swap(built, &policy)),
                    },
                    10 if pending.is_none() => {
                        let due = slot.read().upkeep_due(&policy);
                        if let Some((upkeep, _)) = due {
                            run_upkeep(&slot, upkeep, &policy);
                        }
                    }
                    _ => {}
                }
                let forest = slot.read();
                let expected: Vec<Entry> = live.values().copied().collect();
                assert_eq!(live_entries(&forest), expected, "seed {seed} step {step}");
                assert_eq!(forest.len(), live.len(), "seed {seed} step {step}");
                let unbuilt: usize = forest.batches.iter().map(|b| b.len()).sum();
                assert_eq!(forest.unbuilt(), unbuilt, "seed {seed} step {step}");
            }
        }
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
