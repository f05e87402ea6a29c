//! The spatial index: per space, a few rstar R-trees over the tokens defined there, and the
//! exact queries over them (k nearest, range, density, influence). The default grid's index
//! follows every commit as a `WriteHook`; user grids keep their own `SpaceTrees` over their
//! members.
//!
//! The trees hold quantised coordinates as f32 (integers up to 32767, exact in f32) and only
//! supply candidates: rstar's f32 arithmetic is approximate, and integer points would overflow
//! when it squares distances. Range searches prune with our own f64 ball test over those exact
//! integers. Every candidate's distance is then computed exactly in f64
//! (`model::grid::distance`) and the (distance, id) order applied to those.
//!
//! Why a few trees per space (a forest) rather than one: ImportTokens commits 1M tokens as
//! ~100 batches of 10k, each visible when it commits. Inserting them one by one into 8 growing
//! trees costs ~5.6 µs per entry (cache and TLB misses at 1M), ~45–60 s in all; rebuilding a
//! space by `bulk_load(existing ∪ batch)` costs ~0.35 µs per entry but would rebuild 50M
//! entries per space. So a batch of at least `BatchPolicy::bulk_min` entries becomes a
//! bulk-loaded tree of its own that absorbs every smaller tree no larger than the entries
//! gathered (the logarithmic method, as a binary counter: after b equal batches the trees
//! hold the binary digits of b), so each entry is rebuilt ~log2(batches) times: ~3.8M entries
//! per space for 100 × 10k. Big batches spread the 8 spaces over the cores. Measured on this
//! 2-core VM under load from other builds (`cargo bench --bench spatial -- import`, and CPU
//! time against `bulk_built` in the same process): ~3× the CPU of one bulk build of the 1M,
//! i.e. ~8.5 s on a quiet machine (bulk build 2.8 s) against ~45–60 s before; merging
//! more eagerly (absorb up to twice the gathered entries) cost +35 % and still left 3 trees.
//!
//! The price is paid by queries while a space has several trees: each tree is searched (a
//! token lies in exactly one tree of a space, so results are unions), which after an import in
//! 10k batches (trees of 640k, 320k and 40k) makes kNN and range ~1.5–2.5× slower than on one
//! bulk-built tree. Single creates go into the smallest tree (never slower than into one big
//! tree); removes look in the smallest tree first. A tree is built under an upgradable read,
//! so queries of its space go on until it replaces the trees it absorbed.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock, RwLockUpgradableReadGuard};
use rstar::primitives::GeomWithData;
use rstar::{RStarInsertionStrategy, RTree, RTreeParams, SelectionFunction, AABB};

use super::command::{Committed, Effect};
use super::error::StoreError;
use super::tokens::TokenTables;
use super::write_path::WriteHook;
use crate::model::grid::{self, Hit, TopHits, MAX_FIELD_RADIUS};
use crate::model::token::SPACE_COUNT;
use crate::model::{QPoint, Space, Token, TokenData};

/// Node sizes of the trees; chosen with `cargo bench --bench spatial` (memory and speed).
pub struct IndexParams;

impl RTreeParams for IndexParams {
    const MIN_SIZE: usize = 4;
    const MAX_SIZE: usize = 12;
    const REINSERTION_COUNT: usize = 0;
    type DefaultInsertionStrategy = RStarInsertionStrategy;
}

/// What an entry carries besides its point: enough for every query without a map lookup, so
/// that a query reads one consistent tree. The field is kept in its quantised steps (8 bytes
/// in all, so an entry is 20 bytes: bulk loads and merges move half as much memory as with
/// f64 fields) and turned into the exact f64 values when a query needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The token id.
    pub id: u32,
    /// Its field radius in steps of 1/100.
    pub field_radius_q: u8,
    /// Its field strength in steps of 1/255.
    pub field_strength_q: u8,
}

/// Steps per unit of a stored field radius (`TokenData::field_radius_f64` is `q / 100`).
const RADIUS_STEPS: f64 = 100.0;
/// Steps per unit of a stored field strength (`TokenData::field_strength_f64` is `q / 255`).
const STRENGTH_STEPS: f64 = 255.0;

impl Payload {
    /// The payload of token `id` with `data`'s field. The steps are recovered from the exact
    /// f64 values (`q / scale`, within an ulp of the step), so they round back exactly.
    fn new(id: u32, data: &TokenData) -> Payload {
        Payload {
            id,
            field_radius_q: (data.field_radius_f64() * RADIUS_STEPS).round() as u8,
            field_strength_q: (data.field_strength_f64() * STRENGTH_STEPS).round() as u8,
        }
    }

