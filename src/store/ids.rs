//! Token id allocation: one counter per (domain, entity_type) pair holding the highest local id
//! ever used in it (explicit ids included), so ids are never reused, not even after a delete
//! or a clear. Creates, batches and imports all allocate through `IdCounters`; the write path
//! owns the one live set and copies it for a batch that must fail as a whole.

use std::collections::BTreeMap;

use crate::model::token::MAX_LOCAL_ID;
use crate::model::{IdPair, TokenId};

/// Why no id could be allocated: every local id of the pair has been used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdsUsedUp {
    /// The exhausted pair.
    pub pair: IdPair,
}

/// The highest local id used so far in each pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdCounters([u32; IdPair::COUNT]);

impl Default for IdCounters {
    fn default() -> Self {
        IdCounters([0; IdPair::COUNT])
    }
}

impl IdCounters {
    /// The highest local id used in `pair`.
    pub fn highest(&self, pair: IdPair) -> u32 {
        self.0[pair.index()]
    }

    /// Records that `id` is in use (explicit ids, and ids read back from storage): the pair's
    /// next allocation comes after it.
    pub fn reserve(&mut self, id: TokenId) {
        let slot = &mut self.0[id.pair().index()];
        *slot = (*slot).max(id.local_id());
    }

    /// Raises `pair`'s counter to at least `local_id` (a counter read back from storage).
    pub fn raise(&mut self, pair: IdPair, local_id: u32) {
        let slot = &mut self.0[pair.index()];
        *slot = (*slot).max(local_id.min(MAX_LOCAL_ID));
    }

    /// Every pair's counter, by pair index.
    pub fn as_slice(&self) -> &[u32] {
        &self.0
    }

    /// The next unused id of `pair`.
    pub fn allocate(&mut self, pair: IdPair) -> Result<TokenId, IdsUsedUp> {
        let slot = &mut self.0[pair.index()];
        if *slot >= MAX_LOCAL_ID {
            return Err(IdsUsedUp { pair });
        }
        *slot += 1;
        Ok(pair
            .token(*slot)
            .expect("local id in 1..=MAX_LOCAL_ID makes an id in any pair"))
    }

    /// The counters of the pairs `tokens` use, highest local id each: what a commit that
    /// created them must store (one write per pair, however many tokens).
    pub fn raised_by(tokens: impl IntoIterator<Item = TokenId>) -> BTreeMap<IdPair, u32> {
        let mut raised = BTreeMap::new();
        for id in tokens {
            let highest = raised.entry(id.pair()).or_insert(0);
            *highest = id.local_id().max(*highest);
        }
        raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(domain: u32, entity_type: u32) -> IdPair {
        IdPair::new(domain, entity_type).expect("nibbles")
    }

    #[test]
    fn allocation_follows_the_highest_reserved_id_of_its_pair_only() {
        let mut counters = IdCounters::default();
        counters.reserve(TokenId::from_parts(2, 5, 40).expect("id"));
        assert_eq!(counters.allocate(pair(2, 5)).map(TokenId::local_id), Ok(41));
        assert_eq!(counters.allocate(pair(0, 0)).map(TokenId::get), Ok(1));
        counters.reserve(TokenId::from_parts(2, 5, 3).expect("id"));
        assert_eq!(
            counters.highest(pair(2, 5)),
            41,
            "a lower id never lowers it"
        );
    }

    #[test]
    fn an_exhausted_pair_says_which() {
        let mut counters = IdCounters::default();
        counters.raise(pair(1, 2), MAX_LOCAL_ID);
        assert_eq!(
            counters.allocate(pair(1, 2)),
            Err(IdsUsedUp { pair: pair(1, 2) })
        );
        assert!(counters.allocate(pair(1, 3)).is_ok());
    }
}
