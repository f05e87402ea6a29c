//! Commands (one per write RPC) and the effects a committed command had.

use super::cdna::{CdnaCommand, CdnaEffect};
use super::grids::{GridCommand, GridEffect};
use super::import::ImportDraft;
use crate::model::{FieldViolation, Token, TokenDraft, TokenId, TokenPatch};

/// One write, applied by the write path as a unit with one commit sequence. Commands carry
/// their timestamp so that applying one is deterministic (ids are allocated when applied).
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Create one token.
    CreateToken {
        /// The validated token.
        draft: TokenDraft,
        /// Unix seconds to stamp.
        at: u32,
    },
    /// Create every token or none.
    BatchCreate {
        /// The validated tokens, in request order.
        drafts: Vec<TokenDraft>,
        /// Unix seconds to stamp.
        at: u32,
    },
    /// Create the tokens of one ImportTokens message that pass the state checks; skip the
    /// others (reported as `Effect::ImportSkipped`), never failing as a whole.
    ImportTokens {
        /// The field-valid tokens of the message, in stream order.
        drafts: Vec<ImportDraft>,
        /// Unix seconds to stamp.
        at: u32,
    },
    /// Replace some fields of one token.
    UpdateToken {
        /// The target.
        id: TokenId,
        /// What to replace.
        patch: TokenPatch,
        /// Unix seconds to stamp.
        at: u32,
    },
    /// Delete one token.
    DeleteToken {
        /// The target.
        id: TokenId,
    },
    /// Delete every token at once.
    ClearTokens,
    /// A change of the user grids (owned by `store::grids`).
    Grid(GridCommand),
    /// A change of the CDNA config (owned by `store::cdna`).
    Cdna(CdnaCommand),
}

impl Command {
    /// Path prefix of token number `index` in the request this command came from.
    pub fn token_path(&self, index: usize) -> String {
        match self {
            Command::BatchCreate { .. } => format!("tokens[{index}]."),
            // Import errors name fields within the token; the index travels separately.
            Command::ImportTokens { .. } => String::new(),
            _ => "token.".to_string(),
        }
    }
}

/// What a committed command changed, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// A token now exists.
    Created(Token),
    /// A token changed.
    Updated {
        /// Its state before.
        before: Token,
        /// Its state after.
        after: Token,
    },
    /// A token is gone; this was its last state.
    Deleted(Token),
    /// Every token is gone.
    Cleared {
        /// How many there were.
        count: u64,
    },
    /// A token of an import was skipped: its state checks failed.
    ImportSkipped {
        /// Position of the token across the whole import stream.
        index: u64,
        /// Why, with a path within the token (e.g. `id`, `weight`).
        violation: FieldViolation,
    },
    /// A user grid changed.
    Grid(GridEffect),
    /// The CDNA config or its quarantine changed.
    Cdna(CdnaEffect),
}

/// A command that was applied: its commit sequence and effects.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    /// Strictly increasing from one command to the next.
    pub sequence: u64,
    /// What changed.
    pub effects: Vec<Effect>,
}
