//! One bulk-built tree of a space: its entries in one array, cut into buckets of nearby
//! points (sort-tile-recursive), and an rstar R-tree over the buckets' boxes.
//!
//! Why buckets rather than entries as rstar's leaves: a leaf of rstar's tree is a slot of its
//! node enum, as large as a parent node (56 bytes for a 20-byte entry), so eight trees cost
//! ~450 bytes per token, most of the process. An entry in a bucket costs its 20 bytes plus a
//! share of its bucket's slot (`cargo bench --bench index_memory`: 499 → ~190 bytes per token
//! for the eight trees). The trees of a forest are never changed once built (writes
//! go to its buffers and tombstones), so nothing is lost by packing them. A query also reads
//! the entries of a bucket from one contiguous run of memory rather than from scattered nodes.

use rstar::{PointDistance, RTree, RTreeObject, SelectionFunction, AABB};

use super::{Entry, IndexParams};

/// Entries per bucket (the last bucket of a tree may hold fewer). Measured at 1M tokens
/// (`cargo bench --bench spatial`): 8, 16 and 32 gave range ~50 hits 15.7 / 13.1 / 13.4 µs
/// and kNN k = 10 15.8 / 15.8 / 12.1 µs; larger buckets also cost less memory.
const BUCKET: usize = 32;

/// A run of nearby entries of the tree's array and the box around them.
#[derive(Clone, Debug)]
struct Bucket {
    envelope: AABB<[f32; 3]>,
    start: u32,
    len: u32,
}

impl RTreeObject for Bucket {
    type Envelope = AABB<[f32; 3]>;

    fn envelope(&self) -> Self::Envelope {
        self.envelope
    }
}

impl PointDistance for Bucket {
    /// The distance to the bucket's box: a lower bound of every entry's, so rstar's nearest
    /// order over buckets visits the nearest entries' buckets first.
    fn distance_2(&self, point: &[f32; 3]) -> f32 {
        self.envelope.distance_2(point)
    }
}

/// Which boxes a search may need to open, by the box alone.
pub trait BoxFilter {
    /// Whether something inside `envelope` may be wanted.
    fn may_reach(&self, envelope: &AABB<[f32; 3]>) -> bool;
}

/// Adapts a `BoxFilter` to rstar's selection of nodes and buckets.
struct Select<'a, F>(&'a F);

impl<F: BoxFilter> SelectionFunction<Bucket> for Select<'_, F> {
    fn should_unpack_parent(&self, envelope: &AABB<[f32; 3]>) -> bool {
        self.0.may_reach(envelope)
    }

    fn should_unpack_leaf(&self, bucket: &Bucket) -> bool {
        self.0.may_reach(&bucket.envelope)
    }
}

/// A space's bulk-built tree (module docs).
pub struct SpaceTree {
    buckets: RTree<Bucket, IndexParams>,
    entries: Vec<Entry>,
}

impl Default for SpaceTree {
    fn default() -> Self {
        SpaceTree {
            buckets: RTree::new_with_params(),
            entries: Vec::new(),
        }
    }
}

impl SpaceTree {
    /// The tree of `entries`, reordered into buckets.
    pub fn bulk_load(mut entries: Vec<Entry>) -> SpaceTree {
        entries.shrink_to_fit();
        assert!(
            u32::try_from(entries.len()).is_ok(),
            "a tree holds fewer than 2^32 entries"
        );
        tile(&mut entries, 0);
        let buckets = entries
            .chunks(BUCKET)
            .enumerate()
            .map(|(i, run)| Bucket {
                envelope: AABB::from_points(run.iter().map(|e| e.geom())),
                start: (i * BUCKET) as u32,
                len: run.len() as u32,
            })
            .collect();
        SpaceTree {
            buckets: RTree::bulk_load_with_params(buckets),
            entries,
        }
    }

    /// Entries stored.
    pub fn size(&self) -> usize {
        self.entries.len()
    }

    /// Every entry, in bucket order.
    pub fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.entries.iter()
    }

    /// The entries of `bucket`.
    fn run(&self, bucket: &Bucket) -> &[Entry] {
        let start = bucket.start as usize;
        &self.entries[start..start + bucket.len as usize]
    }

    /// The entries of every bucket whose box `filter` may reach (a superset of the wanted).
    pub fn candidates<'a, F: BoxFilter>(
        &'a self,
        filter: &'a F,
    ) -> impl Iterator<Item = &'a Entry> {
        self.buckets
            .locate_with_selection_function(Select(filter))
            .flat_map(|bucket| self.run(bucket))
    }

    /// Runs of entries, bucket by bucket, nearest box to `point` first, each with its box's
    /// squared distance (f32, approximate).
    pub fn nearest_runs(&self, point: [f32; 3]) -> impl Iterator<Item = (&[Entry], f32)> {
        self.buckets
            .nearest_neighbor_iter_with_distance_2(point)
            .map(|(bucket, d_2)| (self.run(bucket), d_2))
    }
}

