//! User grids: membership, config and their own spatial trees.

use crate::model::grid::{GridConfig, GridId};
use crate::model::TokenId;

/// A change of the user grids, applied through the write path.
#[derive(Clone, Debug, PartialEq)]
pub enum GridCommand {
    /// Create a user grid; its id is allocated when applied.
    Create {
        /// Its effective config.
        config: GridConfig,
    },
    /// Delete a user grid.
    Delete {
        /// The grid.
        grid: GridId,
    },
    /// Make a token a member of a user grid.
    AddMember {
        /// The grid.
        grid: GridId,
        /// The token.
        token: TokenId,
    },
    /// Remove a token from a user grid.
    RemoveMember {
        /// The grid.
        grid: GridId,
        /// The token.
        token: TokenId,
    },
}

/// What a grid command changed.
#[derive(Clone, Debug, PartialEq)]
pub enum GridEffect {
    /// A user grid exists.
    Created {
        /// Its id.
        grid: GridId,
        /// Its config.
        config: GridConfig,
    },
    /// A user grid is gone.
    Deleted {
        /// Its id.
        grid: GridId,
    },
    /// A token is a member (possibly already was).
    MemberAdded {
        /// The grid.
        grid: GridId,
        /// The token.
        token: TokenId,
    },
    /// A token is no longer a member.
    MemberRemoved {
        /// The grid.
        grid: GridId,
        /// The token.
        token: TokenId,
    },
}
