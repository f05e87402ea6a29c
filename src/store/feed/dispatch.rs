//! Who gets which change record: the subscribers of the feed indexed by what they want, and
//! each one's bounded queue of events. The feed (`mod.rs`) owns one `Dispatcher` behind a
//! lock and calls it under the store's writer lock; the interest itself (`interest.rs`)
//! decides what one subscriber sees of one record.
//!
//! Why indexed: with one broadcast channel every commit woke every subscriber, which then
//! threw most events away; 10,000 idle watchers made each write wake 10,000 tasks. Here a
//! record reaches only the subscribers it may concern:
//! - subscribers with no filter and no region: one set, all of them;
//! - filtered subscribers without region: one set per (domain, entity_type) pair, a filter
//!   registered under each of the (1, 16 or 256) pairs it matches, so the record's pair names
//!   exactly the subscribers whose filter matches;
//! - subscribers with a region: per space one R-tree of their balls' bounding boxes (padded
//!   outward by a relative 1e-9, so that rounding in the box never loses a point the exact
//!   test keeps), searched at the record's points before and after in that space; every
//!   candidate is then checked exactly by `Interest::view`.
//!
//! Why a cell count in front of each tree: a point search of a tree of 1,250 small boxes costs
//! ~130–250 ns (measured with rstar 0.14, node sizes 6 to 64), so a create with all 8 spaces
//! defined paid ~1.3 µs more with 10,000 idle region watchers, more than the whole create
//! without watchers. Each space therefore also counts, in a 32³ grid over its coordinate range
//! (128 KiB, allocated with its first region), the boxes overlapping each cell, and keeps a
//! bit per cell (4 KiB) set while its count is not 0; the tree is searched only when the
//! point's cell has its bit set. The cell of a coordinate is a monotone
//! function of it, so a box holding a point always counts in the point's cell: the count only
//! skips searches that would find nothing. With the same watchers about 8 % of the cells count
//! any and the create costs ~0.1 µs more (`cargo bench --bench watch_regions`).
//!
//! A clear goes to everyone. Records are dispatched in order, so each subscriber's queue holds
//! its events in commit and effect order.
//!
//! Queues: a `VecDeque` behind a short lock plus a `Notify`, holding at most the lag limit
//! (an idle subscriber costs no event buffer at all). When an event finds the queue full the
//! subscriber is cut off: the events it holds are dropped, it is removed from the index at the
//! end of the commit, and its next `next()` answers `FeedLagged` at once, without draining
//! (it has to watch again anyway, and resuming from the last sequence it saw is exact). A feed
//! that goes away closes every queue; those drain first, then answer `FeedClosed`.
//!
//! Lock order: the dispatcher's lock (taken by the feed), then one queue's lock. A subscriber
//! takes its queue's lock alone, and the dispatcher's lock alone when it unregisters.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{RTree, RTreeObject};
use tokio::sync::Notify;

use super::change::{Change, ChangeRecord};
use super::interest::{Interest, Region};
use super::TokenEvent;
use crate::model::token::SPACE_COUNT;
use crate::model::{IdPair, Space, Token};

type Hasher = foldhash::fast::RandomState;

/// Names one subscriber for the lifetime of its feed (never reused).
pub(super) type SubscriberKey = u64;

/// A region subscriber in its space's tree: the bounding box of its ball.
type RegionEntry = GeomWithData<Rectangle<[f64; 3]>, SubscriberKey>;

/// Why a queue takes no more events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// An event found it full: the subscriber fell more than the lag limit behind.
    Lagged,
    /// The feed is gone.
    Closed,
}

#[derive(Debug, Default)]
struct QueueState {
    events: VecDeque<TokenEvent>,
    ended: Option<Ended>,
}

/// One subscriber's events, shared by the dispatcher (which pushes) and its subscription
/// (which pops).
#[derive(Debug, Default)]
pub(super) struct Queue {
    state: Mutex<QueueState>,
    /// Woken on every push and on the end; one permit is kept when nobody waits.
    ready: Notify,
}

impl Queue {
    /// Appends `event` unless that would make more than `capacity` unread; then the queue ends
    /// `Lagged` (dropping what it held) and `false` says so.
    fn push(&self, event: TokenEvent, capacity: usize) -> bool {
        let mut state = self.state.lock();
        if state.ended.is_some() {
            return false;
        }
        let kept = state.events.len() < capacity;
        if kept {
            state.events.push_back(event);
        } else {
            state.ended = Some(Ended::Lagged);
            state.events = VecDeque::new();
        }
        drop(state);
        self.ready.notify_one();
        kept
    }

