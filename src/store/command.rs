//! Commands (one per write RPC), what applying one produced for its caller (`Outcome`) and
//! what it changed for the components that follow commits (`Effect`).

use serde::{Deserialize, Serialize};

use super::cdna::{CdnaChange, CdnaCommand, CdnaEffect};
use super::grids::{GridCommand, GridEffect};
use super::import::{ImportDraft, ImportPlan};
use crate::model::{Token, TokenDraft, TokenId, TokenPatch};

/// One write, applied by the write path as a unit with one commit sequence. Commands carry
/// their timestamp so that applying one is deterministic (ids are allocated when applied).
/// Serialised into log entries (`store::log::entry`): change a variant only together with the
/// entry format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// others (listed in the outcome), never failing as a whole.
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
    /// Delete tokens whose `expires_at` is at or before `at`, the earliest first (by expiry
    /// second, then id), at most `limit` of them, so that one command never holds the writer
    /// long. Time-driven: appended by the expiry timer, never by a client.
    ExpireTokens {
        /// Unix seconds of the entry: what "now" is when it applies.
        at: u32,
        /// Most tokens one command deletes.
        limit: u32,
    },
    /// A change of the user grids (owned by `store::grids`).
    Grid(GridCommand),
    /// A change of the CDNA config (owned by `store::cdna`).
    Cdna(CdnaCommand),
}

impl Command {
    /// The write RPC this command comes from (request ids are per method).
    pub fn method(&self) -> &'static str {
        match self {
            Command::CreateToken { .. } => "CreateToken",
            Command::BatchCreate { .. } => "BatchCreateTokens",
            Command::ImportTokens { .. } => "ImportTokens",
            Command::UpdateToken { .. } => "UpdateToken",
            Command::DeleteToken { .. } => "DeleteToken",
            Command::ClearTokens => "ClearTokens",
            Command::ExpireTokens { .. } => "ExpireTokens",
            Command::Grid(command) => command.method(),
            Command::Cdna(command) => command.method(),
        }
    }
}

/// What applying a command produced for the call that sent it: one variant per kind of
/// command, so that each write gets a typed answer (`store::Writes`). Stored with the request
/// id of an idempotent write, so that a retry gets the same answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The token a CreateToken made.
    Created(Token),
    /// The tokens a BatchCreate made, in request order.
    Batch(Vec<Token>),
    /// What an import message created and skipped.
    Imported(ImportPlan),
    /// The token after an UpdateToken.
    Updated(Token),
    /// The last state of a deleted token.
    Deleted(Token),
    /// How many tokens a clear removed.
    Cleared(u64),
    /// How many tokens an expiry command deleted.
    Expired(u64),
    /// What a grid command did.
    Grid(GridEffect),
    /// What a CDNA command changed.
    Cdna(CdnaChange),
}

/// A command that was applied: its commit sequence and outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The commit sequence.
    pub sequence: u64,
    /// What it produced.
    pub outcome: Outcome,
}

/// What a committed command changed, in order, for the components that follow commits.
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
    /// A token reached its `expires_at` and is gone; this was its last state.
    Expired(Token),
    /// Every token is gone.
    Cleared {
        /// How many there were.
        count: u64,
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