    /// Its field radius as stored, in f64 (`q / 100`, as `TokenData::field_radius_f64`).
    pub fn field_radius(&self) -> f64 {
        f64::from(self.field_radius_q) / RADIUS_STEPS
    }

    /// Its field strength as stored, in f64 (`q / 255`, as `TokenData::field_strength_f64`).
    pub fn field_strength(&self) -> f64 {
        f64::from(self.field_strength_q) / STRENGTH_STEPS
    }
}

/// One tree entry: the quantised point (as f32) and its payload.
pub type Entry = GeomWithData<[f32; 3], Payload>;

const _: () = assert!(std::mem::size_of::<Entry>() == 20, "entries stay compact");

/// One space's tree.
pub type SpaceTree = RTree<Entry, IndexParams>;

/// The tree entry of `data` in `space`, if defined there.
fn entry(id: u32, data: &TokenData, space: Space) -> Option<Entry> {
    data.point(space)
        .map(|QPoint(q)| GeomWithData::new(q.map(f32::from), Payload::new(id, data)))
}

/// Selects the tree nodes and entries that may lie within a ball. Computed in f64 over the
/// exact integer coordinates the f32 values hold, with a relative slack far above f64
/// rounding, so that no hit is ever pruned; the caller then applies the exact test. A ball
/// visits fewer nodes than its bounding box would.
#[derive(Clone)]
struct WithinBall {
    /// The centre in quantised units.
    centre_q: [f64; 3],
    /// Squared reach in quantised units, slack included.
    reach_2: f64,
}

impl WithinBall {
    fn new(space: Space, centre: [f64; 3], radius: f64) -> WithinBall {
        let scale = space.scale();
        let reach = radius * scale * (1.0 + 1e-9) + 1e-6;
        WithinBall {
            centre_q: centre.map(|c| c * scale),
            reach_2: reach * reach,
        }
    }
}

impl SelectionFunction<Entry> for WithinBall {
    fn should_unpack_parent(&self, envelope: &AABB<[f32; 3]>) -> bool {
        let (lower, upper) = (envelope.lower(), envelope.upper());
        let mut gap_2 = 0.0;
        for axis in 0..3 {
            let c = self.centre_q[axis];
            let gap = (f64::from(lower[axis]) - c)
                .max(c - f64::from(upper[axis]))
                .max(0.0);
            gap_2 += gap * gap;
        }
        gap_2 <= self.reach_2
    }

    fn should_unpack_leaf(&self, entry: &Entry) -> bool {
        let p = entry.geom();
        let d_2: f64 = (0..3)
            .map(|axis| (f64::from(p[axis]) - self.centre_q[axis]).powi(2))
            .sum();
        d_2 <= self.reach_2
    }
}

/// How `SpaceTrees` indexes a batch of new tokens. The defaults are measured (see the module
/// docs); tests lower them so that small batches exercise several trees per space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Entries from which a batch into a space is bulk-loaded as a tree of its own (merged
    /// with the smaller trees) rather than inserted one by one into the smallest tree.
    pub bulk_min: usize,
    /// Tokens from which a batch works on the spaces on several threads.
    pub parallel_min: usize,
    /// A batch's new tree absorbs each smaller tree (smallest first) whose size is at most
    /// this many times the entries gathered so far.
    pub merge_ratio: usize,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            bulk_min: 256,
            parallel_min: 2_048,
            merge_ratio: 1,
        }
    }
}

/// The entries of `tokens` defined in `space`.
fn entries(tokens: &[Token], space: Space) -> Vec<Entry> {
    tokens
        .iter()
        .filter_map(|t| entry(t.id.get(), &t.data, space))
        .collect()
}

/// Runs `work` once for every space, on up to as many threads as there are cores (this one
/// included); each thread takes the next space not yet taken, so uneven spaces balance out.
fn on_threads(work: impl Fn(Space) + Sync) {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(SPACE_COUNT);
    let next = AtomicUsize::new(0);
    let run = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(&space) = Space::ALL.get(i) else {
            break;
        };
        work(space);
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(run);
        }
        run();
    });
}

/// One bulk-loaded tree per space, in space order, built on the available cores.
fn build_in_parallel(tokens: &[Token]) -> [SpaceTree; SPACE_COUNT] {
    let built: [Mutex<SpaceTree>; SPACE_COUNT] =
        std::array::from_fn(|_| Mutex::new(SpaceTree::new_with_params()));
    on_threads(|space| {
        *built[space.index()].lock() = SpaceTree::bulk_load_with_params(entries(tokens, space));
    });
    built.map(Mutex::into_inner)
}

