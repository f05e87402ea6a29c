//! The change feed behind WatchTokens: a write-path follower that turns the token effects of every
//! commit into `TokenEvent`s and publishes them, in commit order, on a bounded broadcast
//! channel. Grid and CDNA effects give no events. A subscriber that falls more than the lag
//! limit behind is cut off (ABORTED) rather than slowing the writers down. Events are model
//! values; `api` converts them to proto.

use tokio::sync::broadcast;

pub mod change;
pub mod history;

use super::command::{Committed, Effect};
use super::error::StoreError;
use super::write_path::Follower;
use crate::model::Token;

/// Largest lag limit a feed takes: the channel reserves a slot per event of the limit.
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

/// One committed change to one token, or a clear of all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenEvent {
    /// What happened.
    pub kind: TokenEventKind,
    /// The new state; for `Deleted` the last state; `None` for `Cleared`.
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

/// The events of one committed command, in effect order.
pub fn events_of(committed: &Committed) -> impl Iterator<Item = TokenEvent> + '_ {
    let sequence = committed.sequence;
    committed.effects.iter().filter_map(move |effect| {
        let (kind, token) = match effect {
            Effect::Created(token) => (TokenEventKind::Created, Some(*token)),
            Effect::Updated { after, .. } => (TokenEventKind::Updated, Some(*after)),
            Effect::Deleted(token) => (TokenEventKind::Deleted, Some(*token)),
            Effect::Expired(token) => (TokenEventKind::Expired, Some(*token)),
            Effect::Cleared { .. } => (TokenEventKind::Cleared, None),
            _ => return None,
        };
        Some(TokenEvent {
            kind,
            token,
            sequence,
        })
    })
}

/// Publishes the events of every commit to the current subscribers.
#[derive(Debug)]
pub struct ChangeFeed {
    sender: broadcast::Sender<TokenEvent>,
    lag_limit: usize,
}

impl ChangeFeed {
    /// A feed whose subscribers may fall at most `lag_limit` events behind (taken within
    /// 1..=`MAX_LAG_LIMIT`).
    pub fn new(lag_limit: usize) -> ChangeFeed {
        let lag_limit = lag_limit.clamp(1, MAX_LAG_LIMIT);
        // The channel rounds its capacity up to a power of two; `Subscription::next` checks
        // the exact limit itself.
        let (sender, _) = broadcast::channel(lag_limit);
        ChangeFeed { sender, lag_limit }
    }

    /// Events of every command committed from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            receiver: self.sender.subscribe(),
            lag_limit: self.lag_limit,
        }
    }

    /// Number of live subscriptions.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

impl Follower for ChangeFeed {
    fn follow(&self, committed: &Committed) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        for event in events_of(committed) {
            // Fails only when the last subscriber left meanwhile: nobody to tell.
            let _ = self.sender.send(event);
        }
    }
}

/// One subscriber's view of the feed.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<TokenEvent>,
    lag_limit: usize,
}

impl Subscription {
    /// The next event in commit order; ABORTED once the subscriber is more than the lag limit
    /// behind (it has missed or would miss events, so it must watch again), UNAVAILABLE when
    /// the feed is gone.
    pub async fn next(&mut self) -> Result<TokenEvent, StoreError> {
        // Unread events, the next one included (more than the channel holds once it lagged).
        if self.receiver.len() > self.lag_limit {
            return Err(self.lagged());
        }
        match self.receiver.recv().await {
            Ok(event) => Ok(event),
            Err(broadcast::error::RecvError::Lagged(_)) => Err(self.lagged()),
            Err(broadcast::error::RecvError::Closed) => Err(StoreError::FeedClosed),
        }
    }

    fn lagged(&self) -> StoreError {
        StoreError::FeedLagged(self.lag_limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TokenData, TokenId};
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

    #[test]
    fn token_effects_become_events_sharing_the_sequence() {
        let (a, b) = (token(1), token(2));
        let commit = committed(
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
        );
        let events: Vec<_> = events_of(&commit).collect();
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
        let mut subscription = feed.subscribe();
        feed.follow(&committed(2, vec![Effect::Created(token(2))]));
        feed.follow(&committed(3, vec![Effect::Deleted(token(2))]));
        let first = subscription.next().await.expect("event");
        let second = subscription.next().await.expect("event");
        assert_eq!((first.id(), first.sequence), (2, 2));
        assert_eq!((second.kind, second.sequence), (TokenEventKind::Deleted, 3));
    }

    #[tokio::test]
    async fn a_subscriber_more_than_the_limit_behind_is_aborted() {
        // 3 is not a power of two: the channel holds 4, the limit still is 3.
        let feed = ChangeFeed::new(3);
        let mut subscription = feed.subscribe();
        for sequence in 1..=4 {
            feed.follow(&committed(sequence, vec![Effect::Created(token(1))]));
        }
        let error = subscription.next().await.expect_err("4 behind");
        assert!(matches!(error, StoreError::FeedLagged(_)));
    }

    #[tokio::test]
    async fn a_subscriber_at_the_limit_keeps_up() {
        let feed = ChangeFeed::new(3);
        let mut subscription = feed.subscribe();
        for sequence in 1..=3 {
            feed.follow(&committed(sequence, vec![Effect::Created(token(1))]));
        }
        for sequence in 1..=3 {
            assert_eq!(subscription.next().await.expect("event").sequence, sequence);
        }
    }

    #[test]
    fn without_subscribers_nothing_is_published() {
        let feed = ChangeFeed::new(2);
        for sequence in 1..=10 {
            feed.follow(&committed(sequence, vec![Effect::Created(token(1))]));
        }
        assert_eq!(feed.subscribers(), 0);
        assert_eq!(feed.sender.len(), 0);
    }
}
