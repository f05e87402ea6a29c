//! Which tokens expire when: an ordered set of (expiry second, id) kept beside the tables by
//! the write path, so that the next due tokens are found without scanning every token, and
//! an expiry command deletes the same tokens on every replica (the order is part of the
//! state, and ties break by id).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::command::{Command, Effect};
use super::error::StoreError;
use super::tokens::TokenTables;
use super::write_path::{unix_now, Store};
use super::writes::{Writes, Written};
use crate::model::{Token, TokenId};

/// Most tokens one expiry command deletes: small enough that other writes wait at most a few
/// milliseconds behind it, large enough that a million tokens sharing a second go in seconds.
pub const EXPIRE_BATCH: u32 = 2000;

/// How often the timer looks for due tokens: a token goes within this much of its second.
const POLL: Duration = Duration::from_millis(200);

/// Tokens that have an expiry, ordered by (second, id).
#[derive(Clone, Debug, Default)]
pub struct ExpiryIndex {
    due: BTreeSet<(u32, u32)>,
}

impl ExpiryIndex {
    /// The index of `tokens`.
    pub fn of<'t>(tokens: impl IntoIterator<Item = &'t Token>) -> ExpiryIndex {
        let mut index = ExpiryIndex::default();
        for token in tokens {
            index.insert(token);
        }
        index
    }

    /// The index of every live token of `tables`.
    pub fn of_tables(tables: &TokenTables) -> ExpiryIndex {
        let mut index = ExpiryIndex::default();
        tables.for_each(|token| index.insert(&token));
        index
    }

    /// Number of tokens that have an expiry.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether no token has an expiry.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// The earliest expiry second, if any token has one.
    pub fn next_due(&self) -> Option<u32> {
        self.due.first().map(|(second, _)| *second)
    }

    /// At most `limit` ids expiring at or before `now`, earliest first.
    pub fn due(&self, now: u32, limit: usize) -> Vec<TokenId> {
        self.due
            .range(..=(now, u32::MAX))
            .take(limit)
            .filter_map(|(_, id)| TokenId::new(*id))
            .collect()
    }

    /// Keeps the index current after a commit's effects.
    pub fn follow(&mut self, effects: &[Effect]) {
        for effect in effects {
            match effect {
                Effect::Created(token) => self.insert(token),
                Effect::Updated { before, after } => {
                    if before.data.expires_at() != after.data.expires_at() {
                        self.remove(before);
                        self.insert(after);
                    }
                }
                Effect::Deleted(token) | Effect::Expired(token) => self.remove(token),
                Effect::Cleared { .. } => self.due.clear(),
                Effect::Grid(_) | Effect::Cdna(_) => {}
            }
        }
    }

    fn insert(&mut self, token: &Token) {
        if let Some(second) = token.data.expires_at() {
            self.due.insert((second, token.id.get()));
        }
    }

    fn remove(&mut self, token: &Token) {
        if let Some(second) = token.data.expires_at() {
            self.due.remove(&(second, token.id.get()));
        }
    }
}

/// Deletes every token already due at `now`, applying expiry commands directly: for a
/// single-node store on start, before any call is answered (API.md §10: a token that expired
/// while the server was down is gone before the first answer). How many went.
pub fn expire_missed(store: &Store, now: u32) -> Result<u64, StoreError> {
    let mut expired = 0;
    while store.next_expiry().is_some_and(|second| second <= now) {
        let applied = store.apply(Command::ExpireTokens {
            at: now,
            limit: EXPIRE_BATCH,
        })?;
        match applied.outcome {
            super::command::Outcome::Expired(0) => break,
            super::command::Outcome::Expired(count) => expired += count,
            _ => break,
        }
    }
    Ok(expired)
}

