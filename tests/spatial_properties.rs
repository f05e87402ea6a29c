//! Property tests: every spatial query (k nearest, range, density count, influence) on the
//! default grid and on a user grid equals a brute-force scan over the same tokens, after random
//! creates, batches, moves, undefines, deletes, creations of deleted ids again, clears and
//! membership changes, with coordinates drawn from a tiny set so that piles of identical points
//! and distance ties are common.
//! Besides the default index, trees with lowered batch thresholds follow the same commits, so
//! that small batches build several trees per space and merge them (the forest of
//! `SpaceTrees`), and must answer exactly the same.

use std::sync::{Arc, Mutex};

use neurograph::model::grid::{self, GridConfig, Hit};
use neurograph::model::{
    IdRequest, Space, Token, TokenDraft, TokenId, TokenInput, TokenPatch, UpdatePath,
};
use neurograph::store::grids::GridCommand;
use neurograph::store::spatial::BatchPolicy;
use neurograph::store::{
    Command, Committed, Components, Effect, Follower, Grids, SpaceTrees, SpatialIndex, Store,
};
use proptest::prelude::*;

/// Spaces the tests use: scales 100 and 10000 (the maths differ only by the scale).
const SPACES: [Space; 2] = [Space::L1Physical, Space::L2Sensory];

/// A coordinate from a small set, in quantised steps, so that ties and piles are frequent.
fn coordinate(space: Space) -> impl Strategy<Value = f32> {
    (-4i32..=4).prop_map(move |q| (q as f64 / space.scale()) as f32)
}

fn point(space: Space) -> impl Strategy<Value = Option<[f32; 3]>> {
    prop_oneof![
        1 => Just(None),
        4 => (coordinate(space), coordinate(space), coordinate(space)).prop_map(|(x, y, z)| Some([x, y, z])),
    ]
}

fn input() -> impl Strategy<Value = TokenInput> {
    let radius_steps = prop_oneof![0u8..=8, 0u8..=255];
    (point(SPACES[0]), point(SPACES[1]), radius_steps, 0u8..=255).prop_map(|(p1, p2, r, s)| {
        let mut input = TokenInput {
            weight: 0.5,
            field_radius: (f64::from(r) / 100.0) as f32,
            field_strength: (f64::from(s) / 255.0) as f32,
            ..TokenInput::default()
        };
        input.points[SPACES[0].index()] = p1;
        input.points[SPACES[1].index()] = p2;
        input
    })
}

/// One write the test applies; indexes pick among live tokens or grids modulo their count.
#[derive(Clone, Debug)]
enum Op {
    Create(TokenInput),
    Batch(Vec<TokenInput>),
    Update(usize, TokenInput),
    Delete(usize),
    /// Creates a deleted token again under its id: as it was, or with new values.
    Recreate(usize, Option<TokenInput>),
    Clear,
    Add(usize),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => input().prop_map(Op::Create),
        2 => prop::collection::vec(input(), 1..40).prop_map(Op::Batch),
        4 => (any::<usize>(), input()).prop_map(|(i, t)| Op::Update(i, t)),
        2 => any::<usize>().prop_map(Op::Delete),
        2 => (any::<usize>(), prop::option::of(input())).prop_map(|(i, t)| Op::Recreate(i, t)),
        1 => Just(Op::Clear),
        4 => any::<usize>().prop_map(Op::Add),
        2 => any::<usize>().prop_map(Op::Remove),
    ]
}

/// Trees with their own batch policy following every token commit, as the default index does.
struct Following {
    trees: SpaceTrees,
}

impl Following {
    /// Policies with tiny thresholds, so that every few writes cross a tail, a batch, a
    /// build, a tombstone and a rebuild: one whose upkeep the writer runs when its bounds
    /// force it (a binary counter, ratio 1), and one whose upkeep runs on its own background
    /// thread, racing the queries (ratio 3).
    fn small_batches() -> Vec<Arc<Following>> {
        [tiny_policy(1, false), tiny_policy(3, true)]
            .map(|policy| {
                Arc::new(Following {
                    trees: SpaceTrees::with_policy(policy),
                })
            })
            .to_vec()
    }
}