    /// Ends the queue `Closed` (its events stay readable), unless it already ended.
    fn close(&self) {
        self.state.lock().ended.get_or_insert(Ended::Closed);
        self.ready.notify_one();
    }

    /// The next event, or why none will come; `Ok(None)` when the queue is empty for now.
    /// A lagged queue answers `Lagged` before anything it held.
    pub(super) fn pop(&self) -> Result<Option<TokenEvent>, Ended> {
        let mut state = self.state.lock();
        match (state.ended, state.events.pop_front()) {
            (Some(Ended::Lagged), _) => Err(Ended::Lagged),
            (_, Some(event)) => Ok(Some(event)),
            (Some(ended), None) => Err(ended),
            (None, None) => Ok(None),
        }
    }

    /// Resolves after the next push or end (at once if one happened since the last wait).
    pub(super) async fn wait(&self) {
        self.ready.notified().await;
    }
}

struct Subscriber {
    interest: Interest,
    queue: Arc<Queue>,
}

/// The subscribers of a feed, indexed by interest, and their queues.
pub(super) struct Dispatcher {
    /// Most unread events a queue holds.
    capacity: usize,
    next_key: SubscriberKey,
    subscribers: HashMap<SubscriberKey, Subscriber, Hasher>,
    /// No filter, no region: every record concerns them.
    everything: HashSet<SubscriberKey, Hasher>,
    /// Filtered, no region: by each pair their filter matches (`IdPair::index`).
    by_pair: Vec<HashSet<SubscriberKey, Hasher>>,
    /// With a region: by the region's space (`Space::index`).
    by_space: [SpaceRegions; SPACE_COUNT],
    /// Scratch: region candidates of one record.
    candidates: Vec<SubscriberKey>,
    /// Subscribers cut off or gone during the current commit, removed at its end.
    departed: Vec<SubscriberKey>,
}

impl Dispatcher {
    /// No subscribers; queues will hold at most `capacity` events (at least 1).
    pub(super) fn new(capacity: usize) -> Dispatcher {
        Dispatcher {
            capacity: capacity.max(1),
            next_key: 0,
            subscribers: HashMap::default(),
            everything: HashSet::default(),
            by_pair: (0..IdPair::COUNT).map(|_| HashSet::default()).collect(),
            by_space: Space::ALL.map(SpaceRegions::new),
            candidates: Vec::new(),
            departed: Vec::new(),
        }
    }

    /// Number of subscribers.
    pub(super) fn len(&self) -> usize {
        self.subscribers.len()
    }

    /// Adds a subscriber; its key (for `unregister`) and its queue.
    pub(super) fn register(&mut self, interest: Interest) -> (SubscriberKey, Arc<Queue>) {
        let key = self.next_key;
        self.next_key += 1;
        match interest.region {
            Some(region) => self.by_space[region.space.index()].insert(key, &region),
            None if interest.is_everything() => {
                self.everything.insert(key);
            }
            None => {
                for pair in pairs_matching(&interest) {
                    self.by_pair[pair].insert(key);
                }
            }
        }
        let queue = Arc::new(Queue::default());
        self.subscribers.insert(
            key,
            Subscriber {
                interest,
                queue: Arc::clone(&queue),
            },
        );
        (key, queue)
    }

    /// Removes a subscriber (nothing when it is gone already).
    pub(super) fn unregister(&mut self, key: SubscriberKey) {
        let Some(subscriber) = self.subscribers.remove(&key) else {
            return;
        };
        let interest = subscriber.interest;
        match interest.region {
            Some(region) => {
                self.by_space[region.space.index()].remove(key, &region);
            }
            None if interest.is_everything() => {
                self.everything.remove(&key);
            }
            None => {
                for pair in pairs_matching(&interest) {
                    self.by_pair[pair].remove(&key);
                }
            }
        }
    }

