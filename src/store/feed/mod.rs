//! The change feed behind WatchTokens: a write-path follower that turns the token effects of
//! every commit into change records (`change`) and hands each subscriber its own view of them
//! (`interest`), as `TokenEvent`s in commit order, through an index of who wants what
//! (`dispatch`), so that a commit costs nothing for idle subscribers whose filter or region it
//! does not touch. Grid and CDNA effects give no events. A subscriber that falls more than the
//! lag limit behind is cut off (ABORTED) rather than slowing the writers down. Events are
//! model values; `api` converts them to proto. The records retained for watchers that resume
//! are `history`'s.
//!
//! Lock order: the store's writer lock (around `follow`), then the feed's dispatcher lock,
//! then one subscriber's queue lock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

pub mod change;
pub mod dispatch;
pub mod history;
pub mod interest;

use super::command::Committed;
use super::error::StoreError;
use super::write_path::Follower;
use crate::model::Token;
use change::changes_of;
use dispatch::{Dispatcher, Ended, Queue, SubscriberKey};
pub use interest::{Interest, Region};

/// Largest lag limit a feed takes (events a subscriber's queue may hold).
pub const MAX_LAG_LIMIT: usize = 1 << 24;

/// What happened to a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenEventKind {
    /// The token was created (one event per token of a batch or import).
    Created,
    /// The token changed.
    Updated,
    /// The token was deleted.
    Deleted,
    /// Every token was deleted at once.
    Cleared,
    /// The token reached its `expires_at` and was deleted (API.md §10).
    Expired,
    /// An update moved the token into the subscriber's region.
    Entered,
    /// An update moved the token out of the subscriber's region.
    Exited,
}

/// One committed change to one token, or a clear of all, as one subscriber sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenEvent {
    /// What happened.
    pub kind: TokenEventKind,
    /// The new state; for `Deleted` and `Expired` the last state; `None` for `Cleared`.
    pub token: Option<Token>,
    /// Commit sequence of the command; shared by the events of one command.
    pub sequence: u64,
}

impl TokenEvent {
    /// The raw id of the token, 0 for `Cleared`.
    pub fn id(&self) -> u32 {
        self.token.map_or(0, |token| token.id.get())
    }
}

/// Hands the changes of every commit to the current subscribers, each its own view.
pub struct ChangeFeed {
    dispatcher: Arc<Mutex<Dispatcher>>,
    /// Sequence of the last commit followed; written under the dispatcher's lock.
    last_sequence: AtomicU64,
    lag_limit: usize,
}

impl ChangeFeed {
    /// A feed whose subscribers may fall at most `lag_limit` events behind (taken within
    /// 1..=`MAX_LAG_LIMIT`), starting at sequence 0.
    pub fn new(lag_limit: usize) -> ChangeFeed {
        let lag_limit = lag_limit.clamp(1, MAX_LAG_LIMIT);
        ChangeFeed {
            dispatcher: Arc::new(Mutex::new(Dispatcher::new(lag_limit))),
            last_sequence: AtomicU64::new(0),
            lag_limit,
        }
    }

    /// Sets the sequence the feed starts from (the store's recovered sequence), before any
    /// commit is followed.
    pub fn start_at(&self, sequence: u64) {
        let _dispatcher = self.dispatcher.lock();
        self.last_sequence.store(sequence, Ordering::Release);
    }

    /// Registers a subscriber. Atomically with respect to `follow`: returns the sequence of the
    /// last commit the feed has followed (or `start_at`), and every event of every later
    /// commit reaches this subscription; none of an earlier one.
    pub fn subscribe(&self, interest: Interest) -> (Subscription, u64) {
        let mut dispatcher = self.dispatcher.lock();
        let (key, queue) = dispatcher.register(interest);
        let sequence = self.last_sequence.load(Ordering::Acquire);
        drop(dispatcher);
        let subscription = Subscription {
            queue,
            key,
            dispatcher: Arc::downgrade(&self.dispatcher),
            lag_limit: self.lag_limit,
        };
        (subscription, sequence)
    }

