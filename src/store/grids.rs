//! User grids: their config, members and own spatial trees, changed only by grid commands
//! and token effects through the write path. Grid 0 (every token) is the `SpatialIndex`.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use roaring::RoaringBitmap;

use super::command::{Committed, Effect};
use super::durable::{DurableWrite, StoredGrid};
use super::error::StoreError;
use super::spatial::SpaceTrees;
use super::tokens::TokenTables;
use crate::model::grid::{GridConfig, GridId, DEFAULT_GRID, MAX_USER_GRIDS};
use crate::model::TokenId;

/// A change of the user grids, applied through the write path.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

impl GridCommand {
    /// The write RPC this command comes from.
    pub fn method(&self) -> &'static str {
        match self {
            GridCommand::Create { .. } => "CreateGrid",
            GridCommand::Delete { .. } => "DeleteGrid",
            GridCommand::AddMember { .. } => "AddToken",
            GridCommand::RemoveMember { .. } => "RemoveToken",
        }
    }
}

/// What a grid command changed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// A user grid: its config, its members and trees over them.
pub struct UserGrid {
    id: GridId,
    config: GridConfig,
    members: RwLock<RoaringBitmap>,
    trees: SpaceTrees,
}

impl UserGrid {
    /// Its id (≥ 1).
    pub fn id(&self) -> GridId {
        self.id
    }

    /// Its effective config.
    pub fn config(&self) -> GridConfig {
        self.config
    }

    /// Number of member tokens.
    pub fn token_count(&self) -> u64 {
        self.members.read().len()
    }

    /// Whether `token` is a member.
    pub fn is_member(&self, token: u32) -> bool {
        self.members.read().contains(token)
    }

    /// The trees over its members, for queries.
    pub fn trees(&self) -> &SpaceTrees {
        &self.trees
    }
}

/// Every user grid and the counters that outlive them.
#[derive(Default)]
struct GridSet {
    grids: BTreeMap<GridId, Arc<UserGrid>>,
    /// Highest grid id ever used: ids are never reused.
    highest_id: GridId,
    /// Memberships over every grid.
    memberships: u64,
}

/// The user grids, following the write path.
pub struct Grids {
    set: RwLock<GridSet>,
    max_memberships: u64,
}

impl Grids {
    /// No user grids; at most `max_memberships` memberships over all of them.
    pub fn new(max_memberships: u64) -> Grids {
        Grids {
            set: RwLock::new(GridSet::default()),
            max_memberships,
        }
    }

    /// The grids read back from a store, their trees bulk-built from the members' values in
    /// `tables`; `highest_id` is the highest grid id ever used.
    pub fn recovered(
        max_memberships: u64,
        highest_id: GridId,
        stored: Vec<StoredGrid>,
        tables: &TokenTables,
    ) -> Grids {
        let mut set = GridSet {
            highest_id,
            ..GridSet::default()
        };
        for grid in stored {
            let members: Vec<_> = grid
                .members
                .iter()
                .filter_map(|id| TokenId::new(id).and_then(|id| tables.get(id)))
                .collect();
            set.memberships += grid.members.len();
            set.highest_id = set.highest_id.max(grid.id);
            set.grids.insert(
                grid.id,
                Arc::new(UserGrid {
                    id: grid.id,
                    config: grid.config,
                    members: RwLock::new(grid.members),
                    trees: SpaceTrees::bulk_built(&members),
                }),
            );
        }
        Grids {
            set: RwLock::new(set),
            max_memberships,
        }
    }

    /// The user grid `id`.
    pub fn get(&self, id: GridId) -> Option<Arc<UserGrid>> {
        self.set.read().grids.get(&id).cloned()
    }

    /// Every user grid, by id.
    pub fn list(&self) -> Vec<Arc<UserGrid>> {
        self.set.read().grids.values().cloned().collect()
    }

    /// Feeds every grid's id, config and members, and the highest grid id, to `digest`.
    pub fn digest_into(&self, digest: &mut impl FnMut(&[u8])) {
        let set = self.set.read();
        digest(&set.highest_id.to_le_bytes());
        for (id, grid) in &set.grids {
            digest(&id.to_le_bytes());
            digest(&postcard::to_allocvec(&grid.config).expect("a config encodes"));
            let mut members = Vec::new();
            grid.members
                .read()
                .serialize_into(&mut members)
                .expect("writing to memory");
            digest(&members);
        }
    }

    /// Memberships over every grid.
    pub fn memberships(&self) -> u64 {
        self.set.read().memberships
    }

    /// The user grid a command names: grid 0 (which cannot `what`) and unknown grids are
    /// refused.
    fn user_grid(&self, grid: GridId, what: &'static str) -> Result<Arc<UserGrid>, StoreError> {
        if grid == DEFAULT_GRID {
            return Err(StoreError::DefaultGridFixed(what));
        }
        self.get(grid).ok_or(StoreError::GridNotFound(grid))
    }

    /// Checks and applies a grid command (under the write lock).
    pub fn apply(
        &self,
        command: &GridCommand,
        tables: &TokenTables,
    ) -> Result<GridEffect, StoreError> {
        self.check_grid(command, tables)?;
        Ok(self.execute_grid(command, tables))
    }