    /// Hands `record` to every subscriber it concerns, as each one's view of it.
    pub(super) fn dispatch(&mut self, record: &ChangeRecord) {
        let Dispatcher {
            capacity,
            subscribers,
            everything,
            by_pair,
            by_space,
            candidates,
            departed,
            ..
        } = self;
        let mut deliver = |key: &SubscriberKey, event: TokenEvent| {
            if let Some(subscriber) = subscribers.get(key) {
                if !subscriber.queue.push(event, *capacity) {
                    departed.push(*key);
                }
            }
        };
        let token = match record.change {
            Change::Cleared => {
                let cleared = Interest::everything()
                    .view(record)
                    .expect("a clear passes every interest");
                for key in subscribers.keys() {
                    deliver(key, cleared);
                }
                return;
            }
            Change::Created(token) | Change::Deleted(token) | Change::Expired(token) => token,
            Change::Updated { after, .. } => after,
        };
        // The event of a subscriber without region is the record's plain view.
        let plain = Interest::everything()
            .view(record)
            .expect("every record passes the empty interest");
        for key in everything.iter() {
            deliver(key, plain);
        }
        for key in by_pair[token.id.pair().index()].iter() {
            deliver(key, plain);
        }
        candidates.clear();
        let before = match record.change {
            Change::Updated { before, .. } => Some(before),
            _ => None,
        };
        for regions in by_space.iter().filter(|regions| !regions.is_empty()) {
            for point in points_in(regions.space, &token, before.as_ref()) {
                regions.candidates_at(point, candidates);
            }
        }
        if before.is_some() {
            // A ball holding both points was found twice.
            candidates.sort_unstable();
            candidates.dedup();
        }
        for key in candidates.iter() {
            let view = subscribers
                .get(key)
                .and_then(|subscriber| subscriber.interest.view(record));
            if let Some(event) = view {
                deliver(key, event);
            }
        }
    }

    /// Ends a commit: removes the subscribers cut off during it.
    pub(super) fn finish_commit(&mut self) {
        while let Some(key) = self.departed.pop() {
            self.unregister(key);
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        for subscriber in self.subscribers.values() {
            subscriber.queue.close();
        }
    }
}

/// Cells of a space's grid of box counts, per axis.
const CELLS_PER_AXIS: usize = 32;
/// Cells of a space's grid.
const CELL_COUNT: usize = CELLS_PER_AXIS * CELLS_PER_AXIS * CELLS_PER_AXIS;

/// The region subscribers of one space: a tree of their boxes and a grid counting, per cell,
/// the boxes that overlap it.
struct SpaceRegions {
    space: Space,
    tree: RTree<RegionEntry>,
    /// `CELLS_PER_AXIS`³ counts, x major; empty while the space has no region.
    cells: Vec<u32>,
    /// One bit per cell, set while its count is not 0: what a search reads (4 KiB, where
    /// the counts take 128 KiB and would miss the cache on every record).
    occupied: Vec<u64>,
    /// Cells per unit of the space's coordinates.
    cells_per_unit: f64,
}

impl SpaceRegions {
    fn new(space: Space) -> SpaceRegions {
        SpaceRegions {
            space,
            tree: RTree::new(),
            cells: Vec::new(),
            occupied: Vec::new(),
            cells_per_unit: CELLS_PER_AXIS as f64 / (2.0 * space.max_value()),
        }
    }

    fn is_empty(&self) -> bool {
        self.tree.size() == 0
    }

    fn insert(&mut self, key: SubscriberKey, region: &Region) {
        if self.cells.is_empty() {
            self.cells = vec![0; CELL_COUNT];
            self.occupied = vec![0; CELL_COUNT / 64];
        }
        let entry = entry(key, region);
        self.count_cells(&entry, |count| *count += 1);
        self.tree.insert(entry);
    }

    fn remove(&mut self, key: SubscriberKey, region: &Region) {
        let entry = entry(key, region);
        if self.tree.remove(&entry).is_some() {
            self.count_cells(&entry, |count| *count -= 1);
        }
        if self.is_empty() {
            self.cells = Vec::new();
            self.occupied = Vec::new();
        }
    }

    /// Appends the subscribers whose box holds `point` (f64 coordinates of the space).
    fn candidates_at(&self, point: [f64; 3], candidates: &mut Vec<SubscriberKey>) {
        let [x, y, z] = point.map(|c| self.cell_of(c));
        let cell = cell_index(x, y, z);
        // No cells at all while the space has no region.
        let occupied = self
            .occupied
            .get(cell / 64)
            .is_some_and(|word| word & (1 << (cell % 64)) != 0);
        if occupied {
            candidates.extend(self.tree.locate_all_at_point(point).map(|entry| entry.data));
        }
    }