/// Thresholds of a few entries.
fn tiny_policy(merge_ratio: usize, background: bool) -> BatchPolicy {
    BatchPolicy {
        bulk_min: 2,
        tail_max: 2,
        merge_ratio,
        max_trees: 3,
        max_unbuilt: 6,
        max_dead: 2,
        background,
    }
}

impl Follower for Following {
    fn follow(&self, committed: &Committed) {
        let mut created = Vec::new();
        for effect in &committed.effects {
            match effect {
                Effect::Created(token) => created.push(*token),
                Effect::Updated { before, after } => self.trees.update(before, after),
                Effect::Deleted(token) => self.trees.delete(token),
                Effect::Cleared { .. } => self.trees.clear(),
                _ => {}
            }
        }
        if !created.is_empty() {
            self.trees.insert(&created);
        }
    }
}

/// A store with the default grid's index and the user grids following it, and one user grid;
/// trees with small-batch policies follow it too.
struct World {
    store: Store,
    index: Arc<SpatialIndex>,
    grids: Arc<Grids>,
    following: Vec<Arc<Following>>,
    /// Tokens deleted so far, as they were.
    deleted: Mutex<Vec<Token>>,
}

impl World {
    fn new() -> World {
        let index = Arc::new(SpatialIndex::default());
        let grids = Arc::new(Grids::new(1_000_000));
        let following = Following::small_batches();
        let mut followers: Vec<Arc<dyn Follower>> = vec![index.clone()];
        followers.extend(following.iter().map(|f| f.clone() as Arc<dyn Follower>));
        let store = Store::new(Components {
            grids: grids.clone(),
            followers,
            ..Components::default()
        });
        store
            .apply(Command::Grid(GridCommand::Create {
                config: GridConfig::default(),
            }))
            .expect("create grid 1");
        World {
            store,
            index,
            grids,
            following,
            deleted: Mutex::default(),
        }
    }

    fn live(&self) -> Vec<Token> {
        let mut tokens = self.store.tables().all_tokens();
        tokens.sort_by_key(|t| t.id.get());
        tokens
    }

    fn nth_live(&self, i: usize) -> Option<TokenId> {
        let live = self.live();
        (!live.is_empty()).then(|| live[i % live.len()].id)
    }

    fn apply(&self, op: &Op) {
        let at = 1_700_000_000;
        let command = match op {
            Op::Create(input) => Command::CreateToken {
                draft: input.to_draft().expect("valid input"),
                at,
            },
            Op::Batch(inputs) => Command::BatchCreate {
                drafts: inputs
                    .iter()
                    .map(|i| i.to_draft().expect("valid"))
                    .collect(),
                at,
            },
            Op::Update(i, input) => {
                let Some(id) = self.nth_live(*i) else { return };
                Command::UpdateToken {
                    id,
                    patch: TokenPatch::new(input, UpdatePath::all()).expect("valid patch"),
                    at,
                }
            }
            Op::Delete(i) => {
                let Some(id) = self.nth_live(*i) else { return };
                let token = self.store.tables().get(id).expect("live");
                self.deleted.lock().expect("not poisoned").push(token);
                Command::DeleteToken { id }
            }
            Op::Recreate(i, input) => {
                let deleted = self.deleted.lock().expect("not poisoned").clone();
                let Some(old) = (!deleted.is_empty()).then(|| deleted[i % deleted.len()]) else {
                    return;
                };
                if self.store.tables().get(old.id).is_some() {
                    return;
                }
                let data = match input {
                    Some(input) => input.to_draft().expect("valid input").data,
                    None => old.data,
                };
                Command::CreateToken {
                    draft: TokenDraft {
                        id: IdRequest::Explicit(old.id),
                        data,
                    },
                    at,
                }
            }
            Op::Clear => Command::ClearTokens,
            Op::Add(i) => {
                let Some(token) = self.nth_live(*i) else {
                    return;
                };
                Command::Grid(GridCommand::AddMember { grid: 1, token })
            }
            Op::Remove(i) => {
                let grid = self.grids.get(1).expect("grid 1");
                let members: Vec<Token> = self
                    .live()
                    .into_iter()
                    .filter(|t| grid.is_member(t.id.get()))
                    .collect();
                if members.is_empty() {
                    return;
                }
                let token = members[i % members.len()].id;
                Command::Grid(GridCommand::RemoveMember { grid: 1, token })
            }
        };
        self.store.apply(command).expect("the op is valid");
    }

