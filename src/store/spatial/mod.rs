//! The spatial index: per space, a few bulk-built trees over the tokens defined there (their
//! entries in buckets of 32 nearby points under an rstar R-tree: `tree`), and the exact
//! queries over them (k nearest, range, density, influence). The default grid's index
//! follows every commit as a `Follower`; user grids keep their own `SpaceTrees` over their
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
//! entries per space. So a batch is bulk-loaded into a tree of its own that absorbs every
//! smaller tree no larger than the entries gathered (the logarithmic method, as a binary
//! counter: after b equal batches the trees hold the binary digits of b), so each entry is
//! rebuilt ~log2(batches) times. Queries search every tree (a token lies in exactly one), which
//! after an import in 10k batches makes kNN and range ~1.5–2.5× slower than on one tree, until
//! the compaction that follows an import stream.
//!
//! Why writes are buffered (`forest`): a query used to search a space under its lock, so a
//! RangeQuery over a million tokens (~0.2–0.4 s) held up every write to that space, and a
//! build or compaction (~0.35 s per space at 1M) held up every write while it ran: under four
//! such queries and two imports CreateToken's median was 267 ms (`cargo bench --bench
//! heavy_load`). Now a write touches only a small buffer (the tail, a new batch, a
//! tombstone or a gone id's bit) under the space's lock, a query copies a view of a few
//! `Arc`s and searches it with no lock held, and builds run in the background (a thread of
//! lower priority per index, while any is due) and swap their result in under a short lock:
//! the same load leaves CreateToken's median at 2.7 ms. A space past a hard bound (mostly
//! dead, or too much unbuilt) is built at once by a second thread at normal priority, not by
//! the writer.

mod dead_ids;
pub mod forest;
mod tombstones;
mod tree;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rstar::primitives::GeomWithData;
use rstar::{RStarInsertionStrategy, RTreeParams, AABB};

use super::command::{Committed, Effect};
use super::error::StoreError;
use super::tokens::TokenTables;
use super::write_path::Follower;
use crate::model::grid::{self, Hit, TopHits, MAX_FIELD_RADIUS};
use crate::model::token::SPACE_COUNT;
use crate::model::{QPoint, Space, Token, TokenData};
pub use forest::BatchPolicy;
use forest::{Forest, Upkeep, View};
use tree::BoxFilter;
pub use tree::SpaceTree;

/// Node sizes of the R-trees over buckets; chosen with `cargo bench --bench spatial` (memory
/// and speed).
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

    /// Whether `entry` may lie within the ball (the caller applies the exact test).
    #[inline]
    fn may_hold(&self, entry: &Entry) -> bool {
        let p = entry.geom();
        let d_2: f64 = (0..3)
            .map(|axis| (f64::from(p[axis]) - self.centre_q[axis]).powi(2))
            .sum();
        d_2 <= self.reach_2
    }
}

