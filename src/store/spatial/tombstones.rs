//! A space's tombstones as a few shared layers, so that a write never copies them whole.
//!
//! Queries and background builds hold the tombstones they started with. With a single shared
//! set, every removal made meanwhile copied the whole set (`Arc::make_mut`): during a mass
//! expiry a rebuild holds a set of hundreds of thousands of keys for a second or more while a
//! commit of 2,000 removals arrives every few milliseconds in each of the eight spaces. Here a
//! removal goes into the newest layer when nobody else holds it, else into a new layer, and
//! layers merge the way a counter in base 4 carries (a layer merges into the one before it once
//! it is at least a quarter of that size), so each key is copied O(log4 n) times in all and a
//! lookup checks a handful of layers (at most `MAX_LAYERS`). At half (base 2) the copies were
//! most of a mass expiry's writer time: the 1M expiry took 9.1 s, against 7.05 s at a quarter
//! (8.3 s at an eighth, where `MAX_LAYERS` forces merges instead).
//!
//! In front of the layers sits a bit filter shared by every copy: a clear bit answers "not a
//! tombstone" with one probe, where the layers cost one hash lookup each, mostly cache misses
//! once they hold tens of thousands of keys (queries right after a burst of updates and
//! deletes, and every entry a rebuild copies, ask for each candidate). Bits are only ever set,
//! so a copy taken earlier may see a bit for a key added after it and then asks its own
//! layers, which do not hold that key: the filter only ever says "maybe".

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::forest::EntryKey;

/// The set type of one layer: foldhash, since std's SipHash showed in profiles of mass
/// deletes and the keys are not chosen by clients in a way that could aim collisions at a
/// seeded hash.
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// Layers beyond which the newest ones merge whatever their sizes (bounds a lookup's cost).
const MAX_LAYERS: usize = 8;

/// Filter bits per key it is sized for (about 6 % false "maybe" at that load).
const BITS_PER_KEY: usize = 16;
/// Keys the smallest filter is sized for.
const MIN_FILTER_KEYS: usize = 4096;

/// The filter's hash of a key: fixed, since every copy of a filter must agree.
fn filter_hash(key: &EntryKey) -> u64 {
    foldhash::fast::FixedState::with_seed(0x6e67_7472_6565).hash_one(key)
}

/// A bit per hash slot, set for every key added since the filter was made (module docs).
#[derive(Default)]
struct Filter {
    words: Box<[AtomicU64]>,
}

