//! Which tokens expire when: an ordered set of (expiry second, id) kept beside the tables by
//! the write path, so that the next due tokens are found without scanning every token, and
//! an expiry command deletes the same tokens on every replica (the order is part of the
//! state, and ties break by id).

use std::collections::BTreeSet;

use super::command::Effect;
use super::tokens::TokenTables;
use crate::model::{Token, TokenId};

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