impl BoxFilter for WithinBall {
    fn may_reach(&self, envelope: &AABB<[f32; 3]>) -> bool {
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
        std::array::from_fn(|_| Mutex::new(SpaceTree::default()));
    on_threads(|space| {
        *built[space.index()].lock() = SpaceTree::bulk_load(entries(tokens, space));
    });
    built.map(Mutex::into_inner)
}

/// The point of `token` in `space`, the centre of its neighbour query: refused when the
/// token is undefined there, since it has no position to measure from.
pub fn query_origin(token: &Token, space: Space) -> Result<QPoint, StoreError> {
    token.data.point(space).ok_or(StoreError::UndefinedInSpace {
        token: token.id,
        space,
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

/// Each space's entries behind their own lock, held only to copy a view or to apply a write:
/// a query searches its view with no lock held, so writes never wait for one (module docs).
pub struct SpaceTrees {
    inner: Arc<Inner>,
}

/// What `SpaceTrees` shares with its background upkeep.
///
/// Lock order: the store's writer mutex (writes come from `Follower::follow`), then a
/// space's upkeep mutex, then its `RwLock`. A writer never waits for an upkeep mutex (it
/// only tries it), so a write never waits for a build, however slow the background thread.
struct Inner {
    spaces: [RwLock<Forest>; SPACE_COUNT],
    /// Held by whoever runs upkeep on a space: one at a time per space.
    upkeep: [Mutex<()>; SPACE_COUNT],
    policy: BatchPolicy,
    /// Set while a background upkeep thread runs (at most one per `SpaceTrees`).
    background: AtomicBool,
    /// Set while an urgent upkeep thread runs (at most one per `SpaceTrees`).
    urgent: AtomicBool,
}

/// Who runs upkeep off the writer's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crew {
    /// Whatever is due, at a lower CPU priority than the threads that answer calls.
    Background,
    /// Only upkeep past a hard bound (a space mostly dead after a mass delete, or too much
    /// unbuilt after an import), at normal priority: the writer used to run it itself and
    /// held every write up for the length of a rebuild (up to a second in a 1M expiry).
    Urgent,
}

impl Crew {
    /// The flag set while this crew's thread runs.
    fn running(self, inner: &Inner) -> &AtomicBool {
        match self {
            Crew::Background => &inner.background,
            Crew::Urgent => &inner.urgent,
        }
    }

    /// Whether this crew takes on upkeep that is due, `forced` or not.
    fn takes(self, forced: bool) -> bool {
        self == Crew::Background || forced
    }
}

impl Default for SpaceTrees {
    fn default() -> Self {
        SpaceTrees::with_policy(BatchPolicy::default())
    }
}

impl Inner {
    fn slot(&self, space: Space) -> &RwLock<Forest> {
        &self.spaces[space.index()]
    }

    /// Runs `upkeep` on `space`; unless `wait`, not at all when another upkeep of it runs
    /// (which will find what is due when it is done).
    fn upkeep(&self, space: Space, upkeep: Upkeep, wait: bool) {
        let lock = &self.upkeep[space.index()];
        let _running = if wait {
            lock.lock()
        } else {
            match lock.try_lock() {
                Some(guard) => guard,
                None => return,
            }
        };
        forest::run_upkeep(self.slot(space), upkeep, &self.policy);
    }

    /// The upkeep `crew` takes on that is due now, by space.
    fn due_for(&self, crew: Crew) -> Vec<(Space, Upkeep)> {
        Space::ALL
            .into_iter()
            .filter_map(|space| {
                let (upkeep, forced) = self.slot(space).read().upkeep_due(&self.policy)?;
                crew.takes(forced).then_some((space, upkeep))
            })
            .collect()
    }

    /// Upkeep of every space that is due for `crew`, until none is.
    fn upkeep_all_due(&self, crew: Crew) {
        loop {
            let due = self.due_for(crew);
            if due.is_empty() {
                return;
            }
            for (space, upkeep) in due {
                self.upkeep(space, upkeep, true);
            }
        }
    }
}

/// Starts an upkeep thread of `crew` for `inner` unless one runs; it ends once nothing is due
/// for it.
fn start_upkeep(inner: &Arc<Inner>, crew: Crew) {
    if crew.running(inner).swap(true, Ordering::AcqRel) {
        return;
    }
    let worker = Arc::clone(inner);
    let name = match crew {
        Crew::Background => "index-upkeep",
        Crew::Urgent => "index-urgent",
    };
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if crew == Crew::Background {
                lower_thread_priority();
            }
            let running = crew.running(&worker);
            // Cleared if a build panics, so that a later write starts a new thread.
            let _running = ClearIfPanicking(running);
            loop {
                worker.upkeep_all_due(crew);
                running.store(false, Ordering::Release);
                // A write may have found the flag still set just before it was cleared.
                let due = !worker.due_for(crew).is_empty();
                if !due || running.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        });
    if spawned.is_err() {
        // No thread: the next write past a bound starts one again.
        crew.running(inner).store(false, Ordering::Release);
    }
}

/// Clears a flag when dropped during a panic.
struct ClearIfPanicking<'a>(&'a AtomicBool);

impl Drop for ClearIfPanicking<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(false, Ordering::Release);
        }
    }
}