/// Orders `entries` sort-tile-recursively from `axis` on: slabs along each axis in turn, each
/// a whole number of buckets, so that every run of `BUCKET` entries is a compact bucket.
fn tile(entries: &mut [Entry], axis: usize) {
    let buckets = entries.len().div_ceil(BUCKET);
    if buckets <= 1 {
        return;
    }
    let axes_left = 3 - axis;
    let slabs = if axes_left == 1 {
        buckets
    } else {
        (buckets as f64).powf(1.0 / axes_left as f64).ceil() as usize
    };
    let slab = buckets.div_ceil(slabs) * BUCKET;
    split(entries, slab, axis);
    if axes_left > 1 {
        for part in entries.chunks_mut(slab) {
            tile(part, axis + 1);
        }
    }
}

/// Partitions `entries` along `axis` into runs of `run` entries (the last may be shorter),
/// each no further along the axis than the next: halving by selection, O(n log(n / run)).
fn split(entries: &mut [Entry], run: usize, axis: usize) {
    let runs = entries.len().div_ceil(run);
    if runs <= 1 {
        return;
    }
    let mid = runs / 2 * run;
    entries.select_nth_unstable_by(mid, |a, b| a.geom()[axis].total_cmp(&b.geom()[axis]));
    let (low, high) = entries.split_at_mut(mid);
    split(low, run, axis);
    split(high, run, axis);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::spatial::Payload;
    use rstar::primitives::GeomWithData;
    use rstar::Envelope;

    fn entries(n: u32) -> Vec<Entry> {
        (0..n)
            .map(|i| {
                let p = [
                    (i * 7919 % 1000) as f32,
                    (i * 104_729 % 997) as f32,
                    (i % 13) as f32,
                ];
                GeomWithData::new(
                    p,
                    Payload {
                        id: i,
                        field_radius_q: 0,
                        field_strength_q: 0,
                    },
                )
            })
            .collect()
    }

    struct Near([f32; 3], f32);

    impl BoxFilter for Near {
        fn may_reach(&self, envelope: &AABB<[f32; 3]>) -> bool {
            envelope.distance_2(&self.0) <= self.1 * self.1
        }
    }

    #[test]
    fn every_entry_lies_in_one_bucket_whose_box_holds_it() {
        for n in [0, 1, 15, 16, 17, 1000, 4099] {
            let tree = SpaceTree::bulk_load(entries(n));
            assert_eq!(tree.size(), n as usize);
            let mut ids: Vec<u32> = tree.iter().map(|e| e.data.id).collect();
            ids.sort_unstable();
            assert_eq!(ids, (0..n).collect::<Vec<_>>());
            let mut seen = 0;
            for bucket in tree.buckets.iter() {
                assert!(bucket.len as usize <= BUCKET && bucket.len > 0);
                for e in tree.run(bucket) {
                    assert!(bucket.envelope.contains_point(e.geom()));
                }
                seen += bucket.len;
            }
            assert_eq!(seen, n);
        }
    }

    #[test]
    fn candidates_hold_every_entry_the_filter_reaches() {
        let tree = SpaceTree::bulk_load(entries(5000));
        for (centre, radius) in [([500.0, 500.0, 6.0], 40.0), ([0.0, 0.0, 0.0], 10.0)] {
            let filter = Near(centre, radius);
            let within = |e: &&Entry| {
                let p = e.geom();
                (0..3).map(|a| (p[a] - centre[a]).powi(2)).sum::<f32>() <= radius * radius
            };
            let mut want: Vec<u32> = tree.iter().filter(within).map(|e| e.data.id).collect();
            let mut got: Vec<u32> = tree
                .candidates(&filter)
                .filter(within)
                .map(|e| e.data.id)
                .collect();
            want.sort_unstable();
            got.sort_unstable();
            assert!(!want.is_empty());
            assert_eq!(got, want);
        }
    }

    #[test]
    fn nearest_runs_come_in_box_distance_order_and_cover_everything() {
        let tree = SpaceTree::bulk_load(entries(3000));
        let point = [250.0, 750.0, 3.0];
        let box_distance =
            |run: &[Entry]| AABB::from_points(run.iter().map(|e| e.geom())).distance_2(&point);
        let runs: Vec<&[Entry]> = tree.nearest_runs(point).map(|(run, _)| run).collect();
        assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), 3000);
        for pair in runs.windows(2) {
            assert!(box_distance(pair[0]) <= box_distance(pair[1]));
        }
    }
}
