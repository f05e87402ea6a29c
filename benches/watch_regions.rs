//! The change feed's fan-out under many WatchTokens subscribers: the cost of one CreateToken
//! applied through a store whose one follower is the feed (no index, no gRPC), with
//! (a) no subscribers, (b) 10,000 idle region subscribers whose balls hold none of the created
//! tokens (small balls spread over all 8 spaces), (c) 10,000 idle filtered subscribers of
//! other (domain, entity_type) pairs, (d) 100 subscribers that see every create (plain,
//! filtered on the created pair, and whole-space regions), for context. Target: (b) ≤ 2 × (a).
//!
//! Creates are timed in chunks of `CHUNK_CREATES`; between chunks, untimed, the created tokens
//! are deleted again (so the store stays small) and the subscriptions are drained (so none
//! falls behind). `cargo bench --bench watch_regions`; figures go in the README.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use neurograph::model::grid::distance;
use neurograph::model::{Space, TokenDraft, TokenFilter, TokenId};
use neurograph::store::feed::MAX_LAG_LIMIT;
use neurograph::store::{
    ChangeFeed, Command, Components, Follower, Interest, Outcome, Region, Store, Subscription,
};

mod support;

use support::{draft, XorShift, AT};

/// Idle subscribers of cases (b) and (c).
const IDLE: usize = 10_000;
/// Subscribers that see every create, case (d).
const MATCHING: usize = 100;
/// Distinct tokens the creates cycle through (pair `CREATED_PAIR`, every space defined).
const DRAFTS: usize = 1024;
/// The (domain, entity_type) pair of every created token.
const CREATED_PAIR: usize = 0xAB;
/// Creates timed in one go; then deletes and draining, untimed. Below the feed's lag limit.
const CHUNK_CREATES: u64 = 1_000;
/// Radius of an idle region ball, as a share of its space's largest coordinate.
const IDLE_RADIUS_SHARE: f64 = 0.01;

/// The events queued for `subscription` now (polled without a runtime: an empty queue is
/// pending); panics if it ended.
fn drain(subscription: &mut Subscription) -> usize {
    let mut context = Context::from_waker(Waker::noop());
    let mut events = 0;
    loop {
        match pin!(subscription.next()).poll(&mut context) {
            Poll::Ready(Ok(_)) => events += 1,
            Poll::Ready(Err(error)) => panic!("a bench subscription ended: {error}"),
            Poll::Pending => return events,
        }
    }
}

/// A store whose only follower is `feed`.
fn store_following(feed: &Arc<ChangeFeed>) -> Store {
    let follower: Arc<dyn Follower> = feed.clone();
    Store::new(Components {
        followers: vec![follower],
        ..Components::default()
    })
}

/// `IDLE` small balls spread over the 8 spaces, none holding a point of any draft.
fn idle_regions(rng: &mut XorShift, drafts: &[TokenDraft]) -> Vec<Interest> {
    (0..IDLE)
        .map(|index| {
            let space = Space::ALL[index % Space::ALL.len()];
            let radius = space.max_value() * IDLE_RADIUS_SHARE;
            loop {
                let centre = rng.point(space).map(f64::from);
                let holds_a_draft = drafts.iter().any(|draft| {
                    draft
                        .data
                        .point(space)
                        .is_some_and(|point| distance(point, space, centre) <= radius)
                });
                if !holds_a_draft {
                    break Interest {
                        filter: TokenFilter::default(),
                        region: Some(Region {
                            space,
                            centre,
                            radius,
                        }),
                    };
                }
            }
        })
        .collect()
}

/// A filter on exactly `pair`.
fn pair_filter(pair: usize) -> TokenFilter {
    TokenFilter::new(Some((pair >> 4) as u32), Some((pair & 0xF) as u32)).expect("a nibble pair")
}