    /// The cell along one axis of coordinate `c`: monotone in `c`, clamped to the grid.
    fn cell_of(&self, c: f64) -> usize {
        let cell = ((c + self.space.max_value()) * self.cells_per_unit).floor();
        // A float-to-int cast saturates (NaN gives 0); the min keeps the far edge inside.
        (cell as usize).min(CELLS_PER_AXIS - 1)
    }

    /// Applies `change` to the count of every cell the entry's box overlaps.
    fn count_cells(&mut self, entry: &RegionEntry, mut change: impl FnMut(&mut u32)) {
        let envelope = entry.geom().envelope();
        let (lower, upper) = (envelope.lower(), envelope.upper());
        let from = lower.map(|c| self.cell_of(c));
        let to = upper.map(|c| self.cell_of(c));
        for x in from[0]..=to[0] {
            for y in from[1]..=to[1] {
                for z in from[2]..=to[2] {
                    let cell = cell_index(x, y, z);
                    let count = &mut self.cells[cell];
                    change(count);
                    let bit = 1u64 << (cell % 64);
                    match *count {
                        0 => self.occupied[cell / 64] &= !bit,
                        _ => self.occupied[cell / 64] |= bit,
                    }
                }
            }
        }
    }
}

fn cell_index(x: usize, y: usize, z: usize) -> usize {
    (x * CELLS_PER_AXIS + y) * CELLS_PER_AXIS + z
}

/// The tree entry of a region subscriber: its ball's bounding box, padded outward.
fn entry(key: SubscriberKey, region: &Region) -> RegionEntry {
    let largest = region
        .centre
        .iter()
        .fold(region.radius, |m, c| m.max(c.abs()));
    let half = region.radius + largest * 1e-9;
    let lower = region.centre.map(|c| c - half);
    let upper = region.centre.map(|c| c + half);
    GeomWithData::new(Rectangle::from_corners(lower, upper), key)
}

/// Indexes of the pairs whose ids a filter (of an interest without region) matches.
fn pairs_matching(interest: &Interest) -> impl Iterator<Item = usize> + '_ {
    // A pair's index is its ids' top byte.
    (0..IdPair::COUNT).filter(|pair| interest.filter.matches((*pair as u32) << 24))
}

