//! What the change feed retains and fans out: one `ChangeRecord` per token change of a
//! committed command, with enough state (an update's before and after) that every
//! subscriber's view, region crossings included, can be computed from it, live or replayed.

use serde::{Deserialize, Serialize};

use crate::model::Token;
use crate::store::command::{Committed, Effect};

/// One change to one token, or a clear of all.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// The token was created (one per token of a batch or import).
    Created(Token),
    /// The token changed.
    Updated {
        /// Its state before.
        before: Token,
        /// Its state after.
        after: Token,
    },
    /// The token was deleted; its last state.
    Deleted(Token),
    /// The token reached its expiry and was deleted; its last state.
    Expired(Token),
    /// Every token was deleted at once.
    Cleared,
}

impl Change {
    /// The token's state the change leaves behind, or its last one (`None` for a clear).
    pub fn token(&self) -> Option<&Token> {
        match self {
            Change::Created(token) | Change::Deleted(token) | Change::Expired(token) => Some(token),
            Change::Updated { after, .. } => Some(after),
            Change::Cleared => None,
        }
    }
}

/// A change and the commit sequence of its command (shared by the changes of one command).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Commit sequence of the command.
    pub sequence: u64,
    /// What changed.
    pub change: Change,
}

/// The token changes of one committed command, in effect order (grid and CDNA effects give
/// none).
pub fn changes_of(committed: &Committed) -> impl Iterator<Item = ChangeRecord> + '_ {
    let sequence = committed.sequence;
    committed.effects.iter().filter_map(move |effect| {
        let change = match effect {
            Effect::Created(token) => Change::Created(*token),
            Effect::Updated { before, after } => Change::Updated {
                before: *before,
                after: *after,
            },
            Effect::Deleted(token) => Change::Deleted(*token),
            Effect::Expired(token) => Change::Expired(*token),
            Effect::Cleared { .. } => Change::Cleared,
            Effect::Grid(_) | Effect::Cdna(_) => return None,
        };
        Some(ChangeRecord { sequence, change })
    })
}
