//! The on-disk layout of the embedded store: redb tables, their keys and how values are
//! encoded (postcard over the model's serde derives), and the writes a commit makes. Nothing
//! here opens files or runs threads; `journal` and `recovery` do.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::model::cdna::{CdnaConfig, HistoryEntry, Quarantine};
use crate::model::grid::{GridConfig, GridId};
use crate::model::{IdPair, Token, TokenId};
use crate::store::feed::change::Change;
use crate::store::requests::AnsweredRequest;

/// Live tokens: id → postcard `TokenData`.
pub const TOKENS: TableDefinition<u32, &[u8]> = TableDefinition::new("tokens");
/// Highest local id ever used per (domain, entity_type) pair: pair index → local id.
pub const COUNTERS: TableDefinition<u16, u32> = TableDefinition::new("id_counters");
/// User grids: id → postcard `GridConfig`.
pub const GRIDS: TableDefinition<u32, &[u8]> = TableDefinition::new("grids");
/// User-grid memberships: (grid, token) → nothing.
pub const MEMBERS: TableDefinition<(u32, u32), ()> = TableDefinition::new("grid_members");
/// CDNA history: entry sequence → postcard `HistoryEntry`.
pub const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("cdna_history");
/// Request ids of recent idempotent writes: id → postcard `AnsweredRequest`.
pub const REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("request_ids");
/// Retained change-feed records (API.md §10): (commit sequence, index within the command) →
/// postcard `Change`.
pub const EVENTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("feed_events");
/// Single values, under the `META_*` keys.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Layout version of this schema (`META_FORMAT`); a store of another version is refused,
/// except version 1, which `recovery` upgrades (tokens gained `expires_at`).
pub const FORMAT: u32 = 2;
/// Key of the layout version (u32 little-endian).
pub const META_FORMAT: &str = "format";
/// Key of the commit sequence of the last stored command (u64 little-endian).
pub const META_SEQUENCE: &str = "sequence";
/// Key of the highest grid id ever used (u32 little-endian).
pub const META_HIGHEST_GRID: &str = "highest_grid";
/// Key of the CDNA state without its history (postcard `StoredCdna`).
pub const META_CDNA: &str = "cdna";
/// Key of the identity of the command log a replica's state came from (UTF-8).
pub const META_LOG_IDENTITY: &str = "log_identity";
/// Key of the lowest commit sequence whose feed records are all retained (u64
/// little-endian); absent = 1, everything.
pub const META_EVENTS_FROM: &str = "events_from";
/// Key of the SHA-256 of the last log entry a replica applied (32 bytes).
pub const META_LOG_LAST_HASH: &str = "log_last_hash";

/// The CDNA state minus its history, which lives in `HISTORY` one entry per key so that a
/// change writes only its new entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredCdna {
    /// The live config.
    pub config: CdnaConfig,
    /// The running quarantine (snapshot, deadline, churn).
    pub quarantine: Option<Quarantine>,
    /// The last quarantine that ended.
    pub last_quarantine: Option<Quarantine>,
    /// Sequence of the next history entry.
    pub next_history_sequence: u64,
}

/// One change a committed command makes to the stored state. Components describe their own
/// changes (`durable_writes`); the journal applies them in commit order.
#[derive(Clone, Debug, PartialEq)]
pub enum DurableWrite {
    /// Store a created or updated token.
    PutToken(Token),
    /// Delete a token (its grid memberships go with `LeaveAllGrids`).
    DeleteToken(TokenId),
    /// Delete every token and membership; grids and counters stay.
    ClearTokens,
    /// Raise a pair's highest local id to at least `local_id`.
    RaiseCounter {
        /// The pair (stored under its index).
        pair: IdPair,
        /// Local id used.
        local_id: u32,
    },
    /// Store a new user grid; raises the highest grid id.
    PutGrid {
        /// Its id.
        grid: GridId,
        /// Its config.
        config: GridConfig,
    },
    /// Delete a user grid and its memberships.
    DeleteGrid(GridId),
    /// Add a membership.
    AddMember {
        /// The grid.
        grid: GridId,
        /// The token.
        token: u32,
    },
    /// Remove a membership.
    RemoveMember {
        /// The grid.
        grid: GridId,
        /// The token.
        token: u32,
    },
    /// Remove a deleted token from every grid.
    LeaveAllGrids(u32),
    /// Store the CDNA state, its new history entries, and drop entries below `keep_from`.
    PutCdna {
        /// The state without history.
        state: Box<StoredCdna>,
        /// Entries added by this command.
        new_entries: Vec<HistoryEntry>,
        /// Sequence of the oldest entry still kept (older ones fell off or were cleared).
        keep_from: u64,
    },
    /// Remember the first answer to a request id.
    PutRequest {
        /// The request id.
        id: String,
        /// Its first answer.
        answered: Box<AnsweredRequest>,
    },
    /// Forget a request id.
    DeleteRequest(String),
    /// Retain the feed records of one command, then trim the oldest commands' records while
    /// more than `retain` (plus a slack, so that trimming runs in steps) are kept.
    PutEvents {
        /// The command's commit sequence.
        sequence: u64,
        /// Its token changes, in order.
        changes: Vec<Change>,
        /// How many records to keep at least.
        retain: u64,
    },
    /// Store a single value under a `META_*` key (a replica's log position).
    PutMeta {
        /// The key.
        key: &'static str,
        /// The value.
        value: Vec<u8>,
    },
}

/// Encodes a value for a table.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("model values always serialise")
}

/// Decodes a stored value; `what` names it in the error.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("{what} cannot be decoded: {e}"))
}