/// One space's index: a few trees, largest first, that together hold each of the space's
/// entries exactly once. Every tree is non-empty.
#[derive(Default)]
struct Forest {
    trees: Vec<SpaceTree>,
}

impl Forest {
    /// A forest of one tree (none when `tree` is empty).
    fn of(tree: SpaceTree) -> Forest {
        Forest {
            trees: if tree.size() == 0 {
                Vec::new()
            } else {
                vec![tree]
            },
        }
    }

    fn len(&self) -> usize {
        self.trees.iter().map(RTree::size).sum()
    }

    /// Inserts one entry into the smallest tree (the cheapest to insert into).
    fn insert(&mut self, e: Entry) {
        match self.trees.last_mut() {
            Some(tree) => tree.insert(e),
            None => self.trees.push(SpaceTree::bulk_load_with_params(vec![e])),
        }
    }

    /// Removes one entry from whichever tree holds it, smallest first (a miss in a small tree
    /// costs little); a tree left empty is dropped.
    fn remove(&mut self, e: &Entry) {
        for i in (0..self.trees.len()).rev() {
            if self.trees[i].remove(e).is_some() {
                if self.trees[i].size() == 0 {
                    self.trees.remove(i);
                }
                return;
            }
        }
    }

    /// Indexes a batch of entries (none of them indexed yet). A small batch into a non-empty
    /// forest is inserted one by one; otherwise the batch becomes a bulk-loaded tree that
    /// absorbs the smaller trees the policy names (the logarithmic method). The tree is built
    /// under an upgradable read, so queries of this space go on meanwhile and see the new tree
    /// at once when it replaces the trees it absorbed.
    fn insert_batch(slot: &RwLock<Forest>, mut batch: Vec<Entry>, policy: &BatchPolicy) {
        if batch.is_empty() {
            return;
        }
        let forest = slot.upgradable_read();
        if batch.len() < policy.bulk_min && !forest.trees.is_empty() {
            let mut forest = RwLockUpgradableReadGuard::upgrade(forest);
            for e in batch {
                forest.insert(e);
            }
            return;
        }
        let mut keep = forest.trees.len();
        let mut total = batch.len();
        while keep > 0 && forest.trees[keep - 1].size() <= policy.merge_ratio * total {
            keep -= 1;
            total += forest.trees[keep].size();
        }
        batch.reserve_exact(total - batch.len());
        for tree in &forest.trees[keep..] {
            batch.extend(tree.iter().copied());
        }
        let built = SpaceTree::bulk_load_with_params(batch);
        let mut forest = RwLockUpgradableReadGuard::upgrade(forest);
        forest.trees.truncate(keep);
        forest.trees.push(built);
    }
}

/// The point of `token` in `space`, the centre of its neighbour query: FAILED_PRECONDITION
/// when the token is undefined there, since it has no position to measure from.
pub fn query_origin(token: &Token, space: Space) -> Result<QPoint, StoreError> {
    token.data.point(space).ok_or_else(|| {
        StoreError::FailedPrecondition(format!(
            "token_id: token {} is undefined in {} (it has no {} point), so it has no neighbours there",
            token.id,
            space.field_name(),
            space.field_name()
        ))
    })
}

/// Outcome of a range query.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeHits {
    /// The first `limit` hits in (distance, id) order.
    pub hits: Vec<Hit>,
    /// Every token in range.
    pub total: u64,
}

/// Outcome of a field influence query, before the grid's `min_field_nodes` rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InfluenceSum {
    /// Σ strength·(1 − d/R) over the contributors.
    pub sum: f64,
    /// Tokens that contributed.
    pub contributors: u64,
}

/// Each space's trees behind their own lock: a query reads one space consistently while
/// writes to other spaces go on.
pub struct SpaceTrees {
    spaces: [RwLock<Forest>; SPACE_COUNT],
    policy: BatchPolicy,
}

impl Default for SpaceTrees {
    fn default() -> Self {
        SpaceTrees::with_policy(BatchPolicy::default())
    }
}

impl SpaceTrees {
    /// Empty trees that index batches by `policy` (tests lower its thresholds).
    pub fn with_policy(policy: BatchPolicy) -> SpaceTrees {
        assert!(policy.merge_ratio >= 1, "merge_ratio keeps trees ordered");
        SpaceTrees {
            spaces: std::array::from_fn(|_| RwLock::new(Forest::default())),
            policy,
        }
    }

