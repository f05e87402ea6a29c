//! In-process benchmarks of the token store at 1,000,000 tokens (no gRPC): get, create,
//! update, and ListTokens pages. Targets: get ≤ 200 ns, create ≤ 1 µs, page of 100 ≤ 50 µs.
//!
//! Every token has all eight spaces defined, with deterministic pseudo-random coordinates, so
//! runs are comparable. `cargo bench --bench store`; figures go in the README.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use neurograph::model::{Space, TokenFilter, TokenId, TokenInput, TokenPatch, UpdatePath};
use neurograph::store::{Command, Outcome, Store};

mod support;

use support::{draft, preloaded_id, XorShift, AT, CHUNK};

/// Tokens preloaded before any measurement.
const PRELOAD: usize = 1_000_000;
/// Tokens preloaded when run as a test (`cargo test --benches`: each bench once, unoptimised).
const PRELOAD_AS_TEST: usize = 10_000;
/// A store holding `tokens` tokens spread over all 256 pairs, at the ids `preloaded_id` gives.
fn preloaded(rng: &mut XorShift, tokens: usize) -> Store {
    let store = Store::default();
    let started = Instant::now();
    for chunk in 0..tokens / CHUNK {
        let pair = chunk % 256;
        let drafts = (0..CHUNK).map(|_| draft(rng, pair)).collect();
        let committed = store
            .apply(Command::BatchCreate { drafts, at: AT })
            .expect("preload fits the id space");
        let Outcome::Batch(tokens) = committed.outcome else {
            panic!("a batch answers its tokens");
        };
        for (offset, token) in tokens.iter().enumerate() {
            assert_eq!(token.id, preloaded_id(chunk * CHUNK + offset));
        }
    }
    eprintln!(
        "preloaded {} tokens in {:.2?}",
        store.tables().len(),
        started.elapsed()
    );
    store
}

fn created_id(outcome: &Outcome) -> TokenId {
    match outcome {
        Outcome::Created(token) => token.id,
        other => panic!("a create answers Created, got {other:?}"),
    }
}

fn store_benches(c: &mut Criterion) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    // cargo passes `--bench` only to a real benchmark run.
    let tokens = if std::env::args().any(|a| a == "--bench") {
        PRELOAD
    } else {
        PRELOAD_AS_TEST
    };
    let store = preloaded(&mut rng, tokens);

    let mut group = c.benchmark_group("store_1m");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    group.bench_function("get", |b| {
        b.iter(|| black_box(store.get(preloaded_id(rng.below(tokens)))))
    });

    // Each measured batch of creates is deleted again outside the timing, so the store stays
    // at ~1M tokens whatever the iteration count (the map's capacity and tombstones remain).
    let new_token = draft(&mut rng, 0xAB);
    group.bench_function("create", |b| {
        b.iter_custom(|iters| {
            let mut created = Vec::with_capacity(iters as usize);
            let started = Instant::now();
            for _ in 0..iters {
                let committed = store
                    .apply(Command::CreateToken {
                        draft: new_token,
                        at: AT,
                    })
                    .expect("id space is far from used up");
                created.push(created_id(&committed.outcome));
            }
            let elapsed = started.elapsed();
            for id in created {
                store
                    .apply(Command::DeleteToken { id })
                    .expect("just created");
            }
            elapsed
        })
    });

    // Weight plus one whole space, as an UpdateToken with mask `weight,l<k>_…` would be.
    // Building the command (and its patch's Vec) is setup; only `apply` is timed.
    group.bench_function("update", |b| {
        b.iter_batched(
            || {
                let space = Space::ALL[rng.below(Space::ALL.len())];
                let mut sent = TokenInput {
                    weight: rng.unit() as f32,
                    ..TokenInput::default()
                };
                sent.points[space.index()] = Some(rng.point(space));
                let patch =
                    TokenPatch::new(&sent, vec![UpdatePath::Weight, UpdatePath::Point(space)])
                        .expect("generated patch is valid");
                Command::UpdateToken {
                    id: preloaded_id(rng.below(tokens)),
                    patch,
                    at: AT,
                }
            },
            |command| store.apply(command).expect("token exists"),
            BatchSize::SmallInput,
        )
    });

    let all = TokenFilter::default();
    group.bench_function("list_page_100", |b| {
        b.iter(|| {
            let after = preloaded_id(rng.below(tokens)).get();
            black_box(store.tables().page(&all, Some(after), 100))
        })
    });

    // Domain of the starting token, so the page stays inside a 1/16 slice of the ids.
    group.bench_function("list_page_100_filtered", |b| {
        b.iter(|| {
            let after = preloaded_id(rng.below(tokens));
            let filter = TokenFilter {
                domain: Some(after.domain()),
                entity_type: None,
            };
            black_box(store.tables().page(&filter, Some(after.get()), 100))
        })
    });

    group.bench_function("count_filtered", |b| {
        b.iter(|| {
            let filter = TokenFilter {
                domain: Some(rng.below(16) as u32),
                entity_type: None,
            };
            black_box(store.count(&filter))
        })
    });

    group.finish();
    eprintln!("store ends with {} tokens", store.tables().len());
}

criterion_group!(benches, store_benches);
criterion_main!(benches);