/// Appends expiry commands through the log until no token is due at the time of the call:
/// how many tokens went. A replica calls it once caught up, before it reports SERVING.
///
/// With a local log, which applies a command as it is appended, the next command is appended
/// while the one before is still being made durable: the writer applies a batch while the
/// journal writes the last (a command expires whatever is due when it is applied, so two in
/// flight never take the same tokens). One at a time, the 1M expiry waited for each half in
/// turn (5.5 s, the journal's 3.3 s of CPU plus the writer's 2.2 s; 2.7–3.4 s pipelined). A
/// replicated log publishes a command only when it is awaited and applies it on delivery, so
/// there each waits for the one before.
pub async fn expire_due(writes: &Writes, store: &Store) -> Result<u64, StoreError> {
    let now = unix_now();
    let pipelined = writes.applies_on_append();
    let mut expired = 0;
    // The command being made durable, and the applied sequence it was keyed by.
    let mut in_flight = None;
    while store.next_expiry().is_some_and(|second| second <= now) {
        let after = store.sequence();
        let done: Written<u64> = match in_flight.take_if(|(_, keyed)| *keyed == after) {
            // Nothing applied since it was appended (its apply failed): its answer says why.
            Some((pending, _)) => pending.await?,
            None => {
                // Keyed by the state it saw: replicas that see the same tokens due append it
                // once. The local log applies while appending, which takes the writer lock:
                // off the async workers, so that a long command never stalls other calls'
                // tasks.
                let writes = writes.clone();
                let pending = tokio::task::spawn_blocking(move || {
                    writes.expire_tokens(now, EXPIRE_BATCH, after)
                })
                .await
                .map_err(|e| StoreError::Unavailable(format!("the expiry task failed: {e}")))?;
                if !pipelined {
                    pending.await?
                } else if let Some((before, _)) = in_flight.replace((pending, after)) {
                    before.await?
                } else {
                    continue;
                }
            }
        };
        debug!(
            expired = done.value,
            sequence = done.sequence,
            "tokens expired"
        );
        if done.value == 0 {
            // Another replica's command took them first; the next round looks again.
            break;
        }
        expired += done.value;
    }
    if let Some((last, _)) = in_flight {
        expired += last.await?.value;
    }
    Ok(expired)
}

/// Expires tokens as their seconds come: looks every `POLL` and appends expiry commands for
/// whatever is due. Returns when `shutdown` resolves.
pub async fn run_expiry_timer(
    writes: Writes,
    store: Arc<Store>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            done = expire_due(&writes, &store) => if let Err(error) = done {
                // The log is unreachable or the replica halted: the next round tries again.
                warn!(%error, "token expiry not applied; retrying");
            },
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TokenData;

    fn token(raw: u32, expires_at: Option<u32>) -> Token {
        let mut data = TokenData::empty(1);
        data.set_expires_at(expires_at);
        Token {
            id: TokenId::new(raw).expect("valid"),
            data,
        }
    }

    #[test]
    fn due_tokens_come_earliest_first_then_by_id_and_never_those_without_expiry() {
        let tokens = [
            token(5, Some(20)),
            token(3, Some(20)),
            token(9, Some(10)),
            token(1, None),
            token(2, Some(30)),
        ];
        let index = ExpiryIndex::of(&tokens);
        assert_eq!(index.len(), 4);
        assert_eq!(index.next_due(), Some(10));
        let ids = |v: Vec<TokenId>| v.into_iter().map(TokenId::get).collect::<Vec<_>>();
        assert_eq!(ids(index.due(20, 10)), [9, 3, 5]);
        assert_eq!(ids(index.due(20, 2)), [9, 3]);
        assert_eq!(ids(index.due(9, 10)), Vec::<u32>::new());
    }

    #[test]
    fn effects_move_and_drop_entries() {
        let a = token(1, Some(10));
        let mut index = ExpiryIndex::of([&a]);
        let later = token(1, Some(50));
        index.follow(&[Effect::Updated {
            before: a,
            after: later,
        }]);
        assert_eq!(index.next_due(), Some(50));
        index.follow(&[Effect::Created(token(2, Some(40))), Effect::Expired(later)]);
        assert_eq!(index.next_due(), Some(40));
        index.follow(&[Effect::Cleared { count: 1 }]);
        assert!(index.is_empty());
    }
}