    /// Trees bulk-loaded from `tokens`, the spaces built in parallel on the available cores.
    pub fn bulk_built(tokens: &[Token]) -> SpaceTrees {
        let built = build_in_parallel(tokens);
        SpaceTrees {
            spaces: built.map(|tree| RwLock::new(Forest::of(tree))),
            policy: BatchPolicy::default(),
        }
    }

    /// Replaces every space's trees with one tree bulk-loaded from `tokens`.
    pub fn replace_all(&self, tokens: &[Token]) {
        for (slot, built) in self.spaces.iter().zip(build_in_parallel(tokens)) {
            *slot.write() = Forest::of(built);
        }
    }

    /// Indexes new tokens. Per space, a batch of at least `bulk_min` entries is bulk-loaded
    /// into a tree of its own that absorbs the smaller trees (so trees grow geometrically and
    /// each entry is rebuilt only a few times); a smaller one is inserted entry by entry into
    /// the smallest tree. A batch of `parallel_min` tokens or more spreads the spaces over the
    /// cores.
    pub fn insert(&self, tokens: &[Token]) {
        let work = |space: Space| {
            let batch = entries(tokens, space);
            Forest::insert_batch(&self.spaces[space.index()], batch, &self.policy);
        };
        if tokens.len() >= self.policy.parallel_min {
            on_threads(work);
        } else {
            Space::ALL.into_iter().for_each(work);
        }
    }

    /// Unindexes a token that is gone.
    pub fn remove(&self, token: &Token) {
        for space in Space::ALL {
            if let Some(e) = entry(token.id.get(), &token.data, space) {
                self.spaces[space.index()].write().remove(&e);
            }
        }
    }

    /// Moves a token's entries from `before` to `after`, touching only the spaces whose entry
    /// changed (a moved point, a space defined or undefined, a new radius or strength).
    pub fn update(&self, before: &Token, after: &Token) {
        for space in Space::ALL {
            let old = entry(before.id.get(), &before.data, space);
            let new = entry(after.id.get(), &after.data, space);
            if old == new {
                continue;
            }
            let mut forest = self.spaces[space.index()].write();
            if let Some(e) = old {
                forest.remove(&e);
            }
            if let Some(e) = new {
                forest.insert(e);
            }
        }
    }

    /// Empties every space; each switches from all to nothing at once.
    pub fn clear(&self) {
        for slot in &self.spaces {
            *slot.write() = Forest::default();
        }
    }

    /// Number of tokens indexed in `space`.
    pub fn len(&self, space: Space) -> usize {
        self.spaces[space.index()].read().len()
    }

    /// True when no space indexes anything.
    pub fn is_empty(&self) -> bool {
        Space::ALL.iter().all(|s| self.len(*s) == 0)
    }

    /// Number of trees that index `space` (a diagnostic for tests and benches).
    pub fn tree_count(&self, space: Space) -> usize {
        self.spaces[space.index()].read().trees.len()
    }

    /// Merges each space's trees into one bulk-loaded tree (spaces on the available cores):
    /// after a streamed import, queries then visit one tree again. Queries go on meanwhile;
    /// writes to a space wait for its rebuild (~0.35 s per space at 1M tokens).
    pub fn compact(&self) {
        on_threads(|space| {
            let slot = &self.spaces[space.index()];
            let forest = slot.upgradable_read();
            if forest.trees.len() <= 1 {
                return;
            }
            let all: Vec<Entry> = forest
                .trees
                .iter()
                .flat_map(|tree| tree.iter().copied())
                .collect();
            let built = SpaceTree::bulk_load_with_params(all);
            *RwLockUpgradableReadGuard::upgrade(forest) = Forest::of(built);
        });
    }

    /// Calls `visit` with every token within `radius` of `centre` (inclusive) and its exact
    /// distance, all read under one lock of the space's tree.
    fn for_each_within(
        forest: &Forest,
        space: Space,
        centre: [f64; 3],
        radius: f64,
        mut visit: impl FnMut(&Entry, f64),
    ) {
        let scale = space.scale();
        let ball = WithinBall::new(space, centre, radius);
        for tree in &forest.trees {
            for e in tree.locate_with_selection_function(ball.clone()) {
                // The f32 coordinates hold the quantised integers exactly.
                let d = grid::distance_quantised(e.geom().map(f64::from), scale, centre);
                if d <= radius {
                    visit(e, d);
                }
            }
        }
    }