impl Filter {
    /// A filter sized for `keys`.
    fn for_keys(keys: usize) -> Filter {
        let bits = (keys.max(MIN_FILTER_KEYS) * BITS_PER_KEY).next_power_of_two();
        Filter {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Keys it is sized for.
    fn capacity(&self) -> usize {
        self.words.len() * 64 / BITS_PER_KEY
    }

    fn slot(&self, hash: u64) -> (usize, u64) {
        let bit = hash as usize & (self.words.len() * 64 - 1);
        (bit / 64, 1 << (bit % 64))
    }

    /// Sets the bit of `hash`. Relaxed: writers hold the space's lock, and a query takes its
    /// copy under that lock, which orders the bits set before it.
    fn mark(&self, hash: u64) {
        let (word, bit) = self.slot(hash);
        self.words[word].fetch_or(bit, Ordering::Relaxed);
    }

    /// False only if no key with this hash was added.
    fn may_hold(&self, hash: u64) -> bool {
        if self.words.is_empty() {
            return false;
        }
        let (word, bit) = self.slot(hash);
        self.words[word].load(Ordering::Relaxed) & bit != 0
    }
}

/// Keys of removed entries; cheap to clone (the layers and the filter are shared).
#[derive(Clone, Default)]
pub struct Tombstones {
    /// Oldest (largest) first.
    layers: Vec<Layer>,
    len: usize,
    filter: Arc<Filter>,
    /// Keys marked in `filter` since it was made (removed ones stay marked).
    marked: usize,
}

impl Tombstones {
    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `key` is a tombstone.
    #[inline]
    pub fn contains(&self, key: &EntryKey) -> bool {
        self.len != 0
            && self.filter.may_hold(filter_hash(key))
            && self.layers.iter().any(|layer| layer.contains(key))
    }

    /// `contains` without the filter: for callers that expect most keys they ask for to be
    /// tombstones (a rebuild after a mass delete), where the filter would say "maybe" to
    /// nearly all of them after a cache miss of its own.
    #[inline]
    pub fn contains_unfiltered(&self, key: &EntryKey) -> bool {
        self.layers.iter().any(|layer| layer.contains(key))
    }

    /// Adds `keys` (none of them present yet).
    pub fn extend(&mut self, keys: impl IntoIterator<Item = EntryKey>) {
        let newest = match self.layers.last_mut().and_then(Arc::get_mut) {
            Some(newest) => newest,
            None => {
                self.layers.push(Arc::default());
                Arc::get_mut(self.layers.last_mut().expect("just pushed")).expect("not shared")
            }
        };
        if self.filter.words.is_empty() {
            // The default holds no bits; it has no key to carry over either.
            self.filter = Arc::new(Filter::for_keys(0));
        }
        let keys = keys.into_iter();
        newest.reserve(keys.size_hint().0);
        let filter = &self.filter;
        let mut added = 0;
        for key in keys {
            if newest.insert(key) {
                filter.mark(filter_hash(&key));
                added += 1;
            }
        }
        self.len += added;
        self.marked += added;
        self.merge_small_layers();
        self.refresh_filter();
    }

    /// Makes a new filter from the layers once the keys marked in this one outgrew it, or
    /// once most of them were removed (each stale bit is a needless layer lookup). Copies
    /// taken before keep the old filter, which holds every key of their layers.
    fn refresh_filter(&mut self) {
        let capacity = self.filter.capacity();
        let outgrown = self.marked > capacity;
        let stale = capacity > MIN_FILTER_KEYS && self.marked > 2 * self.len + MIN_FILTER_KEYS;
        if !(outgrown || stale) {
            return;
        }
        // Room for four times the keys there are now: a mass delete keeps adding thousands
        // per commit, and each new filter walks every layer (under the space's lock).
        let filter = Filter::for_keys(4 * self.len);
        for key in self.layers.iter().flat_map(|layer| layer.iter()) {
            filter.mark(filter_hash(key));
        }
        self.filter = Arc::new(filter);
        self.marked = self.len;
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &EntryKey) -> bool {
        let Some(at) = self.layers.iter().position(|layer| layer.contains(key)) else {
            return false;
        };
        Arc::make_mut(&mut self.layers[at]).remove(key);
        self.len -= 1;
        if self.layers[at].is_empty() {
            self.layers.remove(at);
        }
        true
    }

    /// Removes every key `gone` holds, copying only the layers that lose some (a rebuild
    /// drops most of what the layers held when it started).
    pub fn remove_all(&mut self, gone: &HashSet<EntryKey>) {
        if gone.is_empty() {
            return;
        }
        let nothing_prepared = PreparedRemoval { layers: Vec::new() };
        self.remove_prepared(nothing_prepared, |key| gone.contains(key));
    }

    /// The work of `remove_all(gone)` done on a copy of these tombstones, with no lock held:
    /// each layer that loses keys, with what remains of it. `remove_prepared` then only swaps
    /// those layers in where the live set still shares them with the copy.
    pub fn prepare_removal(&self, gone: &HashSet<EntryKey>) -> PreparedRemoval {
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                let rest = without(layer, |key| gone.contains(key));
                (Arc::clone(layer), rest)
            })
            .collect();
        PreparedRemoval { layers }
    }

    /// `prepare_removal` of every key these tombstones hold (a rebuild of the whole space
    /// drops the stored copy of each), with nothing to look up: every layer goes.
    pub fn prepare_removal_of_all(&self) -> PreparedRemoval {
        let empty = Layer::default();
        let layers = self
            .layers
            .iter()
            .map(|layer| (Arc::clone(layer), Some(Arc::clone(&empty))))
            .collect();
        PreparedRemoval { layers }
    }

    /// `remove_all` of the keys `gone` accepts, with the work `prepared` did on an earlier
    /// copy: a layer still shared with that copy (unchanged since, since shared layers are
    /// never written) takes its prepared remainder; any other layer (made or copied since) is
    /// filtered here.
    pub fn remove_prepared(&mut self, prepared: PreparedRemoval, gone: impl Fn(&EntryKey) -> bool) {
        for layer in &mut self.layers {
            match prepared
                .layers
                .iter()
                .find(|(was, _)| Arc::ptr_eq(was, layer))
            {
                Some((_, Some(rest))) => *layer = Arc::clone(rest),
                Some((_, None)) => {}
                // Made or copied since: filtered here, in place when nobody else holds it.
                None => match Arc::get_mut(layer) {
                    Some(owned) => owned.retain(|key| !gone(key)),
                    None => {
                        if let Some(rest) = without(layer, &gone) {
                            *layer = rest;
                        }
                    }
                },
            }
        }
        // The copy's references would make the merges below copy the layers they touch.
        drop(prepared);
        self.layers.retain(|layer| !layer.is_empty());
        self.len = self.layers.iter().map(|layer| layer.len()).sum();
        self.merge_small_layers();
        self.refresh_filter();
    }

    /// Merges the newest layer into the one before while it is at least a quarter of that
    /// size, or while there are too many layers.
    fn merge_small_layers(&mut self) {
        while let [.., older, newest] = self.layers.as_slice() {
            if newest.len() * 4 < older.len() && self.layers.len() <= MAX_LAYERS {
                break;
            }
            let newest = self.layers.pop().expect("two layers");
            let older = self.layers.last_mut().expect("one layer");
            Arc::make_mut(older).extend(newest.iter().copied());
        }
    }
}

/// `layer` without the keys `gone` accepts, `None` when it holds none of them.
fn without(layer: &Layer, gone: impl Fn(&EntryKey) -> bool) -> Option<Layer> {
    layer
        .iter()
        .any(&gone)
        .then(|| Arc::new(layer.iter().filter(|key| !gone(key)).copied().collect()))
}