    fn check_grid(&self, command: &GridCommand, tables: &TokenTables) -> Result<(), StoreError> {
        match command {
            GridCommand::Create { .. } => {
                let set = self.set.read();
                if set.grids.len() >= MAX_USER_GRIDS {
                    return Err(StoreError::UserGridsFull(MAX_USER_GRIDS));
                }
                if set.highest_id == GridId::MAX {
                    return Err(StoreError::GridIdsUsedUp);
                }
            }
            GridCommand::Delete { grid } => {
                self.user_grid(*grid, "be deleted")?;
            }
            GridCommand::AddMember { grid, token } => {
                let user_grid = self.user_grid(*grid, "change its members")?;
                if !tables.contains(*token) {
                    return Err(StoreError::MemberNotFound(*token));
                }
                if !user_grid.is_member(token.get()) && self.memberships() >= self.max_memberships {
                    return Err(StoreError::MembershipsCapped(self.max_memberships));
                }
            }
            GridCommand::RemoveMember { grid, token } => {
                let user_grid = self.user_grid(*grid, "change its members")?;
                if !user_grid.is_member(token.get()) {
                    return Err(StoreError::NotAMember {
                        grid: *grid,
                        token: *token,
                    });
                }
            }
        }
        Ok(())
    }

    fn execute_grid(&self, command: &GridCommand, tables: &TokenTables) -> GridEffect {
        let mut set = self.set.write();
        match command {
            GridCommand::Create { config } => {
                set.highest_id += 1;
                let grid = set.highest_id;
                set.grids.insert(
                    grid,
                    Arc::new(UserGrid {
                        id: grid,
                        config: *config,
                        members: RwLock::new(RoaringBitmap::new()),
                        trees: SpaceTrees::default(),
                    }),
                );
                GridEffect::Created {
                    grid,
                    config: *config,
                }
            }
            GridCommand::Delete { grid } => {
                if let Some(removed) = set.grids.remove(grid) {
                    set.memberships -= removed.token_count();
                }
                GridEffect::Deleted { grid: *grid }
            }
            GridCommand::AddMember { grid, token } => {
                let user_grid = Arc::clone(&set.grids[grid]);
                if user_grid.members.write().insert(token.get()) {
                    set.memberships += 1;
                    if let Some(t) = tables.get(*token) {
                        user_grid.trees.insert(&[t]);
                    }
                }
                GridEffect::MemberAdded {
                    grid: *grid,
                    token: *token,
                }
            }
            GridCommand::RemoveMember { grid, token } => {
                let user_grid = Arc::clone(&set.grids[grid]);
                if user_grid.members.write().remove(token.get()) {
                    set.memberships -= 1;
                    if let Some(t) = tables.get(*token) {
                        user_grid.trees.delete(&t);
                    }
                }
                GridEffect::MemberRemoved {
                    grid: *grid,
                    token: *token,
                }
            }
        }
    }
}

impl Grids {
    /// Keeps members' entries current, drops deleted tokens from every grid and empties every
    /// grid on a clear (the grids themselves stay).
    pub fn follow(&self, committed: &Committed) {
        let concerns_members = committed.effects.iter().any(|effect| {
            matches!(
                effect,
                Effect::Updated { .. }
                    | Effect::Deleted(_)
                    | Effect::Expired(_)
                    | Effect::Cleared { .. }
            )
        });
        if !concerns_members {
            return;
        }
        let mut set = self.set.write();
        for effect in &committed.effects {
            match effect {
                Effect::Updated { before, after } => {
                    for grid in set.grids.values() {
                        if grid.is_member(after.id.get()) {
                            grid.trees.update(before, after);
                        }
                    }
                }
                Effect::Deleted(token) | Effect::Expired(token) => {
                    let mut removed = 0;
                    for grid in set.grids.values() {
                        if grid.members.write().remove(token.id.get()) {
                            grid.trees.delete(token);
                            removed += 1;
                        }
                    }
                    set.memberships -= removed;
                }
                Effect::Cleared { .. } => {
                    for grid in set.grids.values() {
                        grid.members.write().clear();
                        grid.trees.clear();
                    }
                    set.memberships = 0;
                }
                _ => {}
            }
        }
    }

    /// Adds what a commit changed in the stored grids.
    pub fn durable_writes(&self, committed: &Committed, writes: &mut Vec<DurableWrite>) {
        let any_grid = !self.set.read().grids.is_empty();
        for effect in &committed.effects {
            match effect {
                Effect::Grid(GridEffect::Created { grid, config }) => {
                    writes.push(DurableWrite::PutGrid {
                        grid: *grid,
                        config: *config,
                    });
                }
                Effect::Grid(GridEffect::Deleted { grid }) => {
                    writes.push(DurableWrite::DeleteGrid(*grid));
                }
                Effect::Grid(GridEffect::MemberAdded { grid, token }) => {
                    writes.push(DurableWrite::AddMember {
                        grid: *grid,
                        token: token.get(),
                    });
                }
                Effect::Grid(GridEffect::MemberRemoved { grid, token }) => {
                    writes.push(DurableWrite::RemoveMember {
                        grid: *grid,
                        token: token.get(),
                    });
                }
                // The store's own ClearTokens write empties every grid on disk.
                Effect::Deleted(token) | Effect::Expired(token) if any_grid => {
                    writes.push(DurableWrite::LeaveAllGrids(token.id.get()));
                }
                _ => {}
            }
        }
    }
}