/// Lowers the calling thread's CPU priority (nice +10): upkeep yields to calls.
fn lower_thread_priority() {
    // SAFETY: setpriority with PRIO_PROCESS and 0 changes only the calling thread on Linux.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

impl SpaceTrees {
    /// Empty trees that buffer and build by `policy` (tests lower its thresholds).
    pub fn with_policy(policy: BatchPolicy) -> SpaceTrees {
        assert!(policy.merge_ratio >= 1, "merge_ratio keeps trees ordered");
        assert!(policy.tail_max >= 1, "the tail holds at least one entry");
        SpaceTrees {
            inner: Arc::new(Inner {
                spaces: std::array::from_fn(|_| RwLock::new(Forest::default())),
                upkeep: std::array::from_fn(|_| Mutex::new(())),
                policy,
                background: AtomicBool::new(false),
                urgent: AtomicBool::new(false),
            }),
        }
    }

    /// Trees bulk-loaded from `tokens`, the spaces built in parallel on the available cores.
    pub fn bulk_built(tokens: &[Token]) -> SpaceTrees {
        let trees = SpaceTrees::default();
        trees.replace_all(tokens);
        trees
    }

    /// Replaces every space's entries with one tree bulk-loaded from `tokens`.
    pub fn replace_all(&self, tokens: &[Token]) {
        for (space, built) in Space::ALL.into_iter().zip(build_in_parallel(tokens)) {
            let mut forest = self.inner.slot(space).write();
            let generation = forest.next_generation();
            *forest = Forest::of(built, generation);
        }
    }

    /// Applies `write` to `space`, then the upkeep it made due: in the background, and past a
    /// hard bound by the urgent crew at once (by the writer itself when there are no upkeep
    /// threads, as in tests).
    fn write(&self, space: Space, write: impl FnOnce(&mut Forest, &BatchPolicy)) {
        let policy = &self.inner.policy;
        let due = {
            let mut forest = self.inner.slot(space).write();
            write(&mut forest, policy);
            forest.upkeep_due(policy)
        };
        if let Some((upkeep, forced)) = due {
            match (forced, policy.background) {
                (true, true) => start_upkeep(&self.inner, Crew::Urgent),
                // Past a hard bound: build now, unless an upkeep of this space already runs.
                (true, false) => self.inner.upkeep(space, upkeep, false),
                (false, _) => {}
            }
            if policy.background {
                start_upkeep(&self.inner, Crew::Background);
            }
        }
    }

    /// Indexes new tokens: per space, a batch of at least `bulk_min` entries is kept whole
    /// for upkeep to build into a tree; fewer go into the tail one by one.
    pub fn insert(&self, tokens: &[Token]) {
        for space in Space::ALL {
            let batch = entries(tokens, space);
            if !batch.is_empty() {
                self.write(space, |forest, policy| forest.insert_batch(batch, policy));
            }
        }
    }

    /// Unindexes a token that is gone.
    pub fn delete(&self, token: &Token) {
        self.delete_all(std::slice::from_ref(token));
    }

    /// Unindexes tokens that are gone: one write per space for all of them.
    pub fn delete_all(&self, tokens: &[Token]) {
        for space in Space::ALL {
            let gone = entries(tokens, space);
            if !gone.is_empty() {
                self.write(space, |forest, _| forest.delete_all(&gone));
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
            self.write(space, |forest, policy| {
                if let Some(e) = old {
                    forest.remove(&e);
                }
                if let Some(e) = new {
                    forest.insert(e, policy);
                }
            });
        }
    }

    /// Empties every space; each switches from all to nothing at once.
    pub fn clear(&self) {
        for slot in &self.inner.spaces {
            let empty = {
                let mut forest = slot.write();
                let generation = forest.next_generation();
                // Swapped out under the lock, dropped after it: freeing a million entries
                // holds up no query.
                std::mem::replace(&mut *forest, Forest::of(SpaceTree::default(), generation))
            };
            drop(empty);
        }
    }

    /// Number of tokens indexed in `space`.
    pub fn len(&self, space: Space) -> usize {
        self.inner.slot(space).read().len()
    }

    /// True when no space indexes anything.
    pub fn is_empty(&self) -> bool {
        Space::ALL.iter().all(|s| self.len(*s) == 0)
    }

    /// Number of built trees that index `space` (a diagnostic for tests and benches).
    pub fn tree_count(&self, space: Space) -> usize {
        self.inner.slot(space).read().tree_count()
    }

    /// Rebuilds each space into one tree without dead entries (spaces on the available
    /// cores): after a streamed import, queries then visit one tree again. Queries and writes
    /// go on meanwhile; the rebuild swaps in when done.
    pub fn compact(&self) {
        on_threads(|space| self.inner.upkeep(space, Upkeep::Rebuild, true));
    }

    /// Runs every upkeep that is due now, on this thread (tests and benches use it to reach
    /// a settled state; servers leave it to the background).
    pub fn settle(&self) {
        self.inner.upkeep_all_due(Crew::Background);
    }

    /// The space as it is now, for a query.
    fn view(&self, space: Space) -> View {
        self.inner.slot(space).read().view()
    }

    /// Calls `visit` with every live entry within `radius` of `centre` (inclusive) in `view`
    /// and its exact distance.
    fn for_each_within(
        view: &View,
        space: Space,
        centre: [f64; 3],
        radius: f64,
        mut visit: impl FnMut(&Entry, f64),
    ) {
        let scale = space.scale();
        let ball = WithinBall::new(space, centre, radius);
        let mut check = |e: &Entry| {
            // The f32 coordinates hold the quantised integers exactly.
            let d = grid::distance_quantised(e.geom().map(f64::from), scale, centre);
            if d <= radius {
                visit(e, d);
            }
        };
        for tree in &view.trees {
            for e in tree.candidates(&ball) {
                if ball.may_hold(e) && !view.is_dead(e) {
                    check(e);
                }
            }
        }
        for e in view.loose_entries_where(|e| ball.may_hold(e)) {
            check(e);
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
        if k == 0 {
            return Vec::new();
        }
        let view = self.view(space);
        let scale = space.scale();
        let exact = |e: &Entry| grid::distance_quantised(e.geom().map(f64::from), scale, centre);
        // Candidates: every live loose entry, and from each tree the first k live ones in
        // rstar's (approximate, f32) nearest order. The k-th best exact distance among them
        // bounds the exact k-th distance (they are k distinct tokens), so the exact answer,
        // ties included, lies within that radius.
        let query = centre.map(|c| (c * scale) as f32);
        let mut candidates = TopHits::new(k);
        let offer = |candidates: &mut TopHits, e: &Entry| {
            if Some(e.data.id) == exclude {
                return;
            }
            // Once k are kept, an entry that the ball test (no division, no root) puts beyond
            // the k-th best could not enter: skip its exact distance.
            if let Some(worst) = candidates.worst_if_full() {
                if !WithinBall::new(space, centre, worst).may_hold(e) {
                    return;
                }
            }
            candidates.offer(Hit {
                id: e.data.id,
                distance: exact(e),
            });
        };
        view.loose_entries().for_each(|e| offer(&mut candidates, e));
        for (walked, tree) in view.trees.iter().enumerate() {
            // The trees come largest first: once the loose entries and the largest tree (at
            // least) gave k candidates, the bound is close enough, and the ball query below
            // searches every tree anyway (after a burst of writes a space has up to 9 trees,
            // and a nearest walk per tree cost more than the bound saved).
            if walked > 0 && candidates.worst_if_full().is_some() {
                break;
            }
            // Whole buckets, nearest box first, until they gave k live entries or their boxes
            // lie beyond the k-th best so far (then none of theirs could lower the bound; the
            // f32 box distance gets a generous slack, though only speed depends on it).
            let mut live = 0;
            for (run, box_2) in tree.nearest_runs(query) {
                if let Some(worst) = candidates.worst_if_full() {
                    let reach = worst * scale * (1.0 + 1e-4) + 1.0;
                    if f64::from(box_2) > reach * reach {
                        break;
                    }
                }
                for e in run {
                    if !view.is_dead(e) && Some(e.data.id) != exclude {
                        offer(&mut candidates, e);
                        live += 1;
                    }
                }
                if live >= k {
                    break;
                }
            }
        }
        let candidates = candidates.into_sorted();
        let found_all = candidates.len() < k;
        let Some(mut bound) = candidates.last().map(|hit| hit.distance) else {
            return Vec::new();
        };
        if found_all {
            // Fewer than k live tokens exist: every one is a candidate already.
            return candidates
                .into_iter()
                .filter(|hit| max_distance.is_none_or(|max| hit.distance <= max))
                .collect();
        }
        if let Some(max) = max_distance {
            bound = bound.min(max);
        }
        let mut top = TopHits::new(k);
        Self::for_each_within(&view, space, centre, bound, |e, d| {
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
        let view = self.view(space);
        let mut top = TopHits::new(limit);
        let mut total = 0;
        Self::for_each_within(&view, space, centre, radius, |e, d| {
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
        let view = self.view(space);
        let mut count = 0;
        Self::for_each_within(&view, space, centre, radius, |_, _| count += 1);
        count
    }

    /// The summed field influence at `centre` of tokens within `radius` and their own field
    /// radius.
    pub fn influence(&self, space: Space, centre: [f64; 3], radius: f64) -> InfluenceSum {
        let view = self.view(space);
        let mut result = InfluenceSum {
            sum: 0.0,
            contributors: 0,
        };
        // No token reaches farther than the largest storable field radius.
        let reach = radius.min(MAX_FIELD_RADIUS);
        Self::for_each_within(&view, space, centre, reach, |e, d| {
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
    /// A command never creates, updates or deletes one token twice, so its removals and its
    /// creations are gathered and applied once per space.
    fn follow(&self, committed: &Committed, wanted: impl Fn(u32) -> bool) {
        let mut created = Vec::new();
        let mut removed = Vec::new();
        for effect in &committed.effects {
            match effect {
                Effect::Created(token) if wanted(token.id.get()) => created.push(*token),
                Effect::Updated { before, after } if wanted(after.id.get()) => {
                    self.update(before, after)
                }
                Effect::Deleted(token) | Effect::Expired(token) if wanted(token.id.get()) => {
                    removed.push(*token)
                }
                Effect::Cleared { .. } => self.clear(),
                _ => {}
            }
        }
        if !removed.is_empty() {
            self.delete_all(&removed);
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

    /// Rebuilds every space into one tree (blocking; after a streamed import). The state it
    /// represents is unchanged.
    pub fn compact(&self) {
        self.trees.compact();
        // A compaction frees the trees it replaced: hand that memory back to the system.
        super::trim::give_back_freed_memory();
    }

    /// Rebuilds every tree from the tokens in `tables` by bulk loading (recovery): each space
    /// switches to its new tree at once.
    pub fn rebuild(&self, tables: &TokenTables) {
        self.trees.replace_all(&tables.all_tokens());
    }
}

impl Follower for SpatialIndex {
    fn follow(&self, committed: &Committed) {
        self.trees.follow(committed, |_| true);
    }
}