    /// The `k` tokens nearest to `centre` in (distance, id) order, `exclude` left out, none
    /// farther than `max_distance` when given.
    pub fn nearest(
        &self,
        space: Space,
        centre: [f64; 3],
        k: usize,
        max_distance: Option<f64>,
        exclude: Option<u32>,
    ) -> Vec<Hit> {
        let forest = self.spaces[space.index()].read();
        let scale = space.scale();
        // rstar's (approximate) nearest order finds k tokens, from the largest tree and then
        // the next ones while fewer than k are found (a token lies in one tree only, so they
        // are k distinct tokens); the farthest of them bounds the exact k-th distance, so the
        // exact answer, ties included, lies within that radius in the union of the trees.
        let query = centre.map(|c| (c * scale) as f32);
        let mut bound: Option<f64> = None;
        let mut found = 0;
        'trees: for tree in &forest.trees {
            if found == k {
                break;
            }
            for e in tree.nearest_neighbor_iter(query) {
                if Some(e.data.id) == exclude {
                    continue;
                }
                let d = grid::distance_quantised(e.geom().map(f64::from), scale, centre);
                bound = Some(bound.map_or(d, |b: f64| b.max(d)));
                found += 1;
                if found == k {
                    break 'trees;
                }
            }
        }
        let Some(mut bound) = bound else {
            return Vec::new();
        };
        if let Some(max) = max_distance {
            bound = bound.min(max);
        }
        let mut top = TopHits::new(k);
        Self::for_each_within(&forest, space, centre, bound, |e, d| {
            if Some(e.data.id) != exclude {
                top.offer(Hit {
                    id: e.data.id,
                    distance: d,
                });
            }
        });
        top.into_sorted()
    }

    /// Every token within `radius` of `centre`: the first `limit` in (distance, id) order and
    /// the total count.
    pub fn within(&self, space: Space, centre: [f64; 3], radius: f64, limit: usize) -> RangeHits {
        let forest = self.spaces[space.index()].read();
        let mut top = TopHits::new(limit);
        let mut total = 0;
        Self::for_each_within(&forest, space, centre, radius, |e, d| {
            total += 1;
            top.offer(Hit {
                id: e.data.id,
                distance: d,
            });
        });
        RangeHits {
            hits: top.into_sorted(),
            total,
        }
    }

    /// Number of tokens within `radius` of `centre`.
    pub fn count_within(&self, space: Space, centre: [f64; 3], radius: f64) -> u64 {
        let forest = self.spaces[space.index()].read();
        let mut count = 0;
        Self::for_each_within(&forest, space, centre, radius, |_, _| count += 1);
        count
    }

    /// The summed field influence at `centre` of tokens within `radius` and their own field
    /// radius.
    pub fn influence(&self, space: Space, centre: [f64; 3], radius: f64) -> InfluenceSum {
        let forest = self.spaces[space.index()].read();
        let mut result = InfluenceSum {
            sum: 0.0,
            contributors: 0,
        };
        // No token reaches farther than the largest storable field radius.
        let reach = radius.min(MAX_FIELD_RADIUS);
        Self::for_each_within(&forest, space, centre, reach, |e, d| {
            let share =
                grid::influence_share(d, radius, e.data.field_radius(), e.data.field_strength());
            if let Some(share) = share {
                result.sum += share;
                result.contributors += 1;
            }
        });
        result
    }

    /// Applies the token effects of a commit, for tokens `wanted` says this index holds.
    fn follow(&self, committed: &Committed, wanted: impl Fn(u32) -> bool) {
        let mut created = Vec::new();
        for effect in &committed.effects {
            match effect {
                Effect::Created(token) if wanted(token.id.get()) => created.push(*token),
                Effect::Updated { before, after } if wanted(after.id.get()) => {
                    self.update(before, after)
                }
                Effect::Deleted(token) if wanted(token.id.get()) => self.remove(token),
                Effect::Cleared { .. } => self.clear(),
                _ => {}
            }
        }
        if !created.is_empty() {
            self.insert(&created);
        }
    }
}

/// The default grid's index: every token, following every commit.
#[derive(Default)]
pub struct SpatialIndex {
    trees: SpaceTrees,
}

impl SpatialIndex {
    /// The trees, for queries.
    pub fn trees(&self) -> &SpaceTrees {
        &self.trees
    }

    /// Rebuilds every tree from the tokens in `tables` by bulk loading (recovery): each space
    /// switches to its new tree at once.
    pub fn rebuild(&self, tables: &TokenTables) {
        self.trees.replace_all(&tables.all_tokens());
    }
}

impl WriteHook for SpatialIndex {
    fn applied(&self, committed: &Committed) {
        self.trees.follow(committed, |_| true);
    }

    fn compact(&self) {
        self.trees.compact();
    }
}