/// What `Tombstones::prepare_removal` computed: each layer of the copy it ran on, with what
/// remains of it once the keys are removed (`None`: it loses none).
pub struct PreparedRemoval {
    layers: Vec<(Layer, Option<Layer>)>,
}

/// One layer of tombstones, shared by the copies that hold it.
type Layer = Arc<HashSet<EntryKey>>;

/// A set of keys, as `Tombstones::remove_all` takes them.
pub type KeySet = HashSet<EntryKey>;

/// A set of keys, for `Tombstones::remove_all`.
pub fn key_set(keys: impl IntoIterator<Item = EntryKey>) -> KeySet {
    keys.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::spatial::{Entry, Payload};
    use rstar::primitives::GeomWithData;

    fn key(id: u32) -> EntryKey {
        let payload = Payload {
            id,
            field_radius_q: 0,
            field_strength_q: 0,
        };
        let e: Entry = GeomWithData::new([id as f32, 0.0, 0.0], payload);
        EntryKey::of(&e)
    }

    #[test]
    fn shared_layers_are_never_written_and_lookups_see_every_layer() {
        let mut dead = Tombstones::default();
        dead.extend((0..100).map(key));
        let held = dead.clone();
        dead.extend((100..110).map(key));
        assert_eq!((held.len(), dead.len()), (100, 110));
        // `held` shares the filter, which now has 105's bit: its layers still say no.
        assert!(!held.contains(&key(105)) && dead.contains(&key(105)));
        assert!(dead.remove(&key(5)));
        assert!(held.contains(&key(5)) && !dead.contains(&key(5)));
        assert!(!dead.remove(&key(5)));
        assert_eq!(dead.len(), 109);
    }

    #[test]
    fn many_small_shared_additions_stay_few_layers() {
        let mut dead = Tombstones::default();
        let mut held = Vec::new();
        for id in 0..10_000 {
            dead.extend([key(id)]);
            held.push(dead.clone());
        }
        assert_eq!(dead.len(), 10_000);
        assert!(
            dead.layers.len() <= MAX_LAYERS,
            "{} layers",
            dead.layers.len()
        );
        assert!((0..10_000).all(|id| dead.contains(&key(id))));
        assert!(!(10_000..20_000).any(|id| dead.contains(&key(id))));
        assert!(held[99].contains(&key(99)) && !held[99].contains(&key(100)));
        // The filter grew past its first size and every copy still finds its own keys.
        assert!(dead.filter.capacity() >= 10_000);
        assert!((0..=5_000).all(|id| held[5_000].contains(&key(id))));
    }

    #[test]
    fn the_filter_is_made_anew_once_most_keys_are_gone_and_answers_the_same() {
        let mut dead = Tombstones::default();
        dead.extend((0..50_000).map(key));
        let big = dead.filter.capacity();
        dead.remove_all(&key_set((0..49_000).map(key)));
        assert_eq!(dead.len(), 1_000);
        assert!(dead.filter.capacity() < big, "a fresh, smaller filter");
        assert!((49_000..50_000).all(|id| dead.contains(&key(id))));
        assert!(!(0..49_000).any(|id| dead.contains(&key(id))));
    }

    #[test]
    fn remove_all_leaves_what_it_was_not_given() {
        let mut dead = Tombstones::default();
        dead.extend((0..50).map(key));
        let held = dead.clone();
        dead.extend((50..60).map(key));
        dead.remove_all(&key_set((0..55).map(key)));
        assert_eq!(dead.len(), 5);
        assert!((55..60).all(|id| dead.contains(&key(id))));
        assert!(!dead.contains(&key(3)) && held.contains(&key(3)));
        assert_eq!(held.len(), 50);
    }

    #[test]
    fn a_prepared_removal_equals_remove_all_whatever_changed_since() {
        let mut dead = Tombstones::default();
        dead.extend((0..1_000).map(key));
        dead.extend((1_000..1_200).map(key));
        let copy = dead.clone();
        let gone = key_set((0..900).map(key).chain((1_100..1_150).map(key)));
        let prepared = copy.prepare_removal(&gone);
        // Meanwhile: new keys in a layer of their own, and a revival, which copies the
        // layer it touches (so that layer is filtered at the swap, not swapped).
        dead.extend((5_000..5_100).map(key));
        assert!(dead.remove(&key(1_199)));
        let mut expected = dead.clone();
        expected.remove_all(&gone);
        dead.remove_prepared(prepared, |k| gone.contains(k));
        assert_eq!(dead.len(), expected.len());
        for id in (0..1_300).chain(5_000..5_100) {
            assert_eq!(
                dead.contains(&key(id)),
                expected.contains(&key(id)),
                "key {id}"
            );
        }
        assert_eq!(dead.len(), 100 + 149 + 100);
        // The copy is untouched.
        assert_eq!(copy.len(), 1_200);
        assert!(copy.contains(&key(5)));
    }
}