/// `IDLE` subscribers filtered on the 255 pairs other than `CREATED_PAIR`.
fn idle_filters() -> Vec<Interest> {
    (0..IDLE)
        .map(|index| {
            let pair = index % 255;
            let pair = if pair >= CREATED_PAIR { pair + 1 } else { pair };
            Interest {
                filter: pair_filter(pair),
                region: None,
            }
        })
        .collect()
}

/// `MATCHING` subscribers that see every create: plain, on the created pair, or a region
/// holding its whole space.
fn matching() -> Vec<Interest> {
    (0..MATCHING)
        .map(|index| match index % 3 {
            0 => Interest::everything(),
            1 => Interest {
                filter: pair_filter(CREATED_PAIR),
                region: None,
            },
            _ => {
                let space = Space::ALL[index % Space::ALL.len()];
                Interest {
                    filter: TokenFilter::default(),
                    region: Some(Region {
                        space,
                        centre: [0.0; 3],
                        radius: space.max_value() * 2.0,
                    }),
                }
            }
        })
        .collect()
}

/// Times `iters` creates in chunks; between chunks deletes them and drains `subscriptions`,
/// untimed. Returns the timed total and the events the subscriptions received.
fn timed_creates(
    store: &Store,
    drafts: &[TokenDraft],
    subscriptions: &mut [Subscription],
    iters: u64,
) -> (Duration, usize) {
    let mut elapsed = Duration::ZERO;
    let mut events = 0;
    let mut done = 0;
    let mut created: Vec<TokenId> = Vec::with_capacity(CHUNK_CREATES as usize);
    while done < iters {
        let chunk = CHUNK_CREATES.min(iters - done);
        let started = Instant::now();
        for offset in 0..chunk {
            let draft = drafts[((done + offset) as usize) % drafts.len()];
            let applied = store
                .apply(Command::CreateToken { draft, at: AT })
                .expect("ids are deleted again, so the pair never fills");
            match applied.outcome {
                Outcome::Created(token) => created.push(token.id),
                other => panic!("a create answers Created, got {other:?}"),
            }
        }
        elapsed += started.elapsed();
        done += chunk;
        for id in created.drain(..) {
            store
                .apply(Command::DeleteToken { id })
                .expect("just created");
        }
        events += subscriptions.iter_mut().map(drain).sum::<usize>();
    }
    (elapsed, events)
}

fn watch_region_benches(c: &mut Criterion) {
    let mut rng = XorShift(0x5DEE_CE66_D1CE_4E5B);
    let drafts: Vec<TokenDraft> = (0..DRAFTS).map(|_| draft(&mut rng, CREATED_PAIR)).collect();
    let cases: [(&str, Vec<Interest>, bool); 4] = [
        ("create_no_subscribers", Vec::new(), false),
        (
            "create_10k_idle_regions",
            idle_regions(&mut rng, &drafts),
            false,
        ),
        ("create_10k_idle_filters", idle_filters(), false),
        ("create_100_matching", matching(), true),
    ];

    let mut group = c.benchmark_group("watch_regions");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, interests, expect_events) in cases {
        // The largest lag limit: draining between chunks keeps every queue far below it.
        let feed = Arc::new(ChangeFeed::new(MAX_LAG_LIMIT));
        let store = store_following(&feed);
        let subscribed = Instant::now();
        let mut subscriptions: Vec<Subscription> = interests
            .iter()
            .map(|interest| feed.subscribe(*interest).0)
            .collect();
        eprintln!(
            "{name}: {} subscribers registered in {:.2?}",
            feed.subscribers(),
            subscribed.elapsed()
        );
        let mut received = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (elapsed, events) = timed_creates(&store, &drafts, &mut subscriptions, iters);
                received += events;
                elapsed
            })
        });
        // Creates and their deletes: every matching subscriber saw both, no idle one saw any.
        assert_eq!(feed.subscribers(), interests.len(), "nobody was cut off");
        assert_eq!(received > 0, expect_events, "{name}: {received} events");
    }
    group.finish();
}

criterion_group!(benches, watch_region_benches);
criterion_main!(benches);