/// The points, as the trees hold them, of `after` and of `before` (when given and elsewhere)
/// in `space`.
fn points_in(
    space: Space,
    after: &Token,
    before: Option<&Token>,
) -> impl Iterator<Item = [f64; 3]> {
    let after_point = after.data.point(space);
    let before_point = before
        .and_then(|token| token.data.point(space))
        .filter(|point| Some(*point) != after_point);
    after_point
        .into_iter()
        .chain(before_point)
        .map(move |point| point.to_f64(space))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rstar::Envelope;

    use super::*;
    use crate::model::{QPoint, TokenData, TokenFilter, TokenId};

    fn created(raw: u32) -> ChangeRecord {
        ChangeRecord {
            sequence: 1,
            change: Change::Created(Token {
                id: TokenId::new(raw).expect("valid id"),
                data: TokenData::empty(7),
            }),
        }
    }

    #[test]
    fn filters_register_under_the_pairs_they_match() {
        let interest = |domain, entity_type| Interest {
            filter: TokenFilter::new(domain, entity_type).expect("valid"),
            region: None,
        };
        assert_eq!(pairs_matching(&interest(Some(2), Some(5))).count(), 1);
        assert_eq!(
            pairs_matching(&interest(Some(2), None)).collect::<Vec<_>>(),
            (0x20..0x30).collect::<Vec<_>>()
        );
        assert!(pairs_matching(&interest(None, Some(5))).all(|pair| pair & 0xF == 5));
        assert_eq!(pairs_matching(&interest(None, Some(5))).count(), 16);
    }

    #[test]
    fn unregistering_leaves_no_trace_in_the_index() {
        let mut dispatcher = Dispatcher::new(4);
        let region = Region {
            space: Space::L3Motor,
            centre: [1.0, 2.0, 3.0],
            radius: 0.5,
        };
        let keys: Vec<_> = [
            Interest::everything(),
            Interest {
                filter: TokenFilter::new(None, Some(1)).expect("valid"),
                region: None,
            },
            Interest {
                filter: TokenFilter::default(),
                region: Some(region),
            },
        ]
        .into_iter()
        .map(|interest| dispatcher.register(interest).0)
        .collect();
        assert_eq!(dispatcher.len(), 3);
        for key in keys {
            dispatcher.unregister(key);
        }
        assert_eq!(dispatcher.len(), 0);
        assert!(dispatcher.everything.is_empty());
        assert!(dispatcher.by_pair.iter().all(HashSet::is_empty));
        assert!(dispatcher
            .by_space
            .iter()
            .all(|regions| regions.is_empty() && regions.occupied.is_empty()));
    }

    #[test]
    fn a_full_queue_ends_lagged_and_leaves_at_the_end_of_the_commit() {
        let mut dispatcher = Dispatcher::new(2);
        let (_, queue) = dispatcher.register(Interest::everything());
        for raw in 1..=3 {
            dispatcher.dispatch(&created(raw));
        }
        assert_eq!(dispatcher.len(), 1, "still indexed within the commit");
        dispatcher.finish_commit();
        assert_eq!(dispatcher.len(), 0);
        assert_eq!(queue.pop(), Err(Ended::Lagged), "before what it held");
    }

    #[test]
    fn a_dropped_dispatcher_closes_queues_after_their_events() {
        let mut dispatcher = Dispatcher::new(2);
        let (_, queue) = dispatcher.register(Interest::everything());
        dispatcher.dispatch(&created(1));
        drop(dispatcher);
        assert_eq!(queue.pop().map(|e| e.map(|e| e.id())), Ok(Some(1)));
        assert_eq!(queue.pop(), Err(Ended::Closed));
    }

    /// A ball anywhere in `space` (edges included), small or larger than the space.
    fn arb_region_in(space: Space) -> impl Strategy<Value = Region> {
        let max = space.max_value();
        (
            prop::array::uniform3(-1.2f64..1.2),
            prop_oneof![0.0001f64..0.05, 0.05f64..2.5],
        )
            .prop_map(move |(centre, share)| Region {
                space,
                centre: centre.map(|c| c * max),
                radius: share * max,
            })
    }

    proptest! {
        #[test]
        fn the_cell_counts_never_hide_a_box_holding_the_point(
            (space, balls) in (0usize..8).prop_flat_map(|index| {
                let space = Space::from_index(index).expect("0..8");
                (Just(space), prop::collection::vec(arb_region_in(space), 1..60))
            }),
            points in prop::collection::vec(prop::array::uniform3(-32767i16..=32767), 1..60),
            removed in prop::collection::vec(any::<bool>(), 60),
        ) {
            let mut regions = SpaceRegions::new(space);
            for (key, ball) in balls.iter().enumerate() {
                regions.insert(key as SubscriberKey, ball);
            }
            for (key, ball) in balls.iter().enumerate() {
                if removed[key] {
                    regions.remove(key as SubscriberKey, ball);
                }
            }
            // Random points, and the corners of every box (exactly on its edge).
            let mut queries: Vec<[f64; 3]> =
                points.iter().map(|q| QPoint(*q).to_f64(space)).collect();
            for ball in &balls {
                let envelope = entry(0, ball).envelope();
                queries.push(envelope.lower());
                queries.push(envelope.upper());
            }
            for point in queries {
                let mut found = Vec::new();
                regions.candidates_at(point, &mut found);
                found.sort_unstable();
                let expected: Vec<SubscriberKey> = balls
                    .iter()
                    .enumerate()
                    .filter(|(key, ball)| {
                        !removed[*key] && entry(0, ball).envelope().contains_point(&point)
                    })
                    .map(|(key, _)| key as SubscriberKey)
                    .collect();
                prop_assert_eq!(found, expected, "{:?}", point);
            }
        }
    }

    #[test]
    fn a_box_holds_every_point_its_ball_holds() {
        // A ball far from the origin whose exact distance test accepts points on its edge.
        let region = Region {
            space: Space::L1Physical,
            centre: [300.0, -300.0, 0.0],
            radius: 0.5,
        };
        let envelope = entry(0, &region).envelope();
        for q in [[30050, -30000, 0], [29950, -30000, 0], [30000, -30050, 0]] {
            let token = Token {
                id: TokenId::new(1).expect("valid id"),
                data: {
                    let mut data = TokenData::empty(7);
                    data.set_point(Space::L1Physical, Some(QPoint(q)));
                    data
                },
            };
            assert!(region.contains(&token), "{q:?} on the edge");
            assert!(envelope.contains_point(&QPoint(q).to_f64(Space::L1Physical)));
        }
    }
}