/// Creates every table, so that readers never meet a missing one.
pub fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(TOKENS)?;
    txn.open_table(COUNTERS)?;
    txn.open_table(GRIDS)?;
    txn.open_table(MEMBERS)?;
    txn.open_table(HISTORY)?;
    txn.open_table(META)?;
    txn.open_table(REQUESTS)?;
    txn.open_table(EVENTS)?;
    Ok(())
}

/// Applies `writes` of one or more commands inside `txn`, in order.
pub fn apply_writes<'w>(
    txn: &WriteTransaction,
    writes: impl IntoIterator<Item = &'w DurableWrite>,
) -> Result<(), redb::Error> {
    let mut tokens = txn.open_table(TOKENS)?;
    let mut counters = txn.open_table(COUNTERS)?;
    let mut grids = txn.open_table(GRIDS)?;
    let mut members = txn.open_table(MEMBERS)?;
    let mut history = txn.open_table(HISTORY)?;
    let mut meta = txn.open_table(META)?;
    let mut requests = txn.open_table(REQUESTS)?;
    let mut events = txn.open_table(EVENTS)?;
    for write in writes {
        match write {
            DurableWrite::PutToken(token) => {
                tokens.insert(token.id.get(), encode(&token.data).as_slice())?;
            }
            DurableWrite::DeleteToken(id) => {
                tokens.remove(id.get())?;
            }
            DurableWrite::ClearTokens => {
                tokens.retain(|_, _| false)?;
                members.retain(|_, _| false)?;
            }
            DurableWrite::RaiseCounter { pair, local_id } => {
                let key = pair.index() as u16;
                let stored = counters.get(key)?.map_or(0, |v| v.value());
                if *local_id > stored {
                    counters.insert(key, *local_id)?;
                }
            }
            DurableWrite::PutGrid { grid, config } => {
                grids.insert(*grid, encode(config).as_slice())?;
                meta.insert(META_HIGHEST_GRID, grid.to_le_bytes().as_slice())?;
            }
            DurableWrite::DeleteGrid(grid) => {
                grids.remove(*grid)?;
                members.retain_in((*grid, 0)..=(*grid, u32::MAX), |_, _| false)?;
            }
            DurableWrite::AddMember { grid, token } => {
                members.insert((*grid, *token), ())?;
            }
            DurableWrite::RemoveMember { grid, token } => {
                members.remove((*grid, *token))?;
            }
            DurableWrite::LeaveAllGrids(token) => {
                let ids: Vec<u32> = grids
                    .iter()?
                    .map(|entry| entry.map(|(k, _)| k.value()))
                    .collect::<Result<_, _>>()?;
                for grid in ids {
                    members.remove((grid, *token))?;
                }
            }
            DurableWrite::PutCdna {
                state,
                new_entries,
                keep_from,
            } => {
                meta.insert(META_CDNA, encode(state.as_ref()).as_slice())?;
                for entry in new_entries {
                    history.insert(entry.sequence, encode(entry).as_slice())?;
                }
                history.retain_in(..*keep_from, |_, _| false)?;
            }
            DurableWrite::PutRequest { id, answered } => {
                requests.insert(id.as_str(), encode(answered.as_ref()).as_slice())?;
            }
            DurableWrite::DeleteRequest(id) => {
                requests.remove(id.as_str())?;
            }
            DurableWrite::PutMeta { key, value } => {
                meta.insert(*key, value.as_slice())?;
            }
            DurableWrite::PutEvents {
                sequence,
                changes,
                retain,
            } => {
                for (index, change) in changes.iter().enumerate() {
                    events.insert((*sequence, index as u32), encode(change).as_slice())?;
                }
                if let Some(from) = trim_events(&mut events, *retain)? {
                    meta.insert(META_EVENTS_FROM, from.to_le_bytes().as_slice())?;
                }
            }
        }
    }
    Ok(())
}

/// Deletes the oldest commands' feed records once more than `retain` plus a slack are kept,
/// down to at least `retain`, whole commands only: the new lowest fully retained sequence,
/// or `None` when nothing was trimmed.
fn trim_events(
    events: &mut redb::Table<(u64, u32), &[u8]>,
    retain: u64,
) -> Result<Option<u64>, redb::Error> {
    let kept = events.len()?;
    // Trimming in steps of a sixteenth keeps its cost per record small.
    let slack = (retain / 16).max(64);
    if kept <= retain.saturating_add(slack) {
        return Ok(None);
    }
    let excess = kept - retain;
    // The last sequence all of whose records fit in the excess.
    let mut cut = None;
    let mut counted = 0u64;
    let mut iter = events.iter()?;
    let mut current: Option<u64> = None;
    for entry in iter.by_ref() {
        let (key, _) = entry?;
        let sequence = key.value().0;
        if current != Some(sequence) {
            if let Some(previous) = current {
                cut = Some(previous);
            }
            current = Some(sequence);
        }
        counted += 1;
        if counted > excess {
            break;
        }
    }
    drop(iter);
    if counted <= excess {
        cut = current;
    }
    let Some(cut) = cut else { return Ok(None) };
    events.retain_in(..=(cut, u32::MAX), |_, _| false)?;
    Ok(Some(cut + 1))
}

/// Records the commit sequence the stored state has reached.
pub fn put_sequence(txn: &WriteTransaction, sequence: u64) -> Result<(), redb::Error> {
    txn.open_table(META)?
        .insert(META_SEQUENCE, sequence.to_le_bytes().as_slice())?;
    Ok(())
}