    /// The sequence of the last commit followed (or `start_at`).
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence.load(Ordering::Acquire)
    }

    /// Number of live subscriptions.
    pub fn subscribers(&self) -> usize {
        self.dispatcher.lock().len()
    }
}

impl fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("last_sequence", &self.last_sequence())
            .field("subscribers", &self.subscribers())
            .field("lag_limit", &self.lag_limit)
            .finish()
    }
}

impl Follower for ChangeFeed {
    fn follow(&self, committed: &Committed) {
        // Under the lock, so that a subscribe lands wholly before or wholly after this commit.
        let mut dispatcher = self.dispatcher.lock();
        self.last_sequence
            .store(committed.sequence, Ordering::Release);
        if dispatcher.len() == 0 {
            return;
        }
        for record in changes_of(committed) {
            dispatcher.dispatch(&record);
        }
        dispatcher.finish_commit();
    }
}

/// One subscriber's events. Dropping it unregisters it.
pub struct Subscription {
    queue: Arc<Queue>,
    key: SubscriberKey,
    dispatcher: Weak<Mutex<Dispatcher>>,
    lag_limit: usize,
}

impl Subscription {
    /// The next event in commit order; ABORTED (`FeedLagged`) once the subscriber fell more
    /// than the lag limit behind (at once, dropping the events still queued: it must watch
    /// again), UNAVAILABLE (`FeedClosed`) once the feed is gone and the queued events are read.
    /// Cancel-safe: an event is taken only by the call that returns it.
    pub async fn next(&mut self) -> Result<TokenEvent, StoreError> {
        loop {
            match self.queue.pop() {
                Ok(Some(event)) => return Ok(event),
                Ok(None) => self.queue.wait().await,
                Err(Ended::Lagged) => return Err(StoreError::FeedLagged(self.lag_limit)),
                Err(Ended::Closed) => return Err(StoreError::FeedClosed),
            }
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("key", &self.key)
            .field("lag_limit", &self.lag_limit)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(dispatcher) = self.dispatcher.upgrade() {
            dispatcher.lock().unregister(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use proptest::prelude::*;

    use super::change::ChangeRecord;
    use super::*;
    use crate::model::{QPoint, Space, TokenData, TokenFilter, TokenId};
    use crate::store::command::Effect;
    use crate::store::grids::GridEffect;

    fn token(raw: u32) -> Token {
        Token {
            id: TokenId::new(raw).expect("valid id"),
            data: TokenData::empty(7),
        }
    }

    fn committed(sequence: u64, effects: Vec<Effect>) -> Committed {
        Committed { sequence, effects }
    }

    /// The events queued for `subscription` now, and the error that ends it if it ended
    /// (polls without a runtime: a queue that has nothing yet is pending).
    fn drain(subscription: &mut Subscription) -> (Vec<TokenEvent>, Option<StoreError>) {
        let mut context = Context::from_waker(Waker::noop());
        let mut events = Vec::new();
        loop {
            match pin!(subscription.next()).poll(&mut context) {
                Poll::Ready(Ok(event)) => events.push(event),
                Poll::Ready(Err(error)) => return (events, Some(error)),
                Poll::Pending => return (events, None),
            }
        }
    }

    #[test]
    fn token_effects_become_events_sharing_the_sequence() {
        let feed = ChangeFeed::new(10);
        let (mut subscription, _) = feed.subscribe(Interest::everything());
        let (a, b) = (token(1), token(2));
        feed.follow(&committed(
            9,
            vec![
                Effect::Created(a),
                Effect::Updated {
                    before: a,
                    after: b,
                },
                Effect::Deleted(b),
                Effect::Cleared { count: 1 },
                Effect::Grid(GridEffect::Deleted { grid: 3 }),
            ],
        ));
        let (events, ended) = drain(&mut subscription);
        assert!(ended.is_none());
        let kinds: Vec<_> = events
            .iter()
            .map(|e| (e.kind, e.id(), e.sequence))
            .collect();
        assert_eq!(
            kinds,
            [
                (TokenEventKind::Created, 1, 9),
                (TokenEventKind::Updated, 2, 9),
                (TokenEventKind::Deleted, 2, 9),
                (TokenEventKind::Cleared, 0, 9),
            ]
        );
        assert_eq!(events[2].token, Some(b), "a delete carries the last state");
        assert_eq!(events[3].token, None);
    }

    #[tokio::test]
    async fn a_subscriber_sees_commits_after_it_subscribed_in_order() {
        let feed = ChangeFeed::new(10);
        feed.follow(&committed(1, vec![Effect::Created(token(1))]));
        let (mut subscription, sequence) = feed.subscribe(Interest::everything());
        assert_eq!(sequence, 1, "the last commit followed");
        feed.follow(&committed(2, vec![Effect::Created(token(2))]));
        feed.follow(&committed(3, vec![Effect::Deleted(token(2))]));
        let first = subscription.next().await.expect("event");
        let second = subscription.next().await.expect("event");
        assert_eq!((first.id(), first.sequence), (2, 2));
        assert_eq!((second.kind, second.sequence), (TokenEventKind::Deleted, 3));
        assert!(drain(&mut subscription).0.is_empty(), "nothing else");
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_for_a_later_commit() {
        let feed = Arc::new(ChangeFeed::new(10));
        let (mut subscription, _) = feed.subscribe(Interest::everything());
        let waiting = tokio::spawn(async move { subscription.next().await });
        tokio::task::yield_now().await;
        feed.follow(&committed(1, vec![Effect::Created(token(5))]));
        let event = waiting.await.expect("joins").expect("event");
        assert_eq!((event.id(), event.sequence), (5, 1));
    }

    #[test]
    fn the_sequence_follows_every_commit_and_starts_where_told() {
        let feed = ChangeFeed::new(2);
        feed.start_at(40);
        assert_eq!(feed.last_sequence(), 40);
        assert_eq!(feed.subscribe(Interest::everything()).1, 40);
        // A commit without token changes, and one with no subscriber: both count.
        feed.follow(&committed(
            41,
            vec![Effect::Grid(GridEffect::Deleted { grid: 1 })],
        ));
        feed.follow(&committed(42, vec![Effect::Created(token(1))]));
        assert_eq!(feed.last_sequence(), 42);
        assert_eq!(feed.subscribe(Interest::everything()).1, 42);
    }

    #[tokio::test]
    async fn a_subscriber_more_than_the_limit_behind_is_aborted() {
        let feed = ChangeFeed::new(3);
        let (mut subscription, _) = feed.subscribe(Interest::everything());
        for sequence in 1..=4 {
            feed.follow(&committed(sequence, vec![Effect::Created(token(1))]));
        }
        let error = subscription.next().await.expect_err("4 behind");
        assert!(matches!(error, StoreError::FeedLagged(3)));
        assert_eq!(feed.subscribers(), 0, "cut off");
    }

    #[tokio::test]
    async fn a_subscriber_at_the_limit_keeps_up() {
        let feed = ChangeFeed::new(3);
        let (mut subscription, _) = feed.subscribe(Interest::everything());
        for sequence in 1..=3 {
            feed.follow(&committed(sequence, vec![Effect::Created(token(1))]));
        }
        for sequence in 1..=3 {
            assert_eq!(subscription.next().await.expect("event").sequence, sequence);
        }
        feed.follow(&committed(4, vec![Effect::Created(token(1))]));
        assert_eq!(subscription.next().await.expect("event").sequence, 4);
    }

    #[test]
    fn the_lag_counts_only_events_the_subscriber_sees() {
        let feed = ChangeFeed::new(1);
        let filter = TokenFilter::new(Some(1), None).expect("valid");
        let (mut subscription, _) = feed.subscribe(Interest {
            filter,
            region: None,
        });
        for sequence in 1..=10 {
            feed.follow(&committed(sequence, vec![Effect::Created(token(1))]));
        }
        assert_eq!(drain(&mut subscription), (Vec::new(), None));
        assert_eq!(feed.subscribers(), 1);
    }

    #[test]
    fn dropping_a_subscription_unregisters_it() {
        let feed = ChangeFeed::new(2);
        let (first, _) = feed.subscribe(Interest::everything());
        let (second, _) = feed.subscribe(Interest {
            filter: TokenFilter::new(Some(1), Some(2)).expect("valid"),
            region: None,
        });
        assert_eq!(feed.subscribers(), 2);
        drop(first);
        assert_eq!(feed.subscribers(), 1);
        drop(second);
        assert_eq!(feed.subscribers(), 0);
    }

    #[test]
    fn a_dropped_feed_ends_subscriptions_after_their_events() {
        let feed = ChangeFeed::new(4);
        let (mut subscription, _) = feed.subscribe(Interest::everything());
        feed.follow(&committed(1, vec![Effect::Created(token(1))]));
        drop(feed);
        let (events, ended) = drain(&mut subscription);
        assert_eq!(events.len(), 1);
        assert!(matches!(ended, Some(StoreError::FeedClosed)));
    }

    // The indexed dispatch against brute force. Small id, coordinate and radius ranges make
    // filters, balls and crossings meet often; centres on the quantised grid with integer
    // radii put points exactly on boundaries.

    /// Quantised coordinates in -12..=12, or undefined.
    fn arb_point() -> impl Strategy<Value = Option<QPoint>> {
        prop::option::weighted(0.8, prop::array::uniform3(-12i16..=12).prop_map(QPoint))
    }

    fn arb_token() -> impl Strategy<Value = Token> {
        (
            0u32..3,
            0u32..3,
            1u32..6,
            prop::array::uniform8(arb_point()),
        )
            .prop_map(|(domain, entity_type, local_id, points)| {
                let mut data = TokenData::empty(7);
                for (space, point) in Space::ALL.into_iter().zip(points) {
                    data.set_point(space, point);
                }
                Token {
                    id: TokenId::from_parts(domain, entity_type, local_id).expect("valid id"),
                    data,
                }
            })
    }

    fn arb_effect() -> impl Strategy<Value = Effect> {
        prop_oneof![
            3 => arb_token().prop_map(Effect::Created),
            5 => (arb_token(), arb_token()).prop_map(|(before, mut after)| {
                after.id = before.id;
                Effect::Updated { before, after }
            }),
            2 => arb_token().prop_map(Effect::Deleted),
            1 => arb_token().prop_map(Effect::Expired),
            1 => Just(Effect::Cleared { count: 1 }),
        ]
    }

    fn arb_region() -> impl Strategy<Value = Region> {
        (
            0usize..8,
            prop::array::uniform3(-12i32..=12),
            prop::array::uniform3(-0.5f64..0.5),
            any::<bool>(),
            1u32..12,
            0.0f64..1.0,
        )
            .prop_map(|(space, q, jitter, on_grid, radius_q, jitter_r)| {
                let space = Space::from_index(space).expect("0..8");
                let scale = space.scale();
                let (centre, radius) = if on_grid {
                    (q.map(|q| f64::from(q) / scale), f64::from(radius_q) / scale)
                } else {
                    let centre = [0, 1, 2].map(|axis| (f64::from(q[axis]) + jitter[axis]) / scale);
                    (centre, (f64::from(radius_q) + jitter_r) / scale)
                };
                Region {
                    space,
                    centre,
                    radius,
                }
            })
    }

    fn arb_interest() -> impl Strategy<Value = Interest> {
        let filter = (prop::option::of(0u32..3), prop::option::of(0u32..3)).prop_map(
            |(domain, entity_type)| TokenFilter {
                domain,
                entity_type,
            },
        );
        prop_oneof![
            1 => Just(Interest::everything()),
            2 => filter.clone().prop_map(|filter| Interest { filter, region: None }),
            4 => (filter, prop::option::of(arb_region()))
                .prop_map(|(filter, region)| Interest { filter, region }),
        ]
    }

    proptest! {
        #[test]
        fn indexed_dispatch_equals_each_interests_view_of_every_record(
            interests in prop::collection::vec(arb_interest(), 1..40),
            commits in prop::collection::vec(prop::collection::vec(arb_effect(), 0..5), 1..25),
        ) {
            let feed = ChangeFeed::new(MAX_LAG_LIMIT);
            let mut subscriptions: Vec<_> = interests
                .iter()
                .map(|interest| feed.subscribe(*interest).0)
                .collect();
            let mut records: Vec<ChangeRecord> = Vec::new();
            for (offset, effects) in commits.into_iter().enumerate() {
                let commit = committed(offset as u64 + 1, effects);
                records.extend(changes_of(&commit));
                feed.follow(&commit);
            }
            for (interest, subscription) in interests.iter().zip(&mut subscriptions) {
                let expected: Vec<_> = records.iter().filter_map(|r| interest.view(r)).collect();
                let (delivered, ended) = drain(subscription);
                prop_assert!(ended.is_none());
                prop_assert_eq!(delivered, expected, "{:?}", interest);
            }
        }
    }

    #[test]
    fn a_clear_reaches_every_kind_of_subscriber() {
        let feed = ChangeFeed::new(4);
        let region = Region {
            space: Space::L8Abstract,
            centre: [0.1, 0.1, 0.1],
            radius: 0.01,
        };
        let interests = [
            Interest::everything(),
            Interest {
                filter: TokenFilter::new(Some(15), Some(15)).expect("valid"),
                region: None,
            },
            Interest {
                filter: TokenFilter::default(),
                region: Some(region),
            },
        ];
        let mut subscriptions: Vec<_> = interests.map(|i| feed.subscribe(i).0).into();
        feed.follow(&committed(5, vec![Effect::Cleared { count: 0 }]));
        for subscription in &mut subscriptions {
            let (events, _) = drain(subscription);
            let seen: Vec<_> = events
                .iter()
                .map(|e| (e.kind, e.id(), e.sequence))
                .collect();
            assert_eq!(seen, [(TokenEventKind::Cleared, 0, 5)]);
        }
    }

    #[test]
    fn region_subscribers_see_entries_and_exits() {
        let feed = ChangeFeed::new(8);
        let region = Region {
            space: Space::L1Physical,
            centre: [0.0, 0.0, 0.0],
            radius: 1.0,
        };
        let (mut subscription, _) = feed.subscribe(Interest {
            filter: TokenFilter::default(),
            region: Some(region),
        });
        let at = |x: i16| {
            let mut token = token(3);
            token
                .data
                .set_point(Space::L1Physical, Some(QPoint([x, 0, 0])));
            token
        };
        let moves = [(500, 100), (100, 50), (50, 100), (100, 101), (101, 300)];
        for (sequence, (from, to)) in moves.into_iter().enumerate() {
            let effect = Effect::Updated {
                before: at(from),
                after: at(to),
            };
            feed.follow(&committed(sequence as u64 + 1, vec![effect]));
        }
        let (events, _) = drain(&mut subscription);
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.sequence)).collect();
        assert_eq!(
            kinds,
            [
                (TokenEventKind::Entered, 1),
                (TokenEventKind::Updated, 2),
                (TokenEventKind::Updated, 3),
                (TokenEventKind::Exited, 4),
            ]
        );
    }
}