    /// The live tokens that are members of grid 1.
    fn members(&self) -> Vec<Token> {
        let grid = self.grids.get(1).expect("grid 1");
        self.live()
            .into_iter()
            .filter(|t| grid.is_member(t.id.get()))
            .collect()
    }
}

/// Every token defined in `space` with its exact distance from `centre`, in result order.
fn brute_force(tokens: &[Token], space: Space, centre: [f64; 3]) -> Vec<(Hit, Token)> {
    let mut hits: Vec<(Hit, Token)> = tokens
        .iter()
        .filter_map(|t| {
            t.data.point(space).map(|p| {
                (
                    Hit {
                        id: t.id.get(),
                        distance: grid::distance(p, space, centre),
                    },
                    *t,
                )
            })
        })
        .collect();
    hits.sort_by(|a, b| grid::hit_order(&a.0, &b.0));
    hits
}

/// The stored field radius and strength, recovered from the f32 forms without the store's own
/// f64 accessors (so that this brute force does not share their arithmetic).
fn field_of(token: &Token) -> (f64, f64) {
    let radius = (f64::from(token.data.field_radius()) * 100.0).round() / 100.0;
    let strength = (f64::from(token.data.field_strength()) * 255.0).round() / 255.0;
    (radius, strength)
}

/// Checks every query around `centre_q` (quantised steps, shifted by `offset` of a step: 0
/// puts the centre on the lattice, where distances equal radii exactly).
fn check_queries(
    trees: &SpaceTrees,
    tokens: &[Token],
    centre_q: [i32; 3],
    offset: f64,
    radius_steps: u32,
    k: usize,
    limit: usize,
) {
    for space in SPACES {
        let centre = centre_q.map(|q| (f64::from(q) + offset) / space.scale());
        let radius = f64::from(radius_steps) / space.scale();
        let all = brute_force(tokens, space, centre);
        assert_eq!(trees.len(space), all.len(), "tree size in {space:?}");

        let in_range: Vec<Hit> = all
            .iter()
            .map(|(h, _)| *h)
            .filter(|h| h.distance <= radius)
            .collect();
        let range = trees.within(space, centre, radius, limit);
        assert_eq!(
            range.total,
            in_range.len() as u64,
            "range total in {space:?}"
        );
        assert_eq!(
            range.hits,
            in_range.iter().copied().take(limit).collect::<Vec<_>>()
        );
        assert_eq!(
            trees.count_within(space, centre, radius),
            in_range.len() as u64
        );

        let mut sum = 0.0;
        let mut contributors = 0;
        for (hit, token) in &all {
            let (field_radius, strength) = field_of(token);
            if field_radius > 0.0 && hit.distance <= radius.min(field_radius) {
                sum += strength * (1.0 - hit.distance / field_radius);
                contributors += 1;
            }
        }
        let influence = trees.influence(space, centre, radius);
        assert_eq!(influence.contributors, contributors);
        assert!(
            (influence.sum - sum).abs() < 1e-9,
            "{} vs {sum}",
            influence.sum
        );

        // k nearest around a stored token, itself excluded, with and without max_distance.
        if let Some((_, origin)) = all.first() {
            let p = origin.data.point(space).expect("defined").to_f64(space);
            let around = brute_force(tokens, space, p);
            let others = around
                .iter()
                .map(|(h, _)| *h)
                .filter(|h| h.id != origin.id.get());
            let expected: Vec<Hit> = others.clone().take(k).collect();
            assert_eq!(
                trees.nearest(space, p, k, None, Some(origin.id.get())),
                expected
            );
            let bounded: Vec<Hit> = others.filter(|h| h.distance <= radius).take(k).collect();
            assert_eq!(
                trees.nearest(space, p, k, Some(radius), Some(origin.id.get())),
                bounded
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn queries_equal_brute_force_after_random_writes(
        ops in prop::collection::vec(op(), 1..60),
        centre in (-5i32..=5, -5i32..=5, -5i32..=5),
        offset in prop_oneof![Just(0.0), Just(0.25)],
        radius_steps in 1u32..=8,
        k in 1usize..=12,
        limit in 1usize..=30,
    ) {
        let world = World::new();
        let centre = [centre.0, centre.1, centre.2];
        apply_and_check(&world, &ops, centre, offset, radius_steps, k, limit);
        let user = world.grids.get(1).expect("grid 1");
        check_queries(user.trees(), &world.members(), centre, offset, radius_steps, k, limit);
    }

    /// Mostly batches (creates, moves and deletes between them), so that the small-batch
    /// trees build and merge many trees per space, and big batches reach the default index's
    /// own bulk threshold.
    #[test]
    fn batched_trees_equal_brute_force(
        ops in prop::collection::vec(batch_heavy_op(), 1..40),
        centre in (-5i32..=5, -5i32..=5, -5i32..=5),
        offset in prop_oneof![Just(0.0), Just(0.25)],
        radius_steps in 1u32..=8,
        k in 1usize..=12,
        limit in 1usize..=30,
    ) {
        let world = World::new();
        let centre = [centre.0, centre.1, centre.2];
        apply_and_check(&world, &ops, centre, offset, radius_steps, k, limit);
    }
}

/// Applies `ops`, then checks the default index and every following index against brute
/// force over the live tokens.
fn apply_and_check(
    world: &World,
    ops: &[Op],
    centre: [i32; 3],
    offset: f64,
    radius_steps: u32,
    k: usize,
    limit: usize,
) {
    for op in ops {
        world.apply(op);
    }
    let live = world.live();
    check_queries(
        world.index.trees(),
        &live,
        centre,
        offset,
        radius_steps,
        k,
        limit,
    );
    for following in &world.following {
        // As the writes left them, then settled (every due build and rebuild done).
        for settled in [false, true] {
            if settled {
                following.trees.settle();
            }
            check_queries(
                &following.trees,
                &live,
                centre,
                offset,
                radius_steps,
                k,
                limit,
            );
        }
    }
}

fn batch_heavy_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(input(), 1..24).prop_map(Op::Batch),
        1 => prop::collection::vec(input(), 256..400).prop_map(Op::Batch),
        1 => input().prop_map(Op::Create),
        2 => (any::<usize>(), input()).prop_map(|(i, t)| Op::Update(i, t)),
        2 => any::<usize>().prop_map(Op::Delete),
        2 => (any::<usize>(), prop::option::of(input())).prop_map(|(i, t)| Op::Recreate(i, t)),
        1 => Just(Op::Clear),
    ]
}

#[test]
fn batches_build_several_trees_and_merge_them() {
    let world = World::new();
    let mut input = TokenInput {
        weight: 0.5,
        ..TokenInput::default()
    };
    input.points[Space::L1Physical.index()] = Some([0.01, 0.02, -0.03]);
    let binary = &world.following[0].trees;
    // Batches of 4 entries wait unbuilt until upkeep; settled, the ratio-1 trees hold the
    // binary digits of the number of batches.
    for batch in 1..=7usize {
        world.apply(&Op::Batch(vec![input.clone(); 4]));
        assert_eq!(binary.len(Space::L1Physical), 4 * batch);
        binary.settle();
        assert_eq!(
            binary.tree_count(Space::L1Physical),
            batch.count_ones() as usize
        );
    }
    // A lone create goes into the tail, not into a tree.
    world.apply(&Op::Create(input.clone()));
    assert_eq!(binary.tree_count(Space::L1Physical), 3);
    assert_eq!(binary.len(Space::L1Physical), 29);
    // Deletes: from the tail directly, from trees as tombstones.
    for _ in 0..5 {
        world.apply(&Op::Delete(0));
    }
    assert_eq!(binary.len(Space::L1Physical), 24);
    let live = world.live();
    check_queries(binary, &live, [1, 2, -3], 0.0, 2, 9, 30);
    check_queries(binary, &live, [0, 0, 0], 0.25, 5, 30, 5);
    assert_eq!(binary.tree_count(Space::L2Sensory), 0);
    // Compaction (after a streamed import) leaves one tree answering the same.
    binary.compact();
    assert_eq!(binary.tree_count(Space::L1Physical), 1);
    assert_eq!(binary.len(Space::L1Physical), 24);
    check_queries(binary, &live, [1, 2, -3], 0.0, 2, 9, 30);
    check_queries(binary, &live, [0, 0, 0], 0.25, 5, 30, 5);
    // Deletes leave the tree all dead; the rebuild they make due drops it.
    for _ in 0..24 {
        world.apply(&Op::Delete(7));
    }
    assert_eq!(binary.len(Space::L1Physical), 0);
    binary.settle();
    assert_eq!(binary.tree_count(Space::L1Physical), 0);
    assert!(binary.is_empty());
}

#[test]
fn a_pile_of_identical_points_ties_to_the_smallest_ids() {
    let world = World::new();
    let mut input = TokenInput {
        weight: 0.5,
        field_radius: 1.0,
        field_strength: 1.0,
        ..TokenInput::default()
    };
    input.points[Space::L1Physical.index()] = Some([1.0, 1.0, 1.0]);
    for _ in 0..3 {
        world.apply(&Op::Batch(vec![input.clone(); 700]));
    }
    let tokens = world.live();
    let trees = world.index.trees();
    let centre = [1.0, 1.0, 1.0];
    let k = 10;
    let hits = trees.nearest(Space::L1Physical, centre, k, None, Some(tokens[0].id.get()));
    let expected: Vec<u32> = tokens[1..=k].iter().map(|t| t.id.get()).collect();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), expected);
    let range = trees.within(Space::L1Physical, centre, 0.5, 5);
    assert_eq!(range.total, 2100);
    assert_eq!(
        range.hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        tokens[..5].iter().map(|t| t.id.get()).collect::<Vec<_>>()
    );
    check_queries(trees, &tokens, [100, 100, 100], 0.0, 3, 7, 20);
}

