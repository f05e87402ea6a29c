//! A space's tombstones as a few shared layers, so that a write never copies them whole.
//!
//! Queries and background builds hold the tombstones they started with. With a single shared
//! set, every removal made meanwhile copied the whole set (`Arc::make_mut`): during a mass
//! expiry a rebuild holds a set of hundreds of thousands of keys for a second or more while a
//! commit of 2,000 removals arrives every few milliseconds in each of the eight spaces. Here a
//! removal goes into the newest layer when nobody else holds it, else into a new layer, and
//! layers merge the way a binary counter carries (a layer merges into the one before it once it
//! is at least half that size), so each key is copied O(log n) times in all and a lookup
//! checks a handful of layers.

use std::sync::Arc;

use super::forest::EntryKey;

/// The set type of one layer: foldhash, since std's SipHash showed in profiles of mass
/// deletes and the keys are not chosen by clients in a way that could aim collisions at a
/// seeded hash.
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// Layers beyond which the newest ones merge whatever their sizes (bounds a lookup's cost).
const MAX_LAYERS: usize = 8;

/// Keys of removed entries; cheap to clone (the layers are shared).
#[derive(Clone, Default)]
pub struct Tombstones {
    /// Oldest (largest) first.
    layers: Vec<Arc<HashSet<EntryKey>>>,
    len: usize,
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
        let before = newest.len();
        newest.extend(keys);
        self.len += newest.len() - before;
        self.merge_small_layers();
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
        for layer in &mut self.layers {
            if !layer.iter().any(|key| gone.contains(key)) {
                continue;
            }
            match Arc::get_mut(layer) {
                Some(owned) => owned.retain(|key| !gone.contains(key)),
                None => {
                    *layer = Arc::new(
                        layer
                            .iter()
                            .filter(|k| !gone.contains(k))
                            .copied()
                            .collect(),
                    )
                }
            }
        }
        self.layers.retain(|layer| !layer.is_empty());
        self.len = self.layers.iter().map(|layer| layer.len()).sum();
        self.merge_small_layers();
    }

    /// Merges the newest layer into the one before while it is at least half that size, or
    /// while there are too many layers.
    fn merge_small_layers(&mut self) {
        while let [.., older, newest] = self.layers.as_slice() {
            if newest.len() * 2 < older.len() && self.layers.len() <= MAX_LAYERS {
                break;
            }
            let newest = self.layers.pop().expect("two layers");
            let older = self.layers.last_mut().expect("one layer");
            Arc::make_mut(older).extend(newest.iter().copied());
        }
    }
}

/// A set of keys, for `Tombstones::remove_all`.
pub fn key_set(keys: impl IntoIterator<Item = EntryKey>) -> HashSet<EntryKey> {
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
        assert!(held[99].contains(&key(99)) && !held[99].contains(&key(100)));
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
}