#[test]
fn far_centres_and_huge_radii_lose_no_hit() {
    let world = World::new();
    let mut batch = Vec::new();
    for x in [-327.67f32, 0.0, 327.67] {
        for y in [-327.67f32, 327.67] {
            let mut input = TokenInput {
                weight: 0.5,
                ..TokenInput::default()
            };
            input.points[Space::L1Physical.index()] = Some([x, y, 0.0]);
            batch.push(input);
        }
    }
    world.apply(&Op::Batch(batch));
    let tokens = world.live();
    let trees = world.index.trees();
    for (centre, radius) in [
        ([1e7, 0.0, 0.0], 1e7 - 100.0),
        ([1e7, 0.0, 0.0], 1e7),
        ([-3e9, 5e8, 0.0], 3.1e9),
        ([1e30, 0.0, 0.0], 1e30),
        ([0.0, 0.0, 0.0], 1e300),
        ([327.67, 327.67, 0.0], 1e-9),
    ] {
        let expected: Vec<Hit> = brute_force(&tokens, Space::L1Physical, centre)
            .into_iter()
            .map(|(h, _)| h)
            .filter(|h| h.distance <= radius)
            .collect();
        let found = trees.within(Space::L1Physical, centre, radius, 100);
        assert_eq!(found.hits, expected, "centre {centre:?} radius {radius}");
    }
}

#[test]
fn a_rebuild_from_the_tables_answers_like_the_maintained_trees() {
    let world = World::new();
    let mut inputs = Vec::new();
    for i in 0..200 {
        let mut input = TokenInput {
            weight: 0.5,
            field_radius: (i % 7) as f32 / 100.0,
            field_strength: 1.0,
            ..TokenInput::default()
        };
        let q = |k: i32| ((i * k) % 9 - 4) as f32 / 100.0;
        input.points[Space::L1Physical.index()] = Some([q(1), q(3), q(5)]);
        inputs.push(input);
    }
    world.apply(&Op::Batch(inputs));
    world.apply(&Op::Delete(17));
    let rebuilt = SpatialIndex::default();
    rebuilt.rebuild(&world.store.tables());
    let tokens = world.live();
    check_queries(rebuilt.trees(), &tokens, [0, 1, -1], 0.0, 3, 5, 10);
    check_queries(world.index.trees(), &tokens, [0, 1, -1], 0.0, 3, 5, 10);
}
